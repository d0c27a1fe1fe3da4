"""Paired image-to-image translation as an RL-I2IT task (SPEC section 4) on the shared image-editing machinery.

The environment is :class:`rli2it_vision.editing.ImageEditEnv` with ``condition=True``: the state is
``concat(source, current prediction)`` (the prediction starts mid-grey), the action the next prediction, the reward
its PSNR gain. The auxiliary loss (:class:`~rli2it_vision.editing.EditingTask`): L1 + ``adv_weight`` times the hinge
loss of a source-conditioned SNGAN discriminator (+ ``tv_weight`` times total variation).

Data:

- ``"brain"`` (offline default): tissue label map -> T1 MRI, axial slices of the ICBM152 2009a template that nilearn
  ships under random smooth deformations with bias field and noise (:mod:`rli2it_med.registration.synthetic`).
  Source: the labels (0 background, 1 CSF, 2 GM, 3 WM) as one channel, ``label / 3`` in [-1, 1]; target: the T1.
  Fixed split by slice (test: z % 4 == 2, validation: z % 8 == 0, train: the rest of z = 24..79) and by seed.
- a pix2pix-style folder: ``A/`` and ``B/`` sub-folders of images with the same names, or images holding A and B
  side by side (A left); with ``train/``, ``val/`` and ``test/`` sub-folders those are the splits, else the files
  sorted by name are split 80 / 10 / 10.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rli2it_med.agent import AgentConfig
from rli2it_vision import editing
from rli2it_vision.data import IMAGE_SUFFIXES, image_tensor, load_image, read_image
from rli2it_vision.editing import EditConfig, EditLossConfig, EditTrainConfig, ImagePairs, train_editing

__all__ = [
    "BRAIN_COUNTS",
    "TranslateConfig",
    "agent_config",
    "brain_pairs",
    "load_pairs",
    "paired_folder",
    "train_translation",
]

BRAIN_BAND = range(24, 80)
BRAIN_COUNTS = {"train": 400, "val": 20, "test": 60}
_SPLIT_SEED = {"train": 0, "val": 1, "test": 2}


def agent_config(source_channels: int = 1, target_channels: int = 1, **overrides) -> AgentConfig:
    """Planner/actor/critic for translation (:func:`editing.agent_config`, half the widths): state = source +
    prediction.

    The action bound is 1.1 (the environment clamps to [-1, 1]): with a bound of 1, targets at -1 (a scan's black
    background) sit where tanh saturates, L1 drives the shared output layer there and the actor collapses to black.
    """
    base = dict(channels=(16, 32, 64, 128), critic_channels=(16, 32, 64, 128), action_bound=1.1)
    return editing.agent_config(source_channels + target_channels, target_channels, **(base | overrides))


def _brain_slices(split: str) -> list[int]:
    if split == "test":
        return [z for z in BRAIN_BAND if z % 4 == 2]
    if split == "val":
        return [z for z in BRAIN_BAND if z % 8 == 0]
    return [z for z in BRAIN_BAND if z % 4 != 2 and z % 8 != 0]


def brain_pairs(split: str = "train", size: int = 64, count: int | None = None, seed: int = 0) -> ImagePairs:
    """Label map -> T1 pairs of synthetic subjects (see the module's docstring): (N, 1, size, size) each in [-1, 1].

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint slices and seeds).
        size: side of the images (the 2 mm slices are 128x128; they are resampled, labels by nearest neighbour).
        count: subjects (default :data:`BRAIN_COUNTS`).
        seed: with ``split``, fixes the subjects; same arguments -> identical tensors.
    """
    from rli2it_med.registration.synthetic import load_template, make_subject, slice_2d

    if split not in BRAIN_COUNTS:
        raise ValueError(f"split must be one of {sorted(BRAIN_COUNTS)}, got {split!r}")
    count = BRAIN_COUNTS[split] if count is None else int(count)
    image3d, labels3d, affine = load_template()
    slices = _brain_slices(split)
    gen = torch.Generator().manual_seed(seed * 1000 + _SPLIT_SEED[split])
    rng = np.random.default_rng(seed * 1000 + _SPLIT_SEED[split])
    sources, targets = [], []
    for z in rng.choice(slices, size=count):
        image, labels, _ = slice_2d(image3d, labels3d, affine, int(z))
        img = torch.from_numpy(image).view(1, 1, *image.shape)
        lab = torch.from_numpy(labels.astype(np.int64)).view(1, 1, *labels.shape)
        t1, seg = make_subject(img, lab, gen, 3.0, 6)
        targets.append(torch.from_numpy(t1))
        sources.append(torch.from_numpy(seg.astype(np.float32)))
    source = F.interpolate(torch.stack(sources)[:, None], size=(size, size), mode="nearest-exact")
    target = F.interpolate(torch.stack(targets)[:, None], size=(size, size), mode="area")
    return ImagePairs(source / 3 * 2 - 1, target.clamp(0, 1) * 2 - 1)


def _pair_files(folder: Path) -> list[tuple[Path, Path | None]]:
    """(A, B) files of a pix2pix folder: A/ and B/ by name, or side-by-side images (B None)."""
    if (folder / "A").is_dir() and (folder / "B").is_dir():
        a = {f.name: f for f in (folder / "A").iterdir() if f.suffix.lower() in IMAGE_SUFFIXES}
        b = {f.name: f for f in (folder / "B").iterdir() if f.suffix.lower() in IMAGE_SUFFIXES}
        if set(a) != set(b):
            odd = sorted(set(a) ^ set(b))[:5]
            raise ValueError(f"{folder}: A/ and B/ must hold the same file names; unmatched: {', '.join(odd)}")
        return [(a[n], b[n]) for n in sorted(a)]
    return [(f, None) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]


def _load_pair(a: Path, b: Path | None, size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    if b is not None:
        return load_image(a, size, channels), load_image(b, size, channels)
    both = read_image(a)
    half = both.shape[1] // 2
    return image_tensor(both[:, :half], size, channels), image_tensor(both[:, half : 2 * half], size, channels)


def paired_folder(path: str | Path, split: str, size: int, channels: int = 3) -> ImagePairs:
    """A pix2pix-style folder's pairs of ``split`` (see the module's docstring), (N, channels, size, size) each."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of paired images")
    if split not in BRAIN_COUNTS:
        raise ValueError(f"split must be one of {sorted(BRAIN_COUNTS)}, got {split!r}")
    if (folder / split).is_dir():
        files = _pair_files(folder / split)
    else:
        files = _pair_files(folder)
        n = len(files)
        n_test, n_val = max(1, n // 10), max(1, n // 10)
        if n - n_test - n_val < 1:
            raise ValueError(f"{folder}: {n} pairs are too few for train / validation / test splits")
        bounds = {"train": (0, n - n_test - n_val), "val": (n - n_test - n_val, n - n_test), "test": (n - n_test, n)}
        files = files[slice(*bounds[split])]
    if not files:
        raise ValueError(f"{folder}: no paired images for split {split!r} ({', '.join(IMAGE_SUFFIXES)})")
    pairs = [_load_pair(a, b, size, channels) for a, b in files]
    return ImagePairs(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))


