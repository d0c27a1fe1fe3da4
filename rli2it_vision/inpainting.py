"""Face inpainting as an RL-I2IT task (SPEC section 4) on the shared image-editing machinery.

The environment is :class:`rli2it_vision.editing.ImageEditEnv` with a centre hole: the state is the image with the
current fill, the action the hole's content, the reward the hole's PSNR gain. The agent's nets are context-encoder
like: 4x4 stride-2 convs, a 256-d plan, an actor decoding the full image with the planner's skips (only the hole is
pasted). The auxiliary loss (:class:`~rli2it_vision.editing.EditingTask`): L1 on the hole, its border weighted more
during the first updates, + ``adv_weight`` times the hinge loss of an SNGAN discriminator.

Data: scikit-image's 100 aligned LFW faces (25x25 grey, upsampled to ``size``; 70 train / 10 validation / 20 test)
or a folder of images (CelebA-HQ style; the last 10 % test, the 10 % before them validation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from rli2it_med.agent import AgentConfig
from rli2it_vision import editing
from rli2it_vision.data import folder_split, image_folder, lfw_faces
from rli2it_vision.editing import EditConfig, EditTrainConfig, ImageEditor, ImagePairs, centre_hole, train_editing

__all__ = ["InpaintConfig", "agent_config", "image_pairs", "inpaint_image", "load_images", "train_inpainting"]


def agent_config(image_channels: int = 1, **overrides) -> AgentConfig:
    """Planner/actor/critic for inpainting ``image_channels``-channel images (:func:`editing.agent_config`)."""
    return editing.agent_config(image_channels, image_channels, **overrides)


@dataclass
class InpaintConfig(EditTrainConfig):
    """A training run of the inpainting agent (see :class:`~rli2it_vision.editing.EditTrainConfig`).

    Attributes:
        data: ``"lfw"`` (the offline faces, grey) or a folder of images (RGB).
    """

    data: str = "lfw"
    out: str = "runs/inpaint"
    size: int = 32
    agent: AgentConfig = field(default_factory=agent_config)
    env: EditConfig = field(default_factory=lambda: EditConfig(max_steps=5, hole=16))


def load_images(data: str, split: str, size: int) -> torch.Tensor:
    """The images of a split: ``"lfw"`` faces or a folder (see the module's docstring)."""
    if data == "lfw":
        return lfw_faces(split, size)
    return folder_split(image_folder(data, size), split, data)


def image_pairs(data: str, split: str, size: int) -> ImagePairs:
    """Inpainting pairs: each image is its own source (the hole is emptied) and target."""
    images = load_images(data, split, size)
    return ImagePairs(images, images)


def train_inpainting(cfg: InpaintConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the inpainting agent; its checkpoints load with ``ImageEditor.load``."""
    if not cfg.env.hole:
        raise ValueError("inpainting needs a hole (env.hole > 0)")
    train, val = image_pairs(cfg.data, "train", cfg.size), image_pairs(cfg.data, "val", cfg.size)
    return train_editing(cfg, train, val, "inpainting", resume, progress)


def inpaint_image(
    model: ImageEditor, image: torch.Tensor, mask_size: int | None = None, steps: int | None = None
) -> torch.Tensor:
    """Fill the centre hole of one (C, H, W) image in [-1, 1] at its own resolution; the rest stays as it was.

    The image's centred square is resized to the model's size, the model fills the hole there, and the fill is
    resized back (bicubic) into the image.

    Args:
        mask_size: side of the hole in the image's pixels (default: the trained hole's share of the square).
        steps: agent steps (default: the model's).
    """
    if image.ndim != 3:
        raise ValueError(f"expected one (C, H, W) image, got {tuple(image.shape)}")
    h, w = image.shape[1:]
    side, size = min(h, w), model.image_size
    mask = round(model.env_config.hole * side / size) if mask_size is None else int(mask_size)
    if not 0 < mask < side:
        raise ValueError(f"the hole's side must lie in (0, {side}) for a {h}x{w} image, got {mask}")
    top, left = (h - side) // 2, (w - side) // 2
    square = image[None, :, top : top + side, left : left + side].float()
    small = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    hole = min(max(1, round(mask * size / side)), size - 1)
    filled = model.edit(small, steps, hole=hole).image.cpu()
    fill = F.interpolate(filled[(..., *centre_hole((size, size), hole))], size=(mask, mask), mode="bicubic")
    out = image.clone()
    out[(..., *centre_hole((h, w), mask))] = fill[0].clamp(-1, 1).to(out)
    return out
