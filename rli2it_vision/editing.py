"""The image-editing environment of inpainting and translation: the action is the next image (or the hole's content).

State ``s_t``: the current image ``X_t`` (inpainting: the image with the current fill in the hole) or
``concat(source, X_t)`` (translation, ``condition=True``). Action: an image ``A_t`` in [-1, 1]; the next image
takes it inside the edited region (the hole; the whole image when there is none) and keeps the rest:
``X_{t+1} = region * A_t + (1 - region) * X_t``. Reward: ``reward_scale * (PSNR_{t+1} - PSNR_t)`` of the region
against the target (dB, images in [-1, 1], capped at ``max_psnr``), so an episode's return is the PSNR gained. Episodes
run ``max_steps`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from rli2it_med.agent.loop import draw_pairs

__all__ = ["EditConfig", "ImagePairs", "ImageEditEnv", "centre_hole", "region_psnr"]


def centre_hole(shape: tuple[int, int], size: int) -> tuple[slice, slice]:
    """The centred square hole of side ``size`` in an image of spatial ``shape`` (H, W)."""
    h, w = shape
    if not 0 < size < min(h, w):
        raise ValueError(f"hole size must lie in (0, {min(h, w)}) for images of {h}x{w}, got {size}")
    top, left = (h - size) // 2, (w - size) // 2
    return slice(top, top + size), slice(left, left + size)


def region_psnr(pred: torch.Tensor, target: torch.Tensor, region: tuple[slice, slice] | None = None) -> torch.Tensor:
    """PSNR (dB) per batch item of images in [-1, 1] (data range 2), inside ``region`` when given; shape (B,)."""
    from monai.metrics import PSNRMetric

    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"pred and target must both be (B, C, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if region is not None:
        pred, target = pred[(..., *region)], target[(..., *region)]
    return PSNRMetric(max_val=2.0, reduction="none")(pred, target)[:, 0]


class ImagePairs(NamedTuple):
    """Paired images (N, C, H, W) in [-1, 1]: what the agent starts from and what it must produce."""

    source: torch.Tensor
    target: torch.Tensor

    def get(self, indices) -> ImagePairs:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImagePairs(self.source[idx], self.target[idx])

    def __len__(self) -> int:
        return len(self.target)


@dataclass
class EditConfig:
    """Options of :class:`ImageEditEnv`.

    Attributes:
        max_steps: episode length T.
        hole: side of the centred square hole (inpainting); 0 edits the whole image (translation).
        condition: the state also carries the source image (translation).
        reward_scale: multiplies the PSNR gain (dB).
        max_psnr: PSNR is capped here (a perfect region's is infinite).
    """

    max_steps: int = 5
    hole: int = 0
    condition: bool = False
    reward_scale: float = 0.1
    max_psnr: float = 60.0

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.hole < 0:
            raise ValueError(f"max_steps must be >= 1 and hole >= 0, got {self.max_steps}, {self.hole}")


class ImageEditEnv:
    """Batched, seeded image-editing environment (Gymnasium ``reset``/``step`` shape).

    Args:
        config: environment options.
        pairs: where ``reset()`` draws its images from when none are given in ``options``.
        batch_size: pairs per episode batch.
        device: where the episode tensors live.
    """

    def __init__(
        self, config: EditConfig, pairs: ImagePairs | None = None, batch_size: int = 1, device: str = "cpu"
    ) -> None:
        self.config, self.pairs, self.batch_size = config, pairs, batch_size
        self.device = torch.device(device)
        self._rng = np.random.default_rng()
        self._state: dict = {}

    def region(self, shape: tuple[int, int]) -> tuple[slice, slice] | None:
        return centre_hole(shape, self.config.hole) if self.config.hole else None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        """Start episodes on ``options["pair"]`` (an :class:`ImagePairs`), ``options["indices"]`` or random pairs."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        pair, indices = draw_pairs(self.pairs, options, self._rng, self.batch_size, "ImagePairs")
        source, target = (x.to(self.device, torch.float32) for x in pair)
        if source.ndim != 4 or source.shape[0] != target.shape[0] or source.shape[2:] != target.shape[2:]:
            raise ValueError(
                f"source and target must be (B, C, H, W) with the same B, H, W; got {tuple(source.shape)} and "
                f"{tuple(target.shape)}"
            )
        region = self.region(tuple(target.shape[2:]))
        current = source.clone() if not self.config.condition else torch.zeros_like(target)
        if region is not None:
            if source.shape != target.shape:
                raise ValueError(f"inpainting needs source and target of one shape, got {tuple(source.shape)}")
            current[(..., *region)] = 0.0  # the hole starts empty (mid-grey), whatever the source holds there
        self._state = {"source": source, "target": target, "current": current, "region": region, "t": 0}
        self._state |= {"indices": indices, "psnr": self._psnr(current)}
        return self.observation(), self._info()

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Apply an action image (B, C, H, W) in [-1, 1] (clamped); return ``(obs, reward, terminated, truncated,
        info)``."""
        if not self._state:
            raise RuntimeError("call reset() before step()")
        st = self._state
        current = st["current"]
        if tuple(action.shape) != tuple(current.shape):
            raise ValueError(f"action must have shape {tuple(current.shape)}, got {tuple(action.shape)}")
        action = action.to(current).clamp(-1.0, 1.0)
        if st["region"] is None:
            current = action
        else:
            current = current.clone()
            current[(..., *st["region"])] = action[(..., *st["region"])]
        psnr = self._psnr(current)
        reward = self.config.reward_scale * (psnr - st["psnr"])
        st.update(current=current, psnr=psnr, t=st["t"] + 1)
        batch = current.shape[0]
        terminated = torch.zeros(batch, dtype=torch.bool, device=self.device)
        truncated = torch.full((batch,), st["t"] >= self.config.max_steps, dtype=torch.bool, device=self.device)
        return self.observation(), reward, terminated, truncated, self._info()

    def observation(self) -> torch.Tensor:
        st = self._state
        return torch.cat([st["source"], st["current"]], 1) if self.config.condition else st["current"]

    def _psnr(self, current: torch.Tensor) -> torch.Tensor:
        return region_psnr(current, self._state["target"], self._state["region"]).clamp_max(self.config.max_psnr)

    def _info(self) -> dict:
        st = self._state
        return {"current": st["current"], "psnr": st["psnr"], "t": st["t"], "indices": st["indices"]}
