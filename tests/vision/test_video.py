import numpy as np
import pytest
import torch

from rli2it_med.agent import Agent, save_checkpoint
from rli2it_med.cli.main import main as cli
from rli2it_med.registration.warp import warp
from rli2it_vision.data import read_video
from rli2it_vision.editing import EditConfig, ImageEditor
from rli2it_vision.style import StyleTrainConfig, agent_config, load_style
from rli2it_vision.video import (
    ConvGRUCell,
    VideoStylizer,
    frame_tensor,
    optical_flow,
    stylize_frames,
    synthetic_motion,
    temporal_loss,
    write_video,
)

SMALL = dict(channels=(4, 8, 8), critic_channels=(4, 4, 4, 4, 4, 4, 4))


def _clip(n=4, h=32, w=48, shift=2):
    """A smooth textured frame moving ``shift`` px to the right per frame: (n, 3, h, w) in [-1, 1]."""
    ys, xs = np.mgrid[0:h, 0 : w + n * shift].astype(np.float32)
    base = np.stack([np.sin(xs / 5) * np.cos(ys / 7), np.sin((xs + ys) / 9), np.cos(xs / 4)], 0)
    frames = [base[:, :, (n - 1 - i) * shift : (n - 1 - i) * shift + w] for i in range(n)]
    return torch.from_numpy(np.stack(frames)) * 0.8


def test_conv_gru_starts_from_zeros_and_checks_shapes():
    gru = ConvGRUCell(3, 5)
    x = torch.rand(2, 3, 4, 4)
    h = gru(x, None)
    torch.testing.assert_close(h, gru(x, torch.zeros(2, 5, 4, 4)))
    assert h.shape == (2, 5, 4, 4) and h.abs().max() < 1
    with pytest.raises(ValueError, match="reset"):
        gru(x, torch.zeros(2, 5, 2, 2))


def test_untrained_video_model_stylises_like_its_image_model():
    agent = Agent(agent_config(32, **SMALL))
    video = VideoStylizer(agent.config)
    video.planner.load_state_dict(agent.planner.state_dict())
    video.actor.load_state_dict(agent.actor.state_dict())
    clip = _clip()
    image_model = ImageEditor(agent, EditConfig(max_steps=3), "cpu")
    with torch.no_grad():
        a = torch.cat(list(stylize_frames(video, clip.split(1), 3)))
        b = torch.cat(list(stylize_frames(image_model, clip.split(1), 3)))
    torch.testing.assert_close(a, b)  # the memories enter through a zero-initialised conv


def test_gru_memory_is_carried_across_frames_and_steps_and_reset():
    torch.manual_seed(0)
    video = VideoStylizer(agent_config(32, **SMALL))
    torch.nn.init.normal_(video.mix.weight, std=0.5)  # let the memories act
    x = _clip(1)
    with torch.no_grad():
        video.reset()
        first = video.frame(x, 2)
        assert video.step_memory is not None and video.frame_memory is not None
        frame_memory = video.frame_memory.clone()
        second = video.frame(x, 2)  # the same frame again: only the frame memory differs
        assert not torch.allclose(first[-1], second[-1])
        assert not torch.allclose(frame_memory, video.frame_memory)
        # the step memory starts empty at every frame: with the frame memory put back, the frame repeats exactly
        video.frame_memory = frame_memory
        torch.testing.assert_close(video.frame(x, 2)[-1], second[-1])
        # within a frame the step memory carries: two steps differ from one step applied to its own output
        video.reset()
        one = video.frame(x, 1)[-1]
        video.reset()
        two = video.frame(x, 2)
        video.reset()
        video.frame(x, 1)
        video.frame_memory = None
        assert not torch.allclose(two[-1], video.frame(one, 1)[-1])
        video.reset()
        assert video.step_memory is None and video.frame_memory is None
        torch.testing.assert_close(video.frame(x, 2)[-1], first[-1])  # reset forgets everything
    with pytest.raises(ValueError, match="multiples of 4"):
        video.frame(torch.rand(1, 3, 30, 32), 1)
    with pytest.raises(ValueError, match="steps"):
        video.frame(x, 0)


