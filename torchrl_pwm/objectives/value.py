"""PWM's critic loss: an ensemble regressed on TD(λ) targets of imagined trajectories."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule, ValueEstimators
from torchrl.objectives.utils import _reduce

from torchrl_pwm.objectives._utils import forward_estimator_keys, make_estimator

__all__ = ["TDLambdaValueLoss"]


class TDLambdaValueLoss(LossModule):
    """Regress every critic of an ensemble on the TD(λ) targets of a trajectory.

    Targets come from TorchRL's estimator (``make_value_estimator(ValueEstimators.TDLambda,
    gamma=0.99, lmbda=0.95)``, the defaults), i.e. the recursion

    .. math::
        G_t = r_t + \\gamma \\big((1-\\lambda) V(z_{t+1}) + \\lambda G_{t+1}\\big),
        \\qquad G_{T-1} = r_{T-1} + \\gamma V(z_T),

    where ``("next", "done")`` cuts the λ-chain (bootstrap from ``V(z_{t+1})``) and
    ``("next", "terminated")`` zeroes the bootstrap. ``V`` is the min over the ensemble of
    the online critic, or of a target critic with ``use_target_network=True`` (soft-update it
    with :class:`~torchrl.objectives.SoftUpdate`; PWM's default has none). Targets are
    computed without gradient. The loss is the mean over members of ``(V_k(z_t) - G_t)^2``.

    PWM fits the critic with several minibatch passes over one imagined set: call
    :meth:`compute_targets` once on the ``[B, H]`` trajectory, flatten it, and call the loss on
    minibatches — targets already present under ``tensor_keys.value_target`` are not
    recomputed. Called on a trajectory without targets, the loss computes them first (the
    input is not modified).

    Args:
        value_network: the critic ensemble, writing every member's value under
            ``tensor_keys.member_value`` and their min under ``tensor_keys.value``
            (:class:`~torchrl_pwm.modules.ValueEnsemble`).

    Keyword Args:
        use_target_network: keep a target copy of the critic for the targets.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_pwm.modules import ValueEnsemble
        >>> critic = ValueEnsemble(8)
        >>> loss = TDLambdaValueLoss(critic)
        >>> loss.make_value_estimator(ValueEstimators.TDLambda, gamma=0.99, lmbda=0.95)
        >>> B, H = 4, 5
        >>> traj = TensorDict(
        ...     latent=torch.randn(B, H, 8),
        ...     next=TensorDict(
        ...         latent=torch.randn(B, H, 8),
        ...         reward=torch.randn(B, H, 1),
        ...         done=torch.zeros(B, H, 1, dtype=torch.bool),
        ...         terminated=torch.zeros(B, H, 1, dtype=torch.bool),
        ...         batch_size=[B, H],
        ...     ),
        ...     batch_size=[B, H],
        ... )
        >>> traj = loss.compute_targets(traj)
        >>> flat = traj.reshape(-1)
        >>> out = loss(flat[:10])
        >>> out["loss_value"].shape, out["target_value"].shape
        (torch.Size([]), torch.Size([]))
    """

    @dataclass
    class _AcceptedKeys:
        """Keys read and written by the loss.

        Attributes:
            value: min over the ensemble. Defaults to ``"state_value"``.
            member_value: every member's value, ``[*B, N, 1]``. Defaults to
                ``"state_value_members"``.
            value_target: the TD(λ) target. Defaults to ``"value_target"``.
            reward: reward, read under ``"next"``. Defaults to ``"reward"``.
            done: done flag, read under ``"next"``. Defaults to ``"done"``.
            terminated: termination flag, read under ``"next"``. Defaults to
                ``"terminated"``.
        """

        value: NestedKey = "state_value"
        member_value: NestedKey = "state_value_members"
        value_target: NestedKey = "value_target"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    _estimator_keys = (
        "value",
        "value_target",
        "reward",
        "done",
        "terminated",
    )  # the keys set on the value estimator
    default_value_estimator = ValueEstimators.TDLambda
    SUPPORTED_VALUE_ESTIMATORS = (
        ValueEstimators.TDLambda,
        ValueEstimators.TD0,
        ValueEstimators.TD1,
    )
    out_keys = ["loss_value", "target_value", "pred_value", "td_error"]

    value_network: TensorDictModule
    value_network_params: TensorDictParams
    target_value_network_params: TensorDictParams

    def __init__(
        self,
        value_network: TensorDictModule,
        *,
        use_target_network: bool = False,
        reduction: str | None = None,
    ) -> None:
        super().__init__()
        self.reduction = reduction or "mean"
        if self.reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.use_target_network = use_target_network
        self.convert_to_functional(
            value_network, "value_network", create_target_params=use_target_network
        )
        # Build the default estimator now, so that state_dict() has the same keys before and
        # after the first call (a fresh loss can load a used one's checkpoint).
        self.make_value_estimator(self.default_value_estimator)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        forward_estimator_keys(self)

    def make_value_estimator(self, value_type: ValueEstimators = None, **hyperparams) -> None:
        """Set the target estimator: ``TDLambda`` (default: gamma 0.99, lmbda 0.95), TD0, TD1."""
        make_estimator(self, value_type, **hyperparams)

    def _values(self, tensordict: TensorDictBase, params: TensorDictParams) -> TensorDictBase:
        td = tensordict.select(*self.value_network.in_keys)
        with params.to_module(self.value_network, preserve_module_state=False):
            return self.value_network(td)

    @torch.no_grad()
    def compute_targets(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the TD(λ) targets of the trajectory ``tensordict`` (``[..., T]``, time last
        unless a dim is named ``"time"``) under ``tensor_keys.value_target``; returns it."""
        params = (
            self.target_value_network_params
            if self.use_target_network
            else self.value_network_params
        )
        next_value = self._values(tensordict.get("next"), params).get(self.tensor_keys.value)
        target = self.value_estimator.value_estimate(tensordict, next_value=next_value)
        tensordict.set(self.tensor_keys.value_target, target)
        return tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self.tensor_keys.value_target not in tensordict.keys(True):
            tensordict = self.compute_targets(tensordict.copy())
        target = tensordict.get(self.tensor_keys.value_target).detach()
        pred = self._values(tensordict, self.value_network_params).get(
            self.tensor_keys.member_value
        )  # [*B, N, 1]
        error = pred - target.unsqueeze(-2)
        per_sample = error.square().mean((-2, -1))
        return TensorDict(
            {
                "loss_value": _reduce(per_sample, self.reduction),
                "target_value": target.mean(),
                "pred_value": pred.detach().mean(),
                "td_error": error.detach().abs().mean(),
            },
            batch_size=[],
        )
