"""bench/registration.py scores every method's folding from its own field, the same way."""

import numpy as np
import pytest
import torch

from bench.registration import ants_syn, physical_to_voxel_ddf
from rli2it_med.registration.data import Pair
from rli2it_med.registration.metrics import folding_percent, jacobian_determinant
from rli2it_med.registration.warp import identity_grid


def test_a_field_in_mm_becomes_voxels_axis_by_axis():
    field = np.zeros((6, 7, 8, 3))
    field[..., 0], field[..., 1], field[..., 2] = 4.0, -3.0, 1.0
    ddf = physical_to_voxel_ddf(field, (2.0, 1.5, 0.5))
    assert ddf.shape == (1, 3, 6, 7, 8)
    assert torch.allclose(ddf[0, :, 2, 3, 4], torch.tensor([2.0, -2.0, 2.0]))


def test_the_fold_measure_on_known_fields():
    shape = (20, 22, 18)
    x = identity_grid(shape, "cpu", torch.float64)
    a = torch.tensor([[1.1, 0.2, 0.0], [-0.1, 0.9, 0.05], [0.0, 0.1, 1.2]], dtype=torch.float64)
    affine = (torch.einsum("ij,j...->i...", a, x) - x)[None]  # x -> A x, det A everywhere
    assert torch.allclose(jacobian_determinant(affine), torch.det(a).expand(1, *shape))
    smooth = 1.5 * torch.sin(x / 4)  # |d/dx| <= 0.375 per axis: a diffeomorphism
    assert folding_percent((affine + smooth[None]).float()).item() == 0.0
    flipped = -2 * x[None]  # x -> -x in every axis: det -1 everywhere
    assert folding_percent(flipped.float()).item() == 100.0


def test_ants_syn_field_is_fold_free_on_a_shifted_smooth_pair():
    pytest.importorskip("ants")
    from scipy import ndimage

    rng = np.random.default_rng(0)
    fixed = ndimage.gaussian_filter(rng.random((40, 44, 36)), 3)
    fixed = (fixed - fixed.min()) / (fixed.max() - fixed.min())
    moving = np.roll(fixed, 2, axis=0)  # moving(x) = fixed(x - 2): the pull-back displacement is +2 voxels on x
    as_t = lambda a: torch.from_numpy(a.astype(np.float32))[None, None]  # noqa: E731
    labels = torch.zeros(1, 1, *fixed.shape, dtype=torch.long)
    ddf, seconds = ants_syn(Pair(as_t(fixed), as_t(moving), labels, labels), (2.0, 2.0, 2.0))
    assert seconds > 0
    assert ddf.shape == (1, 3, *fixed.shape)
    inner = ddf[0, :, 8:-8, 8:-8, 8:-8].mean(dim=(1, 2, 3))
    assert abs(inner[0].item() - 2.0) < 0.3 and inner[1:].abs().max().item() < 0.3
    assert folding_percent(ddf).item() == 0.0  # the border too: no outside-the-image values
