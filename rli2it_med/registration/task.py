"""Registration as an RL-I2IT task: the agent's configuration, replayed states and the auxiliary loss."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from rli2it_med.agent.buffer import ReplayBatch
from rli2it_med.agent.networks import Agent, AgentConfig
from rli2it_med.registration.data import Pair, PairDataset
from rli2it_med.registration.losses import RegistrationLoss
from rli2it_med.registration.warp import compose, warp

__all__ = ["LossConfig", "RegistrationTask", "agent_config"]


@dataclass
class LossConfig:
    """Auxiliary loss: ``-LNCC(window) + smooth_weight * smoothness(Phi_{t+1}) + kl_weight * KL(pi || N(0, I))``."""

    kernel_size: int = 9
    smooth_weight: float = 1.0
    smoothness: str = "diffusion"
    kl_weight: float = 0.0
    loss_scale: int = 1  # compute the loss on a grid this many times coarser (fields rescaled to its voxels)

    def to_dict(self) -> dict:
        return asdict(self)


def agent_config(spatial_dims: int, **overrides) -> AgentConfig:
    """Registration agent: state ``concat(F, M_t)`` (2 channels), action a ``spatial_dims``-channel field.

    3D works on a grid twice coarser (``working_scale=2``) with the field upsampled back.
    """
    base = {"spatial_dims": spatial_dims, "in_channels": 2, "action_channels": spatial_dims, "plan_dim": 64}
    if spatial_dims == 3:
        base |= {"channels": (8, 16, 32, 32), "critic_channels": (8, 16, 32, 32), "working_scale": 2}
    return AgentConfig(**(base | overrides))


class RegistrationTask:
    """Rebuilds replayed states from ``(pair index, accumulated field)`` and computes the auxiliary loss.

    Replayed state components: ``"index"`` (pair index into ``pairs``) and ``"field"`` (Phi_t, stored in half
    precision by the buffer).
    """

    def __init__(self, pairs: PairDataset, loss: LossConfig, device: torch.device | str = "cpu") -> None:
        self.pairs = pairs
        self.loss_config = loss
        self.loss = RegistrationLoss(pairs.spatial_dims, loss.kernel_size, loss.smooth_weight, loss.smoothness)
        self.device = torch.device(device)
        self._cached: tuple[ReplayBatch, Pair] | None = None

    def _pair(self, batch: ReplayBatch) -> Pair:
        """The batch's image pairs, fetched once per batch (``observations`` and ``auxiliary_loss`` both need them)."""
        if self._cached is None or self._cached[0] is not batch:
            self._cached = (batch, self.pairs.get(batch.state["index"].cpu()).to(self.device))
        return self._cached[1]

    def observations(self, batch: ReplayBatch) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self._pair(batch)
        obs = torch.cat([pair.fixed, warp(pair.moving, batch.state["field"])], dim=1)
        next_obs = torch.cat([pair.fixed, warp(pair.moving, batch.next_state["field"])], dim=1)
        return obs, next_obs

    def auxiliary_loss(self, agent: Agent, batch: ReplayBatch, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        pair = self._pair(batch)
        out = agent.planner(agent.to_working_grid(obs))
        dist = out.distribution()
        plan = dist.rsample()
        scale = self.loss_config.loss_scale
        fixed, moving, previous = pair.fixed, pair.moving, batch.state["field"]
        if scale > 1:  # images pooled, fields pooled and expressed in the coarse grid's voxels
            fixed, moving, previous = (_pool(x, scale) for x in (fixed, moving, previous))
            previous = previous / scale
        action = agent.decode(plan, out.skips, tuple(fixed.shape[2:])) / scale
        field = compose(previous, action)
        terms = self.loss(fixed, warp(moving, field), field)
        if self.loss_config.kl_weight:
            kl = 0.5 * (out.mean.pow(2) + out.logvar.exp() - 1 - out.logvar).sum(1).mean()
            terms["loss"] = terms["loss"] + self.loss_config.kl_weight * kl
            terms["kl"] = kl.detach()
        return terms


def _pool(x: torch.Tensor, scale: int) -> torch.Tensor:
    pool = (F.avg_pool2d, F.avg_pool3d)[x.ndim - 4]
    return pool(x, kernel_size=scale, stride=scale, ceil_mode=True)
