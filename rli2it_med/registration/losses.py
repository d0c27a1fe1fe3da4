"""Auxiliary loss of registration: local NCC + smoothness of the accumulated field (MONAI's diffusion / bending).

:func:`diffusion_loss` is MONAI's ``DiffusionLoss`` written out (importing MONAI cost a cold call seconds).

:class:`LocalNCC` computes exactly MONAI's ``LocalNormalizedCrossCorrelationLoss`` (rectangular window, zero
padding, same ``smooth_dr``, tested equal in value and gradient) with window sums taken as sums of shifted copies
(:func:`box_sum`, its own adjoint in backward) instead of 1-channel separable convolutions, whose backward is slow on
CPUs: ``bench/update_cost.py`` measures both. The sums of a window stay local, so float32 keeps zero backgrounds
exactly zero (cumulative sums along whole lines did not: their rounding swamped the variance floor).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rli2it_med.registration.metrics import jacobian_determinant, one_hot_labels
from rli2it_med.registration.warp import warp

__all__ = [
    "LocalNCC",
    "box_sum",
    "total_variation",
    "SMOOTHNESS",
    "smoothness_loss",
    "fold_barrier",
    "RegistrationLoss",
    "WarpedLabelDiceLoss",
]


def _window_sum(x: torch.Tensor, size: int) -> torch.Tensor:
    r = size // 2
    for d in range(2, x.ndim):
        n = x.shape[d]
        pad = [0, 0] * (x.ndim - 2)
        pad[2 * (x.ndim - 1 - d)], pad[2 * (x.ndim - 1 - d) + 1] = r, r  # F.pad lists the last axis first
        padded = F.pad(x, pad)
        x = padded.narrow(d, 0, n).clone()
        for shift in range(1, size):
            x += padded.narrow(d, shift, n)
    return x


class _BoxSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int) -> torch.Tensor:
        ctx.size = size
        return _window_sum(x, size)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _window_sum(grad, ctx.size), None  # a centred window with zeros outside is a symmetric operator


def box_sum(x: torch.Tensor, size: int) -> torch.Tensor:
    """Sum of ``x`` (B, C, *S) over a centred window of odd ``size`` along every spatial axis, zeros outside."""
    return _BoxSum.apply(x, size)


class LocalNCC(nn.Module):
    """Negative squared local normalised cross-correlation, MONAI's definition with a rectangular window.

    Args:
        spatial_dims: 2 or 3.
        kernel_size: window size (odd).
        smooth_dr: floor of the local variances.
    """

    def __init__(self, spatial_dims: int, kernel_size: int = 9, smooth_dr: float = 1e-5) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.spatial_dims, self.kernel_size, self.smooth_dr = spatial_dims, kernel_size, smooth_dr

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.ndim != self.spatial_dims + 2 or pred.shape != target.shape:
            raise ValueError(
                f"pred and target must both be (B, C, {self.spatial_dims} spatial dims), "
                f"got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        return _LocalNCC.apply(pred, target, self.kernel_size, self.smooth_dr)


class _LocalNCC(torch.autograd.Function):
    """MONAI's LNCC, forward and its gradient written out: per image, window sums of five products forward and of
    three terms backward (the window sum is its own adjoint; one term at a time, as stacked 3D terms
    meet the mmap threshold again). With ``c`` the local covariance sum, ``a``/``b`` the target's/pred's variance sums
    (floored) and ``r = c^2 / (a b)``, the loss is ``-mean(r)``, and ``d/dpred = B(g_p) + 2 pred B(g_pp) +
    target B(g_tp)`` with ``B`` the window sum, ``g_tp = dL/dc``, ``g_pp = dL/db``,
    ``g_p = -(dL/dc) B(target) / V - 2 (dL/db) B(pred) / V`` (the target's the same with the roles swapped)."""

    @staticmethod
    def forward(ctx, pred: torch.Tensor, target: torch.Tensor, k: int, smooth_dr: float) -> torch.Tensor:
        volume = float(k ** (pred.ndim - 2))
        total, saved = pred.new_zeros(()), []
        # one image at a time: temporaries of a whole 3D batch exceed the C allocator's mmap threshold, and page
        # faults on every allocation made that several times slower (measured at 96x112x96, batch 2)
        for p, t in zip(pred.split(1), target.split(1)):
            t_sum, p_sum, t2_sum, p2_sum, tp_sum = (_window_sum(x, k) for x in (t, p, t * t, p * p, t * p))
            cross = tp_sum - p_sum * t_sum / volume
            t_var, p_var = t2_sum - t_sum * t_sum / volume, p2_sum - p_sum * p_sum / volume
            t_live, p_live = t_var >= smooth_dr, p_var >= smooth_dr  # where the floor passes the gradient on
            t_var, p_var = t_var.clamp_min(smooth_dr), p_var.clamp_min(smooth_dr)
            ratio = cross / (t_var * p_var)
            total = total + (cross * ratio).sum()
            saved.append((t_sum, p_sum, cross, ratio, t_var, p_var, t_live, p_live))
        ctx.save_for_backward(pred, target)
        ctx.saved, ctx.k, ctx.volume = saved, k, volume
        return -total / pred.numel()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pred, target = ctx.saved_tensors
        k, volume, weight = ctx.k, ctx.volume, -grad / pred.numel()
        grads = {0: [], 1: []}
        for p, t, (t_sum, p_sum, cross, ratio, t_var, p_var, t_live, p_live) in zip(
            pred.split(1), target.split(1), ctx.saved
        ):
            d_cross = weight * 2 * ratio  # dr/dc = 2 c / (a b); dr/db = -c^2 / (a b^2) = -ratio c / b
            for side, (x, y, x_sum, y_sum, x_var, x_live) in enumerate(
                [(p, t, p_sum, t_sum, p_var, p_live), (t, p, t_sum, p_sum, t_var, t_live)]
            ):
                if not ctx.needs_input_grad[side]:
                    continue
                d_var = torch.where(x_live, -weight * ratio * cross / x_var, 0.0)
                g_x = -(d_cross * y_sum + 2 * d_var * x_sum) / volume
                b_x, b_xx, b_xy = (_window_sum(term, k) for term in (g_x, d_var, d_cross))
                grads[side].append(b_x + 2 * x * b_xx + y * b_xy)
        return (
            torch.cat(grads[0]) if grads[0] else None,
            torch.cat(grads[1]) if grads[1] else None,
            None,
            None,
        )


def total_variation(ddf: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Anisotropic total variation of a field: mean absolute forward difference over every axis.

    Args:
        ddf: (B, ndim, *S).
        reduction: ``"mean"`` (scalar) or ``"none"`` (per batch item, shape (B,)).
    """
    ndim = ddf.ndim - 2
    terms = [ddf.diff(dim=2 + d).abs().flatten(1).mean(1) for d in range(ndim)]
    per_item = torch.stack(terms, 0).mean(0)
    return per_item.mean() if reduction == "mean" else per_item


def diffusion_loss(ddf: torch.Tensor) -> torch.Tensor:
    """MONAI's ``DiffusionLoss()`` (tested equal in value and gradient): the mean over batch, components and the
    inner voxels of the sum over axes of the squared central difference ``(u[i+1] - u[i-1]) / 2``. Written here so
    that the register path does not import MONAI, which alone took 2.5-3 s of a cold ``rli2it register`` call on
    2 CPU cores (MONAI imports every optional package it finds)."""
    nd = ddf.ndim - 2
    if nd not in (1, 2, 3) or ddf.shape[1] != nd or min(ddf.shape[2:]) <= 2:
        raise ValueError(f"expected a (B, ndim, *S) field with every spatial size > 2, got {tuple(ddf.shape)}")
    total = 0
    for d in range(nd):
        ahead = [slice(None), slice(None)] + [slice(1, -1)] * nd
        behind = list(ahead)
        ahead[2 + d], behind[2 + d] = slice(2, None), slice(None, -2)
        total = total + ((ddf[tuple(ahead)] - ddf[tuple(behind)]) / 2.0) ** 2
    return total.mean()


def _bending(ddf: torch.Tensor) -> torch.Tensor:
    from monai.losses import BendingEnergyLoss

    return BendingEnergyLoss()(ddf)


SMOOTHNESS = {"diffusion": diffusion_loss, "bending": _bending, "tv": total_variation}


def _smoothness(kind: str):
    if kind not in SMOOTHNESS:
        raise ValueError(f"smoothness must be one of {sorted(SMOOTHNESS)}, got {kind!r}")
    return SMOOTHNESS[kind]


def smoothness_loss(ddf: torch.Tensor, kind: str = "diffusion") -> torch.Tensor:
    """Smoothness penalty of a (B, ndim, *S) field; ``kind`` is one of :data:`SMOOTHNESS`."""
    return _smoothness(kind)(ddf)


def fold_barrier(ddf: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """Mean over the grid of ``relu(margin - det J)``, the Jacobian of ``x -> x + ddf(x)`` as in
    :func:`~rli2it_med.registration.metrics.jacobian_determinant` (central differences, one-sided at the faces):
    zero unless the field folds or nearly does. The determinant is differentiated only at the voxels where it is
    below ``margin`` (found without a graph; elsewhere the term and its gradient are zero), so the cost follows the
    few folding voxels rather than the grid: a 96x112x96 field's whole-grid backward takes ~0.35 s on two cores.

    Args:
        ddf: (B, ndim, *S) displacement in voxels, ndim 2 or 3.
    """
    nd = ddf.ndim - 2
    with torch.no_grad():
        active = (jacobian_determinant(ddf) < margin).nonzero()  # (N, 1 + nd): batch, then voxel indices
    if not len(active):
        return ddf.sum() * 0.0
    b, at = active[:, 0], active[:, 1:]

    def read(idx: torch.Tensor) -> torch.Tensor:  # the field at the N voxels idx, (N, nd)
        return ddf[(b, slice(None), *idx.unbind(1))]

    jac = []
    for axis in range(nd):
        lo, hi = (at[:, axis] - 1).clamp(min=0), (at[:, axis] + 1).clamp(max=ddf.shape[2 + axis] - 1)
        before, after = at.clone(), at.clone()
        before[:, axis], after[:, axis] = lo, hi
        jac.append((read(after) - read(before)) / (hi - lo).clamp(min=1).unsqueeze(1).to(ddf.dtype))
    j = torch.stack(jac, dim=2) + torch.eye(nd, dtype=ddf.dtype, device=ddf.device)  # (N, i, j) = d u_i / d x_j + I
    return torch.relu(margin - torch.linalg.det(j)).sum() / (ddf.shape[0] * ddf[0, 0].numel())


class RegistrationLoss(nn.Module):
    """``-LNCC(fixed, warped) + smooth_weight * smoothness(field)`` (:class:`LocalNCC`).

    Args:
        spatial_dims: 2 or 3.
        kernel_size: LNCC window (odd).
        smooth_weight: weight of the smoothness term.
        smoothness: one of :data:`SMOOTHNESS`.
    """

    def __init__(
        self, spatial_dims: int, kernel_size: int = 9, smooth_weight: float = 1.0, smoothness: str = "diffusion"
    ) -> None:
        super().__init__()
        _smoothness(smoothness)
        self.ncc = LocalNCC(spatial_dims, kernel_size)
        self.smooth_weight = smooth_weight
        self.smoothness = smoothness

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, ddf: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return a dict with ``loss``, ``ncc`` and ``smooth`` (scalars)."""
        ncc = self.ncc(warped, fixed)
        smooth = smoothness_loss(ddf, self.smoothness)
        return {"loss": ncc + self.smooth_weight * smooth, "ncc": ncc.detach(), "smooth": smooth.detach()}


class WarpedLabelDiceLoss(nn.Module):
    """``1 - soft Dice`` of moving label maps, one-hot over ``label_values`` and warped linearly by a field, against
    the fixed label maps: MONAI's ``DiceLoss`` per item and label, averaged (the weakly supervised term of
    :class:`~rli2it_med.registration.task.LossConfig` and of VoxelMorph's training in ``bench/``).

    ``origin`` and ``block`` compute it on a block of the image: the field is the block's, ``origin`` its corner in
    the moving image (as :func:`~rli2it_med.registration.warp.warp` takes it) and ``block`` its index in the fixed
    one-hot maps.
    """

    def __init__(self, label_values: Sequence[int]) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.label_values = tuple(label_values)
        self.dice = DiceLoss(smooth_nr=0.0, smooth_dr=1e-6)

    def forward(
        self,
        moving_seg: torch.Tensor,
        fixed_seg: torch.Tensor,
        ddf: torch.Tensor,
        origin: tuple[int, ...] | None = None,
        block: tuple[slice, ...] | None = None,
    ) -> torch.Tensor:
        moving = one_hot_labels(moving_seg, self.label_values).to(ddf.dtype)
        fixed = one_hot_labels(fixed_seg, self.label_values).to(ddf.dtype)
        if block is not None:
            fixed = fixed[block]
        return self.dice(warp(moving, ddf, origin=origin), fixed)
