"""Registration as an RL-I2IT task: the agent's configuration, replayed states and the auxiliary loss."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from rli2it_med.agent.buffer import ReplayBatch
from rli2it_med.agent.networks import Agent, AgentConfig
from rli2it_med.registration.data import Pair, PairDataset
from rli2it_med.registration.grid import upsample_field
from rli2it_med.registration.losses import RegistrationLoss, WarpedLabelDiceLoss
from rli2it_med.registration.warp import compose, warp

__all__ = ["LossConfig", "RegistrationTask", "agent_config", "upgrade_config"]


@dataclass
class LossConfig:
    """Auxiliary loss: ``-LNCC(window) + smooth_weight * smoothness(Phi_{t+1}) + kl_weight * KL(pi || N(0, I))
    + dice_weight * (1 - soft Dice)``.

    LNCC is computed on the image grid (or a random block of it, ``crop``), smoothness on the state grid's field
    (in its voxels). The Dice term (weakly supervised, as VoxelMorph's auxiliary segmentation loss) needs training
    label maps: the moving labels, one-hot and warped linearly by the field, against the fixed ones, averaged over
    the foreground labels; at test time only the images are used.
    """

    kernel_size: int = 9
    smooth_weight: float = 1.0
    smoothness: str = "diffusion"
    kl_weight: float = 0.0
    crop: int = 0  # > 0: LNCC on one random crop^ndim block per update (cheaper; windows zero-padded at its edges)
    dice_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.dice_weight < 0:
            raise ValueError(f"dice_weight must be >= 0, got {self.dice_weight}")
        if self.crop < 0 or 0 < self.crop < self.kernel_size:
            raise ValueError(f"crop must be 0 (whole image) or >= kernel_size {self.kernel_size}, got {self.crop}")

    def to_dict(self) -> dict:
        return asdict(self)


def upgrade_config(config: dict) -> dict:
    """Read a model or training configuration written before the grid refactor (2026-11-24).

    ``agent.working_scale`` and ``loss.loss_scale`` of 1 meant what the current defaults mean and are dropped;
    larger values describe the earlier 3D pipeline, whose weights do not fit the current networks.
    """
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    for part, key in (("agent", "working_scale"), ("loss", "loss_scale")):
        value = config.get(part, {}).pop(key, 1)
        if value != 1:
            raise ValueError(
                f"{part}.{key}={value}: trained by the earlier 3D pipeline (before 2026-11-24), which the current "
                "networks cannot load; retrain with `rli2it train`"
            )
    return config


def agent_config(spatial_dims: int, **overrides) -> AgentConfig:
    """Registration agent: state ``concat(F, M_t)`` (2 channels), action a ``spatial_dims``-channel field.

    The actor stops one level short of the state grid: each step field is decoded on a grid twice coarser and
    upsampled, which keeps the field smooth and, for the 128x128 slices (steps decoded at 4 mm), makes the planner +
    actor forward 0.57x as long as with a decoder to the full grid (``bench/update_cost.py``). 3D is narrower and
    runs on a 4 mm grid of 48x56x48 voxels for 2 mm images (see ``TrainConfig.grid_scale``), so its step fields are
    decoded at 8 mm.
    """
    base = {
        "spatial_dims": spatial_dims,
        "in_channels": 2,
        "action_channels": spatial_dims,
        "plan_dim": 64,
        "action_level": 1,
    }
    if spatial_dims == 3:
        base |= {"channels": (8, 16, 32, 64), "critic_channels": (8, 16, 32, 32)}
    return AgentConfig(**(base | overrides))


class RegistrationTask:
    """Rebuilds replayed states from ``(pair index, accumulated field)`` and computes the auxiliary loss.

    States live on the grid ``grid_scale`` times coarser than the images (``self.pairs``, which the environment
    also uses); the auxiliary loss compares the images at their own resolution, the composed field upsampled
    (at 2 mm a loss on the 4 mm images caps Dice well below SyN: ``bench/loss_grid.py``, docs/benchmarks.md).
    Replayed state components: ``"index"`` (pair index) and ``"field"`` (Phi_t on the state grid, stored in half
    precision by the buffer). With ``coarse``, replayed states may also be on the grids 2, 4, ... times coarser
    (``self.coarse_pairs``, where coarse steps run, the coarsest last), with ``fine`` on the grid twice finer
    (``self.fine_pairs``, where fine steps run); the field's shape tells which.

    Args:
        pairs: training pairs on the image grid.
        loss: auxiliary loss options.
        device: where the batches are computed.
        grid_scale: coarsening of the state grid.
        coarse: also rebuild states of the grids ``2 * grid_scale`` ... ``2**coarse * grid_scale`` (coarse-step
            episodes; ``True`` is one level).
        fine: also rebuild states of the grid ``grid_scale // 2`` (fine-step episodes; an even ``grid_scale``).
    """

    def __init__(
        self,
        pairs: PairDataset,
        loss: LossConfig,
        device: torch.device | str = "cpu",
        grid_scale: int = 1,
        coarse: int = 0,
        fine: bool = False,
    ) -> None:
        if fine and grid_scale % 2:
            raise ValueError(f"fine steps need a grid twice finer: an even grid_scale, not {grid_scale}")
        self.image_pairs = pairs
        self.pairs = pairs.coarsen(grid_scale)
        self.coarse_pairs = [pairs.coarsen(2**level * grid_scale) for level in range(1, int(coarse) + 1)]
        self.fine_pairs = pairs.coarsen(grid_scale // 2) if fine else None
        self._grids = {grid_scale: self.pairs}  # state grid first
        self._grids |= {2**level * grid_scale: p for level, p in enumerate(self.coarse_pairs, 1)}
        if fine:
            self._grids[grid_scale // 2] = self.fine_pairs
        self.grid_scale = grid_scale
        self.loss_config = loss
        self.loss = RegistrationLoss(pairs.spatial_dims, loss.kernel_size, loss.smooth_weight, loss.smoothness)
        self._dice_loss = None
        if loss.dice_weight:
            if pairs.labels is None or not pairs.label_values:
                raise ValueError(f"dice_weight {loss.dice_weight} needs training label maps with foreground values")
            self._dice_loss = WarpedLabelDiceLoss(pairs.label_values)
        self.device = torch.device(device)
        self._cached: tuple[ReplayBatch, Pair, Pair, int] | None = None

    def _grid(self, field: torch.Tensor) -> tuple[PairDataset, int]:
        """The pairs on the grid of a replayed field, and that grid's scale."""
        shape = tuple(field.shape[2:])
        for scale, pairs in self._grids.items():
            if shape == pairs.spatial_shape:
                return pairs, scale
        shapes = [pairs.spatial_shape for pairs in self._grids.values()]
        raise ValueError(f"a replayed field of grid {shape} fits none of this task's grids {shapes}")

    def _pairs(self, batch: ReplayBatch) -> tuple[Pair, Pair, int]:
        """The batch's pairs on its state grid and on the image grid, and the grid's scale; fetched once per batch."""
        if self._cached is None or self._cached[0] is not batch:
            index = batch.state["index"].cpu()
            grid, scale = self._grid(batch.state["field"])
            states = grid.get(index).to(self.device)
            images = states if scale == 1 else self.image_pairs.get(index).to(self.device)
            self._cached = (batch, states, images, scale)
        return self._cached[1:]

    def observations(self, batch: ReplayBatch) -> tuple[torch.Tensor, torch.Tensor]:
        pair, _, _ = self._pairs(batch)
        obs = torch.cat([pair.fixed, warp(pair.moving, batch.state["field"])], dim=1)
        next_obs = torch.cat([pair.fixed, warp(pair.moving, batch.next_state["field"])], dim=1)
        return obs, next_obs

    def auxiliary_loss(self, agent: Agent, batch: ReplayBatch, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        _, images, scale = self._pairs(batch)
        out = agent.planner(obs)
        dist = out.distribution()
        field = compose(batch.state["field"], agent.actor(dist.rsample(), out.skips))
        shape = tuple(images.fixed.shape[2:])
        image_field = upsample_field(field, scale, shape)
        fixed, origin, block = images.fixed, None, None
        if self.loss_config.crop:
            origin, block = self._crop(shape)
            image_field, fixed = image_field[block], fixed[block]
        terms = self.loss(fixed, warp(images.moving, image_field, origin=origin), field)
        if self.loss_config.dice_weight:
            dice = self._soft_dice(images, image_field, origin, block)
            terms["loss"] = terms["loss"] + self.loss_config.dice_weight * (1 - dice)
            terms["dice"] = dice.detach()
        if self.loss_config.kl_weight:
            kl = 0.5 * (out.mean.pow(2) + out.logvar.exp() - 1 - out.logvar).sum(1).mean()
            terms["loss"] = terms["loss"] + self.loss_config.kl_weight * kl
            terms["kl"] = kl.detach()
        return terms

    def _soft_dice(
        self, images: Pair, field: torch.Tensor, origin: tuple[int, ...] | None, block: tuple[slice, ...] | None
    ) -> torch.Tensor:
        """Mean soft Dice over the foreground labels of the moving labels warped linearly by ``field``."""
        return 1 - self._dice_loss(images.moving_seg, images.fixed_seg, field, origin, block)

    def _crop(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[slice, ...]]:
        """A uniformly placed block of side ``crop`` (clipped to the image): its origin and its index."""
        size = [min(self.loss_config.crop, s) for s in shape]
        origin = tuple(int(torch.randint(0, s - c + 1, ())) for s, c in zip(shape, size))
        return origin, (slice(None), slice(None), *(slice(o, o + c) for o, c in zip(origin, size)))
