"""Environments: real tasks by name, and imagination in a world model's latent space."""

from torchrl_pwm.envs.latent_env import LatentWorldModelEnv
from torchrl_pwm.envs.make import UnknownTaskError, available_tasks, make_env

__all__ = ["LatentWorldModelEnv", "UnknownTaskError", "available_tasks", "make_env"]
