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
) -> np.ndarray:
    """An RGB uint8 montage: rows fixed, moving, warped (with the fixed labels' boundaries in red when given) and a
    checkerboard of fixed and warped; columns the three mid slices (one for 2D). Intensities share one window."""
    hi = float(np.percentile(fixed[fixed > 0], 99.5)) if np.any(fixed > 0) else 1.0
    hi = hi if hi > 0 else 1.0

    def grey(v: np.ndarray) -> np.ndarray:
        g = (np.clip(v / hi, 0, 1) * 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)

    rows = []
    for name, vol in (("fixed", fixed), ("moving", moving), ("warped", warped), ("check", None)):
        tiles = []
        for i, view in enumerate(_views(fixed)):
            if name == "check":
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
