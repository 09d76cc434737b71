"""The TorchRL LossModule contract for the three losses: gradient isolation, keys, reduction,
state_dict and device moves."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from tests.conftest import DEVICES
from torchrl_pwm.envs import LatentWorldModelEnv
from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor
from torchrl_pwm.objectives import FirstOrderActorLoss, TDLambdaValueLoss, TDMPC2ModelLoss

B, H, OBS, A = 6, 4, 5, 2


def _agent(device="cpu", **wm_kwargs):
    wm = TDMPC2WorldModel(OBS, A, size="1M", **wm_kwargs)
    torch.nn.init.normal_(wm.get_reward_operator().module.net[-1].weight, std=0.1)
    wm = wm.to(device)
    env = LatentWorldModelEnv(wm)
    actor = make_pwm_actor(wm.latent_dim, env.action_spec, hidden_sizes=(32, 32), device=device)
    critic = ValueEnsemble(wm.latent_dim, hidden_sizes=(32, 32), device=device)
    return wm, env, actor, critic


def _slices(device="cpu"):
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(B, H + 1, OBS, generator=g)
    return TensorDict(
        observation=obs[:, :-1],
        action=torch.rand(B, H, A, generator=g) * 2 - 1,
        next=TensorDict(
            observation=obs[:, 1:], reward=torch.rand(B, H, 1, generator=g), batch_size=[B, H]
        ),
        batch_size=[B, H],
    ).to(device)


def _nonzero(params):
    return [p.grad is not None and p.grad.abs().sum() > 0 for p in params]


def _zero_grads(*modules):
    for m in modules:
        for p in m.parameters():
            p.grad = None


def test_each_loss_reaches_only_its_parameters():
    wm, env, actor, critic = _agent()
    actor_loss = FirstOrderActorLoss(actor, critic, env, imagination_horizon=H)
    value_loss = TDLambdaValueLoss(critic)
    model_loss = TDMPC2ModelLoss(wm)
    data = _slices()
    core = [*wm.encoder.parameters(), *wm.module.parameters()]

    actor_out, trajectory = actor_loss.loss_and_trajectory(data[:, 0])
    assert all(v.ndim == 0 for v in actor_out.values())  # scalars only: loggable
    actor_out["loss_actor"].backward()
    assert all(_nonzero(actor.parameters()))
    assert not any(_nonzero(wm.parameters())) and not any(_nonzero(critic.parameters()))
    assert not trajectory.requires_grad
    assert {id(p) for p in actor_loss.parameters()} == {id(p) for p in actor.parameters()}

    _zero_grads(wm, actor, critic)
    value_loss(trajectory)["loss_value"].backward()
    assert all(_nonzero(critic.parameters()))
    assert not any(_nonzero(wm.parameters())) and not any(_nonzero(actor.parameters()))

    _zero_grads(wm, actor, critic)
    out = model_loss(data)
    for key in ("loss_consistency", "loss_reward"):
        out[key].backward(retain_graph=True)
    assert all(_nonzero(core))
    assert not any(_nonzero(actor.parameters())) and not any(_nonzero(critic.parameters()))
    # the consistency term alone never reaches the reward head
    _zero_grads(wm)
    model_loss(data)["loss_consistency"].backward()
    assert all(
        _nonzero([*wm.encoder.parameters(), *wm.get_transition_model_operator().parameters()])
    )
    assert not any(_nonzero(wm.get_reward_operator().parameters()))


def _renamed_keys_equal(loss_default, loss_renamed, td_default, td_renamed, key, seed=0):
    torch.manual_seed(seed)
    a = loss_default(td_default)[key]
    torch.manual_seed(seed)
    b = loss_renamed(td_renamed)[key]
    torch.testing.assert_close(a, b)


def test_set_keys_end_to_end():
    # world-model loss
    wm, env, actor, critic = _agent()
    data = _slices()
    renamed = data.clone().rename_key_("observation", "obs").rename_key_("action", "act")
    renamed["next"].rename_key_("observation", "obs").rename_key_("reward", "rew")
    model_loss = TDMPC2ModelLoss(wm)
    renamed_loss = TDMPC2ModelLoss(wm)
    renamed_loss.set_keys(observation="obs", action="act", reward="rew")
    for key in ("loss_consistency", "loss_reward"):
        _renamed_keys_equal(model_loss, renamed_loss, data, renamed, key)
    with pytest.raises(ValueError):
        model_loss.set_keys(pixels="obs")

    # actor loss, with a world model that writes its reward under "rew"
    wm2, env2, _actor2, _critic2 = _agent(reward_key="rew")
    wm2.load_state_dict(wm.state_dict())
    critic_v = ValueEnsemble(
        wm.latent_dim, hidden_sizes=(32, 32), out_key="v", member_value_key="vm"
    )
    critic_v.load_state_dict(critic.state_dict())
    loss = FirstOrderActorLoss(actor, critic, env, imagination_horizon=H)
    loss_r = FirstOrderActorLoss(actor, critic_v, env2, imagination_horizon=H)
    loss_r.set_keys(observation="obs", reward="rew", value="v")
    _renamed_keys_equal(loss, loss_r, data[:, 0], renamed[:, 0], "loss_actor")
    assert loss_r.value_estimator.tensor_keys.reward == "rew"

    # value loss
    traj = loss.loss_and_trajectory(data[:, 0])[1]
    traj_r = traj.clone()
    traj_r["next"].rename_key_("reward", "rew").rename_key_("done", "d").rename_key_(
        "terminated", "term"
    )
    value_loss = TDLambdaValueLoss(critic)
    value_loss_r = TDLambdaValueLoss(critic_v)
    value_loss_r.set_keys(
        value="v", member_value="vm", reward="rew", done="d", terminated="term", value_target="vt"
    )
    _renamed_keys_equal(value_loss, value_loss_r, traj, traj_r, "loss_value")
    assert "vt" in value_loss_r.compute_targets(traj_r.clone()).keys()


@pytest.mark.parametrize("which", ["actor", "value", "model"])
def test_reduction(which):
    wm, env, actor, critic = _agent()
    data = _slices()

    def make(reduction):
        if which == "actor":
            loss = FirstOrderActorLoss(
                actor, critic, env, imagination_horizon=H, reduction=reduction
            )
            return loss, data[:, 0], ["loss_actor"]
        if which == "value":
            traj = FirstOrderActorLoss(
                actor, critic, env, imagination_horizon=H
            ).loss_and_trajectory(data[:, 0])[1]
            return TDLambdaValueLoss(critic, reduction=reduction), traj, ["loss_value"]
        return TDMPC2ModelLoss(wm, reduction=reduction), data, ["loss_consistency", "loss_reward"]

    outs = {}
    for reduction in ("none", "sum", "mean"):
        torch.manual_seed(0)
        loss, td, keys = make(reduction)
        loss.eval()  # freeze the actor loss's running statistics across the three calls
        outs[reduction] = loss(td)
    for key in keys:
        per_sample = outs["none"][key]
        assert per_sample.shape == td.shape[: 1 if which != "value" else 2]
        torch.testing.assert_close(outs["sum"][key], per_sample.sum())
        torch.testing.assert_close(outs["mean"][key], per_sample.mean())
    with pytest.raises(ValueError, match="reduction"):
        TDMPC2ModelLoss(wm, reduction="max")


def test_state_dict_round_trip():
    wm, env, actor, critic = _agent()
    data = _slices()
    actor_loss = FirstOrderActorLoss(actor, critic, env, imagination_horizon=H)
    actor_loss(data[:, 0])  # updates the running statistics
    wm2, env2, actor2, critic2 = _agent()
    actor_loss2 = FirstOrderActorLoss(actor2, critic2, env2, imagination_horizon=H)
    actor_loss2.load_state_dict(actor_loss.state_dict())
    critic2.load_state_dict(critic.state_dict())
    wm2.load_state_dict(wm.state_dict())
    torch.testing.assert_close(actor_loss2.return_var, actor_loss.return_var)
    actor_loss.eval(), actor_loss2.eval()
    _renamed_keys_equal(actor_loss, actor_loss2, data[:, 0], data[:, 0], "loss_actor")

    value_loss = TDLambdaValueLoss(critic, use_target_network=True)
    SoftUpdate(value_loss, tau=0.01)
    value_loss2 = TDLambdaValueLoss(
        ValueEnsemble(wm.latent_dim, hidden_sizes=(32, 32)), use_target_network=True
    )
    SoftUpdate(value_loss2, tau=0.01)
    value_loss2.load_state_dict(value_loss.state_dict())
    traj = actor_loss.loss_and_trajectory(data[:, 0])[1]
    _renamed_keys_equal(value_loss, value_loss2, traj, traj, "loss_value")

    model_loss2 = TDMPC2ModelLoss(TDMPC2WorldModel(OBS, A, size="1M"))
    model_loss2.load_state_dict(TDMPC2ModelLoss(wm).state_dict())
    _renamed_keys_equal(TDMPC2ModelLoss(wm), model_loss2, data, data, "loss_consistency")


def _move_all(device_or_dtype):
    wm, env, actor, critic = _agent()
    actor_loss = FirstOrderActorLoss(actor, critic, env, imagination_horizon=H)
    value_loss = TDLambdaValueLoss(critic, use_target_network=True)
    SoftUpdate(value_loss, tau=0.01)
    model_loss = TDMPC2ModelLoss(wm)
    # each loss moves what it owns; the actor loss references the critic and the env
    for m in (actor_loss, value_loss, model_loss):
        m.to(device_or_dtype)
    if not isinstance(device_or_dtype, torch.dtype):
        env.to(device_or_dtype)  # its specs; the world model moved with model_loss
    return actor_loss, value_loss, model_loss


@pytest.mark.parametrize("device", DEVICES)
def test_moved_losses_keep_working(device):
    actor_loss, value_loss, model_loss = _move_all(device)
    data = _slices(device)
    out, traj = actor_loss.loss_and_trajectory(data[:, 0])
    assert out["loss_actor"].device.type == device
    value_out = value_loss(traj)
    assert value_out["loss_value"].device.type == device
    assert model_loss(data)["loss_consistency"].device.type == device


def test_dtype_move_keeps_working():
    # on CPU, a float64 move exercises the same code paths as a device move: any parameter
    # copy that is left behind (e.g. a functional-params module) fails loudly
    actor_loss, value_loss, model_loss = _move_all(torch.float64)
    data = _slices().double()
    out, traj = actor_loss.loss_and_trajectory(data[:, 0])
    assert out["loss_actor"].dtype == torch.float64
    assert value_loss(traj)["loss_value"].dtype == torch.float64
    assert model_loss(data)["loss_reward"].dtype == torch.float64
