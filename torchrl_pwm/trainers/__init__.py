"""Training: PWM's optimisation step, Trainer hooks and run bookkeeping for TorchRL's ``Trainer``."""

from torchrl_pwm.trainers.hooks import (
    CheckpointHook,
    EnvStepLogger,
    PolicyEvaluator,
    evaluate_policy,
)
from torchrl_pwm.trainers.runs import (
    RunHooks,
    TimedOptimizationStepper,
    attach_run,
    begin_run,
    check_fresh_run,
    finish_run,
    make_logger,
    register_run_hooks,
)
from torchrl_pwm.trainers.stepper import NonFiniteLossError, PWMOptimConfig, PWMOptimizationStepper

__all__ = [
    "CheckpointHook",
    "EnvStepLogger",
    "NonFiniteLossError",
    "PWMOptimConfig",
    "PWMOptimizationStepper",
    "PolicyEvaluator",
    "RunHooks",
    "TimedOptimizationStepper",
    "attach_run",
    "begin_run",
    "check_fresh_run",
    "evaluate_policy",
    "finish_run",
    "make_logger",
    "register_run_hooks",
]
