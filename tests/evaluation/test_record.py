"""Evaluation videos: frames from a real pixel-rendering DMC env, written as GIFs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchrl.envs.utils import step_mdp

from torchrl_pwm.envs import make_env
from torchrl_pwm.evaluation.record import record_episode, save_gif


def test_record_episode_frames_are_the_rollout_frames():
    """Frame t of the recording is the scene after step t of the recorded episode: compared
    exactly with frames rendered independently (dm_control's own camera, on a state-only env
    replaying the same actions from the same seed), and the return is that replay's."""
    kwargs = {"seed": 3, "render_size": (60, 80), "max_episode_steps": 6}
    actions = torch.tensor([[1.0], [1.0], [-1.0], [0.5], [-0.5], [1.0]])

    def policy(td):  # scripted: the action of the step about to be taken
        td["action"] = actions[int(td["step_count"])]
        return td

    env = make_env("cartpole-swingup", from_pixels=True, **kwargs)
    frames, ret = record_episode(env, policy)
    env.close()
    assert frames.shape == (7, 60, 80, 3) and frames.dtype == torch.uint8

    replay = make_env("cartpole-swingup", **kwargs)
    physics = replay.base_env._env.physics

    def render():
        return torch.from_numpy(physics.render(height=60, width=80, camera_id=0).copy())

    td = replay.reset()
    expected, rewards = [render()], []
    for action in actions:
        td["action"] = action
        td = replay.step(td)
        rewards.append(td["next", "reward"].item())
        expected.append(render())
        td = step_mdp(td)
    assert torch.equal(frames, torch.stack(expected))
    assert ret == pytest.approx(sum(rewards), rel=1e-6)
    # the recording is not a still: the pushed cart moves on screen at every step
    assert all((frames[t + 1] != frames[t]).any() for t in range(len(actions)))
    # and it is this episode's: another seed starts from another pole angle
    other, _ = record_episode(
        make_env("cartpole-swingup", from_pixels=True, **{**kwargs, "seed": 4}), policy
    )
    assert not torch.equal(other[0], frames[0])


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
