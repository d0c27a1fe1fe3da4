"""Inpainting benchmark: rli2it vs classical inpainting and the same network trained one-step, in one run.

On the held-out faces (scikit-image's aligned LFW faces, the fixed split of :mod:`rli2it_vision.data`, upsampled to
64x64, a 32x32 centre hole), every method fills the hole and is scored on it alone: PSNR and SSIM (images in
[-1, 1], data range 2), milliseconds per image. Peers: OpenCV Telea and Navier-Stokes inpainting, scikit-image
biharmonic inpainting, and rli2it's own planner + actor trained for the same wall-clock time as rli2it without RL:
one step from the empty hole with the same auxiliary loss (border-weighted L1 + SNGAN adversarial).

    python bench/inpainting.py                    # trains rli2it 10 min, the one-step network as long
    python bench/inpainting.py --model runs/inpaint/best.pt --minutes 10
    python bench/inpainting.py --quick            # 1-minute trainings

The table goes to stdout, and its last line is the same as one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.registration import print_table  # noqa: E402
from rli2it_med.agent import Agent, ReplayBatch  # noqa: E402
from rli2it_med.agent.checkpoint import training_minutes  # noqa: E402
from rli2it_med.agent.networks import count_parameters  # noqa: E402
from rli2it_vision.editing import (  # noqa: E402
    EditingTask,
    ImageEditor,
    ImagePairs,
    centre_hole,
    evaluate_editing,
    region_psnr,
    with_mirrors,
)
from rli2it_vision.inpainting import InpaintConfig, image_pairs, load_images, train_inpainting  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def score(name: str, fill, images: torch.Tensor, hole: tuple[slice, slice], **extra) -> dict:
    """``fill`` maps (B, C, H, W) images with an empty hole to filled images; score the hole."""
    from monai.metrics import SSIMMetric

    masked = images.clone()
    masked[(..., *hole)] = 0.0
    start = time.perf_counter()
    filled = fill(masked).float().clamp(-1, 1)
    ms = 1000 * (time.perf_counter() - start) / len(images)
    pred, truth = filled[(..., *hole)], images[(..., *hole)]
    ssim = SSIMMetric(spatial_dims=2, data_range=2.0, win_size=7, reduction="none")(pred, truth)[:, 0]
    row = {"method": name, "psnr": float(region_psnr(pred, truth).mean()), "ssim": float(ssim.mean())}
    row |= {"ms_per_image": ms} | extra
    print(f"  {name}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}", file=sys.stderr)
    return row


def classical(method: str, hole: tuple[slice, slice]):
    """OpenCV Telea / Navier-Stokes (radius 3) or scikit-image biharmonic, per image and channel."""

    def run(images: torch.Tensor) -> torch.Tensor:
        mask = np.zeros(images.shape[2:], np.uint8)
        mask[hole] = 1
        out = []
        for image in images.numpy():
            planes = []
            for plane in image:
                if method == "biharmonic":
                    from skimage.restoration import inpaint_biharmonic

                    planes.append(inpaint_biharmonic(plane, mask.astype(bool)))
                else:
                    import cv2

                    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
                    u8 = np.clip((plane + 1) * 127.5, 0, 255).round().astype(np.uint8)
                    planes.append(cv2.inpaint(u8, mask, 3, flag).astype(np.float32) / 127.5 - 1)
            out.append(np.stack(planes))
        return torch.as_tensor(np.stack(out))

    return run


def train_one_step(
    cfg: InpaintConfig, pairs: ImagePairs, val: torch.Tensor, minutes: float, seed: int
) -> tuple[Agent, int]:
    """rli2it's planner + actor trained without RL: one step from the empty hole, the same auxiliary loss, Adam at
    the auxiliary learning rate on the same cosine schedule, batches of ``cfg.batch_size``, for ``minutes``; like
    rli2it's ``best.pt`` the weights returned are those of the best validation PSNR (checked every 100 iterations)."""
    torch.manual_seed(seed)
    agent = Agent(cfg.agent)
    task = EditingTask(pairs, cfg.env, cfg.loss)
    images = pairs.target
    opt = torch.optim.Adam([*agent.planner.parameters(), *agent.actor.parameters()], lr=cfg.sac.lr_aux)
    g = torch.Generator().manual_seed(seed)
    region = task.region
    size = region[0].stop - region[0].start
    best, best_state = -float("inf"), None
    start, iters, budget = time.perf_counter(), 0, minutes * 60
    while (elapsed := time.perf_counter() - start) < budget:
        scale = cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * min(elapsed / budget, 1.0)))
        for group in opt.param_groups:
            group["lr"] = cfg.sac.lr_aux * scale
        index = torch.randint(0, len(images), (cfg.batch_size,), generator=g)
        fill = torch.zeros(cfg.batch_size, images.shape[1], size, size)
        state = {"index": index, "content": fill}
        batch = ReplayBatch(state, state, torch.zeros(cfg.batch_size, cfg.agent.plan_dim), *([torch.zeros(1)] * 2))
        loss = task.auxiliary_loss(agent, batch, task.observations(batch)[0])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        iters += 1
        if iters % 100 == 0:
            psnr = evaluate_editing(ImageEditor(agent.eval(), cfg.env, "cpu", steps=1), ImagePairs(val, val))["psnr"]
            agent.train()
            if psnr > best:
                best, best_state = psnr, copy.deepcopy(agent.state_dict())
    if best_state is not None:
        agent.load_state_dict(best_state)
    return agent.eval(), iters


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="training budget of each trained method (default 10)")
    parser.add_argument("--model", help="a trained rli2it checkpoint instead of training one here")
    parser.add_argument("--out", default=str(ROOT / "runs/bench_inpaint"), help="run folder of the rli2it training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1-minute trainings")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    minutes = args.minutes or (1.0 if args.quick else 10.0)
    cfg = InpaintConfig(out=args.out, minutes=minutes, seed=args.seed)
    model = args.model
    if model is None:
        print(f"  training rli2it for {minutes:.1f} min...", file=sys.stderr)
        minutes = train_inpainting(cfg, progress=False)["minutes"]
        model = str(Path(args.out) / "best.pt")
    rl = ImageEditor.load(model, "cpu", task="inpainting")
    if args.model is not None:  # the one-step network gets --minutes, else the checkpoint's training time
        minutes = args.minutes or training_minutes(rl.metadata)
    if "training" in rl.metadata["config"]:  # train the one-step network as rli2it was (loss, data, batch, LR)
        cfg = InpaintConfig.from_dict(rl.metadata["config"]["training"])
    cfg.agent = rl.agent.config
    size = rl.image_size
    test = load_images("lfw", "test", size)
    hole = centre_hole((size, size), rl.env_config.hole)
    cfg.env.hole = cfg.loss.hole = rl.env_config.hole
    params = count_parameters(rl.agent.planner) + count_parameters(rl.agent.actor)

    rows = [score(f"OpenCV {m}", classical(m.lower().replace("-", ""), hole), test, hole) for m in ("Telea", "NS")]
    rows.append(score("scikit-image biharmonic", classical("biharmonic", hole), test, hole))
    print(f"  training the one-step network for {minutes:.1f} min...", file=sys.stderr)
    train = image_pairs("lfw", "train", size)
    train = with_mirrors(train) if cfg.flip else train
    one, iters = train_one_step(cfg, train, load_images("lfw", "val", size), minutes, args.seed)
    one_step = ImageEditor(one, cfg.env, "cpu", steps=1)  # one action from the empty hole
    rows.append(score("one-step network (no RL)", lambda masked: one_step.edit(masked).image, test, hole,
                      params=params, train_min=round(minutes, 1), train_iters=iters))  # fmt: skip
    rows.append(
        score(f"rli2it ({rl.steps} steps)", lambda masked: rl.edit(masked).image, test, hole, params=params,
              train_min=round(minutes, 1), train_iters=rl.metadata.get("updates"))
    )  # fmt: skip
    curve = [float(p.mean()) for p in rl.edit(test, rl.env_config.max_steps, target=test).psnr]

    cols = ["method", "psnr", "ssim", "ms_per_image", "params"]
    title = f"{len(test)} LFW test faces {size}x{size}, {rl.env_config.hole}px hole"
    print_table(f"Inpainting, {title}", rows, cols, 24)
    print(
        f"rli2it's default: {rl.steps} steps (validated); hole PSNR after each step: "
        + " ".join(f"{t}:{p:.2f}" for t, p in enumerate(curve))
    )
    summary = {"date": time.strftime("%Y-%m-%d"), "images": len(test), "rows": rows, "psnr_per_step": curve}
    print(json.dumps(summary | {"default_steps": rl.steps}))


if __name__ == "__main__":
    main()
