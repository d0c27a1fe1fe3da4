import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize

from rli2it_vision.perceptual import (
    LOSS_LAYERS,
    VGG,
    MobileNetV2,
    StyleLoss,
    content_loss,
    gram_matrix,
    imagenet_input,
    load_loss_network,
    load_mobilenet_v2,
    perceptual_distance,
    style_loss,
    total_variation,
)


def _photo(name: str) -> torch.Tensor:
    image = getattr(data, name)()
    h, w = image.shape[:2]
    s = min(h, w)
    image = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    rgb = resize(image, (224, 224), anti_aliasing=True).astype(np.float32)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None] * 2 - 1


@pytest.fixture(scope="module")
def net():
    return load_mobilenet_v2()


def test_shipped_imagenet_weights_reproduce_predictions(net):
    with torch.no_grad():
        logits = net(imagenet_input(torch.cat([_photo("chelsea"), _photo("coffee")])))
    assert logits.argmax(1).tolist() == [285, 967]  # Egyptian cat (the cat Chelsea), espresso
    assert logits.softmax(1).max(1).values.min() > 0.7


def test_feature_maps_and_perceptual_distance(net):
    x = _photo("chelsea")
    maps = net.feature_maps(imagenet_input(x))
    assert [m.shape[1:] for m in maps] == [(24, 56, 56), (32, 28, 28), (96, 14, 14), (320, 7, 7)]
    with torch.no_grad():
        same = perceptual_distance(net, x, x)
        noisy = perceptual_distance(net, x, (x + 0.1 * torch.randn_like(x)).clamp(-1, 1))
        other = perceptual_distance(net, x, _photo("coffee"))
    assert same.abs().item() < 1e-6 and 0 < noisy.item() < other.item()
    with pytest.raises(ValueError, match="layers"):
        net.feature_maps(x, (25,))


def test_a_wrong_state_dict_is_named(tmp_path):
    torch.save(MobileNetV2(num_classes=10).state_dict(), tmp_path / "ten.pth")
    with pytest.raises(ValueError, match="ten.pth"):
        load_mobilenet_v2(tmp_path / "ten.pth")


def test_gram_matrix_by_hand():
    f = torch.tensor([[1.0, 2.0], [0.0, 1.0]]).view(1, 2, 1, 2)  # two channels over two pixels
    expected = torch.tensor([[5.0, 2.0], [2.0, 1.0]]) / 4
    torch.testing.assert_close(gram_matrix(f), expected[None])


def test_style_and_content_losses(net):
    cat, coffee = _photo("chelsea"), _photo("coffee")
    with torch.no_grad():
        assert style_loss(net, cat, cat).item() < 1e-8 and content_loss(net, cat, cat).item() == 0
        mirrored = cat.flip(-1)  # same textures, other layout: style close, content far
        s_mirror, s_other = style_loss(net, mirrored, cat).item(), style_loss(net, coffee, cat).item()
        c_mirror = content_loss(net, mirrored, cat).item()
    assert 0 < s_mirror < 0.5 * s_other and c_mirror > 0
    assert style_loss(net, torch.cat([cat, coffee]), cat).shape == (2,)


def test_style_loss_module_matches_the_functions(net):
    cat, coffee = _photo("chelsea"), _photo("coffee")
    loss = StyleLoss(net, cat, style_weight=10.0, tv_weight=0.5)
    assert (loss.content_layer, loss.style_layers) == LOSS_LAYERS["mobilenet_v2"]
    with torch.no_grad():
        terms = loss(torch.cat([cat, coffee]), torch.cat([cat, cat]))
        torch.testing.assert_close(terms["style"], style_loss(net, torch.cat([cat, coffee]), cat), rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(terms["content"][1:], content_loss(net, coffee, cat, layer=6))
        torch.testing.assert_close(loss.style(coffee), terms["style"][1:])
    assert terms["content"][0] == 0 and terms["style"][0] < 1e-8
    torch.testing.assert_close(terms["loss"], terms["content"] + 10 * terms["style"] + 0.5 * terms["tv"])
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        StyleLoss(net, torch.cat([cat, coffee]))


def test_total_variation_by_hand():
    x = torch.zeros(1, 1, 2, 3)
    x[..., :, 2] = 1.0  # one step of 1 between columns 1 and 2, on both rows; no vertical change
    torch.testing.assert_close(total_variation(x), torch.tensor([(2 / 4 + 0) / 2]))


@pytest.mark.parametrize("arch, convs", [("vgg16", 13), ("vgg19", 16)])
def test_a_users_vgg_state_dict_loads_for_the_classic_losses(tmp_path, arch, convs):
    vgg = VGG(arch)
    state = vgg.state_dict() | {"classifier.0.weight": torch.zeros(2, 2)}  # torchvision's full model: head ignored
    torch.save(state, tmp_path / f"{arch}.pth")
    net = load_loss_network(tmp_path / f"{arch}.pth")
    assert net.name == arch and isinstance(net, VGG)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.features) == convs
    torch.testing.assert_close(net.features[0].weight, vgg.features[0].weight)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    loss = StyleLoss(net, x)
    assert (loss.content_layer, loss.style_layers) == LOSS_LAYERS[arch]
    with torch.no_grad():
        assert loss(x, x)["style"].item() < 1e-10
    assert [m.shape[1] for m in net.feature_maps(imagenet_input(x), loss.style_layers)] == [64, 128, 256, 512]


def test_loss_network_errors_name_the_file(tmp_path):
    torch.save({"weight": torch.zeros(1)}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="odd.pth.*features"):
        load_loss_network(tmp_path / "odd.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_loss_network(tmp_path / "junk.pth")
    assert load_loss_network().name == "mobilenet_v2"
