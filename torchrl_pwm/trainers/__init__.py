"""Training: PWM's optimisation step and Trainer hooks for TorchRL's ``Trainer``."""

from torchrl_pwm.trainers.hooks import (
    CheckpointHook,
    EnvStepLogger,
    PolicyEvaluator,
    evaluate_policy,
)
from torchrl_pwm.trainers.stepper import NonFiniteLossError, PWMOptimConfig, PWMOptimizationStepper

__all__ = [
    "CheckpointHook",
    "EnvStepLogger",
    "NonFiniteLossError",
    "PWMOptimConfig",
    "PWMOptimizationStepper",
    "PolicyEvaluator",
    "evaluate_policy",
]
