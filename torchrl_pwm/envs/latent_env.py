"""Imagination: a TorchRL environment that steps in the world model's latent space."""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Composite, TensorSpec, Unbounded
from torchrl.envs import EnvBase
from torchrl.envs.model_based import ModelBasedEnvBase

from torchrl_pwm.modules import TDMPC2WorldModel

__all__ = ["LatentWorldModelEnv"]


class LatentWorldModelEnv(ModelBasedEnvBase):
    """A differentiable, fixed-horizon environment in the latent space of a world model.

    ``reset`` starts from given latents (``latent`` in the input) or encodes observations
    (``observation``); ``step`` returns the reward ``R(z_t, a_t)`` of the *current* latent and
    action, then moves to ``z_{t+1} = F(z_t, a_t)``. The episode never ends (``done`` is always
    ``False``), so ``rollout`` runs its ``max_steps`` with no host synchronisation; nothing
    detaches, so gradients of an imagined return reach the policy and the start latent
    (wrap the call in :func:`torchrl.objectives.hold_out_net` to keep them out of the model;
    note that it re-enables ``requires_grad`` on every parameter on exit).
    :class:`~torchrl_pwm.objectives.FirstOrderActorLoss` runs the same rollout as a tensor
    loop with the model's parameters detached (tested equal).

    The environment is not batch-locked: one instance rolls out a tensordict of any batch
    size. Multi-task models carry the ``task`` id through the trajectory.

    Args:
        world_model: a :class:`~torchrl_pwm.modules.TDMPC2WorldModel`.

    Keyword Args:
        action_spec: the action spec; default: copied from ``base_env``, else ``[-1, 1]``
            actions of the world model's action size.
        base_env: a real environment to copy the action and reward specs from.
        device: default: the world model's device (the model is not moved).
        batch_size: the env's own batch size (default ``[]``; rollouts follow the input).

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_pwm.modules import TDMPC2WorldModel, make_pwm_actor
        >>> wm = TDMPC2WorldModel(5, 1, size="1M")
        >>> env = LatentWorldModelEnv(wm)
        >>> actor = make_pwm_actor(wm.latent_dim, env.action_spec)
        >>> start = env.reset(TensorDict(observation=torch.randn(32, 5), batch_size=[32]))
        >>> traj = env.rollout(16, actor, auto_reset=False, tensordict=start)
        >>> traj.shape, traj["next", "reward"].shape
        (torch.Size([32, 16]), torch.Size([32, 16, 1]))
        >>> traj["next", "reward"].sum().backward()  # gradients reach the actor
        >>> actor.module[0].module.net[0].weight.grad is not None
        True
    """

    def __init__(
        self,
        world_model: TDMPC2WorldModel,
        *,
        action_spec: TensorSpec | None = None,
        base_env: EnvBase | None = None,
        device: torch.device | str | None = None,
        batch_size: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        if device is None:
            device = next(world_model.parameters()).device
        super().__init__(
            world_model, device=device, batch_size=batch_size, allow_done_after_reset=True
        )
        bs = self.batch_size
        latent_dim = world_model.latent_dim
        self.latent_key = world_model.latent_key
        self.observation_key = world_model.observation_key
        self.task_key = world_model.task_key if world_model.num_tasks is not None else None
        obs = {self.latent_key: Unbounded((*bs, latent_dim), device=self.device)}
        if self.task_key is not None:
            obs[self.task_key] = Unbounded((*bs,), dtype=torch.int64, device=self.device)
        self.observation_spec = Composite(obs, shape=bs)
        self.state_spec = self.observation_spec.clone()
        if action_spec is None and base_env is not None:
            action_spec = base_env.full_action_spec[base_env.action_key]
        if action_spec is None:
            from torchrl.data import Bounded

            action_spec = Bounded(-1.0, 1.0, (world_model.action_dim,))
        if action_spec.shape[-1] != world_model.action_dim:
            raise ValueError(
                f"The action spec has {action_spec.shape[-1]} dimensions but the world model "
                f"takes actions of size {world_model.action_dim}."
            )
        action_spec = action_spec.clone().to(self.device)
        if action_spec.shape[: len(bs)] != bs:
            action_spec = action_spec.expand(*bs, *action_spec.shape)
        self.action_spec = action_spec
        self.full_reward_spec = Composite(
            {world_model.reward_key: Unbounded((*bs, 1), device=self.device)}, shape=bs
        )

    # An imagined episode never ends: skip TorchRL's done checks (each would sync the host).
    def any_done(self, tensordict: TensorDictBase) -> bool:
        return False

    def maybe_reset(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict

    def reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        if tensordict is not None and any(n is not None for n in tensordict.names):
            # Start states often come from real rollouts, whose "time" dim name would clash
            # with the one ``rollout`` adds to the imagined trajectory.
            tensordict = tensordict.copy()
            tensordict.names = None
        out = super().reset(tensordict, **kwargs)
        # The encoded observation is stale after the first imagined step: drop it, rather than
        # carrying (and stacking) it along the trajectory.
        return out.exclude(self.observation_key)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        if tensordict is None:
            raise ValueError(
                "LatentWorldModelEnv.reset needs start states: pass a tensordict holding "
                f"{self.latent_key!r} latents or {self.observation_key!r} observations."
            )
        keys = [self.task_key] if self.task_key is not None else []
        if self.task_key is not None and self.task_key not in tensordict.keys(True):
            raise KeyError(f"A multi-task world model needs {self.task_key!r} in the start states.")
        out = tensordict.select(*keys)
        if self.latent_key in tensordict.keys(True):
            latent = tensordict.get(self.latent_key)
        elif self.observation_key in tensordict.keys(True):
            task = tensordict.get(self.task_key) if self.task_key is not None else None
            latent = self.world_model.encode(tensordict.get(self.observation_key), task)
        else:
            raise KeyError(
                f"Start states need {self.latent_key!r} or {self.observation_key!r}; got keys "
                f"{sorted(map(str, tensordict.keys(True, True)))}."
            )
        out.set(self.latent_key, latent)
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        wm = self.world_model
        out = wm(tensordict.select(*wm.in_keys))
        next_td = TensorDict(
            {
                self.latent_key: out.get(("next", self.latent_key)),
                wm.reward_key: out.get(wm.reward_key),
            },
            batch_size=tensordict.batch_size,
            device=tensordict.device,
        )
        if self.task_key is not None:
            next_td.set(self.task_key, tensordict.get(self.task_key))
        return next_td

    def _set_seed(self, seed: int | None) -> None:
        # The imagination is deterministic given its inputs: nothing to seed.
        return None
