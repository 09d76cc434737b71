"""TD-MPC2's world-model loss: multi-step latent consistency and reward prediction, and
optionally TD-MPC2's value term (Q ensemble and policy prior)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule

from torchrl_pwm.modules import TDMPC2WorldModel
from torchrl_pwm.modules.functional import soft_cross_entropy, two_hot_inv
from torchrl_pwm.objectives._utils import detached_parameters

__all__ = ["TDMPC2ModelLoss", "tdmpc2_discount"]


# torch >= 2.8; on an older torch the rollout stays unrolled (the same numbers)
_compile_region = getattr(torch.compiler, "nested_compile_region", lambda fn: fn)


@_compile_region
def _next_latent(
    world_model: TDMPC2WorldModel,
    latent: torch.Tensor,
    action: torch.Tensor,
    task: torch.Tensor | None,
) -> torch.Tensor:
    """``F(z, e, a)``, one step of the training rollout. A nested compile region: under
    :func:`torch.compile` the step is traced and compiled once and reused for each of the
    ``H`` steps, instead of unrolled ``H`` times (``benchmarks/update_path.py``: on the online
    update, 24 s less compilation of the world-model update and the same speed after; a
    no-op in eager mode). Single-task only: a task embedding with ``max_norm`` (TD-MPC2's)
    renormalises its rows in place, which a region does not support in training (torch
    2.13)."""
    return world_model.next(latent, action, task)


def tdmpc2_discount(episode_length: int) -> float:
    """TD-MPC2's discount heuristic: ``clip((T/5 - 1) / (T/5), 0.95, 0.995)`` for episodes of
    ``T`` agent steps (DMC's 500: 0.99; Meta-World's 100: 0.95; 1000 and more: 0.995).

    Examples:
        >>> tdmpc2_discount(500), tdmpc2_discount(100), tdmpc2_discount(1000)
        (0.99, 0.95, 0.995)
    """
    frac = episode_length / 5
    return float(min(max((frac - 1) / frac, 0.95), 0.995))


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
    online encoder without gradient. A world model with ``reward_ensemble=K > 1`` adds each
    extra reward head's ``L_rew`` to ``loss_reward`` (each head learns the same targets with
    the primary's weight, on detached inputs, so that encoder and dynamics train as with one
    head; ``reward_loss`` reports the primary's). Input: a ``[B, H]``
    tensordict with ``observation``,
    ``action``, ``("next", "observation")``, ``("next", "reward")`` (and ``task`` for a
    multi-task model) — what a ``SliceSampler`` of collector data gives, reshaped.

    **The value term** (``value_term=True``; the world model needs ``value_heads=True``) is
    TD-MPC2's, which shaped its published world models: the Q ensemble ``Q_k`` (two-hot
    logits) is trained jointly on the predicted latents, so its gradient also reaches the
    encoder, dynamics and task embedding, and the policy prior ``π`` is trained on the
    detached latents. With ``z'_t = sg(E(o_{t+1}))`` (the consistency targets),

    .. math::
        y_t = r_t + \\gamma \\min_{k \\in \\{i, j\\}} \\bar Q_k(z'_t, a'_t),
            \\quad a'_t \\sim \\pi(z'_t),

        L_{Q} = \\frac{1}{H N} \\sum_{t=0}^{H-1} \\rho^t \\sum_{k=1}^{N}
            CE\\big(Q_k(z_t, a_t), \\operatorname{twohot}(\\operatorname{sg}(y_t))\\big),

        L_{\\pi} = \\frac{1}{H + 1} \\sum_{t=0}^{H} \\rho^t \\operatorname{mean}_B \\Big(
            \\alpha \\log \\pi(\\tilde a_t | z_t) - \\frac{\\tfrac12 (Q_i + Q_j)(\\operatorname{sg}
            (z_t), \\tilde a_t)}{S} \\Big), \\quad \\tilde a_t \\sim \\pi(\\operatorname{sg}(z_t)),

    where ``\\bar Q`` are the target Q parameters (``target_q_network_params``, a soft-updated
    copy: ``SoftUpdate(loss, tau=0.01)``, evaluated without dropout), ``{i, j}`` two members
    drawn at random per call (one pair for the whole batch), Q values decoded with
    ``symexp`` (raw reward scale, whatever ``reward_space``), ``γ`` the per-task discount
    (``discount``; :func:`tdmpc2_discount` is TD-MPC2's heuristic), ``α`` ``entropy_coef``
    (1e-4) and ``log π`` TD-MPC2's paper-era log-probability (the Gaussian log-density of
    the valid action entries, scaled by their count, with the ``tanh`` correction).
    ``S`` is TD-MPC2's running scale, ``S ← lerp(S, max(P95 - P5, 1), 0.01)`` of the ``t =
    0`` values of the batch, updated by every call before it is used (buffer
    ``value_scale``). The Q values in ``L_π`` use detached Q parameters (dropout on, as in
    training) and a detached task embedding: ``loss_pi`` reaches the policy prior only
    (TD-MPC2's paper-era ``track_q_grad(False)``), and ``loss_value`` never reaches it.
    ``loss_value = 0.1 L_Q`` (``value_coef``) and ``loss_pi = L_π``. TD-MPC2 steps ``π``
    with its own Adam (eps 1e-5) after the world-model step;
    :class:`~torchrl_pwm.trainers.WorldModelOptimizationStepper` does the updates.

    Args:
        world_model: the world model to train.

    Keyword Args:
        consistency_coef: weight of the latent consistency term (20).
        reward_coef: weight of the reward term (0.1).
        temporal_discount: ``ρ`` (0.99, PWM).
        value_term: add TD-MPC2's Q-ensemble and policy-prior losses (``False``).
        value_coef: weight of the Q term (0.1, TD-MPC2).
        discount: ``γ`` of the TD targets: one number, or one per task id (0.99; TD-MPC2:
            :func:`tdmpc2_discount` of each task's episode length).
        entropy_coef: ``α`` of the policy prior's entropy bonus (1e-4, TD-MPC2).
        scale_tau: the running Q scale's update rate (0.01, TD-MPC2).
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

        With TD-MPC2's value term (and the soft update of the target Qs):

        >>> from torchrl.objectives import SoftUpdate
        >>> wm = TDMPC2WorldModel(5, 1, size="1M", value_heads=True)
        >>> loss = TDMPC2ModelLoss(wm, value_term=True, discount=tdmpc2_discount(500))
        >>> target_update = SoftUpdate(loss, tau=0.01)
        >>> out = loss(data)
        >>> sorted(k for k in out.keys() if k.startswith("loss"))
        ['loss_consistency', 'loss_pi', 'loss_reward', 'loss_value']
        >>> sum(v for k, v in out.items() if k.startswith("loss")).backward()
        >>> target_update.step()
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
    #: extra outputs of the value term
    value_out_keys = [
        "loss_value",
        "loss_pi",
        "value_loss",
        "td_target",
        "value_scale",
        "pi_log_prob",
    ]

    # the Q ensemble's functional parameters and their target copy (value term only)
    q_network: nn.Module
    q_network_params: TensorDictParams
    target_q_network_params: TensorDictParams

    def __init__(
        self,
        world_model: TDMPC2WorldModel,
        *,
        consistency_coef: float = 20.0,
        reward_coef: float = 0.1,
        temporal_discount: float = 0.99,
        value_term: bool = False,
        value_coef: float = 0.1,
        discount: float | Sequence[float] | torch.Tensor = 0.99,
        entropy_coef: float = 1e-4,
        scale_tau: float = 0.01,
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
        self.value_term = value_term
        if not value_term:
            return  # nothing else registered: the state dict is the plain loss's
        if world_model.q_ensemble is None:
            raise ValueError(
                "value_term=True needs the world model's Q ensemble and policy prior: build it "
                "with value_heads=True."
            )
        if world_model.num_bins <= 1:
            raise ValueError("value_term=True needs two-hot heads (num_bins > 1).")
        self.value_coef = value_coef
        self.entropy_coef = entropy_coef
        self.scale_tau = scale_tau
        discount = torch.as_tensor(discount, dtype=torch.float32)
        if discount.ndim == 1 and discount.numel() != (world_model.num_tasks or 0):
            raise ValueError(
                f"discount has {discount.numel()} entries; one per task needs "
                f"{world_model.num_tasks} (or give one number)."
            )
        if discount.ndim > 1:
            raise ValueError("discount must be a number or one number per task.")
        self.out_keys = [
            "loss_consistency", "loss_reward", "consistency", "reward_loss", *self.value_out_keys
        ]  # fmt: skip
        self.register_buffer("discount", discount)
        self.register_buffer("value_scale", torch.ones(()))
        # TorchRL's target mechanism: ``q_network_params`` are the Q ensemble's own
        # parameters, ``target_q_network_params`` a detached copy for SoftUpdate.
        self.convert_to_functional(world_model.q_ensemble, "q_network", create_target_params=True)

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
            z = (
                wm.next(z, action[:, t], task)
                if task is not None
                else _next_latent(wm, z, action[:, t], None)
            )
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
        reward_loss = self._reward_error(logits, reward)
        consistency = (consistency * weights).sum(1) / horizon
        reward_loss = (reward_loss * weights).sum(1) / horizon
        total_reward_loss = reward_loss
        if wm.extra_reward_heads is not None:
            # every extra head learns the same targets with the primary head's weight, on
            # detached inputs: the world model itself trains as it does with one head
            head = wm.get_reward_operator().module
            features = head.features(latents[:, :-1], action, task_seq).detach()
            extra = wm.extra_reward_heads(features)  # [B, H, K - 1, bins]
            target = reward.unsqueeze(-2).expand(*extra.shape[:-1], 1)
            extra_loss = (self._reward_error(extra, target).sum(-1) * weights).sum(1) / horizon
            total_reward_loss = reward_loss + extra_loss
        out = {
            "loss_consistency": self.consistency_coef * self._reduce_loss(consistency),
            "loss_reward": self.reward_coef * self._reduce_loss(total_reward_loss),
            "consistency": consistency.detach().mean(),
            "reward_loss": reward_loss.detach().mean(),
        }
        if self.value_term:
            out.update(self._value_losses(latents, targets, action, reward, task))
        return out

    def _reward_error(self, logits: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """A reward head's per-sample error ``[...]``: two-hot cross-entropy of its logits
        against ``reward`` ``[..., 1]``, or the squared error of a scalar head."""
        wm = self.world_model
        if wm.num_bins > 1:
            return soft_cross_entropy(logits, reward, wm.vmin, wm.vmax).squeeze(-1)
        return (logits - reward).square().squeeze(-1)

    # -- the value term (TD-MPC2's Q ensemble and policy prior) ------------------------------
    def _embedding(self, task: torch.Tensor | None, batch_shape: torch.Size) -> torch.Tensor | None:
        tasks = self.world_model.task_conditioning
        return None if tasks is None else tasks.embed(task, batch_shape)

    def _policy(
        self, latent: torch.Tensor, embedding: torch.Tensor | None, task: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A sampled action of the policy prior and its log-probability, as TD-MPC2's
        paper-era ``pi`` (masked entries: mean, log-std and noise zeroed; the Gaussian part
        scaled by the number of valid entries; the ``tanh`` correction)."""
        wm = self.world_model
        x = latent if embedding is None else torch.cat([latent, embedding], -1)
        mean, raw_log_std = wm.policy_prior(x).chunk(2, -1)
        log_std = wm.log_std_min + 0.5 * wm.log_std_dif * (torch.tanh(raw_log_std) + 1)
        eps = torch.randn_like(mean)
        if wm.task_conditioning is not None:
            tasks = wm.task_conditioning
            mask = tasks.action_masks[tasks._index(task, latent.shape[:-1])].to(mean.dtype)
            mean, log_std, eps = mean * mask, log_std * mask, eps * mask
            size = mask.sum(-1, keepdim=True)
        else:
            size = mean.shape[-1]
        residual = (-0.5 * eps.square() - log_std).sum(-1, keepdim=True)
        log_prob = (residual - 0.5 * math.log(2 * math.pi)) * size
        action = torch.tanh(mean + eps * log_std.exp())
        log_prob = log_prob - torch.log(nn.functional.relu(1 - action.square()) + 1e-6).sum(
            -1, keepdim=True
        )
        return action, log_prob

    def _q_logits(
        self,
        latent: torch.Tensor,
        action: torch.Tensor,
        embedding: torch.Tensor | None,
        task: torch.Tensor | None,
        params: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Every member's logits ``[..., N, bins]`` on ``[z, e, a]``, with the online
        parameters or ``params`` (a functional call)."""
        wm = self.world_model
        if wm.mask_action_inputs and wm.task_conditioning is not None:
            action = wm.task_conditioning.mask(action, task)
        parts = [latent, action] if embedding is None else [latent, embedding, action]
        features = torch.cat(parts, -1)
        if params is None:
            return wm.q_ensemble(features)
        return torch.func.functional_call(wm.q_ensemble, params, (features,))

    def _random_pair(self, device: torch.device) -> torch.Tensor:
        """Two distinct members, drawn per call (TD-MPC2: one pair for the whole batch)."""
        return torch.randperm(self.world_model.q_ensemble.ensemble_size, device=device)[:2]

    def _pair_values(self, logits: torch.Tensor) -> torch.Tensor:
        """The decoded values (``symexp``) ``[..., 2, 1]`` of two random members."""
        wm = self.world_model
        pair = logits[..., self._random_pair(logits.device), :]
        return two_hot_inv(pair, wm.vmin, wm.vmax, apply_symexp=True)

    @torch.no_grad()
    def td_targets(
        self, next_latent: torch.Tensor, reward: torch.Tensor, task: torch.Tensor | None = None
    ) -> torch.Tensor:
        """TD-MPC2's one-step targets ``r_t + γ min₂ Q̄(z'_t, π(z'_t))`` ``[B, H, 1]`` from the
        next latents ``[B, H, L]`` (the encoded next observations), rewards ``[B, H, 1]`` and
        task ids ``[B]``: target Q parameters, without dropout, two random members."""
        task_seq = task.unsqueeze(1).expand(next_latent.shape[:2]) if task is not None else None
        embedding = self._embedding(task_seq, next_latent.shape[:-1])
        action, _ = self._policy(next_latent, embedding, task_seq)
        params = dict(self.target_q_network_params.flatten_keys(".").items())
        q = self.world_model.q_ensemble
        training = q.training
        q.train(False)  # TD-MPC2's target Qs are always in eval mode: no dropout
        try:
            logits = self._q_logits(next_latent, action, embedding, task_seq, params)
        finally:
            q.train(training)
        next_value = self._pair_values(logits).amin(-2)
        discount = self.discount.to(reward.dtype)
        if discount.ndim:  # one per task
            discount = discount[task].view(-1, 1, 1)
        return reward + discount * next_value

    def _value_losses(
        self,
        latents: torch.Tensor,
        next_latent: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        task: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        wm = self.world_model
        horizon = action.shape[1]
        rho = self.temporal_discount ** torch.arange(
            horizon + 1, device=latents.device, dtype=latents.dtype
        )
        # Q ensemble: every member on the predicted latents z_0..z_{H-1} and the data's actions
        target = self.td_targets(next_latent, reward, task)  # [B, H, 1]
        task_seq = task.unsqueeze(1).expand(action.shape[:2]) if task is not None else None
        z = latents[:, :-1]
        logits = self._q_logits(z, action, self._embedding(task_seq, z.shape[:-1]), task_seq)
        members = logits.shape[-2]
        ce = soft_cross_entropy(
            logits, target.unsqueeze(-2).expand(*logits.shape[:-1], 1), wm.vmin, wm.vmax
        ).squeeze(-1)  # [B, H, N]
        value = (ce.sum(-1) * rho[:-1]).sum(1) / (horizon * members)

        # policy prior on the detached latents z_0..z_H, against detached Q parameters and a
        # detached task embedding: its loss reaches the policy prior only
        z = latents.detach()
        task_seq = task.unsqueeze(1).expand(z.shape[:2]) if task is not None else None
        embedding = self._embedding(task_seq, z.shape[:-1])
        embedding = embedding.detach() if embedding is not None else None
        pi_action, log_prob = self._policy(z, embedding, task_seq)
        q_logits = self._q_logits(
            z, pi_action, embedding, task_seq, detached_parameters(wm.q_ensemble)
        )
        q = self._pair_values(q_logits).mean(-2)  # [B, H + 1, 1]
        scale = self._update_scale(q[:, 0])
        pi = ((self.entropy_coef * log_prob - q / scale).squeeze(-1) * rho).mean(1)
        return {
            "loss_value": self.value_coef * self._reduce_loss(value),
            "loss_pi": self._reduce_loss(pi),
            "value_loss": value.detach().mean(),
            "td_target": target.mean(),
            "value_scale": scale.detach(),
            "pi_log_prob": log_prob.detach().mean(),
        }

    def _update_scale(self, value: torch.Tensor) -> torch.Tensor:
        """TD-MPC2's ``RunningScale``: ``S ← lerp(S, max(P95 - P5, 1), scale_tau)`` over the
        batch (linear interpolation between order statistics), written to ``value_scale``."""
        value = value.detach().reshape(-1)
        q = torch.tensor([0.05, 0.95], device=value.device, dtype=value.dtype)
        low, high = torch.quantile(value, q).unbind()
        spread = (high - low).clamp_min(1.0)
        scale = torch.lerp(self.value_scale.to(value.dtype), spread, self.scale_tau)
        self.value_scale.copy_(scale)
        return scale

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return TensorDict(self.loss_from_tensors(**self._tensors(tensordict)), batch_size=[])
