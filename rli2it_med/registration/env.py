"""The registration environment (Gymnasium ``reset``/``step`` shape, batched).

State ``s_t = concat(F, M_t)``; action = step field ``a_t`` (B, ndim, *S) in voxels, clamped to ``max_step``;
the accumulated field is ``Phi_t = a_t + Warp(Phi_{t-1}, a_t)`` and ``M_t = Warp(M_0, Phi_t)`` (the original
moving image is interpolated once per step). Labels follow with nearest neighbour. The reward is
``reward_scale * (Dice_t - Dice_{t-1})`` on the given label maps, or on k-means pseudo-segmentations when none
are given (the paper's unsupervised mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rli2it_med.agent.loop import draw_pairs
from rli2it_med.registration.data import Pair, PairDataset
from rli2it_med.registration.rewards import kmeans_labels, mean_dice
from rli2it_med.registration.warp import compose, warp

__all__ = ["EnvConfig", "RegistrationEnv", "REWARD_MODES"]

REWARD_MODES = ("auto", "labels", "pseudo", "none")


@dataclass
class EnvConfig:
    """Options of :class:`RegistrationEnv`.

    Attributes:
        max_steps: episode length T.
        max_step: bound of each step field, in voxels (the actor's tanh bound; the env clamps too).
        reward: ``"labels"`` (Dice on given label maps), ``"pseudo"`` (k-means pseudo-labels) or ``"auto"``
            (labels when both maps are given, else pseudo) or ``"none"`` (zero reward, for inference).
        reward_scale: multiplies the Dice improvement.
        pseudo_classes: clusters of the pseudo-segmentation.
        terminal_bonus: added once when the Dice first passes ``bonus_threshold``.
        bonus_threshold: Dice for the terminal bonus.
        stop_dice: an item's episode ends (``terminated``) once its Dice reaches this; later steps of the batch
            leave it unchanged (zero action, zero reward). None: episodes always run ``max_steps`` steps.
    """

    max_steps: int = 10
    max_step: float = 2.0
    reward: str = "auto"
    reward_scale: float = 10.0
    pseudo_classes: int = 3
    terminal_bonus: float = 0.0
    bonus_threshold: float = 1.0
    stop_dice: float | None = None

    def __post_init__(self) -> None:
        if self.reward not in REWARD_MODES:
            raise ValueError(f"reward must be one of {sorted(REWARD_MODES)}, got {self.reward!r}")
        if self.max_steps < 1 or self.max_step <= 0:
            raise ValueError(f"max_steps must be >= 1 and max_step > 0, got {self.max_steps}, {self.max_step}")
        if self.stop_dice is not None and not 0 < self.stop_dice <= 1:
            raise ValueError(f"stop_dice must lie in (0, 1] or be None, got {self.stop_dice}")


class RegistrationEnv:
    """Batched registration environment.

    Args:
        config: environment options.
        pairs: where ``reset()`` draws pairs from when none are passed in ``options``.
        batch_size: pairs per episode batch drawn from ``pairs``.
        device: where the episode tensors live.
    """

    def __init__(
        self,
        config: EnvConfig,
        pairs: PairDataset | None = None,
        batch_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.pairs = pairs
        self.batch_size = batch_size
        self.device = torch.device(device)
        self._rng = np.random.default_rng()
        self._state: dict[str, Any] = {}

    # -- episode -----------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        """Start an episode.

        Args:
            seed: reseeds the pair sampler.
            options: ``{"pair": Pair}`` to register given images, or ``{"indices": [...]}`` to pick pairs of
                ``self.pairs``; otherwise ``batch_size`` pairs are drawn at random. ``"field"``: the accumulated
                field Phi_0 to start from (B, ndim, *S), zero by default.

        Returns:
            ``(observation (B, 2, *S), info)``.
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        pair, indices = draw_pairs(self.pairs, options, self._rng, self.batch_size, "Pair")
        pair = self.check_pair(pair).to(self.device)

        mode = self.config.reward
        has_labels = pair.fixed_seg is not None and pair.moving_seg is not None
        if mode == "labels" and not has_labels:
            raise ValueError("reward='labels' needs fixed_seg and moving_seg")
        if mode == "none":
            fixed_seg, moving_seg, label_values = pair.fixed_seg, pair.moving_seg, ()
        elif mode == "pseudo" or (mode == "auto" and not has_labels):
            fixed_seg = kmeans_labels(pair.fixed, self.config.pseudo_classes)
            moving_seg = kmeans_labels(pair.moving, self.config.pseudo_classes)
            label_values = tuple(range(1, self.config.pseudo_classes))
        else:
            fixed_seg, moving_seg = pair.fixed_seg, pair.moving_seg
            label_values = self._label_values(fixed_seg)
        shape = (pair.fixed.shape[0], pair.fixed.ndim - 2, *pair.fixed.shape[2:])
        field = (options or {}).get("field")
        warped, warped_seg = pair.moving, moving_seg
        if field is None:
            field = torch.zeros(shape, device=self.device)
        else:
            if tuple(field.shape) != shape:
                raise ValueError(f"the initial field must have shape {shape}, got {tuple(field.shape)}")
            field = field.to(self.device, torch.float32)
            warped = warp(pair.moving, field)
            warped_seg = None if moving_seg is None else warp(moving_seg, field, mode="nearest")
        self._state = {
            "pair": pair,
            "fixed_seg": fixed_seg,
            "moving_seg": moving_seg,
            "label_values": label_values,
            "field": field,
            "warped": warped,
            "warped_seg": warped_seg,
            "t": 0,
            "indices": indices,
            "bonus_paid": torch.zeros(pair.fixed.shape[0], dtype=torch.bool, device=self.device),
            "done": torch.zeros(pair.fixed.shape[0], dtype=torch.bool, device=self.device),
        }
        self._state["dice"] = self._dice(warped_seg, fixed_seg, label_values, pair.fixed.shape[0])
        if self.config.stop_dice is not None and label_values:
            self._state["done"] = self._state["dice"] >= self.config.stop_dice  # pairs that start at the goal stay
        return self.observation(), self._info()

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Apply a step field ``action`` (B, ndim, *S).

        Returns:
            ``(observation, reward (B,), terminated (B,), truncated (B,), info)``; an episode truncates after
            ``max_steps`` steps.
        """
        if not self._state:
            raise RuntimeError("call reset() before step()")
        st, cfg = self._state, self.config
        field = st["field"]
        if tuple(action.shape) != tuple(field.shape):
            raise ValueError(f"action must have shape {tuple(field.shape)}, got {tuple(action.shape)}")
        action = action.to(field).clamp(-cfg.max_step, cfg.max_step)
        if st["done"].any():
            action = action * (~st["done"]).view(-1, *([1] * (action.ndim - 1)))
        field = compose(field, action)
        st["field"] = field
        st["warped"] = warp(st["pair"].moving, field)
        if st["moving_seg"] is not None:
            st["warped_seg"] = warp(st["moving_seg"], field, mode="nearest")
        dice = self._dice(st["warped_seg"], st["fixed_seg"], st["label_values"], field.shape[0])
        reward = cfg.reward_scale * (dice - st["dice"])
        if cfg.terminal_bonus:
            hit = (dice >= cfg.bonus_threshold) & ~st["bonus_paid"]
            reward = reward + cfg.terminal_bonus * hit
            st["bonus_paid"] |= hit
        st["dice"] = dice
        st["t"] += 1
        batch = field.shape[0]
        if cfg.stop_dice is not None and st["label_values"]:
            st["done"] = st["done"] | (dice >= cfg.stop_dice)
        terminated = st["done"].clone()
        truncated = torch.full((batch,), st["t"] >= cfg.max_steps, dtype=torch.bool, device=self.device)
        return self.observation(), reward, terminated, truncated, self._info()

    @property
    def field(self) -> torch.Tensor:
        """The accumulated field Phi_t (B, ndim, *S) of the current episode."""
        if not self._state:
            raise RuntimeError("call reset() before reading the field")
        return self._state["field"]

    def observation(self) -> torch.Tensor:
        """Current state ``concat(F, M_t)``, shape (B, 2, *S)."""
        return torch.cat([self._state["pair"].fixed, self._state["warped"]], dim=1)

    # -- helpers -------------------------------------------------------------------------------------------------
    def _info(self) -> dict:
        st = self._state
        return {
            "field": st["field"],
            "warped": st["warped"],
            "warped_seg": st["warped_seg"],
            "dice": st["dice"],
            "t": st["t"],
            "indices": st["indices"],
        }

    def _dice(self, moved: torch.Tensor | None, fixed: torch.Tensor | None, labels: tuple, batch: int) -> torch.Tensor:
        if moved is None or fixed is None or not labels:
            return torch.zeros(batch, device=self.device)
        return mean_dice(moved, fixed, labels)

    def _label_values(self, seg: torch.Tensor) -> tuple[int, ...]:
        if self.pairs is not None and self.pairs.label_values:
            return self.pairs.label_values
        return tuple(int(v) for v in torch.unique(seg).tolist() if v != 0)

    @staticmethod
    def check_pair(pair: Pair) -> Pair:
        """Validate shapes (naming what they are) and cast images to float, labels to int64."""
        fixed, moving = pair.fixed, pair.moving
        if fixed.ndim not in (4, 5) or fixed.shape[1] != 1:
            raise ValueError(f"fixed image must have shape (B, 1, H, W[, D]), got {tuple(fixed.shape)}")
        if moving.shape != fixed.shape:
            raise ValueError(f"moving image shape {tuple(moving.shape)} differs from fixed {tuple(fixed.shape)}")
        for name, seg in (("fixed_seg", pair.fixed_seg), ("moving_seg", pair.moving_seg)):
            if seg is not None and seg.shape != fixed.shape:
                raise ValueError(f"{name} must have shape {tuple(fixed.shape)}, got {tuple(seg.shape)}")
        return Pair(
            fixed.float(),
            moving.float(),
            None if pair.fixed_seg is None else pair.fixed_seg.long(),
            None if pair.moving_seg is None else pair.moving_seg.long(),
        )
