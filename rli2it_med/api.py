"""The Python API: load a trained agent and register images step by step.

Example::

    from rli2it_med.api import Registrator

    reg = Registrator.load("bundles/brain_mri_registration/models/model.pt")
    result = reg.register(fixed, moving, fixed_seg=fixed_labels, moving_seg=moving_labels)
    result.warped, result.field, result.warped_seg, result.dice  # same kind as the inputs (array or tensor)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rli2it_med.agent.checkpoint import load_checkpoint
from rli2it_med.agent.networks import Agent, AgentConfig
from rli2it_med.registration.data import Pair
from rli2it_med.registration.env import EnvConfig, RegistrationEnv
from rli2it_med.registration.grid import coarse_shape, downsample_image, downsample_labels, upsample_field
from rli2it_med.registration.losses import RegistrationLoss, fold_barrier
from rli2it_med.registration.rewards import mean_dice
from rli2it_med.registration.task import LossConfig, upgrade_config
from rli2it_med.registration.warp import warp

__all__ = [
    "RegistrationResult",
    "Registrator",
    "StepwiseRegistrationNet",
    "coarse_levels",
    "format_coarse_steps",
    "kept_coarse_steps",
    "load_model",
    "parse_coarse_steps",
    "adam_step",
    "parse_refine",
    "refine_counts",
    "resolve_device",
]

CoarseSteps = int | tuple[int, ...]


def coarse_levels(coarse_steps: int | Sequence[int]) -> tuple[int, ...]:
    """Coarse steps per level, coarsest first: ``k`` is ``(k,)`` (k steps on the grid twice coarser), ``(j, k)`` is
    j steps on the grid four times coarser, then k on the grid twice coarser; leading empty levels are dropped."""
    if isinstance(coarse_steps, (int, np.integer)):
        levels = (int(coarse_steps),)
    else:
        try:
            levels = tuple(coarse_steps)
        except TypeError:
            raise ValueError(f"coarse_steps must be an integer or a sequence of them, got {coarse_steps!r}") from None
        if not all(isinstance(k, (int, np.integer)) for k in levels):
            raise ValueError(f"coarse_steps must be an integer or a sequence of them, got {coarse_steps!r}")
    levels = tuple(int(k) for k in levels)
    while len(levels) > 1 and levels[0] == 0:
        levels = levels[1:]
    return levels or (0,)


def format_coarse_steps(coarse_steps: int | Sequence[int]) -> str:
    """``"2"`` or ``"1,2"`` (coarsest level first), as ``--coarse-steps`` takes them."""
    return ",".join(str(k) for k in coarse_levels(coarse_steps))


def kept_coarse_steps(coarse_steps: int | Sequence[int], container: type = tuple) -> Any:
    """Coarse steps as they are kept: an integer for one level, else ``container`` of the levels (``tuple`` on
    networks, ``list`` in checkpoints, configs and JSON)."""
    levels = coarse_levels(coarse_steps)
    return levels[0] if len(levels) == 1 else container(levels)


def parse_coarse_steps(text: str) -> CoarseSteps:
    """The inverse of :func:`format_coarse_steps`: ``"2"`` -> 2, ``"1,2"`` -> (1, 2)."""
    try:
        levels = coarse_levels(tuple(int(k) for k in text.split(",")))
    except ValueError:
        raise ValueError(
            f"coarse steps must be a count or counts per level separated by commas, got {text!r}"
        ) from None
    if min(levels) < 0:
        raise ValueError(f"coarse steps must be >= 0, got {text!r}")
    return kept_coarse_steps(levels)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class RegistrationResult:
    """Output of :meth:`Registrator.register`, in the kind and layout of the inputs.

    Attributes:
        warped: moving image warped onto the fixed image.
        field: accumulated displacement ``Phi_T``, (ndim, *S) (or (B, ndim, *S) for batched input), in voxels.
        warped_seg: moving labels warped with nearest neighbour (None without ``moving_seg``).
        dice: per-step mean Dice, length ``steps + fine_steps + 1`` (index 0 = before the episode grid's steps, after
            any coarse steps); empty without labels.
        step_fields: accumulated field after each step when ``keep_steps=True``.
        seconds: wall-clock time of the steps.
    """

    warped: Any
    field: Any
    warped_seg: Any | None
    dice: list[Any] = field(default_factory=list)
    step_fields: list[Any] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def trajectory(self) -> list[Any]:
        """Mean Dice after each step t = 0..T (the per-step trajectory)."""
        return self.dice


class _Layout:
    """Remember how the caller gave an image so results come back the same way."""

    def __init__(self, x: Any, spatial_dims: int, name: str) -> None:
        self.numpy = isinstance(x, np.ndarray)
        if not (self.numpy or isinstance(x, torch.Tensor)):
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
        self.extra = x.ndim - spatial_dims
        if self.extra not in (0, 1, 2):
            raise ValueError(
                f"{name} must have shape S, (1, *S) or (B, 1, *S) with {spatial_dims} spatial dims, "
                f"got {tuple(x.shape)}"
            )
        self.device = None if self.numpy else x.device

    def to_batch(self, x: Any) -> torch.Tensor:
        t = torch.as_tensor(np.ascontiguousarray(x)) if self.numpy else x
        for _ in range(2 - self.extra):
            t = t.unsqueeze(0)
        if t.shape[1] != 1:
            raise ValueError(f"expected one channel, got shape {tuple(t.shape)}")
        return t

    def back(self, t: torch.Tensor, channel_first_field: bool = False) -> Any:
        if self.extra < 2:
            t = t[0]
            if self.extra == 0 and not channel_first_field:
                t = t[0]
        return t.detach().cpu().numpy() if self.numpy else t.to(self.device)


FOLD_MARGIN = 0.05  # the refinement's fold barrier acts where det J < this


class StepwiseRegistrationNet(nn.Module):
    """The trained agent as one network: ``(B, 2, *S)`` fixed+moving -> ``(B, ndim, *S)`` displacement after T steps.

    This is the bundles' ``network_def``. It pools the pair by ``grid_scale``, lets the planner/actor edit the
    accumulated field for ``steps`` steps on that grid (``Phi_t = a_t + Warp(Phi_{t-1}, a_t)``, the moving image
    interpolated once per step) and upsamples ``Phi_T`` to the input grid. The field is in voxels, channel ``i``
    along spatial axis ``i``, a pull-back: ``warped(x) = moving(x + Phi(x))``.

    Args:
        agent: the agent, or its config (an :class:`AgentConfig` or its dict, as saved in checkpoints).
        steps: episode length T at inference.
        max_step: bound of each step field (voxels).
        grid_scale: pooling factor of the episode grid.
        stop_dice: when label maps are given to :meth:`rollout`, a pair stops moving once its Dice reaches this
            (the episode end of agents trained with ``EnvConfig.stop_dice``, e.g. DigitsTransform).
        coarse_steps: steps run first on the episode grid coarsened twice more (the pair block-averaged by
            ``2 * grid_scale``); their field, upsampled, starts the ``steps`` steps on the episode grid. A coarse
            start reaches large displacements a purely local policy misses (``bench/loss_grid.py``). A sequence
            runs a pyramid, coarsest level first: ``(1, 2)`` is 1 step at ``4 * grid_scale``, then 2 steps at
            ``2 * grid_scale`` from its field upsampled (:func:`coarse_levels`); kept as an integer for one level.
        fine_steps: steps run last on the grid twice finer than the episode grid (the input grid when
            ``grid_scale`` is 2), from the episode's field upsampled: the same agent (its step fields are in voxels of
            the grid it acts on) finishes at full resolution what it aligned on the pooled grid. Needs an even
            ``grid_scale``.
        refine: Adam iterations run last on the auxiliary loss itself (LNCC + smoothness, no labels), from the
            agent's field: a displacement on the episode grid added to it (instance optimisation). The agent's field
            is a start that a few iterations improve far more than more steps do (``bench/registration.py``). An
            integer N: N iterations with the LNCC on the input images; a pair ``(C, N)``: first C iterations with
            the LNCC on the images block-averaged to the episode grid (cheap: 8x fewer voxels in 3D), then N.
        refine_lr: Adam's learning rate of the refinement, in voxels of the episode grid.
        refine_loss: the auxiliary loss the refinement minimises (a :class:`LossConfig` or its dict; its LNCC
            window, smoothness and weight are used, label and KL terms are not); checkpoints carry the training's.
        refine_fold_weight: weight of a barrier against folding added to the refinement's loss: the mean of
            ``relu(FOLD_MARGIN - det J)`` of the whole field being fitted
            (:func:`~rli2it_med.registration.losses.fold_barrier`), so only voxels near or past a fold cost (0:
            none; checkpoints record it as ``val["refine_fold_weight"]``). The agent's field folds a little
            where the images disagree most (skull and scalp, the cut end of the brainstem); the barrier unfolds it.
    """

    def __init__(
        self,
        agent: Agent | AgentConfig | dict,
        steps: int = 6,
        max_step: float = 2.0,
        grid_scale: int = 1,
        stop_dice: float | None = None,
        coarse_steps: int | Sequence[int] = 0,
        fine_steps: int = 0,
        refine: int | Sequence[int] = 0,
        refine_lr: float = 0.2,
        refine_loss: LossConfig | dict | None = None,
        refine_fold_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(agent, dict):
            agent = AgentConfig(**agent)
        self.agent = agent if isinstance(agent, Agent) else Agent(agent)
        if int(grid_scale) != grid_scale or grid_scale < 1:
            raise ValueError(f"grid_scale must be a positive integer, got {grid_scale}")
        self.steps, self.max_step, self.grid_scale = int(steps), float(max_step), int(grid_scale)
        self.coarse_steps, self.fine_steps = self._check_steps(steps, coarse_steps, fine_steps)
        self.stop_dice = stop_dice
        if not refine_lr > 0:
            raise ValueError(f"refine_lr must be > 0, got {refine_lr}")
        self.refine, self.refine_lr = refine, float(refine_lr)
        self.refine_fold_weight = refine_fold_weight
        if isinstance(refine_loss, dict):
            refine_loss = LossConfig(**refine_loss)
        self.refine_loss = refine_loss or LossConfig(kernel_size=9, smooth_weight=0.5)
        self.metadata: dict[str, Any] = {}

    @property
    def spatial_dims(self) -> int:
        return self.agent.config.spatial_dims

    @property
    def refine(self) -> int | tuple[int, int]:
        """Refinement iterations run by default: N, or ``(C, N)`` when C run first on the pooled pair."""
        return self._refine

    @refine.setter
    def refine(self, value: int | Sequence[int]) -> None:
        self._refine = _refine_value(value)

    @property
    def refine_fold_weight(self) -> float:
        """Weight of the refinement's fold barrier (see the class docstring)."""
        return self._refine_fold_weight

    @refine_fold_weight.setter
    def refine_fold_weight(self, value: float) -> None:
        if not float(value) >= 0:
            raise ValueError(f"refine_fold_weight must be >= 0, got {value}")
        self._refine_fold_weight = float(value)

    @property
    def refine_smooth_weight(self) -> float:
        """The refinement loss's smoothness weight (checkpoints record it as ``val["refine_smooth_weight"]`` when
        it differs from the training loss's, which it is otherwise)."""
        return self.refine_loss.smooth_weight

    @refine_smooth_weight.setter
    def refine_smooth_weight(self, value: float) -> None:
        if not float(value) >= 0:
            raise ValueError(f"refine_smooth_weight must be >= 0, got {value}")
        self.refine_loss = replace(self.refine_loss, smooth_weight=float(value))

    @property
    def coarse_steps(self) -> CoarseSteps:
        """Coarse steps run by default: an integer for one level, a tuple per level (coarsest first) for more."""
        return self._coarse_steps

    @coarse_steps.setter
    def coarse_steps(self, value: int | Sequence[int]) -> None:
        if min(coarse_levels(value)) < 0:
            raise ValueError(f"coarse_steps must be >= 0, got {value}")
        self._coarse_steps = kept_coarse_steps(value)

    def _check_steps(self, steps: int, coarse_steps: Any, fine_steps: int) -> tuple[Any, int]:
        """Refuse negative counts and fine steps without a grid twice finer; return coarse and fine steps."""
        if steps < 0 or min(coarse_levels(coarse_steps)) < 0 or fine_steps < 0:
            raise ValueError(
                f"steps, coarse_steps and fine_steps must be >= 0, got {steps}, {coarse_steps}, {fine_steps}"
            )
        if fine_steps and self.grid_scale % 2:
            raise ValueError(
                f"fine_steps need a grid twice finer than the episode grid: an even grid_scale, got {self.grid_scale}"
            )
        return coarse_steps, int(fine_steps)

    def trajectory(
        self,
        fixed: torch.Tensor,
        moving: torch.Tensor,
        steps: int | None = None,
        fixed_seg: torch.Tensor | None = None,
        moving_seg: torch.Tensor | None = None,
        coarse_steps: int | Sequence[int] | None = None,
        fine_steps: int | None = None,
        refine: int | Sequence[int] | None = None,
    ) -> list[tuple[int, torch.Tensor]]:
        """Run the episode on (B, 1, *S) tensors; return ``(scale, Phi_t)`` for t = 0..T+F, each field on the grid
        of the input block-averaged by ``scale`` (:func:`~rli2it_med.registration.grid.upsample_field` brings it to
        the input grid): ``Phi_0`` (the coarse steps' field, zero without them) to ``Phi_T`` on the episode grid,
        then the fine steps' on the grid twice finer. Label maps matter only with ``stop_dice`` (pairs stop once
        their Dice reaches it). With ``refine`` iterations (:meth:`refine_field`), the refined field comes last, on
        the input grid (scale 1). ``None`` takes the network's own numbers of steps and iterations."""
        steps = self.steps if steps is None else int(steps)
        coarse_steps, fine_steps = self._check_steps(
            steps,
            self.coarse_steps if coarse_steps is None else coarse_steps,
            self.fine_steps if fine_steps is None else fine_steps,
        )
        scale, shape = self.grid_scale, tuple(fixed.shape[2:])
        segs = (fixed_seg, moving_seg)
        start = None
        levels = coarse_levels(coarse_steps)
        for level, k in enumerate(levels):
            if k or start is not None:  # a level after a coarser one passes its field on even without steps
                level_scale = scale * 2 ** (len(levels) - level)
                field = self._episode(fixed, moving, level_scale, k, *segs, start)[-1]
                start = upsample_field(field, 2, coarse_shape(shape, level_scale // 2))
        fields = [(scale, f) for f in self._episode(fixed, moving, scale, steps, *segs, start)]
        if fine_steps:
            start = upsample_field(fields[-1][1], 2, coarse_shape(shape, scale // 2))
            fields += [(scale // 2, f) for f in self._episode(fixed, moving, scale // 2, fine_steps, *segs, start)[1:]]
        pooled, iterations = refine_counts(self.refine if refine is None else refine)
        if pooled or iterations:
            last = upsample_field(fields[-1][1], fields[-1][0], shape)
            fields.append((1, self.refine_field(fixed, moving, last, iterations, pooled)))
        return fields

    def refine_field(
        self, fixed: torch.Tensor, moving: torch.Tensor, field: torch.Tensor, iterations: int, pooled: int = 0
    ) -> torch.Tensor:
        """``field`` (B, ndim, *S) on the input grid plus a displacement on the episode grid fitted by Adam to the
        auxiliary loss ``-LNCC(fixed, Warp(moving, field)) + w * smoothness`` (the smoothness of the whole field on
        the episode grid, in its voxels, as in training): first ``pooled`` iterations with the images block-averaged
        to the episode grid, then ``iterations`` with the images themselves (each stage a fresh Adam from the
        previous one's field); each pair on its own."""
        scale, shape = self.grid_scale, tuple(fixed.shape[2:])
        cfg = self.refine_loss
        loss = RegistrationLoss(self.spatial_dims, cfg.kernel_size, cfg.smooth_weight, cfg.smoothness)

        def fit(f, m, base, count, on_grid):
            base_grid = downsample_image(base, scale) / scale
            delta = torch.zeros_like(base_grid, requires_grad=True)
            moments = (torch.zeros_like(delta), torch.zeros_like(delta))
            for step in range(1, count + 1):
                on_episode_grid = base_grid + delta
                whole = on_episode_grid if on_grid else base + upsample_field(delta, scale, shape)
                value = loss(f, warp(m, whole), on_episode_grid)["loss"]
                if self.refine_fold_weight:  # the fold barrier, on the field that warps
                    value = value + self.refine_fold_weight * fold_barrier(whole, FOLD_MARGIN)
                adam_step(delta, torch.autograd.grad(value, delta)[0], moments, step, self.refine_lr)
            return base + upsample_field(delta.detach(), scale, shape)

        refined = []
        with torch.inference_mode(False), torch.enable_grad():
            for i in range(fixed.shape[0]):
                f, m, base = (x[i : i + 1].detach().clone() for x in (fixed, moving, field))
                if pooled:
                    base = fit(downsample_image(f, scale), downsample_image(m, scale), base, pooled, True)
                refined.append(fit(f, m, base, iterations, False) if iterations else base)
        return torch.cat(refined)

    def rollout(
        self,
        fixed: torch.Tensor,
        moving: torch.Tensor,
        steps: int | None = None,
        fixed_seg: torch.Tensor | None = None,
        moving_seg: torch.Tensor | None = None,
        coarse_steps: int | Sequence[int] | None = None,
        fine_steps: int | None = None,
        refine: int | Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`trajectory`, returning the last field on the input grid and the fields ``Phi_t`` on their own
        grids."""
        fields = self.trajectory(fixed, moving, steps, fixed_seg, moving_seg, coarse_steps, fine_steps, refine)
        scale, last = fields[-1]
        return upsample_field(last, scale, tuple(fixed.shape[2:])), [f for _, f in fields]

    def _episode(self, fixed, moving, scale, steps, fixed_seg, moving_seg, start=None) -> list[torch.Tensor]:
        """``steps`` steps on the pair block-averaged by ``scale``, from the field ``start``; Phi_t, t = 0..steps."""
        stop = self.stop_dice is not None and fixed_seg is not None and moving_seg is not None
        env_config = EnvConfig(
            max_steps=max(steps, 1),
            max_step=self.max_step,
            reward="labels" if stop else "none",
            stop_dice=self.stop_dice if stop else None,
        )
        env = RegistrationEnv(env_config, device=fixed.device)
        segs = (downsample_labels(fixed_seg, scale), downsample_labels(moving_seg, scale)) if stop else (None, None)
        coarse = Pair(downsample_image(fixed, scale), downsample_image(moving, scale), *segs)
        obs, info = env.reset(options={"pair": coarse, "field": start})
        fields = [info["field"]]
        for _ in range(steps):
            _, action, _ = self.agent.act(obs, deterministic=True)
            obs, _, _, _, info = env.step(action)
            fields.append(info["field"])
        return fields

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != self.spatial_dims + 2 or image.shape[1] != 2:
            raise ValueError(
                f"expected (B, 2, *S) with {self.spatial_dims} spatial dims (fixed, moving), got {tuple(image.shape)}"
            )
        return self.rollout(image[:, :1], image[:, 1:])[0]

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, steps: int | None = None, map_location: str | torch.device = "cpu"
    ) -> StepwiseRegistrationNet:
        """Build the network a checkpoint describes and load its weights.

        ``steps`` defaults to the checkpoint's: the number of steps with the best validation Dice when training
        recorded one (``val["steps"]``, :func:`rli2it_med.agent.loop.best_step`), else the trained
        episode length T; ``coarse_steps`` and ``fine_steps`` are the checkpoint's ``val["coarse_steps"]`` and
        ``val["fine_steps"]`` (0 when absent), as ``rli2it evaluate --split val --save-steps`` records them.
        """
        payload = load_checkpoint(path, map_location)
        try:
            cfg = upgrade_config(payload["config"])
            env = EnvConfig(**cfg["env"])
            net = cls(
                cfg["agent"],
                (payload.get("val", {}).get("steps") or env.max_steps) if steps is None else steps,
                env.max_step,
                cfg.get("grid_scale", 1),
                env.stop_dice,
            )
            net.agent.load_state_dict(payload["state_dict"])
            val = payload.get("val", {})
            net.coarse_steps, net.fine_steps = net._check_steps(
                net.steps, val.get("coarse_steps", 0), int(val.get("fine_steps", 0))
            )
            net.refine = val.get("refine", 0)
            if "loss" in cfg:
                net.refine_loss = LossConfig(**cfg["loss"])
            if "refine_smooth_weight" in val:
                net.refine_smooth_weight = val["refine_smooth_weight"]
            net.refine_fold_weight = val.get("refine_fold_weight", 0.0)
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise ValueError(f"{path}: not a registration agent this version can load ({e})") from e
        net.metadata = {k: v for k, v in payload.items() if k != "state_dict"}
        return net.for_inference()

    def for_inference(self) -> StepwiseRegistrationNet:
        """Evaluation mode; 2D weights in channels-last layout, which makes CPU convolutions 1.4x faster here
        (3D gains nothing). For loaded networks only: a network being trained keeps its layout."""
        self.eval()
        if self.spatial_dims == 2:
            self.agent.to(memory_format=torch.channels_last)
        return self

    def load_weights(self, path: str | Path) -> StepwiseRegistrationNet:
        """Load a checkpoint's weights into this network; the checkpoint must describe the same agent."""
        other = StepwiseRegistrationNet.from_checkpoint(path)
        diff = self.agent.config.differences(other.agent.config)
        if other.grid_scale != self.grid_scale:
            diff["grid_scale"] = (self.grid_scale, other.grid_scale)
        if diff:
            raise ValueError(f"{path}: a different agent than this network (config vs checkpoint: {diff})")
        self.agent.load_state_dict(other.agent.state_dict())
        self.metadata = other.metadata
        self.take_refinement_objective(other)
        return self.for_inference()

    def take_refinement_objective(self, other: StepwiseRegistrationNet) -> None:
        """Minimise what ``other``'s refinement minimises: its loss and fold barrier (the numbers of iterations are
        the caller's to choose)."""
        self.refine_loss, self.refine_fold_weight = other.refine_loss, other.refine_fold_weight


class Registrator:
    """A trained registration agent.

    Args:
        agent: the planner/actor (the critic is not used at inference).
        env_config: episode length (default steps) and step bound.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:0"``...
        grid_scale: the agent registers the images block-averaged by this factor; the field is upsampled back and
            the original moving image (and labels) are warped once with it.
    """

    def __init__(
        self,
        agent: Agent,
        env_config: EnvConfig,
        device: str | torch.device | None = "auto",
        grid_scale: int = 1,
    ) -> None:
        self.device = resolve_device(device)
        self.net = StepwiseRegistrationNet(  # validates
            agent, env_config.max_steps, env_config.max_step, grid_scale, env_config.stop_dice
        )
        self.net.to(self.device).eval()
        self.agent = self.net.agent
        self.env_config = env_config
        self.grid_scale = self.net.grid_scale
        self.metadata: dict[str, Any] = {}

    @classmethod
    def from_net(cls, net: StepwiseRegistrationNet, device: str | torch.device | None = "auto") -> Registrator:
        """The registrator of a :class:`StepwiseRegistrationNet` (same agent, episode length and grid)."""
        env = EnvConfig(max_steps=net.steps, max_step=net.max_step, stop_dice=net.stop_dice)
        reg = cls(net.agent, env, device, net.grid_scale)
        reg.net.coarse_steps, reg.net.fine_steps = net.coarse_steps, net.fine_steps
        reg.net.refine, reg.net.refine_lr = net.refine, net.refine_lr
        reg.net.take_refinement_objective(net)
        reg.metadata = net.metadata
        return reg

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = "auto") -> Registrator:
        """Load a checkpoint written by training (``model.pt``) in one call."""
        return cls.from_net(StepwiseRegistrationNet.from_checkpoint(path), device)

    @property
    def spatial_dims(self) -> int:
        return self.agent.config.spatial_dims

    @property
    def trained_steps(self) -> int:
        """The episode length T of the model's training (from its checkpoint), else the default number of steps."""
        return int(self.metadata.get("config", {}).get("env", {}).get("max_steps", self.env_config.max_steps))

    @torch.no_grad()
    def register(
        self,
        fixed: Any,
        moving: Any,
        steps: int | None = None,
        fixed_seg: Any | None = None,
        moving_seg: Any | None = None,
        keep_steps: bool = False,
        coarse_steps: int | Sequence[int] | None = None,
        fine_steps: int | None = None,
        refine: int | Sequence[int] | None = None,
    ) -> RegistrationResult:
        """Register ``moving`` onto ``fixed`` in ``steps`` steps (default: the model's).

        Args:
            fixed, moving: arrays or tensors of shape S, (1, *S) or (B, 1, *S), intensities roughly in [0, 1].
            steps: number of agent steps T.
            fixed_seg, moving_seg: optional label maps of the same shape; give both to get the Dice trajectory.
            keep_steps: also return the accumulated field after every step.
            coarse_steps: steps first run on a grid twice coarser, or per level of a coarser pyramid, coarsest
                first (default: the model's, see :class:`StepwiseRegistrationNet`); the trajectory then starts
                from their field.
            fine_steps: steps run last on a grid twice finer (default: the model's); the trajectory (``dice``,
                ``step_fields``) goes on with them after the ``steps`` steps.
            refine: Adam iterations on the auxiliary loss from the agent's field (default: the model's, see
                :class:`StepwiseRegistrationNet`); the refined field ends the trajectory.
        """
        nd = self.spatial_dims
        layout = _Layout(fixed, nd, "fixed")
        _Layout(moving, nd, "moving")
        to_batch = layout.to_batch
        pair = Pair(
            to_batch(fixed).float(),
            to_batch(moving).float(),
            None if fixed_seg is None else to_batch(fixed_seg).long(),
            None if moving_seg is None else to_batch(moving_seg).long(),
        )
        pair = RegistrationEnv.check_pair(pair).to(self.device)
        with_labels = pair.fixed_seg is not None and pair.moving_seg is not None
        shape = tuple(pair.fixed.shape[2:])

        start = time.perf_counter()
        fields = self.net.trajectory(
            pair.fixed, pair.moving, steps, pair.fixed_seg, pair.moving_seg, coarse_steps, fine_steps, refine
        )
        field = upsample_field(fields[-1][1], fields[-1][0], shape)
        warped = warp(pair.moving, field)
        warped_seg = None if pair.moving_seg is None else warp(pair.moving_seg, field, mode="nearest")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start

        # scoring and per-step outputs happen after the clock stops
        dice = []
        if with_labels:
            values = tuple(int(v) for v in torch.unique(pair.fixed_seg).tolist() if v != 0)
            for scale, f in fields:
                moved = warp(pair.moving_seg, upsample_field(f, scale, shape), mode="nearest")
                dice.append(mean_dice(moved, pair.fixed_seg, values))
        step_fields = []
        if keep_steps:
            step_fields = [
                layout.back(upsample_field(f, scale, shape), channel_first_field=True) for scale, f in fields[1:]
            ]
        batched = layout.extra == 2
        return RegistrationResult(
            warped=layout.back(warped),
            field=layout.back(field, channel_first_field=True),
            warped_seg=None if warped_seg is None else layout.back(warped_seg),
            dice=[(d if batched else d[0]).cpu().numpy() if layout.numpy else d for d in dice],
            step_fields=step_fields,
            seconds=seconds,
        )


def adam_step(
    param: torch.Tensor, grad: torch.Tensor, moments: tuple[torch.Tensor, torch.Tensor], step: int, lr: float
) -> None:
    """Step ``step`` (from 1) of Adam with ``torch.optim.Adam``'s defaults (betas 0.9, 0.999, eps 1e-8) on ``param``
    in place, ``moments`` its running means of the gradient and its square. The refinement's optimiser:
    ``torch.optim.Adam``'s first construction in a process imports ``torch._dynamo``, about 2 s here
    (``bench/update_cost.py``), more than a whole 3D registration."""
    mean, square = moments
    with torch.no_grad():
        mean.lerp_(grad, 0.1)
        square.mul_(0.999).addcmul_(grad, grad, value=0.001)
        denominator = (square / (1 - 0.999**step)).sqrt_().add_(1e-8)
        param.addcdiv_(mean, denominator, value=-lr / (1 - 0.9**step))


def refine_counts(value: int | Sequence[int]) -> tuple[int, int]:
    """``refine`` (N, or ``(C, N)``) as ``(pooled, iterations)``: C iterations on the pooled pair, then N."""
    counts = list(value) if isinstance(value, (list, tuple)) else [0, value]
    if len(counts) != 2 or any(isinstance(c, bool) or int(c) != c or c < 0 for c in counts):
        raise ValueError(f"refine must be N or (C, N), numbers of iterations >= 0, got {value!r}")
    return int(counts[0]), int(counts[1])


def parse_refine(text: str) -> int | tuple[int, int]:
    """``"3"`` -> 3, ``"10,1"`` -> (10, 1), as ``--refine`` takes them; refused with a ValueError otherwise."""
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"expected N or C,N (iterations >= 0), got {text!r}") from None
    return _refine_value(counts[0] if len(counts) == 1 else counts)


def _refine_value(value: int | Sequence[int]) -> int | tuple[int, int]:
    """``refine`` checked, in the form a network keeps it: N, or ``(C, N)`` when C > 0."""
    pooled, iterations = refine_counts(value)
    return iterations if pooled == 0 else (pooled, iterations)


def load_model(path: str | Path, device: str | torch.device | None = "auto") -> Registrator:
    """Shorthand for :meth:`Registrator.load`."""
    return Registrator.load(path, device)
