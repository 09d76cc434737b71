"""Shared fixtures: devices, real DMC environments, small world models."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest
import torch

# Default CPU device plus CUDA when present: tests parametrised over DEVICES run on both.
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def make_dmc_env(domain: str = "cartpole", task: str = "swingup", seed: int = 0):
    """A real dm_control env with flattened float32 ``observation``."""
    from torchrl.envs import CatTensors, DMControlEnv, DoubleToFloat, TransformedEnv

    base = DMControlEnv(domain, task)
    obs_keys = list(base.observation_spec.keys())
    env = TransformedEnv(base, CatTensors(in_keys=obs_keys, out_key="observation"))
    env.append_transform(DoubleToFloat())
    env.set_seed(seed)
    return env


@pytest.fixture(scope="session")
def cartpole_data():
    """Real cartpole-swingup observations from a random rollout: (env, rollout)."""
    torch.manual_seed(0)
    env = make_dmc_env()
    rollout = env.rollout(64)
    return env, rollout


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["torch"] = torch
    from torch import nn

    doctest_namespace["nn"] = nn
