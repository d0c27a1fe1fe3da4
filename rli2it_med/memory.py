"""How much memory a job needs, and a guard that refuses one that cannot fit with a clear message instead of being
killed by the operating system part-way.

Registering one pair (command line, Python API, bundle): the agent runs on a working grid of fixed size (2 mm,
96x112x96 in 3D), so what grows with the scans is their reading, resampling and the outputs on the fixed grid (the
displacement field in double precision, 24 bytes per voxel, the warped image, labels and Jacobian map)::

    peak resident memory ~ BASE + PER_FIXED_VOXEL * fixed voxels + PER_MOVING_VOXEL * moving voxels

Training: the replay buffer (counted exactly: episodes x (T+1) states of the field in half precision) plus the
networks' activations, proportional to the transitions per update and the voxels of an image::

    peak ~ BASE + buffer + TRAIN_BYTES_PER_SAMPLE_VOXEL[dims] * (batch_size + env_batch) * image voxels

The constants were measured on CPU by ``python bench/memory.py`` (docs/scaling.md has its table). The guard compares
the estimate, times :data:`MARGIN`, with the memory the operating system reports available (``MemAvailable``,
and a cgroup limit when one is set, as in containers and Slurm jobs). ``RLI2IT_MEMORY_CHECK=0`` turns it off.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = [
    "BASE",
    "MARGIN",
    "NotEnoughMemory",
    "available_bytes",
    "check_fits",
    "registration_bytes",
    "resident_bytes",
    "training_bytes",
]

GB = 1024**3
MB = 1024**2
BASE = 750 * MB  # the interpreter with torch, MONAI, SimpleITK, the network and the working grid (fit: 700 MB)
PER_FIXED_VOXEL = 85  # bytes: fixed image, field (float64 x 3), warped image, labels, Jacobian, their writing (fit: 80)
PER_MOVING_VOXEL = 15  # bytes: moving image and labels as read and resampled (fit: 14)
TRAIN_BYTES_PER_SAMPLE_VOXEL = {2: 2000, 3: 400}  # activations and allocator overhead per transition and image voxel
MARGIN = 1.2


class NotEnoughMemory(MemoryError):
    """A job that would not fit in the memory available; the message says how much it needs and has."""


def resident_bytes() -> int:
    """This process's resident memory now (Linux; 0 where unknown)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def available_bytes() -> int | None:
    """Memory a new allocation can still get: the smaller of the system's ``MemAvailable`` and what the memory limits
    of this process's cgroup and its ancestors leave (cgroup v2 or v1: containers, Slurm jobs); None where neither is
    known (then nothing is refused)."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    candidates += _cgroup_headroom()
    return min(candidates) if candidates else None


def _cgroup_headroom() -> list[int]:
    """Limit minus usage of every cgroup on this process's path that sets a memory limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            root, limit_name, usage_name = Path("/sys/fs/cgroup"), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):  # v1
            root, limit_name, usage_name = (
                Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes", "memory.usage_in_bytes"
            )  # fmt: skip
        else:
            continue
        folder = root / path.lstrip("/")
        while True:
            try:
                limit = (folder / limit_name).read_text().strip()
                if limit != "max" and int(limit) < 2**60:
                    out.append(int(limit) - int((folder / usage_name).read_text().strip()))
            except (OSError, ValueError):
                pass
            if folder == root or root not in folder.parents:
                break
            folder = folder.parent
    return out


def registration_bytes(fixed_voxels: int, moving_voxels: int) -> int:
    """Estimated peak resident memory of registering one pair of these sizes (see the module docstring)."""
    return BASE + PER_FIXED_VOXEL * int(fixed_voxels) + PER_MOVING_VOXEL * int(moving_voxels)


def training_bytes(
    spatial_dims: int, image_voxels: int, batch_size: int, env_batch: int, buffer_bytes: int, on_gpu: bool = False
) -> int:
    """Estimated peak resident memory of one training process (see the module docstring); ``buffer_bytes`` is
    the replay buffer when full (it stays in host memory); with ``on_gpu`` the activations are not counted."""
    activations = 0 if on_gpu else TRAIN_BYTES_PER_SAMPLE_VOXEL[spatial_dims] * (batch_size + env_batch) * image_voxels
    return BASE + int(buffer_bytes) + int(activations)


def check_fits(need: int, what: str) -> None:
    """Refuse ``what`` when the part of ``need`` (an estimate of the peak) this process does not hold yet, times
    :data:`MARGIN`, exceeds what is available. The process is taken to hold the estimate's :data:`BASE` already (as
    much of it as it has resident); whatever else it holds does not reduce what the job will allocate.

    Raises:
        NotEnoughMemory: naming the job, the estimate and the memory available.
    """
    if os.environ.get("RLI2IT_MEMORY_CHECK", "1") == "0":
        return
    available = available_bytes()
    if available is None:
        return
    extra = max(0, need - min(resident_bytes(), BASE))
    if extra * MARGIN > available:
        raise NotEnoughMemory(
            f"{what} needs about {need / GB:.1f} GB at its peak ({math.ceil(extra * MARGIN / GB * 10) / 10:.1f} GB "
            f"more with a {MARGIN:.1f}x margin) but {available / GB:.1f} GB are available; free memory, use a "
            "machine (or job allocation) with more, or set RLI2IT_MEMORY_CHECK=0 to try anyway"
        )
