"""Auxiliary loss of registration: local NCC (MONAI) + smoothness of the accumulated field."""

from __future__ import annotations

import torch
from monai.losses import BendingEnergyLoss, DiffusionLoss, LocalNormalizedCrossCorrelationLoss
from monai.utils import look_up_option
from torch import nn

__all__ = ["total_variation", "SMOOTHNESS", "smoothness_loss", "RegistrationLoss"]


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
    return DiffusionLoss()(ddf)


def _bending(ddf: torch.Tensor) -> torch.Tensor:
    return BendingEnergyLoss()(ddf)


SMOOTHNESS = {"diffusion": _diffusion, "bending": _bending, "tv": total_variation}


def smoothness_loss(ddf: torch.Tensor, kind: str = "diffusion") -> torch.Tensor:
    """Smoothness penalty of a (B, ndim, *S) field; ``kind`` is one of :data:`SMOOTHNESS`."""
    return look_up_option(kind, SMOOTHNESS)(ddf)


class RegistrationLoss(nn.Module):
    """``-LNCC(fixed, warped) + smooth_weight * smoothness(field)``.

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
        look_up_option(smoothness, SMOOTHNESS)
        self.ncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=spatial_dims, kernel_size=kernel_size)
        self.smooth_weight = smooth_weight
        self.smoothness = smoothness

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, ddf: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return a dict with ``loss``, ``ncc`` and ``smooth`` (scalars)."""
        ncc = self.ncc(warped, fixed)
        smooth = smoothness_loss(ddf, self.smoothness)
        return {"loss": ncc + self.smooth_weight * smooth, "ncc": ncc.detach(), "smooth": smooth.detach()}
