import numpy as np
import pytest
import SimpleITK as sitk

from rli2it_med import io


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
