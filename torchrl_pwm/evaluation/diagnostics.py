"""Gradient diagnostics: mean, variance and expected signal-to-noise ratio of policy gradients.

PWM's argument is about *gradient quality*: back-propagating through a smooth world model gives
useful first-order gradients where back-propagating through the true (stiff, chaotic, contact-rich)
dynamics gives exploding variance. This module measures that on any objective, with two
estimators of the same gradient ``∇_θ J(θ)``, ``J(θ) = E[f_θ(ξ)]``:

- **first order** (pathwise, reparameterised): the per-sample gradient ``g_j = ∇_θ f_θ(ξ_j)``,
  back-propagated through the (model's or simulator's) dynamics;
- **zeroth order** (score function, REINFORCE): ``g_j = (f(ξ_j) - b_j) ∇_θ log p_θ(ξ_j)``,
  which needs no derivative of the dynamics, with an optional baseline ``b_j``.

Both are estimated from repeated samples by :func:`gradient_statistics`;
:func:`actor_loss_objective` turns a :class:`~torchrl_pwm.objectives.FirstOrderActorLoss` (with
its world model, critic and horizon) into such an objective, and
:func:`actor_gradient_statistics` does both steps.

**What is computed.** The objective is called on ``num_batches = K`` inputs from ``sampler``; each
call returns ``n`` per-sample values ``f_θ(ξ_{kj})`` whose per-sample gradients ``g_{kj} ∈ R^d``
(``d`` = number of parameter entries) are assumed i.i.d. (fresh inputs and fresh noise in every
sample). For each batch ``k``, with ``m_k`` the sample mean and ``v_k`` the unbiased sample
variance of ``g_{k1..kn}`` (per coordinate; with ``group_size = s > 1``, ``s`` times the
variance of the ``n / s`` gradients of group means, which has the same expectation),

.. math::
    A_k = \\sum_i m_{k,i}^2 - \\frac{1}{n}\\sum_i v_{k,i}, \\qquad B_k = \\sum_i v_{k,i},
    \\qquad
    \\widehat{\\mathrm{ESNR}} = \\frac{\\frac{1}{K}\\sum_k A_k}{\\frac{1}{K}\\sum_k B_k},

an estimate of ``ESNR = Σ_i E[g]_i² / Σ_i Var[g]_i`` for a *single-sample* gradient (PWM,
after Parmas et al., 2018). ``A_k`` is unbiased for ``‖E[g]‖²`` (``E[m²] = μ² + σ²/n``) and
``B_k`` for ``tr Var[g]``; their ratio of means is consistent, with a bias of relative order
``1 / (K × degrees of freedom of B)``. (Averaging the per-batch ratios ``A_k / B_k``, kept in
``batch_esnr``, would keep the ``O(1/n)`` bias of ``E[1/B_k]`` however many batches are
drawn.) ``debias=False`` uses the plug-in ``Σ m²`` (biased up by ``tr Var[g] / n``, i.e. the
ESNR by ``1/n``). The standard error is the jackknife over batches. PWM's outer expectation
is over conditions (states, training checkpoints): the batches here are i.i.d. draws of one
condition. For PWM's definition with the outer expectation over start states, make each batch
one condition — the sampler returns ``n`` copies of one start state (fresh noise per sample) —
and read :attr:`GradientStatistics.mean_batch_esnr`, the mean of the per-batch ratios
``A_k / B_k`` (each keeps its own small ratio bias, of relative order ``1 / (d (n/s - 1))``
for ``d`` comparable coordinates, which averaging does not remove). A batch-mean gradient of
``n`` samples has ``n`` times the ESNR of one sample. The per-parameter ``mean`` and
``variance`` are pooled over all ``K·n`` samples.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch.distributions import TransformedDistribution
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_pwm.objectives import FirstOrderActorLoss

__all__ = [
    "GradientStatistics",
    "actor_gradient_statistics",
    "actor_loss_objective",
    "gradient_statistics",
]

ESTIMATORS = ("first_order", "zeroth_order")


@dataclass
class GradientStatistics:
    """Statistics of a per-sample gradient estimator (see :mod:`torchrl_pwm.evaluation.diagnostics`).

    Attributes:
        estimator: ``"first_order"`` or ``"zeroth_order"``.
        num_samples: per-sample gradients per batch (``n``).
        num_batches: batches (``K``).
        mean: per-parameter mean gradient, pooled over the ``K·n`` samples (parameter shapes).
        variance: per-parameter unbiased variance of a single-sample gradient, pooled.
        batch_esnr: the ``K`` per-batch ratios ``A_k / B_k`` (noisier and more biased than
            ``esnr``; ``inf`` for a batch with nonzero, noiseless gradients, ``nan`` for one
            whose gradients are all exactly zero).
        esnr: the ESNR estimate ``mean(A) / mean(B)``.
        esnr_std_error: its jackknife standard error (``nan`` when ``K = 1``).

    Examples:
        >>> theta = torch.zeros(3, requires_grad=True)
        >>> stats = gradient_statistics(
        ...     lambda x: x @ theta, [theta], lambda: torch.randn(50, 3) + 1.0, num_batches=4
        ... )
        >>> stats.num_samples, stats.num_batches, stats.mean[0].shape
        (50, 4, torch.Size([3]))
        >>> sorted(stats.summary())
        ['esnr', 'esnr_std_error', 'mean_batch_esnr', 'mean_batch_esnr_std_error', 'mean_grad_norm', 'total_variance']
    """

    estimator: str
    num_samples: int
    num_batches: int
    mean: list[torch.Tensor]
    variance: list[torch.Tensor]
    batch_esnr: torch.Tensor
    esnr: torch.Tensor
    esnr_std_error: torch.Tensor

    @property
    def mean_batch_esnr(self) -> torch.Tensor:
        """Mean of the per-batch ratios: PWM's ESNR when each batch is one condition.

        Batches whose gradients were all exactly zero (ratio ``0/0``, ``nan``) are left out.
        """
        return self.batch_esnr.nanmean()

    @property
    def mean_batch_esnr_std_error(self) -> torch.Tensor:
        """Standard error of :attr:`mean_batch_esnr` (``nan`` with fewer than 2 batches)."""
        defined = self.batch_esnr[~self.batch_esnr.isnan()]
        if defined.numel() < 2:
            return torch.full_like(self.batch_esnr[0], math.nan)
        return defined.std() / math.sqrt(defined.numel())

    @property
    def mean_grad_norm(self) -> torch.Tensor:
        """``‖mean‖₂`` over all parameters (pooled mean gradient)."""
        return torch.stack([m.square().sum() for m in self.mean]).sum().sqrt()

    @property
    def total_variance(self) -> torch.Tensor:
        """``Σ_i Var[g]_i`` over all parameters (pooled)."""
        return torch.stack([v.sum() for v in self.variance]).sum()

    def summary(self) -> dict[str, float]:
        """The scalar statistics as Python floats (for tables and logs)."""
        return {
            "esnr": float(self.esnr),
            "esnr_std_error": float(self.esnr_std_error),
            "mean_batch_esnr": float(self.mean_batch_esnr),
            "mean_batch_esnr_std_error": float(self.mean_batch_esnr_std_error),
            "mean_grad_norm": float(self.mean_grad_norm),
            "total_variance": float(self.total_variance),
        }


def _group_gradients(
    values: torch.Tensor, parameters: Sequence[torch.Tensor], method: str, group_size: int
) -> list[torch.Tensor]:
    """Gradients of the mean of each group of ``group_size`` consecutive ``values``.

    Returns tensors ``[n // group_size, *p.shape]`` (per-sample gradients for groups of 1).
    """
    n = values.shape[0] // group_size
    weights = torch.eye(n, dtype=values.dtype, device=values.device)
    weights = weights.repeat_interleave(group_size, dim=1) / group_size
    if method in ("auto", "vmap"):
        eye = weights
        try:
            with warnings.catch_warnings():
                # vmap falls back to a slow path for some backward ops and says so: harmless.
                warnings.filterwarnings("ignore", message=".*performance drop.*")
                grads = torch.autograd.grad(
                    values,
                    parameters,
                    grad_outputs=eye,
                    is_grads_batched=True,
                    allow_unused=True,
                    retain_graph=method == "auto",  # kept for the loop fallback
                )
            return [
                torch.zeros(n, *p.shape, dtype=p.dtype, device=p.device) if g is None else g
                for g, p in zip(grads, parameters)
            ]
        except RuntimeError:
            if method == "vmap":
                raise
    rows = []
    for j in range(n):
        grads = torch.autograd.grad(
            values, parameters, weights[j], retain_graph=j < n - 1, allow_unused=True
        )
        rows.append([torch.zeros_like(p) if g is None else g for g, p in zip(grads, parameters)])
    return [torch.stack(col) for col in zip(*rows)]


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    if denominator > 0:
        return numerator / denominator
    # zero variance: a deterministic gradient has infinite signal-to-noise; an identically
    # zero one (e.g. a flat objective) has none to measure
    return torch.full_like(denominator, math.inf if numerator != 0 else math.nan)


def _baseline(values: torch.Tensor, baseline: str | float) -> torch.Tensor:
    n = values.shape[0]
    if baseline == "none":
        return torch.zeros_like(values)
    if baseline == "leave_one_out":
        return (values.sum() - values) / (n - 1)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(values, float(baseline))
    raise ValueError(f"baseline must be 'none', 'leave_one_out' or a number, got {baseline!r}.")


def _check_vector(name: str, x: Any, n: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"The objective must return a 1-d tensor of {name}, got {shape}.")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"The objective returned {n} values but {x.shape[0]} {name}.")
    if x.shape[0] < 2:
        raise ValueError(
            f"Gradient statistics need at least 2 samples per batch, got {x.shape[0]}."
        )
    if not bool(torch.isfinite(x.detach()).all()):
        raise FloatingPointError(f"The objective returned non-finite {name}.")
    return x


def gradient_statistics(
    objective: Callable[..., Any],
    parameters: Iterable[torch.Tensor],
    sampler: Callable[[], Any] | None = None,
    *,
    num_batches: int = 8,
    estimator: str = "first_order",
    baseline: str | float = "leave_one_out",
    debias: bool = True,
    group_size: int = 1,
    backward: str = "loop",
) -> GradientStatistics:
    """Estimate the mean, variance and ESNR of a policy-gradient estimator.

    See :mod:`torchrl_pwm.evaluation.diagnostics` for the exact definitions.

    Args:
        objective: called as ``objective(sampler())`` (or ``objective()`` without a sampler)
            once per batch. For ``estimator="first_order"`` it returns the ``n`` per-sample
            objectives ``f_θ(ξ_j)`` (a 1-d tensor, differentiable w.r.t. ``parameters``); for
            ``"zeroth_order"`` a pair ``(values, log_prob)``: the ``n`` objectives (detached
            or not: they are detached) and the log-probabilities ``log p_θ(ξ_j)`` of the
            sampled randomness (e.g. the summed log-probs of an episode's actions), up to terms
            that do not depend on ``θ``.
        parameters: the parameters ``θ`` (e.g. ``actor.parameters()``); all must require
            gradients.
        sampler: returns the input of one batch (e.g. start states); draw fresh samples each
            call, the estimates assume i.i.d. per-sample gradients.

    Keyword Args:
        num_batches: ``K``, independent batches (ESNR is averaged over them).
        estimator: ``"first_order"`` or ``"zeroth_order"``.
        baseline: zeroth order only: ``"leave_one_out"`` (default; ``b_j`` = mean of the
            other samples' objectives, which keeps the estimator unbiased), ``"none"``, or a
            constant.
        debias: subtract the ``1/n`` bias of ``Σ m²`` (see the module docstring).
        group_size: ``1`` (default) differentiates every sample separately, which costs
            ``n`` backward passes through the whole batch. With ``s > 1`` the gradients of
            the means of ``n / s`` groups of ``s`` consecutive samples are taken instead,
            and the single-sample variance is estimated as ``s`` times their variance
            (unbiased, with ``n / s - 1`` degrees of freedom): ``s`` times cheaper, a little
            noisier. ``n`` must be a multiple of ``s``, with at least two groups.
        backward: how the ``n / s`` backward passes are run: ``"loop"`` (default),
            ``"vmap"`` (one batched backward, ``torch.autograd.grad(...,
            is_grads_batched=True)``) or ``"auto"`` (vmap, else loop). Both give the same
            numbers; vmap is faster on small graphs, but ops without a batching rule for
            their backward (LayerNorm) fall back to a slow path that makes it slower.

    Returns:
        A :class:`GradientStatistics` on the parameters' device.

    Raises:
        ValueError: fewer than 2 samples (or groups) per batch, ``num_batches < 1``, a
            malformed objective output, or parameters that do not require gradients.
        FloatingPointError: a non-finite objective or gradient.

    Examples:
        Gradients ``g = x`` of ``f(θ) = x·θ`` with ``x ~ N(μ, I)``: ESNR = ``‖μ‖²/d``.

        >>> _ = torch.manual_seed(0)
        >>> theta = torch.zeros(4, requires_grad=True)
        >>> mu = torch.tensor([1.0, -1.0, 0.5, 0.5])  # ‖μ‖² / d = 2.5 / 4
        >>> stats = gradient_statistics(
        ...     lambda x: x @ theta, [theta], lambda: mu + torch.randn(100, 4), num_batches=20
        ... )
        >>> abs(stats.esnr.item() - 0.625) < 4 * stats.esnr_std_error.item()
        True

        The score-function estimate of the same gradient, for ``x ~ N(θ, I)`` and
        ``f(x) = μ·x`` (``∇J = μ``):

        >>> def sample_and_log_prob(n):
        ...     x = (theta + torch.randn(n, 4)).detach()
        ...     log_prob = torch.distributions.Normal(theta, 1.0).log_prob(x).sum(-1)
        ...     return x @ mu, log_prob
        >>> stats = gradient_statistics(
        ...     sample_and_log_prob, [theta], lambda: 2000, estimator="zeroth_order"
        ... )
        >>> torch.allclose(stats.mean[0], mu, atol=0.15)
        True
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    if backward not in ("auto", "vmap", "loop"):
        raise ValueError(f"backward must be 'auto', 'vmap' or 'loop', got {backward!r}.")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}.")
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}.")
    params = list(parameters)
    if not params:
        raise ValueError("gradient_statistics needs at least one parameter.")
    if not all(p.requires_grad for p in params):
        raise ValueError("All parameters must require gradients.")
    if estimator == "first_order":
        _baseline(torch.zeros(2), baseline)  # validate the argument even though unused

    count = 0
    means: list[torch.Tensor] = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    m2s: list[torch.Tensor] = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    numerators: list[torch.Tensor] = []
    denominators: list[torch.Tensor] = []
    n = None
    for k in range(num_batches):
        out = objective(sampler()) if sampler is not None else objective()
        if estimator == "first_order":
            values = _check_vector("objective values", out)
            if not values.requires_grad:
                raise ValueError(
                    "The first-order objective does not depend on the parameters "
                    "(no gradient): was it computed under no_grad or detached?"
                )
        else:
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise ValueError("A zeroth-order objective must return a pair (values, log_prob).")
            values = _check_vector("objective values", out[0]).detach()
            log_prob = _check_vector("log-probabilities", out[1], values.shape[0])
            if not log_prob.requires_grad:
                raise ValueError("The log-probabilities do not depend on the parameters.")
            weight = values - _baseline(values, baseline)
            values = weight * log_prob
        if n is not None and values.shape[0] != n:
            raise ValueError(
                f"Every batch must hold the same number of samples: {values.shape[0]} != {n}."
            )
        n = values.shape[0]
        if n % group_size or n // group_size < 2:
            raise ValueError(
                f"{n} samples per batch do not make at least 2 groups of group_size="
                f"{group_size} (n must be a multiple of it)."
            )
        groups = n // group_size
        grads = _group_gradients(values, params, backward, group_size)
        sq_mean = values.new_zeros((), dtype=torch.float64)
        var_sum = values.new_zeros((), dtype=torch.float64)
        for i, g in enumerate(grads):
            if not bool(torch.isfinite(g).all()):
                raise FloatingPointError(
                    f"Non-finite per-sample gradient for parameter {i} (shape "
                    f"{tuple(params[i].shape)}) in batch {k}."
                )
            g = g.double()
            m, v_group = g.mean(0), g.var(0, unbiased=True)
            sq_mean = sq_mean + m.square().sum()
            var_sum = var_sum + v_group.sum() * group_size  # single-sample variance
            # Chan et al.'s merge of (mean, M2) of group means keeps the pooled variance
            # accurate.
            delta = m - means[i]
            total = count + groups
            means[i] = means[i] + delta * groups / total
            m2s[i] = m2s[i] + v_group * (groups - 1) + delta.square() * count * groups / total
        count += groups
        numerators.append(sq_mean - var_sum / n if debias else sq_mean)
        denominators.append(var_sum)
    num, den = torch.stack(numerators), torch.stack(denominators)
    esnr = _ratio(num.sum(), den.sum())
    if num_batches > 1:
        # jackknife over batches: the ratio of means is not a mean, so no plain std / sqrt(K)
        loo = torch.stack([_ratio(num.sum() - a, den.sum() - b) for a, b in zip(num, den)])
        std_error = ((num_batches - 1) / num_batches * (loo - loo.mean()).square().sum()).sqrt()
    else:
        std_error = torch.full_like(esnr, math.nan)
    return GradientStatistics(
        estimator=estimator,
        num_samples=n,
        num_batches=num_batches,
        mean=[m.to(p.dtype) for m, p in zip(means, params)],
        variance=[(m2 * group_size / (count - 1)).to(p.dtype) for m2, p in zip(m2s, params)],
        batch_esnr=torch.stack([_ratio(a, b) for a, b in zip(num, den)]),
        esnr=esnr,
        esnr_std_error=std_error,
    )


class _ScoreFunctionPolicy(TensorDictModuleBase):
    """Samples actions without a pathwise gradient and writes their log-probability.

    For a transformed distribution (``TanhNormal``) the pre-transform sample ``u`` is drawn
    and ``log p_θ(u)`` recorded: the change-of-variables term depends on ``u`` only, not on
    ``θ``, so the score ``∇_θ log p_θ(a)`` equals ``∇_θ log p_θ(u)``, and ``atanh`` of a
    saturated action is never needed.
    """

    def __init__(self, actor: TensorDictModuleBase, action_key: NestedKey, log_prob_key: NestedKey):
        super().__init__()
        if not hasattr(actor, "get_dist"):
            raise TypeError(
                "The zeroth-order estimator needs a probabilistic actor with get_dist() "
                f"(e.g. torchrl's ProbabilisticActor), got {type(actor).__name__}."
            )
        self.actor = actor
        self.in_keys = list(actor.in_keys)
        self.action_key = action_key
        self.log_prob_key = log_prob_key
        self.out_keys = [self.action_key, log_prob_key]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        dist = self.actor.get_dist(tensordict)
        if isinstance(dist, TransformedDistribution):
            base, transforms = dist.base_dist, dist.transforms
        else:
            base, transforms = dist, []
        with torch.no_grad():
            sample = base.sample()
        log_prob = base.log_prob(sample)
        action = sample
        for t in transforms:
            action = t(action)
        tensordict.set(self.action_key, action.detach())
        tensordict.set(self.log_prob_key, log_prob)
        return tensordict


@contextlib.contextmanager
def _actor_swapped(loss: FirstOrderActorLoss, policy: TensorDictModuleBase) -> Iterator[None]:
    original = loss.actor_network
    loss.actor_network = policy
    try:
        yield
    finally:
        loss.actor_network = original


def actor_loss_objective(
    loss: FirstOrderActorLoss, *, estimator: str = "first_order"
) -> Callable[[TensorDictBase], Any]:
    """The per-start-state imagined return of a :class:`FirstOrderActorLoss`, as an objective.

    The returned callable takes a tensordict of start states (what the loss itself takes:
    ``observation`` or ``latent``, ``[n]``) and gives the ``n`` imagined returns
    ``J = Σ_{h<H} γʰ R(z_h, a_h) + γᴴ min V(z_H)`` of :meth:`FirstOrderActorLoss.imagine`
    (its world model, critic, horizon and value estimator), with actions sampled from the
    stochastic actor. The loss's return normalisation is not applied (it rescales every
    gradient alike and leaves the ESNR unchanged).

    - ``"first_order"``: ``J`` is differentiable w.r.t. the actor's parameters through
      the imagined rollout (reparameterised actions).
    - ``"zeroth_order"``: returns ``(J, Σ_h log π_θ(a_h | z_h))`` with actions that carry no
      gradient, for the score-function estimator. The actor must expose ``get_dist``.

    Args:
        loss: the actor loss.

    Keyword Args:
        estimator: ``"first_order"`` or ``"zeroth_order"``.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_pwm.envs import LatentWorldModelEnv
        >>> from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor
        >>> from torchrl_pwm.objectives import FirstOrderActorLoss
        >>> wm = TDMPC2WorldModel(5, 1, latent_dim=32, enc_dim=32, mlp_dim=32)
        >>> env = LatentWorldModelEnv(wm)
        >>> actor = make_pwm_actor(32, 1, hidden_sizes=(16,))
        >>> loss = FirstOrderActorLoss(actor, ValueEnsemble(32, hidden_sizes=(16,)), env,
        ...                            imagination_horizon=3)
        >>> start = TensorDict(observation=torch.randn(6, 5), batch_size=[6])
        >>> actor_loss_objective(loss)(start).shape
        torch.Size([6])
        >>> values, log_prob = actor_loss_objective(loss, estimator="zeroth_order")(start)
        >>> values.requires_grad, log_prob.shape
        (False, torch.Size([6]))
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    if not isinstance(loss, FirstOrderActorLoss):
        raise TypeError(f"Expected a FirstOrderActorLoss, got {type(loss).__name__}.")

    def first_order(start: TensorDictBase) -> torch.Tensor:
        with set_exploration_type(ExplorationType.RANDOM):
            returns, _ = loss.imagine(start)
        return returns.reshape(-1)

    def zeroth_order(start: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        key = "_score_log_prob"
        policy = _ScoreFunctionPolicy(loss.actor_network, "action", key)
        with _actor_swapped(loss, policy), set_exploration_type(ExplorationType.RANDOM):
            returns, traj = loss.imagine(start)
        log_prob = traj.get(key)
        log_prob = log_prob.reshape(*traj.shape[:2], -1).sum((1, 2))
        return returns.reshape(-1).detach(), log_prob

    return first_order if estimator == "first_order" else zeroth_order


def actor_gradient_statistics(
    loss: FirstOrderActorLoss,
    sampler: Callable[[], TensorDictBase],
    *,
    estimator: str = "first_order",
    num_batches: int = 8,
    baseline: str | float = "leave_one_out",
    debias: bool = True,
    group_size: int = 1,
    backward: str = "loop",
) -> GradientStatistics:
    """Gradient statistics of a :class:`FirstOrderActorLoss`'s actor, per start state.

    :func:`gradient_statistics` of :func:`actor_loss_objective` w.r.t. the actor's
    parameters (``loss.actor_network.parameters()``, the log-std included): one sample is
    one imagined rollout of ``H`` steps from one start state drawn by ``sampler``.

    Args:
        loss: the actor loss (its world model, critic and horizon define the objective).
        sampler: returns a tensordict of ``n >= 2`` start states per call (e.g.
            ``lambda: replay_buffer.sample()``).

    Keyword Args:
        estimator: ``"first_order"`` (pathwise, through the world model) or
            ``"zeroth_order"`` (score function).
        num_batches: independent batches.
        baseline: zeroth order only, see :func:`gradient_statistics`.
        debias: see :func:`gradient_statistics`.
        group_size: see :func:`gradient_statistics`.
        backward: see :func:`gradient_statistics`.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_pwm.envs import LatentWorldModelEnv
        >>> from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor
        >>> from torchrl_pwm.objectives import FirstOrderActorLoss
        >>> wm = TDMPC2WorldModel(5, 1, latent_dim=32, enc_dim=32, mlp_dim=32, num_bins=0)
        >>> env = LatentWorldModelEnv(wm)
        >>> _ = torch.nn.init.normal_(wm.get_reward_operator().module.net[-1].weight)
        >>> actor = make_pwm_actor(32, 1, hidden_sizes=(16,))
        >>> loss = FirstOrderActorLoss(actor, ValueEnsemble(32, hidden_sizes=(16,)), env,
        ...                            imagination_horizon=4)
        >>> sampler = lambda: TensorDict(observation=torch.randn(16, 5), batch_size=[16])
        >>> fo = actor_gradient_statistics(loss, sampler, num_batches=2)
        >>> zo = actor_gradient_statistics(loss, sampler, num_batches=2, estimator="zeroth_order")
        >>> len(fo.mean) == len(list(actor.parameters())), fo.esnr.isfinite().item()
        (True, True)
    """
    return gradient_statistics(
        actor_loss_objective(loss, estimator=estimator),
        list(loss.actor_network.parameters()),
        sampler,
        num_batches=num_batches,
        estimator=estimator,
        baseline=baseline,
        debias=debias,
        group_size=group_size,
        backward=backward,
    )
