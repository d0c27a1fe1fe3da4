import numpy as np
import pytest
import torch

from rli2it_med.registration.data import PairDataset
from rli2it_med.registration.grid import coarse_shape, downsample_image, downsample_labels, upsample_field
from rli2it_med.registration.warp import warp
from tests.conftest import smooth_field


def test_coarse_shape_rounds_up():
    assert coarse_shape((96, 112, 95), 2) == (48, 56, 48)


def test_downsample_image_is_block_mean_and_labels_block_majority():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    torch.testing.assert_close(downsample_image(image, 2), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    labels = torch.tensor([[[[1, 1, 0, 2], [1, 3, 2, 2], [0, 0, 5, 5], [0, 4, 5, 4]]]])
    assert downsample_labels(labels, 2).tolist() == [[[[1, 2], [0, 5]]]]
    assert downsample_labels(labels, 2).dtype == labels.dtype


@pytest.mark.parametrize("shape", [(16, 20), (8, 10, 12)])
def test_upsampled_linear_field_is_exact(shape):
    """A field linear in space maps to the fine grid exactly: u_f(x_f) = s * u_c((x_f - (s - 1) / 2) / s)."""
    nd, s = len(shape), 2
    coarse = coarse_shape(shape, s)
    xc = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in coarse], indexing="ij")
    xf = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    a, b = 0.1, 0.3
    u_c = torch.stack([a * xc[0] + b] * nd)[None]
    u_f = torch.stack([s * (a * (xf[0] - 0.5) / s + b)] * nd)[None]
    up = upsample_field(u_c, s, shape)
    inner = (slice(None), slice(None), *[slice(1, n - 1) for n in shape])  # border voxels are clamped
    torch.testing.assert_close(up[inner], u_f[inner])


def test_coarse_registration_transfers_to_the_fine_grid():
    """Warping fine images with the upsampled field ~ upsampling what the coarse warp did."""
    shape, s = (48, 56), 2
    x = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    image = (torch.sin(x[0] / 7) * torch.cos(x[1] / 9))[None, None]
    field_c = smooth_field(coarse_shape(shape, s), amplitude=2.0)
    fine = downsample_image(warp(image, upsample_field(field_c, s, shape)), s)
    coarse = warp(downsample_image(image, s), field_c)
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    # 0.0037 here; half a fine voxel off (align_corners=True upsampling) gives 0.0052, no rescaling 0.071
    assert (fine - coarse)[inner].abs().mean() < 0.0045


def test_bad_shapes_name_what_they_got():
    with pytest.raises(ValueError, match=r"must be \(8, 8\), got \(5, 5\)"):
        upsample_field(torch.zeros(1, 2, 5, 5), 2, (16, 16))
    with pytest.raises(ValueError, match="scale"):
        downsample_image(torch.zeros(1, 1, 4, 4), 0)


def test_pair_dataset_coarsens_once():
    rng = np.random.default_rng(0)
    images = rng.random((3, 8, 10)).astype(np.float32)
    labels = rng.integers(0, 3, (3, 8, 10))
    ds = PairDataset(images, labels, np.array([[0, 1], [2, 1]]), (1, 2), (1.0, 1.5))
    coarse = ds.coarsen(2)
    assert coarse.spatial_shape == (4, 5) and coarse.spacing == (2.0, 3.0) and len(coarse) == 2
    pair = coarse.get([1])
    assert pair.fixed_seg.dtype == torch.long and pair.fixed.shape == (1, 1, 4, 5)
    assert ds.coarsen(1) is ds
