"""Training pairs that look like real scans: label-map synthesis around the ICBM152 2009a template (no download).

``data_prep/brain.py`` gives the template itself under random warps: one contrast, skull-stripped, 2 mm, clean.
Users bring T1 with skull, T2, FLAIR, thick slices and scanner units. Here every subject is drawn as SynthMorph
draws its training images, from a label map rather than from one image:

1. a synthesis label map on the 2 mm template grid: CSF, GM and WM each split in three by the template's own
   intensities (13 brain classes with the background), plus five head shells outside the brain (CSF, bone, marrow,
   fat, skin: distance bands from the brain's envelope, band widths jittered per subject);
2. a random smooth diffeomorphism and a random affine (rotation, scaling, shift) applied to the label maps
   (nearest) and to the template T1 (linear);
3. the image: with probability ``--p-template`` the deformed real T1, otherwise each class drawn from its own
   random Gaussian (mean and spread uniform, so contrasts as unlike T1 as T2 or FLAIR occur), then blurred a little;
   the head shells kept with probability ``--p-skull`` (otherwise background);
4. a smooth multiplicative bias field, a random gamma, Gaussian noise, and with probability ``--p-thick`` a coarser
   acquisition (one axis, or all, at 2.5-5 mm, block-averaged and brought back to 2 mm);
5. the intensity window of the register pipeline (``rli2it_med.registration.data.intensity_window``), so the stored
   image is what a model sees at inference whatever the units.

The labels kept for training are the tissue labels (1 CSF, 2 GM, 3 WM), as in ``brain.py``; the files have the same
layout (``train/val/test.npz`` + ``meta.json``): the pool holds the template T1 first (index 0; in 2D the 32 axial
slices of brain.py's band, each subject drawn around one of them), then the subjects; ``pairs_template`` =
(subject, template), ``pairs_subject`` = (subject, another subject), so a pair can join two different contrasts.
Same seed -> byte-identical files.

    python data_prep/synth.py --out data/synth3d                   # 120 / 8 / 10 subjects (a few minutes)
    python data_prep/synth.py --out data/synth3d_small --n-train 8
    python data_prep/synth.py --dim 2 --out data/synth2d                # 400 / 40 / 100 slices, like brain.py
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rli2it_med import io  # noqa: E402
from rli2it_med.registration.data import intensity_window  # noqa: E402
from rli2it_med.registration.synthetic import LABEL_NAMES, load_template, random_deformation, slice_2d  # noqa: E402
from rli2it_med.registration.warp import compose, warp  # noqa: E402

SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}
SHELLS = (("csf", 2.0), ("bone", 2.5), ("marrow", 2.5), ("fat", 3.0), ("skin", 2.0))  # name, mean width in mm
DEFAULTS = {
    "train": 120, "val": 8, "test": 10, "velocity_std": 3.0, "control_points": 5, "max_rotation": 10.0,
    "max_shift": 8.0, "max_scale": 0.08, "p_template": 0.3, "p_skull": 0.5, "p_thick": 0.3,
}  # fmt: skip
DEFAULTS_2D = {"train": 400, "val": 40, "test": 100, "control_points": 6}  # data_prep/brain.py's 2D numbers
BAND_2D = (30, 62)  # axial slices of the 2 mm template, data_prep/brain.py's band


def synthesis_labels(image: np.ndarray, tissue: np.ndarray, spacing: float = 2.0) -> np.ndarray:
    """Classes to draw intensities from (uint8): 0 background; 1-9 the three tissues each split at the terciles of
    the template's intensity within it; 10-14 the head shells (``SHELLS``) at their mean widths outside the brain's
    smooth envelope (``shell_labels`` redraws them per subject)."""
    out = np.zeros(tissue.shape, np.uint8)
    for t in (1, 2, 3):
        inside = tissue == t
        if inside.any():
            cuts = np.percentile(image[inside], [100 / 3, 200 / 3])
            out[inside] = 3 * (t - 1) + 1 + np.searchsorted(cuts, image[inside])
    return np.where(out > 0, out, shell_labels(tissue, spacing, np.ones(len(SHELLS))))


def shell_labels(tissue: np.ndarray, spacing: float, widths: np.ndarray) -> np.ndarray:
    """Labels 10.. of the head shells around ``tissue > 0`` (0 elsewhere), shell ``i`` ``widths[i]`` times its mean
    width (``SHELLS``) thick."""
    from scipy import ndimage

    envelope = ndimage.gaussian_filter((tissue > 0).astype(np.float32), 2.0) > 0.3
    d = ndimage.distance_transform_edt(~envelope) * spacing  # mm outside the envelope
    out = np.zeros(tissue.shape, np.uint8)
    inner = 0.0
    for i, ((_, width), scale) in enumerate(zip(SHELLS, widths)):
        outer = inner + width * float(scale)
        out[(d > inner) & (d <= outer) & (tissue == 0)] = 10 + i
        inner = outer
    return out


def random_affine(shape: tuple[int, ...], rng: np.random.Generator, max_rotation: float, max_shift_vox: float,
                  max_scale: float) -> torch.Tensor:  # fmt: skip
    """Displacement (1, 3, *shape) of a random affine about the grid centre: rotations uniform in +-max_rotation
    degrees about each axis, scaling 1 +- max_scale per axis, shift uniform in +-max_shift_vox voxels."""
    nd = len(shape)
    matrix = np.eye(nd)
    for i in range(nd):
        for j in range(i + 1, nd):
            a = math.radians(rng.uniform(-max_rotation, max_rotation))
            rot = np.eye(nd)
            rot[i, i] = rot[j, j] = math.cos(a)
            rot[i, j], rot[j, i] = -math.sin(a), math.sin(a)
            matrix = rot @ matrix
    matrix = matrix @ np.diag(1 + rng.uniform(-max_scale, max_scale, nd))
    shift = rng.uniform(-max_shift_vox, max_shift_vox, nd)
    centre = np.array([(s - 1) / 2 for s in shape])
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")).reshape(nd, -1)
    moved = matrix @ (grid - centre[:, None]) + centre[:, None] + shift[:, None]
    return torch.from_numpy((moved - grid).reshape(1, nd, *shape))


def _coarser(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` as if acquired at 2.5-5 mm along one random axis (or all): block averages by the factor, then
    linear interpolation back onto the 2 mm grid."""
    axes = [int(rng.integers(0, image.ndim))] if rng.random() < 0.7 else list(range(image.ndim))
    factor = float(rng.uniform(1.25, 2.5))
    x = torch.from_numpy(image)[None, None].double()
    size = [max(2, round(s / factor)) if ax in axes else s for ax, s in enumerate(image.shape)]
    low = F.adaptive_avg_pool3d(x, size) if image.ndim == 3 else F.adaptive_avg_pool2d(x, size)
    mode = "trilinear" if image.ndim == 3 else "bilinear"
    return F.interpolate(low, size=image.shape, mode=mode, align_corners=False)[0, 0].numpy()


