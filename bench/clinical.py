"""Clinical pipeline benchmark (`rli2it register`): what the trip to and from the working grid costs in Dice, and
end-to-end time and peak memory against ANTsPy SyN on the same pair.

1. Dice: the held-out template pairs of ``data/brain3d`` registered (a) directly on the 2 mm arrays by the bundle
   network (the bundle's numbers), (b) by the clinical pipeline from NIfTI files on the same 2 mm grid, and (c) by
   the clinical pipeline with the moving scan stored on an oblique (10 degrees), anisotropic 1.2 x 1.5 x 1.0 mm
   LPS grid; (b) and (c) with and without the affine pre-alignment. Dice GM/WM on the fixed grid.
2. Time and memory, every run a fresh process timed from its start to its exit (interpreter, imports, model,
   reading, registration, outputs written), side by side with ANTsPy ``SyN`` (affine + SyN, defaults) on the same
   files, each process's peak resident memory: one cold `rli2it register` call on a 2 mm pair, a batch
   (`rli2it register --pairs`, ``--batch`` pairs at 2 mm, one process; SyN likewise in one process) and one cold
   call on the pair upsampled to a 1 mm 182x218x182 grid. Ratios SyN / rli2it per pair.

    python bench/clinical.py --pairs 10
    python bench/clinical.py --skip-dice --breakdown     # timing table only, plus rli2it's stages at 1 mm

Builds ``data/brain3d`` when it is missing (``data_prep/brain.py``) and uses the shipped 3D bundle.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from rli2it_med import clinical  # noqa: E402
from rli2it_med.api import Registrator  # noqa: E402
from rli2it_med.io import load_dataset  # noqa: E402
from rli2it_med.registration.data import PairDataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "bundles" / "brain_mri_rl_registration"


def gm_wm(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([2 * np.sum((a == v) & (b == v)) / max(np.sum(a == v) + np.sum(b == v), 1) for v in (2, 3)]))


def rotation(angle_deg: float, axis: int) -> np.ndarray:
    """3x3 rotation by ``angle_deg`` about LPS axis ``axis``."""
    a = np.radians(angle_deg)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i] = r[j, j] = np.cos(a)
    r[i, j], r[j, i] = -np.sin(a), np.sin(a)
    return r


def oblique(img: sitk.Image, spacing, direction: np.ndarray, interpolator, margin: int = 8) -> sitk.Image:
    """``img`` resampled onto a grid of the given spacing and direction (LPS columns) that covers it, with
    ``margin`` voxels to spare per axis (also used by tests/test_clinical.py)."""
    extent = np.asarray(img.GetSize()) * np.asarray(img.GetSpacing())
    size = [int(e / s) + margin for e, s in zip(extent, spacing)]
    centre = np.asarray(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()]))
    origin = centre - direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)
    return sitk.Resample(img, size, sitk.Transform(), interpolator, tuple(origin), tuple(spacing),
                         tuple(np.asarray(direction).ravel()), 0.0, img.GetPixelID())  # fmt: skip


def dice_table(data: str, n: int, tmp: Path) -> list[dict]:
    pairs = PairDataset.load(data, "test", "template")
    _, meta = load_dataset(data, "test")
    affine = np.asarray(meta["affine_3d"])
    reg = Registrator.load(MODEL / "models" / "model.pt", "cpu")
    net = clinical.load_network(MODEL, 3)
    settings = ("bundle (arrays)", "files, same grid, no affine", "files, same grid, affine",
                "files, oblique 1.2x1.5x1.0 mm moving, no affine", "files, oblique moving, affine")  # fmt: skip
    rows = {k: [] for k in settings}
    for i in range(min(n, len(pairs))):
        p = pairs.get([i])
        res = reg.register(p.fixed, p.moving, fixed_seg=p.fixed_seg, moving_seg=p.moving_seg)
        rows["bundle (arrays)"].append(gm_wm(res.warped_seg[0, 0].numpy(), p.fixed_seg[0, 0].numpy()))
        f = clinical._from_array_and_affine(p.fixed[0, 0].numpy(), affine)
        m = clinical._from_array_and_affine(p.moving[0, 0].numpy(), affine)
        fs = sitk.Cast(clinical._from_array_and_affine(p.fixed_seg[0, 0].numpy(), affine), sitk.sitkInt32)
        ms = sitk.Cast(clinical._from_array_and_affine(p.moving_seg[0, 0].numpy(), affine), sitk.sitkInt32)
        tilted = rotation(10.0, axis=1)  # LPS-ordered axes tilted 10 degrees
        mo = oblique(m, (1.2, 1.5, 1.0), tilted, sitk.sitkLinear)
        mso = oblique(ms, (1.2, 1.5, 1.0), tilted, sitk.sitkNearestNeighbor)
        target = sitk.GetArrayFromImage(fs)
        for key, moving, mseg, aff in (
            ("files, same grid, no affine", m, ms, False),
            ("files, same grid, affine", m, ms, True),
            ("files, oblique 1.2x1.5x1.0 mm moving, no affine", mo, mso, False),
            ("files, oblique moving, affine", mo, mso, True),
        ):
            out = clinical.register_images(f, moving, net, fs, mseg, affine=aff)
            rows[key].append(gm_wm(sitk.GetArrayFromImage(out.warped_seg), target))
        print(f"pair {i}: " + ", ".join(f"{v[-1]:.3f}" for v in rows.values()), file=sys.stderr)
    base = np.mean(rows["bundle (arrays)"])
    return [{"setting": k, "dice_gm_wm": float(np.mean(v)), "minus_bundle": float(np.mean(v) - base)}
            for k, v in rows.items()]  # fmt: skip


def make_files(data: str, tmp: Path, spacing_mm: float, shape: tuple[int, ...], index: int = 0) -> dict[str, Path]:
    """Test pair ``index`` resampled (linear / nearest) onto a centred isotropic grid, written as NIfTI."""
    pairs = PairDataset.load(data, "test", "template")
    _, meta = load_dataset(data, "test")
    affine = np.asarray(meta["affine_3d"])
    p = pairs.get([index])
    out = {}
    for key, arr, interp in (("fixed", p.fixed, sitk.sitkLinear), ("moving", p.moving, sitk.sitkLinear),
                             ("fixed_seg", p.fixed_seg, sitk.sitkNearestNeighbor),
                             ("moving_seg", p.moving_seg, sitk.sitkNearestNeighbor)):  # fmt: skip
        img = clinical._from_array_and_affine(
            arr[0, 0].numpy().astype(np.float32) * (1000 if "seg" not in key else 1), affine
        )
        centre = np.asarray(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()]))
        direction = np.asarray(img.GetDirection()).reshape(3, 3)
        origin = centre - direction @ (spacing_mm * (np.asarray(shape) - 1) / 2)
        res = sitk.Resample(img, shape, sitk.Transform(), interp, tuple(origin), (spacing_mm,) * 3,
                            img.GetDirection(), 0.0, sitk.sitkFloat32)  # fmt: skip
        if "seg" in key:
            res = sitk.Cast(res, sitk.sitkInt16)
        out[key] = tmp / f"{key}_{spacing_mm:g}mm_{index}.nii.gz"
        sitk.WriteImage(res, str(out[key]))
    return out


RUN_ANTS = """
import csv, json, sys
import ants, numpy as np
dice = []
for row in csv.DictReader(open(sys.argv[1])):
    f, m = ants.image_read(row["fixed"]), ants.image_read(row["moving"])
    fs, ms = ants.image_read(row["fixed_seg"]), ants.image_read(row["moving_seg"])
    reg = ants.registration(f, m, type_of_transform="SyN")  # its transforms are written as files
    w = ants.apply_transforms(f, ms, reg["fwdtransforms"], interpolator="nearestNeighbor")
    ants.image_write(reg["warpedmovout"], sys.argv[2] + "/" + row["id"] + "_warped.nii.gz")
    ants.image_write(w, sys.argv[2] + "/" + row["id"] + "_warped_seg.nii.gz")
    a, b = w.numpy(), fs.numpy()
    dice.append({str(v): float(2 * np.sum((a == v) & (b == v)) / max(np.sum(a == v) + np.sum(b == v), 1))
                 for v in (1, 2, 3)})
