"""Seconds per training update, per rollout step, and of local NCC (MONAI's and ours), for the 2D and 3D presets;
then the 3D agent's forward at batch 1 (inference) with PyTorch's own dispatch of its convolutions and with
:class:`~rli2it_med.agent.networks.Conv3d` (oneDNN), whole and per convolution; the 2D agent's forward at batch 1 with
its actor decoding to the state grid and one level short (the preset); then ``torch.optim.Adam``'s first
construction (what the refinement's optimiser avoids); the refinement's fold barrier forward + backward, on the whole
grid and as :func:`~rli2it_med.registration.losses.fold_barrier` computes it.

The numbers behind the design notes in docs/benchmarks.md (what an update costs; why rli2it computes MONAI's LNCC
itself, from window sums of shifted copies with its gradient written out). LNCC is timed forward + backward on a
training batch on the image grid (where the auxiliary loss is computed). Weights are untrained: cost does not depend
on them.

    python bench/update_cost.py            # needs data/brain2d and data/brain3d from data_prep/brain.py
    python bench/update_cost.py --fold-barrier   # that part alone (no data)
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from monai.losses import LocalNormalizedCrossCorrelationLoss  # noqa: E402
from torch import nn  # noqa: E402

from rli2it_med.agent import SAC, Agent, EpisodeReplayBuffer  # noqa: E402
from rli2it_med.agent.networks import Conv3d  # noqa: E402
from rli2it_med.registration.data import PairDataset  # noqa: E402
from rli2it_med.registration.env import RegistrationEnv  # noqa: E402
from rli2it_med.registration.losses import LocalNCC, fold_barrier  # noqa: E402
from rli2it_med.registration.metrics import jacobian_determinant  # noqa: E402
from rli2it_med.registration.task import RegistrationTask  # noqa: E402
from rli2it_med.registration.train import collect, default_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def measure(dim: int) -> dict[str, float]:
    cfg = default_config(dim)
    task = RegistrationTask(PairDataset.load(ROOT / cfg.data, "train"), cfg.loss, grid_scale=cfg.grid_scale)
    pairs = task.pairs
    torch.manual_seed(0)
    agent = Agent(cfg.agent)
    buffer = EpisodeReplayBuffer(cfg.buffer_episodes)
    sac = SAC(agent, task, buffer, cfg.sac)
    env = RegistrationEnv(cfg.env, pairs, cfg.env_batch)
    env.reset(seed=0)
    rollout = timed(lambda: collect(env, agent, buffer, False), 2) / (cfg.env_batch * cfg.env.max_steps)
    update = timed(lambda: sac.train(1, cfg.batch_size))
    x = torch.rand(cfg.batch_size, 1, *task.image_pairs.spatial_shape, requires_grad=True)
    y = torch.rand_like(x)
    monai_lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=dim, kernel_size=9)
    ours = LocalNCC(dim, kernel_size=9)
    return {
        "batch": cfg.batch_size,
        "grid": "x".join(map(str, pairs.spatial_shape)),
        "image": "x".join(map(str, task.image_pairs.spatial_shape)),
        "update": update,
        "rollout": rollout,
        "lncc_monai": timed(lambda: monai_lncc(x, y).backward(), 2),
        "lncc_ours": timed(lambda: ours(x, y).backward(), 2),
    }


def planner_actor(agent: Agent, state: torch.Tensor) -> None:
    """The mean plan's action, as inference computes it."""
    with torch.inference_mode():
        out = agent.planner(state)
        agent.actor(out.mean, out.skips)


def agent_forward_3d() -> dict[str, float]:
    """Planner + actor forward on one 3D state (batch 1, the 4 mm episode grid), as inference runs them."""
    cfg = default_config(3)
    torch.manual_seed(0)
    agent = Agent(cfg.agent).eval()
    grid = PairDataset.load(ROOT / cfg.data, "val").spatial_shape
    grid = tuple(-(-s // cfg.grid_scale) for s in grid)
    state = torch.rand(1, cfg.agent.in_channels, *grid)

    def forward() -> None:
        planner_actor(agent, state)

    ours = timed(forward, 5)
    with mock.patch.object(Conv3d, "_conv_forward", nn.Conv3d._conv_forward):
        torchs = timed(forward, 5)
    # each convolution on the input it gets there: PyTorch's dispatch over oneDNN's time
    inputs = {}
    convs = [m for m in agent.modules() if isinstance(m, Conv3d)]
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.update({m: a[0]})) for m in convs]
    forward()
    for h in hooks:
        h.remove()
    ratios = []
    with torch.inference_mode():
        for conv, x in inputs.items():
            plain = timed(lambda conv=conv, x=x: nn.Conv3d._conv_forward(conv, x, conv.weight, conv.bias), 10)
            ratios.append(plain / timed(lambda conv=conv, x=x: conv(x), 10))
    return {"grid": "x".join(map(str, grid)), "torch": torchs, "ours": ours, "ratios": ratios}


