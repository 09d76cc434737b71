"""Pure tensor functions of TD-MPC2's value representation (no state, no modules).

Rewards (and values) are regressed as a distribution over ``num_bins`` evenly spaced bins of
the symlog space ``[vmin, vmax]``: a scalar ``x`` becomes the *two-hot* vector that puts the
weights ``1 - δ`` and ``δ`` on the two bins around ``symlog(x)``. Predictions are decoded with
the softmax expectation over the bins, optionally mapped back with ``symexp``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchrl.modules import functional as _trl

__all__ = [
    "soft_cross_entropy",
    "symexp",
    "symlog",
    "td_lambda_return",
    "two_hot",
    "two_hot_inv",
]


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``: TorchRL's :func:`torchrl.modules.functional.symlog`.

    TorchRL's keeps the true slope 1 at ``x = 0`` (``sign(x)`` alone would give a zero
    gradient there), so it is used as is.

    Examples:
        >>> symlog(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([-0.6931,  0.0000,  0.6931])
    """
    return _trl.symlog(x)


def symexp(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * (exp(|x|) - 1)``, the inverse of :func:`symlog` (TorchRL's).

    Examples:
        >>> symexp(symlog(torch.tensor([-3.0, 0.5])))
        tensor([-3.0000,  0.5000])
    """
    return _trl.symexp(x)


def td_lambda_return(
    reward: torch.Tensor,
    next_value: torch.Tensor,
    *,
    gamma: float | torch.Tensor,
    lmbda: float | torch.Tensor,
    done: torch.Tensor | None = None,
    terminated: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""TD(λ) returns of trajectories laid out ``[..., T, 1]`` (time second to last).

    The recursion, from ``G_{T-1} = r_{T-1} + γ V(s_T)`` backwards:

    .. math::
        G_t = r_t + \gamma \big((1-\lambda) V(s_{t+1}) + \lambda G_{t+1}\big),

    where ``done_t`` cuts the λ-chain (``G_{t+1}`` replaced by ``V(s_{t+1})``) and
    ``terminated_t`` zeroes ``V(s_{t+1})``. ``λ = 1`` is TD(1) (the discounted return with a
    bootstrap at the end), ``λ = 0`` is TD(0). Same targets as TorchRL's
    :class:`~torchrl.objectives.value.TDLambdaEstimator` (tested), but a fixed-length loop of
    elementwise ops: no ``.item()``, no data-dependent shapes, so it compiles with
    ``fullgraph=True`` and never waits on the device.

    Args:
        reward: ``[..., T, 1]`` rewards ``r_t``.
        next_value: ``[..., T, 1]`` values ``V(s_{t+1})``.

    Keyword Args:
        gamma: discount.
        lmbda: λ.
        done: ``[..., T, 1]`` booleans (default: none; the last step is always a bootstrap).
        terminated: ``[..., T, 1]`` booleans (default: none).

    Returns:
        ``[..., T, 1]`` returns ``G_t``.

    Examples:
        >>> r = torch.ones(1, 3, 1)
        >>> v = torch.zeros(1, 3, 1)
        >>> td_lambda_return(r, v, gamma=0.5, lmbda=1.0).squeeze()  # 1 + .5 + .25, ...
        tensor([1.7500, 1.5000, 1.0000])
    """
    if reward.shape != next_value.shape:
        raise ValueError(
            f"reward {tuple(reward.shape)} and next_value {tuple(next_value.shape)} differ."
        )
    horizon = reward.shape[-2]
    if terminated is not None:
        next_value = torch.where(terminated, torch.zeros_like(next_value), next_value)
    returns = [None] * horizon
    ret = next_value[..., -1, :]
    for t in range(horizon - 1, -1, -1):
        value = next_value[..., t, :]
        if done is not None:
            ret = torch.where(done[..., t, :], value, ret)
        ret = reward[..., t, :] + gamma * ((1 - lmbda) * value + lmbda * ret)
        returns[t] = ret
    return torch.stack(returns, -2)


def two_hot(
    x: torch.Tensor, num_bins: int = 101, vmin: float = -10.0, vmax: float = 10.0
) -> torch.Tensor:
    """Two-hot encoding of ``symlog(x)`` over ``linspace(vmin, vmax, num_bins)``.

    Args:
        x: scalars of shape ``[..., 1]`` (or ``[...]``; a trailing singleton is added).
        num_bins: number of bins.
        vmin, vmax: support in symlog space; values outside are clamped.

    Returns:
        a ``[..., num_bins]`` tensor of non-negative weights summing to one.

    Examples:
        >>> t = two_hot(torch.tensor([[0.0]]), num_bins=5, vmin=-2.0, vmax=2.0)
        >>> t
        tensor([[0., 0., 1., 0., 0.]])
    """
    if x.shape[-1:] != (1,):
        x = x.unsqueeze(-1)
    bin_size = (vmax - vmin) / (num_bins - 1)
    s = symlog(x).clamp(vmin, vmax)
    pos = (s - vmin) / bin_size
    # NaN inputs give NaN weights (so a loss built on them is NaN, not an index error).
    low = pos.nan_to_num(0.0).floor().clamp(0, num_bins - 1)
    delta = pos - low
    low = low.long()
    # At s == vmax, delta == 0 and the upper bin index would overflow: wrap it (TD-MPC2 does too).
    high = (low + 1) % num_bins
    out = torch.zeros(*x.shape[:-1], num_bins, device=x.device, dtype=x.dtype)
    out.scatter_(-1, low, 1 - delta)
    out.scatter_add_(-1, high, delta)
    return out


def two_hot_inv(
    logits: torch.Tensor,
    vmin: float = -10.0,
    vmax: float = 10.0,
    *,
    apply_symexp: bool = True,
    bins: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode two-hot logits: softmax expectation over the bins, then ``symexp``.

    With ``apply_symexp=False`` the expectation stays in symlog space, as the original PWM code
    decodes imagined rewards (``almost_two_hot_inv``).

    Args:
        logits: ``[..., num_bins]`` unnormalised log-probabilities.
        vmin, vmax: support in symlog space.

    Keyword Args:
        apply_symexp: map the symlog-space expectation back to the raw scale.
        bins: the support ``linspace(vmin, vmax, num_bins)`` if already built (e.g. a module's
            buffer), so that it is not rebuilt at every call.

    Returns:
        a ``[..., 1]`` tensor.

    Examples:
        >>> x = torch.tensor([[0.3], [-2.0]])
        >>> logits = two_hot(x).clamp_min(1e-12).log()
        >>> torch.allclose(two_hot_inv(logits), x, atol=1e-5)
        True
    """
    if bins is None:
        bins = torch.linspace(
            vmin, vmax, logits.shape[-1], device=logits.device, dtype=logits.dtype
        )
    value = (logits.softmax(-1) * bins).sum(-1, keepdim=True)
    return symexp(value) if apply_symexp else value


def soft_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    vmin: float = -10.0,
    vmax: float = 10.0,
) -> torch.Tensor:
    """Cross-entropy between ``logits`` and the two-hot encoding of the scalar ``target``.

    Summed over the bins (TD-MPC2's ``soft_ce``), one value per sample.

    Args:
        logits: ``[..., num_bins]``.
        target: scalars ``[..., 1]``.
        vmin, vmax: support in symlog space.

    Returns:
        a ``[..., 1]`` tensor.

    Examples:
        >>> logits = torch.zeros(2, 101)
        >>> soft_cross_entropy(logits, torch.zeros(2, 1))  # uniform prediction: log(101)
        tensor([[4.6151],
                [4.6151]])
    """
    target_probs = two_hot(target, logits.shape[-1], vmin, vmax)
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(-1, keepdim=True)
