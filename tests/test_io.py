import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rli2it_med import io
from rli2it_med.registration.warp import warp
from tests.conftest import smooth_field, smooth_image


@pytest.mark.parametrize("flip", [False, True])
def test_displacement_file_is_the_transform_itk_resamples_with(tmp_path, flip):
    # an oblique, anisotropic, possibly flipped grid: ITK must move the moving image exactly as our warp does
    shape = (20, 24, 18)
    rot = np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.5, -2.0 if flip else 2.0, 2.5])
    affine[:3, 3] = [-14.0, 20.0, -7.0]
    moving = smooth_image(shape, seed=3, dtype=torch.float64)
    field = smooth_field(shape, amplitude=2.0, seed=4, dtype=torch.float64)
    ours = warp(moving, field)[0, 0].numpy()

    io.save_image(tmp_path / "moving.nii.gz", moving[0, 0].numpy(), affine)
    io.save_displacement(tmp_path / "ddf.nii.gz", field[0].numpy(), affine)
    image = sitk.ReadImage(str(tmp_path / "moving.nii.gz"), sitk.sitkFloat64)
    ddf = sitk.ReadImage(str(tmp_path / "ddf.nii.gz"), sitk.sitkVectorFloat64)
    assert ddf.GetSize() == image.GetSize() and np.allclose(ddf.GetDirection(), image.GetDirection(), atol=1e-6)
    transform = sitk.DisplacementFieldTransform(ddf)
    itk = sitk.GetArrayFromImage(sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0)).transpose(2, 1, 0)
    inside = (slice(3, -3),) * 3  # away from the border, where ITK and grid_sample treat outside samples differently
    assert np.abs(itk[inside] - ours[inside]).max() < 1e-3


def test_png_is_a_valid_image(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[1, 2] = (255, 0, 0)
    io.save_png(tmp_path / "a.png", rgb)
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a.png")))
    assert back.shape == (5, 7, 3) and tuple(back[1, 2]) == (255, 0, 0) and back.sum() == 255
    with pytest.raises(ValueError, match="uint8"):
        io.save_png(tmp_path / "b.png", rgb.astype(float))


def test_unreadable_images_are_named(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.nii.gz"):
        io.load_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.nii"):
        io.load_image(tmp_path / "missing.nii")