print(json.dumps(dice))
"""


BREAKDOWN = """
import sys, time, json
t0 = time.perf_counter()
import torch
torch.set_num_threads(2)
from rli2it_med import clinical
t1 = time.perf_counter()
fixed, moving, fseg, mseg = clinical.read_pair(*sys.argv[1:5])
t2 = time.perf_counter()
net = clinical.load_network(None, 3)
t3 = time.perf_counter()
r = clinical.register_images(fixed, moving, net, fseg, mseg, device="cpu")
t4 = time.perf_counter()
o = sys.argv[5]
clinical.save_outputs(r, fixed, moving, fseg, o + "/w.nii.gz", o + "/ws.nii.gz", o + "/t.h5", None, None, o + "/s.json")
t5 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "read": t2 - t1, "model": t3 - t2, "register": t4 - t3,
                  "affine": r.stats["seconds_affine"], "agent": r.stats["seconds_agent"], "write": t5 - t4}))
"""


def _env() -> dict:
    return dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="2", OMP_NUM_THREADS="2", PYTHONPATH=str(ROOT))


def timed(args: list[str]) -> dict:
    """Run a fresh process to its exit: wall-clock seconds from its start (interpreter, imports, model, reading,
    writing: everything a user waits for), its peak resident memory (the kernel's account of that child) and its
    stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, text=True, env=_env())
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:4])}...: exit {proc.returncode}\n{err.read()[-2000:]}")
        return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "stdout": out.read()}


