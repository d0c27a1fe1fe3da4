"""Registration benchmark: identity, ANTsPy SyN, SimpleITK symmetric-forces demons, MONAI VoxelMorph (trained
here on the same training pairs for the same wall-clock budget as the rli2it model, or the same CPU time with
``--vm-clock cpu``; ``--vm-save`` and ``--vm-sitting`` spread a long budget over several runs) and rli2it, on the
held-out template-to-subject test pairs, in one process.

Every method is scored the same way: its pull-back mapping is turned into a voxel displacement field (ANTs SyN's
from ANTs' own composite of its affine and its warp, defined everywhere on the fixed grid), the moving
labels are warped with nearest neighbour by :func:`rli2it_med.registration.warp.warp`, and Dice per label, HD95
(mm), % of voxels with det(J) <= 0 and seconds per pair are computed by :mod:`rli2it_med.registration.metrics`.

    python bench/registration.py --dim 2
    python bench/registration.py --dim 3 --model bundles/.../model.pt
    python bench/registration.py --dim 2 --quick      # a few pairs, a 1-minute VoxelMorph

The table goes to stdout, and its last line is the same as one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rli2it_med.agent.checkpoint import training_minutes  # noqa: E402
from rli2it_med.agent.networks import count_parameters  # noqa: E402
from rli2it_med.api import Registrator, format_coarse_steps, parse_coarse_steps, parse_refine  # noqa: E402
from rli2it_med.clinical import DEFAULT_BUNDLES, load_network  # noqa: E402
from rli2it_med.io import atomic_write_bytes  # noqa: E402
from rli2it_med.registration.data import Pair, PairDataset  # noqa: E402
from rli2it_med.registration.metrics import dice_per_label, folding_percent, hd95_per_label  # noqa: E402
from rli2it_med.registration.warp import warp  # noqa: E402

LABELS = {1: "CSF", 2: "GM", 3: "WM"}
ROOT = Path(__file__).resolve().parents[1]


# --- methods: each maps a Pair (1, 1, *S) to a pull-back displacement field (1, ndim, *S) in voxels ---------------
def identity(pair: Pair) -> torch.Tensor:
    return torch.zeros(1, pair.fixed.ndim - 2, *pair.fixed.shape[2:])


def physical_to_voxel_ddf(field_mm: np.ndarray, spacing: tuple[float, ...]) -> torch.Tensor:
    """A displacement field (*S, ndim) in mm along the grid's axes (direction identity: ANTsPy's ``from_numpy``
    images) as the benches' (1, ndim, *S) field in voxels."""
    vox = np.moveaxis(np.asarray(field_mm, np.float64), -1, 0) / np.asarray(spacing, np.float64).reshape(
        -1, *[1] * (field_mm.ndim - 1)
    )
    return torch.from_numpy(vox)[None].float()


def ants_syn(pair: Pair, spacing: tuple[float, ...]) -> tuple[torch.Tensor, float]:
    """ANTsPy ``type_of_transform="SyN"`` (affine + SyN, ANTsPy defaults), as its own composite transform (the
    affine and the SyN warp composed by ANTs into one displacement field on the fixed grid, defined everywhere: no
    outside-the-image values to fake folds at the border), and the seconds of the registration alone (composing
    and reading the field back is the bench's work, not SyN's)."""
    import tempfile

    import ants

    fixed = ants.from_numpy(pair.fixed[0, 0].numpy().astype(np.float32), spacing=spacing)
    moving = ants.from_numpy(pair.moving[0, 0].numpy().astype(np.float32), spacing=spacing)
    start = time.perf_counter()
    reg = ants.registration(fixed, moving, type_of_transform="SyN")
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        composed = ants.apply_transforms(fixed, moving, reg["fwdtransforms"], compose=str(Path(tmp) / "syn"))
        field = ants.image_read(composed).numpy()  # (*S, ndim), mm
    for path in reg["fwdtransforms"] + reg["invtransforms"]:
        Path(path).unlink(missing_ok=True)
    return physical_to_voxel_ddf(field, spacing), seconds


