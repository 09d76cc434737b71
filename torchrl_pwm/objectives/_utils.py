"""Helpers shared by the losses."""

from __future__ import annotations

from torchrl.objectives import LossModule, ValueEstimators
from torchrl.objectives.utils import dispatch_value_estimator


def make_estimator(
    loss: LossModule, value_type: ValueEstimators | None, tensor_keys: dict, **hyperparams
) -> None:
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
        tensor_keys=tensor_keys,
        value_network=None,
        **hp,
    )
