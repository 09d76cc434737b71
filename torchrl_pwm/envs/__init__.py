"""Environments: imagination in a world model's latent space."""

from torchrl_pwm.envs.latent_env import LatentWorldModelEnv

__all__ = ["LatentWorldModelEnv"]