def run(script: str, files: dict[str, Path], out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-c", script, *(str(files[k]) for k in ("fixed", "moving", "fixed_seg", "moving_seg"))]
    proc = subprocess.run([*args, str(out)], capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _pairs_csv(cases: list[dict[str, Path]], path: Path) -> Path:
    lines = ["fixed,moving,fixed_seg,moving_seg,id"]
    lines += [",".join(str(c[k]) for k in ("fixed", "moving", "fixed_seg", "moving_seg", "id")) for c in cases]
    path.write_text("\n".join(lines) + "\n")
    return path


def _gm_wm(dice: dict) -> float:
    return (dice["2"] + dice["3"]) / 2


def _timing(run: dict, dice: list[dict]) -> dict:
    """A timed run's row: seconds per pair, in all, peak memory and mean Dice GM/WM over its pairs."""
    n = len(dice)
    return {"s_per_pair": run["seconds"] / n, "seconds": run["seconds"], "peak_mb": run["peak_mb"],
            "dice_gm_wm": float(np.mean([_gm_wm(d) for d in dice]))}  # fmt: skip


def time_rli2it(cases: list[dict[str, Path]], out: Path) -> dict:
    """``rli2it register`` as a user runs it: one pair by its file arguments (warped image and labels, transform,
    statistics), or a batch by ``--pairs`` (which also writes each pair's Jacobian map and QC figure)."""
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "rli2it", "register", "--device", "cpu", "--threads", "2"]
    if len(cases) == 1:
        c = cases[0]
        files = [f"--{k.replace('_', '-')}={c[k]}" for k in ("fixed", "moving", "fixed_seg", "moving_seg")]
        outputs = {"warped-out": "w.nii.gz", "warped-seg-out": "ws.nii.gz", "transform-out": "t.h5"}
        outputs["stats-out"] = "s.json"
        r = timed([*cli, *files, *(f"--{k}={out / v}" for k, v in outputs.items())])
        dice = [json.loads((out / "s.json").read_text())["dice"]]
    else:
        r = timed([*cli, "--pairs", str(_pairs_csv(cases, out / "pairs.csv")), "--out-dir", str(out / "results")])
        dice = [json.loads((out / "results" / c["id"] / "stats.json").read_text())["dice"] for c in cases]
    return _timing(r, dice)


def time_syn(cases: list[dict[str, Path]], out: Path) -> dict:
    """ANTsPy SyN (affine + SyN, defaults) on the same files in one fresh process, writing the warped image and
    labels (its transforms are files already)."""
    out.mkdir(parents=True, exist_ok=True)
    r = timed([sys.executable, "-c", RUN_ANTS, str(_pairs_csv(cases, out / "pairs.csv")), str(out)])
    dice = json.loads(r["stdout"].strip().splitlines()[-1])
    return _timing(r, dice)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (default data/brain3d, built when missing)")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--skip-dice", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="also time each stage of rli2it on the 1 mm pair")
    parser.add_argument("--batch", type=int, default=5, help="2 mm pairs of the batch run (default 5)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("ants") is None:  # before minutes of other work
        parser.error("the ANTs SyN peer needs ANTsPy: pip install -e '.[bench]'")
    if args.data is None:
        from data_prep import brain

        args.data = str(ROOT / "data" / "brain3d")
        brain.ensure(3, args.data)
    torch.set_num_threads(2)
    report: dict = {"date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        if not args.skip_dice:
            report["dice"] = dice_table(args.data, args.pairs, tmp)
            print(f"\nDice GM/WM on {args.pairs} held-out 3D pairs (fixed grid)")
            print("| setting | Dice GM/WM | minus the bundle's |\n|---|---|---|")
            for r in report["dice"]:
                print(f"| {r['setting']} | {r['dice_gm_wm']:.3f} | {r['minus_bundle']:+.3f} |")
        report["timing"] = []
        for mm, shape, n in ((2.0, (96, 112, 96), args.batch), (1.0, (182, 218, 182), 1)):
            grid = f"{mm:g} mm {'x'.join(map(str, shape))}"
            cases = [make_files(args.data, tmp, mm, shape, i) | {"id": f"pair{i}"} for i in range(n)]
            for kind, chosen in (("one cold call", cases[:1]), (f"batch of {n}", cases)):
                if kind.startswith("batch") and n == 1:
                    continue
                row = {"grid": grid, "kind": kind, "pairs": len(chosen)}
                row["rli2it"] = time_rli2it(chosen, tmp / f"ours_{mm:g}_{len(chosen)}")
                row["syn"] = time_syn(chosen, tmp / f"ants_{mm:g}_{len(chosen)}")
                report["timing"].append(row)
                o, y = row["rli2it"], row["syn"]
                print(f"  {grid}, {kind}: rli2it {o['s_per_pair']:.1f} s/pair, SyN {y['s_per_pair']:.1f} s/pair",
                      file=sys.stderr, flush=True)  # fmt: skip
            if args.breakdown and mm == 1.0:
                report["breakdown_1mm"] = run(BREAKDOWN, cases[0], tmp / "breakdown")
        print("\nEnd to end, each a fresh process (start, imports, model, reading, registration, outputs written), "
              "2 threads")  # fmt: skip
        print("| grid | run | rli2it s/pair | ANTsPy SyN s/pair | SyN / rli2it | rli2it peak MB | SyN peak MB | "
              "Dice GM/WM rli2it | SyN |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for r in report["timing"]:
            o, y = r["rli2it"], r["syn"]
            r["syn_over_rli2it"] = y["s_per_pair"] / o["s_per_pair"]
            print(f"| {r['grid']} | {r['kind']} | {o['s_per_pair']:.2f} | {y['s_per_pair']:.2f} | "
                  f"{r['syn_over_rli2it']:.1f} | {o['peak_mb']:.0f} | {y['peak_mb']:.0f} | {o['dice_gm_wm']:.3f} | "
                  f"{y['dice_gm_wm']:.3f} |")  # fmt: skip
    if "breakdown_1mm" in report:
        print(
            "\nrli2it stages on the 1 mm pair (s): "
            + ", ".join(f"{k} {v:.2f}" for k, v in report["breakdown_1mm"].items())
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