def test_synthetic_motion_is_a_small_affine_field():
    g = torch.Generator().manual_seed(0)
    ddf = synthetic_motion(3, (32, 48), g, shift=3.0, angle=2.0)
    assert ddf.shape == (3, 2, 32, 48)
    assert ddf.abs().max() < 3.0 + 48 * 0.06  # shift + (rotation + zoom) x half-diagonal
    still = synthetic_motion(2, (8, 8), torch.Generator().manual_seed(1), shift=0.0, angle=0.0)
    assert still.abs().max() < 8 * 0.03


def test_optical_flow_and_temporal_loss_on_a_moving_texture():
    clip = _clip(4, shift=2)
    src = (clip + 1) / 2
    flow = optical_flow(src[0].permute(1, 2, 0).numpy(), src[1].permute(1, 2, 0).numpy())
    inner = flow[0, :, 8:-8, 8:-8]
    assert abs(inner[1].median().item() + 2) < 0.5 and inner[0].abs().median() < 0.5  # x moved +2: look back 2
    assert temporal_loss(clip, clip) < 1e-3
    # stylisation that moves with the content is stable; noise that does not is not
    consistent = torch.tanh(2 * clip)
    flicker = (clip + 0.3 * torch.randn_like(clip)).clamp(-1, 1)
    assert temporal_loss(consistent, clip) < 0.1 * temporal_loss(flicker, clip)
    with pytest.raises(ValueError, match="N >= 2"):
        temporal_loss(clip[:1], clip[:1])
    warped = warp(clip[:1], torch.zeros(1, 2, 32, 48))
    torch.testing.assert_close(warped, clip[:1])


def test_video_round_trip_and_atomic_write(tmp_path):
    clip = _clip(5)
    path = tmp_path / "clip.mp4"
    assert write_video(path, clip.split(1), 10.0) == 5
    frames = read_video(path)
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8
    back = torch.cat([frame_tensor(f) for f in frames])
    assert (back - clip).abs().mean() < 0.1  # lossy codec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    with pytest.raises(ValueError, match="no frame"):
        write_video(tmp_path / "empty.mp4", [], 10.0)
    assert not (tmp_path / "empty.mp4").exists()
    (tmp_path / "bad.mp4").write_bytes(b"nothing")
    with pytest.raises(ValueError, match="bad.mp4"):
        read_video(tmp_path / "bad.mp4")
    assert frame_tensor(np.zeros((30, 41, 3), np.uint8), 20).shape == (1, 3, 16, 20)


def test_stylize_video_cli_with_video_and_image_models(tmp_path):
    cfg = agent_config(32, **SMALL)
    style = ((load_style("skimage:immunohistochemistry", 32)[0] + 1) * 127.5).round().to(torch.uint8)
    base = {"agent": cfg.to_dict(), "env": {"max_steps": 2}, "size": 32, "training": StyleTrainConfig().to_dict()}
    save_checkpoint(tmp_path / "image.pt", base | {"task": "style"}, Agent(cfg).state_dict(), style_image=style)
    video = VideoStylizer(cfg, hidden=8)
    save_checkpoint(
        tmp_path / "video.pt", base | {"task": "style-video", "hidden": 8}, video.state_dict(), style_image=style
    )
    write_video(tmp_path / "in.mp4", _clip(4).split(1), 10.0)
    for model in ("video.pt", "image.pt"):
        out = tmp_path / f"out_{model}.mp4"
        args = [
            "stylize-video",
            "--video",
            str(tmp_path / "in.mp4"),
            "--style",
            str(tmp_path / model),
            "--out",
            str(out),
            "--quiet",
        ]
        assert cli(args) == 0
        assert read_video(out).shape == (4, 32, 48, 3)
    assert VideoStylizer.load(tmp_path / "video.pt").step_gru.hidden == 8
    with pytest.raises(ValueError, match="not style-video"):
        VideoStylizer.load(tmp_path / "image.pt")


def test_iter_video_streams_frames_and_counts(tmp_path):
    from rli2it_vision.data import iter_video, video_frame_count

    write_video(tmp_path / "c.mp4", _clip(6).split(1), 10.0)
    frames = iter_video(tmp_path / "c.mp4", max_frames=4, start=1)
    first = next(frames)  # one frame decoded at a time
    assert first.shape == (32, 48, 3) and len(list(frames)) == 3
    assert video_frame_count(tmp_path / "c.mp4") == 6
    with pytest.raises(ValueError, match="no decodable frame"):
        list(iter_video(tmp_path / "c.mp4", start=10))
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        next(iter_video(tmp_path / "nope.mp4"))
