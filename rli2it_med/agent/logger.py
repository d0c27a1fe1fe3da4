"""One logger for training: averages recorded values and writes a CSV row (and TensorBoard, if installed)."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

from rli2it_med.io import atomic_write_bytes

__all__ = ["Logger"]


class Logger:
    """Record scalars with :meth:`record`; :meth:`dump` averages them into one row of ``progress.csv``.

    Args:
        folder: where ``progress.csv`` (and TensorBoard events) go; None keeps rows in memory only.
        tensorboard: also write TensorBoard events (needs the ``tensorboard`` package).
    """

    def __init__(self, folder: str | Path | None = None, tensorboard: bool = False) -> None:
        self.folder = None if folder is None else Path(folder)
        self.rows: list[dict[str, float]] = []
        self._values: dict[str, list[float]] = defaultdict(list)
        self._writer = None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            csv_path = self.folder / "progress.csv"
            if csv_path.is_file():  # resuming: keep earlier rows
                with open(csv_path, newline="") as f:
                    self.rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.folder))

    def record(self, key: str, value: float) -> None:
        self._values[key].append(float(value))

    def latest(self, key: str) -> float | None:
        """Mean of the values recorded for ``key`` since the last dump, else its last dumped value."""
        if self._values.get(key):
            return sum(self._values[key]) / len(self._values[key])
        for row in reversed(self.rows):
            if key in row:
                return row[key]
        return None

    def dump(self, step: int) -> dict[str, float]:
        row = {"step": float(step)} | {k: sum(v) / len(v) for k, v in self._values.items() if v}
        self._values.clear()
        self.rows.append(row)
        if self._writer is not None:
            for k, v in row.items():
                if k != "step":
                    self._writer.add_scalar(k, v, step)
        if self.folder is not None:
            keys = list(dict.fromkeys(k for r in self.rows for k in r))
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
            atomic_write_bytes(self.folder / "progress.csv", out.getvalue().encode())
        return row
