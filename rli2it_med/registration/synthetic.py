"""Synthetic brain subjects from the ICBM152 2009a template that nilearn ships (no download).

Used by ``data_prep/brain.py`` (the datasets) and by the bundles' out-of-the-box demo pair. Labels: 0 background,
1 CSF, 2 GM, 3 WM. A subject is the skull-stripped template under a random smooth diffeomorphic deformation
(scaling and squaring of a stationary velocity field) composed with a small affine, times a smooth bias field,
plus noise; labels follow with nearest neighbour.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rli2it_med import io
from rli2it_med.registration.warp import compose, warp

__all__ = [
    "LABEL_NAMES",
    "SHAPE_2D",
    "SHAPE_3D",
    "load_template",
    "random_deformation",
    "make_subject",
    "slice_2d",
    "demo_pair",
]

LABEL_NAMES = {1: "CSF", 2: "GM", 3: "WM"}
SHAPE_3D = (96, 112, 96)
SHAPE_2D = (128, 128)


def load_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skull-stripped T1 (0-1), labels and the 2 mm affine of the ICBM152 2009a template, cropped to 96x112x96.

    Built from nilearn's files once and then read from the user cache (:func:`_cached`, one file per nilearn
    version): importing nilearn and resampling its template take seconds, a third of the bundle demo's time.
    """
    z = _cached(_template_name(), ("image", "labels", "affine"), _template_from_nilearn)
    return z["image"], z["labels"], z["affine"]


def _template_name() -> str:
    from importlib.metadata import version

    return f"icbm152_2009a_2mm_{'x'.join(map(str, SHAPE_3D))}_nilearn-{version('nilearn')}"


