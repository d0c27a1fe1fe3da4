"""Build brain registration data from the ICBM152 2009a template that nilearn ships (no download).

Labels: 0 background, 1 CSF, 2 GM, 3 WM (argmax of the GM / WM / remaining-CSF probabilities inside the brain
mask). Subjects are the skull-stripped template under a random smooth diffeomorphic deformation (scaling and
squaring of a stationary velocity field) composed with a small affine, times a smooth bias field, plus noise;
labels follow with nearest neighbour.

- 3D: 2 mm, 96x112x96; the atlas is the template itself.
- 2D: axial slices of the 2 mm volume padded to 128x128; each subject comes from one slice of a central band
  and that slice is its atlas.

Pairs (``fixed``, ``moving``) per split: ``pairs_template`` = (subject, its atlas) and ``pairs_subject`` =
(subject, another subject of the same atlas). Same seed -> byte-identical files.

Usage::

    python data_prep/brain.py --dim 2 --out data/brain2d
    python data_prep/brain.py --dim 3 --out data/brain3d
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
from rli2it_med.registration.warp import compose, warp  # noqa: E402

LABEL_NAMES = {1: "CSF", 2: "GM", 3: "WM"}
SHAPE_3D = (96, 112, 96)
SHAPE_2D = (128, 128)
DEFAULTS = {
    2: {"train": 400, "val": 40, "test": 100, "velocity_std": 3.0, "control_points": 6, "band": (30, 62)},
    3: {"train": 40, "val": 4, "test": 10, "velocity_std": 3.0, "control_points": 5},
}
SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def load_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skull-stripped T1 (0-1), labels and the 2 mm affine of the ICBM152 2009a template, cropped to 96x112x96."""
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
    return np.clip(out_img, 0, 1).astype(np.float32), out_lab, affine


def random_deformation(
    shape: tuple[int, ...], gen: torch.Generator, velocity_std: float, control_points: int
) -> torch.Tensor:
    """Smooth diffeomorphic displacement (1, ndim, *shape) composed with a small random affine."""
    nd = len(shape)
    coarse = torch.randn(1, nd, *([control_points] * nd), generator=gen, dtype=torch.float64) * velocity_std
    mode = ("bilinear", "trilinear")[nd - 2]
    velocity = F.interpolate(coarse, size=shape, mode=mode, align_corners=True)
    field = velocity / 2**7
    for _ in range(7):  # scaling and squaring
        field = compose(field, field)
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
    image: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, velocity_std: float, control_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deform, bias and add noise to one atlas image (1, 1, *S); return float32 image and uint8 labels."""
    shape = tuple(image.shape[2:])
    nd = len(shape)
    ddf = random_deformation(shape, gen, velocity_std, control_points)
    moved = warp(image.double(), ddf)
    moved_labels = warp(labels, ddf, mode="nearest")
    coarse_bias = torch.randn(1, 1, *([3] * nd), generator=gen, dtype=torch.float64) * 0.08
    bias = torch.exp(F.interpolate(coarse_bias, size=shape, mode=("bilinear", "trilinear")[nd - 2], align_corners=True))
    noise = torch.randn(moved.shape, generator=gen, dtype=torch.float64) * 0.01
    out = (moved * bias + noise).clamp_min(0)
    return out[0, 0].float().numpy(), moved_labels[0, 0].numpy().astype(np.uint8)


def build(dim: int, out: Path, seed: int, counts: dict[str, int], velocity_std: float, control_points: int) -> None:
    image3d, labels3d, affine = load_template()
    if dim == 3:
        atlases_img, atlases_lab = image3d[None], labels3d[None]
        spacing = [2.0, 2.0, 2.0]
    else:
        lo, hi = DEFAULTS[2]["band"]
        pads = [((t - s) // 2, t - s - (t - s) // 2) for s, t in zip(image3d.shape[:2], SHAPE_2D)]
        atlases_img = np.stack([np.pad(image3d[:, :, z], pads) for z in range(lo, hi)])
        atlases_lab = np.stack([np.pad(labels3d[:, :, z], pads) for z in range(lo, hi)])
        spacing = [2.0, 2.0]
    out.mkdir(parents=True, exist_ok=True)
    for split, n in counts.items():
        gen = torch.Generator().manual_seed(seed * 1000 + SPLIT_OFFSET[split])
        rng = np.random.default_rng(seed * 1000 + SPLIT_OFFSET[split])
        atlas_of = rng.integers(0, len(atlases_img), size=n)
        images, labels = [], []
        for a in atlas_of:
            img = torch.from_numpy(atlases_img[a]).view(1, 1, *atlases_img.shape[1:])
            lab = torch.from_numpy(atlases_lab[a].astype(np.int64)).view(1, 1, *atlases_lab.shape[1:])
            i, lb = make_subject(img, lab, gen, velocity_std, control_points)
            images.append(i)
            labels.append(lb)
        n_atlas = len(atlases_img)
        pool_img = np.concatenate([atlases_img, np.stack(images)]).astype(np.float32)
        pool_lab = np.concatenate([atlases_lab, np.stack(labels)]).astype(np.uint8)
        subjects = np.arange(n) + n_atlas
        pairs_template = np.stack([subjects, atlas_of], 1)
        partner = []
        for i in range(n):
            same = np.flatnonzero((atlas_of == atlas_of[i]) & (np.arange(n) != i))
            partner.append(rng.choice(same) if len(same) else (i + 1) % n)
        pairs_subject = np.stack([subjects, np.asarray(partner) + n_atlas], 1)
        io.save_npz_deterministic(
            out / f"{split}.npz",
            {
                "images": pool_img,
                "labels": pool_lab,
                "pairs_template": pairs_template.astype(np.int64),
                "pairs_subject": pairs_subject.astype(np.int64),
            },
        )
        print(f"{out / split}.npz: {n} subjects, {len(pool_img)} images of shape {pool_img.shape[1:]}")
    io.save_json(
        out / "meta.json",
        {
            "dim": dim,
            "seed": seed,
            "spacing": spacing,
            "shape": list(atlases_img.shape[1:]),
            "label_values": sorted(LABEL_NAMES),
            "label_names": {str(k): v for k, v in LABEL_NAMES.items()},
            "counts": counts,
            "velocity_std": velocity_std,
            "control_points": control_points,
            "affine_3d": affine.tolist(),
            "source": "nilearn ICBM152 2009a (T1, GM, WM, brain mask), 2 mm",
        },
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, choices=(2, 3), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    for split in ("train", "val", "test"):
        parser.add_argument(f"--n-{split}", type=int, default=None, help=f"subjects in {split}")
    parser.add_argument("--velocity-std", type=float, default=None, help="std of the velocity control points (voxels)")
    args = parser.parse_args(argv)
    d = DEFAULTS[args.dim]
    counts = {s: getattr(args, f"n_{s}") or d[s] for s in ("train", "val", "test")}
    build(args.dim, args.out, args.seed, counts, args.velocity_std or d["velocity_std"], d["control_points"])


if __name__ == "__main__":
    main()
