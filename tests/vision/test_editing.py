import math

import numpy as np
import pytest
import torch

from rli2it_vision.data import image_folder, lfw_faces
from rli2it_vision.editing import EditConfig, ImageEditEnv, ImagePairs, centre_hole, region_psnr


def test_centre_hole_is_centred_and_checked():
    assert centre_hole((64, 64), 32) == (slice(16, 48), slice(16, 48))
    assert centre_hole((10, 12), 3) == (slice(3, 6), slice(4, 7))
    with pytest.raises(ValueError, match="hole size"):
        centre_hole((8, 8), 8)


def test_region_psnr_by_hand():
    target = torch.zeros(2, 1, 8, 8)
    pred = target.clone()
    pred[:, :, 2:6, 2:6] = 0.1  # error 0.1 inside the region only
    region = (slice(2, 6), slice(2, 6))
    expected = 10 * math.log10(2.0**2 / 0.01)
    torch.testing.assert_close(region_psnr(pred, target, region), torch.full((2,), expected))
    torch.testing.assert_close(region_psnr(pred, target), torch.full((2,), 10 * math.log10(4 / (0.01 / 4))))
    with pytest.raises(ValueError, match=r"\(2, 1, 8\)"):
        region_psnr(pred[..., 0], target[..., 0])


def faces_env(steps=3, hole=16, batch=4):
    faces = lfw_faces("train", 32)
    return ImageEditEnv(EditConfig(max_steps=steps, hole=hole), ImagePairs(faces, faces), batch_size=batch), faces


def test_inpainting_env_is_deterministic_and_pastes_only_the_hole():
    runs = []
    for _ in range(2):
        env, faces = faces_env()
        obs, info = env.reset(seed=5)
        g = torch.Generator().manual_seed(1)
        trace = [info["indices"], obs]
        for _ in range(3):
            obs, reward, *_ = env.step(torch.rand(obs.shape, generator=g) * 2 - 1)
            trace += [obs, reward]
        runs.append(trace)
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    env, faces = faces_env()
    obs, info = env.reset(options={"indices": [0, 1, 2, 3]})
    hole = centre_hole((32, 32), 16)
    assert (obs[(..., *hole)] == 0).all()  # the hole starts empty
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[hole] = False
    assert torch.equal(obs[..., outside], faces[:4][..., outside])
    obs2, *_ = env.step(torch.full_like(obs, 0.5))
    assert torch.equal(obs2[..., outside], obs[..., outside]) and (obs2[(..., *hole)] == 0.5).all()


def test_reward_is_the_psnr_gain_and_the_target_ends_it():
    env, faces = faces_env(steps=2)
    obs, info = env.reset(options={"indices": [0, 1, 2, 3]})
    psnr0 = info["psnr"].clone()
    _, r1, _, trunc, info = env.step(torch.zeros_like(obs) - 0.2)
    torch.testing.assert_close(r1, 0.1 * (info["psnr"] - psnr0))
    assert not trunc.any()
    _, r2, _, trunc, info = env.step(faces[:4])  # the true content: PSNR capped at max_psnr
    assert trunc.all() and (info["psnr"] == env.config.max_psnr).all() and (r2 > 0).all()


def test_translation_state_carries_the_source_and_the_action_replaces_the_image():
    source, target = torch.rand(3, 1, 16, 16) * 2 - 1, torch.rand(3, 3, 16, 16) * 2 - 1
    env = ImageEditEnv(EditConfig(max_steps=2, condition=True), ImagePairs(source, target), batch_size=3)
    obs, _ = env.reset(options={"indices": [0, 1, 2]})
    assert obs.shape == (3, 4, 16, 16) and torch.equal(obs[:, :1], source) and (obs[:, 1:] == 0).all()
    obs, *_ = env.step(target * 3)  # clamped to [-1, 1]
    assert torch.equal(obs[:, 1:], (target * 3).clamp(-1, 1))
    with pytest.raises(ValueError, match=r"\(3, 3, 16, 16\)"):
        env.step(torch.zeros(3, 1, 16, 16))


def test_faces_and_folders_load_in_unit_range(tmp_path):
    train, test = lfw_faces("train", 48), lfw_faces("test", 48)
    assert train.shape == (70, 1, 48, 48) and test.shape == (20, 1, 48, 48) and lfw_faces("val", 8).shape[0] == 10
    assert -1 <= train.min() < train.max() <= 1
    from skimage import io as skio

    rgb = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    skio.imsave(tmp_path / "a.png", rgb, check_contrast=False)
    skio.imsave(tmp_path / "b.png", rgb[..., 0], check_contrast=False)
    images = image_folder(tmp_path, 16)
    assert images.shape == (2, 3, 16, 16) and -1 <= images.min() and images.max() <= 1
    (tmp_path / "c.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="c.jpg"):
        image_folder(tmp_path, 16)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        image_folder(empty, 16)
    with pytest.raises(FileNotFoundError, match="nope"):
        image_folder(tmp_path / "nope", 16)
