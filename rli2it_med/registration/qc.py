"""Quality-control picture of one registration: fixed, moving, warped and a fixed/warped checkerboard."""

from __future__ import annotations

import numpy as np

__all__ = ["qc_picture"]


def _views(volume: np.ndarray) -> list[np.ndarray]:
    """Mid slices of a 3D volume (axial, coronal, sagittal), or the 2D image; displayed with the first axis across."""
    if volume.ndim == 2:
        return [np.rot90(volume)]
    x, y, z = (s // 2 for s in volume.shape)
    return [np.rot90(volume[:, :, z]), np.rot90(volume[:, y, :]), np.rot90(volume[x, :, :])]


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
    moving: np.ndarray,
    warped: np.ndarray,
    fixed_seg: np.ndarray | None = None,
    tile: int = 8,
    grid: np.ndarray | list[np.ndarray] | None = None,
    jacobian: np.ndarray | None = None,
) -> np.ndarray:
    """An RGB uint8 montage: rows fixed, moving, warped (with the fixed labels' boundaries in red when given), a
    checkerboard of fixed and warped, and when given a deformed grid and the Jacobian determinant (log scale: blue
    shrinks, red grows, yellow folds); columns the three mid slices (one for 2D). Intensities share one window."""
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
            if name == "grid":  # one volume per view (lines in that view's plane), or one for all
                g = _views(vol[i] if isinstance(vol, list) else vol)[i]
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
