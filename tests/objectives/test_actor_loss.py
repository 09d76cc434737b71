"""FirstOrderActorLoss against a closed-form linear-quadratic system and finite differences."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import ValueEstimators

from tests.objectives._systems import LinearSystem
from torchrl_pwm.objectives import FirstOrderActorLoss

H, GAMMA = 5, 0.9
# a float64 gamma: TorchRL stores it as a tensor, and float32(0.9) is 0.9 only to 1e-8
GAMMA_T = torch.tensor(GAMMA, dtype=torch.float64)


def _loss(system, **kwargs):
    loss = FirstOrderActorLoss(
        system.actor, system.critic, system.env, imagination_horizon=H, **kwargs
    )
    loss.make_value_estimator(ValueEstimators.TD1, gamma=GAMMA_T)
    return loss.double()  # the estimator's gamma and the running statistics in float64


def _start(n=6, dim=4):
    return TensorDict(
        observation=torch.randn(
            n, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
        ),
        batch_size=[n],
    )


def test_loss_equals_closed_form_return():
    system = LinearSystem()
    start = _start()
    loss = _loss(system, normalize_returns=False)
    out, traj = loss.loss_and_trajectory(start)
    expected_j = system.objective(start["observation"], H, GAMMA)
    torch.testing.assert_close(out["loss_actor"], -expected_j.mean() / H, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out["imagined_return"], expected_j.mean(), rtol=1e-10, atol=1e-12)
    # the γ^H bootstrap: dropping it (w = 0) changes the loss by exactly mean(γ^H V(z_H))/H
    z_h = traj["next", "latent"][:, -1]
    torch.testing.assert_close(
        traj["next", "reward"].squeeze(-1) @ (GAMMA ** torch.arange(H, dtype=torch.float64))
        + GAMMA**H * (z_h @ system.w),
        expected_j.detach(),
    )


def _flat_grad(params):
    return torch.cat([p.grad.reshape(-1) for p in params])


def _finite_difference(params, fn, eps=1e-6):
    grads = []
    with torch.no_grad():
        for p in params:
            flat = p.view(-1)
            for i in range(flat.numel()):
                orig = flat[i].item()
                flat[i] = orig + eps
                up = fn()
                flat[i] = orig - eps
                down = fn()
                flat[i] = orig
                grads.append((up - down) / (2 * eps))
    return torch.stack(grads)


def test_gradient_matches_finite_differences():
    system = LinearSystem()
    start = _start()
    loss = _loss(system, normalize_returns=False, detach_policy_input=False)
    params = list(system.policy_mean.parameters())
    loss(start)["loss_actor"].backward()
    analytic = _flat_grad(params)

    def closed_form_loss():
        return -system.objective(start["observation"], H, GAMMA).mean() / H

    numeric = _finite_difference(params, closed_form_loss)
    rel = (analytic - numeric).norm() / numeric.norm()
    assert rel <= 1e-6, rel
    assert system.actor.module[0].module.log_std.grad is not None


def test_detached_policy_input_gradient():
    """With detach_policy_input, the actor's input at each step is a constant z̄_h."""
    system = LinearSystem()
    start = _start()
    loss = _loss(system, normalize_returns=False, detach_policy_input=True)
    params = list(system.policy_mean.parameters())
    loss(start)["loss_actor"].backward()
    analytic = _flat_grad(params)
    fixed = system.latents(start["observation"], H)

    def fixed_input_loss():
        return -system.objective(start["observation"], H, GAMMA, policy_inputs=fixed).mean() / H

    numeric = _finite_difference(params, fixed_input_loss)
    assert (analytic - numeric).norm() / numeric.norm() <= 1e-6
    # ... and it is not the full gradient
    for p in params:
        p.grad = None
    _loss(system, normalize_returns=False, detach_policy_input=False)(start)[
        "loss_actor"
    ].backward()
    assert not torch.allclose(_flat_grad(params), analytic)


def test_running_return_normalisation():
    system = LinearSystem()
    loss = _loss(system, normalize_returns=True)
    mean, var, count = 0.0, 1.0, 1e-4
    for seed in (1, 2):
        start = TensorDict(
            observation=torch.randn(
                6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
            ),
            batch_size=[6],
        )
        ell = -system.objective(start["observation"], H, GAMMA).detach()
        b_mean, b_var, b_count = ell.mean().item(), ell.var(unbiased=False).item(), 6
        delta = b_mean - mean
        total = count + b_count
        var = (var * count + b_var * b_count + delta**2 * count * b_count / total) / total
        mean, count = mean + delta * b_count / total, total
        out = loss(start)
        torch.testing.assert_close(
            out["return_std"].item(), (var + 1e-5) ** 0.5, rtol=1e-10, atol=0
        )
        torch.testing.assert_close(
            out["loss_actor"].item(), ell.mean().item() / (var + 1e-5) ** 0.5
        )
    # eval mode leaves the statistics alone
    loss.eval()
    before = loss.return_var.clone()
    loss(start)
    assert torch.equal(before, loss.return_var)


