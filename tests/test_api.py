import numpy as np
import pytest
import torch

from rli2it_med.agent import Agent, save_checkpoint
from rli2it_med.api import Registrator, adam_step
from rli2it_med.registration.env import EnvConfig
from rli2it_med.registration.task import agent_config


@pytest.fixture
def model_path(tmp_path):
    agent = Agent(agent_config(2, channels=(4, 8), critic_channels=(4, 8), plan_dim=8))
    with torch.no_grad():  # make the actor move things, so the test is not about zero fields
        agent.actor.out.weight.normal_(0, 0.05)
    env = EnvConfig(max_steps=3, max_step=1.0)
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"agent": agent.config.to_dict(), "env": vars(env)}, agent.state_dict())
    return path


def test_register_numpy_in_numpy_out(model_path):
    reg = Registrator.load(model_path, "cpu")
    rng = np.random.default_rng(0)
    fixed, moving = rng.random((24, 20), dtype=np.float32), rng.random((24, 20), dtype=np.float32)
    seg_f, seg_m = (fixed * 3).astype(np.int64), (moving * 3).astype(np.int64)
    res = reg.register(fixed, moving, fixed_seg=seg_f, moving_seg=seg_m, keep_steps=True)
    assert isinstance(res.warped, np.ndarray) and res.warped.shape == (24, 20)
    assert res.field.shape == (2, 24, 20) and res.warped_seg.shape == (24, 20)
    assert len(res.trajectory) == 4 and len(res.step_fields) == 3  # t = 0..T, T = trained episode length
    assert np.abs(res.field).max() > 0
    np.testing.assert_array_equal(res.step_fields[-1], res.field)


def test_register_is_deterministic_and_tensor_batches_keep_their_kind(model_path):
    reg = Registrator.load(model_path, "cpu")
    fixed, moving = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    a = reg.register(fixed, moving, steps=5)
    b = reg.register(fixed, moving, steps=5)
    assert isinstance(a.warped, torch.Tensor) and a.warped.shape == (2, 1, 16, 16)
    assert a.field.shape == (2, 2, 16, 16) and a.warped_seg is None and a.dice == []
    torch.testing.assert_close(a.field, b.field, rtol=0, atol=0)
    assert reg.register(fixed, moving, steps=0).field.abs().max() == 0


def test_bad_inputs_are_named(model_path):
    reg = Registrator.load(model_path, "cpu")
    with pytest.raises(ValueError, match="spatial dims"):
        reg.register(np.zeros((2, 2, 2, 8, 8)), np.zeros((2, 2, 2, 8, 8)))
    with pytest.raises(TypeError, match="list"):
        reg.register([[0.0]], np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"differs from fixed"):
        reg.register(np.zeros((8, 8)), np.zeros((8, 9)))


def test_network_form_gives_the_registrators_field(model_path):
    from rli2it_med.api import StepwiseRegistrationNet

    reg = Registrator.load(model_path, device="cpu")
    net = StepwiseRegistrationNet.from_checkpoint(model_path)
    fixed, moving = torch.rand(2, 1, 1, 32, 32).unbind(0)
    field = net(torch.cat([fixed, moving], 1))
    assert field.shape == (1, 2, 32, 32)
    assert torch.allclose(field, reg.register(fixed, moving).field, atol=1e-6)
    assert net.rollout(fixed, moving, steps=0)[0].abs().max() == 0
    with pytest.raises(ValueError, match="fixed, moving"):
        net(torch.rand(1, 1, 32, 32))


def test_stop_dice_holds_pairs_that_reached_it(model_path, tmp_path):
    payload = torch.load(model_path, weights_only=True)
    payload["config"]["env"]["stop_dice"] = 0.9
    path = tmp_path / "stop.pt"
    save_checkpoint(path, payload["config"], payload["state_dict"])
    reg = Registrator.load(path, "cpu")
    fixed, moving = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    seg = (fixed > 0.5).long()
    moving_seg = torch.stack([seg[0], (moving[1] > 0.5).long()])  # pair 0 starts at Dice 1, pair 1 does not
    res = reg.register(fixed, moving, fixed_seg=seg, moving_seg=moving_seg)
    assert res.field[0].abs().max() == 0 and res.field[1].abs().max() > 0
    free = Registrator.load(model_path, "cpu").register(fixed, moving, fixed_seg=seg, moving_seg=moving_seg)
    assert free.field[0].abs().max() > 0  # without stop_dice the same agent moves it


def test_the_refinements_adam_step_is_torch_adam():
    g = torch.Generator().manual_seed(0)
    ours = torch.rand(3, 4, generator=g)
    theirs = ours.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([theirs], lr=0.2)
    moments = (torch.zeros_like(ours), torch.zeros_like(ours))
    for step in range(1, 6):
        grad = torch.randn(3, 4, generator=g)
        adam_step(ours, grad, moments, step, 0.2)
        theirs.grad = grad.clone()
        optimiser.step()
        torch.testing.assert_close(ours, theirs.detach())
