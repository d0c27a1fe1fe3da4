"""Data-parallel training, 1 process vs N processes (torchrun, gloo on CPU), the same total samples.

Each configuration trains the 2D brain registration agent from the same defaults for the same number of updates
(a budget in updates: reproducible), with the per-process batch sizes divided by the number of processes so every
update replays the same total number of transitions and every round collects the same total number of episodes
(replay capacity divided alike). The final weights (``model.pt``) are scored on the held-out template-to-subject test
pairs. Every configuration runs with each seed, so the spread between seeds shows the noise.

    python bench/distributed.py                  # 1 vs 2 processes, seeds 0 and 1, 1000 updates
    python bench/distributed.py --quick          # 120 updates, one seed

Throughput counts all processes: replayed transitions per second (updates x total batch / training seconds) and
environment steps per second. The table goes to stdout, and its last line is the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """One training process (started by torchrun, or alone for 1 process)."""
    import torch
    import torch.distributed as dist

    from rli2it_med.agent import distributed as ddp
    from rli2it_med.registration.train import default_config, train

    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    world = ddp.world_size()
    cfg = default_config(2, data=args.data, out=args.out, seed=args.seed, device="cpu", minutes=None)
    cfg.max_updates, cfg.eval_every = args.updates, args.updates  # validate once, at the end
    cfg.env_batch //= world
    cfg.batch_size //= world
    cfg.buffer_episodes //= world
    start = time.perf_counter()
    result = train(cfg, progress=False)
    seconds = time.perf_counter() - start
    if ddp.rank() == 0:
        rounds = torch.load(Path(args.out) / "train_state.pt", weights_only=False)["state"]["rounds"]
        stats = {
            "processes": world,
            "threads_per_process": torch.get_num_threads(),
            "updates": result["updates"],
            "seconds": seconds,
            "replayed_per_s": result["updates"] * cfg.batch_size * world / seconds,
            "env_steps_per_s": rounds * cfg.env_batch * world * cfg.env.max_steps / seconds,
            "peak_rss_mb_process0": result["peak_rss_mb"],
        }
        (Path(args.out) / "bench.json").write_text(json.dumps(stats))
    if dist.is_initialized():
        dist.destroy_process_group()


def run(nproc: int, seed: int, args: argparse.Namespace) -> dict:
    out = Path(args.out) / f"p{nproc}_seed{seed}"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resume of an earlier one
    command = [__file__, "--worker", "--data", args.data, "--out", str(out), "--seed", str(seed),
               "--updates", str(args.updates)]  # fmt: skip
    threads = max(1, args.threads // nproc)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    if nproc == 1:
        command = [sys.executable, *command]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *command]
    subprocess.run(command, env=env, check=True)
    stats = json.loads((out / "bench.json").read_text())
    return stats | score(out / "model.pt", args) | {"seed": seed}


def score(model: Path, args: argparse.Namespace) -> dict:
    import numpy as np

    from rli2it_med.api import Registrator
    from rli2it_med.registration.data import PairDataset
    from rli2it_med.registration.train import evaluate, gm_wm_dice

    pairs = PairDataset.load(args.data, "test", "template")
    metrics = evaluate(Registrator.load(model, "cpu"), pairs, limit=args.pairs, batch_size=8, hd95=False)
    return {"dice_gm_wm": gm_wm_dice(metrics), "dice_initial": float(np.nanmean(metrics["dice_initial"]))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT / "data/brain2d"), help="built by data_prep/brain.py --dim 2")
    parser.add_argument("--out", default=str(ROOT / "runs/bench_distributed"))
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--updates", type=int, help="gradient steps of every run (default 1000; --quick: 120)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads shared by the processes")
    parser.add_argument("--pairs", type=int, help="test pairs scored (default all; --quick: 10)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    args.updates = args.updates or (120 if args.quick else 1000)
    args.pairs = args.pairs or (10 if args.quick else None)
    seeds = args.seeds[:1] if args.quick else args.seeds
    rows = [run(n, s, args) for s in seeds for n in args.processes]

    print(f"\n2D brain registration, {args.updates} updates, same total batch; test template pairs, date "
          f"{time.strftime('%Y-%m-%d')}")  # fmt: skip
    head = f"{'processes':>9} {'threads':>7} {'seed':>4} {'Dice GM/WM':>10} {'train s':>8} {'replayed/s':>10} "
    print(head + f"{'env steps/s':>11} {'speed-up':>8}")
    base = {r["seed"]: r["seconds"] for r in rows if r["processes"] == args.processes[0]}
    for r in rows:
        print(f"{r['processes']:>9} {r['threads_per_process']:>7} {r['seed']:>4} {r['dice_gm_wm']:>10.4f} "
              f"{r['seconds']:>8.1f} {r['replayed_per_s']:>10.1f} {r['env_steps_per_s']:>11.1f} "
              f"{base[r['seed']] / r['seconds']:>8.2f}")  # fmt: skip
    print(f"identity Dice (all labels): {rows[0]['dice_initial']:.4f}")
    print(json.dumps({"updates": args.updates, "runs": rows}))


if __name__ == "__main__":
    main()
