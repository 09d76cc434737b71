"""Evaluation videos: frames from a real pixel-rendering DMC env, written as GIFs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from torchrl_pwm.envs import make_env
from torchrl_pwm.evaluation.record import record_episode, save_gif


def test_record_episode_frames_are_the_rollout_frames():
    env = make_env(
        "cartpole-swingup", seed=3, from_pixels=True, render_size=(60, 80), max_episode_steps=4
    )
    frames, ret = record_episode(env, None)
    assert frames.shape == (5, 60, 80, 3) and frames.dtype == torch.uint8
    assert frames.float().std() > 0  # a rendered scene, not a blank buffer
    # the episode return is the RewardSum of the same rollout: in [0, 1] per env step
    assert 0.0 <= ret <= 4 * env.action_repeat
    env.close()


def test_record_episode_needs_pixels():
    with pytest.raises(ValueError, match="from_pixels=True"):
        record_episode(make_env("cartpole-swingup", max_episode_steps=2), None)


def test_save_gif_round_trip(tmp_path):
    frames = torch.zeros(3, 4, 6, 3, dtype=torch.uint8)
    frames[1, :, :, 0] = 255  # a red frame between two black ones
    path = save_gif(frames, tmp_path / "sub" / "ep.gif", downscale=1)
    with Image.open(path) as im:
        assert im.size == (6, 4) and im.n_frames == 3
        im.seek(1)
        assert im.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert not (tmp_path / "sub" / "ep.gif.tmp").exists()


@pytest.mark.parametrize(
    "frames",
    [torch.zeros(3, 4, 4), torch.zeros(3, 4, 4, 3), torch.zeros(0, 4, 4, 3, dtype=torch.uint8)],
)
def test_save_gif_rejects_bad_frames(tmp_path, frames):
    with pytest.raises(ValueError):
        save_gif(frames, tmp_path / "x.gif")
    assert not (tmp_path / "x.gif").exists()
