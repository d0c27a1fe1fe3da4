"""Peak resident memory of registration and training against the estimates of :mod:`rli2it_med.memory`.

Registration: the 3D demo pair (2 mm) with the fixed image (then the moving image) resampled to finer grids, each
registered by the command line in a fresh process with every output written (warped image and labels, transform,
Jacobian, QC picture, statistics); the peak resident memory of that process against the estimate, and a least-squares
fit of ``BASE + PER_FIXED_VOXEL * fixed + PER_MOVING_VOXEL * moving`` to the measurements. Training: the 2D and 3D
defaults run until their replay buffer is full (peak against the estimate, and the bytes per transition and voxel
beyond the buffer that the run implies: activations and the allocator's overhead).

    python bench/memory.py            # ~10 min; training needs data/brain2d and data/brain3d (data_prep/brain.py)
    python bench/memory.py --no-train

The table goes to stdout, and its last line is the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from bench.clinical import oblique  # noqa: E402
from rli2it_med import clinical, memory  # noqa: E402
from rli2it_med.registration.synthetic import demo_pair  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20


def peak_rss(command: list[str]) -> tuple[int, float]:
    """Peak resident bytes of ``command`` run in a fresh process (Linux), and its seconds."""
    env = dict(os.environ, RLI2IT_MEMORY_CHECK="0", PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss * 1024, time.perf_counter() - start


def registration_rows(spacings: list[float], folder: Path) -> list[dict]:
    pair = demo_pair(3)
    images = {k: clinical._from_array_and_affine(pair[k] * (1 if "seg" in k else 800), pair["affine"])
              for k in ("fixed", "moving", "fixed_seg", "moving_seg")}  # fmt: skip
    rows = []
    for which, spacing in [("fixed", s) for s in spacings] + [("moving", s) for s in spacings if s != 2.0]:
        files = {}
        for k, img in images.items():
            fine = which in k
            grid = ((spacing,) * 3, np.asarray(img.GetDirection()).reshape(3, 3))
            out = oblique(img, *grid, sitk.sitkNearestNeighbor if "seg" in k else sitk.sitkLinear, 0) if fine else img
            files[k] = folder / f"{k}.nii.gz"
            sitk.WriteImage(sitk.Cast(out, sitk.sitkInt16 if "seg" in k else sitk.sitkFloat32), str(files[k]))
        sizes = {k: sitk.ReadImage(str(files[k])).GetSize() for k in ("fixed", "moving")}
        command = [sys.executable, "-m", "rli2it", "register", "--device", "cpu",
                   "--fixed", str(files["fixed"]), "--moving", str(files["moving"]),
                   "--fixed-seg", str(files["fixed_seg"]), "--moving-seg", str(files["moving_seg"]),
                   "--warped-out", str(folder / "w.nii.gz"), "--warped-seg-out", str(folder / "ws.nii.gz"),
                   "--transform-out", str(folder / "t.h5"), "--jacobian-out", str(folder / "j.nii.gz"),
                   "--qc-out", str(folder / "qc.png"), "--stats-out", str(folder / "s.json")]  # fmt: skip
        peak, seconds = peak_rss(command)
        f, m = math.prod(sizes["fixed"]), math.prod(sizes["moving"])
        rows.append({"finer": which, "spacing_mm": spacing, "fixed": sizes["fixed"], "moving": sizes["moving"],
                     "fixed_voxels": f, "moving_voxels": m, "peak_mb": peak / MB, "seconds": seconds,
                     "estimate_mb": memory.registration_bytes(f, m) / MB})  # fmt: skip
    return rows


def training_rows(dims: list[int], folder: Path) -> list[dict]:
    from rli2it_med.registration.train import default_config, replay_bytes

    rows = []
    for dim in dims:
        cfg = default_config(dim)
        rounds = -(-cfg.buffer_episodes // cfg.env_batch)  # rounds that fill the buffer
        updates = (rounds + 2 - cfg.bootstrap_rounds) * cfg.updates_per_round
        data = ROOT / f"data/brain{dim}d"
        out = folder / f"train{dim}d"
        command = [sys.executable, "-m", "rli2it", "train", "--data", str(data), "--out", str(out), "--device", "cpu",
                   "--max-updates", str(updates), "--eval-every", str(updates), "--quiet"]  # fmt: skip
        peak, seconds = peak_rss(command)
        shape = json.loads((data / "meta.json").read_text())["shape"]
        voxels = math.prod(shape)
        buffer = json.loads(subprocess.run([sys.executable, "-c", (
            "import torch,sys; s=torch.load(sys.argv[1],weights_only=False)['processes'][0]['buffer'];"
            "print(sum(t.numel()*t.element_size() for e in s['episodes'] for t in e['states'].values()))"
        ), str(out / "train_state.pt")], capture_output=True, text=True, check=True).stdout)  # fmt: skip
        samples = cfg.batch_size + cfg.env_batch
        full = replay_bytes(cfg, tuple(shape))
        rows.append({
            "dims": dim, "shape": shape, "updates": updates, "seconds": seconds, "peak_mb": peak / MB,
            "buffer_mb": buffer / MB, "estimate_mb": memory.training_bytes(dim, voxels, cfg.batch_size,
                                                                           cfg.env_batch, buffer) / MB,
            "implied_bytes_per_sample_voxel": (peak - memory.BASE - buffer) / (samples * voxels),
            "buffer_full": buffer >= full,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.0, 1.5, 1.0, 0.8])
    parser.add_argument("--no-train", action="store_true", help="registration only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        reg = registration_rows(args.spacings, Path(tmp))
        train = [] if args.no_train else training_rows([2, 3], Path(tmp))
    a = np.array([[1.0, r["fixed_voxels"], r["moving_voxels"]] for r in reg])
    y = np.array([r["peak_mb"] * MB for r in reg])
    fit = np.linalg.lstsq(a, y, rcond=None)[0]

    print(f"\nregistration, peak resident memory (MB), CPU, date {time.strftime('%Y-%m-%d')}")
    print(f"{'finer image':>11} {'mm':>4} {'fixed':>14} {'moving':>14} {'peak':>7} {'estimate':>8} {'ratio':>5} "
          f"{'s':>5}")  # fmt: skip
    for r in reg:
        print(f"{r['finer']:>11} {r['spacing_mm']:>4} {'x'.join(map(str, r['fixed'])):>14} "
              f"{'x'.join(map(str, r['moving'])):>14} {r['peak_mb']:>7.0f} {r['estimate_mb']:>8.0f} "
              f"{r['estimate_mb'] / r['peak_mb']:>5.2f} {r['seconds']:>5.1f}")  # fmt: skip
    print(f"least-squares fit: base {fit[0] / MB:.0f} MB + {fit[1]:.1f} B per fixed voxel + {fit[2]:.1f} B per moving"
          f" voxel (rli2it_med.memory: {memory.BASE / MB:.0f} MB + {memory.PER_FIXED_VOXEL} + "
          f"{memory.PER_MOVING_VOXEL})")  # fmt: skip
    if train:
        print("\ntraining (defaults, until the replay buffer is full), peak resident memory (MB)")
        print(f"{'dims':>4} {'shape':>12} {'peak':>7} {'buffer':>7} {'estimate':>8} {'ratio':>5} "
              f"{'B/sample/voxel':>14} {'updates':>7}")  # fmt: skip
        for r in train:
            print(f"{r['dims']:>4} {'x'.join(map(str, r['shape'])):>12} {r['peak_mb']:>7.0f} {r['buffer_mb']:>7.1f} "
                  f"{r['estimate_mb']:>8.0f} {r['estimate_mb'] / r['peak_mb']:>5.2f} "
                  f"{r['implied_bytes_per_sample_voxel']:>14.0f} {r['updates']:>7}")  # fmt: skip
    print(json.dumps({"registration": reg, "fit": [float(v) for v in fit], "training": train}))


if __name__ == "__main__":
    main()
