import pytest
import torch

from rli2it_med.agent import Agent, EpisodeReplayBuffer
from rli2it_med.api import Registrator
from rli2it_med.registration.env import EnvConfig
from rli2it_med.registration.losses import RegistrationLoss
from rli2it_med.registration.task import LossConfig, RegistrationTask, agent_config, upgrade_config
from rli2it_med.registration.warp import compose, warp
from tests.registration.test_env import toy_pairs


def replay_batch(task, steps=2, batch=2):
    buf = EpisodeReplayBuffer(capacity=4)
    shape = task.pairs.spatial_shape
    index = torch.arange(batch).expand(steps + 1, batch)
    fields = 0.3 * torch.randn(steps + 1, batch, len(shape), *shape)
    buf.add(
        {"index": index, "field": fields},
        torch.randn(steps, batch, 8),
        torch.zeros(steps, batch),
        torch.zeros(steps, batch),
    )
    return buf.sample(batch, torch.Generator().manual_seed(0))


def test_coarse_states_and_image_grid_loss():
    task = RegistrationTask(toy_pairs(size=32), LossConfig(kernel_size=5), grid_scale=2)
    assert task.pairs.spatial_shape == (16, 16) and task.image_pairs.spatial_shape == (32, 32)
    agent = Agent(agent_config(2, plan_dim=8, channels=(8, 8), critic_channels=(8, 8)))
    batch = replay_batch(task)
    obs, next_obs = task.observations(batch)
    assert obs.shape == next_obs.shape == (2, 2, 16, 16)
    terms = task.auxiliary_loss(agent, batch, obs)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]) and agent.actor.out.weight.grad.abs().sum() > 0


def test_a_task_with_coarse_steps_rebuilds_states_on_the_grid_of_the_replayed_field():
    pairs = toy_pairs(size=32)
    task = RegistrationTask(pairs, LossConfig(kernel_size=5), grid_scale=2, coarse=True)
    assert [p.spatial_shape for p in task.coarse_pairs] == [(8, 8)]
    agent = Agent(agent_config(2, plan_dim=8, channels=(8, 8), critic_channels=(8, 8)))
    buf = EpisodeReplayBuffer(capacity=4)
    field = 0.3 * torch.randn(3, 2, 2, 8, 8)
    buf.add({"index": torch.tensor([2, 3]).expand(3, 2), "field": field}, torch.randn(2, 2, 8), *torch.zeros(2, 2, 2))
    batch = buf.sample(2, torch.Generator().manual_seed(0))
    obs, _ = task.observations(batch)
    assert obs.shape == (2, 2, 8, 8)
    coarse = pairs.coarsen(4).get(batch.state["index"])
    torch.testing.assert_close(obs, torch.cat([coarse.fixed, warp(coarse.moving, batch.state["field"])], 1))
    terms = task.auxiliary_loss(agent, batch, obs)  # LNCC on the 32x32 images, the field upsampled 4x
    assert torch.isfinite(terms["loss"])
    wrong = buf.sample(2)._replace(state={"index": batch.state["index"], "field": torch.zeros(2, 2, 5, 5)})
    with pytest.raises(ValueError, match=r"\(5, 5\) fits none of this task's grids \[\(16, 16\), \(8, 8\)\]"):
        task.observations(wrong)


def auxiliary_terms(pairs, *losses: LossConfig) -> list[dict]:
    """The auxiliary loss terms of one agent on one replayed batch under each loss, the plan sampled alike."""
    agent = Agent(agent_config(2, plan_dim=8, channels=(8, 8), critic_channels=(8, 8)))
    tasks = [RegistrationTask(pairs, loss) for loss in losses]
    batch = replay_batch(tasks[0])
    obs, _ = tasks[0].observations(batch)
    terms = []
    for task in tasks:
        torch.manual_seed(0)
        terms.append(task.auxiliary_loss(agent, batch, obs))
    return terms


def test_a_crop_as_large_as_the_image_is_the_whole_loss():
    whole, cropped = auxiliary_terms(toy_pairs(size=16), LossConfig(kernel_size=5), LossConfig(kernel_size=5, crop=16))
    torch.testing.assert_close(whole["loss"], cropped["loss"])
    with pytest.raises(ValueError, match="crop"):
        LossConfig(kernel_size=9, crop=4)


