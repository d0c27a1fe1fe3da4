"""Translation benchmark: rli2it vs pix2pix trained for the same wall-clock time, in one run.

On the held-out pairs of the offline default (tissue label map -> T1 MRI slices, 64x64, the fixed split of
:mod:`rli2it_vision.translation`) or a pix2pix-style folder (``--data``), each method translates every source and is
scored on the whole image: PSNR and SSIM (images in [-1, 1], data range 2), a perceptual distance (channel-normalised
ImageNet MobileNetV2 activations, :func:`rli2it_vision.perceptual.perceptual_distance`; lower is closer),
milliseconds per image, parameters.

- pix2pix (Isola et al., 2017) as published: U-Net generator (4x4 stride-2 convs, BatchNorm, LeakyReLU 0.2 down,
  ReLU + transposed convs up, dropout 0.5 in the inner 512-wide up-block, skips, tanh; ngf 64; as many levels as take
  the image to 1x1), MONAI's ``PatchDiscriminator`` (the 70x70 PatchGAN: 3 layers, ndf 64, BatchNorm) on
  concat(source, image), vanilla GAN + 100 L1, Adam 2e-4 (0.5, 0.999), random left-right flips (the mirrored
  training pairs rli2it sees too), batch 16; the weights of its best validation PSNR (checked every 50 iterations)
  are kept, as rli2it keeps ``best.pt``.
- "label -> mean T1" (brain data only): every pixel gets the mean training T1 of its label, the floor any learned
  translation must clear.

    python bench/translation.py                    # trains rli2it 20 min, then pix2pix as long
    python bench/translation.py --model runs/translate/best.pt --minutes 20
    python bench/translation.py --quick            # 1-minute trainings

Parameters: at inference (pix2pix's generator; rli2it's planner + actor) and trained (+ pix2pix's PatchGAN; + rli2it's
twin critic and SNGAN discriminator, not counting the critic's Polyak target copy). The table goes to stdout, and its
last line is the same as one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from bench.registration import print_table  # noqa: E402
from rli2it_med.agent.checkpoint import training_minutes  # noqa: E402
from rli2it_med.agent.networks import count_parameters  # noqa: E402
from rli2it_vision.editing import Discriminator, ImageEditor, ImagePairs, region_psnr, with_mirrors  # noqa: E402
from rli2it_vision.perceptual import MobileNetV2, load_mobilenet_v2, perceptual_distance  # noqa: E402
from rli2it_vision.translation import TranslateConfig, load_pairs, train_translation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class UNetGenerator(nn.Module):
    """pix2pix's U-Net generator for images of side 2**levels (see the module's docstring)."""

    def __init__(self, in_channels: int, out_channels: int, levels: int, ngf: int = 64) -> None:
        super().__init__()
        widths = [min(ngf * 2**i, ngf * 8) for i in range(levels)]
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        cin = in_channels
        for i, w in enumerate(widths):
            inner = 0 < i < levels - 1
            layers = ([nn.LeakyReLU(0.2)] if i else []) + [nn.Conv2d(cin, w, 4, 2, 1, bias=False)]
            self.down.append(nn.Sequential(*layers, *([nn.BatchNorm2d(w)] if inner else [])))
            cin = w
        for i in range(levels):  # self.up[i] mirrors self.down[i]
            cin = widths[i] * (1 if i == levels - 1 else 2)
            cout = out_channels if i == 0 else widths[i - 1]
            layers = [nn.ReLU(), nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=i == 0)]
            if i == 0:
                layers.append(nn.Tanh())
            else:
                layers.append(nn.BatchNorm2d(cout))
                if widths[i] == ngf * 8 and 0 < i < levels - 1 and widths[i - 1] == ngf * 8:
                    layers.append(nn.Dropout(0.5))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = self.up[-1](skips[-1])
        for i in range(len(self.up) - 2, -1, -1):
            x = self.up[i](torch.cat([x, skips[i]], 1))
        return x


def train_pix2pix(
    train: ImagePairs, val: ImagePairs, minutes: float, seed: int, batch_size: int = 16
) -> tuple[nn.Module, nn.Module, int]:
    """pix2pix for ``minutes`` (see the module's docstring); returns the best-validation generator, the
    discriminator and the iterations run."""
    from monai.networks.nets import PatchDiscriminator

    torch.manual_seed(seed)
    size = train.target.shape[-1]
    levels = size.bit_length() - 1
    if 2**levels != size:
        raise ValueError(f"pix2pix's U-Net needs a power-of-two image side, got {size}")
    src, tgt = train.source.shape[1], train.target.shape[1]
    g_net = UNetGenerator(src, tgt, levels)
    d_net = PatchDiscriminator(spatial_dims=2, num_layers_d=3, channels=64, in_channels=src + tgt, out_channels=1)
    g_opt = torch.optim.Adam(g_net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d_net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    best, best_state = -float("inf"), None
    start, iters = time.perf_counter(), 0
    while time.perf_counter() - start < minutes * 60:
        index = torch.randint(0, len(train), (batch_size,), generator=gen)
        a, b = train.source[index], train.target[index]
        fake = g_net(a)
        d_real = d_net(torch.cat([a, b], 1))[-1]
        d_fake = d_net(torch.cat([a, fake.detach()], 1))[-1]
        d_loss = 0.5 * (bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake)))
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        d_fake = d_net(torch.cat([a, fake], 1))[-1]
        g_loss = bce(d_fake, torch.ones_like(d_fake)) + 100.0 * F.l1_loss(fake, b)
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        iters += 1
        if iters % 50 == 0:
            g_net.eval()
            with torch.no_grad():
                psnr = float(region_psnr(g_net(val.source).clamp(-1, 1), val.target).mean())
            g_net.train()
            if psnr > best:
                best, best_state = psnr, copy.deepcopy(g_net.state_dict())
    if best_state is not None:
        g_net.load_state_dict(best_state)
    return g_net.eval(), d_net, iters


def label_means(train: ImagePairs):
    """The "label -> mean T1" floor: every source level gets the mean target of its pixels in training."""
    levels = train.source.unique()
    means = torch.stack([train.target[train.source == v].mean() for v in levels])

    def run(source: torch.Tensor) -> torch.Tensor:
        nearest = (source[..., None] - levels).abs().argmin(-1)
        return means[nearest]

    return run


def score(name: str, translate, test: ImagePairs, features: MobileNetV2, **extra) -> dict:
    """PSNR, SSIM and the perceptual distance on ImageNet MobileNetV2 features (lower is closer) of a method."""
    from monai.metrics import SSIMMetric

    start = time.perf_counter()
    with torch.no_grad():
        pred = translate(test.source).float().clamp(-1, 1)
    ms = 1000 * (time.perf_counter() - start) / len(test)
    ssim = SSIMMetric(spatial_dims=2, data_range=2.0, win_size=7, reduction="none")(pred, test.target)[:, 0]
    with torch.no_grad():
        perceptual = perceptual_distance(features, pred, test.target)
    row = {"method": name, "psnr": float(region_psnr(pred, test.target).mean()), "ssim": float(ssim.mean())}
    row |= {"perceptual": float(perceptual.mean()), "ms_per_image": ms} | extra
    print(f"  {name}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}", file=sys.stderr)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="training budget of each trained method (default 20)")
    parser.add_argument("--model", help="a trained rli2it checkpoint instead of training one here")
    parser.add_argument("--data", default="brain", help="'brain' or a pix2pix-style folder")
    parser.add_argument("--out", default=str(ROOT / "runs/bench_translate"), help="run folder of the rli2it training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1-minute trainings")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    minutes = args.minutes or (1.0 if args.quick else 20.0)
    model = args.model
    if model is None:
        cfg = TranslateConfig(out=args.out, data=args.data, minutes=minutes, seed=args.seed)
        print(f"  training rli2it for {minutes:.1f} min...", file=sys.stderr)
        minutes = train_translation(cfg, progress=False)["minutes"]
        model = str(Path(args.out) / "best.pt")
    rl = ImageEditor.load(model, "cpu", task="translation")
    if args.model is not None:  # pix2pix gets --minutes, else the checkpoint's training time
        minutes = args.minutes or training_minutes(rl.metadata)
    training = rl.metadata["config"].get("training", {})
    size = rl.image_size
    train = load_pairs(args.data, "train", size)
    val, test = load_pairs(args.data, "val", size), load_pairs(args.data, "test", size)

    rows, features = [], load_mobilenet_v2()
    if args.data == "brain":
        rows.append(score("label -> mean T1", label_means(train), test, features))
    print(f"  training pix2pix for {minutes:.1f} min...", file=sys.stderr)
    flip = training.get("flip", True)
    g_net, d_net, iters = train_pix2pix(with_mirrors(train) if flip else train, val, minutes, args.seed)
    rows.append(
        score("pix2pix (U-Net + PatchGAN)", g_net, test, features, params=count_parameters(g_net),
              train_params=count_parameters(g_net) + count_parameters(d_net), train_min=round(minutes, 1),
              train_iters=iters)
    )  # fmt: skip
    params = count_parameters(rl.agent.planner) + count_parameters(rl.agent.actor)
    trained = params + count_parameters(rl.agent.critic) + count_parameters(Discriminator(rl.agent.config.in_channels))
    rows.append(
        score(f"rli2it ({rl.steps} steps)", lambda source: rl.edit(source).image, test, features, params=params,
              train_params=trained, train_min=round(minutes, 1),
              train_iters=rl.metadata.get("updates"))
    )  # fmt: skip
    curve = [float(p.mean()) for p in rl.edit(test.source, rl.env_config.max_steps, target=test.target).psnr]

    cols = ["method", "psnr", "ssim", "perceptual", "ms_per_image", "params", "train_params"]
    title = f"{len(test)} test pairs {size}x{size} ({args.data})"
    print_table(f"Translation, {title}", rows, cols, 26)
    print(
        f"rli2it's default: {rl.steps} steps (validated); PSNR after each step: "
        + " ".join(f"{t}:{p:.2f}" for t, p in enumerate(curve))
    )
    summary = {"date": time.strftime("%Y-%m-%d"), "pairs": len(test), "rows": rows, "psnr_per_step": curve}
    print(json.dumps(summary | {"default_steps": rl.steps}))


if __name__ == "__main__":
    main()
