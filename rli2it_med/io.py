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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "atomic_output",
    "save_npz_deterministic",
    "load_npz",
    "load_dataset",
    "save_json",
    "load_json",
    "load_image",
    "save_png",
]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` (same extension, so writers pick the same format) for a writer that needs
    a file name; renamed onto ``path`` when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
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


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickled objects)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_dataset(root: str | Path, split: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load one split of a prepared registration dataset: its arrays and the dataset's ``meta.json``."""
    root = Path(root)
    meta_path, split_path = root / "meta.json", root / f"{split}.npz"
    for p in (meta_path, split_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not found; build the dataset with data_prep/brain.py --out {root}")
    meta = load_json(meta_path)
    arrays = load_npz(split_path)
    missing = {"images", "labels", "pairs_template", "pairs_subject"} - set(arrays)
    if missing:
        raise ValueError(f"{split_path}: missing arrays {sorted(missing)}")
    return arrays, meta


def load_image(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI image: its voxels (float32; a one-slice volume becomes a 2D image) and its 4x4 affine.

    Raises:
        FileNotFoundError / ValueError naming the file: missing, unreadable, or not a single-channel 2D/3D image.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # noqa: BLE001 - any reader failure is reported with the file name
        raise ValueError(f"{path}: not a readable NIfTI image ({e})") from e
    while data.ndim > 2 and data.shape[-1] == 1:  # (X, Y, Z, 1) -> 3D; a one-slice (X, Y, 1) -> 2D
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a 2D or 3D single-channel image, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: contains NaN or infinite voxels")
    return data, np.asarray(img.affine, dtype=np.float64)


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an (H, W) grey or (H, W, 3) colour uint8 array as a PNG, atomically, with no imaging library."""
    import struct
    import zlib

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3) or (rgb.ndim == 3 and rgb.shape[2] != 3):
        raise ValueError(f"expected an (H, W) or (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    colour = 2 if rgb.ndim == 3 else 0
    rows = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, -1)], axis=1)  # filter byte 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b"")
    atomic_write_bytes(path, png)