def load_pairs(data: str, split: str, size: int) -> ImagePairs:
    """``"brain"`` (the offline label -> T1 default) or a pix2pix-style folder (RGB)."""
    return brain_pairs(split, size) if data == "brain" else paired_folder(data, split, size)


@dataclass
class TranslateConfig(EditTrainConfig):
    """A training run of the translation agent (see :class:`~rli2it_vision.editing.EditTrainConfig`).

    Attributes:
        data: ``"brain"`` (label map -> T1, offline) or a pix2pix-style folder.
    """

    data: str = "brain"
    out: str = "runs/translate"
    size: int = 64
    agent: AgentConfig = field(default_factory=agent_config)
    env: EditConfig = field(default_factory=lambda: EditConfig(max_steps=4, condition=True))
    loss: EditLossConfig = field(default_factory=lambda: EditLossConfig(border=0))


def train_translation(cfg: TranslateConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the translation agent; its checkpoints load with ``ImageEditor.load``."""
    if cfg.env.hole or not cfg.env.condition:
        raise ValueError("translation edits the whole image conditioned on the source (env.hole 0, condition True)")
    train, val = load_pairs(cfg.data, "train", cfg.size), load_pairs(cfg.data, "val", cfg.size)
    return train_editing(cfg, train, val, "translation", resume, progress)
