"""Environments: real tasks by name, TD-MPC2's task sets, and imagination in a world model's
latent space."""

from torchrl_pwm.envs.latent_env import LatentWorldModelEnv
from torchrl_pwm.envs.make import (
    OBSERVATION_LAYOUT_VERSION,
    UnknownTaskError,
    available_tasks,
    make_env,
)
from torchrl_pwm.envs.multitask import MultiTaskPadding
from torchrl_pwm.envs.task_sets import TASK_SETS, TaskInfo, task_set

__all__ = [
    "OBSERVATION_LAYOUT_VERSION",
    "TASK_SETS",
    "LatentWorldModelEnv",
    "MultiTaskPadding",
    "TaskInfo",
    "UnknownTaskError",
    "available_tasks",
    "make_env",
    "task_set",
]