def test_registrator_on_a_coarse_grid_returns_image_grid_outputs():
    pair = toy_pairs(size=32).get([0])
    agent = Agent(agent_config(2, plan_dim=8, channels=(8, 8), critic_channels=(8, 8)))
    reg = Registrator(agent, EnvConfig(max_steps=3), "cpu", grid_scale=2)
    res = reg.register(
        pair.fixed[0, 0].numpy(),
        pair.moving[0, 0].numpy(),
        fixed_seg=pair.fixed_seg[0, 0].numpy(),
        moving_seg=pair.moving_seg[0, 0].numpy(),
        keep_steps=True,
    )
    assert res.warped.shape == (32, 32) and res.field.shape == (2, 32, 32) and res.warped_seg.shape == (32, 32)
    assert len(res.dice) == 4 and len(res.step_fields) == 3 and res.step_fields[-1].shape == (2, 32, 32)


def test_a_smaller_crop_scores_the_block_it_drew():
    pairs = toy_pairs(size=24)
    agent = Agent(agent_config(2, plan_dim=8, channels=(8, 8), critic_channels=(8, 8)))
    task = RegistrationTask(pairs, LossConfig(kernel_size=5, crop=10))
    batch = replay_batch(task)
    obs, _ = task.observations(batch)
    torch.manual_seed(3)
    got = task.auxiliary_loss(agent, batch, obs)["loss"]
    torch.manual_seed(3)  # redo by hand: the same plan sample, then the same crop draw
    out = agent.planner(obs)
    field = compose(batch.state["field"], agent.actor(out.distribution().rsample(), out.skips))
    origin = tuple(int(torch.randint(0, 24 - 10 + 1, ())) for _ in range(2))
    block = (slice(None), slice(None), *(slice(o, o + 10) for o in origin))
    pair = pairs.get(batch.state["index"])
    warped = warp(pair.moving, field)[block]
    expected = RegistrationLoss(2, 5, 1.0)(pair.fixed[block], warped, field)["loss"]
    torch.testing.assert_close(got, expected)


def test_old_configs_are_read_or_refused_clearly():
    old = {"agent": {"spatial_dims": 2, "working_scale": 1}, "loss": {"kernel_size": 9, "loss_scale": 1}}
    assert upgrade_config(old) == {"agent": {"spatial_dims": 2}, "loss": {"kernel_size": 9}}
    assert old["agent"]["working_scale"] == 1  # the input is not modified
    with pytest.raises(ValueError, match="retrain"):
        upgrade_config({"agent": {"working_scale": 2}})


def test_registrator_odd_sizes_and_consistent_outputs():
    pair = toy_pairs(size=31).get([0])
    agent = Agent(agent_config(2, plan_dim=8, channels=(8, 8, 8), critic_channels=(8, 8), action_level=1))
    with torch.no_grad():
        agent.actor.out.weight.normal_(std=0.1)  # a visible action
    reg = Registrator(agent, EnvConfig(max_steps=2), "cpu", grid_scale=2)
    res = reg.register(pair.fixed, pair.moving, fixed_seg=pair.fixed_seg, moving_seg=pair.moving_seg)
    assert res.field.shape == (1, 2, 31, 31) and res.field.abs().max() > 0.05
    torch.testing.assert_close(res.warped, warp(pair.moving, res.field))
    torch.testing.assert_close(res.warped_seg, warp(pair.moving_seg, res.field, mode="nearest"))


def test_the_dice_term_is_the_soft_dice_of_the_warped_one_hot_labels():
    pairs = toy_pairs(size=16)
    plain, terms = auxiliary_terms(pairs, LossConfig(kernel_size=5), LossConfig(kernel_size=5, dice_weight=2.0))
    assert 0 < terms["dice"] < 1
    torch.testing.assert_close(terms["loss"], plain["loss"] + 2.0 * (1 - terms["dice"]))
    task = RegistrationTask(pairs, LossConfig(kernel_size=5, dice_weight=2.0))
    batch = replay_batch(task)
    same = pairs.get([0, 0])._replace(moving_seg=pairs.get([0]).fixed_seg.expand(2, -1, -1, -1))
    assert task._soft_dice(same, torch.zeros(2, 2, 16, 16), None, None) == pytest.approx(1.0)  # identical maps
    field = torch.zeros(2, 2, 16, 16, requires_grad=True)
    task._soft_dice(task._pairs(batch)[1], field, None, None).backward()
    assert field.grad.abs().sum() > 0  # the labels pull the field


def test_the_dice_term_needs_labels():
    pairs = toy_pairs(size=16)
    pairs.labels = None
    with pytest.raises(ValueError, match="dice_weight 1.0 needs training label maps"):
        RegistrationTask(pairs, LossConfig(kernel_size=5, dice_weight=1.0))
    with pytest.raises(ValueError, match="dice_weight must be >= 0"):
        LossConfig(dice_weight=-1)
