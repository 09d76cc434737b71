"""Acting: observation → action in one tensor call (encoder and actor), for collectors and
deployment."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs.utils import ExplorationType, exploration_type

from torchrl_pwm.modules.actor import StateIndependentScale
from torchrl_pwm.modules.world_model import TDMPC2WorldModel

__all__ = ["PWMPolicy", "make_pwm_policy"]


class PWMPolicy(nn.Module):
    """``a = tanh(μ(E(o)))`` (deterministic) or ``tanh(μ + σ·ε)`` (exploration), as plain tensor
    code.

    The same computation as ``TensorDictSequential(world_model.encoder, actor)`` without the
    TensorDict plumbing of each call: at batch 1 that plumbing costs more than the networks
    (``benchmarks/update_path.py`` measures both). The networks are shared, not copied: the
    policy always acts with the current weights. Under ``ExplorationType.RANDOM`` (what
    TorchRL's collectors set) it samples; under ``DETERMINISTIC`` / ``MODE`` / ``MEAN`` it
    returns ``tanh(μ)``.

    Args:
        world_model: gives the encoder.
        actor: a :func:`~torchrl_pwm.modules.make_pwm_actor` actor with ``[-1, 1]`` bounds.

    Examples:
        >>> from torchrl_pwm.modules import TDMPC2WorldModel, make_pwm_actor
        >>> wm = TDMPC2WorldModel(5, 2, size="1M")
        >>> policy = PWMPolicy(wm, make_pwm_actor(wm.latent_dim, 2))
        >>> policy(torch.randn(1, 5)).shape
        torch.Size([1, 2])
    """

    def __init__(self, world_model: TDMPC2WorldModel, actor: TensorDictModuleBase) -> None:
        super().__init__()
        head = _location_scale_head(actor)
        # shared with the world model and the actor (same parameter objects, no copy)
        self.encoder = world_model.encoder.module
        self.head = head

    def forward(self, observation: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        loc, scale = self.head(self.encoder(observation, task))
        if exploration_type() == ExplorationType.RANDOM:
            loc = loc + scale * torch.randn_like(loc)
        return torch.tanh(loc)


def make_pwm_policy(
    world_model: TDMPC2WorldModel,
    actor: TensorDictModuleBase,
    *,
    compile: bool = False,
    action_key: NestedKey = "action",
) -> TensorDictModule:
    """A TorchRL policy (``observation`` [+ ``task``] → ``action``) over :class:`PWMPolicy`.

    For collectors, evaluation and deployment. With ``compile=True`` the tensor function is
    compiled (:func:`torch.compile`; each batch size compiles once).

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_pwm.modules import TDMPC2WorldModel, make_pwm_actor
        >>> wm = TDMPC2WorldModel(5, 2, size="1M")
        >>> policy = make_pwm_policy(wm, make_pwm_actor(wm.latent_dim, 2))
        >>> policy(TensorDict(observation=torch.randn(3, 5), batch_size=[3]))["action"].shape
        torch.Size([3, 2])
    """
    module = PWMPolicy(world_model, actor)
    if compile:
        module.forward = torch.compile(module.forward, dynamic=False)
    in_keys = [world_model.observation_key]
    if world_model.num_tasks is not None:
        in_keys.append(world_model.task_key)
    return TensorDictModule(module, in_keys=in_keys, out_keys=[action_key])


def _location_scale_head(actor: TensorDictModuleBase) -> StateIndependentScale:
    try:
        head, dist = actor.module[0].module, actor.module[1]
        bounds = dist.distribution_kwargs.get("low"), dist.distribution_kwargs.get("high")
    except (AttributeError, IndexError, TypeError) as err:
        raise TypeError(
            "PWMPolicy needs an actor built by make_pwm_actor; use "
            "TensorDictSequential(world_model.encoder, actor) for other actors."
        ) from err
    if not isinstance(head, StateIndependentScale) or bounds != (-1.0, 1.0):
        raise TypeError(
            "PWMPolicy needs a make_pwm_actor actor with [-1, 1] action bounds; use "
            "TensorDictSequential(world_model.encoder, actor) for other actors."
        )
    return head