def test_tdlambda_estimator_gives_lambda_return():
    system = LinearSystem()
    start = _start()
    loss = FirstOrderActorLoss(
        system.actor, system.critic, system.env, imagination_horizon=H, normalize_returns=False
    )
    loss.make_value_estimator(ValueEstimators.TDLambda, gamma=GAMMA_T, lmbda=1.0)
    loss.double()
    torch.testing.assert_close(
        loss(start)["loss_actor"], _loss(system, normalize_returns=False)(start)["loss_actor"]
    )
    loss.make_value_estimator(ValueEstimators.TDLambda, gamma=GAMMA_T, lmbda=0.0)
    loss.double()
    traj = loss.loss_and_trajectory(start)[1]
    one_step = traj["next", "reward"][:, 0, 0] + GAMMA * (traj["next", "latent"][:, 0] @ system.w)
    torch.testing.assert_close(loss(start)["loss_actor"], -one_step.mean() / H)
    with pytest.raises(NotImplementedError):
        loss.make_value_estimator(ValueEstimators.GAE)


def test_uses_start_latents_when_given():
    system = LinearSystem()
    start = _start()
    loss = _loss(system, normalize_returns=False)
    by_latent = loss(TensorDict(latent=start["observation"], batch_size=[6]))
    torch.testing.assert_close(by_latent["loss_actor"], loss(start)["loss_actor"])
    # stale stored latents (e.g. zeros of random seed frames) never override observations
    both = start.clone().set("latent", torch.zeros(6, 4, dtype=torch.float64))
    torch.testing.assert_close(loss(both)["loss_actor"], loss(start)["loss_actor"])
    with pytest.raises(KeyError, match="start states"):
        loss(TensorDict(pixels=torch.zeros(6, 4), batch_size=[6]))
    with pytest.raises(ValueError, match="imagination_horizon"):
        FirstOrderActorLoss(system.actor, system.critic, system.env, imagination_horizon=0)


