"""Build brain registration data from the ICBM152 2009a template that nilearn ships (no download).

Labels: 0 background, 1 CSF, 2 GM, 3 WM (argmax of the GM / WM / remaining-CSF probabilities inside the brain
mask). Subjects: :mod:`rli2it_med.registration.synthetic` (the template under a random smooth diffeomorphism and
a small affine, with bias field and noise).

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
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rli2it_med import io  # noqa: E402
from rli2it_med.registration.synthetic import (  # noqa: E402
    LABEL_NAMES,
    load_template,
    make_subject,
    slice_2d,
)

DEFAULTS = {
    2: {"train": 400, "val": 40, "test": 100, "velocity_std": 3.0, "control_points": 6, "band": (30, 62)},
    3: {"train": 40, "val": 4, "test": 10, "velocity_std": 3.0, "control_points": 5},
}
SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def build(dim: int, out: Path, seed: int, counts: dict[str, int], velocity_std: float, control_points: int) -> None:
    image3d, labels3d, affine = load_template()
    if dim == 3:
        atlases_img, atlases_lab = image3d[None], labels3d[None]
        spacing = [2.0, 2.0, 2.0]
    else:
        lo, hi = DEFAULTS[2]["band"]
        slices = [slice_2d(image3d, labels3d, affine, z) for z in range(lo, hi)]
        atlases_img = np.stack([s[0] for s in slices])
        atlases_lab = np.stack([s[1] for s in slices])
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


def ensure(dim: int, out: str | Path) -> None:
    """Build the default ``dim``-D dataset in ``out`` unless it is there already (the benches, on a fresh clone)."""
    if not (Path(out) / "meta.json").is_file():
        print(f"{out}: no dataset yet; building it (python data_prep/brain.py --dim {dim} --out {out})", flush=True)
        main(["--dim", str(dim), "--out", str(out)])


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
