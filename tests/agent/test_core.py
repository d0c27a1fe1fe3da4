import pytest
import torch
from torch import nn

from rli2it_med.agent import (
    SAC,
    Agent,
    AgentConfig,
    EpisodeReplayBuffer,
    ReplayBatch,
    SACConfig,
    load_checkpoint,
    polyak_update,
    save_checkpoint,
)
from rli2it_med.agent.networks import Conv3d

CFG = dict(spatial_dims=2, in_channels=2, action_channels=2, plan_dim=8, channels=(4, 8), critic_channels=(4, 8))


class FixedObsTask:
    """Observations stored directly in the replayed state; auxiliary loss pulls actions to zero."""

    def observations(self, batch: ReplayBatch):
        return batch.state["obs"], batch.next_state["obs"]

    def auxiliary_loss(self, agent, batch, obs):
        _, action, _ = agent.act(obs)
        return {"loss": action.pow(2).mean()}


def filled_buffer(steps=4, batch=3, plan_dim=8, size=8):
    buf = EpisodeReplayBuffer(capacity=10)
    states = {"obs": torch.rand(steps + 1, batch, 2, size, size), "index": torch.arange(batch).expand(steps + 1, batch)}
    buf.add(states, torch.randn(steps, batch, plan_dim), torch.rand(steps, batch), torch.zeros(steps, batch))
    return buf, states


def test_agent_shapes_and_bound():
    agent = Agent(AgentConfig(**CFG))
    plan, action, logp = agent.act(torch.rand(3, 2, 16, 18))
    assert plan.shape == (3, 8) and action.shape == (3, 2, 16, 18) and logp.shape == (3,)
    assert action.abs().max() <= agent.config.action_bound
    det1 = agent.act(torch.ones(1, 2, 16, 18), deterministic=True)[1]
    det2 = agent.act(torch.ones(1, 2, 16, 18), deterministic=True)[1]
    torch.testing.assert_close(det1, det2)
    # the mean plan and its log-density, as the distribution gives them
    state = torch.rand(2, 2, 16, 18)
    plan, _, logp = agent.act(state, deterministic=True)
    out = agent.planner(state)
    torch.testing.assert_close(plan, out.mean)
    torch.testing.assert_close(logp, out.distribution().log_prob(out.mean))


def test_action_level_decodes_coarser_and_upsamples():
    agent = Agent(AgentConfig(**CFG | {"channels": (8, 8, 8)}, action_level=1))
    _, action, _ = agent.act(torch.rand(2, 2, 17, 20))
    assert action.shape == (2, 2, 17, 20) and action.abs().max() <= agent.config.action_bound
    with pytest.raises(ValueError, match="action_level"):
        AgentConfig(**CFG | {"channels": (8, 8)}, action_level=2)


def test_bad_state_shape_names_what_it_got():
    agent = Agent(AgentConfig(**CFG))
    with pytest.raises(ValueError, match=r"\(1, 3, 8, 8\)"):
        agent.act(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="spatial_dims"):
        AgentConfig(spatial_dims=4)


def test_buffer_is_compact_and_next_state_follows_state():
    buf, states = filled_buffer()
    assert len(buf) == 12
    assert buf._episodes[0]["states"]["obs"].dtype == torch.float16  # stored in half precision
    assert buf._episodes[0]["states"]["obs"].shape[0] == 5  # T + 1 states per episode, not 2T
    batch = buf.sample(64, torch.Generator().manual_seed(0))
    assert batch.plan.shape == (64, 8) and batch.reward.shape == (64,)
    assert batch.state["obs"].dtype == torch.float32
    stored = states["obs"].half().float()
    for i in range(64):
        ep = int(batch.state["index"][i])
        t = next(t for t in range(4) if torch.equal(stored[t, ep], batch.state["obs"][i]))
        assert torch.equal(stored[t + 1, ep], batch.next_state["obs"][i])


def test_a_batch_holds_states_of_one_shape_drawn_by_its_share_of_transitions():
    buf = EpisodeReplayBuffer(capacity=10)
    for size, steps in ((8, 6), (4, 2)):  # episodes on a grid and on one twice coarser
        states = {"obs": torch.rand(steps + 1, 2, 2, size, size), "index": torch.zeros(steps + 1, 2, dtype=torch.long)}
        buf.add(states, torch.randn(steps, 2, 8), torch.rand(steps, 2), torch.zeros(steps, 2))
    generator = torch.Generator().manual_seed(0)
    sizes = []
    for _ in range(400):
        batch = buf.sample(5, generator)
        assert batch.state["obs"].shape[2:] == batch.next_state["obs"].shape[2:]
        sizes.append(batch.state["obs"].shape[-1])
    assert set(sizes) == {8, 4}
    assert 0.65 < sizes.count(8) / len(sizes) < 0.85  # 12 of the 16 transitions are on the 8x8 grid


def test_polyak_moves_targets_by_tau():
    agent = Agent(AgentConfig(**CFG))
    with torch.no_grad():
        for p in agent.critic.parameters():
            p.add_(1.0)
    before = [p.clone() for p in agent.critic_target.parameters()]
    polyak_update(agent.critic, agent.critic_target, 0.005)
    for b, p, t in zip(before, agent.critic.parameters(), agent.critic_target.parameters()):
        torch.testing.assert_close(t, b + 0.005 * (p - b))


