"""TD-MPC2's task sets as data, TD-MPC2's observation layout, padded multi-task envs and the
custom mt30 tasks."""

import numpy as np
import pytest
import torch

from torchrl_pwm.envs import TASK_SETS, make_env, task_set
from torchrl_pwm.envs.dmc_custom import CUSTOM_TASKS, UNAVAILABLE_CUSTOM_TASKS, load_custom_task
from torchrl_pwm.envs.task_sets import (
    DATA_EPISODE_ROWS,
    max_action_dim,
    max_obs_dim,
    task_id,
)

MT30 = task_set("mt30")
STANDARD = MT30[:19]
CUSTOM = MT30[19:]
# Tasks whose dm_control order differs from sorted keys (what make_env did before).
REORDERED = {
    "walker-stand", "walker-walk", "walker-run", "finger-spin", "finger-turn-easy",
    "finger-turn-hard", "fish-swim", "hopper-stand", "hopper-hop",
}  # fmt: skip


def test_task_sets_are_tdmpc2s():
    assert len(TASK_SETS["mt30"]) == 30 and len(TASK_SETS["mt80"]) == 80
    assert TASK_SETS["mt80"][:30] == TASK_SETS["mt30"]
    names = [t.name for t in TASK_SETS["mt80"]]
    assert len(set(names)) == 80
    # a few anchors of TD-MPC2's order (the task id of its datasets)
    assert names[0] == "walker-stand" and names[3] == "cheetah-run" and names[18] == "hopper-hop"
    assert names[19] == "walker-walk-backwards" and names[29] == "pendulum-spin"
    assert names[30] == "mw-assembly" and names[79] == "mw-hand-insert"
    assert task_id("mt80", "mw-reach") == 65
    assert all(t.suite == "metaworld" for t in TASK_SETS["mt80"][30:])
    assert all((t.obs_dim, t.action_dim, t.episode_length) == (39, 4, 100) for t in names_mw())
    assert all(t.episode_length == 500 for t in MT30)
    assert (max_obs_dim("mt30"), max_action_dim("mt30")) == (24, 6)
    assert (max_obs_dim("mt80"), max_action_dim("mt80")) == (39, 6)
    assert DATA_EPISODE_ROWS == {"mt30": 501, "mt80": 101}
    with pytest.raises(ValueError, match="Unknown task set 'mt50'"):
        task_set("mt50")
    with pytest.raises(ValueError, match="'cheetah-fly' is not in the task set 'mt30'"):
        task_id("mt30", "cheetah-fly")


def names_mw():
    return TASK_SETS["mt80"][30:]


@pytest.mark.parametrize("info", STANDARD, ids=lambda t: t.name)
def test_observation_is_dm_controls_concatenation(info):
    """make_env's observation = dm_control's own entries, concatenated in dm_control's order
    (TD-MPC2's layout); its dims are those the task set lists."""
    env = make_env(info.name, seed=3)
    td = env.reset()
    dm_env = env.base_env._env
    entries = dm_env.task.get_observation(dm_env.physics)  # the task's OrderedDict
    expected = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in entries.values()])
    torch.testing.assert_close(td["observation"], torch.as_tensor(expected, dtype=torch.float32))
    assert td["observation"].shape == (info.obs_dim,)
    assert env.action_spec.shape == (info.action_dim,)
    assert (list(entries) != sorted(entries)) == (info.name in REORDERED)


