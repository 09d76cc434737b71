"""LatentWorldModelEnv with a real DMC task's specs and observations."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, check_env_specs, set_exploration_type
from torchrl.objectives import hold_out_net

from tests.conftest import DEVICES
from torchrl_pwm.envs import LatentWorldModelEnv
from torchrl_pwm.modules import TDMPC2WorldModel, make_pwm_actor


@pytest.fixture
def cartpole_setup(cartpole_data):
    env, rollout = cartpole_data
    obs_dim = env.observation_spec["observation"].shape[-1]
    wm = TDMPC2WorldModel(obs_dim, env.action_spec.shape[-1], size="1M")
    torch.nn.init.normal_(wm.get_reward_operator().module.net[-1].weight, std=0.1)
    return env, rollout, wm


def test_rollout_from_real_dmc_observations(cartpole_setup):
    env, rollout, wm = cartpole_setup
    latent_env = LatentWorldModelEnv(wm, base_env=env)
    assert latent_env.action_spec == env.action_spec
    actor = make_pwm_actor(wm.latent_dim, latent_env.action_spec)
    start = latent_env.reset(rollout.select("observation"))  # 64 real observations
    traj = latent_env.rollout(16, actor, auto_reset=False, tensordict=start)
    assert traj.batch_size == (64, 16)
    assert traj["next", "reward"].shape == (64, 16, 1)
    assert not traj["next", "done"].any()
    assert latent_env.action_spec.is_in(traj["action"])
    # step t's latent is step t-1's next latent; rewards are R(z_t, a_t)
    torch.testing.assert_close(traj["latent"][:, 1:], traj["next", "latent"][:, :-1])
    torch.testing.assert_close(traj["latent"][:, 0], wm.encode(rollout["observation"]))
    torch.testing.assert_close(traj["next", "reward"], wm.reward(traj["latent"], traj["action"]))
    torch.testing.assert_close(traj["next", "latent"], wm.next(traj["latent"], traj["action"]))


def test_gradients_flow_to_actor_and_start_latent(cartpole_setup):
    env, rollout, wm = cartpole_setup
    latent_env = LatentWorldModelEnv(wm, base_env=env)
    actor = make_pwm_actor(wm.latent_dim, latent_env.action_spec)
    z0 = wm.encode(rollout["observation"][:8]).detach().requires_grad_(True)
    with hold_out_net(latent_env), set_exploration_type(ExplorationType.RANDOM):
        traj = latent_env.rollout(
            5,
            actor,
            auto_reset=False,
            tensordict=latent_env.reset(TensorDict(latent=z0, batch_size=[8])),
        )
        # the last reward depends on z0 only through the whole chain of latents
        traj["next", "reward"][:, -1].sum().backward()
    assert z0.grad is not None and z0.grad.abs().sum() > 0
    assert all(p.grad is not None for p in actor.parameters())
    assert all(p.grad is None for p in wm.parameters())
    assert all(p.requires_grad for p in wm.parameters())  # restored after hold_out_net


def test_any_batch_shape_and_specs(cartpole_setup):
    env, rollout, wm = cartpole_setup
    latent_env = LatentWorldModelEnv(wm, base_env=env)
    actor = make_pwm_actor(wm.latent_dim, latent_env.action_spec)
    obs = rollout["observation"][:12].reshape(3, 4, -1)
    traj = latent_env.rollout(
        3,
        actor,
        auto_reset=False,
        tensordict=latent_env.reset(TensorDict(observation=obs, batch_size=[3, 4])),
    )
    assert traj.batch_size == (3, 4, 3)
    batched = LatentWorldModelEnv(wm, base_env=env, batch_size=[4])
    start = batched.reset(TensorDict(observation=rollout["observation"][:4], batch_size=[4]))
    check_env_specs(batched, tensordict=start)


def test_errors(cartpole_setup):
    env, _rollout, wm = cartpole_setup
    latent_env = LatentWorldModelEnv(wm)
    with pytest.raises(ValueError, match="needs start states"):
        latent_env.reset()
    with pytest.raises(KeyError, match="Start states need"):
        latent_env.reset(TensorDict(pixels=torch.zeros(2, 3), batch_size=[2]))
    with pytest.raises(ValueError, match="observations of size 5"):
        latent_env.reset(TensorDict(observation=torch.zeros(2, 9), batch_size=[2]))
    wm2 = TDMPC2WorldModel(5, 3, size="1M")
    with pytest.raises(ValueError, match="world model takes actions of size 3"):
        LatentWorldModelEnv(wm2, base_env=env)


def test_multitask_carries_task():
    wm = TDMPC2WorldModel(6, 2, size="1M", num_tasks=3, action_dims=[2, 1, 2])
    latent_env = LatentWorldModelEnv(wm)
    actor = make_pwm_actor(wm.latent_dim, 2)
    start = TensorDict(
        observation=torch.randn(5, 6), task=torch.tensor([0, 1, 2, 1, 0]), batch_size=[5]
    )
    traj = latent_env.rollout(4, actor, auto_reset=False, tensordict=latent_env.reset(start))
    assert (traj["task"] == start["task"][:, None]).all()
    torch.testing.assert_close(
        traj["next", "latent"], wm.next(traj["latent"], traj["action"], traj["task"])
    )
    with pytest.raises(KeyError, match="task"):
        latent_env.reset(start.exclude("task"))


@pytest.mark.parametrize("device", DEVICES)
def test_device(device):
    wm = TDMPC2WorldModel(5, 1, size="1M").to(device)
    latent_env = LatentWorldModelEnv(wm)
    assert latent_env.device.type == device
    actor = make_pwm_actor(wm.latent_dim, latent_env.action_spec, device=device)
    start = TensorDict(observation=torch.randn(4, 5, device=device), batch_size=[4], device=device)
    traj = latent_env.rollout(3, actor, auto_reset=False, tensordict=latent_env.reset(start))
    assert traj["next", "reward"].device.type == device
