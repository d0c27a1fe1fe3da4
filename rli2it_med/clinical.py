"""Registration of real scans: any format, orientation, spacing and size in; outputs on the fixed image's grid.

Pipeline of :func:`register_images`:

1. read and validate both images (NIfTI, NRRD, MHA, a DICOM series folder, or an in-memory image);
2. affine pre-alignment by mutual information (SimpleITK; rigid, then affine), giving ``A``: fixed-space point
   -> moving-space point;
3. resample both onto the model's working grid (2 mm, 96x112x96 in 3D / 128x128 in 2D, RAS-ordered axes as in
   training, centred on the fixed image's foreground), the moving one through ``A``;
4. the agent registers the working pair; its field ``u`` is a displacement transform ``W`` on the working grid;
5. the composite ``T = A o W`` (``W`` first) is sampled on the fixed image's own grid as a dense displacement field
   ``D(p) = T(p) - p`` in LPS millimetres, and the moving image and labels are resampled through ``D``.

So ``SimpleITK.Resample(moving, fixed, DisplacementFieldTransform(D))`` is the warped output, whichever of the
written transform files (``.h5``, ``.nii.gz``, ``.nrrd``) ``D`` is read back from.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rli2it_med.registration.data import intensity_window, scale_intensity
from rli2it_med.registration.metrics import jacobian_determinant

__all__ = [
    "WORKING_GRID",
    "read_image",
    "affine_prealign",
    "normalise_intensity",
    "rotation_starts",
    "map_contrast",
    "other_contrast",
    "working_grid",
    "register_images",
    "ClinicalResult",
    "write_transform",
    "read_transform",
    "register",
    "register_batch",
    "load_network",
    "as_kind",
]

CHECKED_KEY = "rli2it:checked"  # metadata of an image read_image has validated
SLICE_KEY = "rli2it:one_slice_volume"  # metadata of a 2D image read from a one-slice 3D file: its 3D geometry
WORKING_GRID = {3: {"spacing": 2.0, "shape": (96, 112, 96)}, 2: {"spacing": 2.0, "shape": (128, 128)}}
RAS_IN_LPS = {3: (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0), 2: (-1.0, 0.0, 0.0, -1.0)}


def _sitk():
    import SimpleITK as sitk

    return sitk


def _xyz(img: Any) -> np.ndarray:
    """The voxels of a SimpleITK image as an (X, Y[, Z][, components]) array, index order (numpy's is reversed)."""
    a = _sitk().GetArrayFromImage(img)
    nd = img.GetDimension()
    order = (*reversed(range(nd)), *range(nd, a.ndim))
    return np.ascontiguousarray(a.transpose(order))


def _image(array: np.ndarray, like: Any | None = None, vector: bool = False) -> Any:
    """An (X, Y[, Z][, components]) array as a SimpleITK image, with the geometry of ``like`` when given."""
    nd = array.ndim - 1 if vector else array.ndim
    order = (*reversed(range(nd)), *range(nd, array.ndim))
    img = _sitk().GetImageFromArray(np.ascontiguousarray(array.transpose(order)), isVector=vector)
    if like is not None:
        img.CopyInformation(like)
    return img


def _from_array_and_affine(array: np.ndarray, affine: np.ndarray) -> Any:
    """A (X, Y[, Z]) array with a voxel-to-RAS affine as a SimpleITK image (LPS)."""
    nd = np.ndim(array)
    img = _image(np.asarray(array, dtype=np.float32))
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)[:3]
    m, origin = lps[:, :3], lps[:, 3]
    spacing = np.linalg.norm(m, axis=0)
    direction = m / spacing
    img.SetOrigin(tuple(origin[:nd]))
    img.SetSpacing(tuple(spacing[:nd]))
    img.SetDirection(tuple(direction[:nd, :nd].ravel()))
    return img


