import numpy as np
import pytest
import torch

from rli2it_med.registration.data import Pair, PairDataset
from rli2it_med.registration.env import EnvConfig, RegistrationEnv
from tests.conftest import smooth_field


def toy_pairs(n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, size, size)).astype(np.float32)
    labels = (images * 3).astype(np.uint8) + 1
    labels[:, :2] = 0
    pairs = np.stack([np.arange(n), (np.arange(n) + 1) % n], 1)
    return PairDataset(images, labels, pairs, label_values=(1, 2, 3), spacing=(1.0, 1.0))


def run_episode(env, seed, actions):
    obs, info = env.reset(seed=seed)
    out = [obs, info["indices"]]
    for a in actions:
        obs, reward, *_ = env.step(a)
        out += [obs, reward]
    return out


def test_env_is_deterministic_under_a_seed():
    actions = [smooth_field((16, 16), 1.0, s).expand(3, -1, -1, -1) for s in range(3)]
    a = run_episode(RegistrationEnv(EnvConfig(max_steps=3), toy_pairs(), batch_size=3), 7, actions)
    b = run_episode(RegistrationEnv(EnvConfig(max_steps=3), toy_pairs(), batch_size=3), 7, actions)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    c = run_episode(RegistrationEnv(EnvConfig(max_steps=3), toy_pairs(), batch_size=3), 8, actions)
    assert not torch.equal(a[1], c[1])


def test_reward_is_scaled_dice_improvement_and_episode_truncates():
    env = RegistrationEnv(EnvConfig(max_steps=2, reward_scale=5.0), toy_pairs(), batch_size=2)
    _, info = env.reset(seed=0)
    d0 = info["dice"].clone()
    obs, r, term, trunc, info = env.step(torch.zeros(2, 2, 16, 16))
    torch.testing.assert_close(r, torch.zeros(2))
    assert not trunc.any() and not term.any()
    obs, r, term, trunc, info = env.step(smooth_field((16, 16)).expand(2, -1, -1, -1))
    torch.testing.assert_close(r, 5.0 * (info["dice"] - d0))
    assert trunc.all()


def test_state_is_fixed_and_moving_warped_once_from_the_original():
    pairs = toy_pairs()
    env = RegistrationEnv(EnvConfig(max_steps=2, max_step=10.0), pairs)
    obs, info = env.reset(options={"indices": [0]})
    pair = pairs.get([0])
    torch.testing.assert_close(obs, torch.cat([pair.fixed, pair.moving], 1))
    a1, a2 = smooth_field((16, 16), 1.0, 1), smooth_field((16, 16), 1.0, 2)
    env.step(a1)
    obs, *_, info = env.step(a2)
    from rli2it_med.registration.warp import compose, warp

    field = compose(compose(torch.zeros_like(a1), a1), a2)
    torch.testing.assert_close(info["field"], field)
    torch.testing.assert_close(obs[:, 1:], warp(pair.moving, field))
    torch.testing.assert_close(info["warped_seg"], warp(pair.moving_seg, field, mode="nearest"))


def test_step_is_clamped_to_max_step():
    env = RegistrationEnv(EnvConfig(max_steps=1, max_step=0.5), toy_pairs())
    env.reset(seed=0)
    *_, info = env.step(torch.full((1, 2, 16, 16), 3.0))
    assert info["field"].abs().max().item() == pytest.approx(0.5)


def test_pseudo_reward_without_labels():
    pairs = toy_pairs()
    p = pairs.get([0])
    env = RegistrationEnv(EnvConfig(max_steps=1))
    _, info = env.reset(options={"pair": Pair(p.fixed, p.moving, None, None)})
    assert 0.0 < info["dice"].item() < 1.0  # Dice of k-means pseudo-segmentations


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="labels"):
        EnvConfig(reward="dice")
    env = RegistrationEnv(EnvConfig(reward="labels"))
    p = toy_pairs().get([0])
    with pytest.raises(ValueError, match="needs fixed_seg"):
        env.reset(options={"pair": Pair(p.fixed, p.moving, None, None)})
    with pytest.raises(ValueError, match=r"\(1, 1, 16, 15\)"):
        env.reset(options={"pair": Pair(p.fixed, p.moving[..., :15], None, None)})
    env = RegistrationEnv(EnvConfig(), toy_pairs())
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(1, 3, 16, 16\)"):
        env.step(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"pairs must be"):
        PairDataset(np.zeros((2, 4, 4)), None, np.zeros((0, 2)))


def test_an_episode_can_start_from_a_given_field():
    """Phi_0 given: M_0 is warped once by it, Dice starts there, and steps compose onto it."""
    from rli2it_med.registration.warp import compose, warp

    start = smooth_field((16, 16), 1.5, 1).expand(2, -1, -1, -1)
    step = smooth_field((16, 16), 1.0, 2).clamp(-2.0, 2.0)  # within the step bound (the env clamps)
    env = RegistrationEnv(EnvConfig(max_steps=2), toy_pairs(), batch_size=2)
    obs, info = env.reset(options={"indices": [0, 1], "field": start})
    pair = toy_pairs().get([0, 1])
    torch.testing.assert_close(info["field"], start)
    torch.testing.assert_close(obs[:, 1:], warp(pair.moving, start))
    moved = warp(pair.moving_seg, start, mode="nearest")
    plain = RegistrationEnv(EnvConfig(max_steps=2), toy_pairs(), batch_size=2)
    _, plain_info = plain.reset(options={"indices": [0, 1]})
    assert not torch.allclose(info["dice"], plain_info["dice"])
    from rli2it_med.registration.rewards import mean_dice

    torch.testing.assert_close(info["dice"], mean_dice(moved, pair.fixed_seg, (1, 2, 3)))
    _, _, _, _, info = env.step(step.expand(2, -1, -1, -1))
    torch.testing.assert_close(info["field"], compose(start, step.expand(2, -1, -1, -1)))
    with pytest.raises(ValueError, match="initial field"):
        env.reset(options={"indices": [0, 1], "field": start[:1]})