def sitk_demons(pair: Pair, iterations: int, sigma: float) -> torch.Tensor:
    """SimpleITK symmetric-forces demons (displacement field smoothed by ``sigma`` voxels)."""
    import SimpleITK as sitk

    fixed = sitk.GetImageFromArray(pair.fixed[0, 0].numpy().astype(np.float32))
    moving = sitk.GetImageFromArray(pair.moving[0, 0].numpy().astype(np.float32))
    demons = sitk.SymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(iterations)
    demons.SetStandardDeviations(sigma)
    field = demons.Execute(fixed, moving)
    vec = sitk.GetArrayFromImage(field)  # (*S, ndim) with components in (x, y[, z]) = reversed axis order
    return torch.from_numpy(np.moveaxis(vec, -1, 0)[::-1].copy())[None].float()


# --- MONAI VoxelMorph, trained here ----------------------------------------------------------------------------------
def train_voxelmorph(
    train: PairDataset,
    minutes: float,
    batch_size: int,
    seed: int = 0,
    kernel_size: int = 9,
    smooth_weight: float = 1.0,
    lr: float = 1e-4,
    device: str = "cpu",
    checkpoint: str | None = None,
    sitting: float | None = None,
    save_every: float = 10.0,
    clock: str = "wall",
    dice_weight: float = 0.0,
):
    """MONAI's default VoxelMorph trained unsupervised (LNCC + ``smooth_weight`` x diffusion) for ``minutes`` on
    ``device``; returns the network, the iterations run, the minutes used and whether the budget is spent.

    ``dice_weight`` > 0 adds ``dice_weight`` x (1 - soft Dice) of the moving label maps (one-hot, warped linearly by
    the field) against the fixed ones, VoxelMorph's weakly supervised loss: the same term as rli2it's
    ``LossConfig.dice_weight``, so that both train on the same loss.

    With ``checkpoint``, the training state (weights, Adam's state, iterations, minutes, the pair sampler's state) is
    written there every ``save_every`` minutes and at the end, and an unfinished run found there goes on from where
    it stopped; ``sitting`` then caps this call's minutes, for budgets longer than one sitting. ``clock="cpu"``
    counts the budget (not ``sitting``) in the process's CPU time divided by torch's threads: minutes of the cores'
    full use, which other jobs on the machine do not eat into."""
    from monai.losses import DiffusionLoss
    from monai.networks.nets import VoxelMorph

    from rli2it_med.registration.losses import LocalNCC, WarpedLabelDiceLoss  # rli2it's: the same loss

    torch.manual_seed(seed)
    nd = train.spatial_dims
    net = VoxelMorph(spatial_dims=nd).to(device)
    ncc = LocalNCC(nd, kernel_size=kernel_size)
    smooth = DiffusionLoss()
    dice = WarpedLabelDiceLoss(train.label_values) if dice_weight else None  # rli2it's auxiliary Dice term
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    iters, before, cpu_before = 0, 0.0, 0.0
    if checkpoint and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        net.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["sampler"]
        iters, before, cpu_before = int(state["iterations"]), float(state["minutes"]), float(state["cpu_minutes"])
        print(f"  VoxelMorph resumed from {checkpoint}: {iters} iterations, {before:.1f} min", file=sys.stderr)
    start, cpu_start = time.perf_counter(), time.process_time()
    last_save = start

    def elapsed() -> float:
        return (time.perf_counter() - start) / 60

    def cpu_minutes() -> float:
        return cpu_before + (time.process_time() - cpu_start) / 60

    def spent() -> float:
        return cpu_minutes() / torch.get_num_threads() if clock == "cpu" else before + elapsed()

    def save() -> None:
        buffer = io.BytesIO()
        record = {
            "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
            "optimizer": opt.state_dict(),
            "sampler": rng.bit_generator.state,
            "iterations": iters,
            "minutes": before + elapsed(),
            "cpu_minutes": cpu_minutes(),
            "spent": spent(),  # of the budget, on its clock
            "clock": clock,
            "budget": minutes,
            "device": device_name(device),
        }
        torch.save(record, buffer)
        atomic_write_bytes(checkpoint, buffer.getvalue())

    net.train()
    done = iters
    while spent() < minutes and (sitting is None or elapsed() < sitting):
        pair = train.get(rng.integers(0, len(train), batch_size)).to(device)
        moved, ddf = net(pair.moving, pair.fixed)
        loss = ncc(moved, pair.fixed) + smooth_weight * smooth(ddf)
        if dice is not None:
            loss = loss + dice_weight * dice(pair.moving_seg, pair.fixed_seg, ddf)
        opt.zero_grad()
        loss.backward()
        opt.step()
        iters += 1
        if checkpoint and time.perf_counter() - last_save > save_every * 60:
            save()
            last_save = time.perf_counter()
    if checkpoint and iters > done:
        save()
    net.eval()
    used = spent()
    return net, iters, used, used >= minutes