def _small_pwm_actor_loss(reward_ensemble=1, saturate=None, **loss_kwargs):
    """A make_pwm_actor actor on a small TD-MPC2 world model: ``(loss, actor, world model)``;
    ``saturate``: the pre-tanh mean's bias, to put every action in tanh's saturation."""
    from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor

    torch.manual_seed(0)
    wm = TDMPC2WorldModel(
        5, 2, latent_dim=16, enc_dim=32, mlp_dim=32, num_enc_layers=1,
        reward_ensemble=reward_ensemble,
    )  # fmt: skip
    actor = make_pwm_actor(16, 2, hidden_sizes=(32,))
    if saturate is not None:
        last = [m for m in actor.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.bias.fill_(saturate)
    loss = FirstOrderActorLoss(
        actor, ValueEnsemble(16, hidden_sizes=(16,)), wm, imagination_horizon=4,
        normalize_returns=False, **loss_kwargs,
    )  # fmt: skip
    loss.make_value_estimator(gamma=0.9)
    return loss, actor, wm


def _tanh_gaussian_loss(coef, saturate=None):
    loss, actor, _ = _small_pwm_actor_loss(saturate=saturate, mean_penalty_coef=coef)
    return loss, actor


def test_mean_penalty_adds_the_mean_squared_pre_tanh_mean():
    start = TensorDict(observation=torch.randn(6, 5), batch_size=[6])
    plain, _ = _tanh_gaussian_loss(0.0)
    penalised, actor = _tanh_gaussian_loss(0.5)
    torch.manual_seed(1)
    out0, traj = plain.loss_and_trajectory(start)
    torch.manual_seed(1)
    out1 = penalised(start)  # same weights, same noise: the same imagined trajectory
    loc = actor.module[0].module(traj["latent"])[0]  # the (loc, scale) head on the z_h
    assert loc.shape == (6, 4, 2)
    torch.testing.assert_close(out1["loss_actor"] - out0["loss_actor"], 0.5 * loc.square().mean())
    torch.testing.assert_close(out1["action_saturation"], (loc.abs() > 3).float().mean())
    assert "_loc" not in traj.keys()


def test_mean_penalty_threshold_penalises_only_the_excess_beyond_it():
    """``c · mean_h ‖max(|μ| - τ, 0)‖²``, by hand on the imagined pre-tanh means; zero where
    every ``|μ| <= τ``."""
    start = TensorDict(observation=torch.randn(6, 5), batch_size=[6])
    plain, _, _ = _small_pwm_actor_loss(saturate=2.5)
    hinged, actor, _ = _small_pwm_actor_loss(
        saturate=2.5, mean_penalty_coef=0.5, mean_penalty_threshold=2.5
    )
    torch.manual_seed(1)
    out0, traj = plain.loss_and_trajectory(start)
    torch.manual_seed(1)
    out1 = hinged(start)
    loc = actor.module[0].module(traj["latent"])[0]
    above, below = (loc.abs() > 2.5).float().mean(), (loc.abs() < 2.5).float().mean()
    assert above > 0.1 and below > 0.1  # both sides of the threshold are exercised
    expected = 0.5 * (loc.abs() - 2.5).clamp_min(0).square().mean()
    torch.testing.assert_close(out1["loss_actor"] - out0["loss_actor"], expected)
    far, _, _ = _small_pwm_actor_loss(
        saturate=2.5, mean_penalty_coef=0.5, mean_penalty_threshold=100.0
    )
    torch.manual_seed(1)
    torch.testing.assert_close(far(start)["loss_actor"], out0["loss_actor"])
    with pytest.raises(ValueError, match="mean_penalty_threshold"):
        _small_pwm_actor_loss(mean_penalty_coef=0.5, mean_penalty_threshold=-1.0)


def test_mean_penalty_pulls_a_saturated_actor_back():
    start = TensorDict(observation=torch.randn(6, 5), batch_size=[6])
    for coef in (0.0, 1e-3):
        loss, actor = _tanh_gaussian_loss(coef, saturate=20.0)
        out = loss(start)
        assert out["action_saturation"] == 1.0
        out["loss_actor"].backward()
        bias = [m for m in actor.modules() if isinstance(m, torch.nn.Linear)][-1].bias
        if coef == 0.0:  # tanh'(20) ~ 1e-17: the return's gradient is gone
            assert bias.grad[:2].abs().max() < 1e-12
        else:  # d/dμ c·mean μ² = 2cμ/2 per action dim; descent lowers the bias
            assert (bias.grad[:2] > 1e-4).all()


def test_mean_penalty_needs_a_tanh_gaussian_head_and_a_non_negative_weight():
    from tensordict.nn import TensorDictModule

    loss, _ = _tanh_gaussian_loss(0.0)
    generic = TensorDictModule(torch.nn.Linear(16, 2), in_keys=["latent"], out_keys=["action"])
    with pytest.raises(ValueError, match="make_pwm_actor"):
        FirstOrderActorLoss(generic, loss.value_network, loss.world_model, mean_penalty_coef=1e-3)
    with pytest.raises(ValueError, match=">= 0"):
        _tanh_gaussian_loss(-1.0)


def _ensemble_loss(coef, heads=3):
    loss, _, wm = _small_pwm_actor_loss(reward_ensemble=heads, disagreement_coef=coef)
    return loss, wm


def test_disagreement_penalty_subtracts_the_reward_heads_spread():
    """Imagined rewards become r - c·std over the K heads, each head evaluated on its own
    (the primary through ``reward``, the extra ones member by member); the loss changes by
    the discounted sum over H; the trajectory's reward is the penalised one; gradients reach the
    actor and no world-model parameter."""
    start = TensorDict(observation=torch.randn(6, 5), batch_size=[6])
    plain, _ = _ensemble_loss(0.0)
    penalised, wm = _ensemble_loss(0.7)
    torch.manual_seed(1)
    out0, traj0 = plain.loss_and_trajectory(start)
    torch.manual_seed(1)
    out1, traj1 = penalised.loss_and_trajectory(start)
    z, a = traj0["latent"], traj0["action"]  # the same imagined states and actions
    heads = wm.extra_reward_heads
    features = torch.cat([z, a], -1)
    members = [wm.reward(z, a)]
    for k in range(heads.ensemble_size):  # member k alone: a one-member copy of its weights
        single = type(heads)(1, features.shape[-1], [32, 32], wm.num_bins, norm_first=True)
        for name, p in single.named_parameters():
            p.data.copy_(dict(heads.named_parameters())[name][k : k + 1])
        members.append(wm.decode_reward(single(features)[..., 0, :]))
    spread = torch.stack(members).std(0)  # [6, 4, 1]
    torch.testing.assert_close(traj0["next", "reward"] - traj1["next", "reward"], 0.7 * spread)
    discounts = 0.9 ** torch.arange(4.0)
    penalty = (0.7 * spread.squeeze(-1) * discounts).sum(1).mean()
    # loss = -J / H without return normalisation (H = 4)
    torch.testing.assert_close(out1["loss_actor"] - out0["loss_actor"], penalty.detach() / 4)
    torch.testing.assert_close(out1["reward_disagreement"], spread.mean())
    assert "_disagreement" not in traj1.keys()
    out1["loss_actor"].backward()
    assert all(p.grad is None for p in wm.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in penalised.parameters())


def test_disagreement_penalty_needs_several_heads_and_a_non_negative_weight():
    with pytest.raises(ValueError, match="reward_ensemble"):
        _ensemble_loss(0.5, heads=1)
    with pytest.raises(ValueError, match=">= 0"):
        _ensemble_loss(-0.5)