def read_image(source: Any, name: str = "image") -> Any:
    """A SimpleITK image from what clinicians have, validated.

    Args:
        source: a path (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ``.mhd``, or a folder holding one DICOM series), a
            SimpleITK image, a nibabel image, a MONAI ``MetaTensor`` (its ``affine``), or an array (1 mm voxels at the
            origin).
        name: how errors refer to an in-memory source.

    Raises:
        FileNotFoundError / ValueError, one line naming the file and the problem.
    """
    sitk = _sitk()
    label = name
    if isinstance(source, (str, Path)):
        path = Path(source)
        label = str(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found")
        try:
            if path.is_dir():
                from rli2it_med.dicom import read_series

                img = read_series(path)  # in a child process: a corrupt file cannot crash or hang this one
            else:
                img = _read_file(path)
        except Exception as e:  # noqa: BLE001 - whatever a reader raises on a corrupt file: one clean error naming it
            if "NaN" in str(e):
                raise ValueError(f"{path}: {e}") from e
            reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise ValueError(f"{path}: not a readable image ({reason})") from e
    elif isinstance(source, sitk.Image):
        if source.HasMetaDataKey(CHECKED_KEY):  # read and checked here before: no second pass over the voxels
            return source
        img = source
    elif hasattr(source, "affine") and hasattr(source, "dataobj"):  # nibabel
        img = _from_array_and_affine(np.asarray(source.dataobj, dtype=np.float32), source.affine)
    elif isinstance(source, torch.Tensor) and hasattr(source, "affine"):  # MONAI MetaTensor, channel-first
        array = source.detach().cpu().numpy()
        array = array[0] if array.ndim in (3, 4) and array.shape[0] == 1 else array
        img = _from_array_and_affine(array, np.asarray(source.affine))
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
        img = _image(array)
    else:
        raise TypeError(f"{name}: unsupported image type {type(source).__name__}")
    return _validated(img, label)


def _read_file(path: Path) -> Any:
    """Read one image file. NIfTI voxels come through nibabel, because ITK's reader fills a truncated file with
    zeros and reads NaN voxels as zeros without a word; the geometry still comes from ITK's reading of the header
    (what 3D Slicer and ANTs use)."""
    sitk = _sitk()
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return sitk.ReadImage(str(path))
    import nibabel as nib

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    data = np.asarray(nib.load(str(path)).dataobj)  # raises on a short file
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise ValueError("contains NaN or infinite voxels")
    components = reader.GetNumberOfComponents()
    size = reader.GetSize()
    if components != 1 or len(size) not in (2, 3) or data.size != int(np.prod(size)):
        return sitk.ReadImage(str(path))  # vector or unusual layouts: ITK's own reading, checked later
    img = _image(np.asarray(data.reshape(size), dtype=np.float32))
    img.SetOrigin(reader.GetOrigin())
    img.SetSpacing(reader.GetSpacing())
    img.SetDirection(reader.GetDirection())
    return img


def _validated(img: Any, label: str) -> Any:
    sitk = _sitk()
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{label}: {img.GetNumberOfComponentsPerPixel()} components per voxel; expected one")
    if img.GetDimension() == 4:
        if img.GetSize()[3] != 1:
            raise ValueError(f"{label}: 4D image (size {img.GetSize()}); give one volume")
        img = sitk.Extract(img, (*img.GetSize()[:3], 0), (0, 0, 0, 0))
    if img.GetDimension() == 3 and img.GetSize()[2] == 1:  # a one-slice volume is a 2D image
        geometry = json.dumps({"origin": img.GetOrigin(), "spacing": img.GetSpacing(), "direction": img.GetDirection()})
        img = sitk.Extract(img, (*img.GetSize()[:2], 0), (0, 0, 0))
        img.SetMetaData(SLICE_KEY, geometry)
    if img.GetDimension() not in (2, 3):
        raise ValueError(f"{label}: {img.GetDimension()}D image; expected 2D or 3D")
    array = sitk.GetArrayViewFromImage(img)
    if array.size == 0:
        raise ValueError(f"{label}: empty image")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{label}: contains NaN or infinite voxels")
    if float(array.max()) == float(array.min()):
        raise ValueError(f"{label}: constant image (every voxel {float(array.min())})")
    out = sitk.Cast(img, sitk.sitkFloat32)
    if img.HasMetaDataKey(SLICE_KEY):
        out.SetMetaData(SLICE_KEY, img.GetMetaData(SLICE_KEY))
    out.SetMetaData(CHECKED_KEY, "1")
    return out


def as_slice_volume(img: Any, like: Any) -> Any:
    """A 2D output back as the one-slice volume ``like`` was read from (its 3D origin, spacing and direction)."""
    sitk = _sitk()
    if img is None or not like.HasMetaDataKey(SLICE_KEY) or img.GetDimension() != 2:
        return img
    geometry = json.loads(like.GetMetaData(SLICE_KEY))
    vol = sitk.JoinSeries(img)
    vol.SetOrigin(geometry["origin"])
    vol.SetSpacing(geometry["spacing"])
    vol.SetDirection(geometry["direction"])
    return vol


def _same_grid(a: Any, b: Any, tol: float = 1e-4) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 10)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def read_segmentation(source: Any, image: Any, name: str = "segmentation") -> Any:
    """A label map on the grid of ``image`` (error otherwise), as a 32-bit integer SimpleITK image."""
    sitk = _sitk()
    label = str(source) if isinstance(source, (str, Path)) else name
    seg = read_image(source, name) if not isinstance(source, sitk.Image) else source
    if seg.GetDimension() == 3 and seg.GetSize()[2] == 1:
        seg = sitk.Extract(seg, (*seg.GetSize()[:2], 0), (0, 0, 0))
    if not _same_grid(seg, image):
        raise ValueError(
            f"{label}: segmentation grid (size {seg.GetSize()}, spacing {seg.GetSpacing()}) differs from its image's"
        )
    return sitk.Cast(
        sitk.Round(seg) if seg.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64) else seg, sitk.sitkInt32
    )


def read_pair(
    fixed: Any, moving: Any, fixed_seg: Any | None = None, moving_seg: Any | None = None
) -> tuple[Any, Any, Any | None, Any | None]:
    """:func:`read_image` of both images and :func:`read_segmentation` of the label maps given, each read once."""
    fixed, moving = read_image(fixed, "fixed"), read_image(moving, "moving")
    fseg = None if fixed_seg is None else read_segmentation(fixed_seg, fixed, "fixed_seg")
    mseg = None if moving_seg is None else read_segmentation(moving_seg, moving, "moving_seg")
    return fixed, moving, fseg, mseg


def _foreground_centre(img: Any) -> np.ndarray:
    """Physical centre of the bounding box of voxels above 5 % of the 99th percentile."""
    a = _sitk().GetArrayViewFromImage(img)
    hi = float(np.percentile(a[(slice(None, None, 2),) * a.ndim], 99))  # every 8th voxel is plenty for a percentile
    mask = a > 0.05 * hi if hi > 0 else np.ones(a.shape, bool)
    lo_hi = []
    for ax in range(a.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(i for i in range(a.ndim) if i != ax)))
        lo_hi.append((hit[0], hit[-1]) if hit.size else (0, a.shape[ax] - 1))
    centre_zyx = [(lo + hi_) / 2.0 for lo, hi_ in lo_hi]
    return np.asarray(img.TransformContinuousIndexToPhysicalPoint(tuple(float(c) for c in centre_zyx[::-1])))


def working_grid(fixed: Any) -> Any:
    """The model's grid for this fixed image: 2 mm, RAS-ordered axes, centred on the fixed foreground."""
    sitk = _sitk()
    nd = fixed.GetDimension()
    spec = WORKING_GRID[nd]
    ref = sitk.Image(list(spec["shape"]), sitk.sitkFloat32)
    ref.SetSpacing([spec["spacing"]] * nd)
    ref.SetDirection(RAS_IN_LPS[nd])
    centre = _foreground_centre(fixed)
    half = np.asarray(ref.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in spec["shape"]]))
    origin = centre - half  # origin was 0: shift the grid's centre onto the foreground centre
    if np.allclose(fixed.GetSpacing(), ref.GetSpacing(), atol=1e-3) and np.allclose(
        fixed.GetDirection(), ref.GetDirection(), atol=1e-4
    ):
        # the fixed image already has the working spacing and axes: snap onto its voxel lattice, so resampling it
        # (and a moving image on the same grid) is exact, without interpolation blur
        index = np.round(fixed.TransformPhysicalPointToContinuousIndex(tuple(origin)))
        origin = np.asarray(fixed.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in index)))
    ref.SetOrigin(tuple(origin))
    return ref


