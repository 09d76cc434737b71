"""torchrl_pwm: PWM (Policy learning with large World Models) as TorchRL components."""

__version__ = "0.1.0.dev0"
