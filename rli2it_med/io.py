"""File formats. The only module that opens files of images, datasets or affines.

Datasets built by ``data_prep/brain.py`` are a folder with ``meta.json`` and one ``<split>.npz`` per split.
Writes are atomic: a temporary file in the same folder, then a rename.
"""

from __future__ import annotations

import io as _io
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write_bytes", "save_npz_deterministic", "load_dataset", "save_json", "load_json"]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the user's usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npz_deterministic(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Save arrays as a compressed ``.npz`` whose bytes depend only on the arrays (fixed zip timestamps)."""
    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = _io.BytesIO()
            np.save(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    atomic_write_bytes(path, buffer.getvalue())


def save_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def load_dataset(root: str | Path, split: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load one split of a prepared registration dataset: its arrays and the dataset's ``meta.json``."""
    root = Path(root)
    meta_path, split_path = root / "meta.json", root / f"{split}.npz"
    for p in (meta_path, split_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not found; build the dataset with data_prep/brain.py --out {root}")
    meta = load_json(meta_path)
    with np.load(split_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    missing = {"images", "labels", "pairs_template", "pairs_subject"} - set(arrays)
    if missing:
        raise ValueError(f"{split_path}: missing arrays {sorted(missing)}")
    return arrays, meta
