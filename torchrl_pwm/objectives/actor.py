"""PWM's first-order actor loss: back-propagate the imagined H-step return into the actor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torchrl.envs.utils import ExplorationType
from torchrl.objectives import LossModule, ValueEstimators, hold_out_net
from torchrl.objectives.utils import _reduce
from torchrl.objectives.value import TD1Estimator

from torchrl_pwm.envs import LatentWorldModelEnv
from torchrl_pwm.objectives._utils import forward_estimator_keys, make_estimator

__all__ = ["FirstOrderActorLoss"]


class _DetachedInputPolicy(TensorDictModuleBase):
    """Runs the actor on detached inputs, so ``d a_h / d z_h`` is cut (PWM's ``detach``)."""

    def __init__(self, actor: TensorDictModuleBase):
        super().__init__()
        self.actor = actor
        self.in_keys = list(actor.in_keys)
        self.out_keys = list(actor.out_keys)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = self.actor(tensordict.select(*self.in_keys).detach())
        return tensordict.update(out.select(*self.out_keys))


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
        model_based_env: the imagination environment.

    Keyword Args:
        imagination_horizon: ``H`` (16).
        normalize_returns: running-std normalisation of the loss (``True``).
        detach_policy_input: the actor sees ``sg(z_h)`` while dynamics and reward see ``z_h``
            (``True``, as the original code).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over start states.

    Only the actor is a registered sub-module of this loss: ``loss.parameters()`` yields the
    actor's parameters and the running statistics are buffers. The critic and the
    environment (with its world model) are referenced, not owned — their own losses own
    them — so move and save them with their owners.

    The output holds ``loss_actor``, the detached diagnostics ``imagined_return`` (mean
    ``J``), ``return_std`` (the normaliser) and ``action_std``, and
    ``imagined_trajectory``: the detached ``[B, H]`` imagined trajectory, input of
    :class:`~torchrl_pwm.objectives.TDLambdaValueLoss`.

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
        >>> out["loss_actor"].shape, out["imagined_trajectory"].shape
        (torch.Size([]), torch.Size([8, 4]))
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
    out_keys = ["loss_actor", "imagined_return", "return_std", "action_std"]

    actor_network: TensorDictModule

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        value_network: TensorDictModuleBase,
        model_based_env: LatentWorldModelEnv,
        *,
        imagination_horizon: int = 16,
        normalize_returns: bool = True,
        detach_policy_input: bool = True,
        reduction: str | None = None,
    ) -> None:
        super().__init__()
        if imagination_horizon < 1:
            raise ValueError(f"imagination_horizon must be >= 1, got {imagination_horizon}.")
        self.reduction = reduction or "mean"
        if self.reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.actor_network = actor_network
        # Referenced, not registered: their parameters belong to other losses.
        self.__dict__["value_network"] = value_network
        self.__dict__["model_based_env"] = model_based_env
        self.imagination_horizon = imagination_horizon
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

    def _start_states(self, tensordict: TensorDictBase) -> TensorDictBase:
        env = self.model_based_env
        keys = self.tensor_keys
        has_obs = keys.observation in tensordict.keys(True)
        if not has_obs and keys.latent not in tensordict.keys(True):
            raise KeyError(
                f"FirstOrderActorLoss needs start states under {keys.observation!r} "
                f"(encoded by the world model) or {keys.latent!r}."
            )
        # Observations win over stored latents, which may be stale (encoded by an older
        # encoder at collection time) or placeholders (random seed frames).
        src, dst = (
            (keys.observation, env.observation_key) if has_obs else (keys.latent, env.latent_key)
        )
        start = TensorDict({dst: tensordict.get(src).detach()}, batch_size=tensordict.batch_size)
        if env.task_key is not None:
            start.set(env.task_key, tensordict.get(env.task_key))
        return start.reshape(-1)

    @torch.no_grad()
    def _update_return_stats(self, per_sample_loss: torch.Tensor) -> None:
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
        self.return_mean.add_(delta * batch_count / total)
        self.return_var.copy_(m2 / total)
        self.return_count.copy_(total)

    def imagine(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, TensorDictBase]:
        """Roll out the actor in imagination; return ``J`` (``[B, 1]``) and the trajectory."""
        env = self.model_based_env
        policy = (
            _DetachedInputPolicy(self.actor_network)
            if self.detach_policy_input
            else self.actor_network
        )
        with hold_out_net(env), hold_out_net(self.value_network):
            start = env.reset(self._start_states(tensordict))
            traj = env.rollout(
                self.imagination_horizon,
                policy,
                auto_reset=False,
                tensordict=start,
                break_when_any_done=False,
            )
            next_td = traj.get("next")
            value_key = self.tensor_keys.value
            if isinstance(self.value_estimator, TD1Estimator):
                # TD(1) only reads the last bootstrap: evaluate the critic there only.
                last = self.value_network(next_td[:, -1:].select(*self.value_network.in_keys))
                last_value = last.get(value_key)
                next_value = torch.cat(
                    [torch.zeros_like(last_value).expand(-1, traj.shape[1] - 1, -1), last_value],
                    1,
                )
            else:
                values = self.value_network(next_td.select(*self.value_network.in_keys))
                next_value = values.get(value_key)
            returns = self.value_estimator.value_estimate(traj, next_value=next_value, time_dim=1)
        return returns[:, 0], traj

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        objective, traj = self.imagine(tensordict)
        per_sample = -objective.squeeze(-1)
        if self.normalize_returns:
            if self.training:
                self._update_return_stats(per_sample.detach())
            scale = (self.return_var + 1e-5).sqrt()
        else:
            scale = torch.full_like(self.return_var, float(self.imagination_horizon))
        loss = _reduce(per_sample / scale, self.reduction)
        action_std = traj.get("scale", None)
        out = TensorDict(
            {
                "loss_actor": loss,
                "imagined_return": objective.detach().mean(),
                "return_std": scale.detach(),
                "action_std": (
                    action_std.detach().mean()
                    if action_std is not None
                    else torch.zeros((), device=loss.device)
                ),
                "imagined_trajectory": traj.detach(),
            },
            batch_size=[],
        )
        return out