def device_name(device: str | torch.device) -> str:
    """The GPU's name for a CUDA device, else "cpu"."""
    return torch.cuda.get_device_name(device) if str(device).startswith("cuda") else "cpu"


def voxelmorph_method(net):
    device = next(net.parameters()).device

    @torch.no_grad()
    def run(pair: Pair) -> torch.Tensor:
        return net(pair.moving.to(device), pair.fixed.to(device))[1].cpu()  # .cpu() waits for a GPU

    return run


# --- scoring -------------------------------------------------------------------------------------------------------
def score(name: str, method, pairs: PairDataset, n: int, params: int | str = "-", warmup: bool = False) -> dict:
    """Run ``method`` on the first ``n`` pairs; ``warmup`` makes one call first (torch kernels' set-up), left out of
    ``s_per_pair`` and reported as ``s_cold`` (the first call's time, which is the first pair's for the others). A
    method returns its field, or its field and the seconds its registration took (when turning its result into
    the field is extra work)."""
    dice, hd, fold, secs = [], [], [], []
    labels = tuple(LABELS)
    cold = None
    if warmup:
        start = time.perf_counter()
        method(pairs.get([0]))
        cold = time.perf_counter() - start
    for i in range(n):
        pair = pairs.get([i])
        start = time.perf_counter()
        ddf = method(pair)
        seconds = time.perf_counter() - start
        if isinstance(ddf, tuple):
            ddf, seconds = ddf
        secs.append(seconds)
        warped = warp(pair.moving_seg, ddf, mode="nearest")
        dice.append(dice_per_label(warped, pair.fixed_seg, labels)[0].numpy())
        hd.append(hd95_per_label(warped, pair.fixed_seg, labels, pairs.spacing)[0].numpy())
        fold.append(folding_percent(ddf).item())
    dice, hd = np.stack(dice), np.stack(hd)
    row = {"method": name, "dice_gm_wm": float(np.nanmean(dice[:, 1:]))}
    row |= {f"dice_{LABELS[lab]}": float(np.nanmean(dice[:, i])) for i, lab in enumerate(labels)}
    row |= {"hd95_mm": float(np.nanmean(hd)), "folding_pct": float(np.mean(fold)), "s_per_pair": float(np.mean(secs))}
    row |= {"s_cold": float(secs[0] if cold is None else cold)}
    row |= {"params": params, "pairs": n}
    print(f"  {name}: Dice GM/WM {row['dice_gm_wm']:.3f}, {row['s_per_pair']:.2f} s/pair", file=sys.stderr)
    return row


def dice_vs_step(reg: Registrator, pairs: PairDataset, n: int, steps: int, fine_steps: int = 0) -> np.ndarray:
    curves = []
    for i in range(n):
        p = pairs.get([i])
        res = reg.register(p.fixed, p.moving, steps, p.fixed_seg, p.moving_seg, fine_steps=fine_steps, refine=0)
        curves.append(torch.stack([d.cpu() for d in res.dice], 1)[0].numpy())
    return np.mean(curves, 0)


