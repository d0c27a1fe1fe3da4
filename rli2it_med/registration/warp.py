"""Warping and composition of dense displacement fields.

Convention (the same as :class:`monai.networks.blocks.Warp`): a displacement field ``ddf`` has shape
``(B, ndim, *S)`` in voxel units, channel ``i`` moves along spatial axis ``i``, it is a pull-back
(``warped(x) = image(x + ddf(x))``) and voxel centres sit on ``align_corners=True`` positions.

MONAI's ``Warp`` rebuilds its reference grid on every call; here the grid is cached per shape, device and dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["identity_grid", "warp", "compose", "check_field"]

_GRID_CACHE: dict[tuple, torch.Tensor] = {}
_MODES = ("bilinear", "nearest")
_PADDINGS = ("border", "zeros", "reflection")


def identity_grid(shape: tuple[int, ...], device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Voxel coordinates of a grid, shape ``(ndim, *shape)``, cached (never stored in checkpoints)."""
    key = (tuple(int(s) for s in shape), torch.device(device), dtype)
    grid = _GRID_CACHE.get(key)
    if grid is None:
        axes = [torch.arange(s, device=device, dtype=dtype) for s in key[0]]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
        if len(_GRID_CACHE) >= 32:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = grid
    return grid


def check_field(image: torch.Tensor, ddf: torch.Tensor) -> int:
    """Check that ``image`` (B, C, *S) and ``ddf`` (B, ndim, *S) agree; return ndim."""
    ndim = image.ndim - 2
    if ndim not in (2, 3):
        raise ValueError(f"expected an image of shape (B, C, H, W[, D]), got {tuple(image.shape)}")
    expected = (image.shape[0], ndim, *image.shape[2:])
    if tuple(ddf.shape) != expected:
        raise ValueError(
            f"displacement field must have shape {expected} for an image of shape {tuple(image.shape)}, "
            f"got {tuple(ddf.shape)}"
        )
    if min(image.shape[2:]) < 2:
        raise ValueError(f"every spatial size must be at least 2, got {tuple(image.shape[2:])}")
    return ndim


def warp(
    image: torch.Tensor,
    ddf: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "border",
    origin: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Resample ``image`` at ``x + ddf(x)``.

    Args:
        image: (B, C, *S) tensor. Integer tensors (label maps) keep their dtype; use ``mode="nearest"`` for them.
        ddf: (B, ndim, *S) displacement in voxels.
        mode: ``"bilinear"`` (trilinear in 3D) or ``"nearest"``.
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"``.
        origin: ``ddf`` covers only the block of the image grid that starts at this voxel (its own shape then
            sets the output's); sampling still reads the whole image.

    Returns:
        (B, C, *S) warped image (S of ``ddf``).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if padding_mode not in _PADDINGS:
        raise ValueError(f"padding_mode must be one of {_PADDINGS}, got {padding_mode!r}")
    shape = image.shape[2:]
    if origin is None:
        check_field(image, ddf)
        grid = identity_grid(shape, ddf.device, ddf.dtype) + ddf
    else:
        block = tuple(ddf.shape[2:])
        ndim = image.ndim - 2
        if (
            ddf.shape[:2] != (image.shape[0], ndim)
            or len(origin) != ndim
            or any(o < 0 or o + b > s for o, b, s in zip(origin, block, shape))
        ):
            raise ValueError(
                f"a (B, ndim, *block) field at origin {tuple(origin)} must fit inside the image of shape "
                f"{tuple(image.shape)}, got field shape {tuple(ddf.shape)}"
            )
        offset = torch.tensor(origin, device=ddf.device, dtype=ddf.dtype).view(ndim, *([1] * ndim))
        grid = identity_grid(block, ddf.device, ddf.dtype) + offset + ddf
    scale = torch.tensor([2.0 / (s - 1) for s in shape], device=ddf.device, dtype=ddf.dtype)
    grid = grid.movedim(1, -1) * scale - 1.0  # (B, *S, ndim) in [-1, 1]
    grid = grid.flip(-1)  # grid_sample wants (x, y[, z]) = reversed axis order
    source = image if image.is_floating_point() else image.to(ddf.dtype)
    out = F.grid_sample(source.to(ddf.dtype), grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    if not image.is_floating_point():
        out = out.round().to(image.dtype)
    return out


def compose(previous: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Accumulate a step field onto a field: ``Phi_t(x) = a_t(x) + Phi_{t-1}(x + a_t(x))``.

    Warping with the result equals warping with ``previous`` and then with ``step``
    (``warp(warp(m, previous), step)``), up to interpolation, but the moving image is interpolated only once.

    Args:
        previous: (B, ndim, *S) accumulated field ``Phi_{t-1}``.
        step: (B, ndim, *S) step field ``a_t``.
    """
    if previous.shape != step.shape:
        raise ValueError(f"fields must have the same shape, got {tuple(previous.shape)} and {tuple(step.shape)}")
    return step + warp(previous, step, mode="bilinear", padding_mode="border")