AFFINE_SPACING = 4.0


def affine_prealign(fixed: Any, moving: Any, seed: int = 0) -> Any:
    """Rigid then affine registration by Mattes mutual information on images resampled to ``AFFINE_SPACING`` mm
    (two pyramid levels, twice that and that); returns the affine transform mapping fixed-space points to
    moving-space points. The agent corrects what an affine fit at that scale leaves.

    The same ``seed`` (>= 0) gives the same transform: ITK's regular sampling jitters its points at random, and reads
    a seed of 0 as "the wall clock", so the sampler gets ``seed + 1``.
    """
    sitk = _sitk()
    nd = fixed.GetDimension()
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")

    def run(initial: Any, iterations: int, coarse_only: bool = False) -> Any:
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.REGULAR)  # a jittered grid (RANDOM varies with thread scheduling)
        reg.SetMetricSamplingPercentage(0.2, seed + 1)  # ITK's seed 0 is sitkWallClock
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=1e-2, numberOfIterations=iterations, gradientMagnitudeTolerance=1e-6
        )
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([2] if coarse_only else [2, 1])
        reg.SetSmoothingSigmasPerLevel([AFFINE_SPACING] if coarse_only else [AFFINE_SPACING, AFFINE_SPACING / 2])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.SetInitialTransform(initial, inPlace=False)
        return reg.Execute(fixed2, moving2)

    fixed2 = _at_spacing(fixed, AFFINE_SPACING)
    moving2 = _at_spacing(moving, AFFINE_SPACING)
    rigid0 = sitk.Euler3DTransform() if nd == 3 else sitk.Euler2DTransform()
    rigid0 = sitk.CenteredTransformInitializer(fixed2, moving2, rigid0, sitk.CenteredTransformInitializerFilter.MOMENTS)
    # a rigid fit from the centred start alone stops in a local optimum once the head is turned by ~20 degrees or
    # more: fit from the best few rotations of a coarse search at the coarse level, then fully from the best fit
    coarse = _at_spacing(fixed2, 2 * AFFINE_SPACING), _at_spacing(moving2, 2 * AFFINE_SPACING)
    fits = []
    for start in rotation_starts(*coarse, rigid0, seed):
        fit = _unwrapped(run(start, 50, coarse_only=True))
        fits.append((_metric(*coarse, fit, seed), fit))
    rigid = run(min(fits, key=lambda f: f[0])[1], 100)
    affine = sitk.AffineTransform(nd)
    rigid_tx = _unwrapped(rigid)
    affine.SetMatrix(rigid_tx.GetMatrix())
    affine.SetTranslation(rigid_tx.GetTranslation())
    affine.SetCenter(rigid_tx.GetCenter())
    result = run(affine, 100)
    result = result.GetNthTransform(0) if isinstance(result, sitk.CompositeTransform) else result
    return sitk.AffineTransform(result)


def _unwrapped(transform: Any) -> Any:
    """The Euler transform an ``ImageRegistrationMethod`` returned (it wraps the result in a composite)."""
    sitk = _sitk()
    tx = transform.GetNthTransform(0) if isinstance(transform, sitk.CompositeTransform) else transform
    return (sitk.Euler3DTransform if tx.GetDimension() == 3 else sitk.Euler2DTransform)(tx)


ROTATION_GRID = {  # degrees about the LPS axes x (left-right: nodding), y (roll) and z (yaw); 2D: about the normal
    3: [(rx, ry, rz) for rx in (-40, -20, 0, 20, 40) for ry in (-20, 0, 20) for rz in (-20, 0, 20)],
    2: [(r,) for r in range(-40, 41, 10)],
}
ROTATION_STARTS = 3  # rigid fits started from the best this many rotations of the grid


def _metric(fixed: Any, moving: Any, transform: Any, seed: int) -> float:
    """Mattes mutual information (ITK's sign: lower is better) of ``moving`` through ``transform`` on ``fixed``."""
    sitk = _sitk()
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.5, seed + 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(transform, inPlace=False)
    return float(reg.MetricEvaluate(fixed, moving))


def rotation_starts(fixed: Any, moving: Any, centred: Any, seed: int = 0) -> list[Any]:
    """Starts for the rigid fit: ``centred`` (centres of mass matched) turned by each rotation of
    ``ROTATION_GRID`` about the fixed centre, scored by mutual information on ``fixed`` and ``moving`` (the pair at
    twice ``AFFINE_SPACING`` in :func:`affine_prealign`); the best
    ``ROTATION_STARTS`` (the unturned start always among them), or the unturned start alone when it scores best
    (near-aligned scans, the usual case, cost one fit)."""
    sitk = _sitk()
    nd = fixed.GetDimension()
    scored = []
    for angles in ROTATION_GRID[nd]:
        tx = (sitk.Euler3DTransform if nd == 3 else sitk.Euler2DTransform)(centred)
        if nd == 3:
            tx.SetRotation(*(float(np.radians(a)) for a in angles))
        else:
            tx.SetAngle(float(np.radians(angles[0])))
        scored.append((_metric(fixed, moving, tx, seed), not any(angles), tx))
    scored.sort(key=lambda s: s[0])
    if scored[0][1]:
        return [scored[0][2]]
    best = [tx for _, _, tx in scored[:ROTATION_STARTS]]
    if not any(unturned for _, unturned, _ in scored[:ROTATION_STARTS]):
        best[-1] = next(tx for _, unturned, tx in scored if unturned)
    return best


