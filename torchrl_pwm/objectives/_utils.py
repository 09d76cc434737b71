"""Helpers shared by the losses."""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule, ValueEstimators
from torchrl.objectives.utils import dispatch_value_estimator
from torchrl.objectives.value import TD0Estimator, TD1Estimator


def estimator_gamma_lambda(estimator) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """``(γ, λ)`` of a TorchRL TD estimator: TD(0) is λ = 0, TD(1) is λ = 1.

    TD(λ)'s λ stays the estimator's buffer (a tensor on the loss's device): reading it as a
    Python float would synchronise the host with a CUDA device in every update."""
    if isinstance(estimator, TD0Estimator):
        return estimator.gamma, 0.0
    if isinstance(estimator, TD1Estimator):
        return estimator.gamma, 1.0
    return estimator.gamma, estimator.lmbda


def detached_parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    """``{name: detached tensor}`` of ``module``'s parameters and buffers, for
    :func:`torch.func.functional_call`: gradients flow through the module to its inputs but
    not into its parameters, and no ``requires_grad`` flag is changed (``hold_out_net``
    re-enables every flag on exit, unfreezing partly frozen models)."""
    out = {name: p.detach() for name, p in module.named_parameters()}
    out.update(dict(module.named_buffers()))
    return out


def call_held_out(
    network: TensorDictModuleBase,
    inputs: dict[NestedKey, torch.Tensor],
    out_key: NestedKey,
    params: TensorDictBase | None = None,
) -> torch.Tensor:
    """``network``'s ``out_key`` on ``inputs``, with its parameters (or ``params``, shaped like
    ``TensorDict.from_module(network)``) detached: gradients reach the inputs only.

    A :class:`~tensordict.nn.TensorDictModule` over a tensor module is called directly
    (:func:`torch.func.functional_call`, compile-friendly); any other TensorDict module
    through its TensorDict interface with the parameters swapped in.
    """
    if (
        isinstance(network, TensorDictModule)
        and isinstance(network.module, nn.Module)
        and not isinstance(network.module, TensorDictModuleBase)
    ):
        if params is None:
            named = detached_parameters(network.module)
        else:
            flat = params.detach().flatten_keys(".")
            named = {
                k.removeprefix("module."): v for k, v in flat.items() if k.startswith("module.")
            }
        out = torch.func.functional_call(
            network.module, named, tuple(inputs[k] for k in network.in_keys)
        )
        if not isinstance(out, tuple):
            out = (out,)
        return out[network.out_keys.index(out_key)]
    first = next(iter(inputs.values()))
    td = TensorDict(inputs, batch_size=first.shape[:-1])
    params = TensorDict.from_module(network) if params is None else params
    with params.detach().to_module(network):
        return network(td).get(out_key)


def estimator_keys(loss: LossModule) -> dict:
    """The loss's keys that its value estimator reads, named in ``loss._estimator_keys``."""
    return {name: getattr(loss.tensor_keys, name) for name in loss._estimator_keys}


def forward_estimator_keys(loss: LossModule) -> None:
    """Body of our losses' ``_forward_value_estimator_keys`` (run by ``set_keys``)."""
    if loss._value_estimator is not None:
        loss._value_estimator.set_keys(**estimator_keys(loss))


def make_estimator(loss: LossModule, value_type: ValueEstimators | None, **hyperparams) -> None:
    """Body of our losses' ``make_value_estimator``: TorchRL's dispatch, with no value network
    (the losses compute next values themselves) and a fix for ``lmbda=0``."""
    value_type, hp = loss._prepare_value_estimator_kwargs(value_type, **hyperparams)
    if value_type is None:
        return
    if value_type == ValueEstimators.TDLambda and float(hp.get("lmbda", 0.95)) == 0.0:
        # torchrl 0.14's vectorised TD(λ) fails for λ = 0 (empty geometric filter); the loop
        # implementation computes the same targets.
        hp.setdefault("vectorized", False)
    dispatch_value_estimator(
        loss,
        value_type,
        supported=loss.SUPPORTED_VALUE_ESTIMATORS,
        tensor_keys=estimator_keys(loss),
        value_network=None,
        **hp,
    )
