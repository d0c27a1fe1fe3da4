"""Warping and composition of dense displacement fields.

Convention (the same as :class:`monai.networks.blocks.Warp`): a displacement field ``ddf`` has shape
``(B, ndim, *S)`` in voxel units, channel ``i`` moves along spatial axis ``i``, it is a pull-back
(``warped(x) = image(x + ddf(x))``) and voxel centres sit on ``align_corners=True`` positions.

MONAI's ``Warp`` rebuilds its reference grid on every call; here the grid is cached per shape, device and dtype.
PyTorch's 3D CPU sampler runs on one thread, forward and backward: a large 3D warp on the CPU is split into slabs
sampled on ``torch.get_num_threads()`` threads (the result is identical), and so is the gradient with respect to the
field when the image needs none (the image's gradient would sum over every slab).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

__all__ = ["identity_grid", "warp", "compose", "check_field"]

_GRID_CACHE: dict[tuple, torch.Tensor] = {}
_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, threads, pool)
_SLAB_MIN_VOXELS = 2**15  # smaller 3D warps are not worth the threads
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
    out = _grid_sample(source.to(ddf.dtype), grid, mode, padding_mode)
    if not image.is_floating_point():
        out = out.round().to(image.dtype)
    return out


_MODE_CODES = {"bilinear": 0, "nearest": 1}
_PADDING_CODES = {"zeros": 0, "border": 1, "reflection": 2}


def _grid_sample(source: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    """``F.grid_sample`` (``align_corners=True``); a large 3D CPU one runs as slabs of the output's first axis on
    ``torch.get_num_threads()`` threads, its backward too when only the grid needs a gradient."""
    threads = torch.get_num_threads()
    slabs = (
        grid.ndim == 5
        and grid.device.type == "cpu"
        and threads > 1
        and grid.shape[1] >= threads
        and grid[..., 0].numel() >= _SLAB_MIN_VOXELS
    )
    needs_grad = torch.is_grad_enabled() and (source.requires_grad or grid.requires_grad)
    if slabs and not needs_grad:
        return _sample_slabs(source, grid, mode, padding_mode, threads)
    if slabs and not source.requires_grad:
        return _SlabGridSample.apply(source, grid, mode, padding_mode)
    return F.grid_sample(source, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def _sample_slabs(source: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str, threads: int):
    def sample(part: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.grid_sample(source, part, mode=mode, padding_mode=padding_mode, align_corners=True)

    return torch.cat(list(_pool(threads).map(sample, grid.chunk(threads, dim=1))), dim=2)


class _SlabGridSample(torch.autograd.Function):
    """3D sampling of an image that needs no gradient, forward and the grid's gradient on slabs."""

    @staticmethod
    def forward(ctx, source: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
        ctx.save_for_backward(source, grid)
        ctx.codes = _MODE_CODES[mode], _PADDING_CODES[padding_mode]
        return _sample_slabs(source, grid, mode, padding_mode, torch.get_num_threads())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        source, grid = ctx.saved_tensors
        threads = torch.get_num_threads()

        def grid_grad(parts: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            part, grad_part = parts
            return torch.ops.aten.grid_sampler_3d_backward(
                grad_part.contiguous(), source, part, *ctx.codes, True, [False, True]
            )[1]

        parts = zip(grid.chunk(threads, dim=1), grad.chunk(threads, dim=2))  # the same split of the same length
        return None, torch.cat(list(_pool(threads).map(grid_grad, parts)), dim=1), None, None


def _pool(threads: int) -> ThreadPoolExecutor:
    """The warp threads of this process (a forked child or a new thread count gets its own)."""
    global _POOL
    if _POOL is None or _POOL[:2] != (os.getpid(), threads):
        if _POOL is not None and _POOL[0] == os.getpid():
            _POOL[2].shutdown(wait=False)
        _POOL = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="rli2it-warp"))
    return _POOL[2]


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
