"""Seconds per training update, per rollout step, and of MONAI's LNCC, for the 2D and 3D presets.

The numbers behind the design notes in docs/benchmarks.md (why the 3D loss runs on a coarser grid, what an update
costs). Weights are untrained: cost does not depend on them.

    python bench/update_cost.py            # needs data/brain2d and data/brain3d from data_prep/brain.py
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from monai.losses import LocalNormalizedCrossCorrelationLoss  # noqa: E402

from rli2it_med.agent import SAC, Agent, EpisodeReplayBuffer  # noqa: E402
from rli2it_med.registration.data import PairDataset  # noqa: E402
from rli2it_med.registration.env import RegistrationEnv  # noqa: E402
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
    pairs = PairDataset.load(ROOT / cfg.data, "train")
    torch.manual_seed(0)
    agent = Agent(cfg.agent)
    buffer = EpisodeReplayBuffer(cfg.buffer_episodes)
    sac = SAC(agent, RegistrationTask(pairs, cfg.loss), buffer, cfg.sac)
    env = RegistrationEnv(cfg.env, pairs, cfg.env_batch)
    env.reset(seed=0)
    rollout = timed(lambda: collect(env, agent, buffer, False), 2) / (cfg.env_batch * cfg.env.max_steps)
    update = timed(lambda: sac.train(1, cfg.batch_size))
    x = torch.rand(cfg.batch_size, 1, *pairs.spatial_shape, requires_grad=True)
    y = torch.rand_like(x)
    lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=dim, kernel_size=9)
    return {
        "batch": cfg.batch_size,
        "update": update,
        "rollout": rollout,
        "lncc": timed(lambda: lncc(x, y).backward(), 2),
    }


def main() -> None:
    torch.set_num_threads(2)
    print("preset | batch | s/update | s/rollout step | LNCC fwd+bwd on the full grid (s)")
    for dim in (2, 3):
        r = measure(dim)
        print(f"{dim}D     | {r['batch']:>5} | {r['update']:>8.3f} | {r['rollout']:>14.3f} | {r['lncc']:>8.2f}")


if __name__ == "__main__":
    main()