def _at_spacing(img: Any, spacing: float) -> Any:
    """``img`` reduced to about ``spacing`` mm for the affine metric: block averages (``BinShrink``, integer factor
    per axis: cheap anti-aliasing even for 1 mm volumes); axes already that coarse are left alone."""
    sitk = _sitk()
    factors = [max(1, int(round(spacing / s))) for s in img.GetSpacing()]
    return img if all(f == 1 for f in factors) else sitk.BinShrink(img, factors)


def normalise_intensity(img: Any) -> Any:
    """``img`` as float32 with its background at 0 and its bright end at 1, whatever its units: ``(x - lo) / (hi -
    lo)`` clipped below at 0, ``lo`` the 0.5th percentile of all voxels (the background level: 0, a scanner offset,
    air noise) and ``hi`` the 99.5th percentile of the voxels above ``lo``. The same image in other units (``a x + b``,
    ``a > 0``: int16 scanner values, an offset, a rescale slope) gives the same result; an image whose background
    is 0 and whose top is 1 (the training data) is left as it is. Geometry is kept."""
    sitk = _sitk()
    lo, hi = intensity_window(sitk.GetArrayViewFromImage(img))
    out = sitk.Cast(img, sitk.sitkFloat32)
    if hi <= lo:
        return out * 0.0
    return sitk.Clamp((out - lo) * (1.0 / (hi - lo)), sitk.sitkFloat32, 0.0, float(np.finfo(np.float32).max))


CONTRASTS = ("auto", "map", "same")
CONTRAST_BINS = 64


def map_contrast(fixed: np.ndarray, moving: np.ndarray, bins: int = CONTRAST_BINS) -> np.ndarray:
    """``moving`` (values in [0, 1]) with each intensity replaced by the mean fixed intensity at the voxels of that
    moving intensity (``CONTRAST_BINS`` bins, linear between bin centres): the regression of the fixed image on the
    moving one, which turns e.g. a T2 contrast into a T1 one once the pair is roughly aligned (affinely). Empty bins
    take their neighbours' values. Same shape and dtype as ``moving``."""
    idx = np.clip((moving * bins).astype(np.int64), 0, bins - 1).ravel()
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    total = np.bincount(idx, weights=fixed.ravel().astype(np.float64), minlength=bins)
    centres = (np.arange(bins) + 0.5) / bins
    filled = count > 0
    if not filled.any():
        return moving.copy()
    means = np.interp(centres, centres[filled], total[filled] / count[filled])
    return np.interp(moving, centres, means).astype(moving.dtype)


def other_contrast(fixed: np.ndarray, moving: np.ndarray, threshold: float = 0.5) -> bool:
    """Whether an affinely aligned pair (values in [0, 1]) shows two contrasts: the correlation of the two images
    over their joint foreground is below ``threshold`` while the moving image mapped onto the fixed contrast
    (:func:`map_contrast`) correlates better by at least 0.2 (a T1 pair, even with skull, correlates above 0.8)."""
    fg = (fixed > 0.05) | (moving > 0.05)
    if fg.sum() < 100:
        return False
    f, m = fixed[fg].astype(np.float64), moving[fg].astype(np.float64)
    direct = float(np.corrcoef(f, m)[0, 1])
    mapped = float(np.corrcoef(f, map_contrast(fixed, moving)[fg].astype(np.float64))[0, 1])
    return direct < threshold and mapped > direct + 0.2


def _to_working_array(img: Any) -> np.ndarray:
    """(X, Y[, Z]) float32 array in [0, 1], the layout and intensity scale training used."""
    return scale_intensity(_xyz(img))


TAPER = 8


def _border_taper(shape: tuple[int, ...]) -> np.ndarray:
    """1 inside, falling linearly to 0 at the outermost voxel over ``TAPER`` voxels on every face."""
    weight = np.ones(shape)
    for ax, n in enumerate(shape):
        i = np.arange(n)
        ramp = np.clip(np.minimum(i, n - 1 - i) / TAPER, 0, 1)
        weight = weight * ramp.reshape([-1 if a == ax else 1 for a in range(len(shape))])
    return weight


@dataclass
class ClinicalResult:
    """Outputs on the fixed image's grid (SimpleITK images) and statistics.

    Attributes:
        warped: moving image resampled into the fixed space (linear).
        transform: the registration as an ITK ``DisplacementFieldTransform`` on the fixed grid (LPS mm,
            fixed -> moving, affine included); ``displacement`` is its field as an image.
        warped_seg: moving labels, nearest neighbour (None without ``moving_seg``).
        jacobian: determinant of the transform's Jacobian on the fixed grid, ``det(A) * det(J_W)``.
        affine: the pre-alignment (None with ``affine=False``).
        stats: Dice per label after the affine and after registration (with both segmentations), folding %,
            Jacobian summary, seconds.
    """

    warped: Any
    transform: Any
    warped_seg: Any | None
    jacobian: Any
    affine: Any | None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def displacement(self) -> Any:
        return self.transform.GetDisplacementField()


def _check_memory(fixed: Any, moving: Any) -> None:
    """Refuse a pair whose outputs cannot fit (see :mod:`rli2it_med.memory`) before any of them is computed."""
    from rli2it_med import memory

    f, m = fixed.GetSize(), moving.GetSize()
    need = memory.registration_bytes(math.prod(f), math.prod(m))
    what = f"registering a {'x'.join(map(str, m))} moving image onto a {'x'.join(map(str, f))} fixed image"
    memory.check_fits(need, what)


