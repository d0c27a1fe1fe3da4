"""Moving between an image grid and a grid ``scale`` times coarser (where 3D registration runs).

A coarse voxel averages a ``scale``-wide block of fine voxels, so coarse voxel ``i`` is centred on fine coordinate
``scale * i + (scale - 1) / 2``. Displacements (in voxels) are divided by ``scale`` going down and multiplied by it
going up; the upsampled field is interpolated with ``align_corners=False``, which is exactly that mapping. (A size
that is not a multiple of ``scale`` leaves a partial last block whose true centre differs by up to half a voxel.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["coarse_shape", "downsample_image", "downsample_labels", "upsample_field"]


def coarse_shape(shape: tuple[int, ...], scale: int) -> tuple[int, ...]:
    """Spatial shape of the coarse grid (blocks at the far edges may be partial)."""
    return tuple(-(-int(s) // scale) for s in shape)


def _check_scale(x: torch.Tensor, scale: int) -> None:
    if x.ndim not in (4, 5):
        raise ValueError(f"expected (B, C, H, W[, D]), got shape {tuple(x.shape)}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")


def downsample_image(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Block average of a (B, C, *S) image (partial edge blocks average what they hold)."""
    _check_scale(image, scale)
    if scale == 1:
        return image
    pool = (F.avg_pool2d, F.avg_pool3d)[image.ndim - 4]
    return pool(image, kernel_size=scale, stride=scale, ceil_mode=True)


def downsample_labels(labels: torch.Tensor, scale: int) -> torch.Tensor:
    """Block majority of a (B, 1, *S) integer label map (ties go to the smaller label value)."""
    _check_scale(labels, scale)
    if scale == 1:
        return labels
    best_value = best_share = None
    for value in torch.unique(labels).tolist():  # one label at a time: memory stays that of one float map
        share = downsample_image((labels == value).float(), scale)
        if best_share is None:
            best_value = torch.full_like(share, value, dtype=labels.dtype)
            best_share = share
        else:
            better = share > best_share
            best_value = torch.where(better, torch.full_like(best_value, value), best_value)
            best_share = torch.where(better, share, best_share)
    return best_value


def upsample_field(field: torch.Tensor, scale: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A coarse-grid displacement field (B, ndim, *S_coarse) on the fine grid ``shape``, in fine voxels."""
    _check_scale(field, scale)
    if scale == 1:
        return field
    expected = coarse_shape(shape, scale)
    if tuple(field.shape[2:]) != expected:
        raise ValueError(
            f"a field for a {tuple(shape)} image at scale {scale} must be {expected}, got {tuple(field.shape[2:])}"
        )
    mode = ("bilinear", "trilinear")[field.ndim - 4]
    fine = F.interpolate(field, scale_factor=scale, mode=mode, align_corners=False) * scale
    return fine[(slice(None), slice(None), *(slice(0, s) for s in shape))].contiguous()
