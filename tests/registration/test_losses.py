import pytest
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

from rli2it_med.registration.losses import LocalNCC, box_sum
from tests.conftest import smooth_image


def test_box_sum_is_a_zero_padded_window_sum():
    x = torch.arange(7.0).view(1, 1, 7)
    x = x.unsqueeze(-1).expand(1, 1, 7, 1)
    # window 3 along axis 2 (axis 3 has size 1, so its window sum is the value itself)
    assert box_sum(x, 3)[0, 0, :, 0].tolist() == [1.0, 3.0, 6.0, 9.0, 12.0, 15.0, 11.0]


@pytest.mark.parametrize("shape", [(40, 36), (20, 24, 18)])
def test_local_ncc_equals_monai_in_value_and_gradient(shape):
    """Images with zero background (where float32 running sums would break the variance floor)."""
    fixed = smooth_image(shape, seed=1).clamp_min(0)
    moving = (smooth_image(shape, seed=2).clamp_min(0) + 0.1 * fixed).requires_grad_(True)
    ours = LocalNCC(len(shape), 7)(moving, fixed)
    ref = LocalNormalizedCrossCorrelationLoss(spatial_dims=len(shape), kernel_size=7)(moving, fixed)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    g_ours, g_ref = (torch.autograd.grad(v, moving)[0] for v in (ours, ref))
    torch.testing.assert_close(g_ours, g_ref, atol=1e-7, rtol=1e-4)


def test_local_ncc_errors_name_what_they_got():
    with pytest.raises(ValueError, match="odd"):
        LocalNCC(2, 8)
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 8\)"):
        LocalNCC(3)(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
