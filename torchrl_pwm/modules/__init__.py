"""Networks: TD-MPC2's world model, PWM's actor and critic ensemble, and their blocks."""

from torchrl_pwm.modules.actor import StateIndependentScale, make_pwm_actor
from torchrl_pwm.modules.functional import (
    soft_cross_entropy,
    symexp,
    symlog,
    td_lambda_return,
    two_hot,
    two_hot_inv,
)
from torchrl_pwm.modules.layers import (
    EnsembleMLP,
    Mish,
    SimNorm,
    compile_networks,
    normed_mlp,
    trunc_normal_init_,
)
from torchrl_pwm.modules.policy import PWMPolicy, make_pwm_policy
from torchrl_pwm.modules.tdmpc2_checkpoint import TDMPC2CheckpointReport, to_tdmpc2_state_dict
from torchrl_pwm.modules.value import ValueEnsemble
from torchrl_pwm.modules.world_model import WORLD_MODEL_PRESETS, TDMPC2WorldModel, WorldModelPreset

__all__ = [
    "WORLD_MODEL_PRESETS",
    "EnsembleMLP",
    "Mish",
    "PWMPolicy",
    "SimNorm",
    "StateIndependentScale",
    "TDMPC2CheckpointReport",
    "TDMPC2WorldModel",
    "ValueEnsemble",
    "WorldModelPreset",
    "compile_networks",
    "make_pwm_actor",
    "make_pwm_policy",
    "normed_mlp",
    "soft_cross_entropy",
    "symexp",
    "symlog",
    "td_lambda_return",
    "to_tdmpc2_state_dict",
    "trunc_normal_init_",
    "two_hot",
    "two_hot_inv",
]
