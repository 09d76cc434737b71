"""Reward and value calibration of a world model on real episodes."""

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tests.conftest import DEVICES
from torchrl_pwm.envs import make_env
from torchrl_pwm.evaluation.calibration import CalibrationMetrics, world_model_calibration
from torchrl_pwm.modules import (
    TDMPC2WorldModel,
    ValueEnsemble,
    compile_networks,
    make_pwm_actor,
    symlog,
)


def _trained_like(wm: TDMPC2WorldModel) -> TDMPC2WorldModel:
    """Randomise the zero-initialised reward head so that predictions are not all zero."""
    with torch.no_grad():
        for p in wm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return wm


def _episodes(num=2, length=30, obs_dim=5, action_dim=2, device="cpu"):
    return TensorDict(
        {
            "observation": torch.randn(num, length, obs_dim),
            "action": torch.rand(num, length, action_dim) * 2 - 1,
            ("next", "reward"): torch.rand(num, length, 1),
            ("next", "done"): torch.zeros(num, length, 1, dtype=torch.bool),
        },
        batch_size=[num, length],
        device=device,
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reward_space", ["symlog", "raw"])
def test_reward_error_matches_a_start_by_start_loop(device, reward_space):
    wm = _trained_like(TDMPC2WorldModel(5, 2, size="1M", reward_space=reward_space)).to(device)
    episodes = _episodes(device=device)
    H, gamma = 4, 0.9
    report = world_model_calibration(wm, episodes, horizon=H, gamma=gamma)

    # Reference: an explicit loop over episodes, starts and imagination steps.
    errors, imagined_returns, real_returns = [], [], []
    with torch.no_grad():
        for e in range(2):
            for t in range(30 - H + 1):
                z = wm.encode(episodes["observation"][e, t])
                err, g_hat, g = [], 0.0, 0.0
                for k in range(H):
                    a = episodes["action"][e, t + k]
                    r = episodes["next", "reward"][e, t + k, 0]
                    r = symlog(r) if reward_space == "symlog" else r
                    r_hat = wm.reward(z, a)[0]
                    err.append(r_hat - r)
                    g_hat += gamma**k * r_hat
                    g += gamma**k * r
                    z = wm.next(z, a)
                errors.append(torch.stack(err))
                imagined_returns.append(g_hat)
                real_returns.append(g)
    errors = torch.stack(errors).cpu()
    torch.testing.assert_close(report.reward_abs_error, errors.abs().mean(0))
    torch.testing.assert_close(report.reward_bias, errors.mean(0))
    assert report.imagined_return == pytest.approx(float(torch.stack(imagined_returns).mean()))
    assert report.real_return == pytest.approx(float(torch.stack(real_returns).mean()))
    assert report.num_starts == 2 * 27
    assert report.value is None and report.value_ratio is None
    # Every third start only: the same reference restricted to t = 0, 3, ..., 24.
    strided = world_model_calibration(wm, episodes, horizon=H, gamma=gamma, start_stride=3)
    keep = torch.tensor([t % 3 == 0 for _ in range(2) for t in range(30 - H + 1)])
    torch.testing.assert_close(strided.reward_abs_error, errors[keep].abs().mean(0))
    assert strided.num_starts == int(keep.sum()) == 18


def test_policy_imagination_matches_a_loop():
    wm = _trained_like(TDMPC2WorldModel(5, 2, size="1M"))
    actor = make_pwm_actor(wm.latent_dim, 2, hidden_sizes=(16,))
    critic = ValueEnsemble(wm.latent_dim, hidden_sizes=(16,))
    episodes = _episodes(length=40)
    H, gamma = 5, 0.8
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        report = world_model_calibration(
            wm, episodes, critic=critic, policy=actor, horizon=H, gamma=gamma, min_tail=10
        )
        returns, end_values = [], []
        with torch.no_grad():
            for e in range(2):
                for t in range(40 - H + 1):
                    z, g = wm.encode(episodes["observation"][e, t]), 0.0
                    for k in range(H):
                        a = actor(TensorDict(latent=z[None], batch_size=[1]))["action"][0]
                        g += gamma**k * wm.reward(z, a)[0]
                        z = wm.next(z, a)
                    returns.append(g)
                    end_values.append(
                        critic(TensorDict(latent=z[None], batch_size=[1]))["state_value"]
                    )
    assert report.policy_imagined_return == pytest.approx(
        float(torch.stack(returns).mean()), rel=1e-5
    )
    assert report.policy_imagined_end_value == pytest.approx(
        float(torch.cat(end_values).mean()), rel=1e-5
    )
    # Without a policy the fields stay empty; without a critic there is no end value.
    assert world_model_calibration(wm, episodes, horizon=H).policy_imagined_return is None
    no_critic = world_model_calibration(wm, episodes, policy=actor, horizon=H)
    assert no_critic.policy_imagined_end_value is None


class _ConstantValue(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, latent):
        return torch.full_like(latent[..., :1], self.value)


def test_value_against_closed_form_return_to_go():
    # Reward 1 at every step: G_t = (1 - gamma^(T - t)) / (1 - gamma) in raw reward space.
    wm = TDMPC2WorldModel(5, 2, size="1M", reward_space="raw")
    episodes = _episodes(num=3, length=50)
    episodes["next", "reward"] = torch.ones(3, 50, 1)
    gamma, min_tail = 0.95, 20
    critic = TensorDictModule(_ConstantValue(7.0), in_keys=["latent"], out_keys=["state_value"])
    report = world_model_calibration(
        wm, episodes, critic=critic, horizon=3, gamma=gamma, min_tail=min_tail
    )
    starts = range(50 - min_tail + 1)
    expected = sum((1 - gamma ** (50 - t)) / (1 - gamma) for t in starts) / len(starts)
    assert report.return_to_go == pytest.approx(expected, rel=1e-6)
    assert report.value == pytest.approx(7.0)
    assert report.value_ratio == pytest.approx(7.0 / expected, rel=1e-6)
    assert report.num_value_starts == 3 * 31
    # The untrained (zero) reward head predicts exactly 0: bias is minus the real reward.
    torch.testing.assert_close(report.reward_bias, -torch.ones(3))
    assert report.imagined_return == pytest.approx(0.0, abs=1e-6)
    # Default min_tail: gamma^min_tail <= 0.05.
    default = world_model_calibration(wm, episodes, critic=critic, horizon=3, gamma=0.9)
    assert default.num_value_starts == 3 * (50 - 29 + 1)  # 0.9^29 = 0.047 <= 0.05 < 0.9^28


def test_real_dmc_episode_with_the_pwm_critic():
    env = make_env("cartpole-swingup", seed=0)
    obs_dim = env.observation_spec["observation"].shape[-1]
    wm = TDMPC2WorldModel(obs_dim, env.action_spec.shape[-1], size="1M")
    episode = env.rollout(500, break_when_any_done=False)  # random actions, one whole episode
    assert episode["next", "done"][-1].all()
    report = world_model_calibration(wm, episode, critic=ValueEnsemble(wm.latent_dim))
    rewards = symlog(episode["next", "reward"])
    assert report.real_reward == pytest.approx(float(rewards.mean()))
    assert report.num_starts == 500 - 16 + 1
    assert report.num_value_starts == 500 - 299 + 1
    summary = report.summary()
    assert summary["horizon"] == 16 and summary["reward_space"] == "symlog"
    assert all(math.isfinite(v) for v in summary.values() if isinstance(v, float))


def test_bad_rollouts_are_refused():
    wm = TDMPC2WorldModel(5, 2, size="1M")
    episodes = _episodes()
    with pytest.raises(ValueError, match="ends before the last time step"):
        bad = episodes.clone()
        bad["next", "done"][0, 10] = True
        world_model_calibration(wm, bad)
    with pytest.raises(ValueError, match="non-finite"):
        bad = episodes.clone()
        bad["observation"][1, 3, 0] = float("nan")
        world_model_calibration(wm, bad)
    with pytest.raises(KeyError, match="action"):
        world_model_calibration(wm, episodes.exclude("action"))
    with pytest.raises(ValueError, match="shorter than horizon"):
        world_model_calibration(wm, episodes, horizon=31)
    with pytest.raises(ValueError, match="leave no start"):
        world_model_calibration(wm, episodes, critic=ValueEnsemble(wm.latent_dim))
    with pytest.raises(NotImplementedError, match="single-task"):
        world_model_calibration(TDMPC2WorldModel(5, 2, size="1M", num_tasks=2), episodes)
    renamed = episodes.rename_key_("observation", "obs")
    assert world_model_calibration(wm, renamed, observation_key="obs", horizon=3).num_starts == 56
    episodes = renamed.rename_key_("obs", "observation")
    with pytest.raises(ValueError, match="start_stride"):
        world_model_calibration(wm, episodes, start_stride=0)
    with pytest.raises(ValueError, match=r"\[T\] or \[episodes, T\]"):
        world_model_calibration(wm, episodes.unsqueeze(0))


def test_calibration_metrics_match_the_report_and_never_compile():
    wm = _trained_like(TDMPC2WorldModel(5, 2, size="1M"))
    actor = make_pwm_actor(wm.latent_dim, 2, hidden_sizes=(16,))
    critic = ValueEnsemble(wm.latent_dim, hidden_sizes=(16,))
    episodes = _episodes(num=3, length=40)
    metrics = CalibrationMetrics(wm, critic=critic, policy=actor, horizon=5, gamma=0.9)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        report = world_model_calibration(
            wm, episodes, critic=critic, policy=actor, horizon=5, gamma=0.9, start_stride=4
        )
    compile_networks(wm, backend="eager")  # what logger.calibration meets in a compiled run
    frames = torch._dynamo.utils.counters["frames"]["total"]
    with set_exploration_type(ExplorationType.RANDOM):  # the metrics set DETERMINISTIC
        out = metrics([*episodes.unbind(0), episodes[0, :7]])  # a short one is left out
    assert torch._dynamo.utils.counters["frames"]["total"] == frames  # nothing traced
    assert out == pytest.approx(
        {
            "eval/model_real_return": report.real_return,
            "eval/model_open_loop_return": report.imagined_return,
            "eval/model_reward_mae": float(report.reward_abs_error.mean()),
            "eval/model_policy_return": report.policy_imagined_return,
            "eval/value_ratio": report.value_ratio,
        },
        rel=1e-5,
    )
    # too short for the horizon: nothing; too short for the value's tail: no value_ratio
    assert metrics([episodes[0, :4]]) == {}
    assert "eval/value_ratio" not in metrics([episodes[0, :25]])
