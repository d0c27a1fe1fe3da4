import importlib

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.networks.blocks import Warp

from rli2it_med.registration.warp import compose, warp
from tests.conftest import smooth_field, smooth_image


@pytest.mark.parametrize("shape", [(20, 24), (10, 12, 14)])
def test_warp_matches_monai(shape):
    image, ddf = smooth_image(shape), smooth_field(shape)
    expected = Warp(mode="bilinear", padding_mode="border")(image, ddf)
    torch.testing.assert_close(warp(image, ddf), expected, atol=1e-5, rtol=1e-5)


def test_zero_field_is_identity_and_labels_keep_dtype():
    image = smooth_image((16, 16))
    torch.testing.assert_close(warp(image, torch.zeros(1, 2, 16, 16)), image)
    labels = (image * 4).long()
    out = warp(labels, smooth_field((16, 16)), mode="nearest")
    assert out.dtype == torch.long
    assert set(out.unique().tolist()) <= set(labels.unique().tolist())


def test_integer_shift_moves_pixels():
    image = torch.arange(25.0).view(1, 1, 5, 5)
    ddf = torch.zeros(1, 2, 5, 5)
    ddf[:, 1] = 1.0  # pull from one column to the right
    out = warp(image, ddf)
    torch.testing.assert_close(out[0, 0, :, :4], image[0, 0, :, 1:])


@pytest.mark.parametrize("shape", [(24, 28), (12, 14, 16)])
def test_composition_equals_two_successive_warps(shape):
    image = smooth_image(shape, dtype=torch.float64)
    phi, step = smooth_field(shape, 1.0, 0, torch.float64), smooth_field(shape, 0.8, 1, torch.float64)
    once = warp(image, compose(phi, step))
    twice = warp(warp(image, phi), step)
    inner = (slice(None), slice(None)) + tuple(slice(3, -3) for _ in shape)
    # the two differ only by one extra bilinear interpolation (~h^2 f''/8 ~ 0.01 for this image)...
    torch.testing.assert_close(once[inner], twice[inner], atol=0.025, rtol=0)
    # ...while composing in the wrong order is far off
    assert (warp(image, compose(step, phi)) - twice)[inner].abs().max() > 0.1


def test_composition_agrees_with_simpleitk_composite_transform():
    shape = (20, 22)
    phi, step = smooth_field(shape, 1.0, 2, torch.float64), smooth_field(shape, 1.0, 3, torch.float64)
    composed = compose(phi, step)[0].numpy()

    def sitk_field(ddf):  # our (ndim, rows, cols) -> sitk vector image, components (x=col, y=row)
        vec = np.moveaxis(ddf[0].numpy()[::-1], 0, -1).copy()
        return sitk.DisplacementFieldTransform(sitk.GetImageFromArray(vec, isVector=True))

    transform = sitk.CompositeTransform([sitk_field(phi), sitk_field(step)])  # applies step first, then phi
    for r in range(3, shape[0] - 3, 3):
        for c in range(3, shape[1] - 3, 3):
            x, y = transform.TransformPoint((float(c), float(r)))
            np.testing.assert_allclose([y - r, x - c], composed[:, r, c], atol=1e-6)


def test_warp_gradcheck():
    image = smooth_image((6, 7), dtype=torch.float64)
    ddf = (0.3 * smooth_field((6, 7), 1.0, 4, torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d: warp(image, d), (ddf,), eps=1e-6, atol=1e-5)


def test_shape_and_option_errors_name_what_they_got():
    image = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\(1, 3, 8, 8\)"):
        warp(image, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="bicubic"):
        warp(image, torch.zeros(1, 2, 8, 8), mode="bicubic")
    with pytest.raises(ValueError, match="same shape"):
        compose(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 9))


@pytest.mark.parametrize("shape", [(20, 24), (10, 12, 14)])
def test_warp_of_a_block_equals_the_block_of_the_warp(shape):
    image, ddf = smooth_image(shape), smooth_field(shape, amplitude=2.0)
    origin = tuple(s // 4 for s in shape)
    block = (slice(None), slice(None), *(slice(o, o + s // 2) for o, s in zip(origin, shape)))
    torch.testing.assert_close(warp(image, ddf[block], origin=origin), warp(image, ddf)[block])
    with pytest.raises(ValueError, match="must fit inside"):
        warp(image, ddf[block], origin=tuple(s - 1 for s in shape))


def test_a_large_3d_cpu_warp_on_threads_equals_the_one_thread_warp():
    """A 3D CPU warp is sampled in slabs on torch's threads (and differentiated so when only the field needs it); the
    result must not change."""
    shape = (40, 36, 32)
    image, field = smooth_image(shape), smooth_field(shape, amplitude=4.0)
    labels = (image * 4).long()
    threads = torch.get_num_threads()
    try:
        results = {}
        for n in (1, 3):
            torch.set_num_threads(n)
            with torch.no_grad():
                results[n] = (
                    warp(image, field),
                    warp(labels, field, "nearest"),
                    warp(image, field, padding_mode="zeros"),
                )
    finally:
        torch.set_num_threads(threads)
    warp_module = importlib.import_module("rli2it_med.registration.warp")  # the package exports the function
    assert warp_module._POOL is not None and warp_module._POOL[1] == 3  # the threads did sample
    for one, many in zip(results[1], results[3]):
        assert torch.equal(one, many)
    assert results[3][1].dtype == torch.long

    # with autograd on the field only, the slabs' gradient equals the one-thread sampler's; an image that needs a
    # gradient takes the plain sampler
    weights = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(5))
    grads = {}
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            for padding in ("border", "zeros"):
                leaf = field.clone().requires_grad_(True)
                (weights * warp(image, leaf, padding_mode=padding)).sum().backward()
                grads[n, padding] = leaf.grad
        source = image.clone().requires_grad_(True)
        warp(source, field).sum().backward()
    finally:
        torch.set_num_threads(threads)
    for padding in ("border", "zeros"):
        assert grads[1, padding].abs().sum() > 0
        torch.testing.assert_close(grads[3, padding], grads[1, padding], rtol=0, atol=0)
    assert source.grad is not None and source.grad.abs().sum() > 0
