"""Reading a DICOM series in a child process.

GDCM parses whatever bytes a DICOM file holds; on a corrupt file it may raise, but it may also loop for a long time
or crash the process it runs in. :func:`read_series` therefore reads in a child process (started from a fork
server that has imported only SimpleITK, so a read costs milliseconds more, not an interpreter start): a crash or a
hang ends the child, and the caller gets one ``ValueError``. This module imports nothing heavy, so the fork server
stays small.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

__all__ = ["TIMEOUT_S", "read_series"]

TIMEOUT_S = 60.0
"""The reader's limit for a series, plus one second per 10 MB of files."""


def _read(folder: str, conn: Any) -> None:
    """In the child: the largest series of ``folder`` as a SimpleITK image, or the reader's error, sent on ``conn``."""
    import SimpleITK as sitk

    try:
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
        if not ids:
            conn.send(("error", "no DICOM series in this folder"))
            return
        files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, i) for i in ids), key=len)
        conn.send(("ok", sitk.ReadImage(files)))
    except Exception as e:  # noqa: BLE001 - whatever GDCM raises becomes the caller's one-line error
        conn.send(("error", (str(e).strip().splitlines() or [type(e).__name__])[-1]))
    finally:
        conn.close()


def _context() -> Any:
    if "forkserver" not in mp.get_all_start_methods():  # Windows
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "SimpleITK"])
    return ctx


def read_series(folder: str | Path, timeout: float | None = None) -> Any:
    """The largest DICOM series in ``folder`` as a SimpleITK image, read in a child process.

    Args:
        timeout: seconds before the reader is stopped (default :data:`TIMEOUT_S` plus one second per 10 MB).

    Raises:
        ValueError: the reader's own error, a crash of the reader, or a read that did not finish in time.
    """
    folder = Path(folder)
    if mp.current_process().daemon:  # a daemonic process (e.g. a data-loader worker) cannot start one: read here
        parent, child = mp.Pipe(duplex=False)
        _read(str(folder), child)
        return _answer(parent.recv())
    if timeout is None:
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        timeout = TIMEOUT_S + size / 10e6
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_read, args=(str(folder), child), daemon=True)
    proc.start()
    child.close()
    try:
        if parent.poll(timeout):
            try:
                return _answer(parent.recv())
            except EOFError:  # the child ended without an answer: it crashed
                proc.join()
                raise ValueError(f"the DICOM reader crashed (exit code {proc.exitcode})") from None
        raise ValueError(f"the DICOM reader did not finish within {timeout:.0f} s")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        parent.close()


def _answer(message: tuple[str, Any]) -> Any:
    kind, value = message
    if kind == "error":
        raise ValueError(value)
    return value
