"""TD-MPC2's world-model loss: multi-step latent consistency and reward prediction."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

from torchrl_pwm.modules import TDMPC2WorldModel
from torchrl_pwm.modules.functional import soft_cross_entropy

__all__ = ["TDMPC2ModelLoss"]


class TDMPC2ModelLoss(LossModule):
    """Train a :class:`~torchrl_pwm.modules.TDMPC2WorldModel` on slices of ``H`` transitions.

    From `TD-MPC2 <https://arxiv.org/abs/2310.16828>`_, with PWM's long horizon. For a slice
    of ``H`` consecutive transitions ``(o_t, a_t, r_t, o_{t+1})`` (``H + 1`` observations),

    .. math::
        z_0 = E(o_0), \\quad z_{t+1} = F(z_t, a_t),

        L_{cons} = \\frac{1}{H} \\sum_{t=0}^{H-1} \\rho^t
            \\operatorname{mean}_d \\big(z_{t+1} - \\operatorname{sg}(E(o_{t+1}))\\big)^2,
        \\qquad
        L_{rew} = \\frac{1}{H} \\sum_{t=0}^{H-1} \\rho^t \\, CE\\big(R(z_t, a_t),
            \\operatorname{twohot}(r_t)\\big),

    (``(R - r)^2`` for a scalar reward head); ``loss_consistency = 20 L_cons`` and
    ``loss_reward = 0.1 L_rew`` by default. ``ρ`` is ``temporal_discount``: PWM trains with
    ``H = 16, ρ = 0.99`` (TD-MPC2's defaults are ``H = 3, ρ = 0.5``). The targets use the
    online encoder without gradient. Input: a ``[B, H]`` tensordict with ``observation``,
    ``action``, ``("next", "observation")``, ``("next", "reward")`` (and ``task`` for a
    multi-task model) — what a ``SliceSampler`` of collector data gives, reshaped.

    Args:
        world_model: the world model to train.

    Keyword Args:
        consistency_coef: weight of the latent consistency term (20).
        reward_coef: weight of the reward term (0.1).
        temporal_discount: ``ρ`` (0.99, PWM).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over slices.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_pwm.modules import TDMPC2WorldModel
        >>> wm = TDMPC2WorldModel(5, 1, size="1M")
        >>> loss = TDMPC2ModelLoss(wm)
        >>> B, H = 8, 4
        >>> data = TensorDict(
        ...     observation=torch.randn(B, H, 5),
        ...     action=torch.rand(B, H, 1) * 2 - 1,
        ...     next=TensorDict(
        ...         observation=torch.randn(B, H, 5), reward=torch.rand(B, H, 1), batch_size=[B, H]
        ...     ),
        ...     batch_size=[B, H],
        ... )
        >>> out = loss(data)
        >>> sorted(k for k in out.keys() if k.startswith("loss"))
        ['loss_consistency', 'loss_reward']
        >>> sum(out[k] for k in ("loss_consistency", "loss_reward")).backward()
    """

    @dataclass
    class _AcceptedKeys:
        """Keys read by the loss.

        Attributes:
            observation: observations ``o_t``; ``o_{t+1}`` is read under ``"next"``.
                Defaults to ``"observation"``.
            action: actions. Defaults to ``"action"``.
            reward: rewards, read under ``"next"``. Defaults to ``"reward"``.
            task: task ids (multi-task models). Defaults to ``"task"``.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        reward: NestedKey = "reward"
        task: NestedKey = "task"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    out_keys = ["loss_consistency", "loss_reward", "consistency", "reward_loss"]

    def __init__(
        self,
        world_model: TDMPC2WorldModel,
        *,
        consistency_coef: float = 20.0,
        reward_coef: float = 0.1,
        temporal_discount: float = 0.99,
        reduction: str | None = None,
    ) -> None:
        super().__init__()
        self.reduction = reduction or "mean"
        if self.reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.world_model = world_model
        self.consistency_coef = consistency_coef
        self.reward_coef = reward_coef
        self.temporal_discount = temporal_discount

    def _check(self, tensordict: TensorDictBase) -> None:
        if tensordict.batch_dims != 2:
            raise ValueError(
                "TDMPC2ModelLoss expects slices shaped [batch, horizon]; got batch_size "
                f"{tuple(tensordict.batch_size)}. Reshape SliceSampler output with "
                "data.reshape(num_slices, slice_len)."
            )

    def _tensors(self, tensordict: TensorDictBase) -> dict[str, torch.Tensor | None]:
        """The slices' tensors: observations ``[B, H + 1, D]``, actions ``[B, H, A]``, rewards
        ``[B, H, 1]`` and task ids ``[B]`` (a slice never crosses tasks)."""
        self._check(tensordict)
        keys = self.tensor_keys
        obs = tensordict.get(keys.observation)
        next_obs = tensordict.get(("next", keys.observation))
        reward = tensordict.get(("next", keys.reward))
        if reward.shape[-1:] != (1,) or reward.ndim == 2:
            reward = reward.unsqueeze(-1)
        task = None
        if self.world_model.num_tasks is not None:
            task = tensordict.get(keys.task)
            if task.shape == (*tensordict.shape, 1):  # stored as [B, H, 1]
                task = task.squeeze(-1)
            task = task[:, 0]
        return {
            "observation": torch.cat([obs[:, :1], next_obs], 1),
            "action": tensordict.get(keys.action),
            "reward": reward,
            "task": task,
        }

    def latent_rollout(
        self, tensordict: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Unroll the dynamics from ``E(o_0)`` with the data's actions.

        Returns the predicted latents ``[B, H + 1, L]`` (``z_0 = E(o_0)``, then ``F``), the
        stop-gradient targets ``E(o_{1..H})`` ``[B, H, L]`` and the slices' task ids.
        """
        data = self._tensors(tensordict)
        latents, targets = self._rollout(data["observation"], data["action"], data["task"])
        return latents, targets, data["task"]

    def _rollout(
        self, observation: torch.Tensor, action: torch.Tensor, task: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        wm = self.world_model
        next_obs = observation[:, 1:]
        with torch.no_grad():
            targets = wm.encode(
                next_obs, task.unsqueeze(1).expand(next_obs.shape[:2]) if task is not None else None
            )
        z = wm.encode(observation[:, 0], task)
        latents = [z]
        for t in range(action.shape[1]):
            z = wm.next(z, action[:, t], task)
            latents.append(z)
        return torch.stack(latents, 1), targets

    def loss_from_tensors(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        task: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The losses of :meth:`forward` from plain tensors (observations ``[B, H + 1, D]``,
        actions ``[B, H, A]``, rewards ``[B, H, 1]``, task ids ``[B]``): the path the stepper
        compiles."""
        wm = self.world_model
        latents, targets = self._rollout(observation, action, task)
        horizon = targets.shape[1]
        weights = self.temporal_discount ** torch.arange(
            horizon, device=latents.device, dtype=latents.dtype
        )
        consistency = (latents[:, 1:] - targets).square().mean(-1)  # [B, H]
        task_seq = task.unsqueeze(1).expand(action.shape[:2]) if task is not None else None
        logits = wm.reward_logits(latents[:, :-1], action, task_seq)
        if wm.num_bins > 1:
            reward_loss = soft_cross_entropy(logits, reward, wm.vmin, wm.vmax).squeeze(-1)
        else:
            reward_loss = (logits - reward).square().squeeze(-1)
        consistency = (consistency * weights).sum(1) / horizon
        reward_loss = (reward_loss * weights).sum(1) / horizon
        return {
            "loss_consistency": self.consistency_coef * self._reduce_loss(consistency),
            "loss_reward": self.reward_coef * self._reduce_loss(reward_loss),
            "consistency": consistency.detach().mean(),
            "reward_loss": reward_loss.detach().mean(),
        }

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return TensorDict(self.loss_from_tensors(**self._tensors(tensordict)), batch_size=[])
