"""What can the auxiliary loss reach per pair? Instance optimisation answers without any training.

For each test pair, a displacement field is optimised directly with Adam on the auxiliary loss (LNCC window 9 +
0.5 x diffusion of the field, in the field's own voxels), then upsampled to the image grid and scored (Dice GM/WM).
Rows: the field on the agent's state grid (4 mm in 3D, the 2 mm image grid in 2D) with the LNCC on the images
block-averaged to that grid (3D only) or on the images themselves (field upsampled); and the same loss optimised
coarse to fine (16 mm, then 8 mm, then 4 mm fields, each started from the previous one). A policy trained on a loss
does at best roughly what optimising that loss does per pair, so the rows bound the agent; the coarse-to-fine row
shows how much of the loss's reach a purely local optimiser misses.

    python bench/loss_grid.py --pairs 3 --iterations 150                 # 3D; needs data/brain3d (data_prep/brain.py)
    python bench/loss_grid.py --dim 2 --pairs 8 --iterations 200         # 2D; needs data/brain2d
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
COARSE_TO_FINE = (8, 4, 2)  # field grids, in image voxels (2 mm): 16, 8 and 4 mm


def optimise(pair, scales: tuple[int, ...], loss_on_images: bool, iterations: int) -> torch.Tensor:
    """A field minimising the auxiliary loss on the grid ``scales[-1]`` times coarser than the images, optimised on
    each grid of ``scales`` in turn (each started from the previous one, upsampled); returned on the image grid."""
    shape = tuple(pair.fixed.shape[2:])
    fixed, moving = pair.fixed, pair.moving
    if not loss_on_images:
        fixed, moving = downsample_image(fixed, scales[-1]), downsample_image(moving, scales[-1])
    loss = RegistrationLoss(len(shape), kernel_size=9, smooth_weight=0.5)
    field, previous = None, None
    for scale in scales:
        grid = coarse_shape(shape, scale)
        start = torch.zeros(1, len(shape), *grid) if field is None else upsample_field(field, previous // scale, grid)
        field = start.detach().requires_grad_(True)
        opt = torch.optim.Adam([field], lr=0.1)
        for _ in range(iterations):
            ddf = upsample_field(field, scale, shape) if loss_on_images else field
            value = loss(fixed, warp(moving, ddf), field)["loss"]
            opt.zero_grad()
            value.backward()
            opt.step()
        previous = scale
    return upsample_field(field.detach(), scales[-1], shape)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=3, choices=(2, 3))
    parser.add_argument("--data", help="dataset folder (default data/brain{dim}d)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=150, help="Adam steps per grid")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    data = args.data or str(ROOT / f"data/brain{args.dim}d")
    pairs = PairDataset.load(data, "test")
    state = 2 if args.dim == 3 else 1  # the agent's state grid (TrainConfig.grid_scale of the defaults)
    mm = 2 * state
    methods = {f"{mm} mm field, loss on the {mm} mm images": ((state,), False)} if state > 1 else {}
    methods[f"{mm} mm field, loss on the 2 mm images"] = ((state,), True)
    methods["16 -> 8 -> 4 mm fields (coarse to fine), loss on the 2 mm images"] = (COARSE_TO_FINE, True)
    rows = {"identity": [], **{name: [] for name in methods}}
    seconds = {k: 0.0 for k in rows}
    for i in range(min(args.pairs, len(pairs))):
        pair = pairs.get([i])
        rows["identity"].append(dice_per_label(pair.moving_seg, pair.fixed_seg, (2, 3)).mean().item())
        for name, (scales, on_images) in methods.items():
            start = time.perf_counter()
            ddf = optimise(pair, scales, on_images, args.iterations)
            seconds[name] += time.perf_counter() - start
            moved = warp(pair.moving_seg, ddf, mode="nearest")
            rows[name].append(dice_per_label(moved, pair.fixed_seg, (2, 3)).mean().item())
    n = len(rows["identity"])
    print(f"{args.iterations} Adam steps per grid, {n} test pairs of {data}")
    print("| | Dice GM/WM (mean) | per pair | s/pair |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        per_pair = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {np.mean(values):.3f} | {per_pair} | {seconds[name] / n:.1f} |")


if __name__ == "__main__":
    main()
