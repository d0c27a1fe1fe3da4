"""The 3D bundle's out-of-the-box command, end to end: ``python -m monai.bundle run --config_file
bundles/brain_mri_rl_registration/configs/inference.json`` from the start of Python to its exit (the demo pair built,
affine + agent, every output written), run ``--runs`` times in fresh processes, beside ``python -c "import monai"``
alone (the floor no bundle can go below) and that import with the interpreter's exit-time garbage-collection sweeps
skipped, as the bundle's workflows skip them (``rli2it_med.skip_exit_sweep``). Each process runs with this
interpreter, so a virtual environment made by the README's main-job command is measured by running this script with
its python.

    python bench/bundle_demo.py [--runs 5] [--bundle bundles/brain_mri_rl_registration] [--cold]

``--cold`` (root only) empties the kernel's page cache (``/proc/sys/vm/drop_caches``) before every timed process, so
each reads Python, torch, MONAI and the weights from disk as on a machine's first run of the day.

The first run of a fresh environment also builds the template cache from nilearn's files (seconds more): one
untimed run comes first.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds, done.stdout


def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo``), to tell one machine's numbers from another's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bundle", default="bundles/brain_mri_rl_registration")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each timed process (root)")
    args = parser.parse_args()
    timed = wall
    if args.cold:
        drop = Path("/proc/sys/vm/drop_caches")
        try:
            drop.write_text("3\n")
        except OSError as e:
            raise SystemExit(f"--cold needs to write {drop} (root): {e}") from e

        def timed(cmd: list[str]) -> tuple[float, str]:
            subprocess.run(["sync"], check=True)
            drop.write_text("3\n")
            return wall(cmd)

    with tempfile.TemporaryDirectory() as out:
        run = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"{args.bundle}/configs/inference.json"]
        run += ["--output_dir", out]
        wall(run)  # untimed: caches (template, .pyc files)
        bundle, inside = "python -m monai.bundle run (inference.json)", "  of it, affine + agent (printed)"
        floor = 'python -c "import monai"'
        floor_fast = '  the same, exit sweep skipped (+ "gc.freeze()")'
        rows: dict[str, list[float]] = {bundle: [], inside: [], floor: [], floor_fast: []}
        for _ in range(args.runs):  # interleaved, so a slow spell of the machine hits all alike
            seconds, printed = timed(run)
            rows[bundle].append(seconds)
            rows[inside].append(float(re.search(r"demo: ([\d.]+) s", printed)[1]))  # the case's line
            rows[floor].append(timed([sys.executable, "-c", "import monai"])[0])
            rows[floor_fast].append(timed([sys.executable, "-c", "import monai, gc; gc.freeze()"])[0])
    cache = "page cache dropped before each" if args.cold else "page cache warm"
    print(f"{args.runs} runs each ({cache}), {sys.executable}, CPU: {cpu_model()}")
    print(f"| {'process, start to exit':50s} | median s | min s | max s |")
    print(f"|{'-' * 52}|---------:|------:|------:|")
    for name, values in rows.items():
        print(f"| {name:50s} | {statistics.median(values):8.2f} | {min(values):5.2f} | {max(values):5.2f} |")


if __name__ == "__main__":
    main()
