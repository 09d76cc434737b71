"""Meta-World through make_env: TD-MPC2's mw-* names, conventions and success signal.

The README's test command installs metaworld (``pip install --no-deps metaworld==3.1.1``);
only the missing-package test runs without it.
"""

import importlib.util

import pytest
import torch

from torchrl_pwm.envs import UnknownTaskError, available_tasks, make_env
from torchrl_pwm.envs import metaworld as mw
from torchrl_pwm.envs.task_sets import task_set
from torchrl_pwm.trainers import PolicyEvaluator

needs_metaworld = pytest.mark.skipif(
    importlib.util.find_spec("metaworld") is None,
    reason=f"metaworld is not installed ({mw.METAWORLD_INSTALL})",
)


@needs_metaworld
def test_episode_through_make_env():
    env = make_env("mw-reach", seed=0)
    assert env.action_repeat == 2
    assert env.observation_spec["observation"].shape == (39,)
    assert env.action_spec.shape == (4,) and env.action_spec.dtype == torch.float32
    td = env.rollout(150, break_when_any_done=True)
    # TD-MPC2: 100 agent steps (200 physics steps), truncated, never terminated
    assert td.shape == (100,)
    assert td["next", "truncated"][-1] and not td["next", "terminated"].any()
    assert td["next", "step_count"][-1].item() == 100
    obs = td["next", "observation"]
    assert obs.dtype == torch.float32 and obs.isfinite().all()
    assert td["next", "reward"].dtype == torch.float32 and td["next", "reward"].isfinite().all()
    # success beside the reward, at every step; False at reset
    assert td["next", "success"].shape == (100, 1) and td["next", "success"].dtype == torch.bool
    assert not td["success"][0].any()
    torch.testing.assert_close(td["next", "episode_reward"][-1], td["next", "reward"].sum(0))
    assert td["is_init"][0] and not td["is_init"][1:].any()


@needs_metaworld
def test_padded_mt80_interface():
    env = make_env("mw-reach", task_set="mt80", seed=0)
    assert env.observation_spec["observation"].shape == (39,)  # mt80 pads to 39: no padding
    assert env.action_spec.shape == (6,)
    actions = torch.rand(5, 6) * 2 - 1
    td = env.rollout(5, lambda td: td.set("action", actions[td["step_count"].item()]))
    assert td["task"].tolist() == [65] * 5 and td["next", "success"].shape == (5, 1)
    # the padded action entries (4, 5) are dropped before stepping
    actions[:, 4:] = 0
    again = make_env("mw-reach", task_set="mt80", seed=0).rollout(
        5, lambda td: td.set("action", actions[td["step_count"].item()])
    )
    torch.testing.assert_close(td["next", "observation"], again["next", "observation"])


@needs_metaworld
def test_seeding_is_reproducible_and_goals_are_resampled():
    def rollout(seed, steps=3):
        env = make_env("mw-push", seed=seed)
        first = env.rollout(steps, lambda td: td.set("action", torch.zeros(4)))
        return first, env.reset()["observation"]

    (a, a_next), (b, b_next), (c, _) = rollout(7), rollout(7), rollout(8)
    torch.testing.assert_close(a["next", "observation"], b["next", "observation"])
    torch.testing.assert_close(a_next, b_next)
    goal = slice(36, 39)  # the goal-observable env's last 3 entries
    assert not torch.equal(a["observation"][0, goal], c["observation"][0, goal])
    assert not torch.equal(a["observation"][0, goal], a_next[goal])  # new goal every reset


@needs_metaworld
@pytest.mark.filterwarnings("ignore:Constant.*may be too high:UserWarning")  # the expert's gains
@pytest.mark.parametrize("task", ["mw-reach", "mw-drawer-close"])
def test_scripted_expert_succeeds(task):
    """Meta-World's own scripted expert succeeds through make_env (action repeat 2, 100 steps):
    checks that Meta-World runs correctly on this project's MuJoCo."""
    from metaworld.policies import ENV_POLICY_MAP

    expert = ENV_POLICY_MAP[mw.metaworld_env_name(task)]()

    def act(td):
        action = expert.get_action(td["observation"].double().numpy())
        return td.set("action", torch.as_tensor(action, dtype=torch.float32))

    env = make_env(task, seed=0)
    for _ in range(2):
        td = env.rollout(100, act)
        assert td["next", "success"][-1].item(), f"{task}: the expert ended without success"
    # the evaluation hook of the example scripts logs the success rate beside the return
    out = PolicyEvaluator(env, act, interval=1, num_episodes=2).evaluate(frames=0)
    assert out["eval/success"] == 1.0 and out["eval/return_mean"] > 0
    dmc = PolicyEvaluator(make_env("cartpole-swingup", max_episode_steps=5), None, interval=1)
    assert "eval/success" not in dmc.evaluate(frames=0)  # DMC has no success signal


@needs_metaworld
def test_every_mt80_metaworld_task_builds_with_its_listed_dims():
    envs = mw._goal_observable_envs()
    for info in task_set("mt80")[30:]:
        env = envs[f"{mw.metaworld_env_name(info.name)}-goal-observable"]()
        assert env.observation_space.shape == (info.obs_dim,), info.name
        assert env.action_space.shape == (info.action_dim,), info.name
        assert info.episode_length == 100
        env.close()


@needs_metaworld
def test_names():
    assert {"mw-reach", "mw-hand-insert"} <= set(available_tasks())
    with pytest.raises(UnknownTaskError, match=r"'mw-reac'.*'mw-reach'"):
        make_env("mw-reac")


def test_missing_metaworld_names_the_install_command(monkeypatch):
    monkeypatch.setattr(mw, "metaworld_available", lambda: False)
    assert "mw-reach" not in available_tasks()
    with pytest.raises(ImportError, match=r"pip install --no-deps metaworld==3\.1\.1"):
        make_env("mw-reach")
