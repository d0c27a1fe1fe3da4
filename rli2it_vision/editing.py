"""Image editing with the RL-I2IT agent: the environment, auxiliary loss, model and training shared by inpainting
and translation (the action is the next image, or the hole's content).

State ``s_t``: the current image ``X_t`` (inpainting: the image with the current fill in the hole) or
``concat(source, X_t)`` (translation, ``condition=True``). Action: an image ``A_t`` in [-1, 1]; the next image
takes it inside the edited region (the hole; the whole image when there is none) and keeps the rest:
``X_{t+1} = region * A_t + (1 - region) * X_t``. Reward: ``reward_scale * (PSNR_{t+1} - PSNR_t)`` of the region
against the target (dB, images in [-1, 1], capped at ``max_psnr``), so an episode's return is the PSNR gained. Episodes
run ``max_steps`` steps.

The auxiliary loss (:class:`EditingTask`) is L1 to the target in the edited region (near a hole's border weighted
more during the first updates) + ``adv_weight`` times the hinge loss of a spectrally normalised (SNGAN) discriminator
(conditioned on the source in translation), which the task trains one step per auxiliary step, + ``tv_weight`` times
the total variation of the prediction. :class:`ImageEditor` applies a trained agent; :func:`train_editing` trains one
on the shared loop (:mod:`rli2it_med.agent.loop`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from rli2it_med.agent import SAC, Agent, AgentConfig, EpisodeReplayBuffer, Logger, SACConfig, load_checkpoint, loop
from rli2it_med.agent import distributed as ddp
from rli2it_med.agent.buffer import ReplayBatch
from rli2it_med.agent.loop import LoopConfig, draw_pairs
from rli2it_med.api import resolve_device
from rli2it_med.io import save_json

__all__ = [
    "Discriminator",
    "EditConfig",
    "EditLossConfig",
    "EditResult",
    "EditTrainConfig",
    "EditingTask",
    "ImageEditEnv",
    "ImageEditor",
    "ImagePairs",
    "agent_config",
    "border_weights",
    "centre_hole",
    "edit_region",
    "evaluate_editing",
    "region_psnr",
    "train_editing",
    "with_mirrors",
]


def centre_hole(shape: tuple[int, int], size: int) -> tuple[slice, slice]:
    """The centred square hole of side ``size`` in an image of spatial ``shape`` (H, W)."""
    h, w = shape
    if not 0 < size < min(h, w):
        raise ValueError(f"hole size must lie in (0, {min(h, w)}) for images of {h}x{w}, got {size}")
    top, left = (h - size) // 2, (w - size) // 2
    return slice(top, top + size), slice(left, left + size)


def edit_region(shape: tuple[int, int], hole: int) -> tuple[slice, slice]:
    """What an episode edits: the centre hole of side ``hole``, or the whole image when ``hole`` is 0."""
    return centre_hole(shape, hole) if hole else (slice(None), slice(None))


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

    The reward is the gain of a per-image score (``_score``, reported in ``info[score_name]``; here the region's
    PSNR); a subclass changes what is scored and how a gain is rewarded (``_reward``), e.g. style transfer's
    :class:`~rli2it_vision.style.StyleEnv`.

    Args:
        config: environment options.
        pairs: where ``reset()`` draws its images from when none are given in ``options``.
        batch_size: pairs per episode batch.
        device: where the episode tensors live.
    """

    score_name = "psnr"

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
        self._state["initial"] = self._state["score"] = self._score(current)
        self._state["indices"] = indices
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
        score = self._score(current)
        reward = self._reward(st["score"], score)
        st.update(current=current, score=score, t=st["t"] + 1)
        batch = current.shape[0]
        terminated = torch.zeros(batch, dtype=torch.bool, device=self.device)
        truncated = torch.full((batch,), st["t"] >= self.config.max_steps, dtype=torch.bool, device=self.device)
        return self.observation(), reward, terminated, truncated, self._info()

    def observation(self) -> torch.Tensor:
        st = self._state
        return torch.cat([st["source"], st["current"]], 1) if self.config.condition else st["current"]

    def _score(self, current: torch.Tensor) -> torch.Tensor:
        """What the reward measures the gain of, per image (B,): the region's PSNR (reported as ``score_name``)."""
        return region_psnr(current, self._state["target"], self._state["region"]).clamp_max(self.config.max_psnr)

    def _reward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return self.config.reward_scale * (after - before)

    def _info(self) -> dict:
        st = self._state
        return {"current": st["current"], self.score_name: st["score"], "t": st["t"], "indices": st["indices"]}


