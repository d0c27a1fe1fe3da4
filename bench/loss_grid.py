"""Where should the 3D auxiliary loss be computed? Instance optimisation answers without any training.

For each test pair, a displacement field on the 4 mm state grid (48x56x48) is optimised directly with Adam on the
auxiliary loss (LNCC window 9 + 0.5 x diffusion of the field), the LNCC computed either on the 4 mm images or on
the 2 mm images with the field upsampled; then the field is upsampled to 2 mm and scored (Dice GM/WM). The best a
policy trained on a loss can do is roughly what optimising that loss does per pair, so this bounds the agent.

    python bench/loss_grid.py --pairs 3 --iterations 150        # needs data/brain3d from data_prep/brain.py
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rli2it_med.registration.data import PairDataset  # noqa: E402
from rli2it_med.registration.grid import coarse_shape, downsample_image, upsample_field  # noqa: E402
from rli2it_med.registration.losses import RegistrationLoss  # noqa: E402
from rli2it_med.registration.metrics import dice_per_label  # noqa: E402
from rli2it_med.registration.warp import warp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def optimise(pair, scale: int, loss_on_images: bool, iterations: int) -> torch.Tensor:
    """A state-grid field minimising the auxiliary loss; returns it upsampled to the image grid."""
    shape = tuple(pair.fixed.shape[2:])
    fixed, moving = pair.fixed, pair.moving
    if not loss_on_images:
        fixed, moving = downsample_image(fixed, scale), downsample_image(moving, scale)
    field = torch.zeros(1, 3, *coarse_shape(shape, scale), requires_grad=True)
    loss = RegistrationLoss(3, kernel_size=9, smooth_weight=0.5)
    opt = torch.optim.Adam([field], lr=0.1)
    for _ in range(iterations):
        ddf = upsample_field(field, scale, shape) if loss_on_images else field
        value = loss(fixed, warp(moving, ddf), field)["loss"]
        opt.zero_grad()
        value.backward()
        opt.step()
    return upsample_field(field.detach(), scale, shape)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT / "data/brain3d"))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=150)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    pairs = PairDataset.load(args.data, "test")
    rows = {"identity": [], "loss on 4 mm images": [], "loss on 2 mm images": []}
    seconds = {k: 0.0 for k in rows}
    for i in range(min(args.pairs, len(pairs))):
        pair = pairs.get([i])
        rows["identity"].append(dice_per_label(pair.moving_seg, pair.fixed_seg, (2, 3)).mean().item())
        for name, on_images in (("loss on 4 mm images", False), ("loss on 2 mm images", True)):
            start = time.perf_counter()
            ddf = optimise(pair, 2, on_images, args.iterations)
            seconds[name] += time.perf_counter() - start
            moved = warp(pair.moving_seg, ddf, mode="nearest")
            rows[name].append(dice_per_label(moved, pair.fixed_seg, (2, 3)).mean().item())
    n = len(rows["identity"])
    print(f"Field on the 4 mm grid, {args.iterations} Adam steps, {n} test pairs of {args.data}")
    print("| | Dice GM/WM (mean) | per pair | s/pair |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        per_pair = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {np.mean(values):.3f} | {per_pair} | {seconds[name] / n:.1f} |")


if __name__ == "__main__":
    main()
