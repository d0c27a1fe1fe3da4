import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rli2it_med.registration.losses import RegistrationLoss, smoothness_loss
from rli2it_med.registration.metrics import dice_per_label, folding_percent, hd95_per_label, jacobian_determinant
from rli2it_med.registration.rewards import kmeans_labels, mean_dice
from tests.conftest import smooth_field


@pytest.mark.parametrize("shape", [(8, 9), (6, 7, 8)])
def test_jacobian_of_identity_is_one(shape):
    det = jacobian_determinant(torch.zeros(2, len(shape), *shape))
    torch.testing.assert_close(det, torch.ones(2, *shape))


@pytest.mark.parametrize("nd", [2, 3])
def test_jacobian_of_linear_field_is_analytic(nd):
    shape = (7,) * nd
    a = torch.tensor([[0.2, -0.1, 0.05], [0.3, 0.1, -0.2], [0.0, 0.15, -0.3]], dtype=torch.float64)[:nd, :nd]
    grid = torch.stack(torch.meshgrid(*[torch.arange(7.0, dtype=torch.float64)] * nd, indexing="ij"))
    ddf = torch.einsum("ij,j...->i...", a, grid)[None]
    expected = torch.linalg.det(torch.eye(nd, dtype=torch.float64) + a)
    torch.testing.assert_close(jacobian_determinant(ddf), torch.full((1, *shape), expected.item(), dtype=torch.float64))


def test_jacobian_agrees_with_simpleitk():
    ddf = smooth_field((12, 13, 14), 2.0, 5, torch.float64)
    ours = jacobian_determinant(ddf)[0].numpy()
    vec = np.moveaxis(ddf[0].numpy()[::-1], 0, -1).copy()  # sitk components are (x, y, z) = reversed axes
    theirs = sitk.GetArrayFromImage(
        sitk.DisplacementFieldJacobianDeterminant(sitk.GetImageFromArray(vec, isVector=True))
    )
    np.testing.assert_allclose(ours[1:-1, 1:-1, 1:-1], theirs[1:-1, 1:-1, 1:-1], atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 9), (12, 13), (5, 6, 7)])
def test_jacobian_without_a_graph_equals_the_differentiable_one(shape):
    """Without a gradient to keep the derivatives are written into one tensor; with one, ``torch.gradient``: the
    same values, faces included (the one-sided differences), and the second path keeps its graph."""
    ddf = torch.randn(2, len(shape), *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fast = jacobian_determinant(ddf)
    ddf.requires_grad_(True)
    slow = jacobian_determinant(ddf)
    torch.testing.assert_close(fast, slow.detach(), atol=1e-15, rtol=1e-12)
    (grad,) = torch.autograd.grad(slow.sum(), ddf)
    assert grad.abs().sum() > 0


def test_folding_percent_counts_folded_voxels():
    ddf = torch.zeros(1, 2, 10, 10)
    assert folding_percent(ddf).item() == 0.0
    ddf[0, 0] = -2.0 * torch.arange(10.0).view(10, 1)  # x -> -x along axis 0: every determinant is -1
    assert folding_percent(ddf).item() == 100.0
    mask = torch.zeros(1, 1, 10, 10)
    mask[..., :5, :] = 1
    assert folding_percent(ddf, mask).item() == 100.0


def test_dice_per_label_by_hand():
    a = torch.tensor([[1, 1, 2, 0]]).view(1, 1, 2, 2)
    b = torch.tensor([[1, 2, 2, 0]]).view(1, 1, 2, 2)
    d = dice_per_label(a, b, (1, 2, 3))
    torch.testing.assert_close(d[0, :2], torch.tensor([2 / 3, 2 / 3]))
    assert torch.isnan(d[0, 2])
    assert mean_dice(a, b, (1, 2, 3)).item() == pytest.approx(2 / 3)


def test_hd95_of_shifted_square():
    a = torch.zeros(1, 1, 20, 20, dtype=torch.long)
    a[..., 5:10, 5:10] = 1
    b = torch.roll(a, 2, dims=2)
    assert hd95_per_label(a, b, (1,)).item() == pytest.approx(2.0)
    assert hd95_per_label(a, b, (1,), spacing=(2.0, 2.0)).item() == pytest.approx(4.0)


def test_kmeans_orders_labels_by_intensity():
    image = torch.tensor([0.0, 0.0, 0.5, 0.52, 1.0, 0.98] * 4).view(1, 1, 4, 6)
    labels = kmeans_labels(image, 3)
    assert labels.view(-1)[:6].tolist() == [0, 0, 1, 1, 2, 2]


def test_smoothness_and_loss_options():
    ddf = smooth_field((16, 16))
    assert smoothness_loss(torch.zeros_like(ddf), "tv").item() == 0.0
    assert smoothness_loss(ddf, "bending").item() > 0
    with pytest.raises(ValueError, match="diffusion"):
        smoothness_loss(ddf, "laplace")
    loss = RegistrationLoss(2)
    img = torch.rand(1, 1, 16, 16)
    out = loss(img, img, torch.zeros_like(ddf))
    assert out["loss"].item() == pytest.approx(-1.0, abs=1e-3)