def _cached(name: str, keys: tuple[str, ...], build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of ``build()``, built once and then read from the user cache: ``name.npz`` under
    ``$RLI2IT_CACHE/templates`` (default ``~/.cache/rli2it``). The cache holds exactly the arrays built; a
    missing, unreadable or unwritable cache, or one without every key, only means building them again."""
    path = Path(os.environ.get("RLI2IT_CACHE", "~/.cache/rli2it")).expanduser() / "templates" / f"{name}.npz"
    try:
        z = io.load_npz(path)
        return {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    arrays = build()
    try:
        io.save_npz_deterministic(path, arrays)
    except OSError:
        pass
    return arrays


def _template_from_nilearn() -> dict[str, np.ndarray]:
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=2).get_fdata()
    mask = datasets.load_mni152_brain_mask(resolution=2).get_fdata() > 0.5
    image = np.where(mask, t1.get_fdata(), 0.0)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = np.where(mask, np.argmax(np.stack([csf, gm, wm]), axis=0) + 1, 0).astype(np.uint8)
    # centre the brain's bounding box in the 96x112x96 grid (crop or pad each axis)
    affine = t1.affine.copy()
    lo = np.argwhere(mask).min(0)
    hi = np.argwhere(mask).max(0) + 1
    out_img = np.zeros(SHAPE_3D, np.float32)
    out_lab = np.zeros(SHAPE_3D, np.uint8)
    src, dst = [], []
    for ax, size in enumerate(SHAPE_3D):
        start = (lo[ax] + hi[ax]) // 2 - size // 2  # source index of the output's first voxel
        s0, s1 = max(start, 0), min(start + size, image.shape[ax])
        src.append(slice(s0, s1))
        dst.append(slice(s0 - start, s1 - start))
        affine[:3, 3] += affine[:3, ax] * start
    out_img[tuple(dst)] = image[tuple(src)]
    out_lab[tuple(dst)] = labels[tuple(src)]
    out_img /= np.percentile(out_img[out_lab > 0], 99.5)
    return {"image": np.clip(out_img, 0, 1).astype(np.float32), "labels": out_lab, "affine": affine}


def random_deformation(
    shape: tuple[int, ...], gen: torch.Generator, velocity_std: float, control_points: int, fast: bool = False
) -> torch.Tensor:
    """Smooth diffeomorphic displacement (1, ndim, *shape) composed with a small random affine.

    The velocity is integrated by scaling and squaring: in float64 on the full grid, bit-exact from the seed (the
    datasets), or with ``fast`` in float32 on a grid half as fine, then upsampled: ~5x faster, and no point lands
    more than ~0.5 voxel (0.01 on average) from where the exact integration puts it (the demo pair, built at every
    run)."""
    nd = len(shape)
    coarse = torch.randn(1, nd, *([control_points] * nd), generator=gen, dtype=torch.float64) * velocity_std
    mode = ("bilinear", "trilinear")[nd - 2]
    grid = tuple((s + 1) // 2 for s in shape) if fast else shape
    # voxels of the integration grid per voxel of the image grid, per axis (corners aligned)
    ratio = torch.tensor([(g - 1) / (s - 1) for g, s in zip(grid, shape)], dtype=torch.float64).view(1, nd, *[1] * nd)
    dtype = torch.float32 if fast else torch.float64
    velocity = F.interpolate(coarse * ratio, size=grid, mode=mode, align_corners=True).to(dtype)
    field = velocity / 2**7
    for _ in range(7):  # scaling and squaring
        field = compose(field, field)
    if fast:
        field = F.interpolate(field.double(), size=shape, mode=mode, align_corners=True) / ratio
    # small affine about the centre: rotation <= 5 degrees per plane, scale 1 +- 4 %, shift <= 2 voxels
    u = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64) * 2 - 1  # noqa: E731
    matrix = torch.eye(nd, dtype=torch.float64)
    for i in range(nd):
        for j in range(i + 1, nd):
            a = math.radians(5.0) * float(u(1))
            rot = torch.eye(nd, dtype=torch.float64)
            rot[i, i] = rot[j, j] = math.cos(a)
            rot[i, j], rot[j, i] = -math.sin(a), math.sin(a)
            matrix = rot @ matrix
    matrix = matrix @ torch.diag(1 + 0.04 * u(nd))
    shift = 2.0 * u(nd)
    centre = torch.tensor([(s - 1) / 2 for s in shape], dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij"))
    rel = grid.reshape(nd, -1) - centre[:, None]
    affine_ddf = (matrix @ rel + centre[:, None] + shift[:, None] - grid.reshape(nd, -1)).reshape(1, nd, *shape)
    return compose(affine_ddf, field)


def make_subject(
    image: torch.Tensor,
    labels: torch.Tensor,
    gen: torch.Generator,
    velocity_std: float,
    control_points: int,
    fast: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Deform, bias and add noise to one atlas image (1, 1, *S); return float32 image and uint8 labels (``fast``:
    :func:`random_deformation`'s)."""
    shape = tuple(image.shape[2:])
    nd = len(shape)
    ddf = random_deformation(shape, gen, velocity_std, control_points, fast)
    moved = warp(image.double(), ddf)
    moved_labels = warp(labels, ddf, mode="nearest")
    coarse_bias = torch.randn(1, 1, *([3] * nd), generator=gen, dtype=torch.float64) * 0.08
    bias = torch.exp(F.interpolate(coarse_bias, size=shape, mode=("bilinear", "trilinear")[nd - 2], align_corners=True))
    noise = torch.randn(moved.shape, generator=gen, dtype=torch.float64) * 0.01
    out = (moved * bias + noise).clamp_min(0)
    return out[0, 0].float().numpy(), moved_labels[0, 0].numpy().astype(np.uint8)


def slice_2d(image3d: np.ndarray, labels3d: np.ndarray, affine: np.ndarray, z: int):
    """Axial slice ``z`` of the cropped template, padded to 128x128, with the affine of that one-slice volume."""
    pads = [((t - s) // 2, t - s - (t - s) // 2) for s, t in zip(image3d.shape[:2], SHAPE_2D)]
    affine = affine.copy()
    for ax, (before, _) in enumerate(pads):
        affine[:3, 3] -= affine[:3, ax] * before
    affine[:3, 3] += affine[:3, 2] * z
    return np.pad(image3d[:, :, z], pads), np.pad(labels3d[:, :, z], pads), affine


def demo_pair(spatial_dims: int = 3, seed: int = 20261124) -> dict:
    """A held-out template pair: fixed = a seeded synthetic subject, moving = its atlas.

    Same deformation model as the shipped training data (``data_prep/brain.py``) with a seed the datasets do not
    use. 3D: the 2 mm template (96x112x96); 2D: its central axial slice padded to 128x128. The subject is built once
    and then read from the user cache like the template (half a second of the bundle demo's ten); the cache file's
    name holds a digest of the code that builds it and of the torch version, so a change to either builds it anew.

    Returns:
        dict with ``fixed``, ``moving`` (float32), ``fixed_seg``, ``moving_seg`` (uint8), ``affine`` (4x4, voxel to
        RAS mm; 2D images are one-slice volumes), ``label_names``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    image, labels, affine = load_template()
    control_points = 5
    if spatial_dims == 2:
        image, labels, affine = slice_2d(image, labels, affine, 46)
        control_points = 6

    def build() -> dict[str, np.ndarray]:
        gen = torch.Generator().manual_seed(seed)
        img = torch.from_numpy(image).view(1, 1, *image.shape)
        lab = torch.from_numpy(labels.astype(np.int64)).view(1, 1, *labels.shape)
        fixed, fixed_seg = make_subject(img, lab, gen, 3.0, control_points, fast=True)
        return {"fixed": fixed, "fixed_seg": fixed_seg}

    sources = (__file__, inspect.getsourcefile(compose))  # this module and the warps it builds the subject with
    digest = hashlib.sha256(b"".join(Path(f).read_bytes() for f in sources)).hexdigest()[:12]
    name = f"demo_{spatial_dims}d_seed{seed}_{_template_name()}_torch-{torch.__version__}_{digest}"
    subject = _cached(name, ("fixed", "fixed_seg"), build)
    return {
        "fixed": subject["fixed"],
        "moving": image.astype(np.float32),
        "fixed_seg": subject["fixed_seg"],
        "moving_seg": labels.astype(np.uint8),
        "affine": affine,
        "label_names": dict(LABEL_NAMES),
    }