def register_images(
    fixed: Any,
    moving: Any,
    net: Any,
    fixed_seg: Any | None = None,
    moving_seg: Any | None = None,
    steps: int | None = None,
    affine: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    inferer: Any | None = None,
    contrast: str = "auto",
) -> ClinicalResult:
    """Register ``moving`` onto ``fixed`` (see the module docstring); ``net`` is a
    :class:`~rli2it_med.api.StepwiseRegistrationNet` of the images' dimension, run on the working pair through
    ``inferer(inputs, net)`` when a MONAI inferer is given (the bundles), else ``net.rollout``.

    ``contrast``: ``"auto"`` maps the moving image's intensities onto the fixed image's contrast
    (:func:`map_contrast`) when the affinely aligned pair looks like two contrasts (:func:`other_contrast`: a T2 or
    FLAIR moving image onto a T1), ``"map"`` always, ``"same"`` never. The model was trained on one contrast."""
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {', '.join(CONTRASTS)}; got {contrast!r}")
    sitk = _sitk()
    start = time.perf_counter()
    fixed, moving, fseg, mseg = read_pair(fixed, moving, fixed_seg, moving_seg)
    if fixed.GetDimension() != moving.GetDimension():
        raise ValueError(f"fixed is {fixed.GetDimension()}D but moving is {moving.GetDimension()}D")
    nd = fixed.GetDimension()
    if net.spatial_dims != nd:
        raise ValueError(f"{nd}D images for a {net.spatial_dims}D model")
    _check_memory(fixed, moving)

    t0 = time.perf_counter()
    fixed_n, moving_n = normalise_intensity(fixed), normalise_intensity(moving)  # units out: background 0, top 1
    pre = affine_prealign(fixed_n, moving_n, seed) if affine else sitk.AffineTransform(nd)
    t_affine = time.perf_counter() - t0
    ref = working_grid(fixed_n)
    fixed_w = sitk.Resample(fixed_n, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    moving_w = sitk.Resample(moving_n, ref, pre, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    fixed_a, moving_a = _to_working_array(fixed_w), _to_working_array(moving_w)
    mapped = contrast == "map" or (contrast == "auto" and other_contrast(fixed_a, moving_a))
    if mapped:
        moving_a = map_contrast(fixed_a, moving_a)
    pair = torch.stack([torch.from_numpy(fixed_a), torch.from_numpy(moving_a)])[None].to(device)
    t0 = time.perf_counter()
    net = net.to(device).eval()
    with torch.no_grad():
        if inferer is not None:
            if steps is not None and steps != net.steps:
                raise ValueError("with an inferer the episode length is the network's (set it on the network)")
            u = inferer(pair, net)[0].cpu().double().numpy()
        else:
            u = net.rollout(pair[:, :1], pair[:, 1:], steps)[0][0].cpu().double().numpy()
    t_agent = time.perf_counter() - t0

    # ITK treats points outside the working grid as not displaced: taper u to zero over its outer TAPER voxels so
    # the composite stays continuous (no fold) where the fixed image extends beyond the working grid
    u = u * _border_taper(u.shape[1:])
    # working-grid voxel displacement (axis i = ITK index i) -> LPS mm, as a displacement transform W
    direction = np.asarray(ref.GetDirection()).reshape(nd, nd)
    mm = np.einsum("ij,j...->i...", direction * np.asarray(ref.GetSpacing()), u)  # (nd, X, Y[, Z])
    vec = _image(np.moveaxis(mm, 0, -1), like=ref, vector=True)
    composite = sitk.CompositeTransform(nd)
    composite.AddTransform(pre)
    composite.AddTransform(sitk.DisplacementFieldTransform(vec))  # applied first
    to_field = sitk.TransformToDisplacementFieldFilter()
    to_field.SetReferenceImage(fixed)
    to_field.SetOutputPixelType(sitk.sitkVectorFloat64)
    transform = sitk.DisplacementFieldTransform(to_field.Execute(composite))  # owns the field: no copy
    warped = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    warped_seg = None
    if mseg is not None:
        warped_seg = sitk.Resample(mseg, fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkInt32)
    # chain rule, T = A o W: det J_T(p) = det(A) det J_W(p); J_W from the working grid (cheap), then onto the fixed
    # grid (outside the working grid W is the identity)
    det_w = jacobian_determinant(torch.from_numpy(u).float()[None])[0].numpy()  # float32: half the time
    det_img = _image(det_w, like=ref)
    det_a = float(np.linalg.det(np.asarray(pre.GetMatrix()).reshape(nd, nd)))
    jacobian = sitk.Resample(det_img, fixed, sitk.Transform(), sitk.sitkLinear, 1.0, sitk.sitkFloat32) * det_a
    seconds = time.perf_counter() - start

    jac = sitk.GetArrayViewFromImage(jacobian)
    stats: dict[str, Any] = {
        "seconds": seconds,
        "seconds_affine": t_affine,
        "seconds_agent": t_agent,
        "folding_percent": float((jac <= 0).mean() * 100),
        "jacobian_min": float(jac.min()),
        "jacobian_max": float(jac.max()),
        "jacobian_mean": float(jac.mean()),
        "affine": affine,
        "contrast_mapped": bool(mapped),
    }
    if fseg is not None and mseg is not None:

        def moved_labels(tx: Any) -> np.ndarray:
            return sitk.GetArrayFromImage(sitk.Resample(mseg, fixed, tx, sitk.sitkNearestNeighbor, 0, sitk.sitkInt32))

        target = sitk.GetArrayViewFromImage(fseg)
        stats["dice_before"] = dice_by_label(target, moved_labels(sitk.Transform()))
        stats["dice_affine"] = dice_by_label(target, moved_labels(pre)) if affine else stats["dice_before"]
        stats["dice"] = dice_by_label(target, sitk.GetArrayViewFromImage(warped_seg))
        mean = lambda d: float(np.mean(list(d.values()))) if d else float("nan")  # noqa: E731
        stats["dice_before_mean"], stats["dice_mean"] = mean(stats["dice_before"]), mean(stats["dice"])
    return ClinicalResult(warped, transform, warped_seg, jacobian, pre if affine else None, stats)


def dice_by_label(target: np.ndarray, moved: np.ndarray) -> dict[str, float]:
    """Dice of every non-zero label of ``target`` with ``moved``, from one confusion count of the two maps (a
    single pass over a 1 mm volume; :func:`~rli2it_med.registration.metrics.dice_per_label` one-hot encodes)."""
    target = np.asarray(target, dtype=np.int64).ravel()
    moved = np.asarray(moved, dtype=np.int64).ravel()
    top = max(int(target.max(initial=0)), int(moved.max(initial=0)))
    if min(int(target.min(initial=0)), int(moved.min(initial=0))) >= 0 and top < 1 << 20:
        # label values that index a count (the usual case): three bincounts, no sorting of a 1 mm volume
        counts = [np.bincount(x, minlength=top + 1) for x in (target, moved, target[target == moved])]
        present = np.flatnonzero(counts[0][1:]) + 1
        return {str(int(v)): float(2 * counts[2][v] / max(counts[0][v] + counts[1][v], 1)) for v in present.tolist()}
    values = np.unique(target)
    n = len(values)
    col = np.searchsorted(values, moved)
    col[col == n] = 0
    col = np.where(values[col] == moved, col, n)  # labels the target lacks share column n
    confusion = np.bincount(np.searchsorted(values, target) * (n + 1) + col, minlength=n * (n + 1)).reshape(n, n + 1)
    scores = 2 * np.diag(confusion[:, :n]) / np.maximum(confusion.sum(1) + confusion.sum(0)[:n], 1)
    return {str(int(v)): float(d) for v, d in zip(values, scores) if v}


def write_transform(path: str | Path, transform: Any) -> None:
    """Write a displacement-field transform as ``.h5``/``.tfm`` (ITK ``DisplacementFieldTransform``, float64),
    ``.nii``/``.nii.gz`` (vector intent, dim[5] = 3) or ``.nrrd`` (vector kind), atomically. The image formats hold
    float32 vectors, as ANTs writes its warps: half the size and write time of float64, and displacements kept to
    ~1e-7 of their length (nanometres)."""
    from rli2it_med.io import atomic_output

    sitk = _sitk()
    path = Path(path)
    name = path.name.lower()
    with atomic_output(path) as tmp:
        if name.endswith((".h5", ".hdf5", ".tfm")):
            sitk.WriteTransform(transform, str(tmp))
        elif name.endswith((".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")):
            field = sitk.Cast(transform.GetDisplacementField(), sitk.sitkVectorFloat32)
            sitk.WriteImage(field, str(tmp), True)  # compressed
        else:
            raise ValueError(f"{path}: unknown transform format (use .h5, .nii.gz or .nrrd)")


def jacobian_map(transform: Any, reference: Any) -> Any:
    """Determinant of the Jacobian of ``p -> transform(p)`` on the grid of ``reference``, by central differences
    in physical space (ITK's ``DisplacementFieldJacobianDeterminantFilter`` ignores the image direction, which is
    wrong for the RAS-ordered and oblique grids of clinical scans)."""
    sitk = _sitk()
    nd = reference.GetDimension()
    to_field = sitk.TransformToDisplacementFieldFilter()
    to_field.SetReferenceImage(reference)
    to_field.SetOutputPixelType(sitk.sitkVectorFloat32)
    field_zyx = sitk.GetArrayFromImage(to_field.Execute(transform))  # (*S reversed, nd)
    index_to_mm = np.asarray(reference.GetDirection()).reshape(nd, nd) * np.asarray(reference.GetSpacing())
    mm_to_index = np.linalg.inv(index_to_mm).astype(np.float32)
    # d field / d index (numpy axes run z, y, x: reverse to index order i, j, k)
    grads = np.gradient(field_zyx, axis=tuple(range(nd)))[::-1]
    jac = np.stack(grads, axis=-1)  # (..., component, index axis)
    jac = jac @ mm_to_index + np.eye(nd, dtype=np.float32)
    det = sitk.GetImageFromArray(np.linalg.det(jac).astype(np.float32))
    det.CopyInformation(reference)
    return det


def read_transform(path: str | Path) -> Any:
    """A displacement-field transform from any file :func:`write_transform` writes."""
    sitk = _sitk()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        if path.name.lower().endswith((".h5", ".hdf5", ".tfm")):
            tx = sitk.ReadTransform(str(path))
            tx = (
                tx.GetNthTransform(0)
                if isinstance(tx, sitk.CompositeTransform) and tx.GetNumberOfTransforms() == 1
                else tx
            )
            return sitk.DisplacementFieldTransform(tx) if tx.GetName() == "DisplacementFieldTransform" else tx
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ValueError(f"{path}: not a readable transform ({str(e).strip().splitlines()[-1]})") from e
    if img.GetNumberOfComponentsPerPixel() != img.GetDimension():
        raise ValueError(f"{path}: not a displacement field ({img.GetNumberOfComponentsPerPixel()} components)")
    return sitk.DisplacementFieldTransform(sitk.Cast(img, sitk.sitkVectorFloat64))


# ------------------------------------------------------------------------------------------------ files and batch

DEFAULT_BUNDLES = {3: "brain_mri_rl_registration", 2: "brain_mri_rl_registration_2d"}


def load_network(model: str | Path | None, spatial_dims: int) -> Any:
    """The network of a bundle folder (its ``models/model.pt``) or of a checkpoint; ``None``: the shipped brain MRI
    bundle of that dimension."""
    from rli2it_med.api import StepwiseRegistrationNet
    from rli2it_med.bundle import bundle_root

    if model is None:
        model = bundle_root(DEFAULT_BUNDLES[spatial_dims])
    path = Path(model)
    if path.is_dir():
        path = path / "models" / "model.pt"
    net = StepwiseRegistrationNet.from_checkpoint(path)
    if net.spatial_dims != spatial_dims:
        raise ValueError(f"{path}: a {net.spatial_dims}D model for {spatial_dims}D images")
    return net


def image_dimension(source: Any) -> int:
    """2 or 3, after the same validation as :func:`read_image`."""
    return read_image(source).GetDimension()


def write_image(path: str | Path, image: Any) -> None:
    """Write a SimpleITK image (format from the extension: .nii.gz, .nrrd, .mha ...) atomically."""
    from rli2it_med.io import atomic_output

    with atomic_output(path) as tmp:
        _sitk().WriteImage(image, str(tmp), True)


def check_writable(paths: list[str | Path | None]) -> None:
    """Fail before any work when an output's folder cannot be created or written."""
    import os

    for p in paths:
        if p is None:
            continue
        folder = Path(p).resolve().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{folder}: output directory cannot be created ({e.strerror})") from e
        if not os.access(folder, os.W_OK):
            raise ValueError(f"{folder}: output directory not writable")


def qc_title(stats: dict[str, Any]) -> str:
    """One line of a registration's statistics for its QC figure: Dice (mean over labels) before, after the
    affine and after registration when known, folding % and the Jacobian's range (not the time taken: the same
    registration gives the same figure)."""
    parts = []
    if "dice_mean" in stats:
        affine = np.mean(list(stats["dice_affine"].values())) if stats.get("dice_affine") else float("nan")
        before, after = stats["dice_before_mean"], stats["dice_mean"]
        parts.append(f"Dice {before:.3f} before, {affine:.3f} affine, {after:.3f} after")
    if "folding_percent" in stats:
        parts.append(f"folding {stats['folding_percent']:.3f} %")
    if "jacobian_min" in stats:
        parts.append(f"det J {stats['jacobian_min']:.2f} to {stats['jacobian_max']:.2f}")
    return "   |   ".join(parts)


def qc_figure(result: ClinicalResult, fixed: Any, moving: Any, fixed_seg: Any | None = None) -> np.ndarray:
    """The QC figure of a clinical registration (:func:`rli2it_med.registration.qc.qc_picture`, an RGB array
    1600 px wide): fixed, moving (affinely placed in the fixed space), warped, checkerboard, deformed grid,
    log-Jacobian and, with ``fixed_seg``, the fixed and warped labels' contours on the fixed image, on the three
    orthogonal mid slices in anatomical orientation, titled with :func:`qc_title`. The bundles, ``rli2it
    register`` and :func:`save_outputs` all write this figure. What has to be resampled for it is resampled on
    those slices only (a 1 mm head is 16 M voxels, a slice 65 k)."""
    from rli2it_med.registration.qc import qc_picture

    sitk = _sitk()
    fixed = read_image(fixed)
    moving = read_image(moving)
    pre = result.affine if result.affine is not None else sitk.Transform()
    nd, size = fixed.GetDimension(), fixed.GetSize()
    # the fixed grid cut to each mid slice (qc.mid_slices' order), as 1-voxel-thick images
    if nd == 3:
        x, y, z = (n // 2 for n in size)
        cuts = [(fixed[:, :, z : z + 1], 2), (fixed[:, y : y + 1, :], 1), (fixed[x : x + 1, :, :], 0)]
    else:
        cuts = [(fixed, None)]

    def on_cut(image: Any, cut: Any, axis: int | None, transform: Any) -> np.ndarray:
        a = _xyz(sitk.Resample(image, cut, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        return a if axis is None else a.squeeze(axis)

    moved = [on_cut(moving, cut, axis, pre) for cut, axis in cuts]
    # the deformed grid: lines every 8 voxels along the view's two in-plane axes, pulled through the transform like
    # the moving image
    on_line = [(np.arange(n) % 8 == 0).reshape([-1 if a == ax else 1 for a in range(nd)]) for ax, n in enumerate(size)]
    grids = []
    for (cut, axis), (a, b) in zip(cuts, [(0, 1), (0, 2), (1, 2)] if nd == 3 else [(0, 1)]):
        lines = _image(np.broadcast_to(on_line[a] | on_line[b], size).astype(np.float32), like=fixed)
        grids.append(on_cut(lines, cut, axis, result.transform))
    seg = None if fixed_seg is None else _xyz(read_segmentation(fixed_seg, fixed))
    # the results may have come back as the kind of the fixed image (register): read them as images again
    warped_seg = None
    if seg is not None and result.warped_seg is not None:
        warped_seg = _xyz(read_segmentation(result.warped_seg, fixed, "warped segmentation"))
    warped, jacobian = (_xyz(read_image(x, name)) for x, name in ((result.warped, "warped"), (result.jacobian, "jac")))
    return qc_picture(
        _xyz(fixed), moved, warped, seg, grids, jacobian, warped_seg,
        direction=np.asarray(fixed.GetDirection()), spacing=fixed.GetSpacing(), title=qc_title(result.stats),
        moving_name="moving, affine only" if result.affine is not None else "moving, before",
    )  # fmt: skip


def save_outputs(
    result: ClinicalResult,
    fixed: Any,
    moving: Any,
    fixed_seg: Any | None = None,
    warped_out: str | Path | None = None,
    warped_seg_out: str | Path | None = None,
    transform_out: str | Path | None = None,
    jacobian_out: str | Path | None = None,
    qc_out: str | Path | None = None,
    stats_out: str | Path | None = None,
) -> None:
    """Write whichever outputs are asked for, each atomically; the statistics last (a batch's completion mark)."""
    from rli2it_med.io import save_json, save_png

    like = read_image(fixed, "fixed")
    if warped_out:
        write_image(warped_out, as_slice_volume(result.warped, like))
    if warped_seg_out:
        if result.warped_seg is None:
            raise ValueError("--warped-seg-out needs --moving-seg")
        write_image(warped_seg_out, as_slice_volume(result.warped_seg, like))
    if transform_out:
        write_transform(transform_out, result.transform)
    if jacobian_out:
        write_image(jacobian_out, as_slice_volume(result.jacobian, like))
    if qc_out:
        save_png(qc_out, qc_figure(result, fixed, moving, fixed_seg))
    if stats_out:
        save_json(stats_out, result.stats)


BATCH_COLUMNS = ("fixed", "moving", "fixed_seg", "moving_seg", "id")


def read_pairs_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a pairs CSV: columns ``fixed``, ``moving`` and optionally ``fixed_seg``, ``moving_seg``, ``id``
    (default: the row number); relative paths are read from the CSV's folder."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"fixed", "moving"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a header with at least 'fixed' and 'moving' columns")
    unknown = set(rows[0]) - set(BATCH_COLUMNS)
    if unknown:
        raise ValueError(f"{path}: unknown columns {sorted(unknown)}; known: {list(BATCH_COLUMNS)}")
    out = []
    for i, row in enumerate(rows):
        item = {k: (str((path.parent / v).resolve()) if v and k != "id" else v) for k, v in row.items() if v}
        item["id"] = row.get("id") or f"pair{i:04d}"
        out.append(item)
    ids = [r["id"] for r in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: repeated ids")
    return out


def register_batch(
    pairs_csv: str | Path,
    out_dir: str | Path,
    model: str | Path | None = None,
    steps: int | None = None,
    affine: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    refine: int | Sequence[int] | None = None,
) -> dict[str, Any]:
    """Register every row of ``pairs_csv`` into ``out_dir/<id>/`` (warped, warped_seg, transform.h5,
    jacobian, qc.png, stats.json) and write ``summary.csv`` / ``summary.json``. A model is loaded once per
    dimension (``refine``, when given, replaces its refinement iterations: N, or (C, N)); a pair whose
    ``stats.json`` exists is skipped (re-runs resume); a failing pair is reported and the rest go on. Under
    ``torchrun`` (an initialised process group) process r registers rows r, r + N, ... and process 0 merges
    everyone's results, in the CSV's order, into the summary."""
    import csv
    import io as _io

    from tqdm.auto import tqdm

    from rli2it_med.agent import distributed as ddp
    from rli2it_med.io import atomic_write_bytes, load_json, save_json

    out_dir = Path(out_dir)
    check_writable([out_dir / "summary.json"])
    rows = read_pairs_csv(pairs_csv)
    rank, world = ddp.rank(), ddp.world_size()
    nets: dict[int, Any] = {}
    mine: list[tuple[int, dict[str, Any]]] = []
    share = range(rank, len(rows), world)
    desc = "register" if world == 1 else f"register (process 0 of {world})"
    for i in tqdm(share, disable=not progress or rank > 0, desc=desc, unit="pair"):
        row = rows[i]
        folder = out_dir / row["id"]
        entry: dict[str, Any] = {"id": row["id"], "fixed": row["fixed"], "moving": row["moving"]}
        if (folder / "stats.json").is_file():  # written last: the pair's outputs are complete
            mine.append((i, entry | {"status": "done before"} | _flat(load_json(folder / "stats.json"))))
            continue
        try:
            fixed, moving, fseg, mseg = read_pair(
                row["fixed"], row["moving"], row.get("fixed_seg"), row.get("moving_seg")
            )
            nd = fixed.GetDimension()
            if nd not in nets:
                nets[nd] = load_network(model, nd)
                if refine is not None:
                    nets[nd].refine = refine
            result = register_images(fixed, moving, nets[nd], fseg, mseg, steps, affine, seed, device)
            save_outputs(
                result, fixed, moving, fseg,
                warped_out=folder / "warped.nii.gz",
                warped_seg_out=folder / "warped_seg.nii.gz" if row.get("moving_seg") else None,
                transform_out=folder / "transform.h5",
                jacobian_out=folder / "jacobian.nii.gz",
                qc_out=folder / "qc.png",
                stats_out=folder / "stats.json",
            )  # fmt: skip
            mine.append((i, entry | {"status": "ok"} | _flat(result.stats)))
        except Exception as e:  # noqa: BLE001 - one bad pair is reported, the batch goes on
            mine.append((i, entry | {"status": "failed", "error": f"{type(e).__name__}: {e}"}))
    gathered = ddp.gather_to_first(mine)
    if gathered is None:
        return {"pairs": len(mine), "failed": [r for _, r in mine if r["status"] == "failed"], "merged": False}
    results = [r for _, r in sorted((item for part in gathered for item in part), key=lambda item: item[0])]
    failed = [r for r in results if r["status"] == "failed"]
    keys = list(dict.fromkeys(k for r in results for k in r))
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(results)
    atomic_write_bytes(out_dir / "summary.csv", buffer.getvalue().encode())
    save_json(out_dir / "summary.json", {"pairs": results, "failed": len(failed), "processes": world})
    return {"pairs": len(results), "failed": failed, "merged": True}


def _flat(stats: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in stats.items():
        if isinstance(v, dict):
            out.update({f"{k}_{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def as_kind(img: Any, example: Any) -> Any:
    """``img`` (SimpleITK) as the kind of ``example``: SimpleITK image, nibabel image, MONAI MetaTensor (channel
    first, RAS affine), tensor or array ((X, Y[, Z]) order); a path gives a SimpleITK image."""
    sitk = _sitk()
    if img is None or isinstance(example, (sitk.Image, str, Path)):
        return img
    array = _xyz(img)
    # outputs are on the fixed grid: an example with an affine lends its own (and its one-slice shape)
    if hasattr(example, "affine") and hasattr(example, "dataobj"):
        import nibabel as nib

        return nib.Nifti1Image(array.reshape(example.shape), np.asarray(example.affine))
    if isinstance(example, torch.Tensor) and hasattr(example, "affine"):
        from monai.data import MetaTensor

        return MetaTensor(torch.from_numpy(array).reshape(example.shape), affine=example.affine.clone())
    if isinstance(example, torch.Tensor):
        return torch.from_numpy(array)
    return array


def register(
    fixed: Any,
    moving: Any,
    fixed_seg: Any | None = None,
    moving_seg: Any | None = None,
    model: str | Path | None = None,
    steps: int | None = None,
    affine: bool = True,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> ClinicalResult:
    """Register two scans given as paths, SimpleITK or nibabel images, MONAI MetaTensors or arrays.

    ``warped``, ``warped_seg`` and ``jacobian`` come back as the kind of ``fixed`` (a path gives SimpleITK images);
    ``transform`` stays an ITK ``DisplacementFieldTransform`` (``displacement``: its field as a SimpleITK image).
    """
    from rli2it_med.api import resolve_device

    net = load_network(model, image_dimension(fixed))
    result = register_images(fixed, moving, net, fixed_seg, moving_seg, steps, affine, seed, resolve_device(device))
    result.warped = as_kind(result.warped, fixed)
    result.warped_seg = as_kind(result.warped_seg, fixed)
    result.jacobian = as_kind(result.jacobian, fixed)
    return result
