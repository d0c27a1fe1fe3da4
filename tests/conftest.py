import os
import warnings
from pathlib import Path

import pytest
import torch

warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """The tests' own user cache (the template built from nilearn's files), not the user's."""
    os.environ["RLI2IT_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def smooth_field(shape, amplitude=1.5, seed=0, dtype=torch.float32):
    """A smooth random (1, ndim, *shape) displacement field."""
    g = torch.Generator().manual_seed(seed)
    nd = len(shape)
    coarse = torch.randn(1, nd, *([4] * nd), generator=g, dtype=torch.float64) * amplitude
    mode = ("bilinear", "trilinear")[nd - 2]
    return torch.nn.functional.interpolate(coarse, size=shape, mode=mode, align_corners=True).to(dtype)


def smooth_image(shape, seed=1, dtype=torch.float32):
    """A smooth analytic (1, 1, *shape) image: a product of slow sinusoids with seeded phases."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij")
    image = torch.ones_like(axes[0])
    for x in axes:
        image = image * torch.sin(x / 4.0 + 6.28 * torch.rand(1, generator=g, dtype=torch.float64))
    return image[None, None].to(dtype)


def save_nifti(path, array, affine):
    """Write an array (2D arrays as one-slice volumes) as a NIfTI file with sform = qform = ``affine``."""
    import nibabel as nib
    import numpy as np

    array = np.asarray(array)
    img = nib.Nifti1Image(array[..., None] if array.ndim == 2 else array, np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
