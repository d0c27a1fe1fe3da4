"""Planner, actor and twin critic of the RL-I2IT agent (SPEC section 2), for 2D and 3D states.

- :class:`Planner`: conv encoder of the state -> diagonal Gaussian plan ``N(mu, sigma)`` + skip features.
- :class:`Actor`: the plan, broadcast as a 1x1(x1) map onto the deepest features (a vector plan) or laid on them as
  a small map (a map plan, e.g. DigitsTransform's 1x7x7), decoded U-Net-wise with the planner's skips into the
  action, bounded by ``action_bound * tanh``.
- :class:`TwinCritic`: two Q networks ``Q(s, plan)`` (conv encoder of the state, concatenated with the plan).

The action has the state's grid; tasks that work on a coarser grid than their images (3D registration) pool the
images before and upsample the result after (see :mod:`rli2it_med.registration.grid`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal

__all__ = [
    "AgentConfig",
    "PlannerOutput",
    "Planner",
    "Actor",
    "QNetwork",
    "TwinCritic",
    "Agent",
    "Conv3d",
    "count_parameters",
]


@dataclass
class AgentConfig:
    """Architecture of the agent.

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: channels of the state.
        action_channels: channels of the action (``spatial_dims`` for a displacement field).
        plan_dim: size of the plan vector (for a map plan: ``plan_channels`` x the deepest level's voxels).
        plan_channels: 0 for a vector plan (from globally pooled deepest features); > 0 for a map plan with this
            many channels on the deepest level's grid, flattened to ``plan_dim`` values for the critic and SAC.
        channels: encoder widths; the first level keeps the working resolution, each next one halves it.
        downsample: how each encoder level halves the resolution: ``"stride"`` (stride-2 conv of ``down_kernel``)
            or ``"maxpool"`` (2x max-pool, then a 3x3 conv); the critic's encoder too.
        down_kernel: kernel of the stride-2 convs: 3, or 4 (the context-encoder-like nets of inpainting).
        critic_channels: widths of each critic's strided conv encoder.
        critic_hidden: width of the critic's head.
        action_level: the actor decodes up to this encoder level and its output is upsampled (bi/trilinear) to the
            state grid; 1 gives a smooth action at half resolution for a fraction of the cost (3D).
        action_bound: the action is ``action_bound * tanh(.)`` (voxels, for a field).
        logvar_min: lower bound of the plan's log-variance.
        logvar_max: upper bound of the plan's log-variance.
        norm: ``"none"`` or ``"instance"`` (affine InstanceNorm after each planner/actor conv; style transfer).
        activation: ``"leaky_relu"`` (slope 0.2) or ``"relu"``.
        padding_mode: ``"zeros"`` or ``"reflect"`` (every conv; style transfer).
        first_kernel: kernel of the planner's first conv (odd; 9 in style transfer).
        residual_blocks: residual blocks (conv-norm-act-conv-norm + input) after the planner's deepest level.
        any_size: a map plan follows the state's size (a fully convolutional planner and actor, applied at any
            resolution); ``plan_dim`` is then the plan size at the training resolution, which the critic needs.
    """

    spatial_dims: int = 2
    in_channels: int = 2
    action_channels: int = 2
    plan_dim: int = 64
    plan_channels: int = 0
    channels: tuple[int, ...] = (16, 32, 32, 32)
    downsample: str = "stride"
    down_kernel: int = 3
    critic_channels: tuple[int, ...] = (16, 32, 32, 64)
    critic_hidden: int = 256
    action_level: int = 0
    action_bound: float = 2.0
    logvar_min: float = -10.0
    logvar_max: float = 2.0
    norm: str = "none"
    activation: str = "leaky_relu"
    padding_mode: str = "zeros"
    first_kernel: int = 3
    residual_blocks: int = 0
    any_size: bool = False

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        self.channels = tuple(self.channels)
        self.critic_channels = tuple(self.critic_channels)
        if not self.channels or not self.critic_channels:
            raise ValueError("channels and critic_channels must not be empty")
        if self.downsample not in DOWNSAMPLING:
            raise ValueError(f"downsample must be one of {DOWNSAMPLING}, got {self.downsample!r}")
        if self.down_kernel not in (3, 4):
            raise ValueError(f"down_kernel must be 3 or 4, got {self.down_kernel}")
        if self.plan_channels < 0:
            raise ValueError(f"plan_channels must be >= 0, got {self.plan_channels}")
        for name, valid in (("norm", NORMS), ("activation", ACTIVATIONS), ("padding_mode", PADDINGS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")
        if self.first_kernel < 1 or self.first_kernel % 2 == 0:
            raise ValueError(f"first_kernel must be odd, got {self.first_kernel}")
        if self.residual_blocks < 0:
            raise ValueError(f"residual_blocks must be >= 0, got {self.residual_blocks}")
        if self.any_size and not self.plan_channels:
            raise ValueError("any_size needs a map plan (plan_channels > 0)")
        if not 0 <= self.action_level < len(self.channels):
            raise ValueError(f"action_level must lie in [0, {len(self.channels) - 1}], got {self.action_level}")

    def to_dict(self) -> dict:
        return asdict(self)

    def differences(self, other: AgentConfig) -> dict[str, tuple]:
        """The fields whose values differ, as ``{name: (self's, other's)}``: why two agents' weights do not fit."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}


