"""Scaling out: batch registration sharded over torchrun processes, data-parallel training of a vision task."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest
import torch

from rli2it_med.registration.synthetic import demo_pair

REPO = Path(__file__).resolve().parents[1]


def torchrun(nproc, *args, timeout=300):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def pairs_csv(tmp_path):
    pair = demo_pair(2)
    for key in ("fixed", "moving"):
        nib.save(nib.Nifti1Image(pair[key], pair["affine"]), str(tmp_path / f"{key}.nii.gz"))
    rows = [[f"p{i}", "fixed.nii.gz", "moving.nii.gz"] for i in range(5)]
    rows[2][2] = "missing.nii.gz"
    with (tmp_path / "pairs.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["id", "fixed", "moving"], *rows])
    return tmp_path / "pairs.csv"


def test_batch_registration_shards_pairs_over_processes_and_process_0_merges(pairs_csv, tmp_path):
    out = tmp_path / "res"
    args = ["-m", "rli2it", "register", "--pairs", str(pairs_csv), "--out-dir", str(out), "--quiet", "--no-affine",
            "--device", "cpu"]  # fmt: skip
    proc = torchrun(2, *args)
    assert proc.returncode != 0  # one pair failed: the batch says so (process 0's exit status)
    assert proc.stdout.count("4 of 5 pairs registered") == 1, proc.stdout + proc.stderr[-3000:]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["id"], r["status"]) for r in rows] == [
        ("p0", "ok"), ("p1", "ok"), ("p2", "failed"), ("p3", "ok"), ("p4", "ok")
    ]  # fmt: skip
    assert "missing.nii.gz" in rows[2]["error"]
    assert json.loads((out / "summary.json").read_text())["processes"] == 2
    for i in (0, 1, 3, 4):
        assert (out / f"p{i}" / "stats.json").is_file() and (out / f"p{i}" / "transform.h5").is_file()
    assert not (out / "p2").exists() or not any((out / "p2").iterdir())

    again = torchrun(3, *args)  # a re-run (here with another number of processes) skips the finished pairs
    assert again.stdout.count("4 of 5 pairs registered") == 1
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["done before", "done before", "failed", "done before", "done before"]


def test_two_process_training_of_a_vision_task_writes_once(tmp_path):
    out = tmp_path / "run"
    proc = torchrun(2, "-m", "rli2it", "translate", "train", "--out", str(out), "--max-updates", "4",
                    "--eval-every", "2", "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"updates":') == 1  # the result, printed by process 0 alone
    rows = (out / "progress.csv").read_text().strip().splitlines()
    assert len(rows) >= 2 and rows[0].startswith("step,")  # one header: one writer
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert len(state["processes"]) == 2  # each process's replay shard and random streams, for an exact resume
    assert all(len(p["buffer"]["episodes"]) > 0 for p in state["processes"])
