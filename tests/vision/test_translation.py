import numpy as np
import pytest
import torch
from skimage import io as skio

from rli2it_med.agent import Agent, EpisodeReplayBuffer
from rli2it_vision.editing import EditConfig, EditingTask, EditLossConfig, ImageEditEnv, ImageEditor, evaluate_editing
from rli2it_vision.translation import BRAIN_COUNTS, _brain_slices, agent_config, brain_pairs, paired_folder


def test_brain_pairs_are_deterministic_with_disjoint_slices():
    a, b = brain_pairs("val", 32, count=6), brain_pairs("val", 32, count=6)
    assert torch.equal(a.source, b.source) and torch.equal(a.target, b.target)
    assert a.source.shape == a.target.shape == (6, 1, 32, 32)
    torch.testing.assert_close(a.source.unique(), torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))
    assert a.target.min() >= -1 and a.target.max() <= 1
    assert (a.target[a.source == -1] < -0.9).float().mean() > 0.95  # background is dark in T1
    slices = {s: set(_brain_slices(s)) for s in BRAIN_COUNTS}
    assert not (slices["train"] & slices["test"]) and not (slices["val"] & slices["test"])
    assert not (slices["train"] & slices["val"])
    assert not torch.equal(brain_pairs("test", 32, count=6).target, a.target)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    skio.imsave(path, array, check_contrast=False)


def test_paired_folders_both_layouts_and_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(10):
        a, b = rng.integers(0, 255, (20, 20, 3), np.uint8), rng.integers(0, 255, (20, 20, 3), np.uint8)
        _png(tmp_path / "ab" / "A" / f"{i}.png", a)
        _png(tmp_path / "ab" / "B" / f"{i}.png", b)
        _png(tmp_path / "side" / f"{i}.png", np.concatenate([a, b], 1))
    for split, n in (("train", 8), ("val", 1), ("test", 1)):
        x, y = paired_folder(tmp_path / "ab", split, 16), paired_folder(tmp_path / "side", split, 16)
        assert x.source.shape == x.target.shape == (n, 3, 16, 16)
        torch.testing.assert_close(x.source, y.source)
        torch.testing.assert_close(x.target, y.target)
    (tmp_path / "ab" / "B" / "3.png").rename(tmp_path / "ab" / "B" / "33.png")
    with pytest.raises(ValueError, match="unmatched: 3.png, 33.png"):
        paired_folder(tmp_path / "ab", "train", 16)
    (tmp_path / "side" / "5.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="5.png: not a readable image"):
        paired_folder(tmp_path / "side", "train", 16)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        paired_folder(tmp_path / "nowhere", "train", 16)


def test_replayed_translation_states_rebuild_the_observations():
    pairs = brain_pairs("val", 32, count=4)
    env = ImageEditEnv(EditConfig(max_steps=2, condition=True), pairs, batch_size=4)
    agent = Agent(agent_config(channels=(8, 16, 32), critic_channels=(8, 16, 32), plan_dim=16))
    task = EditingTask(pairs, env.config, EditLossConfig(border=0, tv_weight=0.1))
    assert task.discriminator.features[0].in_channels == 2  # conditioned on the source
    obs, info = env.reset(seed=0)
    states, contents = [obs], [task.content(info)["content"]]
    for _ in range(2):
        obs, *_, info = env.step(agent.act(obs)[1].detach())
        states.append(obs)
        contents.append(task.content(info)["content"])
    buffer = EpisodeReplayBuffer(4, storage_dtype=torch.float32)
    index = info["indices"].view(1, -1).expand(3, -1)
    buffer.add({"index": index, "content": torch.stack(contents)}, torch.zeros(2, 4, 16), *[torch.zeros(2, 4)] * 2)
    batch = buffer.sample(6, torch.Generator().manual_seed(0))
    rebuilt, _ = task.observations(batch)
    flat = torch.stack(states).flatten(0, 1)
    assert all(any(torch.equal(s, r) for s in flat) for r in rebuilt)
    terms = task.auxiliary_loss(agent, batch, rebuilt)
    assert {"l1", "tv", "adv", "d_loss"} <= set(terms) and terms["loss"].requires_grad


def test_short_translation_training_improves_and_the_commands_run(tmp_path):
    from rli2it_med.cli.main import main as cli
    from rli2it_vision.translation import TranslateConfig, train_translation

    small = dict(channels=(16, 32, 64), critic_channels=(16, 32, 64), plan_dim=64)
    cfg = TranslateConfig(out=str(tmp_path / "run"), size=32, max_updates=64, eval_every=16, minutes=None)
    cfg.agent, cfg.batch_size, cfg.sac.lr_aux = agent_config(**small), 16, 1e-3
    assert train_translation(cfg, progress=False)["updates"] == 64
    model = ImageEditor.load(tmp_path / "run" / "best.pt", "cpu", task="translation")
    m = evaluate_editing(model, brain_pairs("test", 32, count=20))
    # measured 23.6 dB; any constant image scores <= 10.1 (all black, what a collapsed actor gives: 9.0)
    assert m["psnr"] > 18.0, m
    labels = ((brain_pairs("test", 32, count=1).source[0, 0] + 1) / 2 * 255).round().byte().numpy()
    _png(tmp_path / "labels.png", labels)
    out = tmp_path / "t1.png"
    model_path = str(tmp_path / "run" / "best.pt")
    assert cli(["translate", "apply", "--model", model_path, "--image", str(tmp_path / "labels.png"),
                "--out", str(out)]) == 0  # fmt: skip
    assert skio.imread(out).shape == (32, 32)
    with pytest.raises(ValueError, match="a translation model, not inpainting"):
        ImageEditor.load(model_path, task="inpainting")
