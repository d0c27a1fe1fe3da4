import pytest
import torch

from rli2it_med.agent import Agent, EpisodeReplayBuffer, ReplayBatch
from rli2it_vision.data import lfw_faces
from rli2it_vision.editing import (
    Discriminator,
    EditConfig,
    EditingTask,
    EditLossConfig,
    ImageEditEnv,
    ImageEditor,
    ImagePairs,
    border_weights,
    evaluate_editing,
)
from rli2it_vision.inpainting import agent_config, inpaint_image


def test_discriminator_is_spectrally_normalised():
    d = Discriminator(3)
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 5
    for m in layers:
        assert torch.nn.utils.parametrize.is_parametrized(m, "weight")
        with torch.no_grad():
            for _ in range(20):  # power iterations settle
                d(torch.rand(2, 3, 32, 32))
        d.eval()
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        d.train()
        assert abs(float(sigma) - 1.0) < 0.05
    assert d(torch.rand(4, 3, 64, 64)).shape == (4,)


def test_border_weights_by_hand():
    w = border_weights(6, 2, 5.0)
    assert w[2:4, 2:4].eq(1).all() and w[0].eq(5).all() and w[:, 5].eq(5).all() and w.sum() == 4 + 32 * 5


def test_agent_uses_4x4_stride_2_convs_and_a_256_plan():
    agent = Agent(agent_config(1))
    convs = [m for m in agent.planner.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs[1:]] == [(4, 4)] * 3 and all(c.stride == (2, 2) for c in convs[1:])
    plan, action, _ = agent.act(torch.rand(2, 1, 64, 64) * 2 - 1)
    assert plan.shape == (2, 256) and action.shape == (2, 1, 64, 64) and action.abs().max() <= 1


def test_replayed_states_rebuild_the_environments_and_the_auxiliary_loss_falls():
    faces = lfw_faces("train", 32)
    env = ImageEditEnv(EditConfig(max_steps=2, hole=16), ImagePairs(faces, faces), batch_size=4)
    agent = Agent(agent_config(1, channels=(8, 16, 32), critic_channels=(8, 16, 32), plan_dim=16))
    task = EditingTask(ImagePairs(faces, faces), env.config, EditLossConfig(border=2))
    obs, info = env.reset(seed=0)
    states, fills = [obs], [obs[..., 8:24, 8:24]]
    for _ in range(2):
        obs, *_, info = env.step(agent.act(obs)[1].detach())
        states.append(obs)
        fills.append(obs[..., 8:24, 8:24])
    buffer = EpisodeReplayBuffer(8, storage_dtype=torch.float32)
    index = info["indices"].view(1, -1).expand(3, -1)
    buffer.add(
        {"index": index, "content": torch.stack(fills)}, torch.zeros(2, 4, 16), torch.zeros(2, 4), torch.zeros(2, 4)
    )
    batch = buffer.sample(6, torch.Generator().manual_seed(0))
    rebuilt, rebuilt_next = task.observations(batch)
    flat = torch.stack(states)  # (T+1, B, ...)
    for i in range(6):
        match = [(t, b) for t in range(3) for b in range(4) if torch.equal(flat[t, b], rebuilt[i])]
        assert match and any(torch.equal(flat[t + 1, b], rebuilt_next[i]) for t, b in match if t < 2)
    batch = ReplayBatch(batch.state, batch.next_state, batch.plan, batch.reward, batch.done)
    opt = torch.optim.Adam(list(agent.planner.parameters()) + list(agent.actor.parameters()), lr=3e-3)
    first, d_before = None, [p.detach().clone() for p in task.discriminator.parameters()]
    for _ in range(40):
        terms = task.auxiliary_loss(agent, batch, task.observations(batch)[0])
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        first = first if first is not None else terms["l1"].item()
    assert terms["l1"].item() < 0.7 * first and "d_loss" in terms
    assert any(not torch.equal(a, p) for a, p in zip(d_before, task.discriminator.parameters()))  # D trains too


def test_short_training_improves_the_hole_and_resumes(tmp_path):
    from rli2it_vision.inpainting import InpaintConfig, train_inpainting

    small = dict(channels=(16, 32, 64), critic_channels=(16, 32, 64), plan_dim=64)
    cfg = InpaintConfig(out=str(tmp_path / "run"), size=32, max_updates=96, eval_every=16, minutes=None, batch_size=16)
    cfg.agent = agent_config(1, **small)
    cfg.env.hole, cfg.loss.border, cfg.flip = 16, 4, False
    cfg.sac.lr_aux = 1e-3
    result = train_inpainting(cfg, progress=False)
    assert result["updates"] == 96
    model = ImageEditor.load(tmp_path / "run" / "best.pt", "cpu", task="inpainting")
    faces = lfw_faces("test", 32)
    m = evaluate_editing(model, ImagePairs(faces, faces))
    assert m["psnr"] > m["psnr_steps"][0] + 0.7, m  # 3 runs: +1.27 to +1.30 dB over the empty (grey) hole
    saved = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)["sac"]["task"]
    assert saved["n_updates"] > 0 and "head.parametrizations.weight.original" in saved["discriminator"]
    resumed = EditingTask(ImagePairs(faces, faces), cfg.env, cfg.loss)
    resumed.load_state_dict(saved)  # the discriminator resumes too
    assert all(torch.equal(a, b) for a, b in zip(resumed.discriminator.state_dict().values(),
                                                 saved["discriminator"].values()))  # fmt: skip
    cfg.max_updates = 104
    assert train_inpainting(cfg, resume=True, progress=False)["updates"] == 104
    from skimage import io as skio

    from rli2it_med.cli.main import main as cli

    pixels = ((lfw_faces("test", 40)[0, 0, :, 5:35] + 1) * 127.5).round().byte().numpy()  # 40 x 30, not square
    skio.imsave(tmp_path / "face.png", pixels, check_contrast=False)
    out = tmp_path / "filled.png"
    model_path = str(tmp_path / "run" / "best.pt")
    face = str(tmp_path / "face.png")
    args = ["inpaint", "apply", "--model", model_path, "--image", face, "--out", str(out), "--mask-size", "12"]
    assert cli(args) == 0
    filled = skio.imread(out)
    assert filled.shape == (40, 30)  # the input's own size; only the centre 12x12 hole changed
    changed = filled != pixels
    assert not changed[:14].any() and not changed[26:].any() and not changed[:, :9].any() and not changed[:, 21:].any()
    assert changed[14:26, 9:21].mean() > 0.5
    with pytest.raises(ValueError, match="hole's side"):
        inpaint_image(model, torch.zeros(1, 40, 30), mask_size=30)
    assert cli(["inpaint", "evaluate", "--model", model_path]) == 0
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.pt"):
        ImageEditor.load(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not translation"):
        ImageEditor.load(model_path, task="translation")
