"""Video style transfer with the RL-I2IT agent: step-wise and frame-wise GRU memory, compound temporal regularisation.

:class:`VideoStylizer` is a trained style agent's planner and actor (:mod:`rli2it_vision.style`) with two
convolutional GRUs on the planner's deepest features: the **step-wise** GRU carries memory across the steps of one
frame (reset at each frame), the **frame-wise** GRU carries memory across frames (updated with the step memory
after each frame, reset with :meth:`VideoStylizer.reset` at a new clip). A zero-initialised 1x1 conv adds both
memories to the features the actor decodes, so an untrained video model stylises exactly like its image model.

Training (:func:`train_video`) keeps the image agent's planner and actor fixed and trains the GRUs on the learning
loss ``content + lambda style + beta TV`` of every step plus ``zeta`` times the compound temporal regularisation
(Wang et al., CVPR 2020): synthetic clips ``x_k = W_k(x_{k-1}) + noise`` (random small affine motions W) from the
content images must stylise so that ``o_k = W_k(o_{k-1})`` (no optical flow needed to train). Evaluation on real
video (:func:`temporal_loss`) warps the previous stylised frame by the Farneback optical flow (OpenCV) of the source
frames and compares it with the current one where the flow is reliable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rli2it_med.agent import AgentConfig, load_checkpoint, loop, save_checkpoint
from rli2it_med.agent import distributed as ddp
from rli2it_med.agent.networks import Actor, Planner
from rli2it_med.io import save_json
from rli2it_med.registration.warp import warp
from rli2it_vision.editing import EditConfig
from rli2it_vision.style import (
    StyleLossConfig,
    content_images,
    load_stylizer,
    resize_to_multiple,
    style_bytes,
    style_loss_of,
)

__all__ = [
    "ConvGRUCell",
    "VideoStylizer",
    "VideoTrainConfig",
    "frame_tensor",
    "optical_flow",
    "stylize_frames",
    "synthetic_motion",
    "temporal_loss",
    "train_video",
    "write_video",
]


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell: ``h' = (1 - z) * h + z * tanh(W [x, r * h])`` with 3x3 convs; ``h`` None is zeros."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 2 * hidden, 3, padding=1)
        self.candidate = nn.Conv2d(in_channels + hidden, hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
        if h.shape[0] != x.shape[0] or h.shape[2:] != x.shape[2:]:
            raise ValueError(f"GRU memory of shape {tuple(h.shape)} does not fit input {tuple(x.shape)}; reset()")
        r, z = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        return (1 - z) * h + z * torch.tanh(self.candidate(torch.cat([x, r * h], 1)))


class VideoStylizer(nn.Module):
    """A style agent's planner and actor with step-wise and frame-wise GRU memory (see the module's docstring).

    Args:
        config: the style agent's architecture (:func:`rli2it_vision.style.agent_config`).
        hidden: channels of each GRU's memory.
    """

    def __init__(self, config: AgentConfig, hidden: int = 32) -> None:
        super().__init__()
        self.config = config
        self.planner, self.actor = Planner(config), Actor(config)
        deep = config.channels[-1]
        self.step_gru = ConvGRUCell(deep, hidden)
        self.frame_gru = ConvGRUCell(hidden, hidden)
        self.mix = nn.Conv2d(2 * hidden, deep, 1)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)
        self.step_memory: torch.Tensor | None = None
        self.frame_memory: torch.Tensor | None = None
        self.metadata: dict[str, Any] = {}

    def reset(self) -> None:
        """Forget everything: call before a new clip."""
        self.step_memory = self.frame_memory = None

    def step(self, state: torch.Tensor) -> torch.Tensor:
        """One step on the current stylised frames (B, 3, H, W) in [-1, 1] (the plan's mean), updating the
        step-wise memory; returns the next stylised frames."""
        out = self.planner(state)
        deep = out.skips[-1]
        self.step_memory = self.step_gru(deep, self.step_memory)
        frame = self.frame_memory if self.frame_memory is not None else torch.zeros_like(self.step_memory)
        deep = deep + self.mix(torch.cat([self.step_memory, frame], 1))
        return self.actor(out.mean, [*out.skips[:-1], deep]).clamp(-1, 1)

    def frame(self, image: torch.Tensor, steps: int) -> list[torch.Tensor]:
        """Stylise the next frames (B, 3, H, W) of the clips with ``steps`` >= 1 steps; returns the images after
        each step (the last is the result). The step memory starts empty; the frame memory is updated after."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[-1] % 4 or image.shape[-2] % 4:
            raise ValueError(f"expected frames (B, 3, H, W) with H and W multiples of 4, got {tuple(image.shape)}")
        self.step_memory, outputs, x = None, [], image
        for _ in range(steps):
            x = self.step(x)
            outputs.append(x)
        self.frame_memory = self.frame_gru(self.step_memory, self.frame_memory)
        return outputs

    @classmethod
    def from_image_model(cls, path: str | Path, hidden: int = 32) -> tuple[VideoStylizer, torch.Tensor, dict]:
        """A video model around a style checkpoint (:func:`rli2it_vision.style.train_style`): its planner and
        actor, fresh GRUs; returns ``(model, style image, the image model's config)``."""
        image_model, style = load_stylizer(path, "cpu")
        model = cls(image_model.agent.config, hidden)
        model.planner.load_state_dict(image_model.agent.planner.state_dict())
        model.actor.load_state_dict(image_model.agent.actor.state_dict())
        return model, style, image_model.metadata["config"]

    @classmethod
    def load(cls, path: str | Path) -> VideoStylizer:
        """A checkpoint of :func:`train_video`."""
        payload = load_checkpoint(path)
        config = payload.get("config", {})
        if config.get("task") != "style-video":
            raise ValueError(f"{path}: a {config.get('task')} model, not style-video")
        try:
            model = cls(AgentConfig(**config["agent"]), config["hidden"])
            model.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise ValueError(f"{path}: not a video style model this version can load ({e})") from e
        model.metadata = {k: v for k, v in payload.items() if k != "state_dict"}
        return model.eval()


def synthetic_motion(
    batch: int, shape: tuple[int, int], generator: torch.Generator, shift: float = 3.0, angle: float = 2.0
) -> torch.Tensor:
    """Random small affine motions as displacement fields (B, 2, H, W) in pixels ([dy, dx], the ``warp``
    convention): a rotation of up to ``angle`` degrees, a zoom of up to 2 % and a shift of up to ``shift`` px."""
    h, w = shape
    u = torch.rand(batch, 4, generator=generator) * 2 - 1
    theta = u[:, 0] * math.radians(angle)
    zoom = 1 + 0.02 * u[:, 1]
    ys, xs = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    cos, sin = (torch.cos(theta) * zoom).view(-1, 1, 1), (torch.sin(theta) * zoom).view(-1, 1, 1)
    dy = cos * ys + sin * xs - ys + shift * u[:, 2].view(-1, 1, 1)
    dx = -sin * ys + cos * xs - xs + shift * u[:, 3].view(-1, 1, 1)
    return torch.stack([dy, dx], 1)


def _inside(ddf: torch.Tensor) -> torch.Tensor:
    """1 where ``x + ddf(x)`` falls inside the image (B, 1, H, W)."""
    h, w = ddf.shape[2:]
    ys = torch.arange(h, device=ddf.device).view(1, h, 1) + ddf[:, 0]
    xs = torch.arange(w, device=ddf.device).view(1, 1, w) + ddf[:, 1]
    return ((ys >= 0) & (ys <= h - 1) & (xs >= 0) & (xs <= w - 1)).unsqueeze(1).float()


def _masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the squared difference of (B, C, H, W) images, averaged over the pixels where the
    (B, 1, H, W) ``mask`` is 1."""
    return ((a - b).pow(2).mean(1, keepdim=True) * mask).sum() / mask.sum().clamp_min(1)


def optical_flow(previous: np.ndarray, current: np.ndarray) -> torch.Tensor:
    """Farneback optical flow (OpenCV) between two RGB frames (H, W, 3) in [0, 1], as the displacement (1, 2, H, W)
    ([dy, dx], pixels) with ``current(x) ~ previous(x + flow(x))``."""
    import cv2

    def grey(f: np.ndarray) -> np.ndarray:
        return cv2.cvtColor((np.clip(f, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)

    flow = cv2.calcOpticalFlowFarneback(grey(current), grey(previous), None, 0.5, 3, 15, 3, 5, 1.2, 0)
    return torch.from_numpy(np.ascontiguousarray(flow[..., ::-1])).permute(2, 0, 1)[None].float()


def temporal_loss(stylised: torch.Tensor, frames: torch.Tensor, threshold: float = 0.05) -> float:
    """Mean temporal loss of a stylised clip: for each pair of consecutive frames, the mean squared difference
    (images in [0, 1]) between the current stylised frame and the previous one warped by the optical flow of the
    source frames, over the pixels where the flow is reliable (the warped source frame within ``threshold`` of the
    current one, and inside the image).

    Args:
        stylised: (N, 3, H, W) stylised frames in [-1, 1].
        frames: (N, 3, H, W) source frames in [-1, 1].
    """
    if stylised.shape != frames.shape or stylised.ndim != 4 or len(frames) < 2:
        raise ValueError(f"expected two clips (N >= 2, 3, H, W) of one shape, got {stylised.shape}, {frames.shape}")
    out, src = (stylised.float().cpu() + 1) / 2, (frames.float().cpu() + 1) / 2
    losses = []
    for t in range(1, len(src)):
        flow = optical_flow(src[t - 1].permute(1, 2, 0).numpy(), src[t].permute(1, 2, 0).numpy())
        warped_src = warp(src[t - 1 : t], flow)
        mask = ((warped_src - src[t : t + 1]).abs().mean(1, keepdim=True) < threshold).float() * _inside(flow)
        losses.append(float(_masked_mse(warp(out[t - 1 : t], flow), out[t : t + 1], mask)))
    return float(np.mean(losses))


def frame_tensor(frame: np.ndarray, max_side: int | None = None) -> torch.Tensor:
    """A uint8 RGB frame (H, W, 3) as (1, 3, H', W') in [-1, 1], H' and W' multiples of 4 (the nets halve twice),
    scaled down so the longer side is at most ``max_side`` (None: the frame's own size)."""
    t = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 127.5 - 1
    return resize_to_multiple(t, 4, max_side)


@torch.no_grad()
def stylize_frames(
    model: Any, frames: Iterable[torch.Tensor], steps: int, progress: bool = False, total: int | None = None
) -> Iterator[torch.Tensor]:
    """Stylise a clip frame by frame: ``model`` is a :class:`VideoStylizer` (its memories carry across frames;
    reset first) or an image model (:class:`~rli2it_vision.editing.ImageEditor`, each frame alone). Yields the
    stylised frames (1, 3, H, W) on the CPU."""
    device = next(model.parameters()).device if isinstance(model, nn.Module) else model.device
    if isinstance(model, VideoStylizer):
        model.reset()
    for frame in tqdm(frames, disable=not progress, total=total, unit="frame", desc="stylize"):
        frame = frame.to(device)
        out = model.frame(frame, steps)[-1] if isinstance(model, VideoStylizer) else model.edit(frame, steps).image
        yield out.cpu()


def write_video(path: str | Path, frames: Iterable[torch.Tensor], fps: float) -> int:
    """Write (1, 3, H, W) frames in [-1, 1] as an MP4 (``mp4v``) atomically (a temporary file, renamed when
    complete); returns the number of frames."""
    import cv2

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix or '.mp4'}")
    writer, n = None, 0
    try:
        for frame in frames:
            rgb = ((frame[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
            if writer is None:
                h, w = rgb.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f"{path}: OpenCV cannot write an mp4v video here")
            writer.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
            n += 1
        if writer is None:
            raise ValueError(f"{path}: no frame to write")
        writer.release()
        writer = None
        tmp.replace(path)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
    return n


@dataclass
class VideoTrainConfig:
    """Training of the GRUs of a video style model around a trained image style model.

    Attributes:
        image_model: the style checkpoint (:func:`rli2it_vision.style.train_style`).
        out: run folder (``model.pt``, ``config.json``).
        data: content images: ``"offline"`` or a folder (as the image model's).
        size: side of the training crops.
        minutes: wall-clock budget.
        frames: frames per synthetic clip.
        max_steps: each batch stylises every frame with a random number of steps in [1, max_steps].
        batch_size: clips per update.
        hidden: channels of each GRU's memory.
        temporal_weight: zeta, the weight of the compound temporal regularisation.
        noise: standard deviation of the noise added to each next synthetic frame (images in [-1, 1]).
        lr: Adam learning rate of the GRUs.
        seed: seeds the GRUs, the clips and the motions.
        device: ``"auto"`` (CUDA when present), ``"cpu"``...
    """

    image_model: str = "runs/style/best.pt"
    out: str = "runs/style_video"
    data: str = "offline"
    size: int = 128
    minutes: float = 5.0
    frames: int = 3
    max_steps: int = 5
    batch_size: int = 4
    hidden: int = 32
    temporal_weight: float = 100.0
    noise: float = 0.02
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


def train_video(cfg: VideoTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train the step-wise and frame-wise GRUs of a :class:`VideoStylizer` (see the module's docstring) for
    ``cfg.minutes``; writes ``model.pt`` (loads with :meth:`VideoStylizer.load`). Returns the run's statistics.
    Under ``torchrun`` every process trains on its share of the content images, gradients are averaged and process 0
    alone writes."""
    rank, world, device = loop.start_process(cfg)
    out = Path(cfg.out)
    model, style, image_config = VideoStylizer.from_image_model(cfg.image_model, cfg.hidden)
    model = model.to(device).train()
    model.planner.requires_grad_(False)
    model.actor.requires_grad_(False)
    loss_cfg = StyleLossConfig(**image_config["training"]["loss"])
    loss = style_loss_of(loss_cfg, F.interpolate(style, size=(cfg.size, cfg.size), mode="bilinear"), device)
    images = content_images(cfg.data, "train", cfg.size, cfg.seed)[rank::world]
    ddp.broadcast_module(model)
    params = [p for name, p in model.named_parameters() if name.split(".")[0] in ("step_gru", "frame_gru", "mix")]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed + rank)
    if rank == 0:
        save_json(out / "config.json", cfg.to_dict())
    start, iterations, history = time.perf_counter(), 0, []
    bar = tqdm(total=int(cfg.minutes * 60), unit="s", disable=not progress or rank > 0, desc="train video")
    while ddp.broadcast_values([float(time.perf_counter() - start < cfg.minutes * 60)])[0]:
        idx = torch.randint(len(images), (cfg.batch_size,), generator=generator)
        x = images[idx].to(device)
        steps = int(torch.randint(1, cfg.max_steps + 1, (1,), generator=generator))
        model.reset()
        learning = temporal = 0.0
        previous = None
        for k in range(cfg.frames):
            if k:
                motion = synthetic_motion(len(x), x.shape[2:], generator).to(device)
                noise = cfg.noise * torch.randn(x.shape, generator=generator).to(device)
                x = (warp(x, motion) + noise).clamp(-1, 1)
            outputs = model.frame(x, steps)
            inputs = [x, *outputs[:-1]]
            learning = learning + sum(loss(o, i)["loss"].mean() for o, i in zip(outputs, inputs)) / steps
            if previous is not None:
                temporal = temporal + _masked_mse(outputs[-1], warp(previous, motion), _inside(motion))
            previous = outputs[-1]
        total = (learning + cfg.temporal_weight * temporal) / cfg.frames
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        ddp.average_gradients(params)
        optimizer.step()
        iterations += 1
        history.append(
            (float(learning.detach()) / cfg.frames, float(torch.as_tensor(temporal).detach()) / max(cfg.frames - 1, 1))
        )
        bar.update(int(time.perf_counter() - start) - bar.n)
        bar.set_postfix({"learning": f"{history[-1][0]:.3g}", "temporal": f"{history[-1][1]:.3g}"})
    bar.close()
    minutes = (time.perf_counter() - start) / 60
    recent = np.asarray(history[-20:]) if history else np.zeros((1, 2))
    stats = {
        "iterations": iterations,
        "minutes": minutes,
        "learning_loss": float(recent[:, 0].mean()),
        "temporal_loss": float(recent[:, 1].mean()),
    }
    config = {
        "agent": model.config.to_dict(),
        "hidden": cfg.hidden,
        "env": asdict(EditConfig(**image_config["env"])),
        "size": cfg.size,
        "task": "style-video",
        "image_model": str(cfg.image_model),
        "training": cfg.to_dict(),
    }
    if rank == 0:
        save_checkpoint(out / "model.pt", config, model.state_dict(), style_image=style_bytes(style), val=stats)
    ddp.barrier()
    return stats
