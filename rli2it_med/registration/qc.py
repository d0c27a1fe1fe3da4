"""Quality-control picture of one registration: fixed, moving, warped and a fixed/warped checkerboard."""

from __future__ import annotations

import numpy as np

__all__ = ["mid_slices", "qc_picture"]

Volume = np.ndarray | list[np.ndarray]  # a 2D or 3D array, or its mid slices already cut (in mid_slices' order)


def mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The slices a QC picture shows: of a 3D (X, Y, Z) volume the mid axial, coronal and sagittal ones
    (``[:, :, Z//2]``, ``[:, Y//2, :]``, ``[X//2, :, :]``), of a 2D image the image."""
    if volume.ndim == 2:
        return [volume]
    x, y, z = (s // 2 for s in volume.shape)
    return [volume[:, :, z], volume[:, y, :], volume[x, :, :]]


def _views(volume: Volume) -> list[np.ndarray]:
    """:func:`mid_slices` (or the slices given), displayed with the first axis across."""
    return [np.rot90(s) for s in (volume if isinstance(volume, list) else mid_slices(volume))]


def _boundary(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, bool)
    for ax in range(labels.ndim):
        diff = np.diff(labels, axis=ax) != 0
        pad = [(0, 0)] * labels.ndim
        pad[ax] = (0, 1)
        edge |= np.pad(diff, pad)
    return edge


def qc_picture(
    fixed: np.ndarray,
    moving: Volume,
    warped: Volume,
    fixed_seg: Volume | None = None,
    tile: int = 8,
    grid: Volume | None = None,
    jacobian: Volume | None = None,
) -> np.ndarray:
    """An RGB uint8 montage: rows fixed, moving, warped (with the fixed labels' boundaries in red when given), a
    checkerboard of fixed and warped, and when given a deformed grid and the Jacobian determinant (log scale: blue
    shrinks, red grows, yellow folds); columns the three mid slices (one for 2D). Intensities share one window, from
    the fixed volume. Every other input is a volume, or its :func:`mid_slices` already cut (cheaper to resample)."""
    hi = float(np.percentile(fixed[fixed > 0], 99.5)) if np.any(fixed > 0) else 1.0
    hi = hi if hi > 0 else 1.0

    def grey(v: np.ndarray) -> np.ndarray:
        g = (np.clip(v / hi, 0, 1) * 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)

    def jet(v: np.ndarray) -> np.ndarray:
        x = np.clip(np.log(np.clip(v, 1e-3, None)) / np.log(2.0), -1, 1)  # log2 det in [-1, 1]
        rgb = np.stack([1 + np.minimum(x, 0), 1 - np.abs(x), 1 - np.maximum(x, 0)], -1)
        out = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        out[v <= 0] = (255, 220, 0)
        return out

    rows = []
    named = [("fixed", fixed), ("moving", moving), ("warped", warped), ("check", None)]
    named += [("grid", grid)] if grid is not None else []
    named += [("jacobian", jacobian)] if jacobian is not None else []
    for name, vol in named:
        tiles = []
        for i, view in enumerate(_views(fixed)):
            if name == "grid":
                g = _views(vol)[i]
                img = np.repeat((np.clip(1 - g, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
            elif name == "jacobian":
                img = jet(_views(vol)[i])
            elif name == "check":
                w = _views(warped)[i]
                yy, xx = np.indices(view.shape)
                img = grey(
                    np.where(((yy // (view.shape[0] // tile + 1)) + (xx // (view.shape[1] // tile + 1))) % 2, view, w)
                )
            else:
                img = grey(_views(vol)[i])
                if name == "warped" and fixed_seg is not None:
                    img[_boundary(_views(fixed_seg)[i])] = (255, 40, 40)
            tiles.append(np.pad(img, ((2, 2), (2, 2), (0, 0))))
        height = max(t.shape[0] for t in tiles)
        tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)
