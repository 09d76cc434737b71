"""PWM's critic loss: an ensemble regressed on TD(λ) targets of imagined trajectories."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule, ValueEstimators

from torchrl_pwm.modules import td_lambda_return
from torchrl_pwm.objectives._utils import (
    call_held_out,
    estimator_gamma_lambda,
    forward_estimator_keys,
    make_estimator,
)

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

    def gamma_lambda(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """``(γ, λ)`` of the value estimator (TD(0): λ = 0, TD(1): λ = 1). TD(λ)'s λ is the
        estimator's buffer, a tensor on the loss's device: comparing it on the host
        (``lmbda == 1.0``) synchronises with a CUDA device."""
        return estimator_gamma_lambda(self.value_estimator)

    @torch.no_grad()
    def compute_targets(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the TD(λ) targets of the trajectory ``tensordict`` (``[..., T]``, time last
        unless a dim is named ``"time"``) under ``tensor_keys.value_target``; returns it.

        Computed with :func:`~torchrl_pwm.modules.td_lambda_return` (the estimator's ``γ``
        and ``λ``; same targets as TorchRL's estimator, tested), without host
        synchronisation.
        """
        names = tensordict.names if any(n is not None for n in tensordict.names) else None
        if names is not None and "time" in names and names.index("time") != len(names) - 1:
            dim = names.index("time")
            moved = self.compute_targets(tensordict.copy().transpose(dim, -1))
            return tensordict.set(
                self.tensor_keys.value_target,
                moved.get(self.tensor_keys.value_target).transpose(dim, tensordict.batch_dims - 1),
            )
        keys = self.tensor_keys
        next_td = tensordict.get("next")
        reward = next_td.get(keys.reward)
        if reward.shape[-1:] != (1,) or reward.ndim == tensordict.batch_dims:
            reward = reward.unsqueeze(-1)
        flags = {}
        for name in ("done", "terminated"):
            flag = next_td.get(getattr(keys, name), None)
            if flag is not None and flag.ndim == tensordict.batch_dims:
                flag = flag.unsqueeze(-1)
            flags[name] = flag
        target = self.targets_from_tensors(
            next_td.get(self.value_network.in_keys[0]), reward, **flags
        )
        tensordict.set(keys.value_target, target)
        return tensordict

    @torch.no_grad()
    def targets_from_tensors(
        self,
        next_latent: torch.Tensor,
        reward: torch.Tensor,
        done: torch.Tensor | None = None,
        terminated: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """TD(λ) targets ``[..., T, 1]`` from next latents ``[..., T, L]`` and rewards
        ``[..., T, 1]`` (flags likewise): the tensor path of :meth:`compute_targets`, which the
        stepper compiles."""
        params = self.target_value_network_params if self.use_target_network else None
        in_key = self.value_network.in_keys[0]
        next_value = call_held_out(
            self.value_network, {in_key: next_latent}, self.tensor_keys.value, params=params
        )
        gamma, lmbda = self.gamma_lambda()
        return td_lambda_return(
            reward,
            next_value.to(reward.dtype),
            gamma=gamma,
            lmbda=lmbda,
            done=done,
            terminated=terminated,
        )

    def member_values(self, latent: torch.Tensor) -> torch.Tensor:
        """Every member's value ``[*B, N, 1]`` with the online parameters (differentiable)."""
        in_key = self.value_network.in_keys[0]
        td = TensorDict({in_key: latent}, batch_size=latent.shape[:-1])
        return self.value_network(td).get(self.tensor_keys.member_value)

    def loss_from_tensors(
        self, latent: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss_value, members' predictions)`` for latents ``[*B, L]`` and targets
        ``[*B, 1]``: the tensor path of :meth:`forward` (the stepper's critic minibatches)."""
        if (
            isinstance(self.value_network, TensorDictModule)
            and isinstance(self.value_network.module, nn.Module)
            and not isinstance(self.value_network.module, TensorDictModuleBase)
        ):
            out = self.value_network.module(latent)
            out = out if isinstance(out, tuple) else (out,)
            pred = out[self.value_network.out_keys.index(self.tensor_keys.member_value)]
        else:
            pred = self.member_values(latent)
        per_sample = (pred - target.detach().unsqueeze(-2)).square().mean((-2, -1))
        return self._reduce_loss(per_sample), pred

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self.tensor_keys.value_target not in tensordict.keys(True):
            tensordict = self.compute_targets(tensordict.copy())
        target = tensordict.get(self.tensor_keys.value_target).detach()
        latent = tensordict.get(self.value_network.in_keys[0])
        loss, pred = self.loss_from_tensors(latent, target)
        error = pred.detach() - target.unsqueeze(-2)
        return TensorDict(
            {
                "loss_value": loss,
                "target_value": target.mean(),
                "pred_value": pred.detach().mean(),
                "td_error": error.abs().mean(),
            },
            batch_size=[],
        )