class PlannerOutput(NamedTuple):
    mean: torch.Tensor  # (B, plan_dim)
    logvar: torch.Tensor  # (B, plan_dim)
    skips: list[torch.Tensor]  # encoder features, shallow to deep

    def distribution(self) -> Independent:
        """Diagonal Gaussian over plans (never a full-covariance MultivariateNormal)."""
        return Independent(Normal(self.mean, torch.exp(0.5 * self.logvar)), 1)


DOWNSAMPLING = ("stride", "maxpool")
NORMS = ("none", "instance")
ACTIVATIONS = ("leaky_relu", "relu")
PADDINGS = ("zeros", "reflect")


def _activation(config: AgentConfig) -> nn.Module:
    return nn.ReLU(inplace=True) if config.activation == "relu" else nn.LeakyReLU(0.2, inplace=True)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs float32 CPU convolutions on oneDNN (MKL-DNN) always.

    PyTorch sends a 5D CPU convolution to its slow native kernel unless batch x channels x the first two spatial
    sizes exceeds 20480 (a rule tuned for 2D), so at batch 1 most of a 3D agent's convolutions took it: up to 7-9x
    slower than oneDNN here, the agent's whole forward over 2x, with the same values up to float32 rounding
    (``bench/update_cost.py`` times both). 2D convolutions are as fast either way and keep ``nn.Conv2d``.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not (
            input.device.type == "cpu"
            and input.dtype == weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
            and not isinstance(self.padding, str)
        ):
            return super()._conv_forward(input, weight, bias)
        padding = self.padding
        if self.padding_mode != "zeros":
            input, padding = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), (0, 0, 0)
        return torch.ops.aten.mkldnn_convolution(input, weight, bias, padding, self.stride, self.dilation, self.groups)


CONV = {2: nn.Conv2d, 3: Conv3d}


def _conv(
    config: AgentConfig, cin: int, cout: int, stride: int = 1, kernel: int = 3, norm: bool = True, act: bool = True
) -> nn.Sequential:
    """conv (``config.padding_mode``) [+ InstanceNorm when ``config.norm`` and ``norm``] [+ activation]."""
    nd = config.spatial_dims
    layers = [CONV[nd](cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2, padding_mode=config.padding_mode)]
    if norm and config.norm == "instance":
        layers.append((nn.InstanceNorm2d, nn.InstanceNorm3d)[nd - 2](cout, affine=True))
    if act:
        layers.append(_activation(config))
    return nn.Sequential(*layers)