def make_subject(template: np.ndarray, tissue: np.ndarray, classes: np.ndarray, seed: int,
                 opts: dict) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One synthetic subject (float32 image in [0, 1], uint8 tissue labels) from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    shape = template.shape
    widths = rng.uniform(0.7, 1.4, len(SHELLS))
    classes = np.where(classes >= 10, shell_labels(tissue, 2.0, widths), classes)
    ddf = compose(
        random_affine(shape, rng, opts["max_rotation"], opts["max_shift"] / 2.0, opts["max_scale"]),
        random_deformation(shape, gen, opts["velocity_std"], opts["control_points"], fast=True),
    )
    as_tensor = lambda a: torch.from_numpy(a.astype(np.int64))[None, None]  # noqa: E731
    lab = warp(as_tensor(tissue), ddf, mode="nearest")[0, 0].numpy().astype(np.uint8)
    cls = warp(as_tensor(classes), ddf, mode="nearest")[0, 0].numpy()
    skull = rng.random() < opts["p_skull"]
    if rng.random() < opts["p_template"]:
        img = warp(torch.from_numpy(template)[None, None].double(), ddf)[0, 0].numpy()
        if skull:  # the real T1 has no head: draw the shells
            means = rng.uniform(0, 1, len(SHELLS))
            img = np.where(cls >= 10, means[np.clip(cls - 10, 0, len(SHELLS) - 1)], img)
    else:
        means = rng.uniform(0, 1, 16)
        means[0] = rng.uniform(0, 0.1)  # background dark
        spreads = rng.uniform(0, 0.06, 16)
        img = means[cls] + spreads[cls] * rng.standard_normal(shape)
        from scipy import ndimage

        img = ndimage.gaussian_filter(img, rng.uniform(0.0, 1.0))
    if not skull:
        img = np.where(cls >= 10, 0.0, img)
    coarse_bias = torch.randn(1, 1, *([4] * len(shape)), generator=gen, dtype=torch.float64) * 0.15
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    bias = torch.exp(F.interpolate(coarse_bias, size=shape, mode=mode, align_corners=True))[0, 0].numpy()
    img = np.clip(img * bias, 0, None) ** math.exp(rng.normal(0, 0.25))
    img = img + rng.normal(0, rng.uniform(0, 0.04), shape)
    if rng.random() < opts["p_thick"]:
        img = _coarser(img, rng)
    lo, hi = intensity_window(img)
    img = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return img.astype(np.float32), lab