def test_padded_multitask_env():
    env = make_env("hopper-hop", task_set="mt30", seed=0)
    assert env.observation_spec["observation"].shape == (24,)
    assert env.action_spec.shape == (6,)
    assert (env.action_spec.space.low == -1).all() and (env.action_spec.space.high == 1).all()
    actions = torch.rand(5, 6) * 2 - 1
    td = env.rollout(5, lambda td: td.set("action", actions[td["step_count"].item()]))
    assert td["observation"].shape == (5, 24)
    assert (td["observation"][:, 15:] == 0).all() and (td["next", "observation"][:, 15:] == 0).all()
    assert (td["task"] == 18).all() and (td["next", "task"] == 18).all()
    assert td["task"].dtype == torch.int64
    # the padded action entries are dropped: other values there, same trajectory
    other = actions.clone()
    other[:, 4:] = torch.randn(5, 2) * 5
    env2 = make_env("hopper-hop", task_set="mt30", seed=0)
    td2 = env2.rollout(5, lambda td: td.set("action", other[td["step_count"].item()]))
    torch.testing.assert_close(td2["next", "observation"], td["next", "observation"])
    torch.testing.assert_close(td2["next", "reward"], td["next", "reward"])
    # and the unpadded env sees the same observations
    plain = make_env("hopper-hop", seed=0)
    td3 = plain.rollout(5, lambda td: td.set("action", actions[td["step_count"].item(), :4]))
    torch.testing.assert_close(td3["next", "observation"], td["next", "observation"][:, :15])
    # mt80: padded to 39
    assert make_env("cup-catch", task_set="mt80").reset()["observation"].shape == (39,)


def test_padded_env_errors():
    with pytest.raises(ValueError, match="'HalfCheetah-v5' is not in the task set 'mt30'"):
        make_env("HalfCheetah-v5", task_set="mt30")
    with pytest.raises(ValueError, match="Unknown task set"):
        make_env("cheetah-run", task_set="mt31")


@pytest.mark.parametrize("info", CUSTOM, ids=lambda t: t.name)
def test_custom_tasks_build_or_say_why(info):
    if info.name in UNAVAILABLE_CUSTOM_TASKS:
        with pytest.raises(NotImplementedError, match=rf"'{info.name}'.*three-link"):
            make_env(info.name, task_set="mt30")
        return
    env = make_env(info.name, seed=0)
    td = env.rollout(3)
    assert td["observation"].shape == (3, info.obs_dim)
    assert env.action_spec.shape == (info.action_dim,)
    assert td["next", "reward"].isfinite().all()


def test_which_custom_tasks_exist():
    custom = {t.name for t in CUSTOM}
    assert set(CUSTOM_TASKS) | set(UNAVAILABLE_CUSTOM_TASKS) == custom
    assert set(UNAVAILABLE_CUSTOM_TASKS) == {"reacher-three-easy", "reacher-three-hard"}


def _reward_at(env, joint, velocity):
    """The task's reward with every joint at 0 (the model's initial pose) and one joint
    moving."""
    physics = env.physics
    with physics.reset_context():
        physics.data.qpos[:] = 0
        physics.data.qvel[:] = 0
        physics.named.data.qvel[joint] = velocity
    return env.task.get_reward(physics)


def test_custom_rewards_reward_what_their_names_say():
    walker = load_custom_task("walker-run-backwards", seed=0)
    walker.reset()
    # standing upright (the initial pose); running backwards beats running forwards
    back, fwd = _reward_at(walker, "rootx", -8.0), _reward_at(walker, "rootx", 8.0)
    assert back > 0.9 and fwd < 0.2
    cheetah = load_custom_task("cheetah-run-backwards", seed=0)
    cheetah.reset()
    assert _reward_at(cheetah, "rootx", -9.0) == pytest.approx(1.0)
    assert _reward_at(cheetah, "rootx", 9.0) == 0.0
    pendulum = load_custom_task("pendulum-spin", seed=0)
    pendulum.reset()
    assert _reward_at(pendulum, "hinge", 10.0) == pytest.approx(1.0)
    assert _reward_at(pendulum, "hinge", -10.0) == pytest.approx(1.0)  # either direction
    assert _reward_at(pendulum, "hinge", 0.0) == 0.0
    cup = load_custom_task("cup-spin", seed=0)
    starts = []
    for _ in range(20):
        cup.reset()
        starts.append(cup.physics.in_target())
    assert sum(starts) >= 14  # the ball starts in the cup, except about 1 time in 10
