"""One task of a TD-MPC2 task set, seen through the set's padded interface."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import Transform

from torchrl_pwm.envs.task_sets import max_action_dim, max_obs_dim, task_id, task_set

__all__ = ["MultiTaskPadding"]


class MultiTaskPadding(Transform):
    """Pads a task's observation and action to its task set's widths and writes its task id,
    as TD-MPC2's multi-task wrapper does (``envs/wrappers/multitask.py``).

    - ``observation``: zero-padded at the end to the set's largest observation (24 for
      ``mt30``, 39 for ``mt80``), as in TD-MPC2's datasets.
    - ``action``: the env accepts the set's largest action (6); the entries past the task's
      own action size are dropped before stepping (TD-MPC2 slices them off the same way), so
      whatever a policy writes there has no effect. The action spec's padded entries are
      bounded in ``[-1, 1]`` like the others.
    - ``task``: the task's id in the set (int64, one per env), at reset and after every step,
      for the world model's task embedding.

    Args:
        task_set_name: ``"mt30"`` or ``"mt80"``.
        task: the task's TD-MPC2 name; its observation and action sizes must be those the
            task set lists (a mismatch raises ``ValueError`` when the specs are built).

    Keyword Args:
        observation_key: the flat observation (``"observation"``).
        action_key: the action (``"action"``).
        task_key: where the task id goes (``"task"``).

    Examples:
        >>> from torchrl_pwm.envs import make_env
        >>> env = make_env("cartpole-swingup", task_set="mt30")  # appends this transform
        >>> td = env.rollout(2)
        >>> td["observation"].shape, td["action"].shape, td["task"].tolist()
        (torch.Size([2, 24]), torch.Size([2, 6]), [10, 10])
        >>> bool((td["observation"][:, 5:] == 0).all())
        True
    """

    def __init__(
        self,
        task_set_name: str,
        task: str,
        *,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        task_key: NestedKey = "task",
    ) -> None:
        super().__init__(
            in_keys=[observation_key],
            out_keys=[observation_key],
            in_keys_inv=[action_key],
            out_keys_inv=[action_key],
        )
        self.task_set_name = task_set_name
        self.task = task
        self.task_id = task_id(task_set_name, task)
        self.num_tasks = len(task_set(task_set_name))
        info = task_set(task_set_name)[self.task_id]
        self.obs_dim, self.action_dim = info.obs_dim, info.action_dim
        self.padded_obs_dim = max_obs_dim(task_set_name)
        self.padded_action_dim = max_action_dim(task_set_name)
        self.observation_key, self.action_key, self.task_key = (
            observation_key,
            action_key,
            task_key,
        )

    def _apply_transform(self, observation: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(observation, (0, self.padded_obs_dim - self.obs_dim))

    def _inv_apply_transform(self, action: torch.Tensor) -> torch.Tensor:
        return action[..., : self.action_dim]

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        next_tensordict = super()._call(next_tensordict)
        task = torch.full(
            next_tensordict.batch_size,
            self.task_id,
            dtype=torch.int64,
            device=next_tensordict.device,
        )
        return next_tensordict.set(self.task_key, task)

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return self._call(tensordict_reset)

    def _check_width(self, what: str, spec, expected: int) -> None:
        if spec.shape[-1] != expected:
            raise ValueError(
                f"{self.task!r} has a {what} of size {spec.shape[-1]} here, but the task set "
                f"{self.task_set_name!r} lists {expected}."
            )

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        spec = observation_spec[self.observation_key]
        self._check_width("observation", spec, self.obs_dim)
        observation_spec[self.observation_key] = Unbounded(
            shape=(*spec.shape[:-1], self.padded_obs_dim), dtype=spec.dtype, device=spec.device
        )
        observation_spec[self.task_key] = Categorical(
            self.num_tasks,
            shape=observation_spec.shape,
            dtype=torch.int64,
            device=spec.device,
        )
        return observation_spec

    def transform_action_spec(self, action_spec: Composite) -> Composite:
        spec = action_spec[self.action_key]
        self._check_width("action", spec, self.action_dim)
        pad = self.padded_action_dim - self.action_dim
        ones = torch.ones(*spec.shape[:-1], pad, dtype=spec.dtype, device=spec.device)
        action_spec[self.action_key] = Bounded(
            low=torch.cat([spec.space.low, -ones], -1),
            high=torch.cat([spec.space.high, ones], -1),
            shape=(*spec.shape[:-1], self.padded_action_dim),
            dtype=spec.dtype,
            device=spec.device,
        )
        return action_spec

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(task_set={self.task_set_name!r}, task={self.task!r}, "
            f"task_id={self.task_id})"
        )