def _down(config: AgentConfig, cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """A level that halves the resolution: stride-2 conv, or max-pool then conv."""
    if config.downsample == "stride" and config.down_kernel == 4:
        return _conv(config, cin, cout, stride=2, kernel=4, norm=norm)
    if config.downsample == "stride":
        return _conv(config, cin, cout, stride=2, norm=norm)
    return nn.Sequential((nn.MaxPool2d, nn.MaxPool3d)[config.spatial_dims - 2](2), *_conv(config, cin, cout, norm=norm))


class ResidualBlock(nn.Module):
    """conv-norm-act-conv-norm plus the input (Johnson et al., 2016), with the config's norm and padding."""

    def __init__(self, config: AgentConfig, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv(config, channels, channels), *_conv(config, channels, channels, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _check_state(x: torch.Tensor, config: AgentConfig) -> None:
    if x.ndim != config.spatial_dims + 2 or x.shape[1] != config.in_channels:
        raise ValueError(
            f"expected a state of shape (B, {config.in_channels}, {', '.join('S' * config.spatial_dims)}), "
            f"got {tuple(x.shape)}"
        )


class Planner(nn.Module):
    """State (B, in_channels, *S_work) -> :class:`PlannerOutput`."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__()
        self.config = config
        nd, ch = config.spatial_dims, config.channels
        self.levels = nn.ModuleList(
            [_conv(config, config.in_channels, ch[0], kernel=config.first_kernel)]
            + [_down(config, ch[i - 1], ch[i]) for i in range(1, len(ch))]
        )
        self.residual = nn.Sequential(*(ResidualBlock(config, ch[-1]) for _ in range(config.residual_blocks)))
        if config.plan_channels:
            self.head = CONV[nd](ch[-1], 2 * config.plan_channels, 3, padding=1, padding_mode=config.padding_mode)
        else:
            self.head = nn.Linear(ch[-1], 2 * config.plan_dim)

    def forward(self, state: torch.Tensor) -> PlannerOutput:
        _check_state(state, self.config)
        skips, x = [], state
        for level in self.levels:
            x = level(x)
            skips.append(x)
        x = skips[-1] = self.residual(x)
        if self.config.plan_channels:
            mean, raw = (m.flatten(1) for m in self.head(x).chunk(2, dim=1))
            if mean.shape[1] != self.config.plan_dim and not self.config.any_size:
                raise ValueError(
                    f"a {self.config.plan_channels}-channel plan map on the deepest grid {tuple(x.shape[2:])} has "
                    f"{mean.shape[1]} values but plan_dim is {self.config.plan_dim}; set plan_dim to match the "
                    f"state size {tuple(state.shape[2:])}"
                )
        else:
            mean, raw = self.head(x.flatten(2).mean(-1)).chunk(2, dim=1)
        lo, hi = self.config.logvar_min, self.config.logvar_max
        logvar = lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1)  # smooth squash into [lo, hi]
        return PlannerOutput(mean, logvar, skips)


class Actor(nn.Module):
    """Plan (B, plan_dim) + skips -> action (B, action_channels, *S) bounded by ``action_bound``."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__()
        self.config = config
        nd, ch = config.spatial_dims, config.channels
        if config.plan_channels:
            self.plan_in = None
            self.bottom = _conv(config, ch[-1] + config.plan_channels, ch[-1])
        else:
            self.plan_in = nn.Linear(config.plan_dim, ch[-1])
            self.bottom = _conv(config, 2 * ch[-1], ch[-1])
        top = config.action_level
        self.ups = nn.ModuleList(_conv(config, ch[i + 1] + ch[i], ch[i]) for i in reversed(range(top, len(ch) - 1)))
        self.out = CONV[nd](ch[top], config.action_channels, 3, padding=1, padding_mode=config.padding_mode)
        nn.init.normal_(self.out.weight, std=1e-5)
        nn.init.zeros_(self.out.bias)

    def forward(self, plan: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        deepest = skips[-1]
        size = self.config.plan_dim
        if self.config.any_size:
            size = self.config.plan_channels * deepest[0, 0].numel()
        if plan.ndim != 2 or plan.shape[1] != size:
            raise ValueError(f"expected a plan of shape (B, {size}), got {tuple(plan.shape)}")
        if self.plan_in is None:
            p = plan.view(plan.shape[0], self.config.plan_channels, *deepest.shape[2:])
        else:
            p = self.plan_in(plan).view(*plan.shape[:1], -1, *([1] * self.config.spatial_dims)).expand_as(deepest)
        x = self.bottom(torch.cat([deepest, p], dim=1))
        for up, skip in zip(self.ups, reversed(skips[self.config.action_level : -1])):
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = up(torch.cat([x, skip], dim=1))
        action = self.config.action_bound * torch.tanh(self.out(x))
        if self.config.action_level:
            mode = ("bilinear", "trilinear")[self.config.spatial_dims - 2]
            action = F.interpolate(action, size=skips[0].shape[2:], mode=mode, align_corners=False)
        return action


class QNetwork(nn.Module):
    """Q(s, plan): strided conv encoder of the state, global average, concat plan, MLP -> (B,)."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__()
        ch = config.critic_channels
        self.config = config
        self.encoder = nn.Sequential(
            *[_down(config, config.in_channels if i == 0 else ch[i - 1], ch[i], norm=False) for i in range(len(ch))]
        )  # no normalisation: the deepest levels of a 7-conv critic are 1x1
        self.head = nn.Sequential(
            nn.Linear(ch[-1] + config.plan_dim, config.critic_hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(config.critic_hidden, config.critic_hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(config.critic_hidden, 1),
        )

    def forward(self, state: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
        _check_state(state, self.config)
        if plan.ndim != 2 or plan.shape[1] != self.config.plan_dim:
            raise ValueError(
                f"the critic takes plans of shape (B, {self.config.plan_dim}) (the training resolution's), "
                f"got {tuple(plan.shape)}"
            )
        features = self.encoder(state).flatten(2).mean(-1)
        return self.head(torch.cat([features, plan], dim=1)).squeeze(1)


class TwinCritic(nn.Module):
    """Two independent Q networks; ``forward`` returns both."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__()
        self.q1, self.q2 = QNetwork(config), QNetwork(config)

    def forward(self, state: torch.Tensor, plan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q1(state, plan), self.q2(state, plan)


class Agent(nn.Module):
    """Planner + actor + twin critic (+ its Polyak target)."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__()
        self.config = config
        self.planner = Planner(config)
        self.actor = Actor(config)
        self.critic = TwinCritic(config)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)

    def act(self, state: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Plan and action for a state (B, C, *S).

        Returns:
            ``(plan (B, plan_dim), action (B, action_channels, *S), log_prob (B,))``; the plan is the mean when
            ``deterministic`` (reproducible inference), a reparameterised sample otherwise.
        """
        out = self.planner(state)
        if deterministic:  # no distribution object (inference's hot path): the mean's log-density is closed-form
            log_prob = -0.5 * (out.logvar + math.log(2 * math.pi)).sum(1)
            return out.mean, self.actor(out.mean, out.skips), log_prob
        dist = out.distribution()
        plan = dist.rsample()
        return plan, self.actor(plan, out.skips), dist.log_prob(plan)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
