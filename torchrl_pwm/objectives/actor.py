"""PWM's first-order actor loss: back-propagate the imagined H-step return into the actor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import LossModule, ValueEstimators

from torchrl_pwm.modules import StateIndependentScale, TDMPC2WorldModel, td_lambda_return
from torchrl_pwm.objectives._utils import (
    call_held_out,
    detached_parameters,
    estimator_gamma_lambda,
    forward_estimator_keys,
    make_estimator,
)

__all__ = ["FirstOrderActorLoss"]


class _ModelCalls(nn.Module):
    """``forward(name, *args)`` calls ``world_model.<name>(*args)``: one module to
    reparametrise with :func:`torch.func.functional_call`, so that every parameter the call
    reads (the task embedding too, which several networks share) enters detached."""

    def __init__(self, world_model: nn.Module) -> None:
        super().__init__()
        self.world_model = world_model

    def forward(self, name: str, *args):
        return getattr(self.world_model, name)(*args)


def _tanh_gaussian_head(actor: TensorDictModuleBase) -> StateIndependentScale | None:
    """The ``(loc, scale)`` network of a :func:`~torchrl_pwm.modules.make_pwm_actor` actor
    with ``[-1, 1]`` bounds, for the tensor fast path; ``None`` for any other actor."""
    try:
        head, dist = actor.module[0], actor.module[1]
        kwargs = dist.distribution_kwargs
    except (AttributeError, IndexError, TypeError):
        return None
    if not isinstance(head, TensorDictModule) or not isinstance(head.module, StateIndependentScale):
        return None
    if dist.distribution_class.__name__ != "TanhNormal" or (
        kwargs.get("low"),
        kwargs.get("high"),
    ) != (-1.0, 1.0):
        return None
    return head.module


class FirstOrderActorLoss(LossModule):
    """PWM's actor loss: minus the H-step imagined return, differentiated through the model.

    From `PWM: Policy Learning with Large World Models <https://arxiv.org/abs/2407.02466>`_.
    Start latents ``z_0`` are rolled out for ``H = imagination_horizon`` steps in a
    :class:`~torchrl_pwm.envs.LatentWorldModelEnv` with the stochastic actor
    (``a_h = tanh(μ(z_h) + σ·ε_h)``, reparameterised), and the per-sample objective is

    .. math::
        J = \\sum_{h=0}^{H-1} \\gamma^h R(z_h, a_h) + \\gamma^H \\min_k V_k(z_H),

    computed with TorchRL's TD(1) estimator (``make_value_estimator(ValueEstimators.TD1,
    gamma=...)``; TD(λ) gives a λ-return objective instead). The world model and the critic
    are held out: the gradient of ``-J`` reaches the actor only. Note the original code
    bootstraps with ``γ^(H+1)``, an off-by-one; we use ``γ^H`` (paper, SHAC).

    Reduction (as the original): per-sample ``ℓ = -J``; with ``normalize_returns=True``
    a running variance of ``ℓ`` (biased batch variances merged into running statistics,
    initial count 1e-4) is first updated with the batch (in training mode) and
    ``ℓ / sqrt(var + 1e-5)`` is reduced; otherwise ``ℓ / H``.

    Args:
        actor_network: the policy (e.g. :func:`~torchrl_pwm.modules.make_pwm_actor`).
        value_network: the critic ensemble writing the min over members under
            ``tensor_keys.value`` (:class:`~torchrl_pwm.modules.ValueEnsemble`).
        model_based_env: the imagination environment
            (:class:`~torchrl_pwm.envs.LatentWorldModelEnv`, TorchRL's convention for
            model-based actor losses), or directly its
            :class:`~torchrl_pwm.modules.TDMPC2WorldModel`: the loss only needs the world
            model, which it rolls out as tensors.

    Keyword Args:
        imagination_horizon: ``H`` (16).
        normalize_returns: running-std normalisation of the loss (``True``).
        detach_policy_input: the actor sees ``sg(z_h)`` while dynamics and reward see ``z_h``
            (``True``, as the original code).
        value_network_params: the parameters the bootstrap ``V(z_H)`` is computed with
            (default ``None``: the critic's own, as PWM). Pass a target critic's parameters,
            e.g. ``TDLambdaValueLoss.target_value_network_params``, to bootstrap from the
            target as SHAC does; they are read at every call, so soft updates are seen.
        mean_penalty_coef: weight ``c`` of a penalty ``c · mean_h ‖μ(z_h)‖²`` on the
            pre-tanh action means of the imagined steps, added to each start state's loss
            (default ``0.0``: none, as PWM). Without it the actor can drive ``μ`` deep into
            tanh's saturation, where ``tanh'(μ) ≈ 0``: its gradient then vanishes (1e-9 in a
            measured cartpole run, every action at the bound) and it never returns. The
            penalty's gradient does not vanish there. It is rlkit's / softlearning's SAC
            ``policy_mean_reg_weight`` (1e-3). Actors built by
            :func:`~torchrl_pwm.modules.make_pwm_actor` only.
        mean_penalty_threshold: ``τ >= 0``: penalise only the part of ``|μ|`` beyond ``τ``,
            ``c · mean_h ‖max(|μ(z_h)| - τ, 0)‖²`` (default ``0.0``: the plain penalty
            above). With ``τ = 3`` (``tanh(3) = 0.995``) the actor may still choose actions
            at the bound (bang-bang), but not push ``μ`` so deep that ``tanh'`` vanishes.
        disagreement_coef: weight ``c`` of a penalty on imagined rewards where the world
            model's reward heads disagree: the imagined reward becomes ``r_h - c · std_k
            r_h^k`` over its ``K`` heads (a world model with ``reward_ensemble > 1``), the
            primary head's reward minus the spread, as MOPO penalises model uncertainty.
            The critic learns from the penalised rewards too. Default ``0.0``: none, as PWM
            (not in the paper: an option for the online recipe's model exploitation).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over start states.

    The imagination is a loop of tensor calls (dynamics and actor per step; the reward head
    and the critic once on the stacked ``[B, H]`` latents), with the world model's and the
    critic's parameters entering detached: no host synchronisation, no data-dependent
    shapes, and it compiles with ``fullgraph=True``. It is the same rollout as
    :class:`~torchrl_pwm.envs.LatentWorldModelEnv`'s ``rollout`` with the actor (tested;
    with ``disagreement_coef`` only the rewards differ, by the penalty).
    Actors built by :func:`~torchrl_pwm.modules.make_pwm_actor` with ``[-1, 1]`` bounds are
    sampled directly from their ``(loc, scale)`` head; any other TorchRL actor is called
    through its TensorDict interface under ``ExplorationType.RANDOM``.

    Only the actor is a registered sub-module of this loss: ``loss.parameters()`` yields the
    actor's parameters and the running statistics are buffers. The critic and the
    environment (with its world model) are referenced, not owned — their own losses own
    them — so move and save them with their owners.

    The output holds the scalars ``loss_actor`` and the detached diagnostics
    ``imagined_return`` (mean ``J``), ``return_std`` (the normaliser), ``action_std`` and,
    for :func:`~torchrl_pwm.modules.make_pwm_actor` actors, ``action_saturation`` (the
    fraction of imagined pre-tanh means with ``|μ| > 3``, where ``tanh' < 0.01``) and, with
    ``disagreement_coef``, ``reward_disagreement`` (the mean spread of the reward heads;
    ``imagined_return`` is then the penalised return).
    :meth:`loss_and_trajectory` also returns the detached ``[B, H]`` imagined trajectory,
    the input of :class:`~torchrl_pwm.objectives.TDLambdaValueLoss`.

    A batch whose loss is not finite leaves the return statistics unchanged; an optimiser
    that skips a step for a non-finite gradient rolls them back with
    :meth:`keep_return_statistics` (:class:`~torchrl_pwm.trainers.PWMOptimizationStepper`
    does), so one bad batch never poisons later steps.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_pwm.envs import LatentWorldModelEnv
        >>> from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor
        >>> wm = TDMPC2WorldModel(5, 1, size="1M")
        >>> env = LatentWorldModelEnv(wm)
        >>> actor = make_pwm_actor(wm.latent_dim, env.action_spec)
        >>> critic = ValueEnsemble(wm.latent_dim)
        >>> loss = FirstOrderActorLoss(actor, critic, env, imagination_horizon=4)
        >>> loss.make_value_estimator(gamma=0.99)
        >>> out = loss(TensorDict(observation=torch.randn(8, 5), batch_size=[8]))
        >>> out["loss_actor"].shape
        torch.Size([])
        >>> out, trajectory = loss.loss_and_trajectory(
        ...     TensorDict(observation=torch.randn(8, 5), batch_size=[8])
        ... )
        >>> trajectory.shape, trajectory["next", "reward"].shape
        (torch.Size([8, 4]), torch.Size([8, 4, 1]))
        >>> out["loss_actor"].backward()
    """

    @dataclass
    class _AcceptedKeys:
        """Keys read by the loss.

        Attributes:
            observation: start observations (encoded by the world model). Defaults to
                ``"observation"``.
            latent: start latents, used only when the input has no observations (stored
                latents may be stale). Defaults to ``"latent"``.
            reward: imagined reward, read under ``"next"``. Defaults to ``"reward"``.
            value: critic output used for the bootstrap (min over members). Defaults to
                ``"state_value"``.
            done: done flag, read under ``"next"``. Defaults to ``"done"``.
            terminated: termination flag, read under ``"next"``. Defaults to
                ``"terminated"``.
        """

        observation: NestedKey = "observation"
        latent: NestedKey = "latent"
        reward: NestedKey = "reward"
        value: NestedKey = "state_value"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    _estimator_keys = (
        "value",
        "reward",
        "done",
        "terminated",
    )  # the keys set on the value estimator
    default_value_estimator = ValueEstimators.TD1
    SUPPORTED_VALUE_ESTIMATORS = (ValueEstimators.TD1, ValueEstimators.TDLambda)
    # LossModule runs forward under DETERMINISTIC exploration; imagination samples actions.
    deterministic_sampling_mode = ExplorationType.RANDOM
    out_keys = [
        "loss_actor", "imagined_return", "return_std", "action_std", "action_saturation",
        "reward_disagreement",
    ]  # fmt: skip

    actor_network: TensorDictModule
    actor_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams  # None: the actor has no target

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        value_network: TensorDictModuleBase,
        model_based_env: EnvBase | TDMPC2WorldModel,
        *,
        imagination_horizon: int = 16,
        normalize_returns: bool = True,
        detach_policy_input: bool = True,
        value_network_params: TensorDictBase | None = None,
        mean_penalty_coef: float = 0.0,
        mean_penalty_threshold: float = 0.0,
        disagreement_coef: float = 0.0,
        reduction: str | None = None,
    ) -> None:
        super().__init__()
        if imagination_horizon < 1:
            raise ValueError(f"imagination_horizon must be >= 1, got {imagination_horizon}.")
        if not mean_penalty_coef >= 0.0:
            raise ValueError(f"mean_penalty_coef must be >= 0, got {mean_penalty_coef}.")
        if not mean_penalty_threshold >= 0.0:
            raise ValueError(f"mean_penalty_threshold must be >= 0, got {mean_penalty_threshold}.")
        self.reduction = reduction or "mean"
        if self.reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.convert_to_functional(actor_network, "actor_network")
        # Referenced, not registered: their parameters belong to other losses.
        self.__dict__["value_network"] = value_network
        world_model = getattr(model_based_env, "world_model", model_based_env)
        if not isinstance(world_model, TDMPC2WorldModel):
            raise TypeError(
                "model_based_env must be a LatentWorldModelEnv or a TDMPC2WorldModel, got "
                f"{type(model_based_env).__name__}."
            )
        if not disagreement_coef >= 0.0:
            raise ValueError(f"disagreement_coef must be >= 0, got {disagreement_coef}.")
        if disagreement_coef and world_model.extra_reward_heads is None:
            raise ValueError(
                "disagreement_coef needs a world model with several reward heads "
                "(TDMPC2WorldModel(..., reward_ensemble=K) with K > 1)."
            )
        self.disagreement_coef = disagreement_coef
        self.__dict__["model_based_env"] = model_based_env
        self.__dict__["world_model"] = world_model
        self.latent_key = world_model.latent_key
        self.task_key = world_model.task_key if world_model.num_tasks is not None else None
        self.__dict__["_bootstrap_params"] = value_network_params
        self.__dict__["_model_calls"] = _ModelCalls(world_model)
        self.imagination_horizon = imagination_horizon
        self.mean_penalty_coef = mean_penalty_coef
        self.mean_penalty_threshold = mean_penalty_threshold
        if mean_penalty_coef and _tanh_gaussian_head(actor_network) is None:
            raise ValueError(
                "mean_penalty_coef needs an actor built by make_pwm_actor (a (loc, scale) "
                "head with [-1, 1] bounds): the penalty acts on its pre-tanh mean."
            )
        self.normalize_returns = normalize_returns
        self.detach_policy_input = detach_policy_input
        self.register_buffer("return_mean", torch.zeros(()))
        self.register_buffer("return_var", torch.ones(()))
        self.register_buffer("return_count", torch.full((), 1e-4))
        # Build the default estimator now, so that state_dict() has the same keys before and
        # after the first call (a fresh loss can load a used one's checkpoint).
        self.make_value_estimator(self.default_value_estimator)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        forward_estimator_keys(self)

    def make_value_estimator(self, value_type: ValueEstimators = None, **hyperparams) -> None:
        """Set the return estimator: ``TD1`` (default, gamma 0.99) or ``TDLambda``."""
        make_estimator(self, value_type, **hyperparams)

    def _start_latents(
        self, tensordict: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Flat start latents ``[B, L]`` (no gradient) and task ids ``[B]`` (or ``None``)."""
        wm = self.world_model
        keys = self.tensor_keys
        has_obs = keys.observation in tensordict.keys(True)
        if not has_obs and keys.latent not in tensordict.keys(True):
            raise KeyError(
                f"FirstOrderActorLoss needs start states under {keys.observation!r} "
                f"(encoded by the world model) or {keys.latent!r}."
            )
        tensordict = tensordict.reshape(-1)
        task = None
        if self.task_key is not None:
            if self.task_key not in tensordict.keys(True):
                raise KeyError(f"A multi-task world model needs {self.task_key!r} in the input.")
            task = tensordict.get(self.task_key)
            task = task.reshape(tensordict.shape)  # [B] (also from [B, 1])
        # Observations win over stored latents, which may be stale (encoded by an older
        # encoder at collection time) or placeholders (random seed frames). The start latent
        # does not depend on the actor: no graph.
        if has_obs:
            with torch.no_grad():
                latent = wm.encode(tensordict.get(keys.observation), task)
        else:
            latent = tensordict.get(keys.latent).detach()
        return latent, task

    def _sample_action(
        self, latent: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[NestedKey, torch.Tensor]]:
        """``(a, σ, extras)`` with ``a = tanh(μ + σ·ε)``, reparameterised (``rsample``);
        ``extras`` are any other outputs of a generic actor (carried into the trajectory),
        or ``{"_loc": μ}`` for a :func:`~torchrl_pwm.modules.make_pwm_actor` head."""
        head = _tanh_gaussian_head(self.actor_network)
        if head is not None:
            loc, scale = head(latent)
            return torch.tanh(loc + scale * torch.randn_like(loc)), scale, {"_loc": loc}
        # any other TorchRL actor: through its TensorDict interface
        in_key = self.actor_network.in_keys[0]
        td = TensorDict({in_key: latent}, batch_size=latent.shape[:-1])
        with set_exploration_type(ExplorationType.RANDOM):
            td = self.actor_network(td)
        action = td.get("action")
        scale = td.get("scale", None)
        extras = {k: td.get(k) for k in td.keys(True, True) if k not in (in_key, "action", "scale")}
        return action, scale if scale is not None else torch.zeros_like(action), extras

    def _bootstrap_values(self, latent: torch.Tensor) -> torch.Tensor:
        """``min_k V_k(latent)`` with the critic held out (gradient to ``latent`` only)."""
        return call_held_out(
            self.value_network,
            {self.value_network.in_keys[0]: latent},
            self.tensor_keys.value,
            params=self.__dict__.get("_bootstrap_params"),
        )

    def imagine_from_latents(
        self, latent: torch.Tensor, task: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The imagination of :meth:`imagine` on tensors: start latents ``[B, L]`` (and task
        ids ``[B]``) to ``J`` (``"return"``, ``[B, 1]``) and the ``[B, H]`` trajectory
        (``"latent"`` ``[B, H + 1, L]``, ``"action"``, ``"scale"``, ``"reward"``).

        The dynamics run in a loop of tensors; the reward head and the critic once on the
        stacked latents. The world model's and the critic's parameters enter detached, so no
        gradient is computed for them and their ``requires_grad`` flags are never touched.
        """
        model = self._model_calls
        params = detached_parameters(model)
        latents, actions, scales, extras = [], [], [], []
        z = latent
        for _ in range(self.imagination_horizon):
            latents.append(z)
            action, scale, extra = self._sample_action(
                z.detach() if self.detach_policy_input else z
            )
            actions.append(action)
            scales.append(scale)
            extras.append(extra)
            z = torch.func.functional_call(model, params, ("next", z, action, task))
        latents.append(z)
        states = torch.stack(latents, 1)  # [B, H + 1, L]
        action = torch.stack(actions, 1)
        task_seq = task.unsqueeze(1).expand(action.shape[:2]) if task is not None else None
        disagreement = None
        if self.disagreement_coef:
            members = torch.func.functional_call(
                model, params, ("reward_members", states[:, :-1], action, task_seq)
            )  # [B, H, K, 1]
            disagreement = members.std(-2)
            reward = members[..., 0, :] - self.disagreement_coef * disagreement
        else:
            reward = torch.func.functional_call(
                model, params, ("reward", states[:, :-1], action, task_seq)
            )  # [B, H, 1]
        gamma, lmbda = self._gamma_lambda()
        if isinstance(lmbda, float) and lmbda == 1.0:
            # TD(1) only reads the last bootstrap: evaluate the critic there only (TD(λ)'s λ
            # is a device tensor, not compared here: that would synchronise with the device).
            last = self._bootstrap_values(states[:, -1]).unsqueeze(1)
            next_value = torch.cat([torch.zeros_like(reward[:, 1:]), last], 1)
        else:
            next_value = self._bootstrap_values(states[:, 1:])
        returns = td_lambda_return(reward, next_value, gamma=gamma, lmbda=lmbda)
        rollout = {
            "return": returns[:, 0],
            "latent": states,
            "action": action,
            "scale": torch.stack(scales, 1),
            "reward": reward,
        }
        for key in extras[0]:
            rollout[key] = torch.stack([e[key] for e in extras], 1)
        if disagreement is not None:
            rollout["_disagreement"] = disagreement
        return rollout

    def _trajectory(self, rollout: dict, task: torch.Tensor | None) -> TensorDictBase:
        """The ``[B, H]`` trajectory TensorDict (the keys of
        :class:`~torchrl_pwm.envs.LatentWorldModelEnv`'s rollouts)."""
        states, action = rollout["latent"], rollout["action"]
        shape = action.shape[:2]
        flags = torch.zeros((*shape, 1), dtype=torch.bool, device=action.device)
        next_td = {
            self.latent_key: states[:, 1:],
            self.tensor_keys.reward: rollout["reward"],
            self.tensor_keys.done: flags,
            self.tensor_keys.terminated: flags,
        }
        traj = {self.latent_key: states[:, :-1], "action": action, "scale": rollout["scale"]}
        standard = ("return", "latent", "action", "scale", "reward", "_loc", "_disagreement")
        traj.update({k: v for k, v in rollout.items() if k not in standard})
        if task is not None:
            task_seq = task.unsqueeze(1).expand(shape)
            traj[self.task_key] = task_seq
            next_td[self.task_key] = task_seq
        trajectory = TensorDict(traj, batch_size=shape)
        trajectory.set("next", TensorDict(next_td, batch_size=shape))
        return trajectory

    def imagine(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, TensorDictBase]:
        """Roll out the actor in imagination from the start states of ``tensordict``.

        Returns ``J`` (``[B, 1]``, differentiable w.r.t. the actor only) and the ``[B, H]``
        trajectory (``latent``, ``action``, ``scale``, ``("next", "latent" | "reward" |
        "done" | "terminated")``), computed by :meth:`imagine_from_latents`.
        """
        latent, task = self._start_latents(tensordict)
        rollout = self.imagine_from_latents(latent, task)
        return rollout["return"], self._trajectory(rollout, task)

    def _gamma_lambda(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        return estimator_gamma_lambda(self.value_estimator)

    @torch.no_grad()
    def _update_return_stats(self, per_sample_loss: torch.Tensor) -> None:
        """Merge the batch's biased variance into the running statistics; a non-finite batch
        leaves them unchanged (decided on device: no host synchronisation)."""
        batch_mean = per_sample_loss.mean()
        batch_var = per_sample_loss.var(unbiased=False)
        batch_count = per_sample_loss.numel()
        delta = batch_mean - self.return_mean
        total = self.return_count + batch_count
        m2 = (
            self.return_var * self.return_count
            + batch_var * batch_count
            + delta.square() * self.return_count * batch_count / total
        )
        finite = torch.isfinite(batch_mean) & torch.isfinite(batch_var)
        self.return_mean.copy_(
            torch.where(finite, self.return_mean + delta * batch_count / total, self.return_mean)
        )
        self.return_var.copy_(torch.where(finite, m2 / total, self.return_var))
        self.return_count.copy_(torch.where(finite, total, self.return_count))

    def return_statistics(self) -> torch.Tensor:
        """A copy of the running ``(mean, var, count)`` of the normaliser, for
        :meth:`keep_return_statistics`."""
        return torch.stack([self.return_mean, self.return_var, self.return_count]).clone()

    @torch.no_grad()
    def keep_return_statistics(self, saved: torch.Tensor, accept: torch.Tensor) -> None:
        """Roll the normaliser back to ``saved`` unless ``accept`` (a boolean tensor): an
        optimiser that skips a step also discards the statistics that step committed."""
        for buf, old in zip(
            (self.return_mean, self.return_var, self.return_count), saved, strict=True
        ):
            buf.copy_(torch.where(accept, buf, old))

    def loss_from_latents(
        self, latent: torch.Tensor, task: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(loss outputs, rollout)`` from start latents ``[B, L]``: the tensor path of
        :meth:`loss_and_trajectory`, which the stepper compiles (``fullgraph=True``)."""
        rollout = self.imagine_from_latents(latent, task)
        objective = rollout["return"]
        per_sample = -objective.squeeze(-1)
        if self.normalize_returns:
            if self.training:
                self._update_return_stats(per_sample.detach())
            scale = (self.return_var + 1e-5).sqrt()
        else:
            scale = torch.full_like(self.return_var, float(self.imagination_horizon))
        loss = per_sample / scale
        loc = rollout.pop("_loc", None)  # [B, H, A] pre-tanh means (make_pwm_actor heads)
        if self.mean_penalty_coef:
            excess = loc
            if self.mean_penalty_threshold:
                excess = (loc.abs() - self.mean_penalty_threshold).clamp_min(0.0)
            loss = loss + self.mean_penalty_coef * excess.square().flatten(1).mean(1)
        out = {
            "loss_actor": self._reduce_loss(loss),
            "imagined_return": objective.detach().mean(),
            "return_std": scale.detach(),
            "action_std": rollout["scale"].detach().mean(),
        }
        if loc is not None:
            out["action_saturation"] = (loc.detach().abs() > 3.0).float().mean()
        disagreement = rollout.pop("_disagreement", None)
        if disagreement is not None:
            out["reward_disagreement"] = disagreement.detach().mean()
        return out, {k: v.detach() for k, v in rollout.items() if k != "return"}

    def loss_and_trajectory(
        self, tensordict: TensorDictBase
    ) -> tuple[TensorDictBase, TensorDictBase]:
        """The loss output of :meth:`forward` and the detached ``[B, H]`` imagined trajectory
        (the input of :class:`~torchrl_pwm.objectives.TDLambdaValueLoss`)."""
        latent, task = self._start_latents(tensordict)
        out, rollout = self.loss_from_latents(latent, task)
        return TensorDict(out, batch_size=[]), self._trajectory(rollout, task)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self.loss_and_trajectory(tensordict)[0]
