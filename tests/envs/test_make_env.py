"""make_env: real DMC and Gymnasium tasks, the standard transforms, clear errors."""

import pytest
import torch

from torchrl_pwm.envs import UnknownTaskError, available_tasks, make_env


def test_dmc_task_transforms_and_action_repeat():
    env = make_env("cartpole-swingup", seed=1)
    assert env.action_repeat == 2
    spec = env.observation_spec
    assert spec["observation"].shape == (5,) and spec["observation"].dtype == torch.float32
    assert env.action_spec.dtype == torch.float32
    td = env.rollout(600, break_when_any_done=True)
    # 1000 physics steps per DMC episode = 500 agent steps with the repeat; truncated, not terminated
    assert td.shape == (500,)
    assert td["next", "truncated"][-1] and not td["next", "terminated"].any()
    assert td["next", "step_count"][-1].item() == 500
    torch.testing.assert_close(td["next", "episode_reward"][-1], td["next", "reward"].sum(0))
    assert td["is_init"][0] and not td["is_init"][1:].any()


def test_action_repeat_sums_rewards():
    one = make_env("cartpole-swingup", seed=3, action_repeat=1)
    two = make_env("cartpole-swingup", seed=3, action_repeat=2)
    actions = torch.rand(10, 1) * 2 - 1
    r1 = one.rollout(
        20, lambda td: td.set("action", actions.repeat_interleave(2, 0)[td["step_count"].item()])
    )
    r2 = two.rollout(10, lambda td: td.set("action", actions[td["step_count"].item()]))
    torch.testing.assert_close(
        r2["next", "reward"].squeeze(-1), r1["next", "reward"].view(10, 2).sum(-1).squeeze(-1)
    )


def test_seeding_is_reproducible():
    a = make_env("walker-walk", seed=7).rollout(5, lambda td: td.set("action", torch.zeros(6)))
    b = make_env("walker-walk", seed=7).rollout(5, lambda td: td.set("action", torch.zeros(6)))
    torch.testing.assert_close(a["observation"], b["observation"])


def test_tdmpc2_names_and_gymnasium():
    tasks = available_tasks()
    assert {"cup-catch", "cartpole-swingup-sparse", "cheetah-run", "HalfCheetah-v5"} <= set(tasks)
    assert make_env("cup-catch").observation_spec["observation"].shape == (8,)
    gym = make_env("HalfCheetah-v5", seed=0)
    assert gym.action_repeat == 1
    td = gym.rollout(3)
    assert td["observation"].shape == (3, 17) and td["observation"].dtype == torch.float32


def test_max_episode_steps():
    td = make_env("cartpole-swingup", max_episode_steps=7).rollout(20, break_when_any_done=True)
    assert td.shape == (7,) and td["next", "truncated"][-1]


def test_unknown_task_lists_close_matches():
    with pytest.raises(ValueError, match=r"Unknown task 'cheeta-run'.*'cheetah-run'"):
        make_env("cheeta-run")
    with pytest.raises(UnknownTaskError, match="available_tasks") as err:
        make_env("no-such-thing-at-all")
    # no close match: the valid names are listed inline
    assert "cheetah-run" in str(err.value) and "walker-walk" in str(err.value)
    assert "HalfCheetah" in str(err.value)
