import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.brain import main as build_data
from rli2it_med import io
from rli2it_med.agent.checkpoint import training_minutes
from rli2it_med.api import Registrator
from rli2it_med.cli.main import main as cli
from rli2it_med.registration.data import PairDataset
from rli2it_med.registration.train import default_config, evaluate, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The 2D builder's data, pooled to 64x64 so that a test run of training takes a minute."""
    root = tmp_path_factory.mktemp("brain2d")
    build_data(["--dim", "2", "--out", str(root), "--n-train", "48", "--n-val", "4", "--n-test", "8"])
    small = tmp_path_factory.mktemp("brain2d_64")
    for split in ("train", "val", "test"):
        arrays, meta = io.load_dataset(root, split)
        images = arrays["images"]
        arrays["images"] = images.reshape(len(images), 64, 2, 64, 2).mean((2, 4)).astype(np.float32)
        arrays["labels"] = arrays["labels"][:, ::2, ::2]
        io.save_npz_deterministic(small / f"{split}.npz", arrays)
    io.save_json(small / "meta.json", meta | {"shape": [64, 64], "spacing": [4.0, 4.0]})
    return small


@pytest.mark.slow
def test_short_2d_training_raises_dice_on_held_out_pairs(data, tmp_path):
    # a budget of 480 updates and no minutes: reproducible (with a wall-clock budget the learning-rate schedule follows
    # the clock, and one CI run in several rose by only 0.005); over seeds 0-2 the test Dice rises by 0.08-0.12
    cfg = default_config(2, data=str(data), out=str(tmp_path / "run"), minutes=None, max_updates=480)
    cfg.eval_every, cfg.val_pairs = 160, 4
    cfg.sac.lr_aux = cfg.sac.lr_planner = 1e-3
    result = train(cfg, progress=False)
    assert result["updates"] == 480
    reg = Registrator.load(tmp_path / "run" / "best.pt", "cpu")
    metrics = evaluate(reg, PairDataset.load(data, "test"), hd95=False)
    initial, final = np.nanmean(metrics["dice_initial"]), np.nanmean(metrics["dice"])
    assert final > initial + 0.03, (initial, final)
    assert metrics["folding"].mean() < 1.0

    # resume continues from the saved counters; the CLI evaluates the checkpoint
    cfg.max_updates = 488
    assert train(cfg, resume=True, progress=False)["updates"] == 488
    out = tmp_path / "eval.json"
    code = cli(
        [
            "evaluate",
            "--model",
            str(tmp_path / "run" / "model.pt"),
            "--data",
            str(data),
            "--limit",
            "2",
            "--no-hd95",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    assert code == 0 and out.is_file()


def test_cli_reports_a_missing_dataset(tmp_path, capsys):
    code = cli(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def _train_command(data, out, *extra):
    args = ["train", "--out", str(out), "--quiet", "--threads", "1", *extra]
    if data is not None:
        args += ["--data", str(data), "--max-updates", "40", "--eval-every", "8", "--seed", "3"]
    return [sys.executable, "-m", "rli2it_med.cli.main", *args]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(data, tmp_path):
    """Kill at whatever point the run has reached after its first checkpoint; the resumed run must end with exactly
    the uninterrupted run's weights (replay buffer, optimisers, temperature and random streams restored)."""
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo))
    whole, part = tmp_path / "whole", tmp_path / "part"
    done = subprocess.run(_train_command(data, whole), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    proc = subprocess.Popen(_train_command(data, part), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, saved = time.time() + 240, 0
    while time.time() < deadline and saved < 8 and proc.poll() is None:
        time.sleep(0.2)
        try:
            saved = torch.load(part / "train_state.pt", weights_only=False)["sac"]["n_updates"]
        except (OSError, RuntimeError, EOFError):  # not written yet, or being replaced
            continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(part / "train_state.pt", weights_only=False)["sac"]["n_updates"]
    assert 8 <= saved < 40, saved
    resumed = subprocess.run(_train_command(None, part, "--resume"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at update {saved}," in resumed.stdout

    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(part / "model.pt", weights_only=True)
    assert a["updates"] == b["updates"] == 40
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name


def test_best_step_is_the_step_with_the_best_score():
    from rli2it_med.agent.loop import best_step

    curves = np.array([[0.5, 0.7, 0.80, 0.79], [0.5, 0.6, 0.72, 0.70]])  # means 0.65, 0.76, 0.745 after steps 1-3
    assert best_step(curves.mean(0)) == 2
    assert best_step([0.5, 0.6, 0.6]) == 1  # the first of equals
    assert best_step([0.9, 0.1, 0.2]) == 2  # never 0 steps, however good the start
    with pytest.raises(ValueError, match="t = 0..T"):
        best_step([0.5])


@pytest.mark.parametrize("grid_scale", [1, 2])
def test_evaluate_save_steps_records_the_models_default_steps(data, tmp_path, capsys, grid_scale):
    from rli2it_med.agent import Agent, save_checkpoint
    from rli2it_med.api import StepwiseRegistrationNet
    from rli2it_med.cli.main import MAX_FINE_STEPS
    from rli2it_med.registration.env import EnvConfig
    from rli2it_med.registration.task import agent_config

    agent = Agent(agent_config(2, channels=(4, 8), critic_channels=(4, 8), plan_dim=8))
    with torch.no_grad():  # an actor that moves things, so that Dice changes from step to step
        agent.actor.out.weight.normal_(0, 0.05)
    path = tmp_path / "model.pt"
    config = {"agent": agent.config.to_dict(), "env": vars(EnvConfig(max_steps=4)), "grid_scale": grid_scale}
    save_checkpoint(path, config, agent.state_dict())
    net = StepwiseRegistrationNet.from_checkpoint(path)
    assert (net.steps, net.coarse_steps, net.fine_steps) == (4, 0, 0)  # no recorded choice: the episode length

    # what the choice must be: the (coarse steps, steps) of the best mean validation Dice, whole episodes scored,
    # then, for a model on a pooled grid, the number of fine steps (0 included) with the best Dice after them
    # (coarse steps: 0-4, then 1-2 steps a level coarser before them)
    reg, val = Registrator.load(path, "cpu"), PairDataset.load(data, "val")
    best = (-1.0, None)
    for k in [*range(5), *((j, k) for j in (1, 2) for k in range(5))]:
        reg.net.coarse_steps = k
        curve = evaluate(reg, val, steps=4, hd95=False)["dice_steps"].mean(0)
        if curve[1:].max() > best[0]:
            best = (curve[1:].max(), (k, int(np.argmax(curve[1:])) + 1, 0))
    if grid_scale == 2:
        reg.net.coarse_steps, steps = best[1][:2]
        reg.net.fine_steps = MAX_FINE_STEPS
        curve = evaluate(reg, val, steps=steps, hd95=False)["dice_steps"].mean(0)[steps:]
        best = (curve.max(), (*best[1][:2], int(np.argmax(curve))))

    out = tmp_path / "val.json"
    args = ["evaluate", "--model", str(path), "--data", str(data), "--split", "val", "--no-hd95", "--quiet"]
    assert cli([*args, "--save-steps", "--json", str(out)]) == 0
    summary = io.load_json(out)
    stored = list(best[1][0]) if isinstance(best[1][0], tuple) else best[1][0]  # JSON and checkpoints: a list
    assert (summary["coarse_steps"], summary["steps"], summary["fine_steps"]) == (stored, *best[1][1:])
    assert np.isclose(summary["dice_per_step"][-1], best[0])  # the printed scores are those of the chosen setting
    net = StepwiseRegistrationNet.from_checkpoint(path)
    assert (net.coarse_steps, net.steps, net.fine_steps) == best[1]
    assert StepwiseRegistrationNet.from_checkpoint(path, steps=2).steps == 2
    loaded = Registrator.load(path, "cpu").net
    assert (loaded.coarse_steps, loaded.steps, loaded.fine_steps) == best[1]
    assert Registrator.load(path, "cpu").trained_steps == 4  # the episode length still reads as trained
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["actor.out.weight"], agent.actor.out.weight)
    assert "steps by default" in capsys.readouterr().out


def test_coarse_steps_start_the_episode_from_their_field(data):
    """k coarse steps then t steps: the trajectory starts (Phi_0) from the coarse steps' field, upsampled."""
    from rli2it_med.agent import Agent
    from rli2it_med.api import StepwiseRegistrationNet
    from rli2it_med.registration.task import agent_config

    torch.manual_seed(0)
    agent = Agent(agent_config(2, channels=(4, 8), critic_channels=(4, 8), plan_dim=8))
    with torch.no_grad():
        agent.actor.out.weight.normal_(0, 0.05)
    net = StepwiseRegistrationNet(agent, steps=2).eval()
    pair = PairDataset.load(data, "val").get([0, 1])
    with torch.no_grad():
        plain, plain_fields = net.rollout(pair.fixed, pair.moving)
        field, fields = net.rollout(pair.fixed, pair.moving, coarse_steps=2)
        half = StepwiseRegistrationNet(agent, steps=2, grid_scale=2).eval()
        coarse, _ = half.rollout(pair.fixed, pair.moving)  # the same two steps on the grid twice coarser
    assert plain_fields[0].abs().max() == 0 and len(fields) == 3
    torch.testing.assert_close(fields[0], coarse, atol=0, rtol=0)
    assert not torch.allclose(field, plain)
    with pytest.raises(ValueError, match="coarse_steps"):
        net.rollout(pair.fixed, pair.moving, coarse_steps=-1)


def test_a_pyramid_of_coarse_steps_starts_each_level_from_the_coarser_levels_field(data):
    """(j, k) coarse steps: j steps on the grid four times coarser, then k steps twice coarser from their field."""
    from rli2it_med.agent import Agent
    from rli2it_med.api import StepwiseRegistrationNet, coarse_levels, format_coarse_steps, parse_coarse_steps
    from rli2it_med.registration.grid import upsample_field
    from rli2it_med.registration.task import agent_config

    torch.manual_seed(0)
    agent = Agent(agent_config(2, channels=(4, 8), critic_channels=(4, 8), plan_dim=8))
    with torch.no_grad():
        agent.actor.out.weight.normal_(0, 0.05)
    net = StepwiseRegistrationNet(agent, steps=2, coarse_steps=(1, 2)).eval()
    assert net.coarse_steps == (1, 2)
    pair = PairDataset.load(data, "val").get([0, 1])
    with torch.no_grad():
        field, fields = net.rollout(pair.fixed, pair.moving)
        half = StepwiseRegistrationNet(agent, steps=2, grid_scale=2, coarse_steps=1).eval()
        start, _ = half.rollout(pair.fixed, pair.moving)  # 1 step at scale 4, then 2 at scale 2, upsampled
        single = net.trajectory(pair.fixed, pair.moving, coarse_steps=(0, 2))
        plain = net.trajectory(pair.fixed, pair.moving, coarse_steps=2)
        quarter = StepwiseRegistrationNet(agent, steps=1, grid_scale=4).eval()
        only_coarsest = net.trajectory(pair.fixed, pair.moving, coarse_steps=(1, 0))
        coarsest = quarter.trajectory(pair.fixed, pair.moving)[-1][1]  # a level without steps passes it on:
        expected = upsample_field(upsample_field(coarsest, 2, (32, 32)), 2, (64, 64))  # upsampled level by level
    assert len(fields) == 3
    torch.testing.assert_close(fields[0], start, atol=0, rtol=0)
    assert not torch.allclose(fields[0], plain[0][1])
    for (_, a), (_, b) in zip(single, plain):  # leading empty levels change nothing
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(only_coarsest[0][1], expected, atol=1e-6, rtol=0)
    registered = Registrator.from_net(StepwiseRegistrationNet(agent, steps=2).eval(), "cpu").register(
        pair.fixed, pair.moving, coarse_steps=(1, 2)
    )  # the API passes a pyramid on: the same field as the network that has it by default
    torch.testing.assert_close(registered.field, field, atol=0, rtol=0)

    assert coarse_levels(3) == (3,) and coarse_levels([0, 0, 2]) == (2,) and coarse_levels(()) == (0,)
    assert parse_coarse_steps("1,3") == (1, 3) and parse_coarse_steps("0,2") == 2
    assert format_coarse_steps((1, 3)) == "1,3"
    net.coarse_steps = [0, 4]
    assert net.coarse_steps == 4
    for bad in ("x", "1,,2"):
        with pytest.raises(ValueError, match="counts per level"):
            parse_coarse_steps(bad)
    for bad in ((1, -1), -2):
        with pytest.raises(ValueError, match="coarse_steps"):
            net.rollout(pair.fixed, pair.moving, coarse_steps=bad)
    with pytest.raises(ValueError, match="integer or a sequence"):
        StepwiseRegistrationNet(agent, coarse_steps=(1.5, 2))
    with pytest.raises(SystemExit):
        cli(["evaluate", "--model", "m.pt", "--data", str(data), "--coarse-steps", "1;2"])


def test_fine_steps_go_on_from_the_episodes_field_on_the_grid_twice_finer(data):
    """T steps on the pooled grid, then F steps on the grid twice finer, starting from Phi_T upsampled."""
    from rli2it_med.agent import Agent
    from rli2it_med.api import StepwiseRegistrationNet
    from rli2it_med.registration.grid import upsample_field
    from rli2it_med.registration.task import agent_config

    torch.manual_seed(0)
    agent = Agent(agent_config(2, channels=(4, 8), critic_channels=(4, 8), plan_dim=8))
    with torch.no_grad():
        agent.actor.out.weight.normal_(0, 0.05)
    net = StepwiseRegistrationNet(agent, steps=2, grid_scale=2).eval()
    pair = PairDataset.load(data, "val").get([0, 1])
    with torch.no_grad():
        plain = net.trajectory(pair.fixed, pair.moving)
        fine = net.trajectory(pair.fixed, pair.moving, fine_steps=3)
        field, fields = net.rollout(pair.fixed, pair.moving, fine_steps=3)
    assert [s for s, _ in plain] == [2, 2, 2] and [s for s, _ in fine] == [2, 2, 2, 1, 1, 1]
    for (_, a), (_, b) in zip(plain, fine):
        torch.testing.assert_close(a, b, atol=0, rtol=0)  # the same episode first
    assert fine[-1][1].shape[2:] == pair.fixed.shape[2:] and torch.equal(field, fine[-1][1]) and len(fields) == 6
    start = upsample_field(plain[-1][1], 2, tuple(pair.fixed.shape[2:]))
    assert not torch.allclose(fine[3][1], start)  # the fine steps move

    with torch.no_grad():  # an actor that does not move: each fine field is Phi_T upsampled, nothing else
        agent.actor.out.weight.zero_()
        agent.actor.out.bias.zero_()
        still = net.trajectory(pair.fixed, pair.moving, fine_steps=2)
    torch.testing.assert_close(still[-1][1], upsample_field(still[2][1], 2, tuple(pair.fixed.shape[2:])))

    res = Registrator.from_net(net, "cpu").register(
        pair.fixed, pair.moving, fixed_seg=pair.fixed_seg, moving_seg=pair.moving_seg, keep_steps=True, fine_steps=2
    )
    assert len(res.dice) == 5 and len(res.step_fields) == 4 and res.field.shape == pair.fixed.shape[:1] + (2, 64, 64)
    with pytest.raises(ValueError, match="even grid_scale"):
        StepwiseRegistrationNet(agent, steps=2, fine_steps=1)
    with pytest.raises(ValueError, match="fine_steps"):
        net.rollout(pair.fixed, pair.moving, fine_steps=-1)


def test_refinement_lowers_the_auxiliary_loss_from_the_agents_field(data, tmp_path):
    """Adam iterations on the auxiliary loss, from the agent's field, added as one last field on the input grid."""
    from rli2it_med.agent import Agent
    from rli2it_med.agent.checkpoint import save_checkpoint
    from rli2it_med.api import StepwiseRegistrationNet
    from rli2it_med.registration.grid import downsample_image, upsample_field
    from rli2it_med.registration.losses import RegistrationLoss
    from rli2it_med.registration.task import LossConfig, agent_config
    from rli2it_med.registration.warp import warp

    torch.manual_seed(0)
    agent = Agent(agent_config(2, channels=(4, 8), critic_channels=(4, 8), plan_dim=8))
    with torch.no_grad():
        agent.actor.out.weight.normal_(0, 0.05)
    loss_config = LossConfig(kernel_size=9, smooth_weight=0.5)
    net = StepwiseRegistrationNet(agent, steps=2, grid_scale=2, fine_steps=1, refine_loss=loss_config).eval()
    pair = PairDataset.load(data, "val").get([0, 1])
    shape = tuple(pair.fixed.shape[2:])
    with torch.inference_mode():  # as MONAI's inferers run; the refinement takes its own gradients
        plain = net.trajectory(pair.fixed, pair.moving)
        refined = net.trajectory(pair.fixed, pair.moving, refine=5)
    assert (
        len(refined) == len(plain) + 1
        and refined[-1][0] == 1
        and refined[-1][1].shape == pair.fixed.shape[:1] + (2, *shape)
    )
    for (_, a), (_, b) in zip(plain, refined):
        torch.testing.assert_close(a, b, atol=0, rtol=0)  # the same agent's episode first
    loss = RegistrationLoss(2, 9, 0.5)

    def aux(field, i):  # the refinement's objective for pair i: smoothness on the episode grid, in its voxels
        return loss(pair.fixed[i : i + 1], warp(pair.moving[i : i + 1], field), downsample_image(field, 2) / 2)["loss"]

    start = upsample_field(plain[-1][1], plain[-1][0], shape)
    for i in range(2):
        assert aux(refined[-1][1][i : i + 1], i) < aux(start[i : i + 1], i) - 1e-3
    # each pair is refined on its own: the batch gives what each pair alone gives
    alone = net.refine_field(pair.fixed[1:], pair.moving[1:], start[1:], 5)
    torch.testing.assert_close(refined[-1][1][1:], alone)

    path = tmp_path / "m.pt"  # the checkpoint's recorded choice and training loss are the network's defaults
    config = {"agent": agent.config.to_dict(), "env": {"max_steps": 2}, "loss": loss_config.to_dict(), "grid_scale": 2}
    save_checkpoint(path, config, agent.state_dict(), val={"steps": 2, "fine_steps": 1, "refine": 4})
    loaded = StepwiseRegistrationNet.from_checkpoint(path)
    assert (loaded.refine, loaded.refine_lr, loaded.refine_loss) == (4, 0.2, loss_config)
    res = Registrator.from_net(loaded, "cpu").register(
        pair.fixed, pair.moving, fixed_seg=pair.fixed_seg, moving_seg=pair.moving_seg, keep_steps=True
    )
    assert len(res.dice) == 2 + 1 + 1 + 1 and len(res.step_fields) == 4  # steps, fine step, refinement
    agent_only = Registrator.from_net(loaded, "cpu").register(pair.fixed, pair.moving, refine=0)
    assert not torch.equal(agent_only.field, res.field)
    # (C, N): C iterations with the pair block-averaged to the episode grid first (its loss falls), then N
    pooled = net.refine_field(pair.fixed, pair.moving, start, 0, pooled=5)
    f2, m2 = downsample_image(pair.fixed, 2), downsample_image(pair.moving, 2)

    def pooled_aux(field, i):
        grid = downsample_image(field[i : i + 1], 2) / 2
        return loss(f2[i : i + 1], warp(m2[i : i + 1], grid), grid)["loss"]

    assert all(pooled_aux(pooled, i) < pooled_aux(start, i) - 1e-3 for i in range(2))
    torch.testing.assert_close(
        net.refine_field(pair.fixed, pair.moving, start, 2, pooled=5),
        net.refine_field(pair.fixed, pair.moving, pooled, 2),
    )
    with torch.no_grad():
        both = net.trajectory(pair.fixed, pair.moving, refine=(5, 2))[-1][1]
    torch.testing.assert_close(both, net.refine_field(pair.fixed, pair.moving, pooled, 2))
    for bad in ({"refine": -1}, {"refine": 1.5}, {"refine": (1, 2, 3)}, {"refine": (-1, 2)}, {"refine_lr": 0.0}):
        with pytest.raises(ValueError, match="refine"):
            StepwiseRegistrationNet(agent, **bad)


def test_training_with_coarse_steps_stores_both_grids_and_starts_each_episode_from_its_coarse_field(data, tmp_path):
    from rli2it_med.agent import Agent, EpisodeReplayBuffer
    from rli2it_med.registration.env import EnvConfig, RegistrationEnv
    from rli2it_med.registration.grid import upsample_field
    from rli2it_med.registration.rewards import mean_dice
    from rli2it_med.registration.task import agent_config
    from rli2it_med.registration.train import collect

    torch.manual_seed(0)
    pairs = PairDataset.load(data, "train")
    agent = Agent(agent_config(2, channels=(4, 8), critic_channels=(4, 8), plan_dim=8))
    env = RegistrationEnv(EnvConfig(max_steps=3), pairs, batch_size=2)
    coarse_env = RegistrationEnv(EnvConfig(max_steps=2), pairs.coarsen(2), batch_size=2)
    env.reset(seed=0)
    buffer = EpisodeReplayBuffer(8)
    stats = collect(env, agent, buffer, False, [coarse_env])
    coarse, fine = buffer._episodes[:2], buffer._episodes[2:]
    assert [e["states"]["field"].shape for e in coarse] == [(3, 2, 32, 32)] * 2
    assert [e["states"]["field"].shape for e in fine] == [(4, 2, 64, 64)] * 2
    assert torch.equal(coarse[0]["states"]["index"], fine[0]["states"]["index"][:3])  # the same pairs
    start = upsample_field(coarse[1]["states"]["field"][-1:].float(), 2, (64, 64))[0]
    torch.testing.assert_close(fine[1]["states"]["field"][0].float(), start, atol=2e-3, rtol=0)  # half precision
    first = pairs.coarsen(2).get([int(e["states"]["index"][0]) for e in coarse])
    initial = mean_dice(first.moving_seg, first.fixed_seg, pairs.label_values).mean()
    assert stats["dice_initial"] == pytest.approx(float(initial))  # the episode's start is the coarse episode's

    # a run records its coarse steps, which inference then runs by default
    cfg = default_config(2, data=str(data), out=str(tmp_path / "run"), minutes=None, max_updates=4, coarse_steps=1)
    cfg.env_batch = cfg.batch_size = 2
    cfg.eval_every, cfg.val_pairs, cfg.bootstrap_rounds, cfg.updates_per_round = 4, 2, 1, 4
    result = train(cfg, progress=False)
    assert result["val"]["coarse_steps"] == 1
    assert Registrator.load(tmp_path / "run" / "model.pt", "cpu").net.coarse_steps == 1
    with pytest.raises(ValueError, match="coarse_steps and fine_steps must be >= 0"):
        train(default_config(2, data=str(data), out=str(tmp_path / "bad"), coarse_steps=-1), progress=False)


def test_training_with_a_pyramid_of_coarse_steps_runs_each_level_from_the_coarser_ones_field(data, tmp_path):
    from rli2it_med.agent import Agent, EpisodeReplayBuffer
    from rli2it_med.registration.env import EnvConfig, RegistrationEnv
    from rli2it_med.registration.grid import upsample_field
    from rli2it_med.registration.task import LossConfig, RegistrationTask, agent_config
    from rli2it_med.registration.train import collect, replay_bytes

    torch.manual_seed(0)
    pairs = PairDataset.load(data, "train")
    agent = Agent(agent_config(2, channels=(4, 8), critic_channels=(4, 8), plan_dim=8))
    task = RegistrationTask(pairs, LossConfig(), "cpu", coarse=2)
    assert [p.spatial_shape for p in task.coarse_pairs] == [(32, 32), (16, 16)]  # twice, four times coarser
    envs = [
        RegistrationEnv(EnvConfig(max_steps=n), p, batch_size=2)
        for n, p in ((1, task.coarse_pairs[1]), (2, task.coarse_pairs[0]), (3, task.pairs))
    ]
    envs[2].reset(seed=0)
    buffer = EpisodeReplayBuffer(8)
    collect(envs[2], agent, buffer, False, envs[:2])
    coarsest, coarse, episode = buffer._episodes[:2], buffer._episodes[2:4], buffer._episodes[4:]
    assert [e["states"]["field"].shape for e in coarsest] == [(2, 2, 16, 16)] * 2
    assert [e["states"]["field"].shape for e in coarse] == [(3, 2, 32, 32)] * 2
    assert [e["states"]["field"].shape for e in episode] == [(4, 2, 64, 64)] * 2
    for before, after, shape in ((coarsest, coarse, (32, 32)), (coarse, episode, (64, 64))):
        start = upsample_field(before[0]["states"]["field"][-1:].float(), 2, shape)[0]
        torch.testing.assert_close(after[0]["states"]["field"][0].float(), start, atol=1e-2, rtol=0)  # half precision
    for e in buffer._episodes:  # replayed states of every grid are rebuilt on their own grid
        grid, scale = task._grid(e["states"]["field"][:1])
        assert grid.spatial_shape == tuple(e["states"]["field"].shape[2:]) and scale == 64 // grid.spatial_shape[0]

    cfg = default_config(2, data=str(data), out=str(tmp_path / "run"), minutes=None, max_updates=4)
    cfg.coarse_steps, cfg.env_batch, cfg.batch_size = [1, 2], 2, 2
    cfg.eval_every, cfg.val_pairs, cfg.bootstrap_rounds, cfg.updates_per_round = 4, 2, 1, 4
    one_level = replay_bytes(replace(cfg, coarse_steps=2), (64, 64))
    assert replay_bytes(cfg, (64, 64)) == one_level + cfg.buffer_episodes * 2 * 2 * 16 * 16 * 2  # + the 16x16 level
    result = train(cfg, progress=False)
    assert result["val"]["coarse_steps"] == [1, 2]
    assert Registrator.load(tmp_path / "run" / "model.pt", "cpu").net.coarse_steps == (1, 2)
    with pytest.raises(ValueError, match="every level of a training pyramid needs a step"):
        train(default_config(2, data=str(data), out=str(tmp_path / "bad"), coarse_steps=[1, 0]), progress=False)


def test_training_with_fine_steps_ends_each_episode_on_the_grid_twice_finer_and_learns_from_all_three(data, tmp_path):
    from rli2it_med.agent import Agent, EpisodeReplayBuffer
    from rli2it_med.registration.env import EnvConfig, RegistrationEnv
    from rli2it_med.registration.grid import upsample_field
    from rli2it_med.registration.task import LossConfig, RegistrationTask, agent_config
    from rli2it_med.registration.train import collect

    torch.manual_seed(0)
    pairs = PairDataset.load(data, "train")
    agent = Agent(agent_config(2, channels=(4, 8), critic_channels=(4, 8), plan_dim=8))
    task = RegistrationTask(pairs, LossConfig(), "cpu", grid_scale=2, coarse=True, fine=True)
    envs = [
        RegistrationEnv(EnvConfig(max_steps=n), p, batch_size=2)
        for n, p in ((1, task.coarse_pairs[0]), (3, task.pairs), (2, task.fine_pairs))
    ]
    envs[1].reset(seed=0)
    buffer = EpisodeReplayBuffer(8)
    stats = collect(envs[1], agent, buffer, False, envs[:1], envs[2])
    coarse, episode, fine = buffer._episodes[:2], buffer._episodes[2:4], buffer._episodes[4:]  # one per pair
    assert [e["states"]["field"].shape for e in coarse] == [(2, 2, 16, 16)] * 2
    assert [e["states"]["field"].shape for e in episode] == [(4, 2, 32, 32)] * 2
    assert [e["states"]["field"].shape for e in fine] == [(3, 2, 64, 64)] * 2
    assert torch.equal(episode[1]["states"]["index"][:3], fine[1]["states"]["index"])  # the same pairs
    start = upsample_field(episode[1]["states"]["field"][-1:].float(), 2, (64, 64))[0]
    torch.testing.assert_close(fine[1]["states"]["field"][0].float(), start, atol=2e-3, rtol=0)  # half precision
    assert stats["dice_final"] == pytest.approx(float(envs[2]._info()["dice"].mean()))  # the fine grid's last Dice
    for e in buffer._episodes:  # a replayed state of any of the three grids is rebuilt on its own grid
        grid, scale = task._grid(e["states"]["field"][:1])
        assert grid.spatial_shape == tuple(e["states"]["field"].shape[2:]) and scale == 64 // grid.spatial_shape[0]

    cfg = default_config(2, data=str(data), out=str(tmp_path / "run"), minutes=None, max_updates=8)
    cfg.grid_scale, cfg.coarse_steps, cfg.fine_steps = 2, 1, 2
    cfg.env_batch = cfg.batch_size = 2
    cfg.eval_every, cfg.val_pairs, cfg.bootstrap_rounds, cfg.updates_per_round = 8, 2, 1, 4
    result = train(cfg, progress=False)
    assert (result["val"]["coarse_steps"], result["val"]["fine_steps"]) == (1, 2)
    net = Registrator.load(tmp_path / "run" / "model.pt", "cpu").net
    assert (net.coarse_steps, net.fine_steps, net.grid_scale) == (1, 2, 2)
    with pytest.raises(ValueError, match="even grid_scale"):
        train(default_config(2, data=str(data), out=str(tmp_path / "bad"), fine_steps=1), progress=False)


def test_a_run_started_from_a_models_weights_begins_with_them(data, tmp_path):
    cfg = default_config(2, data=str(data), out=str(tmp_path / "first"), minutes=None, max_updates=4)
    cfg.env_batch = cfg.batch_size = 2
    cfg.eval_every, cfg.val_pairs, cfg.bootstrap_rounds, cfg.updates_per_round = 4, 2, 1, 4
    train(cfg, progress=False)
    first = tmp_path / "first" / "model.pt"

    # --max-updates 0: no update, so the new run's checkpoint holds exactly the weights it started from (a run with
    # the same seed but random weights would hold the first run's weights before its 4 updates)
    code = cli(["train", "--data", str(data), "--out", str(tmp_path / "tuned"), "--init", str(first),
                "--max-updates", "0", "--quiet", "--threads", "1"])  # fmt: skip
    assert code == 0
    assert io.load_json(tmp_path / "tuned" / "config.json")["init"] == str(first)
    a = torch.load(first, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "tuned" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the training time behind the weights counts the run they came from
    first_ck, tuned_ck = (torch.load(p, weights_only=True) for p in (first, tmp_path / "tuned" / "model.pt"))
    assert first_ck["train_minutes_total"] == first_ck["train_minutes"] > 0
    assert tuned_ck["train_minutes_total"] == pytest.approx(first_ck["train_minutes"] + tuned_ck["train_minutes"])
    assert training_minutes(tuned_ck) == tuned_ck["train_minutes_total"]
    assert training_minutes({"train_minutes": 3.0}) == 3.0  # checkpoints from before the total was recorded

    other = default_config(2, data=str(data), out=str(tmp_path / "other"), max_updates=1, init=str(first))
    other.agent.plan_dim = 32
    with pytest.raises(ValueError, match=r"model\.pt: its agent differs from this run's: plan_dim=64 \(run: 32\)"):
        train(other, progress=False)
    with pytest.raises(ValueError, match="max_updates must be >= 0"):
        train(default_config(2, data=str(data), out=str(tmp_path / "neg"), max_updates=-1), progress=False)
