"""Helpers shared by the losses."""

from __future__ import annotations

from torchrl.objectives import LossModule, ValueEstimators
from torchrl.objectives.utils import dispatch_value_estimator


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
