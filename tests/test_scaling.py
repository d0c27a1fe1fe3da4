"""Scaling out: batch registration sharded over torchrun processes, data-parallel training of a vision task."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
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


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    """Every process's replay shard and random streams are restored: the resumed 2-process run ends exactly where an
    uninterrupted one does (the single-process case: tests/registration/test_train.py)."""
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(REPO / "data_prep/brain.py"), "--dim", "2", "--out", str(data), "--n-train",
                    "8", "--n-val", "2", "--n-test", "2"], check=True, capture_output=True)  # fmt: skip
    args = ["-m", "rli2it", "train", "--data", str(data), "--max-updates", "24", "--eval-every", "8", "--seed", "2",
            "--quiet"]  # fmt: skip
    whole = torchrun(2, *args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]

    part = tmp_path / "part"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args, "--out",
               str(part)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, saved = time.time() + 240, 0
    while time.time() < deadline and saved < 8 and proc.poll() is None:
        time.sleep(0.2)
        try:
            saved = torch.load(part / "train_state.pt", weights_only=False)["sac"]["n_updates"]
        except (OSError, RuntimeError, EOFError):
            continue
    _kill_all(str(part))  # the launcher and both training processes (torchrun starts them in their own sessions)
    proc.wait()
    saved = torch.load(part / "train_state.pt", weights_only=False)["sac"]["n_updates"]
    assert 8 <= saved < 24, saved
    resumed = torchrun(2, "-m", "rli2it", "train", "--out", str(part), "--resume", "--quiet")
    assert resumed.returncode == 0 and f"at update {saved}," in resumed.stdout, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    b = torch.load(part / "model.pt", weights_only=True)
    assert a["updates"] == b["updates"] == 24
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name

    # another number of processes (elastic): the run goes on from the saved state and says it is not exact
    one = subprocess.run([sys.executable, "-m", "rli2it", "train", "--out", str(part), "--resume", "--max-updates",
                          "32", "--quiet"], cwd=REPO, env=env, capture_output=True, text=True)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    assert "saved by 2 processes, resumed by 1" in one.stdout and "at update 24," in one.stdout
    assert torch.load(part / "model.pt", weights_only=True)["updates"] == 32


def _kill_all(marker: str) -> None:
    """SIGKILL every process whose command line holds ``marker``, and wait until they are gone (Linux /proc)."""
    for _ in range(100):
        pids = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if marker in cmdline.read_bytes().decode(errors="replace") and int(cmdline.parent.name) != os.getpid():
                    pids.append(int(cmdline.parent.name))
            except OSError:
                continue
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------------ memory guard


def test_the_guard_refuses_a_job_that_cannot_fit_and_says_why(monkeypatch):
    from rli2it_med import memory

    assert memory.available_bytes() > 0 and memory.resident_bytes() > 0  # Linux: both known
    assert memory.registration_bytes(2 * 10**6, 10**6) > memory.registration_bytes(10**6, 10**6)
    monkeypatch.setattr(memory, "available_bytes", lambda: 2 * 2**30)
    monkeypatch.setattr(memory, "resident_bytes", lambda: 2**30)  # BASE (750 MB) of it counts as held
    memory.check_fits(memory.BASE + int(1.6 * 2**30), "a small job")  # 1.6 GB more, x 1.2 = 1.92 GB
    with pytest.raises(memory.NotEnoughMemory, match=r"a big job needs about 3\.0 GB .* 2\.0 GB are available"):
        memory.check_fits(3 * 2**30, "a big job")
    monkeypatch.setenv("RLI2IT_MEMORY_CHECK", "0")
    memory.check_fits(30 * 2**30, "anything")


def test_registration_and_training_that_cannot_fit_fail_cleanly(monkeypatch, tmp_path, capsys, pairs_csv):
    from rli2it_med import memory
    from rli2it_med.cli.main import main

    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)
    out = tmp_path / "out"
    rc = main(["register", "--fixed", str(tmp_path / "fixed.nii.gz"), "--moving", str(tmp_path / "moving.nii.gz"),
               "--warped-out", str(out / "w.nii.gz"), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "registering a 128x128 moving image onto a 128x128 fixed image needs about" in err, err
    assert not out.exists() or not any(out.iterdir())

    rc = main(["register", "--pairs", str(pairs_csv), "--out-dir", str(tmp_path / "res"), "--quiet", "--device", "cpu"])
    rows = list(csv.DictReader((tmp_path / "res" / "summary.csv").open()))
    assert rc == 1 and all(r["status"] == "failed" for r in rows)  # each pair reported, the batch went through
    assert "NotEnoughMemory" in rows[0]["error"]

    from rli2it_med.registration.train import default_config, train

    cfg = default_config(2, out=str(tmp_path / "run"), max_updates=1)
    with pytest.raises(memory.NotEnoughMemory, match=r"training on 128x128 images \(replay buffer"):
        train(cfg, progress=False, train_pairs=_pairs(), val_pairs=_pairs())


def _pairs():
    from rli2it_med.registration.data import PairDataset

    pair = demo_pair(2)
    images = np.stack([pair["fixed"], pair["moving"]])
    labels = np.stack([pair["fixed_seg"], pair["moving_seg"]])
    return PairDataset(images, labels, [(0, 1)], label_values=(1, 2, 3))
