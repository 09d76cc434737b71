"""Losses: TD-MPC2's world-model loss and PWM's first-order actor and TD(λ) critic losses."""

from torchrl_pwm.objectives.actor import FirstOrderActorLoss
from torchrl_pwm.objectives.pwm import PWMLoss
from torchrl_pwm.objectives.value import TDLambdaValueLoss
from torchrl_pwm.objectives.world_model import TDMPC2ModelLoss, tdmpc2_discount

__all__ = [
    "FirstOrderActorLoss",
    "PWMLoss",
    "TDLambdaValueLoss",
    "TDMPC2ModelLoss",
    "tdmpc2_discount",
]