def voxelmorph(args: argparse.Namespace, train: PairDataset, minutes: float):
    """The VoxelMorph row's network: loaded from ``--vm-weights``, or trained ``minutes`` on ``--vm-device`` (going
    on from ``--vm-save``, saved there); returns it with its training iterations, minutes and device, or None when
    ``--vm-sitting`` ended before the budget."""
    from monai.networks.nets import VoxelMorph

    if args.vm_weights:
        saved = torch.load(args.vm_weights, map_location="cpu", weights_only=True)
        net = VoxelMorph(spatial_dims=train.spatial_dims)
        net.load_state_dict(saved["state_dict"])
        trained = f"{saved['device']}, {saved.get('spent', saved['minutes']):.1f} min"
        print(f"  MONAI VoxelMorph from {args.vm_weights} ({trained})", file=sys.stderr)
        return net.eval(), int(saved["iterations"]), float(saved.get("spent", saved["minutes"])), str(saved["device"])
    where = device_name(args.vm_device)
    print(f"  training MONAI VoxelMorph for {minutes:.1f} min on {where}...", file=sys.stderr)
    net, iters, used, finished = train_voxelmorph(
        train,
        minutes,
        batch_size=1,
        device=args.vm_device,
        checkpoint=args.vm_save,
        sitting=args.vm_sitting,
        clock=args.vm_clock,
    )
    return (net, iters, used, where) if finished else None


def print_table(title: str, rows: list[dict], cols: list[str], width: int, digits: int = 3, label=str) -> None:
    """A bench's results table on stdout: ``title``, then one line per row, cells right-aligned in ``width``
    (floats with ``digits`` decimals, missing cells "-"); ``label`` maps a column name to its header."""
    print(f"\n{title} ({time.strftime('%Y-%m-%d')})")
    print(" | ".join(f"{label(c):>{width}}" for c in cols))
    for r in rows:
        cells = [r.get(c, "-") for c in cols]
        print(" | ".join(f"{v:>{width}.{digits}f}" if isinstance(v, float) else f"{v!s:>{width}}" for v in cells))


def set_options(cfg, items: list[str]) -> None:
    """Apply ``--set PART.KEY=VALUE`` items (JSON values) to a training configuration, e.g. ``loss.smooth_weight=0.1``
    or ``sac.lr_planner=0``; an unknown key exits with its name."""
    for item in items:
        key, _, value = item.partition("=")
        part, _, name = key.rpartition(".")
        target = getattr(cfg, part, None) if part else cfg
        if target is None or not name or not hasattr(target, name):
            raise SystemExit(f"--set {item}: no option {key!r} in the training configuration")
        try:
            setattr(target, name, json.loads(value))
        except json.JSONDecodeError as e:
            raise SystemExit(f"--set {item}: the value is not JSON ({e})") from None


