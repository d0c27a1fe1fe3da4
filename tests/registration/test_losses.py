import pytest
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

from rli2it_med.registration.losses import LocalNCC, box_sum, fold_barrier
from rli2it_med.registration.metrics import jacobian_determinant
from tests.conftest import smooth_image


def test_box_sum_is_a_zero_padded_window_sum():
    x = torch.arange(7.0).view(1, 1, 7)
    x = x.unsqueeze(-1).expand(1, 1, 7, 1)
    # window 3 along axis 2 (axis 3 has size 1, so its window sum is the value itself)
    assert box_sum(x, 3)[0, 0, :, 0].tolist() == [1.0, 3.0, 6.0, 9.0, 12.0, 15.0, 11.0]


def test_box_sum_backward_is_its_adjoint():
    """The backward reuses the window sum itself (a centred zero-padded window is symmetric): check it numerically."""
    x = torch.rand(2, 1, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: box_sum(v, 3), (x,))


@pytest.mark.parametrize("shape", [(40, 36), (20, 24, 18)])
def test_local_ncc_equals_monai_in_value_and_gradient(shape):
    """Images with zero background (where float32 running sums would break the variance floor), a batch of two, and
    the gradient (written out by hand) with respect to both images; float32 as in training, then float64."""
    fixed = torch.cat([smooth_image(shape, seed=1), smooth_image(shape, seed=3)]).clamp_min(0).requires_grad_(True)
    moving = torch.cat([smooth_image(shape, seed=2), smooth_image(shape, seed=4)]).clamp_min(0) + 0.1 * fixed
    moving = moving.detach().requires_grad_(True)
    ours = LocalNCC(len(shape), 7)(moving, fixed)
    ref = LocalNormalizedCrossCorrelationLoss(spatial_dims=len(shape), kernel_size=7)(moving, fixed)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    g_ours, g_ref = (torch.autograd.grad(v, (moving, fixed)) for v in (ours, ref))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=3e-7, rtol=1e-4)  # float32 rounding of both (max |gradient| ~ 1e-2)
    moving, fixed = (x.detach().double().requires_grad_(True) for x in (moving, fixed))
    ours = LocalNCC(len(shape), 7)(moving, fixed)
    ref = LocalNormalizedCrossCorrelationLoss(spatial_dims=len(shape), kernel_size=7)(moving, fixed)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-10)
    g_ours, g_ref = (torch.autograd.grad(v, (moving, fixed)) for v in (ours, ref))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=1e-14, rtol=1e-8)


def test_local_ncc_gradient_is_the_numerical_one():
    g = torch.Generator().manual_seed(0)
    fixed, moving = (torch.rand(2, 1, 7, 6, 5, generator=g, dtype=torch.float64) for _ in range(2))
    fixed[..., :2] = 0  # floored variances pass no gradient
    fixed.requires_grad_(True)
    moving.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m, f: LocalNCC(3, 3)(m, f), (moving, fixed))


def test_local_ncc_errors_name_what_they_got():
    with pytest.raises(ValueError, match="odd"):
        LocalNCC(2, 8)
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 8\)"):
        LocalNCC(3)(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("shape", [(2, 3, 9, 10, 8), (1, 2, 17, 15)])
def test_fold_barrier_equals_the_whole_grid_term_in_value_and_gradient(shape):
    torch.manual_seed(0)
    ddf = (torch.randn(*shape, dtype=torch.float64) * 0.7).requires_grad_(True)  # folds in many voxels, faces too
    want = torch.relu(0.05 - jacobian_determinant(ddf)).mean()
    got = fold_barrier(ddf, 0.05)
    assert 0 < float(want) and torch.allclose(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, ddf)[0], torch.autograd.grad(want, ddf)[0])


def test_fold_barrier_is_zero_without_folds_and_keeps_the_graph():
    ddf = torch.zeros(1, 3, 6, 6, 6, requires_grad=True)
    value = fold_barrier(ddf)
    assert float(value) == 0.0 and value.requires_grad


@pytest.mark.parametrize("shape", [(2, 2, 9, 11), (1, 3, 7, 8, 6)])
def test_diffusion_loss_is_monais_in_value_and_gradient(shape):
    from monai.losses import DiffusionLoss

    from rli2it_med.registration.losses import diffusion_loss

    ddf = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours, theirs = diffusion_loss(ddf), DiffusionLoss()(ddf)
    assert torch.allclose(ours, theirs)
    g_ours, g_theirs = (torch.autograd.grad(v, ddf)[0] for v in (ours, theirs))
    assert torch.allclose(g_ours, g_theirs)
    with pytest.raises(ValueError, match="spatial size"):
        diffusion_loss(torch.zeros(1, 2, 2, 5))
