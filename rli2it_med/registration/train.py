"""Training and evaluation of the registration agent (used by ``rli2it train`` / ``rli2it evaluate`` and bundles).

The loop (rounds of collection and SAC updates, validation, checkpoints, resume) is
:func:`rli2it_med.agent.loop.run_training`; registration supplies its environment, the replayed state
(pair index + accumulated field) and validation: mean GM/WM Dice decides ``best.pt``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from rli2it_med.agent import SAC, Agent, AgentConfig, EpisodeReplayBuffer, Logger, SACConfig, loop
from rli2it_med.agent import distributed as ddp
from rli2it_med.agent.loop import LoopConfig, peak_memory_mb
from rli2it_med.api import Registrator, coarse_levels, kept_coarse_steps
from rli2it_med.io import save_json
from rli2it_med.registration.data import PairDataset
from rli2it_med.registration.env import EnvConfig, RegistrationEnv
from rli2it_med.registration.grid import upsample_field
from rli2it_med.registration.metrics import dice_per_label, folding_percent, hd95_per_label
from rli2it_med.registration.task import LossConfig, RegistrationTask, agent_config, upgrade_config

__all__ = ["TrainConfig", "default_config", "train", "evaluate", "peak_memory_mb", "replay_bytes"]


@dataclass
class TrainConfig(LoopConfig):
    """A registration training run (the loop's options are :class:`~rli2it_med.agent.loop.LoopConfig`'s).

    Attributes:
        data: dataset folder built by ``data_prep/brain.py``.
        pairs: ``"template"`` or ``"subject"`` pairs for training.
        grid_scale: episodes run on the images block-averaged by this factor (labels by block majority); the
            auxiliary loss and validation use the field upsampled to the image grid.
        val_pairs: validation pairs used (first N).
        coarse_steps: every training episode first runs this many steps on the pair block-averaged by
            ``2 * grid_scale`` (stored and learnt from too), and the episode proper starts from their field: the
            agent learns the coarse start that inference with as many coarse steps runs
            (:class:`~rli2it_med.api.StepwiseRegistrationNet`); validation runs them and checkpoints record them.
            A list runs a pyramid of coarse episodes, coarsest first (``[1, 2]``: 1 step at ``4 * grid_scale``,
            then 2 at ``2 * grid_scale``); every level needs at least one step.
        fine_steps: every training episode ends with this many steps on the pair block-averaged by
            ``grid_scale // 2`` (the images' own grid for ``grid_scale`` 2), from the episode's field upsampled;
            stored and learnt from too, run by validation and recorded by checkpoints. Needs an even ``grid_scale``.
    """

    PARTS: ClassVar[dict[str, type]] = {"agent": AgentConfig, "env": EnvConfig, "sac": SACConfig, "loss": LossConfig}

    data: str = "data/brain2d"
    out: str = "runs/brain2d"
    pairs: str = "template"
    grid_scale: int = 1
    val_pairs: int = 20
    coarse_steps: int | list[int] = 0
    fine_steps: int = 0
    agent: AgentConfig = field(default_factory=AgentConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return super().from_dict(upgrade_config(d))


def default_config(spatial_dims: int, **overrides: Any) -> TrainConfig:
    """The defaults used for the shipped 2D (128x128) and 3D (96x112x96, 2 mm) brain models."""
    if spatial_dims == 2:
        cfg = TrainConfig(
            data="data/brain2d",
            out="runs/brain2d",
            batch_size=8,
            eval_every=100,
            val_pairs=40,
            sac=SACConfig(lr_aux=5e-4, lr_planner=5e-4),
            agent=agent_config(2, action_bound=2.0),
            env=EnvConfig(max_steps=8, max_step=2.0),
            loss=LossConfig(kernel_size=9, smooth_weight=0.5),
        )
    else:
        cfg = TrainConfig(
            data="data/brain3d",
            out="runs/brain3d",
            grid_scale=2,
            env_batch=2,
            updates_per_round=6,
            batch_size=2,
            buffer_episodes=48,
            eval_every=200,
            val_pairs=4,
            sac=SACConfig(lr_aux=5e-4, lr_planner=5e-4),
            agent=agent_config(3, action_bound=2.0),
            env=EnvConfig(max_steps=6, max_step=2.0),
            loss=LossConfig(kernel_size=9, smooth_weight=0.5),
        )
    return cfg.updated(**overrides)


def model_config(cfg: TrainConfig) -> dict:
    return {
        "agent": cfg.agent.to_dict(),
        "env": asdict(cfg.env),
        "loss": cfg.loss.to_dict(),
        "grid_scale": cfg.grid_scale,
        "task": "registration",
    }


def _components(info: dict) -> dict[str, torch.Tensor]:
    return {"field": info["field"]}  # replayed states: the pair index (added by the loop) and Phi_t


def collect(
    env: RegistrationEnv,
    agent: Agent,
    buffer: EpisodeReplayBuffer,
    random_plans: bool,
    coarse_envs: Sequence[RegistrationEnv] = (),
    fine_env: RegistrationEnv | None = None,
) -> dict[str, float]:
    """Run one batch of registration episodes and store them; return the mean initial and final Dice.

    With ``coarse_envs`` (the same pairs on grids 2**n, ..., 4, 2 times coarser, coarsest first, episodes of each
    level's coarse steps), each episode first runs there, each level starting from the last field of the one before,
    upsampled; the last field of the last, upsampled, starts the episode of ``env``. With ``fine_env`` (the grid twice
    finer, episodes of the fine steps' length), the last field of ``env``, upsampled, starts an episode there. All
    are stored; the initial Dice reported is the first grid's, the final Dice the last grid's.
    """
    if not coarse_envs and fine_env is None:
        return loop.collect(env, agent, buffer, random_plans, _components, "dice")
    indices = env._rng.integers(0, len(env.pairs), size=env.batch_size)
    stages = [*coarse_envs, env, *([fine_env] if fine_env is not None else [])]
    stats = []
    for previous, stage in zip([None, *stages], stages):
        options = {"indices": indices}
        if previous is not None:  # start from the previous grid's last field
            options["field"] = upsample_field(previous.field, 2, stage.pairs.spatial_shape)
        stats.append(loop.collect(stage, agent, buffer, random_plans, _components, "dice", options))
    total = sum(s["return"] for s in stats)
    return {"dice_initial": stats[0]["dice_initial"], "dice_final": stats[-1]["dice_final"], "return": total}


def evaluate(
    registrator: Registrator,
    pairs: PairDataset,
    steps: int | None = None,
    limit: int | None = None,
    batch_size: int = 1,
    hd95: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Register pairs and score them.

    Returns:
        dict with per-pair arrays ``dice`` (P, L) per label, ``hd95`` (P, L), ``folding`` (P,), ``seconds`` (P,),
        ``dice_initial`` (P, L), ``dice_steps`` (P, T+1) mean Dice after each step, and ``labels``.
    """
    n = len(pairs) if limit is None else min(limit, len(pairs))
    labels = pairs.label_values
    out: dict[str, list] = {k: [] for k in ("dice", "dice_initial", "hd95", "folding", "seconds", "dice_steps")}
    for start in tqdm(range(0, n, batch_size), disable=not progress, desc="evaluate", unit="batch"):
        idx = list(range(start, min(start + batch_size, n)))
        pair = pairs.get(idx)
        res = registrator.register(pair.fixed, pair.moving, steps, pair.fixed_seg, pair.moving_seg)
        warped_seg = res.warped_seg.cpu()
        out["dice"].append(dice_per_label(warped_seg, pair.fixed_seg, labels).numpy())
        out["dice_initial"].append(dice_per_label(pair.moving_seg, pair.fixed_seg, labels).numpy())
        if hd95:
            out["hd95"].append(hd95_per_label(warped_seg, pair.fixed_seg, labels, pairs.spacing).cpu().numpy())
        out["folding"].append(folding_percent(res.field.cpu()).numpy())
        out["seconds"].append(np.full(len(idx), res.seconds / len(idx)))
        out["dice_steps"].append(torch.stack([d.cpu() for d in res.dice], 1).numpy())
    result = {k: np.concatenate(v) for k, v in out.items() if v}
    result["labels"] = labels
    return result


def summarize(metrics: dict[str, Any], label_names: dict[str, str] | None = None) -> dict[str, float]:
    """Means over pairs: Dice per label and overall, HD95, folding, seconds per pair."""
    names = label_names or {}
    s: dict[str, float] = {}
    for i, lab in enumerate(metrics["labels"]):
        name = names.get(str(lab), str(lab))
        s[f"dice_{name}"] = float(np.nanmean(metrics["dice"][:, i]))
    s["dice_mean"] = float(np.nanmean(metrics["dice"]))
    s["dice_initial_mean"] = float(np.nanmean(metrics["dice_initial"]))
    if "hd95" in metrics:
        s["hd95_mean"] = float(np.nanmean(metrics["hd95"]))
    s["folding_percent"] = float(np.mean(metrics["folding"]))
    s["seconds_per_pair"] = float(np.mean(metrics["seconds"]))
    return s


def gm_wm_dice(metrics: dict[str, Any]) -> float:
    """Mean Dice over GM (2) and WM (3): the headline number of the brain benchmarks."""
    cols = [i for i, lab in enumerate(metrics["labels"]) if lab in (2, 3)]
    return float(np.nanmean(metrics["dice"][:, cols])) if cols else float(np.nanmean(metrics["dice"]))


def replay_bytes(cfg: TrainConfig, shape: tuple[int, ...]) -> int:
    """Bytes of the replay buffer of a run on images of ``shape`` once it is full: every episode's T+1 states, the
    accumulated field on the episode grid in half precision (plans, rewards and indices are negligible), and as many
    coarse-step episodes on each coarser grid and fine-step episodes on the finer grid when the run has them."""
    nd = len(shape)

    def episodes(steps: int, scale: int) -> int:
        return cfg.buffer_episodes * (steps + 1) * nd * (math.prod(shape) // scale**nd) * 2

    levels = coarse_levels(cfg.coarse_steps)
    coarse = sum(episodes(k, 2 ** (len(levels) - i) * cfg.grid_scale) for i, k in enumerate(levels) if k)
    fine = episodes(cfg.fine_steps, cfg.grid_scale // 2) if cfg.fine_steps else 0
    return episodes(cfg.env.max_steps, cfg.grid_scale) + coarse + fine


def _check_memory(cfg: TrainConfig, shape: tuple[int, ...], device: torch.device) -> None:
    """Refuse a run whose replay buffer and activations cannot fit (see :mod:`rli2it_med.memory`)."""
    from rli2it_med import memory

    voxels = math.prod(shape)
    buffer = replay_bytes(cfg, shape)
    need = memory.training_bytes(len(shape), voxels, cfg.batch_size, cfg.env_batch, buffer, device.type == "cuda")
    what = (
        f"training on {'x'.join(map(str, shape))} images (replay buffer {buffer / 2**30:.2f} GB: "
        f"{cfg.buffer_episodes} episodes of {cfg.env.max_steps} steps; batch {cfg.batch_size}, {cfg.env_batch} "
        "episodes per round)"
    )
    memory.check_fits(need, what)


def train(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    train_pairs: PairDataset | None = None,
    val_pairs: PairDataset | None = None,
) -> dict[str, Any]:
    """Train (or resume) a registration agent; return the last validation summary and run statistics.

    Pairs default to the ``cfg.data`` splits (``train`` with ``cfg.pairs``, ``val`` template pairs). Under
    ``torchrun`` (an initialised process group) every process collects episodes on its share of the training pairs
    into its own buffer, gradients are averaged over processes at every step, and process 0 alone validates and
    writes checkpoints and logs; the batch sizes are per process.
    """
    rank, world, device = loop.start_process(cfg)
    out = Path(cfg.out)
    train_pairs = train_pairs if train_pairs is not None else PairDataset.load(cfg.data, "train", cfg.pairs)
    val_pairs = val_pairs if val_pairs is not None else PairDataset.load(cfg.data, "val", "template")
    levels = coarse_levels(cfg.coarse_steps)
    if min(levels) < 0 or cfg.fine_steps < 0:
        raise ValueError(f"coarse_steps and fine_steps must be >= 0, got {cfg.coarse_steps}, {cfg.fine_steps}")
    if len(levels) > 1 and min(levels) == 0:
        raise ValueError(f"coarse_steps {cfg.coarse_steps}: every level of a training pyramid needs a step")
    levels = tuple(k for k in levels if k)
    if cfg.fine_steps and cfg.grid_scale % 2:
        raise ValueError(f"fine_steps need an even grid_scale (a grid twice finer), got grid_scale {cfg.grid_scale}")
    if train_pairs.spatial_dims != cfg.agent.spatial_dims:
        raise ValueError(f"{cfg.data}: data are {train_pairs.spatial_dims}D but the agent is {cfg.agent.spatial_dims}D")
    train_pairs = train_pairs.shard(rank, world)
    _check_memory(cfg, train_pairs.spatial_shape, device)
    agent = Agent(cfg.agent).to(device)
    ddp.broadcast_module(agent)
    writer = rank == 0
    logger = Logger(out if writer else None)
    stages = 1 + len(levels) + (cfg.fine_steps > 0)
    buffer = EpisodeReplayBuffer(cfg.buffer_episodes * stages)  # + the coarse and fine episodes
    task = RegistrationTask(train_pairs, cfg.loss, device, cfg.grid_scale, coarse=len(levels), fine=cfg.fine_steps > 0)
    sac = SAC(agent, task, buffer, cfg.sac, logger, grad_reduce=ddp.average_gradients)
    env = RegistrationEnv(cfg.env, task.pairs, cfg.env_batch, device)
    env.reset(seed=cfg.seed + rank)
    coarse_envs = [  # coarsest first; task.coarse_pairs is finest first
        RegistrationEnv(replace(cfg.env, max_steps=k), pairs, cfg.env_batch, device)
        for k, pairs in zip(levels, reversed(task.coarse_pairs))
    ]
    fine_env = None
    if cfg.fine_steps:
        fine_env = RegistrationEnv(replace(cfg.env, max_steps=cfg.fine_steps), task.fine_pairs, cfg.env_batch, device)
    if writer:
        save_json(out / "config.json", cfg.to_dict())

    def validate() -> dict[str, float]:  # "steps" (and coarse/fine steps): the checkpoint's inference defaults
        reg = Registrator(agent, cfg.env, device, cfg.grid_scale)
        reg.net.coarse_steps, reg.net.fine_steps = cfg.coarse_steps, cfg.fine_steps
        metrics = evaluate(reg, val_pairs, limit=cfg.val_pairs, batch_size=cfg.env_batch, hd95=False)
        if cfg.fine_steps:  # the whole episode then, fine steps included (the best step count is evaluate's choice)
            steps = cfg.env.max_steps
        else:
            steps = loop.best_step(metrics["dice_steps"].mean(0))
        extra = {"coarse_steps": kept_coarse_steps(levels, list), "fine_steps": cfg.fine_steps}
        extra = {k: v for k, v in extra.items() if v}
        return summarize(metrics) | {"dice_gm_wm": gm_wm_dice(metrics), "steps": steps} | extra

    def collect_round(random_plans: bool) -> dict[str, float]:
        return collect(env, agent, buffer, random_plans, coarse_envs, fine_env)

    return loop.run_training(
        cfg, agent, sac, env, buffer, _components, validate, model_config(cfg), "dice_gm_wm", "dice", logger, resume,
        progress, collect_round=collect_round,
    )  # fmt: skip