def test_critic_loss_falls_on_a_fixed_batch():
    agent = Agent(AgentConfig(**CFG))
    buf, _ = filled_buffer()
    sac = SAC(agent, FixedObsTask(), buf, SACConfig(lr_critic=1e-3))
    batch = buf.sample(12, torch.Generator().manual_seed(1))
    obs, next_obs = FixedObsTask().observations(batch)
    losses = []
    for _ in range(60):
        loss = sac.critic_loss(obs, next_obs, batch)
        sac._step(sac.critic_optimizer, loss)
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_planner_receives_gradient_from_q():
    agent = Agent(AgentConfig(**CFG))
    buf, _ = filled_buffer()
    sac = SAC(agent, FixedObsTask(), buf, SACConfig(kl_weight=0.0, init_alpha=1e-8))
    loss, _ = sac.policy_loss(torch.rand(4, 2, 8, 8))
    loss.backward()
    head = agent.planner.head.weight.grad
    # the mean rows get their gradient through rsample() and Q; with sample() only alpha * dlogp/dmean (~1e-8) is left
    assert head is not None and head[:8].abs().sum() > 1e-4
    assert all(p.grad is None for p in agent.critic.parameters())


def test_train_runs_all_updates_and_logs():
    agent = Agent(AgentConfig(**CFG))
    buf, _ = filled_buffer()
    sac = SAC(agent, FixedObsTask(), buf)
    sac.train(gradient_steps=4, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert sac.n_updates == 4
    row = sac.logger.dump(4)
    assert {"train/critic_loss", "train/policy_loss", "train/aux_loss", "train/alpha"} <= set(row)


def test_checkpoint_roundtrip_and_bad_file(tmp_path):
    agent = Agent(AgentConfig(**CFG))
    save_checkpoint(tmp_path / "m.pt", {"agent": agent.config.to_dict()}, agent.state_dict(), note="x")
    payload = load_checkpoint(tmp_path / "m.pt")
    assert payload["versions"]["torch"] == torch.__version__ and payload["note"] == "x"
    clone = Agent(AgentConfig(**payload["config"]["agent"]))
    clone.load_state_dict(payload["state_dict"])
    x = torch.rand(1, 2, 8, 8)
    torch.testing.assert_close(clone.act(x, True)[1], agent.act(x, True)[1])
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_style_options_build_instance_norm_reflection_relu_and_a_residual_block():
    cfg = AgentConfig(
        **CFG | {"in_channels": 3, "action_channels": 3, "channels": (4, 8, 8), "plan_dim": 16,
                 "critic_channels": (4, 4, 4, 4)},
        plan_channels=1, norm="instance", activation="relu", padding_mode="reflect", first_kernel=9,
        residual_blocks=1,
    )  # fmt: skip
    agent = Agent(cfg)
    modules = list(agent.planner.modules())
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in modules)
    assert any(isinstance(m, torch.nn.ReLU) for m in modules)
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in [*agent.planner.modules(), *agent.actor.modules()])
    convs = [m for m in agent.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.padding_mode == "reflect" for c in convs)
    assert agent.planner.levels[0][0].kernel_size == (9, 9)
    assert len(agent.planner.residual) == 1
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in agent.critic.modules())  # 1x1 deepest levels
    plan, action, _ = agent.act(torch.rand(2, 3, 16, 16))
    assert plan.shape == (2, 16) and action.shape == (2, 3, 16, 16)
    for name, bad in (("norm", "batch"), ("activation", "gelu"), ("padding_mode", "circular")):
        with pytest.raises(ValueError, match=f"{name} must be one of"):
            AgentConfig(**CFG, **{name: bad})
    with pytest.raises(ValueError, match="first_kernel"):
        AgentConfig(**CFG, first_kernel=4)


def test_defaults_keep_the_state_dict_layout_of_earlier_checkpoints():
    keys = set(Agent(AgentConfig(**CFG)).state_dict())
    assert "planner.levels.0.0.weight" in keys and "actor.bottom.0.weight" in keys
    assert not any("residual" in k or k.endswith("running_mean") for k in keys)


def test_any_size_map_plan_follows_the_state_and_the_critic_needs_the_training_size():
    cfg = AgentConfig(
        **CFG | {"in_channels": 3, "action_channels": 3, "channels": (4, 8, 8), "plan_dim": 16},
        plan_channels=1, any_size=True,
    )  # fmt: skip
    agent = Agent(cfg)
    plan, action, _ = agent.act(torch.rand(1, 3, 24, 32), deterministic=True)
    assert plan.shape == (1, 6 * 8) and action.shape == (1, 3, 24, 32)
    with pytest.raises(ValueError, match=r"critic takes plans of shape \(B, 16\)"):
        agent.critic(torch.rand(1, 3, 24, 32), plan)
    with pytest.raises(ValueError, match=r"expected a plan of shape \(B, 48\)"):
        agent.actor(torch.rand(1, 16), agent.planner(torch.rand(1, 3, 24, 32)).skips)
    with pytest.raises(ValueError, match="any_size needs a map plan"):
        AgentConfig(**CFG, any_size=True)


@pytest.mark.parametrize("stride, padding_mode", [(1, "zeros"), (2, "zeros"), (1, "reflect")])
def test_3d_convolutions_on_onednn_equal_torchs(stride, padding_mode):
    """The agent's 3D convolutions go to oneDNN at any size; values and gradients stay those of nn.Conv3d."""
    torch.manual_seed(0)
    ours = Conv3d(2, 8, 3, stride=stride, padding=1, padding_mode=padding_mode)
    plain = nn.Conv3d(2, 8, 3, stride=stride, padding=1, padding_mode=padding_mode)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(1, 2, 12, 10, 8, requires_grad=True)
    a, b = ours(x), plain(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(a)
    for u, v in zip(torch.autograd.grad(a, (x, ours.weight), g), torch.autograd.grad(b, (x, plain.weight), g)):
        torch.testing.assert_close(u, v, atol=1e-4, rtol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), b, atol=1e-5, rtol=1e-5)
    agent = Agent(AgentConfig(**CFG | {"spatial_dims": 3}))
    convs = [m for m in agent.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(isinstance(m, Conv3d) for m in convs)
