"""Quality-control figure of one registration: for each of the three orthogonal mid slices (one slice in 2D), the
fixed image, the moving image before the deformable stage, the warped moving image, a fixed/warped checkerboard,
the deformed grid, the log-Jacobian with its colour bar and, given label maps, their contours on the fixed image.

Slices are shown in anatomical orientation (whatever the grid's direction): axial and coronal with the patient's
right on the left (radiological), sagittal with anterior on the left, superior (axial: anterior) at the top, each
edge marked with its letter, pixels at their physical aspect. Rendered with matplotlib's Agg canvas (no display,
no pyplot state): the figure is an RGB array, ``FIGURE_WIDTH`` px wide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rli2it_med.registration.data import intensity_window

__all__ = ["FIGURE_WIDTH", "mid_slices", "qc_picture", "slice_views"]

FIGURE_WIDTH = 1600  # px
_DPI = 100
_LPS = (("R", "L"), ("A", "P"), ("I", "S"))  # each LPS axis: (letter of its negative end, of its positive end)
_PLANE_OF_NORMAL = {0: "sagittal", 1: "coronal", 2: "axial"}
_PLANE_ORDER = ("axial", "coronal", "sagittal")
# where a panel's edge letters go (left, right, top, bottom): x, y in axes fractions and their alignments
_EDGE_TEXT = ((0.01, 0.99, 0.5, 0.5), (0.5, 0.5, 0.99, 0.01), ("left", "right", "center", "center"),
              ("center", "center", "top", "bottom"))  # fmt: skip

Volume = np.ndarray | list[np.ndarray]  # a 2D or 3D array, or its mid slices already cut (in mid_slices' order)


def mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The slices a QC figure shows, in index order: of a 3D (X, Y, Z) volume ``[:, :, Z//2]``, ``[:, Y//2, :]``,
    ``[X//2, :, :]`` (their planes depend on the grid's direction, see :func:`slice_views`), of a 2D image the
    image."""
    if volume.ndim == 2:
        return [volume]
    x, y, z = (s // 2 for s in volume.shape)
    return [volume[:, :, z], volume[:, y, :], volume[x, :, :]]


@dataclass(frozen=True)
class SliceView:
    """How to show one of :func:`mid_slices`: its plane, the array axes that run down and across the screen, which
    of them to flip, the physical aspect of a pixel (height / width) and the letters of the left, right, top and
    bottom edges."""

    plane: str
    down: int
    across: int
    flip_down: bool
    flip_across: bool
    aspect: float
    edges: tuple[str, str, str, str]

    def show(self, s: np.ndarray) -> np.ndarray:
        """The slice ``s`` (its two axes in index order) as the screen shows it (rows down, columns across)."""
        d = np.transpose(s, (self.down, self.across))
        if self.flip_down:
            d = d[::-1]
        if self.flip_across:
            d = d[:, ::-1]
        return np.ascontiguousarray(d)


def slice_views(direction: np.ndarray | None = None, spacing: tuple[float, ...] | None = None, nd: int = 3):
    """A :class:`SliceView` per slice of :func:`mid_slices` for a grid of ``direction`` (ITK's: column k the LPS
    direction of index axis k) and ``spacing``; identity and 1 mm without them."""
    direction = np.eye(nd) if direction is None else np.asarray(direction, dtype=np.float64).reshape(nd, nd)
    spacing = (1.0,) * nd if spacing is None else tuple(float(s) for s in spacing)
    if nd == 3:
        direction3 = direction
    else:  # a 2D image: an axial plane of L-R (x) and A-P (y)
        direction3 = np.eye(3)
        direction3[:2, :2] = direction
    cuts = [2, 1, 0] if nd == 3 else [2]
    dominant = [int(np.argmax(np.abs(direction3[:, k]))) for k in range(3)]  # each index axis' nearest LPS axis
    views = []
    for cut in cuts:
        axes = [k for k in range(3) if k != cut]  # the slice's two axes, in index order
        plane = _PLANE_OF_NORMAL[dominant[cut]] if nd == 3 else "axial"
        wanted_across = 1 if plane == "sagittal" else 0  # the LPS axis that runs across the screen
        across = next((i for i, k in enumerate(axes) if dominant[k] == wanted_across), 0)
        down = 1 - across
        sign = [np.sign(direction3[dominant[k], k]) or 1.0 for k in axes]
        # across: the negative LPS end (R, or A for sagittal) on the left; down: A at the top of an axial slice, S
        # at the top of the others (the positive end of z, so its index falls down the screen)
        flip_across = sign[across] < 0
        top_positive = plane != "axial"
        flip_down = (sign[down] > 0) == top_positive
        la, ld = _LPS[dominant[axes[across]]], _LPS[dominant[axes[down]]]
        left, right = la
        top, bottom = (ld[1], ld[0]) if top_positive else ld
        k_down, k_across = axes[down], axes[across]
        aspect = (spacing[k_down] if k_down < nd else 1.0) / (spacing[k_across] if k_across < nd else 1.0)
        edges = (left, right, top, bottom)
        views.append(SliceView(plane, down, across, bool(flip_down), bool(flip_across), aspect, edges))
    return views


def _boundary(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, bool)
    for ax in range(labels.ndim):
        diff = np.diff(labels, axis=ax) != 0
        pad = [(0, 0)] * labels.ndim
        pad[ax] = (0, 1)
        edge |= np.pad(diff, pad)
    return edge


def _cut(volume: Volume) -> list[np.ndarray]:
    return volume if isinstance(volume, list) else mid_slices(volume)


def _window(slices: list[np.ndarray]) -> tuple[float, float]:
    """:func:`~rli2it_med.registration.data.intensity_window` of all the slices' voxels (not subsampled: the window
    does not depend on the order the slices are stored in)."""
    lo, hi = intensity_window(np.concatenate([np.asarray(s).ravel() for s in slices]), step=1)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _rdbu(x: np.ndarray) -> np.ndarray:
    """x in [-1, 1] as RGB in [0, 1]: blue, white, red (a diverging map)."""
    x = np.clip(x, -1, 1)[..., None]
    blue, white, red = np.array([0.02, 0.19, 0.38]), np.ones(3), np.array([0.40, 0.0, 0.05])
    return np.where(x < 0, white + (white - blue) * x, white + (red - white) * x)


def _grey(v: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(v, 0, 1)[..., None], 3, axis=-1)


def _fit(panel: np.ndarray, aspect: float, width: int, height: int) -> np.ndarray:
    """``panel`` (h, w, 3) resampled (nearest) to fit ``width`` x ``height`` px at its physical aspect, centred on
    a black cell of that size with a grey frame."""
    h, w = panel.shape[:2]
    scale = min(width / w, height / (h * aspect))
    out_w, out_h = max(1, int(round(w * scale))), max(1, int(round(h * aspect * scale)))
    rows = np.minimum((np.arange(out_h) + 0.5) * h / out_h, h - 1).astype(int)
    cols = np.minimum((np.arange(out_w) + 0.5) * w / out_w, w - 1).astype(int)
    cell = np.zeros((height, width, 3))
    top, left = (height - out_h) // 2, (width - out_w) // 2
    cell[top : top + out_h, left : left + out_w] = panel[rows][:, cols]
    cell[[0, -1]], cell[:, [0, -1]] = 0.6, 0.6  # a frame: white panels (the grid) apart from the page
    return cell


# layout of the figure, px
_LEFT, _GAP, _HEAD, _TITLE, _FOOT = 70, 6, 24, 30, 52


def qc_picture(
    fixed: Volume,
    moving: Volume,
    warped: Volume,
    fixed_seg: Volume | None = None,
    grid: Volume | None = None,
    jacobian: Volume | None = None,
    warped_seg: Volume | None = None,
    direction: np.ndarray | None = None,
    spacing: tuple[float, ...] | None = None,
    title: str = "",
    moving_name: str = "moving, before",
    tile: int = 8,
) -> np.ndarray:
    """The QC figure as an RGB uint8 array (H, ``FIGURE_WIDTH``, 3): rows the planes (axial, coronal, sagittal),
    columns fixed, ``moving_name``, warped, checkerboard (``tile`` x ``tile`` squares, fixed / warped), the deformed
    grid and log2 det J (blue shrinks, red grows, folds yellow; its colour bar below) when given, and the fixed
    labels' contours (red) with the warped labels' (cyan) on the fixed image when given. Every input is a volume on
    the fixed grid, or its :func:`mid_slices` already cut (cheaper to resample); ``direction`` and ``spacing`` are
    the fixed grid's. Fixed intensities have their own window, moving and warped share one (their units may differ
    from the fixed). The panels are composed in numpy; matplotlib only sets the text."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    f_sl, m_sl, w_sl = _cut(fixed), _cut(moving), _cut(warped)
    nd = 3 if len(f_sl) == 3 else 2
    views = slice_views(direction, spacing, nd)
    order = sorted(range(len(views)), key=lambda i: _PLANE_ORDER.index(views[i].plane))
    f_lo, f_hi = _window(f_sl)
    m_lo, m_hi = _window(m_sl + w_sl)
    unit = lambda s, lo, hi: np.clip((np.asarray(s, np.float64) - lo) / (hi - lo), 0, 1)  # noqa: E731

    columns = [("fixed", "fixed"), ("moving", moving_name), ("warped", "warped moving"),
               ("check", "checkerboard fixed / warped")]  # fmt: skip
    columns += [("grid", "deformation grid")] if grid is not None else []
    columns += [("jacobian", "log2 det J (folds yellow)")] if jacobian is not None else []
    if fixed_seg is not None:
        columns += [("labels", "labels: fixed red, warped cyan" if warped_seg is not None else "fixed labels")]
    n = len(columns)
    cell_w = (FIGURE_WIDTH - _LEFT - _GAP * n) // n
    panels = []  # per row: (view, [panel arrays])
    for i in order:
        v = views[i]
        show = v.show
        fx, mv, wp = show(unit(f_sl[i], f_lo, f_hi)), show(unit(m_sl[i], m_lo, m_hi)), show(unit(w_sl[i], m_lo, m_hi))
        row = []
        for kind, _ in columns:
            if kind == "fixed":
                img = _grey(fx)
            elif kind == "moving":
                img = _grey(mv)
            elif kind == "warped":
                img = _grey(wp)
            elif kind == "check":
                yy, xx = np.indices(fx.shape)
                squares = ((yy * tile // fx.shape[0]) + (xx * tile // fx.shape[1])) % 2 == 1
                img = _grey(np.where(squares, wp, fx))
            elif kind == "grid":
                img = _grey(1 - show(np.asarray(_cut(grid)[i], np.float64)))
            elif kind == "jacobian":
                det = show(np.asarray(_cut(jacobian)[i], np.float64))
                img = _rdbu(np.log2(np.clip(det, 1e-3, None)))
                img[det <= 0] = (1.0, 0.86, 0.0)
            else:
                img = _grey(fx)
                img[_boundary(show(np.asarray(_cut(fixed_seg)[i])))] = (1.0, 0.15, 0.15)
                if warped_seg is not None:
                    img[_boundary(show(np.asarray(_cut(warped_seg)[i])))] = (0.0, 0.9, 0.9)
            row.append(img)
        panels.append((v, row))
    heights = [min(int(cell_w * max(p.shape[0] * v.aspect / p.shape[1] for p in row)) + 1, 2 * cell_w)
               for v, row in panels]  # fmt: skip
    height = _TITLE + _HEAD + sum(h + _GAP for h in heights) + (_FOOT if jacobian is not None else _GAP)
    canvas = np.ones((height, FIGURE_WIDTH, 3))
    texts = []  # (x px, y px from the top, text, size, colour, ha, va)
    if title:
        texts.append((FIGURE_WIDTH / 2, _TITLE / 2, title, 11, "black", "center", "center"))
    x0 = [_LEFT + c * (cell_w + _GAP) for c in range(n)]
    for c, (_, name) in enumerate(columns):
        texts.append((x0[c] + cell_w / 2, _TITLE + _HEAD / 2, name, 10, "black", "center", "center"))
    y = _TITLE + _HEAD
    orange = (1.0, 0.6, 0.1)
    for (v, row), h in zip(panels, heights):
        texts.append((_LEFT / 2, y + h / 2, v.plane, 10, "black", "center", "center"))
        for c, img in enumerate(row):
            canvas[y : y + h, x0[c] : x0[c] + cell_w] = _fit(img, v.aspect, cell_w, h)
            left, right, top, bottom = v.edges
            cx, cy = x0[c] + cell_w / 2, y + h / 2
            texts += [(x0[c] + 3, cy, left, 8, orange, "left", "center"),
                      (x0[c] + cell_w - 3, cy, right, 8, orange, "right", "center"),
                      (cx, y + 2, top, 8, orange, "center", "top"),
                      (cx, y + h - 2, bottom, 8, orange, "center", "bottom")]  # fmt: skip
        y += h + _GAP
    if jacobian is not None:  # the colour bar, under the Jacobian column
        c = [k for k, _ in columns].index("jacobian")
        ramp = _rdbu(np.linspace(-1, 1, cell_w - 20))[None].repeat(12, axis=0)
        canvas[y + 2 : y + 14, x0[c] + 10 : x0[c] + cell_w - 10] = ramp
        for value in (-1.0, -0.5, 0.0, 0.5, 1.0):
            x = x0[c] + 10 + (value + 1) / 2 * (cell_w - 21)
            label = {-1.0: "-1 (half)", 0.0: "0", 1.0: "1 (double)"}.get(value, f"{value:g}")
            texts.append((x, y + 17, label, 8, "black", "center", "top"))
        texts.append((x0[c] + cell_w / 2, y + 34, "log2 det J (volume change)", 8, "black", "center", "top"))

    fig = Figure(figsize=(FIGURE_WIDTH / _DPI, height / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.figimage((canvas * 255).round().astype(np.uint8), 0, 0, origin="upper")
    for x, yy, text, size, colour, ha, va in texts:
        fig.text(x / FIGURE_WIDTH, 1 - yy / height, text, fontsize=size, color=colour, ha=ha, va=va)
    fig.canvas.draw()
    return np.ascontiguousarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