def agent_forward_2d() -> dict[str, float]:
    """Planner + actor forward on one 2D state (batch 1, 128x128), the actor decoding up to the state grid
    (``action_level`` 0) or one level short and upsampling (1, the preset's)."""
    cfg = default_config(2)
    state = torch.rand(1, cfg.agent.in_channels, *PairDataset.load(ROOT / cfg.data, "val").spatial_shape)
    times = {}
    for level in (0, 1):
        torch.manual_seed(0)
        agent = Agent(dataclasses.replace(cfg.agent, action_level=level)).eval()
        times[level] = timed(lambda agent=agent: planner_actor(agent, state), 20)
    return {"grid": "x".join(map(str, state.shape[2:])), "full": times[0], "coarse": times[1]}


def adam_first_construction() -> float:
    """Seconds of ``torch.optim.Adam``'s first construction in a fresh process (it imports ``torch._dynamo``)."""
    code = "import time, torch; x = torch.zeros(1, requires_grad=True); t = time.perf_counter(); "
    code += "torch.optim.Adam([x]); print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def fold_barrier_cost(margin: float = 0.05) -> dict[str, float]:
    """Seconds of the fold barrier's value + gradient on a 3D working-grid field (96x112x96) that folds in a few
    voxels: differentiated on the whole grid, and by :func:`fold_barrier` (only where det J < margin)."""
    torch.manual_seed(0)
    u = (torch.randn(1, 3, 96, 112, 96) * 0.3).requires_grad_()  # white noise: ~0.1 % of voxels fold
    whole = lambda: torch.autograd.grad(torch.relu(margin - jacobian_determinant(u)).mean(), u)  # noqa: E731
    return {
        "folding_percent": float((jacobian_determinant(u.detach()) <= 0).float().mean() * 100),
        "whole": timed(whole, 5),
        "sparse": timed(lambda: torch.autograd.grad(fold_barrier(u, margin), u), 5),
    }


def print_fold_barrier_cost() -> None:
    r = fold_barrier_cost()
    print(f"\nfold barrier forward + backward, 96x112x96 field folding in {r['folding_percent']:.3f} % of its voxels: "
          f"whole grid {r['whole']:.3f} s, fold_barrier {r['sparse']:.3f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fold-barrier", action="store_true", help="only the fold barrier's cost (no data needed)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.fold_barrier:
        print_fold_barrier_cost()
        return
    print(
        "| preset | state grid | image grid | batch | s/update | s/rollout step "
        "| LNCC fwd+bwd, MONAI (s) | LNCC fwd+bwd, ours (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dim in (2, 3):
        r = measure(dim)
        print(
            f"| {dim}D | {r['grid']} | {r['image']} | {r['batch']} | {r['update']:.3f} | {r['rollout']:.3f} "
            f"| {r['lncc_monai']:.3f} | {r['lncc_ours']:.3f} |"
        )
    r = agent_forward_3d()
    print("\n| 3D agent forward, batch 1 | grid | PyTorch's conv dispatch (s) | oneDNN always (s) |")
    print("|---|---|---|---|")
    print(f"| planner + actor | {r['grid']} | {r['torch']:.3f} | {r['ours']:.3f} |")
    print(f"each of its {len(r['ratios'])} convolutions, PyTorch's dispatch / oneDNN: "
          f"{min(r['ratios']):.1f}x to {max(r['ratios']):.1f}x")  # fmt: skip
    r = agent_forward_2d()
    print("\n| 2D agent forward, batch 1 | grid | actor to the state grid (s) | actor one level short, upsampled (s) |")
    print("|---|---|---|---|")
    print(f"| planner + actor | {r['grid']} | {r['full']:.4f} | {r['coarse']:.4f} |")
    print(f"\ntorch.optim.Adam's first construction in a fresh process: {adam_first_construction():.2f} s")
    print_fold_barrier_cost()


if __name__ == "__main__":
    main()
