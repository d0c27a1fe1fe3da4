"""The QC figure: anatomical orientation whatever the storage order, physical aspect, panels."""

import numpy as np
import SimpleITK as sitk

from rli2it_med.registration.qc import FIGURE_WIDTH, qc_picture, slice_views


def _xyz(img):
    return np.ascontiguousarray(sitk.GetArrayFromImage(img).transpose(2, 1, 0))


def _head():
    """An asymmetric 3D volume (a bright block off centre in every axis, a gradient) on an LPS grid."""
    x, y, z = np.indices((41, 49, 37), dtype=np.float32)  # odd: a flipped axis has the same mid slice
    vol = 0.2 + 0.5 * x / 40 + 0.2 * z / 36
    vol[12:26, 20:40, 10:22] = 1.0  # across every mid slice, off centre
    img = sitk.GetImageFromArray(vol.transpose(2, 1, 0).copy())
    img.SetSpacing((1.0, 1.5, 2.0))
    return img


def _figure(img):
    vol = _xyz(img)
    return qc_picture(vol, vol, vol, direction=np.asarray(img.GetDirection()), spacing=img.GetSpacing())


def test_a_volume_stored_in_another_order_gives_the_same_figure():
    lps = _head()
    for order in ("PIR", "RAS", "ILA"):
        other = sitk.DICOMOrient(lps, order)  # the same voxels and physical space, axes permuted and flipped
        assert other.GetSize() != lps.GetSize() or order == "RAS"
        assert np.array_equal(_figure(other), _figure(lps)), order


def test_planes_edges_and_aspect_follow_the_direction_and_spacing():
    views = slice_views(np.eye(3), (1.0, 1.0, 5.0))  # LPS axes, 5 mm slices
    assert [v.plane for v in views] == ["axial", "coronal", "sagittal"]
    assert views[0].edges == ("R", "L", "A", "P") and views[0].aspect == 1.0
    assert views[1].edges == ("R", "L", "S", "I") and views[1].aspect == 5.0  # thick slices drawn tall
    assert views[2].edges == ("A", "P", "S", "I") and views[2].aspect == 5.0
    pir = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)  # index axes along P, I, R (columns: L, P, S parts)
    assert [v.plane for v in slice_views(pir)] == ["sagittal", "axial", "coronal"]


def test_folds_are_yellow_and_labels_add_a_column():
    rng = np.random.default_rng(0)
    vol = rng.random((30, 34, 28)).astype(np.float32)
    det = np.ones_like(vol)
    plain = qc_picture(vol, vol, vol, grid=vol, jacobian=det)
    yellow = lambda rgb: np.all(np.abs(rgb.astype(int) - (255, 219, 0)) <= 2, axis=-1).sum()  # noqa: E731
    assert plain.shape[1] == FIGURE_WIDTH and yellow(plain) == 0
    det[10:20, 10:20, 10:20] = -0.5
    folded = qc_picture(vol, vol, vol, grid=vol, jacobian=det)
    assert yellow(folded) > 100
    labels = (vol > 0.5).astype(int)
    with_labels = qc_picture(vol, vol, vol, labels, vol, det, labels)
    assert with_labels.shape[1] == FIGURE_WIDTH and not np.array_equal(with_labels.shape, folded.shape)
    red = np.all(with_labels == (255, 38, 38), axis=-1).sum()
    cyan = np.all(with_labels == (0, 230, 230), axis=-1).sum()
    assert cyan > 100 and red == 0  # the same labels warped: the cyan contours cover the red ones


def test_a_2d_figure_has_one_row():
    img = np.random.default_rng(1).random((64, 80)).astype(np.float32)
    one = qc_picture(img, img, img, jacobian=np.ones_like(img))
    three = qc_picture(np.stack([img] * 40, -1), np.stack([img] * 40, -1), np.stack([img] * 40, -1))
    assert one.shape[1] == three.shape[1] == FIGURE_WIDTH and one.shape[0] < three.shape[0]
