"""torchrl_pwm."""
