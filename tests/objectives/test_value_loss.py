"""TDLambdaValueLoss: targets against a plain Python TD(λ) recursion, and the regression."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.objectives import SoftUpdate, ValueEstimators

from torchrl_pwm.modules import ValueEnsemble
from torchrl_pwm.objectives import TDLambdaValueLoss

B, T, L = 3, 7, 4
GAMMA = torch.tensor(0.9, dtype=torch.float64)


def _trajectory(seed=0):
    g = torch.Generator().manual_seed(seed)
    done = torch.zeros(B, T, 1, dtype=torch.bool)
    terminated = torch.zeros(B, T, 1, dtype=torch.bool)
    done[0, 2] = True  # a truncation inside the window: cut the λ-chain, keep the bootstrap
    done[1, 4] = terminated[1, 4] = True  # a termination: no bootstrap
    return TensorDict(
        latent=torch.randn(B, T, L, generator=g, dtype=torch.float64),
        next=TensorDict(
            latent=torch.randn(B, T, L, generator=g, dtype=torch.float64),
            reward=torch.randn(B, T, 1, generator=g, dtype=torch.float64),
            done=done,
            terminated=terminated,
            batch_size=[B, T],
        ),
        batch_size=[B, T],
    )


def _linear_critic():
    lin = nn.Linear(L, 1, dtype=torch.float64)
    members = TensorDictModule(
        lambda z: (lin(z).unsqueeze(-2), lin(z)),
        in_keys=["latent"],
        out_keys=["state_value_members", "state_value"],
    )
    members.lin = lin
    return members, lin


def _reference_targets(traj, value_fn, gamma, lmbda):
    """G_t = r_t + γ((1-λ)V_{t+1} + λG_{t+1}); done cuts the chain, terminated zeroes V."""
    r = traj["next", "reward"][..., 0].tolist()
    v = value_fn(traj["next", "latent"])[..., 0].tolist()
    done = traj["next", "done"][..., 0].tolist()
    term = traj["next", "terminated"][..., 0].tolist()
    out = torch.zeros(B, T, 1, dtype=torch.float64)
    for b in range(B):
        g_next = None
        for t in reversed(range(T)):
            v_next = 0.0 if term[b][t] else v[b][t]
            if t == T - 1 or done[b][t]:
                g = r[b][t] + gamma * v_next
            else:
                g = r[b][t] + gamma * ((1 - lmbda) * v_next + lmbda * g_next)
            out[b, t, 0] = g
            g_next = g
    return out


@pytest.mark.parametrize("lmbda", [0.0, 0.95, 1.0])
def test_targets_equal_python_recursion(lmbda):
    critic, lin = _linear_critic()
    loss = TDLambdaValueLoss(critic)
    loss.make_value_estimator(ValueEstimators.TDLambda, gamma=GAMMA, lmbda=lmbda)
    traj = loss.compute_targets(_trajectory())
    with torch.no_grad():
        expected = _reference_targets(traj, lin, GAMMA.item(), lmbda)
    torch.testing.assert_close(traj["value_target"], expected)


def test_loss_is_mean_squared_error_of_every_member():
    critic = ValueEnsemble(L, num_critics=3, hidden_sizes=(8,)).double()
    loss = TDLambdaValueLoss(critic)
    loss.make_value_estimator(gamma=GAMMA, lmbda=0.95)
    traj = loss.compute_targets(_trajectory())
    flat = traj.reshape(-1)
    out = loss(flat)
    members = critic(flat.select("latent"))["state_value_members"]
    expected = (members - flat["value_target"][:, None]).square().mean()
    torch.testing.assert_close(out["loss_value"], expected)
    # the targets are not recomputed when present (they are fixed across minibatch passes)
    flat2 = flat.clone()
    flat2["value_target"] = torch.zeros_like(flat2["value_target"])
    torch.testing.assert_close(loss(flat2)["loss_value"], members.square().mean())
    # called on a trajectory without targets: computes them, leaves the input unchanged
    raw = _trajectory()
    torch.testing.assert_close(loss(raw)["loss_value"], loss(traj)["loss_value"])
    assert "value_target" not in raw.keys()


def test_target_network():
    critic = ValueEnsemble(L, hidden_sizes=(8,)).double()
    loss = TDLambdaValueLoss(critic, use_target_network=True)
    updater = SoftUpdate(loss, tau=0.5)
    traj = _trajectory()
    before = loss.compute_targets(traj.clone())["value_target"]
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(0.3)
    # targets come from the (unchanged) target critic...
    torch.testing.assert_close(loss.compute_targets(traj.clone())["value_target"], before)
    updater.step()  # ...until it is soft-updated
    assert not torch.allclose(loss.compute_targets(traj.clone())["value_target"], before)
    target_params = list(loss.target_value_network_params.values(True, True))
    assert all(not p.requires_grad for p in target_params)
    assert {id(p) for p in loss.parameters()} == {id(p) for p in critic.parameters()}