def agent_config(in_channels: int, action_channels: int, **overrides: Any) -> AgentConfig:
    """Context-encoder-like planner/actor/critic of the image tasks: 4x4 stride-2 convs, a plan of 256 (SPEC)."""
    base = dict(
        spatial_dims=2,
        in_channels=in_channels,
        action_channels=action_channels,
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
        in_channels: image channels (translation: source + target channels).
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
class EditLossConfig:
    """``L1(region, weighted) + adv_weight * hinge GAN + tv_weight * TV``; with a hole, pixels within ``border`` of its
    edge weigh ``border_weight`` at first, falling linearly to 1 over ``border_updates`` auxiliary steps. The
    adversarial weight 0.001 is the context encoder's (Pathak et al., 2016); 0.01 cost 0.1-0.2 dB of hole PSNR after the
    first step on the faces (5-minute runs, docs/benchmarks.md)."""

    border: int = 2
    border_weight: float = 5.0
    border_updates: int = 2000
    adv_weight: float = 0.001
    tv_weight: float = 0.0
    lr_discriminator: float = 2e-4

    def to_dict(self) -> dict:
        return asdict(self)


def border_weights(size: int, border: int, weight: float) -> torch.Tensor:
    """(size, size) weights of a hole: ``weight`` within ``border`` pixels of its edge, 1 inside."""
    w = torch.full((size, size), float(weight))
    if size > 2 * border:
        w[border : size - border, border : size - border] = 1.0
    return w


class EditingTask:
    """Rebuilds replayed states from ``(pair index, region content)`` and computes the auxiliary loss.

    Replayed state components: ``"index"`` (into ``pairs``) and ``"content"`` (B, C, h, w), what the edited region
    (the hole; the whole image in translation) currently holds, stored in half precision by the buffer.

    Args:
        pairs: the training pairs (inpainting: the images twice).
        env: the environment's options (hole, condition).
        loss: auxiliary loss options.
        device: where batches are computed.
    """

    def __init__(
        self, pairs: ImagePairs, env: EditConfig, loss: EditLossConfig, device: torch.device | str = "cpu"
    ) -> None:
        self.pairs, self.env_config, self.loss_config = pairs, env, loss
        self.device = torch.device(device)
        shape = tuple(pairs.target.shape[2:])
        self.region = edit_region(shape, env.hole)
        d_in = pairs.target.shape[1] + (pairs.source.shape[1] if env.condition else 0)
        self.discriminator = Discriminator(d_in).to(self.device)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=loss.lr_discriminator, betas=(0.5, 0.9))
        self.n_updates = 0

    def state_dict(self) -> dict:
        """What a resumed run needs besides the agent: the discriminator, its optimiser and the update count."""
        return {
            "discriminator": self.discriminator.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "n_updates": self.n_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.n_updates = int(state["n_updates"])

    def content(self, info: dict) -> dict[str, torch.Tensor]:
        """The compact state of an environment ``info`` (the loop adds the pair index)."""
        return {"content": info["current"][(..., *self.region)]}

    def current(self, index: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """The edited images of pairs ``index`` whose region holds ``content``."""
        if not self.env_config.hole:
            return content.to(self.device, torch.float32)
        out = self.pairs.source[index.cpu()].to(self.device).clone()
        out[(..., *self.region)] = content.to(out)
        return out

    def observe(self, index: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        if not self.env_config.condition:
            return current
        return torch.cat([self.pairs.source[index.cpu()].to(self.device), current], 1)

    def observations(self, batch: ReplayBatch) -> tuple[torch.Tensor, torch.Tensor]:
        s, n = batch.state, batch.next_state
        return (
            self.observe(s["index"], self.current(s["index"], s["content"])),
            self.observe(n["index"], self.current(n["index"], n["content"])),
        )

    def _l1(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cfg = self.loss_config
        if not self.env_config.hole or cfg.border <= 0:
            return (pred - target).abs().mean()
        early = max(0.0, 1.0 - self.n_updates / max(cfg.border_updates, 1))
        weights = border_weights(pred.shape[-1], cfg.border, 1.0 + (cfg.border_weight - 1.0) * early).to(pred)
        return ((pred - target).abs() * weights).sum((-2, -1)).mean() / weights.sum()

    def auxiliary_loss(self, agent: Agent, batch: ReplayBatch, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.loss_config
        index = batch.state["index"]
        target = self.pairs.target[index.cpu()].to(self.device)
        out = agent.planner(obs)
        content = agent.actor(out.distribution().rsample(), out.skips)[(..., *self.region)]
        terms = {"l1": self._l1(content, target[(..., *self.region)])}
        fake = self.current(index, content)
        if cfg.tv_weight:
            terms["tv"] = (fake.diff(dim=-1).abs().mean() + fake.diff(dim=-2).abs().mean()) / 2
        if cfg.adv_weight:
            d = self.discriminator
            real_in, fake_in = self.observe(index, target), self.observe(index, fake)
            d_loss = F.relu(1 - d(real_in)).mean() + F.relu(1 + d(fake_in.detach())).mean()
            self.d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            ddp.average_gradients(list(d.parameters()))
            self.d_optimizer.step()
            d.requires_grad_(False)
            try:
                terms["adv"] = -d(fake_in).mean()
            finally:
                d.requires_grad_(True)
            terms["d_loss"] = d_loss.detach()
        loss = terms["l1"] + cfg.adv_weight * terms.get("adv", 0.0) + cfg.tv_weight * terms.get("tv", 0.0)
        self.n_updates += 1
        return {"loss": loss} | {k: v.detach() for k, v in terms.items()}


class EditResult(NamedTuple):
    """What :meth:`ImageEditor.edit` returns: the edited images, the images after each step t = 0..T, and (given a
    target) the region's PSNR (B,) after each step."""

    image: torch.Tensor
    frames: list[torch.Tensor]
    psnr: list[torch.Tensor]


class ImageEditor:
    """A trained image-editing agent (inpainting or translation): edits images step by step.

    Args:
        agent: planner and actor.
        env: episode length, hole (inpainting) and conditioning (translation).
        device: ``"auto"`` (CUDA when present), ``"cpu"``...
        steps: default number of steps (default: the episode length; a trained checkpoint's is the number of steps
            that scored best on validation, see :func:`train_editing`).
    """

    def __init__(
        self, agent: Agent, env: EditConfig, device: str | torch.device | None = "auto", steps: int | None = None
    ) -> None:
        self.device = resolve_device(device)
        self.agent = agent.to(self.device).eval()
        self.env_config = env
        self.steps = env.max_steps if steps is None else int(steps)
        self.metadata: dict[str, Any] = {}

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = "auto", task: str | None = None) -> ImageEditor:
        """A checkpoint of :func:`train_editing`; ``task`` (``"inpainting"``, ``"translation"``) checks its kind."""
        payload = load_checkpoint(path)
        try:
            config = payload["config"]
            agent = Agent(AgentConfig(**config["agent"]))
            agent.load_state_dict(payload["state_dict"])
            env = EditConfig(**config["env"])
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise ValueError(f"{path}: not an image-editing agent this version can load ({e})") from e
        if task is not None and config.get("task") != task:
            raise ValueError(f"{path}: a {config.get('task')} model, not {task}")
        model = cls(agent, env, device, payload.get("val", {}).get("steps"))
        model.metadata = {k: v for k, v in payload.items() if k != "state_dict"}
        return model

    @property
    def image_size(self) -> int:
        """The side of the images the agent was trained on."""
        return int(self.metadata.get("config", {}).get("size", 64))

    @torch.no_grad()
    def edit(
        self,
        source: torch.Tensor,
        steps: int | None = None,
        target: torch.Tensor | None = None,
        hole: int | None = None,
    ) -> EditResult:
        """Edit (B, C, H, W) images in [-1, 1] for ``steps`` steps (default ``self.steps``). Inpainting fills the
        centre hole (default: the trained size; what the images hold there is ignored); translation maps the source.
        With ``target`` the result has the region's PSNR after each step t = 0..T."""
        steps = self.steps if steps is None else int(steps)
        expected = self.agent.config.in_channels - (
            self.agent.config.action_channels if self.env_config.condition else 0
        )
        if source.ndim != 4 or source.shape[1] != expected:
            raise ValueError(f"expected images of shape (B, {expected}, H, W) in [-1, 1], got {tuple(source.shape)}")
        hole = self.env_config.hole if hole is None or not self.env_config.hole else int(hole)
        cfg = EditConfig(max_steps=max(steps, 1), hole=hole, condition=self.env_config.condition)
        env = ImageEditEnv(cfg, device=self.device)
        source = source.to(self.device, torch.float32)
        if target is None:
            channels = self.agent.config.action_channels
            target = source if not cfg.condition else torch.zeros(len(source), channels, *source.shape[2:])
        obs, info = env.reset(options={"pair": ImagePairs(source, target)})
        frames, psnr = [info["current"]], [info["psnr"]]
        for _ in range(steps):
            _, action, _ = self.agent.act(obs, deterministic=True)
            obs, _, _, _, info = env.step(action)
            frames.append(info["current"])
            psnr.append(info["psnr"])
        return EditResult(frames[-1], frames, psnr)


def evaluate_editing(model: ImageEditor, pairs: ImagePairs, steps: int | None = None) -> dict[str, Any]:
    """PSNR and SSIM of the edited region (images in [-1, 1], data range 2) after ``steps`` steps (default: the
    model's), the same after each step t = 0..steps (``psnr_steps``, ``ssim_steps``), seconds per image."""
    from monai.metrics import SSIMMetric

    start = time.perf_counter()
    result = model.edit(pairs.source, steps, target=pairs.target)
    seconds = (time.perf_counter() - start) / len(pairs)
    region = edit_region(tuple(pairs.target.shape[2:]), model.env_config.hole)
    truth = pairs.target[(..., *region)]
    ssim = SSIMMetric(spatial_dims=2, data_range=2.0, win_size=7, reduction="none")
    pred = result.image[(..., *region)].cpu()
    return {
        "psnr": float(region_psnr(pred, truth).mean()),
        "ssim": float(ssim(pred, truth).mean()),
        "psnr_steps": [float(p.mean()) for p in result.psnr],
        "ssim_steps": [float(ssim(f[(..., *region)].cpu(), truth).mean()) for f in result.frames],
        "seconds_per_image": seconds,
    }


@dataclass
class EditTrainConfig(LoopConfig):
    """A training run of an image-editing agent (the loop's options are
    :class:`~rli2it_med.agent.loop.LoopConfig`'s); the tasks subclass it with their defaults.

    Attributes:
        data: the task's dataset name or a user's folder.
        size: images are resized to ``size`` x ``size``.
        flip: train on the training pairs and their left-right mirror images.
    """

    PARTS: ClassVar[dict[str, type]] = {
        "agent": AgentConfig, "env": EditConfig, "sac": SACConfig, "loss": EditLossConfig
    }  # fmt: skip

    data: str = ""
    out: str = "runs/edit"
    size: int = 64
    flip: bool = True
    env_batch: int = 16
    batch_size: int = 32
    buffer_episodes: int = 1024
    agent: AgentConfig = field(default_factory=AgentConfig)
    env: EditConfig = field(default_factory=EditConfig)
    sac: SACConfig = field(default_factory=lambda: SACConfig(lr_aux=2e-4, lr_planner=2e-4))
    loss: EditLossConfig = field(default_factory=EditLossConfig)


def with_mirrors(pairs: ImagePairs) -> ImagePairs:
    """The pairs followed by their left-right mirror images."""
    return ImagePairs(
        torch.cat([pairs.source, pairs.source.flip(-1)]), torch.cat([pairs.target, pairs.target.flip(-1)])
    )


def train_editing(
    cfg: EditTrainConfig, train: ImagePairs, val: ImagePairs, task: str, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train (or resume) an image-editing agent on ``train`` pairs (mirrored too when ``cfg.flip``), validating on
    ``val``, with :func:`rli2it_med.agent.loop.run_training`; checkpoints record ``task`` and the configuration.

    Validation runs the episode's T steps and scores the step t >= 1 of the best PSNR; that ``steps`` is the
    checkpoint's default number of steps (like an iterative method's stopping time, chosen on validation data)."""
    rank, world, device = loop.start_process(cfg)
    out = Path(cfg.out)
    if cfg.flip:
        train = with_mirrors(train)
    train = ImagePairs(train.source[rank::world], train.target[rank::world])
    src, tgt = train.source.shape[1], train.target.shape[1]
    channels = {"in_channels": src + tgt if cfg.env.condition else tgt, "action_channels": tgt}
    if any(getattr(cfg.agent, k) != v for k, v in channels.items()):
        cfg.agent = AgentConfig(**(cfg.agent.to_dict() | channels))
    agent = Agent(cfg.agent).to(device)
    logger = Logger(out if rank == 0 else None)
    buffer = EpisodeReplayBuffer(cfg.buffer_episodes)
    editing = EditingTask(train, cfg.env, cfg.loss, device)
    ddp.broadcast_module(agent)
    ddp.broadcast_module(editing.discriminator)
    sac = SAC(agent, editing, buffer, cfg.sac, logger, grad_reduce=ddp.average_gradients)
    env = ImageEditEnv(cfg.env, train, cfg.env_batch, device)
    env.reset(seed=cfg.seed + rank)
    if rank == 0:
        save_json(out / "config.json", cfg.to_dict())
    model_config = {"agent": cfg.agent.to_dict(), "env": asdict(cfg.env), "size": cfg.size, "task": task}
    model_config["training"] = cfg.to_dict()  # how it was trained (the benchmarks train their peers alike)

    def validate() -> dict[str, float]:
        m = evaluate_editing(ImageEditor(agent, cfg.env, device), val)  # all T steps, scored after each
        steps = loop.best_step(m["psnr_steps"])
        seconds = m["seconds_per_image"] * steps / cfg.env.max_steps
        return {
            "psnr": m["psnr_steps"][steps],
            "ssim": m["ssim_steps"][steps],
            "steps": steps,
            "seconds_per_image": seconds,
        }

    return loop.run_training(
        cfg, agent, sac, env, buffer, editing.content, validate, model_config, "psnr", "psnr", logger, resume, progress
    )
