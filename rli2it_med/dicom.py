"""Reading a DICOM series in a child process.

GDCM parses whatever bytes a DICOM file holds; on a corrupt file it may raise, but it may also loop for a long time
or crash the process it runs in. :func:`read_series` therefore reads in a fresh interpreter
(``python -m rli2it_med.dicom FOLDER OUT.mha``; it costs an interpreter start more than an in-process read) that
hands the volume back as a MetaImage file: a crash or a hang ends the child, and the caller gets one ``ValueError``.
A fresh interpreter, not a forked or spawned ``multiprocessing`` child: those re-import the caller's main script,
which in a researcher's script without a ``__main__`` guard would run the script again.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["CHILD", "TIMEOUT_S", "read_series"]

TIMEOUT_S = 60.0
"""The reader's limit for a series, plus one second per 10 MB of files."""

CHILD = [sys.executable, "-m", "rli2it_med.dicom"]
"""The reader's command; the folder and the output file are appended."""

READER_ERROR = 3  # the child's exit status when GDCM reported a problem (its message is the last stderr line)


def read_series(folder: str | Path, timeout: float | None = None) -> Any:
    """The largest DICOM series in ``folder`` as a SimpleITK image, read in a child process.

    Args:
        timeout: seconds before the reader is stopped (default :data:`TIMEOUT_S` plus one second per 10 MB).

    Raises:
        ValueError: the reader's own error, a crash of the reader, or a read that did not finish in time.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if timeout is None:
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        timeout = TIMEOUT_S + size / 10e6
    with tempfile.TemporaryDirectory(prefix="rli2it_dicom_") as tmp:
        out = Path(tmp) / "series.mha"
        try:
            proc = subprocess.run([*CHILD, str(folder), str(out)], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ValueError(f"the DICOM reader did not finish within {timeout:.0f} s") from None
        if proc.returncode == 0 and out.is_file():
            return sitk.ReadImage(str(out))
        if proc.returncode == READER_ERROR:
            raise ValueError((proc.stderr.strip().splitlines() or ["unreadable DICOM series"])[-1])
        raise ValueError(f"the DICOM reader crashed (exit code {proc.returncode})")


def _main(folder: str, out: str) -> int:
    """In the child: the largest series of ``folder`` written to ``out``, or the reader's error on stderr."""
    import SimpleITK as sitk

    try:
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
        if not ids:
            raise ValueError("no DICOM series in this folder")
        files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, i) for i in ids), key=len)
        sitk.WriteImage(sitk.ReadImage(files), out)
    except Exception as e:  # noqa: BLE001 - whatever GDCM raises becomes the caller's one-line error
        print((str(e).strip().splitlines() or [type(e).__name__])[-1], file=sys.stderr)
        return READER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2]))
