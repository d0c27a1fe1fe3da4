"""``rli2it``: thin command line over :mod:`rli2it_med` (heavy imports are deferred to the subcommand).

rli2it train --data data/brain2d --out runs/brain2d --minutes 20
rli2it train --out runs/brain2d --resume
rli2it evaluate --model runs/brain2d/best.pt --data data/brain2d --split test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    import torch

    from rli2it_med.io import load_json
    from rli2it_med.registration.train import TrainConfig, default_config, train

    if args.threads:
        torch.set_num_threads(args.threads)
    config_path = Path(args.out) / "config.json"
    if args.resume and config_path.is_file():
        cfg = TrainConfig.from_dict(load_json(config_path))
        if args.minutes is not None:
            cfg.minutes = args.minutes
    else:
        if args.data is None:
            raise SystemExit("rli2it train: --data is required for a new run")
        from rli2it_med.io import load_dataset

        _, meta = load_dataset(args.data, "val")
        cfg = default_config(int(meta["dim"]), data=args.data, out=args.out)
        if args.minutes is not None:
            cfg.minutes = args.minutes
    for name in ("seed", "device", "max_updates", "pairs"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    if args.reward is not None:
        cfg.env.reward = args.reward
    result = train(cfg, resume=args.resume, progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from rli2it_med.api import Registrator
    from rli2it_med.io import load_dataset
    from rli2it_med.registration.data import PairDataset
    from rli2it_med.registration.train import evaluate, gm_wm_dice, summarize

    if args.threads:
        torch.set_num_threads(args.threads)
    reg = Registrator.load(args.model, args.device)
    pairs = PairDataset.load(args.data, args.split, args.pairs)
    _, meta = load_dataset(args.data, args.split)
    metrics = evaluate(reg, pairs, steps=args.steps, limit=args.limit, hd95=not args.no_hd95, progress=not args.quiet)
    summary = summarize(metrics, meta.get("label_names"))
    summary["dice_gm_wm"] = gm_wm_dice(metrics)
    summary["pairs"] = int(len(metrics["dice"]))
    steps = metrics["dice_steps"].mean(0)
    print(f"{args.model} on {args.data} [{args.split}, {args.pairs} pairs, n={summary['pairs']}]")
    width = max(len(k) for k in summary)
    for k, v in summary.items():
        print(f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    print("  Dice after each step t: " + " ".join(f"{t}:{d:.3f}" for t, d in enumerate(steps)))
    summary["dice_per_step"] = [float(x) for x in np.asarray(steps)]
    if args.json:
        from rli2it_med.io import save_json

        save_json(args.json, summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rli2it", description="RL-I2IT step-wise registration")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or resume) a registration agent")
    t.add_argument("--data", help="dataset folder built by data_prep/brain.py")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--minutes", type=float, help="wall-clock budget (default: the preset's)")
    t.add_argument("--max-updates", type=int, help="stop after this many gradient steps")
    t.add_argument("--pairs", choices=("template", "subject"), help="training pairs")
    t.add_argument(
        "--reward",
        choices=("auto", "labels", "pseudo"),
        help="Dice reward on the label maps, or on k-means pseudo-segmentations (the paper's unsupervised mode)",
    )
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="Dice per label, HD95, folding, s/pair and Dice per step")
    e.add_argument("--model", required=True, help="checkpoint (model.pt / best.pt)")
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--pairs", default="template", choices=("template", "subject"))
    e.add_argument("--steps", type=int, help="agent steps T (default: the trained episode length)")
    e.add_argument("--limit", type=int, help="first N pairs only")
    e.add_argument("--no-hd95", action="store_true")
    e.add_argument("--json", help="also write the summary here")
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int)
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"rli2it {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
