"""The training loop every task shares: rounds of episode collection and SAC updates under a budget.

Each round collects a batch of episodes with the stochastic policy (random plans during bootstrap) into the compact
episode buffer, then runs SAC + auxiliary updates with learning rates on a cosine from 1 to ``lr_floor`` over the
budget: ``minutes`` of wall clock, or, with ``minutes=None``, ``max_updates`` gradient steps. Every ``eval_every``
updates the task validates: ``model.pt`` is the latest weights, ``best.pt`` those of the best validation score, and
``train_state.pt`` holds what ``resume`` needs to go on exactly where the run was: weights, optimisers, temperature,
counters, elapsed time, every process's replay buffer and random-number states. A run whose budget is a number of
updates (``minutes=None``) is reproducible: killed at any point and resumed, it ends with the same weights as an
uninterrupted run with the same seed (on CPU; same number of processes). Under ``torchrun`` process 0 decides when to
stop, alone validates and writes, and the others wait at a barrier.

A task supplies an environment, how to store a state compactly (``components``) and ``validate`` (a summary dict).
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from rli2it_med.agent import distributed as ddp
from rli2it_med.agent.buffer import EpisodeReplayBuffer
from rli2it_med.agent.checkpoint import load_checkpoint, save_checkpoint, training_minutes
from rli2it_med.agent.logger import Logger
from rli2it_med.agent.networks import Agent, count_parameters
from rli2it_med.agent.sac import SAC

__all__ = ["LoopConfig", "collect", "draw_pairs", "initialise", "peak_memory_mb", "run_training", "start_process"]


@dataclass
class LoopConfig:
    """What every task's training configuration holds for the loop; tasks subclass it with their data, agent,
    environment, SAC and loss parts (listed in ``PARTS`` for :meth:`from_dict`). Saved next to the weights.

    Attributes:
        out: run folder (``model.pt``, ``best.pt``, ``train_state.pt``, ``progress.csv``, ``config.json``).
        seed: seeds the networks, the replay sampler and the environment.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:1"``...
        minutes: wall-clock budget of the run (resumed time counts); None: the budget is ``max_updates`` alone and
            the learning-rate schedule follows the updates, which makes the run reproducible.
        max_updates: stop after this many gradient steps (None: the time budget alone).
        env_batch: episodes collected per round.
        updates_per_round: gradient steps after each round.
        batch_size: replayed transitions per gradient step.
        bootstrap_rounds: rounds with random plans before learning starts.
        buffer_episodes: replay capacity, in episodes.
        eval_every: gradient steps between validations/checkpoints.
        lr_floor: learning rates follow a cosine from 1 to ``lr_floor`` times their base over the time budget.
        init: a checkpoint (``model.pt`` / ``best.pt`` of a run of the same architecture) whose weights start a new
            run instead of random ones: fine-tuning, e.g. with other data or coarse steps; optimisers, temperature,
            replay buffer, counters, the budget and a task's own state (an image task's discriminator) start afresh.
            Ignored when resuming.
    """

    PARTS: ClassVar[dict[str, type]] = {}

    out: str = "runs/train"
    seed: int = 0
    device: str = "auto"
    minutes: float | None = 10.0
    max_updates: int | None = None
    env_batch: int = 8
    updates_per_round: int = 8
    batch_size: int = 16
    bootstrap_rounds: int = 2
    buffer_episodes: int = 512
    eval_every: int = 200
    lr_floor: float = 0.05
    init: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LoopConfig:
        return cls(**{k: (cls.PARTS[k](**v) if k in cls.PARTS else v) for k, v in d.items()})

    def updated(self, **overrides: Any) -> LoopConfig:
        """Set fields by name (the error lists the valid ones); returns ``self``."""
        names = {f.name for f in fields(self)}
        for k, v in overrides.items():
            if k not in names:
                raise ValueError(f"unknown training option {k!r}; valid: {sorted(names)}")
            setattr(self, k, v)
        return self


def draw_pairs(
    pairs: Any, options: dict | None, rng: np.random.Generator, batch_size: int, kind: str
) -> tuple[Any, torch.Tensor | None]:
    """What an environment's ``reset`` works on: ``options["pair"]`` as given, or the items of ``pairs`` (anything
    with ``len`` and ``get(indices)``) at ``options["indices"]``, or ``batch_size`` random ones drawn with ``rng``.

    Returns:
        ``(pair batch, indices)``; indices are None for a given pair.
    """
    options = options or {}
    if "pair" in options:
        return options["pair"], None
    if pairs is None:
        raise ValueError(f"reset() needs options={{'pair': {kind}(...)}} when the environment has no pairs")
    indices = options.get("indices")
    if indices is None:
        indices = rng.integers(0, len(pairs), size=batch_size)
    indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    return pairs.get(indices), indices


def start_process(cfg: Any) -> tuple[int, int, torch.device]:
    """This process's ``(rank, world size, device)`` (one process, or one of ``torchrun``'s) for a run configuration
    with ``out``, ``seed`` and ``device`` (a :class:`LoopConfig`, or the video GRUs'); creates the run folder and
    seeds torch with ``cfg.seed + rank``. Tasks then give each process its share of the training data
    (``[rank::world]``), build the SAC with ``grad_reduce=ddp.average_gradients`` and let process 0 alone write."""
    rank, world = ddp.rank(), ddp.world_size()
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + rank)
    return rank, world, ddp.local_device(cfg.device)


def best_step(scores: Any) -> int:
    """The step t >= 1 with the highest score, given the scores after steps t = 0..T (the first of equals): a trained
    model's default number of steps, chosen on validation data like an iterative method's stopping time."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1 or len(scores) < 2:
        raise ValueError(f"need the scores after steps t = 0..T (T >= 1), got an array of shape {scores.shape}")
    return int(np.argmax(scores[1:])) + 1


def peak_memory_mb() -> float:
    """Peak resident memory of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def collect(
    env: Any,
    agent: Agent,
    buffer: EpisodeReplayBuffer,
    random_plans: bool,
    components: Callable[[dict], dict[str, torch.Tensor]],
    score: str,
    options: dict | None = None,
) -> dict[str, float]:
    """Run one batch of episodes of ``env`` (reset/step) and store them.

    Args:
        components: the compact state components of an ``info`` dict (e.g. ``{"field": info["field"]}``); the pair
            ``"index"`` of the episode is added.
        score: the ``info`` entry whose mean is reported before and after (``"dice"``, ``"psnr"``).
        options: passed to ``env.reset`` (e.g. the pairs and the initial state).

    Returns:
        the mean ``score`` at the start and the end, and the mean return.
    """
    obs, info = env.reset(options=options)
    states, plans, rewards, dones = [components(info)], [], [], []
    initial = info[score].mean().item()
    for _ in range(env.config.max_steps):
        out = agent.planner(obs)
        plan = torch.randn_like(out.mean) if random_plans else out.distribution().sample()
        obs, reward, terminated, _, info = env.step(agent.actor(plan, out.skips))
        states.append(components(info))
        plans.append(plan)
        rewards.append(reward)
        dones.append(terminated.float())
    steps = len(rewards)
    stacked = {k: torch.stack([s[k] for s in states]) for k in states[0]}
    stacked["index"] = info["indices"].view(1, -1).expand(steps + 1, -1)
    buffer.add(stacked, torch.stack(plans), torch.stack(rewards), torch.stack(dones))
    return {
        f"{score}_initial": initial,
        f"{score}_final": info[score].mean().item(),
        "return": torch.stack(rewards).sum(0).mean().item(),
    }


def run_training(
    cfg: LoopConfig,
    agent: Agent,
    sac: SAC,
    env: Any,
    buffer: EpisodeReplayBuffer,
    components: Callable[[dict], dict[str, torch.Tensor]],
    validate: Callable[[], dict[str, float]],
    model_config: dict,
    score: str,
    info_score: str,
    logger: Logger,
    resume: bool = False,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    collect_round: Callable[[bool], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Train ``agent`` until the budget or ``max_updates``; return the last validation summary and run statistics.

    Args:
        env: the task's batched environment; its ``config.max_steps`` is the episode length and ``_rng`` its sampler.
        components: compact state components of an ``info`` dict (see :func:`collect`).
        validate: process 0's validation; its summary's ``score`` entry picks ``best.pt``.
        model_config: what checkpoints record to rebuild the model.
        score: the validation summary's entry that ranks checkpoints (``best.pt``).
        info_score: the environment's ``info`` entry reported before and after each collection round.
        extra: more entries for ``model.pt`` and ``best.pt`` (e.g. a style model's style image).
        collect_round: collects a round's episodes into ``buffer`` given whether plans are random (bootstrap) and
            returns what to log; default :func:`collect` on ``env``. Its pair draws must come from ``env._rng``
            (saved for resume).
    """
    rank, world = ddp.rank(), ddp.world_size()
    writer = rank == 0
    out = Path(cfg.out)
    device = next(agent.parameters()).device
    if cfg.minutes is None and cfg.max_updates is None:
        raise ValueError("training needs a budget: minutes, max_updates or both")
    if cfg.max_updates is not None and cfg.max_updates < 0:
        raise ValueError(f"max_updates must be >= 0 (0: validate and save the initial weights), got {cfg.max_updates}")
    generator = torch.Generator().manual_seed(cfg.seed + rank)
    state = {"elapsed": 0.0, "rounds": 0, "best": -math.inf, "minutes_before": 0.0}
    if resume and (out / "train_state.pt").is_file():
        ts = torch.load(out / "train_state.pt", map_location="cpu", weights_only=False)
        weights = ts["agent"] if "agent" in ts else load_checkpoint(out / "model.pt", device)["state_dict"]  # pre-0.1
        agent.load_state_dict(weights)
        sac.load_state_dict(ts["sac"])
        state.update(ts["state"])
        env._rng = np.random.default_rng(ts["env_seed"] + rank)
        processes = ts.get("processes", [])
        if len(processes) == world:
            _restore_process(processes[rank], buffer, generator, device)
        elif writer:
            print(
                f"{out}: saved by {len(processes) or 'an earlier version with an unknown number of'} processes, resumed"
                f" by {world}: replay buffers are refilled and random streams start afresh (not an exact resume)"
            )
        if writer:
            print(f"resumed from {out} at update {sac.n_updates}, {state['elapsed'] / 60:.1f} min done")
    elif cfg.init:
        state["minutes_before"] = initialise(agent, cfg.init)
        if writer:
            print(f"weights from {cfg.init}")

    budget = math.inf if cfg.minutes is None else cfg.minutes * 60
    start = time.perf_counter() - state["elapsed"]
    next_eval = (sac.n_updates // cfg.eval_every + 1) * cfg.eval_every
    summary: dict[str, Any] = {}
    quiet = not (progress and writer)
    by_updates = cfg.minutes is None
    bar = tqdm(
        total=cfg.max_updates if by_updates else int(budget),
        initial=sac.n_updates if by_updates else int(state["elapsed"]),
        unit="update" if by_updates else "s",
        disable=quiet,
        desc="train",
    )

    def elapsed() -> float:
        return time.perf_counter() - start

    def checkpoint() -> None:
        nonlocal summary
        state["elapsed"] = elapsed()
        state["checkpointed_at"] = sac.n_updates
        # the random streams go on from here whatever validation draws; every process reseeds its episodes alike
        (env_seed,) = ddp.broadcast_values([float(env._rng.integers(2**31))])
        env_seed = int(env_seed)
        env._rng = np.random.default_rng(env_seed + rank)
        processes = ddp.gather_to_first(_process_state(buffer, generator, device))
        if not writer:
            ddp.barrier()
            return
        rng = torch.get_rng_state()
        summary = validate()
        torch.set_rng_state(rng)
        agent.train()
        for k, v in summary.items():
            if not isinstance(v, (list, tuple)):  # settings a validation reports per level (coarse steps) stay out
                logger.record(f"val/{k}", v)
        logger.record("time/elapsed_min", state["elapsed"] / 60)
        logger.record("time/peak_rss_mb", peak_memory_mb())
        logger.record("train/lr_aux", sac.aux_optimizer.param_groups[0]["lr"])
        logger.record("buffer/megabytes", buffer.nbytes / 2**20)
        row = logger.dump(sac.n_updates)
        minutes = state["elapsed"] / 60
        entries = (extra or {}) | {
            "train_minutes": minutes,
            "train_minutes_total": state["minutes_before"] + minutes,  # with the runs its weights came from
            "updates": sac.n_updates,
            "val": summary,
        }
        save_checkpoint(out / "model.pt", model_config, agent.state_dict(), **entries)
        if summary[score] > state["best"]:
            state["best"] = summary[score]
            save_checkpoint(out / "best.pt", model_config, agent.state_dict(), **entries)
        payload = {
            "agent": agent.state_dict(),  # the weights of this very update: the file alone is a consistent resume
            "sac": sac.state_dict(),
            "state": state,
            "env_seed": env_seed,
            "processes": processes,  # by rank: replay buffer and random-number states
        }
        torch.save(payload, out / "train_state.pt.tmp")
        Path(out / "train_state.pt.tmp").replace(out / "train_state.pt")
        bar.set_postfix({f"val_{score}": f"{summary[score]:.3f}", "critic": f"{row.get('train/critic_loss', 0):.3g}"})
        ddp.barrier()

    def keep_going() -> tuple[bool, float]:
        """Process 0 decides, so every process stops after the same update at the same learning rate."""
        go = elapsed() < budget and (cfg.max_updates is None or sac.n_updates < cfg.max_updates)
        fraction = sac.n_updates / max(cfg.max_updates, 1) if by_updates else elapsed() / budget
        go_all, fraction = ddp.broadcast_values([float(go), min(1.0, fraction)])
        return bool(go_all), fraction

    agent.train()
    while True:
        go, progress_fraction = keep_going()
        if not go:
            break
        random_plans = state["rounds"] < cfg.bootstrap_rounds
        if collect_round is None:
            stats = collect(env, agent, buffer, random_plans, components, info_score)
        else:
            stats = collect_round(random_plans)
        for k, v in stats.items():
            logger.record(f"rollout/{k}", v)
        state["rounds"] += 1
        if state["rounds"] > cfg.bootstrap_rounds:
            sac.set_lr_scale(cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * progress_fraction)))
            sac.train(cfg.updates_per_round, cfg.batch_size, generator)
        bar.update((sac.n_updates if by_updates else int(elapsed())) - bar.n)
        if sac.n_updates >= next_eval:
            checkpoint()
            next_eval += cfg.eval_every
    if state.get("checkpointed_at") != sac.n_updates:
        checkpoint()
    bar.close()
    return {
        "val": summary,
        "updates": sac.n_updates,
        "minutes": state["elapsed"] / 60,
        "peak_rss_mb": peak_memory_mb(),
        "parameters": count_parameters(agent.planner) + count_parameters(agent.actor),
        "buffer_mb": buffer.nbytes / 2**20,
    }


def initialise(agent: Agent, path: str | Path) -> float:
    """Load the weights of checkpoint ``path`` into ``agent`` (planner, actor, critic and target critic); the
    error names the file and what differs when its architecture is not the agent's. Returns the minutes of training
    behind those weights (:func:`~rli2it_med.agent.checkpoint.training_minutes`)."""
    payload = load_checkpoint(path, next(agent.parameters()).device)
    saved = payload.get("config", {}).get("agent")
    if saved is None:
        raise ValueError(f"{path}: the checkpoint records no agent configuration")
    diff = agent.config.differences(type(agent.config)(**saved))
    if diff:
        differ = ", ".join(f"{k}={theirs!r} (run: {ours!r})" for k, (ours, theirs) in diff.items())
        raise ValueError(f"{path}: its agent differs from this run's: {differ}")
    agent.load_state_dict(payload["state_dict"])
    return training_minutes(payload)


def _process_state(buffer: EpisodeReplayBuffer, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """What one process needs to go on exactly: its replay buffer and its random-number states."""
    return {
        "buffer": buffer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def _restore_process(saved: dict[str, Any], buffer: EpisodeReplayBuffer, generator: torch.Generator, device) -> None:
    buffer.load_state_dict(saved["buffer"])
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
