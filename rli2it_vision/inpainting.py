"""Face inpainting as an RL-I2IT task (SPEC section 4): networks, replayed states and the auxiliary loss.

The environment is :class:`rli2it_vision.editing.ImageEditEnv` with a centre hole. The agent's nets are
context-encoder-like: 4x4 stride-2 convs, a 256-d plan, an actor decoding the full image with the planner's skips
(only the hole is pasted). The auxiliary loss is an L1 loss on the hole, whose pixels near the hole's border weigh
more during the first updates, plus ``adv_weight`` times the hinge adversarial loss of a spectrally normalised
(SNGAN) discriminator, which the task trains (one step per auxiliary step) on the composited images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from rli2it_med.agent.buffer import ReplayBatch
from rli2it_med.agent.networks import Agent, AgentConfig
from rli2it_vision.editing import centre_hole

__all__ = ["InpaintLossConfig", "Discriminator", "InpaintingTask", "agent_config", "border_weights"]


def agent_config(image_channels: int = 1, **overrides) -> AgentConfig:
    """Planner/actor/critic for inpainting ``image_channels``-channel images: 4x4 stride-2 convs, plan of 256."""
    base = dict(
        spatial_dims=2,
        in_channels=image_channels,
        action_channels=image_channels,
        plan_dim=256,
        channels=(32, 64, 128, 256),
        critic_channels=(32, 64, 128, 256),
        down_kernel=4,
        action_bound=1.0,
    )
    return AgentConfig(**(base | overrides))


class Discriminator(nn.Module):
    """SNGAN discriminator: spectrally normalised 4x4 stride-2 convs with LeakyReLU, then a linear logit per image.

    Args:
        in_channels: image channels.
        channels: widths of the conv levels (each halves the resolution).
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        layers, cin = [], in_channels
        for c in channels:
            layers += [spectral_norm(nn.Conv2d(cin, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = c
        self.features = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(cin, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B,) logits."""
        return self.head(self.features(image).mean((2, 3))).squeeze(1)


@dataclass
class InpaintLossConfig:
    """``L1(hole, weighted) + adv_weight * hinge GAN``; border pixels (within ``border`` of the hole's edge) weigh
    ``border_weight`` at first, falling linearly to 1 over ``border_updates`` auxiliary steps."""

    hole: int = 32
    border: int = 4
    border_weight: float = 5.0
    border_updates: int = 2000
    adv_weight: float = 0.01
    lr_discriminator: float = 2e-4

    def to_dict(self) -> dict:
        return asdict(self)


def border_weights(size: int, border: int, weight: float) -> torch.Tensor:
    """(size, size) weights of a hole: ``weight`` within ``border`` pixels of its edge, 1 inside."""
    w = torch.full((size, size), float(weight))
    if size > 2 * border:
        w[border : size - border, border : size - border] = 1.0
    return w


class InpaintingTask:
    """Rebuilds replayed states from ``(image index, hole content)`` and computes the auxiliary loss.

    Replayed state components: ``"index"`` (into ``images``) and ``"fill"`` (B, C, hole, hole), the hole's current
    content, stored in half precision by the buffer.

    Args:
        images: (N, C, H, W) training images in [-1, 1] (the targets; the environment's sources are the same).
        loss: auxiliary loss options.
        device: where batches are computed.
    """

    def __init__(self, images: torch.Tensor, loss: InpaintLossConfig, device: torch.device | str = "cpu") -> None:
        self.images = images
        self.loss_config = loss
        self.device = torch.device(device)
        self.region = centre_hole(tuple(images.shape[2:]), loss.hole)
        self.discriminator = Discriminator(images.shape[1]).to(self.device)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=loss.lr_discriminator, betas=(0.5, 0.9))
        self.n_updates = 0

    def compose(self, index: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """The images at ``index`` with ``fill`` pasted into the hole."""
        out = self.images[index.cpu()].to(self.device).clone()
        out[(..., *self.region)] = fill.to(out)
        return out

    def observations(self, batch: ReplayBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            self.compose(batch.state["index"], batch.state["fill"]),
            self.compose(batch.next_state["index"], batch.next_state["fill"]),
        )

    def _l1(self, fill: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cfg = self.loss_config
        early = max(0.0, 1.0 - self.n_updates / max(cfg.border_updates, 1))
        weights = border_weights(fill.shape[-1], cfg.border, 1.0 + (cfg.border_weight - 1.0) * early).to(fill)
        return ((fill - target).abs() * weights).sum((-2, -1)).mean() / weights.sum()

    def auxiliary_loss(self, agent: Agent, batch: ReplayBatch, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        index = batch.state["index"]
        real = self.images[index.cpu()].to(self.device)
        out = agent.planner(obs)
        fill = agent.actor(out.distribution().rsample(), out.skips)[(..., *self.region)]
        terms = {"l1": self._l1(fill, real[(..., *self.region)])}
        fake = obs.clone()
        fake[(..., *self.region)] = fill
        if self.loss_config.adv_weight:
            d = self.discriminator
            d_loss = F.relu(1 - d(real)).mean() + F.relu(1 + d(fake.detach())).mean()
            self.d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_optimizer.step()
            d.requires_grad_(False)
            try:
                terms["adv"] = -d(fake).mean()
            finally:
                d.requires_grad_(True)
            terms["d_loss"] = d_loss.detach()
        loss = terms["l1"] + self.loss_config.adv_weight * terms.get("adv", 0.0)
        self.n_updates += 1
        return {"loss": loss} | {k: v.detach() for k, v in terms.items()}
