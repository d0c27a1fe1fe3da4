"""The bundles, checked the way MONAI model-zoo's CI checks bundles, plus the behaviour the issue asks for."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_metadata, verify_net_in_out

from data_prep.brain import main as build_dataset
from rli2it_med import io
from rli2it_med.agent import Agent, AgentConfig
from rli2it_med.api import StepwiseRegistrationNet, coarse_levels, refine_counts
from rli2it_med.registration.synthetic import demo_pair
from tests.conftest import save_nifti

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {3: REPO / "bundles" / "brain_mri_rl_registration", 2: REPO / "bundles" / "brain_mri_rl_registration_2d"}
SCHEMA = REPO / "bundles" / "schema" / "meta_schema_20240725.json"
SCHEMA_MD5 = "76e1add273836515d0bbb3bc71962474"  # the shipped copy: a changed schema file fails loudly


def configs(dim, *names):
    files = [str(BUNDLES[dim] / "configs" / n) for n in names]
    return files[0] if len(files) == 1 else files


def workflow(dim, names, kind, **override):
    return ConfigWorkflow(
        config_file=configs(dim, *names),
        meta_file=str(BUNDLES[dim] / "configs" / "metadata.json"),
        logging_file=str(BUNDLES[dim] / "configs" / "logging.conf"),
        workflow_type=kind,
        **override,
    )


@pytest.fixture(scope="module")
def data2d(tmp_path_factory):
    out = tmp_path_factory.mktemp("brain2d")
    build_dataset(["--dim", "2", "--out", str(out), "--n-train", "4", "--n-val", "2", "--n-test", "2"])
    return out


@pytest.fixture(scope="module")
def data3d(tmp_path_factory):
    out = tmp_path_factory.mktemp("brain3d")
    build_dataset(["--dim", "3", "--out", str(out), "--n-train", "2", "--n-val", "1", "--n-test", "1"])
    return out


@pytest.mark.parametrize("dim", [3, 2])
def test_metadata_verifies_against_the_shipped_schema(dim, tmp_path):
    verify_metadata(meta_file=configs(dim, "metadata.json"), filepath=str(SCHEMA), hash_val=SCHEMA_MD5)
    meta = io.load_json(configs(dim, "metadata.json"))
    del meta["task"]
    io.save_json(tmp_path / "bad.json", meta)
    with pytest.raises(ValueError, match="task"):
        verify_metadata(meta_file=str(tmp_path / "bad.json"), filepath=str(SCHEMA), hash_val=SCHEMA_MD5)


@pytest.mark.parametrize("dim", [3, 2])
def test_network_in_out(dim):
    verify_net_in_out(
        net_id="network_def",
        meta_file=configs(dim, "metadata.json"),
        config_file=configs(dim, "inference.json"),
        device="cpu",
        n=2,
    )


@pytest.mark.parametrize("dim", [3, 2])
@pytest.mark.parametrize(
    "names, kind",
    [
        (["train.json"], "train"),
        (["train.json", "multi_gpu_train.json"], "train"),
        (["evaluate.json"], "eval"),
        (["inference.json"], "infer"),
    ],
)
def test_workflow_properties(dim, names, kind, monkeypatch, request):
    if "multi_gpu_train.json" in names:  # its initialize joins a process group: a group of one here
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                     "LOCAL_RANK": "0"}.items():  # fmt: skip
            monkeypatch.setenv(k, v)
    # resolving the train / evaluate properties loads their datasets: a tiny one of the right dimension
    data = {} if kind == "infer" else {"dataset_dir": str(request.getfixturevalue(f"data{dim}d"))}
    wf = workflow(dim, names, kind, **data)
    wf.initialize()
    try:
        assert wf.check_properties() == []
        assert Path(wf.bundle_root) == BUNDLES[dim]
    finally:
        wf.finalize()
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("dim", [3, 2])
def test_shipped_weights_load_into_the_configured_network(dim):
    wf = workflow(dim, ["inference.json"], "infer")
    wf.initialize()
    net = wf.parser.get_parsed_content("network")
    assert isinstance(net, StepwiseRegistrationNet) and net.metadata["updates"] > 0
    val = net.metadata["val"]  # the configs run what validation chose for these weights
    chosen = (coarse_levels(val["coarse_steps"]), val["steps"], val.get("fine_steps", 0))
    assert (coarse_levels(net.coarse_steps), net.steps, net.fine_steps) == chosen
    assert refine_counts(net.refine) == refine_counts(val.get("refine", 0))
    trained = net.metadata["config"]["loss"]  # the refinement minimises the training's auxiliary loss, with the
    # smoothness weight validation chose when the checkpoint records one
    assert (net.refine_loss.kernel_size, net.refine_loss.smooth_weight) == (
        trained["kernel_size"],
        val.get("refine_smooth_weight", trained["smooth_weight"]),
    )
    for name in ("inference.json", "evaluate.json"):
        config = io.load_json(configs(dim, name))
        assert (coarse_levels(config["coarse_steps"]), config["steps"], config.get("fine_steps", 0)) == chosen, name
        assert refine_counts(config.get("refine", 0)) == refine_counts(val.get("refine", 0)), name
    other = StepwiseRegistrationNet(net.agent.config.to_dict() | {"plan_dim": 32}, grid_scale=net.grid_scale)
    with pytest.raises(ValueError, match="plan_dim"):
        other.load_weights(BUNDLES[dim] / "models" / "model.pt")


def test_demo_inference_3d_improves_dice_and_writes_everything(tmp_path):
    wf = workflow(3, ["inference.json"], "infer", output_dir=str(tmp_path))
    wf.initialize()
    wf.run()
    for name in ("warped.nii.gz", "warped_label.nii.gz", "displacement.nii", "qc.png", "metrics.json"):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name
    result = io.load_json(tmp_path / "summary.json")["cases"][0]
    # measured 0.452 -> 0.819 with the shipped weights (0.6.1; 0.451 -> 0.820 with 0.5.0, 0.769 with 0.3.0, 0.4.0)
    assert result["dice_mean"] - result["dice_before_mean"] > 0.15
    assert result["folding_percent"] < 0.1
    warped = io.load_image(tmp_path / "demo" / "warped.nii.gz")
    assert warped[0].shape == (96, 112, 96) and np.allclose(warped[1], demo_pair(3)["affine"])


def save_case(folder, pair, corrupt=False):
    for key, name in (
        ("fixed", "fixed"),
        ("moving", "moving"),
        ("fixed_seg", "fixed_label"),
        ("moving_seg", "moving_label"),
    ):
        save_nifti(folder / f"{name}.nii.gz", pair[key], pair["affine"])
    if corrupt:
        (folder / "moving.nii.gz").write_bytes(b"truncated")


def test_a_bad_case_is_reported_and_the_batch_goes_on(tmp_path):
    pair = demo_pair(2)
    save_case(tmp_path / "cases" / "a_bad", pair, corrupt=True)
    save_case(tmp_path / "cases" / "b_good", pair)
    wf = workflow(2, ["inference.json"], "infer", output_dir=str(tmp_path / "out"), dataset_dir=str(tmp_path / "cases"))
    wf.initialize()
    with pytest.raises(RuntimeError) as failed:  # MONAI wraps the evaluator's error in its own
        wf.run()
    assert "1 of 2 cases failed" in str(failed.value.__cause__)
    summary = io.load_json(tmp_path / "out" / "summary.json")
    assert [c["case"] for c in summary["cases"]] == ["b_good"]
    assert summary["failed"][0]["case"] == "a_bad" and "moving.nii.gz" in summary["failed"][0]["error"]
    good = summary["cases"][0]
    assert good["dice_mean"] > good["dice_before_mean"] + 0.05
    assert not (tmp_path / "out" / "a_bad").exists()


def test_user_files_on_another_grid_are_resampled_to_the_fixed_space(tmp_path):
    pair = demo_pair(2)
    save_nifti(tmp_path / "fixed.nii.gz", pair["fixed"], pair["affine"])
    shifted = pair["affine"].copy()
    shifted[:3, 3] += shifted[:3, 0] * 3  # the same image stored 3 voxels further along x
    save_nifti(tmp_path / "moving.nii.gz", np.roll(pair["moving"], -3, axis=0), shifted)
    wf = workflow(2, ["inference.json"], "infer", output_dir=str(tmp_path / "out"),
                  fixed=str(tmp_path / "fixed.nii.gz"), moving=str(tmp_path / "moving.nii.gz"))  # fmt: skip
    wf.initialize()
    wf.run()
    warped, affine = io.load_image(tmp_path / "out" / "fixed" / "warped.nii.gz")
    assert np.allclose(affine, pair["affine"]) and warped.shape == pair["fixed"].shape


def run_bundle(args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, **kwargs)


TINY = [
    arg
    for kv in (
        "env_batch 2",
        "batch_size 2",
        "updates_per_round 1",
        "bootstrap_rounds 1",
        "val_pairs 2",
        "buffer_episodes 8",
    )  # fmt: skip
    for arg in ("--train#trainer#" + kv.split()[0], kv.split()[1])
]


def test_torchrun_two_processes_gloo_leave_one_checkpoint(tmp_path, data2d):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "monai.bundle", "run", "--config_file", str(configs(2, "train.json", "multi_gpu_train.json")),
            "--dataset_dir", str(data2d), "--output_dir", str(out),
            "--train#trainer#max_epochs", "2", "--train#trainer#epoch_length", "2", *TINY]  # fmt: skip
    proc = run_bundle(args, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt", "config.json", "model.pt", "progress.csv", "train_state.pt"
    ]  # fmt: skip
    rows = (out / "progress.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + one validation per epoch, written by process 0 only
    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["updates"] == 4
    plain = Agent(AgentConfig(**payload["config"]["agent"]))
    plain.load_state_dict(payload["state_dict"])
    assert payload["config"]["env"]["max_steps"] == 8  # trained episode length; inference defaults to the best step
    assert StepwiseRegistrationNet.from_checkpoint(out / "model.pt").steps == payload["val"]["steps"]
    assert 1 <= payload["val"]["steps"] <= 8


def test_train_kill_resume_continues_from_the_saved_update(tmp_path, data2d):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs(2, "train.json"),
            "--dataset_dir", str(data2d), "--output_dir", str(out),
            "--train#trainer#epoch_length", "1", *TINY]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([*base, "--train#trainer#max_epochs", "1000"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    saved = 0
    while time.time() < deadline and saved < 2:
        time.sleep(0.5)
        if (out / "train_state.pt").is_file():
            try:
                saved = torch.load(out / "train_state.pt", weights_only=False)["sac"]["n_updates"]
            except Exception:  # noqa: BLE001 - read while being replaced: try again
                continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert saved >= 2, "no checkpoint within the deadline"
    saved = torch.load(out / "train_state.pt", weights_only=False)["sac"]["n_updates"]
    resumed = run_bundle([*base, "--resume", "true", "--train#trainer#max_epochs", str(saved + 2)], timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {out} at update {saved}," in resumed.stdout
    assert torch.load(out / "model.pt", weights_only=True)["updates"] == saved + 2
    updates = [int(float(r.split(",")[0])) for r in (out / "progress.csv").read_text().splitlines()[1:]]
    assert updates[-1] == saved + 2


def test_yes_no_options_from_the_command_line():
    from rli2it_med.bundle import _flag

    assert _flag("false", "resume") is False and _flag("True", "resume") is True and _flag(False, "x") is False
    with pytest.raises(ValueError, match="resume must be true or false"):
        _flag("maybe", "resume")
