"""Gradient diagnostics against analytic values, and on a real FirstOrderActorLoss."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import ValueEstimators

from tests.conftest import DEVICES
from tests.objectives._systems import LinearSystem
from torchrl_pwm.evaluation.diagnostics import (
    actor_gradient_statistics,
    actor_loss_objective,
    gradient_statistics,
)
from torchrl_pwm.modules import make_pwm_actor
from torchrl_pwm.objectives import FirstOrderActorLoss

# Gradients g = x with x ~ N(mu, diag(sigma^2)), split over two parameters of shapes [3], [2, 2].
MU = torch.tensor([1.0, -0.5, 0.0, 0.3, 0.3, -0.2, 0.0], dtype=torch.float64)
SIGMA = torch.tensor([1.0, 2.0, 1.5, 0.5, 1.0, 1.0, 2.5], dtype=torch.float64)
ANALYTIC_ESNR = float(MU.square().sum() / SIGMA.square().sum())  # 1.51 / 14.75 ≈ 0.102


def _gaussian_problem(n: int, device: str = "cpu"):
    a = torch.zeros(3, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.zeros(2, 2, dtype=torch.float64, device=device, requires_grad=True)
    g = torch.Generator(device=device).manual_seed(0)
    mu, sigma = MU.to(device), SIGMA.to(device)

    def sampler():
        return mu + sigma * torch.randn(n, 7, dtype=torch.float64, device=device, generator=g)

    def objective(x):
        return x[:, :3] @ a + (x[:, 3:] * b.reshape(-1)).sum(-1)

    return objective, [a, b], sampler


@pytest.mark.parametrize("device", DEVICES)
def test_esnr_of_gaussian_gradients_matches_analytic_value(device):
    n, k = 20, 400
    objective, params, sampler = _gaussian_problem(n, device)
    stats = gradient_statistics(objective, params, sampler, num_batches=k)
    assert stats.num_samples == n and stats.num_batches == k
    assert stats.esnr.device.type == torch.device(device).type
    se = stats.esnr_std_error.item()
    # the ratio of means has a bias of O(1 / (K dof)) of the value, far below 4 SE
    assert abs(stats.esnr.item() - ANALYTIC_ESNR) < 4 * se
    # the correction matters: the plug-in ratio is biased up by 1/n = 0.05, about 20 SE
    assert 1 / n > 10 * se
    plug_in = gradient_statistics(objective, params, sampler, num_batches=k, debias=False)
    assert abs(plug_in.esnr.item() - (ANALYTIC_ESNR + 1 / n)) < 4 * plug_in.esnr_std_error.item()
    # pooled per-parameter mean and variance over n k = 8000 samples
    mean = torch.cat([m.reshape(-1) for m in stats.mean]).cpu()
    var = torch.cat([v.reshape(-1) for v in stats.variance]).cpu()
    total = n * k
    assert ((mean - MU).abs() < 4 * SIGMA / math.sqrt(total)).all()
    # Var of the unbiased variance of a Gaussian: 2 sigma^4 / (N - 1)
    assert ((var - SIGMA**2).abs() < 4 * SIGMA**2 * math.sqrt(2 / (total - 1))).all()
    assert stats.mean[1].shape == (2, 2)
    torch.testing.assert_close(stats.total_variance.cpu(), var.sum())


def test_grouped_gradients_estimate_the_same_esnr():
    """Groups of 5: variance from the 4 group means per batch, same expectation."""
    objective, params, sampler = _gaussian_problem(20)
    stats = gradient_statistics(objective, params, sampler, num_batches=800, group_size=5)
    assert abs(stats.esnr.item() - ANALYTIC_ESNR) < 4 * stats.esnr_std_error.item()
    var = torch.cat([v.reshape(-1) for v in stats.variance])
    # pooled over 3200 group means: relative sd of the variance estimate sqrt(2/3199) = 2.5%
    assert ((var / SIGMA**2 - 1).abs() < 0.1).all()
    with pytest.raises(ValueError, match="multiple"):
        gradient_statistics(objective, params, sampler, group_size=3)
    with pytest.raises(ValueError, match="at least 2 groups"):
        gradient_statistics(objective, params, sampler, group_size=20)


def test_mean_batch_esnr_averages_over_conditions():
    """Batches alternate between noise scales 1 and 3 (two conditions): the mean of the
    per-batch ratios is E_k[|mu|^2 / tr Var_k], while ``esnr`` is E[|mu|^2] / E[tr Var]."""
    theta = torch.zeros(7, dtype=torch.float64, requires_grad=True)
    n, k = 50, 400
    scales = iter([1.0, 3.0] * (k // 2))
    g = torch.Generator().manual_seed(0)

    def sampler():
        return MU + next(scales) * torch.randn(n, 7, dtype=torch.float64, generator=g)

    stats = gradient_statistics(lambda x: x @ theta, [theta], sampler, num_batches=k)
    signal = MU.square().sum().item()
    per_condition = (signal / 7 + signal / (7 * 9)) / 2
    pooled = signal / (7 * (1 + 9) / 2)
    assert abs(stats.esnr.item() - pooled) < 4 * stats.esnr_std_error.item()
    # each per-batch ratio keeps an E[1/B] bias of ~2 / (7 * 49) = 0.6%
    tol = 4 * stats.mean_batch_esnr_std_error.item() + 0.01 * per_condition
    assert abs(stats.mean_batch_esnr.item() - per_condition) < tol
    assert per_condition - pooled > 10 * stats.mean_batch_esnr_std_error.item()


def _policy_problem(estimator: str):
    """a = theta + s eps, f(a) = -|a - c|^2 + w . sin(a):  dJ/dtheta = -2(theta - c) + w cos(theta) e^{-s^2/2}."""
    theta = torch.tensor([0.3, -0.7, 1.2], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([1.0, 0.5, -0.5], dtype=torch.float64)
    w = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    s = 0.5
    analytic = (-2 * (theta - c) + w * theta.cos() * math.exp(-(s**2) / 2)).detach()
    g = torch.Generator().manual_seed(1)

    def f(a):
        return -(a - c).square().sum(-1) + (w * a.sin()).sum(-1)

    def first_order(n):
        return f(theta + s * torch.randn(n, 3, dtype=torch.float64, generator=g))

    def zeroth_order(n):
        a = (theta + s * torch.randn(n, 3, dtype=torch.float64, generator=g)).detach()
        log_prob = torch.distributions.Normal(theta, s).log_prob(a).sum(-1)
        return f(a), log_prob

    objective = first_order if estimator == "first_order" else zeroth_order
    return objective, theta, analytic


def _z_scores(stats, reference):
    se = (stats.variance[0] / (stats.num_samples * stats.num_batches)).sqrt()
    return (stats.mean[0].detach() - reference) / se


@pytest.mark.parametrize("baseline", ["leave_one_out", "none"])
def test_first_and_zeroth_order_agree_in_expectation(baseline):
    fo_obj, theta, analytic = _policy_problem("first_order")
    zo_obj, theta_zo, _ = _policy_problem("zeroth_order")
    fo = gradient_statistics(fo_obj, [theta], lambda: 200, num_batches=20)
    zo = gradient_statistics(
        zo_obj, [theta_zo], lambda: 200, num_batches=20, estimator="zeroth_order", baseline=baseline
    )
    assert _z_scores(fo, analytic).abs().max() < 4
    assert _z_scores(zo, analytic).abs().max() < 4
    # the two estimates agree, and a sign error in either would not
    diff = fo.mean[0] - zo.mean[0]
    se = ((fo.variance[0] + zo.variance[0]) / (fo.num_samples * fo.num_batches)).sqrt()
    assert (diff.abs() / se).max() < 4
    assert ((fo.mean[0] + zo.mean[0]).abs() / se).max() > 10
    # the pathwise estimator is the lower-variance one on this smooth objective
    assert fo.esnr > zo.esnr
    if baseline == "leave_one_out":
        assert zo.esnr > 0


def test_baseline_reduces_variance():
    zo_obj, theta, _ = _policy_problem("zeroth_order")
    kwargs = dict(num_batches=10, estimator="zeroth_order")
    none = gradient_statistics(zo_obj, [theta], lambda: 200, baseline="none", **kwargs)
    loo = gradient_statistics(zo_obj, [theta], lambda: 200, baseline="leave_one_out", **kwargs)
    assert loo.total_variance < 0.5 * none.total_variance


def test_clear_errors_for_bad_input():
    theta = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="at least 2 samples"):
        gradient_statistics(lambda: torch.randn(1, 2) @ theta, [theta])
    with pytest.raises(FloatingPointError, match="non-finite"):
        gradient_statistics(lambda: torch.full((4, 2), math.nan) @ theta, [theta])
    with pytest.raises(FloatingPointError, match="Non-finite per-sample gradient"):
        gradient_statistics(lambda: theta.expand(4, 2).sqrt().sum(-1), [theta])
    with pytest.raises(ValueError, match="does not depend"):
        gradient_statistics(lambda: torch.randn(4, 2) @ theta.detach(), [theta])
    with pytest.raises(ValueError, match="1-d tensor"):
        gradient_statistics(lambda: torch.randn(4, 3, 2) @ theta, [theta])
    with pytest.raises(ValueError, match="pair"):
        gradient_statistics(lambda: torch.randn(4, 2) @ theta, [theta], estimator="zeroth_order")
    with pytest.raises(ValueError, match="estimator"):
        gradient_statistics(lambda: torch.randn(4, 2) @ theta, [theta], estimator="second_order")
    with pytest.raises(ValueError, match="baseline"):
        gradient_statistics(lambda: torch.randn(4, 2) @ theta, [theta], baseline="median")
    with pytest.raises(ValueError, match="require gradients"):
        gradient_statistics(lambda: torch.randn(4, 2) @ theta, [torch.zeros(2)])


def test_deterministic_gradient_has_infinite_esnr():
    theta = torch.zeros(2, requires_grad=True)
    stats = gradient_statistics(lambda: torch.ones(4, 2) @ theta, [theta], num_batches=2)
    assert math.isinf(stats.esnr.item())


def test_flat_batches_are_left_out_of_the_mean_batch_esnr():
    """A condition where the objective is flat (all gradients exactly zero) has no ESNR."""
    theta = torch.zeros(2, requires_grad=True)
    scales = iter([0.0, 1.0, 1.0, 0.0])
    g = torch.Generator().manual_seed(0)

    def objective():
        x = torch.tensor([1.0, 0.0]) + torch.randn(400, 2, generator=g)
        return next(scales) * (x @ theta)

    stats = gradient_statistics(objective, [theta], num_batches=4)
    assert stats.batch_esnr[[0, 3]].isnan().all() and stats.batch_esnr[[1, 2]].isfinite().all()
    torch.testing.assert_close(stats.mean_batch_esnr, stats.batch_esnr[[1, 2]].mean())
    # ESNR of N([1, 0], I) gradients is 1 / 2
    assert abs(stats.mean_batch_esnr.item() - 0.5) < 0.15


# -- on FirstOrderActorLoss ------------------------------------------------------------------


def _linear_loss(system, horizon=5, gamma=0.9):
    loss = FirstOrderActorLoss(
        system.actor,
        system.critic,
        system.env,
        imagination_horizon=horizon,
        normalize_returns=False,
        detach_policy_input=False,
    )
    loss.make_value_estimator(ValueEstimators.TD1, gamma=torch.tensor(gamma, dtype=torch.float64))
    return loss.double()


def test_actor_first_order_mean_is_gradient_of_closed_form_return():
    """On the linear-quadratic system (near-deterministic actor) the mean per-start-state
    gradient is the gradient of the closed-form mean return."""
    system = LinearSystem()
    loss = _linear_loss(system)
    start = TensorDict(observation=torch.randn(12, 4, dtype=torch.float64), batch_size=[12])
    stats = actor_gradient_statistics(loss, lambda: start, num_batches=1)
    params = list(system.actor.parameters())
    mean_params = list(system.policy_mean.parameters())
    expected = torch.autograd.grad(
        system.objective(start["observation"], 5, 0.9).mean(), mean_params
    )
    for p, e in zip(mean_params, expected):
        i = next(i for i, q in enumerate(params) if q is p)
        torch.testing.assert_close(stats.mean[i], e, rtol=1e-8, atol=1e-10)
    # the per-state variance is the spread of the closed-form per-state gradients
    per_state = torch.stack(
        [
            torch.autograd.grad(
                system.objective(start["observation"][j : j + 1], 5, 0.9).sum(), mean_params[0]
            )[0]
            for j in range(12)
        ]
    )
    i0 = next(i for i, q in enumerate(params) if q is mean_params[0])
    torch.testing.assert_close(stats.variance[i0], per_state.var(0), rtol=1e-7, atol=1e-10)


def test_actor_zeroth_order_agrees_with_first_order():
    """Through a real FirstOrderActorLoss rollout with a stochastic actor (std e^-1), the
    score-function and pathwise estimates of the same gradient agree within their errors."""
    torch.manual_seed(0)
    system = LinearSystem()
    system.actor = make_pwm_actor(4, 2, hidden_sizes=(4,), init_log_std=-1.0).double()
    loss = _linear_loss(system, horizon=3)
    g = torch.Generator().manual_seed(2)

    def sampler():
        return TensorDict(
            observation=torch.randn(256, 4, dtype=torch.float64, generator=g), batch_size=[256]
        )

    fo = actor_gradient_statistics(loss, sampler, num_batches=8, group_size=16)
    zo = actor_gradient_statistics(
        loss, sampler, num_batches=24, estimator="zeroth_order", group_size=16
    )
    diff, flipped, n_coords = 0.0, 0.0, 0
    for mf, vf, mz, vz in zip(fo.mean, fo.variance, zo.mean, zo.variance):
        se2 = vf / (fo.num_samples * fo.num_batches) + vz / (zo.num_samples * zo.num_batches)
        diff += ((mf - mz).square() / se2).sum().item()
        flipped += ((mf + mz).square() / se2).sum().item()
        n_coords += mf.numel()
    # Sums of squared z-scores ~ chi^2 with n_coords dof under each hypothesis. Both checks
    # are tests at the same, tiny false-alarm rate (5 sigma), not thresholds fitted to seeds:
    # "the two estimate the same gradient" is not rejected, and "they are sign-flipped
    # copies" is.
    bound = _chi2_upper_quantile(n_coords, z=5.0)
    assert diff < bound, (diff, bound)
    assert flipped > bound, (flipped, bound)
    assert fo.esnr > zo.esnr


def _chi2_upper_quantile(dof: int, z: float) -> float:
    """Wilson-Hilferty approximation of the chi^2 quantile at ``z`` standard deviations."""
    c = 2.0 / (9.0 * dof)
    return dof * (1.0 - c + z * c**0.5) ** 3


def test_actor_vmap_and_loop_per_sample_gradients_agree():
    system = LinearSystem()
    system.actor = make_pwm_actor(4, 2, hidden_sizes=(8,), init_log_std=-1.0).double()
    loss = _linear_loss(system)
    start = TensorDict(observation=torch.randn(6, 4, dtype=torch.float64), batch_size=[6])
    for estimator in ("first_order", "zeroth_order"):
        out = {}
        for method in ("vmap", "loop"):
            torch.manual_seed(3)
            out[method] = actor_gradient_statistics(
                loss, lambda: start, num_batches=1, backward=method, estimator=estimator
            )
        for a, b in zip(out["vmap"].variance, out["loop"].variance):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(out["vmap"].esnr, out["loop"].esnr)


def test_actor_loss_objective_rejects_other_losses():
    with pytest.raises(TypeError, match="FirstOrderActorLoss"):
        actor_loss_objective(torch.nn.Linear(2, 2))
