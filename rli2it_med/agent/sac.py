"""Soft actor-critic on plans, with the task's auxiliary loss (SPEC section 2).

One :meth:`SAC.train` gradient step:

1. critic: ``y = r + gamma (1 - d) (min Q_target(s', p') - alpha log pi(p'|s'))``, ``p' ~ pi(.|s')``;
   MSE of both heads to ``y``.
2. every ``policy_delay`` steps, planner: ``mean(alpha log pi(p|s) - min Q(s, p))`` with ``p = rsample()`` so the
   Q gradient reaches the planner, plus ``kl_weight * KL(pi || N(0, I))``; then the temperature:
   ``-log_alpha * (log pi + target_entropy)``.
3. auxiliary: the task's loss on a fresh forward pass of the replayed states, one optimiser step on planner + actor.
4. Polyak update of the target critic by ``tau``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from rli2it_med.agent.buffer import EpisodeReplayBuffer, ReplayBatch
from rli2it_med.agent.logger import Logger
from rli2it_med.agent.networks import Agent

__all__ = ["SACConfig", "AuxiliaryTask", "SAC", "polyak_update"]


@dataclass
class SACConfig:
    """Hyper-parameters of :class:`SAC` (public defaults; tune freely)."""

    gamma: float = 0.99
    tau: float = 0.005
    lr_critic: float = 3e-4
    lr_planner: float = 1e-4
    lr_alpha: float = 3e-4
    lr_aux: float = 1e-4
    init_alpha: float = 0.01
    target_entropy: float | None = None  # default: -plan_dim
    policy_delay: int = 2
    kl_weight: float = 0.01
    grad_clip: float = 10.0

    def to_dict(self) -> dict:
        return asdict(self)


class AuxiliaryTask(Protocol):
    """What a task supplies to :class:`SAC`: observations from compact replayed states, and its auxiliary loss."""

    def observations(self, batch: ReplayBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-grid ``(s, s')`` rebuilt from ``batch.state`` and ``batch.next_state``."""
        ...

    def auxiliary_loss(self, agent: Agent, batch: ReplayBatch, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """A dict with a differentiable ``"loss"`` (and detached extras to log)."""
        ...


@torch.no_grad()
def polyak_update(params: nn.Module, target: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) target + tau params``."""
    for p, tp in zip(params.parameters(), target.parameters()):
        tp.lerp_(p, tau)


def _kl_to_standard_normal(dist: Independent) -> torch.Tensor:
    base = dist.base_dist
    prior = Independent(Normal(torch.zeros_like(base.loc), torch.ones_like(base.scale)), 1)
    return kl_divergence(dist, prior)


class SAC:
    """The algorithm: owns the optimisers and the replay buffer; logs only through ``logger``.

    Args:
        agent: planner, actor and twin critic.
        task: rebuilds observations and computes the auxiliary loss.
        buffer: replay buffer the caller fills with episodes.
        config: hyper-parameters.
        logger: where losses go.
        grad_reduce: called with each optimiser's parameters after ``backward()`` and before clipping and the
            step; data-parallel training averages the gradients over processes there
            (:func:`rli2it_med.agent.distributed.average_gradients`).
    """

    def __init__(
        self,
        agent: Agent,
        task: AuxiliaryTask,
        buffer: EpisodeReplayBuffer,
        config: SACConfig | None = None,
        logger: Logger | None = None,
        grad_reduce: Callable[[list[torch.Tensor]], None] | None = None,
    ) -> None:
        self.agent, self.task, self.buffer = agent, task, buffer
        self.grad_reduce = grad_reduce
        self.config = config or SACConfig()
        self.logger = logger or Logger()
        cfg = self.config
        device = next(agent.parameters()).device
        self.log_alpha = torch.tensor(float(torch.log(torch.tensor(cfg.init_alpha))), device=device, requires_grad=True)
        plan_dim = agent.config.plan_dim
        self.target_entropy = float(-plan_dim if cfg.target_entropy is None else cfg.target_entropy)
        self.critic_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=cfg.lr_critic)
        self.planner_optimizer = torch.optim.Adam(agent.planner.parameters(), lr=cfg.lr_planner)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.lr_alpha)
        aux_params = list(agent.planner.parameters()) + list(agent.actor.parameters())
        self.aux_optimizer = torch.optim.Adam(aux_params, lr=cfg.lr_aux)
        self.n_updates = 0

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def critic_loss(self, obs: torch.Tensor, next_obs: torch.Tensor, batch: ReplayBatch) -> torch.Tensor:
        """MSE of both Q heads to the soft Bellman target."""
        agent, cfg = self.agent, self.config
        with torch.no_grad():
            dist = agent.planner(next_obs).distribution()
            next_plan = dist.sample()
            next_q = torch.min(*agent.critic_target(next_obs, next_plan)) - self.alpha * dist.log_prob(next_plan)
            target = batch.reward + cfg.gamma * (1.0 - batch.done) * next_q
        q1, q2 = agent.critic(obs, batch.plan)
        return nn.functional.mse_loss(q1, target) + nn.functional.mse_loss(q2, target)

    def policy_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Planner loss (gradient through ``rsample()`` and Q) and the log-probabilities, for the temperature."""
        agent = self.agent
        dist = agent.planner(obs).distribution()
        plan = dist.rsample()
        log_prob = dist.log_prob(plan)
        agent.critic.requires_grad_(False)
        try:
            q = torch.min(*agent.critic(obs, plan))
        finally:
            agent.critic.requires_grad_(True)
        loss = (self.alpha * log_prob - q).mean() + self.config.kl_weight * _kl_to_standard_normal(dist).mean()
        return loss, log_prob.detach()

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.grad_reduce is not None:
            self.grad_reduce(params)
        nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        optimizer.step()

    def train(self, gradient_steps: int, batch_size: int, generator: torch.Generator | None = None) -> None:
        """Run ``gradient_steps`` updates on batches of ``batch_size`` replayed transitions."""
        agent, cfg = self.agent, self.config
        device = self.log_alpha.device
        for _ in range(gradient_steps):
            batch = self.buffer.sample(batch_size, generator=generator, device=device)
            obs, next_obs = self.task.observations(batch)

            critic_loss = self.critic_loss(obs, next_obs, batch)
            self._step(self.critic_optimizer, critic_loss)
            self.logger.record("train/critic_loss", critic_loss.item())

            if self.n_updates % cfg.policy_delay == 0:
                policy_loss, log_prob = self.policy_loss(obs)
                self._step(self.planner_optimizer, policy_loss)
                alpha_loss = -(self.log_alpha * (log_prob + self.target_entropy)).mean()
                self._step(self.alpha_optimizer, alpha_loss)
                self.logger.record("train/policy_loss", policy_loss.item())
                self.logger.record("train/alpha", self.alpha.item())
                self.logger.record("train/entropy", -log_prob.mean().item())

            aux = self.task.auxiliary_loss(agent, batch, obs)
            self._step(self.aux_optimizer, aux["loss"])
            for k, v in aux.items():
                self.logger.record(f"train/aux_{k}", v.item() if k != "loss" else v.detach().item())

            polyak_update(agent.critic, agent.critic_target, cfg.tau)
            self.n_updates += 1

    def set_lr_scale(self, scale: float) -> None:
        """Set every optimiser's learning rate to ``scale`` times its configured value (for schedules)."""
        cfg = self.config
        for opt, base in (
            (self.critic_optimizer, cfg.lr_critic),
            (self.planner_optimizer, cfg.lr_planner),
            (self.alpha_optimizer, cfg.lr_alpha),
            (self.aux_optimizer, cfg.lr_aux),
        ):
            for group in opt.param_groups:
                group["lr"] = base * scale

    def state_dict(self) -> dict:
        return {
            "log_alpha": self.log_alpha.detach().cpu(),
            "n_updates": self.n_updates,
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "planner_optimizer": self.planner_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict(),
        } | ({"task": self.task.state_dict()} if hasattr(self.task, "state_dict") else {})

    def load_state_dict(self, state: dict) -> None:
        """Restore counters, temperature and optimisers, and the task's own state (e.g. a discriminator) when it has
        one."""
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.n_updates = int(state["n_updates"])
        for name in ("critic_optimizer", "planner_optimizer", "alpha_optimizer", "aux_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        if "task" in state and hasattr(self.task, "load_state_dict"):
            self.task.load_state_dict(state["task"])