def atlases(dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The template(s) subjects are drawn around: images, tissue labels, synthesis classes (one per atlas) and the
    2 mm affine. 3D: the template volume; 2D: its axial slices of ``data_prep/brain.py``'s central band, padded to
    128x128, each its own atlas (the classes split the tissues at that slice's terciles)."""
    template, tissue, affine = load_template()
    if dim == 3:
        return template[None], tissue[None], synthesis_labels(template, tissue)[None], affine
    lo, hi = BAND_2D
    slices = [slice_2d(template, tissue, affine, z) for z in range(lo, hi)]
    images = np.stack([s[0] for s in slices]).astype(np.float32)
    labels = np.stack([s[1] for s in slices]).astype(np.uint8)
    return images, labels, np.stack([synthesis_labels(i, t) for i, t in zip(images, labels)]), affine


def build(out: Path, seed: int, counts: dict[str, int], opts: dict, dim: int = 3) -> None:
    images0, labels0, classes0, affine = atlases(dim)
    out.mkdir(parents=True, exist_ok=True)
    for split, n in counts.items():
        base = (seed * 1000 + SPLIT_OFFSET[split]) * 100_000
        rng = np.random.default_rng(base)
        atlas_of = rng.integers(0, len(images0), size=n) if dim == 2 else np.zeros(n, np.int64)
        images, labels = list(images0.astype(np.float32)), list(labels0.astype(np.uint8))
        for i, a in enumerate(atlas_of):
            img, lab = make_subject(images0[a], labels0[a], classes0[a], base + i, opts)
            images.append(img)
            labels.append(lab)
        subjects = np.arange(n) + len(images0)
        if dim == 3:
            partner = np.array([rng.choice(np.delete(subjects, i)) if n > 1 else 0 for i in range(n)])
        else:  # another subject of the same slice (its atlas when it has none), as in data_prep/brain.py
            same = [subjects[(atlas_of == a) & (np.arange(n) != i)] for i, a in enumerate(atlas_of)]
            partner = np.array([rng.choice(c) if len(c) else atlas_of[i] for i, c in enumerate(same)])
        io.save_npz_deterministic(
            out / f"{split}.npz",
            {
                "images": np.stack(images),
                "labels": np.stack(labels),
                "pairs_template": np.stack([subjects, atlas_of], 1).astype(np.int64).reshape(-1, 2),
                "pairs_subject": np.stack([subjects, partner], 1).astype(np.int64).reshape(-1, 2),
            },
        )
        print(f"{out / split}.npz: {n} subjects + {len(images0)} atlas image(s), shape {images0.shape[1:]}")
    io.save_json(
        out / "meta.json",
        {
            "dim": dim,
            "seed": seed,
            "spacing": [2.0] * dim,
            "shape": list(images0.shape[1:]),
            "label_values": sorted(LABEL_NAMES),
            "label_names": {str(k): v for k, v in LABEL_NAMES.items()},
            "counts": counts,
            "synthesis": opts,
            "affine_3d": affine.tolist(),
            "source": "label-map synthesis around nilearn ICBM152 2009a (T1, GM, WM, brain mask), 2 mm"
            + ("" if dim == 3 else f", axial slices {BAND_2D[0]}-{BAND_2D[1] - 1} padded to 128x128"),
        },
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dim", type=int, choices=(2, 3), default=3)
    parser.add_argument("--seed", type=int, default=0)
    for split in ("train", "val", "test"):
        parser.add_argument(f"--n-{split}", type=int, help=f"subjects in {split} (3D {DEFAULTS[split]}, 2D "
                            f"{DEFAULTS_2D[split]})")  # fmt: skip
    for key in ("velocity_std", "max_rotation", "max_shift", "max_scale", "p_template", "p_skull", "p_thick"):
        parser.add_argument("--" + key.replace("_", "-"), type=float, default=DEFAULTS[key])
    args = parser.parse_args(argv)
    for key in ("p_template", "p_skull", "p_thick"):
        if not 0 <= getattr(args, key) <= 1:
            parser.error(f"--{key.replace('_', '-')} must be in [0, 1], got {getattr(args, key)}")
    defaults = DEFAULTS if args.dim == 3 else DEFAULTS | DEFAULTS_2D
    opts = {k: getattr(args, k) for k in DEFAULTS if k not in ("train", "val", "test", "control_points")}
    opts["control_points"] = defaults["control_points"]
    counts = {s: defaults[s] if getattr(args, f"n_{s}") is None else getattr(args, f"n_{s}") for s in SPLIT_OFFSET}
    build(args.out, args.seed, counts, opts, args.dim)


if __name__ == "__main__":
    main()
