"""Face inpainting as an RL-I2IT task (SPEC section 4): networks, replayed states and the auxiliary loss.

The environment is :class:`rli2it_vision.editing.ImageEditEnv` with a centre hole. The agent's nets are
context-encoder-like: 4x4 stride-2 convs, a 256-d plan, an actor decoding the full image with the planner's skips
(only the hole is pasted). The auxiliary loss is an L1 loss on the hole, whose pixels near the hole's border weigh
more during the first updates, plus ``adv_weight`` times the hinge adversarial loss of a spectrally normalised
(SNGAN) discriminator, which the task trains (one step per auxiliary step) on the composited images.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from rli2it_med.agent import SAC, Agent, AgentConfig, EpisodeReplayBuffer, Logger, SACConfig, load_checkpoint, loop
from rli2it_med.agent.buffer import ReplayBatch
from rli2it_med.agent.loop import LoopConfig
from rli2it_med.api import resolve_device
from rli2it_med.io import save_json
from rli2it_vision.data import image_folder, lfw_faces
from rli2it_vision.editing import EditConfig, ImageEditEnv, ImagePairs, centre_hole, region_psnr

__all__ = [
    "Discriminator",
    "InpaintConfig",
    "InpaintLossConfig",
    "InpaintResult",
    "Inpainter",
    "InpaintingTask",
    "agent_config",
    "border_weights",
    "evaluate_inpainting",
    "load_images",
    "train_inpainting",
]


def agent_config(image_channels: int = 1, **overrides) -> AgentConfig:
    """Planner/actor/critic for inpainting ``image_channels``-channel images: 4x4 stride-2 convs, plan of 256."""
    base = dict(
        spatial_dims=2,
        in_channels=image_channels,
        action_channels=image_channels,
        plan_dim=256,
        channels=(32, 64, 128, 256),
        critic_channels=(32, 64, 128, 256),
        down_kernel=4,
        action_bound=1.0,
    )
    return AgentConfig(**(base | overrides))


class Discriminator(nn.Module):
    """SNGAN discriminator: spectrally normalised 4x4 stride-2 convs with LeakyReLU, then a linear logit per image.

    Args:
        in_channels: image channels.
        channels: widths of the conv levels (each halves the resolution).
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        layers, cin = [], in_channels
        for c in channels:
            layers += [spectral_norm(nn.Conv2d(cin, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = c
        self.features = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(cin, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B,) logits."""
        return self.head(self.features(image).mean((2, 3))).squeeze(1)


@dataclass
class InpaintLossConfig:
    """``L1(hole, weighted) + adv_weight * hinge GAN``; border pixels (within ``border`` of the hole's edge) weigh
    ``border_weight`` at first, falling linearly to 1 over ``border_updates`` auxiliary steps."""

    hole: int = 32
    border: int = 4
    border_weight: float = 5.0
    border_updates: int = 2000
    adv_weight: float = 0.01
    lr_discriminator: float = 2e-4

    def to_dict(self) -> dict:
        return asdict(self)


def border_weights(size: int, border: int, weight: float) -> torch.Tensor:
    """(size, size) weights of a hole: ``weight`` within ``border`` pixels of its edge, 1 inside."""
    w = torch.full((size, size), float(weight))
    if size > 2 * border:
        w[border : size - border, border : size - border] = 1.0
    return w


class InpaintingTask:
    """Rebuilds replayed states from ``(image index, hole content)`` and computes the auxiliary loss.

    Replayed state components: ``"index"`` (into ``images``) and ``"fill"`` (B, C, hole, hole), the hole's current
    content, stored in half precision by the buffer.

    Args:
        images: (N, C, H, W) training images in [-1, 1] (the targets; the environment's sources are the same).
        loss: auxiliary loss options.
        device: where batches are computed.
    """

    def __init__(self, images: torch.Tensor, loss: InpaintLossConfig, device: torch.device | str = "cpu") -> None:
        self.images = images
        self.loss_config = loss
        self.device = torch.device(device)
        self.region = centre_hole(tuple(images.shape[2:]), loss.hole)
        self.discriminator = Discriminator(images.shape[1]).to(self.device)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=loss.lr_discriminator, betas=(0.5, 0.9))
        self.n_updates = 0

    def compose(self, index: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """The images at ``index`` with ``fill`` pasted into the hole."""
        out = self.images[index.cpu()].to(self.device).clone()
        out[(..., *self.region)] = fill.to(out)
        return out

    def observations(self, batch: ReplayBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            self.compose(batch.state["index"], batch.state["fill"]),
            self.compose(batch.next_state["index"], batch.next_state["fill"]),
        )

    def _l1(self, fill: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cfg = self.loss_config
        early = max(0.0, 1.0 - self.n_updates / max(cfg.border_updates, 1))
        weights = border_weights(fill.shape[-1], cfg.border, 1.0 + (cfg.border_weight - 1.0) * early).to(fill)
        return ((fill - target).abs() * weights).sum((-2, -1)).mean() / weights.sum()

    def auxiliary_loss(self, agent: Agent, batch: ReplayBatch, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        index = batch.state["index"]
        real = self.images[index.cpu()].to(self.device)
        out = agent.planner(obs)
        fill = agent.actor(out.distribution().rsample(), out.skips)[(..., *self.region)]
        terms = {"l1": self._l1(fill, real[(..., *self.region)])}
        fake = obs.clone()
        fake[(..., *self.region)] = fill
        if self.loss_config.adv_weight:
            d = self.discriminator
            d_loss = F.relu(1 - d(real)).mean() + F.relu(1 + d(fake.detach())).mean()
            self.d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_optimizer.step()
            d.requires_grad_(False)
            try:
                terms["adv"] = -d(fake).mean()
            finally:
                d.requires_grad_(True)
            terms["d_loss"] = d_loss.detach()
        loss = terms["l1"] + self.loss_config.adv_weight * terms.get("adv", 0.0)
        self.n_updates += 1
        return {"loss": loss} | {k: v.detach() for k, v in terms.items()}


@dataclass
class InpaintConfig(LoopConfig):
    """A training run of the inpainting agent (the loop's options are :class:`~rli2it_med.agent.loop.LoopConfig`'s).

    Attributes:
        data: ``"lfw"`` (scikit-image's 100 aligned faces, grey) or a folder of images (RGB; sorted by name, the
            last 10 % test and the 10 % before them validation).
        size: images are resized to ``size`` x ``size``.
    """

    PARTS: ClassVar[dict[str, type]] = {
        "agent": AgentConfig, "env": EditConfig, "sac": SACConfig, "loss": InpaintLossConfig
    }  # fmt: skip

    data: str = "lfw"
    out: str = "runs/inpaint"
    size: int = 64
    env_batch: int = 16
    batch_size: int = 32
    buffer_episodes: int = 1024
    agent: AgentConfig = field(default_factory=agent_config)
    env: EditConfig = field(default_factory=lambda: EditConfig(max_steps=5, hole=32))
    sac: SACConfig = field(default_factory=lambda: SACConfig(lr_aux=2e-4, lr_planner=2e-4))
    loss: InpaintLossConfig = field(default_factory=InpaintLossConfig)


def load_images(data: str, split: str, size: int) -> torch.Tensor:
    """The images of a split: ``"lfw"`` faces or a folder (see :class:`InpaintConfig`)."""
    if data == "lfw":
        return lfw_faces(split, size)
    images = image_folder(data, size)
    n = len(images)
    n_test, n_val = max(1, n // 10), max(1, n // 10)
    if n - n_test - n_val < 1:
        raise ValueError(f"{data}: {n} images are too few for train / validation / test splits")
    bounds = {"train": (0, n - n_test - n_val), "val": (n - n_test - n_val, n - n_test), "test": (n - n_test, n)}
    if split not in bounds:
        raise ValueError(f"split must be one of {sorted(bounds)}, got {split!r}")
    return images[slice(*bounds[split])]


class InpaintResult(NamedTuple):
    """What :meth:`Inpainter.inpaint` returns: the filled images, the images after each step t = 0..T, and (given a
    target) the hole's PSNR (B,) after each step."""

    filled: torch.Tensor
    frames: list[torch.Tensor]
    psnr: list[torch.Tensor]


class Inpainter:
    """A trained inpainting agent: fills the centre hole of images step by step.

    Args:
        agent: planner and actor.
        env: episode length and hole size.
        device: ``"auto"`` (CUDA when present), ``"cpu"``...
    """

    def __init__(self, agent: Agent, env: EditConfig, device: str | torch.device | None = "auto") -> None:
        self.device = resolve_device(device)
        self.agent = agent.to(self.device).eval()
        self.env_config = env
        self.metadata: dict[str, Any] = {}

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = "auto") -> Inpainter:
        payload = load_checkpoint(path)
        try:
            agent = Agent(AgentConfig(**payload["config"]["agent"]))
            agent.load_state_dict(payload["state_dict"])
            env = EditConfig(**payload["config"]["env"])
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise ValueError(f"{path}: not an inpainting agent this version can load ({e})") from e
        model = cls(agent, env, device)
        model.metadata = {k: v for k, v in payload.items() if k != "state_dict"}
        return model

    @torch.no_grad()
    def inpaint(
        self,
        images: torch.Tensor,
        steps: int | None = None,
        target: torch.Tensor | None = None,
        hole: int | None = None,
    ) -> InpaintResult:
        """Fill the centre hole (default: the trained size) of (B, C, H, W) images in [-1, 1]; what the images hold
        there is ignored. With ``target`` the result has the hole's PSNR after each step t = 0..T (default: the
        trained T)."""
        steps = self.env_config.max_steps if steps is None else int(steps)
        expected = self.agent.config.in_channels
        if images.ndim != 4 or images.shape[1] != expected:
            raise ValueError(f"expected images of shape (B, {expected}, H, W) in [-1, 1], got {tuple(images.shape)}")
        cfg = EditConfig(max_steps=max(steps, 1), hole=self.env_config.hole if hole is None else int(hole))
        env = ImageEditEnv(cfg, device=self.device)
        images = images.to(self.device, torch.float32)
        obs, info = env.reset(options={"pair": ImagePairs(images, images if target is None else target)})
        frames, psnr = [info["current"]], [info["psnr"]]
        for _ in range(steps):
            _, action, _ = self.agent.act(obs, deterministic=True)
            obs, _, _, _, info = env.step(action)
            frames.append(info["current"])
            psnr.append(info["psnr"])
        return InpaintResult(frames[-1], frames, psnr if target is not None else [])


def evaluate_inpainting(model: Inpainter, images: torch.Tensor, steps: int | None = None) -> dict[str, Any]:
    """PSNR and SSIM of the hole (images in [-1, 1], data range 2), PSNR after each step, seconds per image."""
    from monai.metrics import SSIMMetric

    start = time.perf_counter()
    result = model.inpaint(images, steps, target=images)
    seconds = (time.perf_counter() - start) / len(images)
    region = centre_hole(tuple(images.shape[2:]), model.env_config.hole)
    hole, truth = result.filled[(..., *region)].cpu(), images[(..., *region)]
    ssim = SSIMMetric(spatial_dims=2, data_range=2.0, win_size=7, reduction="none")(hole, truth)[:, 0]
    return {
        "psnr": float(region_psnr(hole, truth).mean()),
        "ssim": float(ssim.mean()),
        "psnr_steps": [float(p.mean()) for p in result.psnr],
        "seconds_per_image": seconds,
    }


def train_inpainting(cfg: InpaintConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the inpainting agent with :func:`rli2it_med.agent.loop.run_training`."""
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    train_images = load_images(cfg.data, "train", cfg.size)
    val_images = load_images(cfg.data, "val", cfg.size)
    if train_images.shape[1] != cfg.agent.in_channels:
        cfg.agent = AgentConfig(**(cfg.agent.to_dict() | {"in_channels": train_images.shape[1],
                                                           "action_channels": train_images.shape[1]}))  # fmt: skip
    if cfg.loss.hole != cfg.env.hole:
        raise ValueError(f"loss.hole {cfg.loss.hole} differs from env.hole {cfg.env.hole}")
    agent = Agent(cfg.agent).to(device)
    logger = Logger(out)
    buffer = EpisodeReplayBuffer(cfg.buffer_episodes)
    task = InpaintingTask(train_images, cfg.loss, device)
    sac = SAC(agent, task, buffer, cfg.sac, logger)
    env = ImageEditEnv(cfg.env, ImagePairs(train_images, train_images), cfg.env_batch, device)
    env.reset(seed=cfg.seed)
    save_json(out / "config.json", cfg.to_dict())
    model_config = {"agent": cfg.agent.to_dict(), "env": asdict(cfg.env), "size": cfg.size, "task": "inpainting"}

    def components(info: dict) -> dict[str, torch.Tensor]:
        return {"fill": info["current"][(..., *task.region)]}  # replayed: image index + the hole's content

    def validate() -> dict[str, float]:
        m = evaluate_inpainting(Inpainter(agent, cfg.env, device), val_images)
        return {"psnr": m["psnr"], "ssim": m["ssim"], "seconds_per_image": m["seconds_per_image"]}

    return loop.run_training(
        cfg, agent, sac, env, buffer, components, validate, model_config, "psnr", "psnr", logger, resume, progress
    )
