"""PWM's actor (tanh-Gaussian, state-independent std) and the critic ensemble."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Unbounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tests.conftest import DEVICES
from torchrl_pwm.modules import ValueEnsemble, make_pwm_actor


def _net(actor):
    return actor.module[0].module  # StateIndependentScale


def test_actor_layout():
    actor = make_pwm_actor(32, 3)
    net = _net(actor)
    kinds = [type(m).__name__ for m in net.net]
    assert kinds == ["Linear", "Mish", "LayerNorm"] * 3 + ["Linear"]
    assert [m.out_features for m in net.net if type(m).__name__ == "Linear"] == [400, 200, 100, 3]
    torch.testing.assert_close(net.log_std.data, torch.full((3,), -1.0))


def test_actor_rejects_initial_std_below_its_floor():
    with pytest.raises(ValueError, match=r"init_log_std=-2\.0 is below min_log_std=-1\.427"):
        make_pwm_actor(8, 2, init_log_std=-2.0)
    net = _net(make_pwm_actor(8, 2, init_log_std=-0.5, min_log_std=-0.5))
    net(torch.zeros(1, 8))
    torch.testing.assert_close(net.log_std.data, torch.full((2,), -0.5))


@pytest.mark.parametrize("device", DEVICES)
def test_actor_sampling_formula(device):
    actor = make_pwm_actor(8, 2, device=device)
    td = TensorDict(latent=torch.randn(6, 8, device=device), batch_size=[6], device=device)
    loc, scale = _net(actor)(td["latent"])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        torch.testing.assert_close(actor(td.clone())["action"], loc.tanh())
    torch.manual_seed(3)
    with set_exploration_type(ExplorationType.RANDOM):
        a = actor(td.clone())["action"]
    torch.manual_seed(3)
    eps = torch.randn(6, 2, device=device)
    torch.testing.assert_close(a, (loc + scale * eps).tanh())
    assert a.requires_grad  # reparameterised


def test_actor_rescales_to_action_bounds():
    spec = Bounded(torch.tensor([0.0, -2.0]), torch.tensor([1.0, 2.0]), (2,))
    actor = make_pwm_actor(4, spec)
    td = TensorDict(latent=torch.randn(5, 4), batch_size=[5])
    loc, _ = _net(actor)(td["latent"])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        a = actor(td)["action"]
    torch.testing.assert_close(a, loc.tanh() * torch.tensor([0.5, 2.0]) + torch.tensor([0.5, 0.0]))
    with pytest.raises(TypeError, match="Bounded"):
        make_pwm_actor(4, Unbounded((2,)))


def test_log_std_clamp_is_straight_through():
    actor = make_pwm_actor(4, 2, min_log_std=-1.427)
    net = _net(actor)
    with torch.no_grad():
        net.log_std.fill_(-3.0)  # as an optimiser step past the floor would leave it
    _, scale = net(torch.randn(3, 4))
    # value clamped in place (as the original's .data.clamp_)...
    torch.testing.assert_close(net.log_std.data, torch.full((2,), -1.427))
    torch.testing.assert_close(scale, torch.full((3, 2), -1.427).exp())
    # ... and the gradient still reaches the parameter
    scale.sum().backward()
    torch.testing.assert_close(net.log_std.grad, 3 * torch.full((2,), -1.427).exp())


@pytest.mark.parametrize("device", DEVICES)
def test_value_ensemble(device):
    critic = ValueEnsemble(16, num_critics=4, device=device)
    z = torch.randn(2, 5, 16, device=device)
    td = critic(TensorDict(latent=z, batch_size=[2, 5], device=device))
    members = td["state_value_members"]
    assert members.shape == (2, 5, 4, 1)
    torch.testing.assert_close(td["state_value"], members.min(-2).values)
    torch.testing.assert_close(members, critic.module.ensemble(z))
    with pytest.raises(ValueError, match="num_critics"):
        ValueEnsemble(16, num_critics=0)


@pytest.mark.parametrize("multitask", [False, True])
def test_pwm_policy_equals_the_tensordict_policy(multitask):
    """make_pwm_policy acts exactly as TensorDictSequential(encoder, actor): deterministic
    (evaluation) and sampled (collectors), with the same noise."""
    from tensordict.nn import TensorDictSequential

    from torchrl_pwm.modules import TDMPC2WorldModel, make_pwm_policy

    kwargs = {"num_tasks": 3} if multitask else {}
    wm = TDMPC2WorldModel(5, 2, size="1M", **kwargs)
    actor = make_pwm_actor(wm.latent_dim, 2, hidden_sizes=(16,))
    reference = TensorDictSequential(wm.encoder, actor, selected_out_keys=["action"])
    fast = make_pwm_policy(wm, actor)
    td = TensorDict(observation=torch.randn(4, 5), batch_size=[4])
    if multitask:
        td["task"] = torch.tensor([0, 2, 1, 1])
    for mode in (ExplorationType.DETERMINISTIC, ExplorationType.RANDOM):
        with set_exploration_type(mode):
            torch.manual_seed(0)
            expected = reference(td.clone())["action"]
            torch.manual_seed(0)
            torch.testing.assert_close(fast(td.clone())["action"], expected, msg=str(mode))
    with pytest.raises(TypeError, match="make_pwm_actor"):
        make_pwm_policy(wm, reference)
