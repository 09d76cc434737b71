"""Training: PWM's optimisation step, Trainer hooks and run bookkeeping for TorchRL's ``Trainer``."""

from torchrl_pwm.trainers.hooks import (
    CheckpointHook,
    EnvStepLogger,
    EnvStepProgressBar,
    PolicyEvaluator,
    StopOnSignal,
    episode_success,
    evaluate_policy,
)
from torchrl_pwm.trainers.runs import (
    RunHooks,
    TimedOptimizationStepper,
    check_fresh_run,
    make_logger,
    register_run_hooks,
    timing_split,
    write_timings,
)
from torchrl_pwm.trainers.stepper import NonFiniteLossError, PWMOptimConfig, PWMOptimizationStepper
from torchrl_pwm.trainers.world_model_stepper import WorldModelOptimizationStepper

__all__ = [
    "CheckpointHook",
    "EnvStepLogger",
    "EnvStepProgressBar",
    "NonFiniteLossError",
    "PWMOptimConfig",
    "PWMOptimizationStepper",
    "PolicyEvaluator",
    "RunHooks",
    "StopOnSignal",
    "TimedOptimizationStepper",
    "WorldModelOptimizationStepper",
    "check_fresh_run",
    "episode_success",
    "evaluate_policy",
    "make_logger",
    "register_run_hooks",
    "timing_split",
    "write_timings",
]