def plot_curve(
    curve: np.ndarray,
    peers: dict[str, float],
    path: Path,
    trained_steps: int,
    title: str,
    ylabel: str,
    fine_from: int | None = None,
) -> None:
    """rli2it's score after each step t, the trained episode length (or, with ``fine_from``, where the fine steps
    start), and each peer's score as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    ax.plot(range(len(curve)), curve, "o-", label="rli2it")
    if fine_from is None:
        ax.axvline(trained_steps, color="grey", ls=":", lw=1, label=f"trained episode length T={trained_steps}")
    else:
        ax.axvline(fine_from, color="grey", ls=":", lw=1, label="fine steps (grid twice finer) from here")
    for (name, value), c in zip(peers.items(), ["k", "tab:green", "tab:red", "tab:purple"]):
        ax.axhline(value, color=c, ls="--", lw=1, label=name)
    ax.set_xlabel("step t")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, choices=(2, 3), required=True)
    parser.add_argument("--data", help="dataset folder (default data/brain{dim}d, built when missing)")
    parser.add_argument("--model", help="rli2it checkpoint or bundle folder (default: the shipped bundle's model)")
    parser.add_argument("--pairs", type=int, help="test pairs (default: all; --quick: 5)")
    parser.add_argument("--steps", type=int, help="rli2it steps at test time (default: the model's)")
    parser.add_argument(
        "--coarse-steps",
        type=parse_coarse_steps,
        help="rli2it coarse steps first, or per level, coarsest first: 1,2 (default: the model's)",
    )
    parser.add_argument("--fine-steps", type=int, help="rli2it fine steps last (default: the model's)")
    parser.add_argument(
        "--refine", type=parse_refine, help="rli2it refinement iterations last, N or C,N (default: the model's)"
    )
    parser.add_argument(
        "--also",
        nargs="*",
        default=[],
        metavar="FINE:REFINE",
        help="more rli2it rows with these fine steps and refinement iterations (N, or C,N: C on the pooled images "
        "first), e.g. 0:2 4:0 0:5,2",
    )
    parser.add_argument("--vm-minutes", type=float, help="VoxelMorph training budget (default: rli2it's)")
    parser.add_argument("--vm-device", default="cpu", help="where VoxelMorph trains (default cpu)")
    parser.add_argument(
        "--vm-save",
        help="VoxelMorph's training state, saved here every 10 minutes and at the end (weights, Adam, iterations, "
        "minutes, device); an unfinished run found here goes on",
    )
    parser.add_argument(
        "--vm-clock",
        choices=("wall", "cpu"),
        default="wall",
        help="VoxelMorph's budget in wall-clock minutes, or in its CPU time / torch threads (other jobs on the "
        "machine do not eat into it)",
    )
    parser.add_argument(
        "--vm-sitting",
        type=float,
        help="train VoxelMorph at most this many minutes in this run, then save to --vm-save and stop if its budget "
        "is not spent (run the same command again to go on)",
    )
    parser.add_argument("--vm-weights", help="score this saved VoxelMorph (--vm-save) instead of training one")
    parser.add_argument("--device", default="cpu", help="where rli2it and VoxelMorph register (default cpu)")
    parser.add_argument("--plot", help="Dice-vs-step PNG (default docs/dice_vs_step_{dim}d.png)")
    parser.add_argument("--skip", nargs="*", default=[], help="methods to leave out: syn demons voxelmorph")
    parser.add_argument("--quick", action="store_true", help="5 pairs and a 1-minute VoxelMorph")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of torch, ITK and ANTs (default 2)")
    args = parser.parse_args(argv)
    if args.vm_sitting is not None and not args.vm_save:
        parser.error("--vm-sitting needs --vm-save (where the unfinished training waits)")
    if "syn" not in args.skip and importlib.util.find_spec("ants") is None:  # before minutes of other work
        parser.error("the ANTs SyN peer needs ANTsPy: pip install -e '.[bench]' (or --skip syn)")
    torch.set_num_threads(args.threads)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)  # read when ants / SimpleITK are imported

    data = args.data or str(ROOT / f"data/brain{args.dim}d")
    if args.data is None:  # a fresh clone: build the default data
        from data_prep import brain

        brain.ensure(args.dim, data)
    model = args.model or f"the shipped {DEFAULT_BUNDLES[args.dim]} bundle"
    test = PairDataset.load(data, "test", "template")
    train = PairDataset.load(data, "train", "template")
    n = min(args.pairs or (5 if args.quick else len(test)), len(test))
    reg = Registrator.from_net(load_network(args.model, args.dim), args.device)
    if args.coarse_steps is not None:
        reg.net.coarse_steps = args.coarse_steps
    if args.fine_steps is not None:
        reg.net.fine_steps = args.fine_steps
    if args.refine is not None:
        reg.net.refine = args.refine
    also = [(int(fine), parse_refine(refine)) for fine, _, refine in (spec.partition(":") for spec in args.also)]
    rl_minutes = training_minutes(reg.metadata)
    if "train_minutes_total" not in reg.metadata and "voxelmorph" not in args.skip and args.vm_minutes is None:
        print(
            f"  note: {model} records only its last run's {rl_minutes:.1f} training minutes; if its weights were "
            "fine-tuned from others, give VoxelMorph the whole time with --vm-minutes",
            file=sys.stderr,
        )
    vm_minutes = args.vm_minutes if args.vm_minutes is not None else (1.0 if args.quick else rl_minutes)
    spacing = tuple(test.spacing)
    print(f"benchmark: {args.dim}D, {n} test pairs of {data}, rli2it model {model}", file=sys.stderr)

    if "voxelmorph" not in args.skip:  # first: a budget longer than one sitting stops here
        trained = voxelmorph(args, train, vm_minutes)
        if trained is None:
            print(f"VoxelMorph's {vm_minutes:.1f}-minute budget is not spent: saved to {args.vm_save}", file=sys.stderr)
            return

    rows = [score("identity", identity, test, n)]
    if "syn" not in args.skip:
        rows.append(score("ANTs SyN", lambda p: ants_syn(p, spacing), test, n))
    if "demons" not in args.skip:
        rows.append(score("SimpleITK demons", lambda p: sitk_demons(p, 100, 1.5), test, n))
    if "voxelmorph" not in args.skip:
        net, iters, minutes, where = trained
        row = score("MONAI VoxelMorph", voxelmorph_method(net.to(args.device)), test, n, count_parameters(net), True)
        rows.append(row | {"train_min": round(minutes, 1), "train_iters": iters, "train_device": where})

    def ours(pair: Pair) -> torch.Tensor:
        return reg.register(pair.fixed, pair.moving, args.steps).field.cpu()

    params = count_parameters(reg.agent.planner) + count_parameters(reg.agent.actor)
    rows.append(score("rli2it", ours, test, n, params, warmup=True) | {"train_min": round(rl_minutes, 1)})
    main_row = rows[-1]
    for fine_steps, refine in also:

        def variant(pair: Pair, fine_steps=fine_steps, refine=refine) -> torch.Tensor:
            return reg.register(pair.fixed, pair.moving, args.steps, fine_steps=fine_steps, refine=refine).field.cpu()

        name = f"rli2it ({fine_steps} fine, {format_coarse_steps(refine)} refine)"
        rows.append(score(name, variant, test, n, params) | {"train_min": round(rl_minutes, 1)})

    trained_t = reg.trained_steps
    steps, fine = args.steps or reg.net.steps, reg.net.fine_steps
    print(
        f"rli2it: {format_coarse_steps(reg.net.coarse_steps)} coarse steps, then {steps} steps, then {fine} fine "
        f"steps, then {format_coarse_steps(reg.net.refine)} refinement iterations at test time "
        f"(episode length in training T = {trained_t})"
    )
    if fine:  # the curve goes on past the default number of fine steps, as it goes past T without them
        curve = dice_vs_step(reg, test, min(n, 20), steps, 2 * fine)
    else:
        curve = dice_vs_step(reg, test, min(n, 20), max(2 * trained_t, steps), 0)
    plot = Path(args.plot or ROOT / f"docs/dice_vs_step_{args.dim}d.png")
    peers = {
        r["method"]: np.mean([r[f"dice_{v}"] for v in LABELS.values()])
        for r in rows
        if not r["method"].startswith("rli2it")
    }
    title = f"{args.dim}D brain, template-to-subject test pairs (n={min(n, 20)})"
    plot_curve(curve, peers, plot, trained_t, title, "mean Dice (CSF, GM, WM)", steps if fine else None)

    cols = ["method", "dice_gm_wm", "dice_CSF", "dice_GM", "dice_WM", "hd95_mm", "folding_pct", "s_per_pair", "s_cold"]
    cols += ["params"]
    print_table(f"{args.dim}D brain registration, {n} test pairs", rows, cols, 16, digits=4)
    best_classic = (
        max(r["dice_gm_wm"] for r in rows if r["method"] in ("ANTs SyN", "SimpleITK demons"))
        if any(r["method"] in ("ANTs SyN", "SimpleITK demons") for r in rows)
        else float("nan")
    )
    syn = next((r for r in rows if r["method"] == "ANTs SyN"), None)
    summary = {
        "dim": args.dim,
        "pairs": n,
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
        "dice_per_step": [round(float(x), 4) for x in curve],
        "rli2it_vs_best_classic": main_row["dice_gm_wm"] - best_classic,
        "rli2it_speedup_vs_syn": (syn["s_per_pair"] / main_row["s_per_pair"]) if syn else None,
    }
    print("Dice after each rli2it step: " + " ".join(f"{t}:{d:.3f}" for t, d in enumerate(curve)))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
