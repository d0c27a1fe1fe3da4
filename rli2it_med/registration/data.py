"""In-memory registration pairs: fixed/moving images and label maps indexed by pair."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from rli2it_med import io
from rli2it_med.registration.grid import downsample_image, downsample_labels

__all__ = ["Pair", "PairDataset", "PAIR_KINDS", "scale_intensity", "intensity_window"]

PAIR_KINDS = ("template", "subject")


def scale_intensity(image: np.ndarray) -> np.ndarray:
    """Intensities divided by their 99.5th percentile above zero and clipped to [0, 1] (float32): the scale of the
    shipped training data, applied to every image a trained model sees."""
    positive = image[image > 0]
    top = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    return np.clip(image / (top if top > 0 else 1.0), 0, 1).astype(np.float32)


def intensity_window(image: np.ndarray, step: int = 2) -> tuple[float, float]:
    """``(lo, hi)``: the background level (0.5th percentile of all voxels: 0, a scanner offset, air noise) and the
    bright end (99.5th percentile of the voxels above it), from every ``step``-th voxel along each axis (every 8th
    in 3D; ``step=1``: all of them). ``(x - lo) / (hi - lo)`` is the same image whatever its units (``a x + b``,
    ``a > 0``); ``hi <= lo`` for a constant image."""
    sample = np.asarray(image[(slice(None, None, step),) * image.ndim], dtype=np.float64)
    lo = float(np.percentile(sample, 0.5))
    above = sample[sample > lo]
    return lo, (float(np.percentile(above, 99.5)) if above.size else lo)


def _compact_labels(labels: np.ndarray) -> np.ndarray:
    """Integer label maps in the smallest integer type that holds their values: the pool is kept that way (uint8
    for the brain labels: an eighth of int64's memory, 7 MB less per 3D image at 2 mm) and batches are int64."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        labels = labels.astype(np.int64)  # as int64 always did: bool and float maps truncated to integers
    if labels.size == 0:
        return labels
    low, high = int(labels.min()), int(labels.max())
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return labels.astype(dtype)
    return labels.astype(np.int64)


class Pair(NamedTuple):
    """A batch of pairs: images (B, 1, *S) float32, label maps (B, 1, *S) int64 (or None)."""

    fixed: torch.Tensor
    moving: torch.Tensor
    fixed_seg: torch.Tensor | None
    moving_seg: torch.Tensor | None

    def to(self, device: torch.device | str) -> Pair:
        return Pair(*(None if x is None else x.to(device) for x in self))


class PairDataset:
    """Registration pairs over a pool of images.

    Args:
        images: (N, *S) float array, every image of the pool.
        labels: (N, *S) integer label maps, or None.
        pairs: (P, 2) integer array of ``(fixed_index, moving_index)`` into the pool.
        label_values: the foreground label values to score (background excluded).
        spacing: voxel size in mm, for HD95.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        pairs: np.ndarray,
        label_values: Sequence[int] = (),
        spacing: Sequence[float] | None = None,
    ) -> None:
        images = np.asarray(images, dtype=np.float32)
        pairs = np.asarray(pairs, dtype=np.int64)
        if images.ndim not in (3, 4):
            raise ValueError(f"images must be (N, H, W) or (N, H, W, D), got shape {images.shape}")
        if labels is not None and labels.shape != images.shape:
            raise ValueError(f"labels shape {labels.shape} differs from images shape {images.shape}")
        if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
            raise ValueError(f"pairs must be a non-empty (P, 2) array, got shape {pairs.shape}")
        if pairs.min() < 0 or pairs.max() >= len(images):
            raise ValueError(f"pair indices must lie in [0, {len(images)}), got [{pairs.min()}, {pairs.max()}]")
        self.images = torch.from_numpy(images).unsqueeze(1)
        self.labels = None if labels is None else torch.from_numpy(_compact_labels(labels)).unsqueeze(1)
        self.pairs = torch.from_numpy(pairs)
        self.label_values = tuple(int(v) for v in label_values)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    @classmethod
    def load(cls, root: str | Path, split: str = "train", kind: str = "template") -> PairDataset:
        """Load a split built by ``data_prep/brain.py``; ``kind`` is ``"template"`` or ``"subject"``."""
        if kind not in PAIR_KINDS:
            raise ValueError(f"kind must be one of {PAIR_KINDS}, got {kind!r}")
        arrays, meta = io.load_dataset(root, split)
        return cls(arrays["images"], arrays["labels"], arrays[f"pairs_{kind}"], meta["label_values"], meta["spacing"])

    @classmethod
    def from_datalist(cls, path: str | Path, key: str = "training") -> PairDataset:
        """Pairs from a MONAI-style datalist JSON of NIfTI files.

        ``{"training": [{"fixed_image": ..., "moving_image": ..., "fixed_label": ..., "moving_label": ...}, ...],
        "validation": [...]}``; relative paths are read from the JSON's folder, labels are optional (all or none).
        Every image must have the shape of the first one (resample beforehand); intensities are scaled by their
        99.5th percentile above zero into [0, 1], as the shipped data are.
        """
        path = Path(path)
        entries = io.load_json(path).get(key)
        if not entries:
            raise ValueError(f"{path}: no {key!r} list of pairs")
        pool: dict[Path, int] = {}
        images, labels, pairs, spacing = [], [], [], None
        with_labels = all("fixed_label" in e and "moving_label" in e for e in entries)

        def add(image_file: str, label_file: str | None) -> int:
            nonlocal spacing
            f = (path.parent / image_file).resolve()
            if f not in pool:
                data, affine = io.load_image(f)
                if images and data.shape != images[0].shape:
                    raise ValueError(f"{f}: shape {data.shape} differs from {images[0].shape} of the first image")
                data = scale_intensity(data)
                images.append(data)
                if label_file is not None:
                    lab, _ = io.load_image((path.parent / label_file).resolve())
                    if lab.shape != data.shape:
                        raise ValueError(f"{label_file}: label shape {lab.shape} differs from image {data.shape}")
                    labels.append(_compact_labels(np.rint(lab)))  # np.stack widens to a common type
                spacing = spacing or [float(np.linalg.norm(affine[:3, i])) for i in range(data.ndim)]
                pool[f] = len(images) - 1
            return pool[f]

        for i, e in enumerate(entries):
            try:
                fixed = add(e["fixed_image"], e.get("fixed_label") if with_labels else None)
                moving = add(e["moving_image"], e.get("moving_label") if with_labels else None)
            except KeyError as err:
                raise ValueError(f"{path}: {key}[{i}] lacks {err}") from err
            pairs.append((fixed, moving))
        label_stack = np.stack(labels) if with_labels else None
        values = sorted(int(v) for v in np.unique(label_stack) if v != 0) if with_labels else []
        return cls(np.stack(images), label_stack, np.asarray(pairs), values, spacing)

    def shard(self, rank: int, world_size: int) -> PairDataset:
        """This process's share of the pairs for distributed training: pairs ``rank, rank + world_size, ...``."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        if len(self) < world_size:
            raise ValueError(f"{len(self)} pairs cannot be shared by {world_size} processes")
        if world_size == 1:
            return self
        shard = PairDataset.__new__(PairDataset)
        shard.__dict__.update(self.__dict__)
        shard.pairs = self.pairs[rank::world_size].clone()
        return shard

    @property
    def spatial_dims(self) -> int:
        return self.images.ndim - 2

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[2:])

    def __len__(self) -> int:
        return len(self.pairs)

    def coarsen(self, scale: int) -> PairDataset:
        """The same pairs on a grid ``scale`` times coarser: images block-averaged, labels by block majority."""
        if scale == 1:
            return self
        images = downsample_image(self.images, scale)
        labels = None if self.labels is None else downsample_labels(self.labels, scale)
        spacing = None if self.spacing is None else [s * scale for s in self.spacing]
        return PairDataset(
            images[:, 0].numpy(),
            None if labels is None else labels[:, 0].numpy(),
            self.pairs.numpy(),
            self.label_values,
            spacing,
        )

    def get(self, indices: Sequence[int] | torch.Tensor) -> Pair:
        """Return the pairs at ``indices`` as one batch."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        fixed_idx, moving_idx = self.pairs[idx, 0], self.pairs[idx, 1]
        segs = (None, None) if self.labels is None else (self.labels[fixed_idx].long(), self.labels[moving_idx].long())
        return Pair(self.images[fixed_idx], self.images[moving_idx], *segs)
