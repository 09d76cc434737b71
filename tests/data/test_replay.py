"""Slice replay buffer on real collector output."""

import torch
from torchrl.collectors import Collector

from torchrl_pwm.data import make_sequence_replay_buffer
from torchrl_pwm.envs import make_env


def _collect(frames=300, max_steps=23):
    env = make_env("cartpole-swingup", seed=0, max_episode_steps=max_steps)
    collector = Collector(env, None, frames_per_batch=frames, total_frames=frames)
    data = next(iter(collector))
    collector.shutdown()
    return data


def test_slices_never_cross_episodes():
    data = _collect()
    rb = make_sequence_replay_buffer(1000, horizon=5, num_slices=64)
    rb.extend(data)
    for _ in range(5):
        batch = rb.sample().reshape(64, 5)
        traj = batch["collector", "traj_ids"]
        assert (traj == traj[:, :1]).all()
        steps = batch["step_count"].squeeze(-1)
        assert (steps[:, 1:] - steps[:, :-1] == 1).all()  # consecutive within the episode
        # o_{t+1} of step t is o_{t+1} of the slice
        torch.testing.assert_close(
            batch["next", "observation"][:, :-1], batch["observation"][:, 1:]
        )


def test_dumps_loads_round_trip(tmp_path):
    data = _collect(120)
    rb = make_sequence_replay_buffer(500, horizon=4, num_slices=8)
    rb.extend(data)
    rb.dumps(tmp_path / "rb")
    rb2 = make_sequence_replay_buffer(500, horizon=4, num_slices=8)
    rb2.loads(tmp_path / "rb")
    assert len(rb2) == len(rb) == 120
    torch.testing.assert_close(rb2[:]["observation"], rb[:]["observation"])
    torch.manual_seed(0)
    a = rb.sample()
    torch.manual_seed(0)
    b = rb2.sample()
    torch.testing.assert_close(a["observation"], b["observation"])


def test_bad_arguments():
    import pytest

    with pytest.raises(ValueError, match="horizon"):
        make_sequence_replay_buffer(10, horizon=0, num_slices=2)
