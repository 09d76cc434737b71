"""Environments: real tasks by name, and imagination in a world model's latent space."""

from torchrl_pwm.envs.latent_env import LatentWorldModelEnv
from torchrl_pwm.envs.make import UnknownTaskError, available_tasks, make_env
from torchrl_pwm.envs.task_sets import TASK_SETS, TaskInfo, task_set

__all__ = [
    "TASK_SETS",
    "LatentWorldModelEnv",
    "TaskInfo",
    "UnknownTaskError",
    "available_tasks",
    "make_env",
    "task_set",
]
