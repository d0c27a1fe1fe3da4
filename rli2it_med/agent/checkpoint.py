"""Self-describing checkpoints: constructor config + state dict + versions, loadable in one call."""

from __future__ import annotations

import io
import platform
from pathlib import Path
from typing import Any

import torch

from rli2it_med.io import atomic_write_bytes

__all__ = ["CHECKPOINT_FORMAT", "versions", "save_checkpoint", "load_checkpoint", "training_minutes"]

CHECKPOINT_FORMAT = "rli2it-checkpoint/1"


def versions() -> dict[str, str]:
    import monai

    import rli2it_med

    return {
        "rli2it": rli2it_med.__version__,
        "torch": str(torch.__version__),
        "monai": str(monai.__version__),
        "python": platform.python_version(),
    }


def save_checkpoint(path: str | Path, config: dict[str, Any], state_dict: dict, **extra: Any) -> None:
    """Write ``{format, config, state_dict, versions, **extra}`` atomically."""
    payload = {"format": CHECKPOINT_FORMAT, "config": config, "state_dict": state_dict, "versions": versions()}
    payload.update(extra)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; the error names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unpickling problem with the file name
        raise ValueError(f"{path}: not a readable rli2it checkpoint ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an rli2it checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return payload


def training_minutes(payload: dict[str, Any]) -> float:
    """Minutes of training behind a checkpoint's weights, the runs they were fine-tuned from included
    (``train_minutes_total``); checkpoints that predate it know only their own run's (``train_minutes``)."""
    return float(payload.get("train_minutes_total", payload.get("train_minutes", 0.0)))
