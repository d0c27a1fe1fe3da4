"""Auxiliary loss of registration: local NCC + smoothness of the accumulated field (MONAI's diffusion / bending).

:class:`LocalNCC` computes exactly MONAI's ``LocalNormalizedCrossCorrelationLoss`` (rectangular window, zero
padding, same ``smooth_dr``, tested equal in value and gradient) with window sums taken from cumulative sums in
float64 instead of 1-channel separable convolutions, whose backward is slow on CPUs: ``bench/update_cost.py``
measures both. (Float32 cumulative sums are not enough: their rounding swamps the variance floor on zero backgrounds.)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LocalNCC", "box_sum", "total_variation", "SMOOTHNESS", "smoothness_loss", "RegistrationLoss"]


def box_sum(x: torch.Tensor, size: int) -> torch.Tensor:
    """Sum of ``x`` (B, C, *S) over a centred window of odd ``size`` along every spatial axis, zeros outside."""
    r = size // 2
    for d in range(2, x.ndim):
        n = x.shape[d]
        c = torch.cumsum(x, d)
        head = c.new_zeros(*c.shape[:d], r + 1, *c.shape[d + 1 :])
        tail = c.narrow(d, n - 1, 1).expand(*c.shape[:d], r, *c.shape[d + 1 :])
        padded = torch.cat([head, c, tail], d)  # padded[j] = c[j - r - 1], clamped at both ends
        x = padded.narrow(d, 2 * r + 1, n) - padded.narrow(d, 0, n)
    return x


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
        k = self.kernel_size
        dtype = torch.float32 if pred.device.type == "mps" else torch.float64  # MPS has no float64
        # one image and one term at a time: float64 temporaries of a whole 3D batch exceed the C allocator's mmap
        # threshold, and page faults on every allocation made that 4x slower (measured at 96x112x96, batch 2)
        t_sum, p_sum, t2_sum, p2_sum, tp_sum = (
            torch.cat([box_sum(x[i : i + 1].to(dtype), k) for i in range(x.shape[0])])
            for x in (target, pred, target * target, pred * pred, target * pred)
        )
        volume = float(k**self.spatial_dims)
        t_avg, p_avg = t_sum / volume, p_sum / volume
        cross = tp_sum - p_avg * t_sum
        t_var = (t2_sum - t_avg * t_sum).clamp_min(self.smooth_dr)
        p_var = (p2_sum - p_avg * p_sum).clamp_min(self.smooth_dr)
        return -(cross * cross / (t_var * p_var)).mean().to(pred.dtype)


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


def _diffusion(ddf: torch.Tensor) -> torch.Tensor:
    from monai.losses import DiffusionLoss

    return DiffusionLoss()(ddf)


def _bending(ddf: torch.Tensor) -> torch.Tensor:
    from monai.losses import BendingEnergyLoss

    return BendingEnergyLoss()(ddf)


SMOOTHNESS = {"diffusion": _diffusion, "bending": _bending, "tv": total_variation}


def _smoothness(kind: str):
    if kind not in SMOOTHNESS:
        raise ValueError(f"smoothness must be one of {sorted(SMOOTHNESS)}, got {kind!r}")
    return SMOOTHNESS[kind]


def smoothness_loss(ddf: torch.Tensor, kind: str = "diffusion") -> torch.Tensor:
    """Smoothness penalty of a (B, ndim, *S) field; ``kind`` is one of :data:`SMOOTHNESS`."""
    return _smoothness(kind)(ddf)


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
