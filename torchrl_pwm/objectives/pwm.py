"""The three PWM losses as one LossModule."""

from __future__ import annotations

from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.objectives import LossModule, ValueEstimators

from torchrl_pwm.modules import TDMPC2WorldModel
from torchrl_pwm.objectives.actor import FirstOrderActorLoss
from torchrl_pwm.objectives.value import TDLambdaValueLoss
from torchrl_pwm.objectives.world_model import TDMPC2ModelLoss

__all__ = ["PWMLoss"]


class PWMLoss(LossModule):
    """World-model, actor and critic losses of PWM, computed from one batch of slices.

    ``forward`` takes ``[B, H]`` slices of real transitions and returns

    - ``loss_consistency``, ``loss_reward``: :class:`TDMPC2ModelLoss` on the slices;
    - ``loss_actor``: :class:`FirstOrderActorLoss` from the slices' first observations;
    - ``loss_value``: :class:`TDLambdaValueLoss` on that imagined trajectory;

    plus the components' detached diagnostics, all scalars (so TorchRL's Trainer can log
    every output). The imagined trajectory is
    ``loss.actor_loss.loss_and_trajectory(data[:, 0])[1]``. The three losses
    touch disjoint parameters, so summing them and stepping one optimiser is correct, but PWM
    uses three optimisers and several critic minibatches per actor step:
    :class:`~torchrl_pwm.trainers.PWMOptimizationStepper` does that with the components
    (:attr:`world_model_loss`, :attr:`actor_loss`, :attr:`value_loss`).

    Args:
        world_model: the world model (owned by :attr:`world_model_loss`).
        actor_network: the policy (owned by :attr:`actor_loss`).
        value_network: the critic ensemble (owned by :attr:`value_loss`).

    Keyword Args:
        imagination_horizon: actor rollout length (16).
        normalize_returns: see :class:`FirstOrderActorLoss` (``True``).
        detach_policy_input: see :class:`FirstOrderActorLoss` (``True``).
        use_target_value_network: see :class:`TDLambdaValueLoss` (``False``).
        actor_bootstrap: the critic the actor's ``γᴴ V(z_H)`` uses: ``"online"`` (default, the
            original PWM code) or ``"target"`` (SHAC; needs
            ``use_target_value_network=True``).
        actor_mean_penalty_coef: see :class:`FirstOrderActorLoss`'s ``mean_penalty_coef``
            (``0.0``: none, as PWM).
        actor_mean_penalty_threshold: see :class:`FirstOrderActorLoss`'s
            ``mean_penalty_threshold`` (``0.0``: the plain penalty).
        actor_disagreement_coef: see :class:`FirstOrderActorLoss`'s ``disagreement_coef``
            (``0.0``: none, as PWM; needs ``reward_ensemble > 1`` in the world model).
        consistency_coef: see :class:`TDMPC2ModelLoss` (20).
        reward_coef: see :class:`TDMPC2ModelLoss` (0.1).
        temporal_discount: see :class:`TDMPC2ModelLoss` (0.99).
        reduction: applied by every component.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor
        >>> wm = TDMPC2WorldModel(5, 1, size="1M")
        >>> loss = PWMLoss(
        ...     wm, make_pwm_actor(wm.latent_dim, 1), ValueEnsemble(wm.latent_dim),
        ...     imagination_horizon=4,
        ... )
        >>> loss.make_value_estimator(gamma=0.99, lmbda=0.95)
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
        >>> sorted(k for k in out.keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_consistency', 'loss_reward', 'loss_value']
    """

    out_keys = ["loss_consistency", "loss_reward", "loss_actor", "loss_value"]

    def __init__(
        self,
        world_model: TDMPC2WorldModel,
        actor_network: TensorDictModuleBase,
        value_network: TensorDictModuleBase,
        *,
        imagination_horizon: int = 16,
        normalize_returns: bool = True,
        detach_policy_input: bool = True,
        use_target_value_network: bool = False,
        actor_bootstrap: str = "online",
        actor_mean_penalty_coef: float = 0.0,
        actor_mean_penalty_threshold: float = 0.0,
        actor_disagreement_coef: float = 0.0,
        consistency_coef: float = 20.0,
        reward_coef: float = 0.1,
        temporal_discount: float = 0.99,
        reduction: str | None = None,
    ) -> None:
        super().__init__()
        if actor_bootstrap not in ("online", "target"):
            raise ValueError(
                f"actor_bootstrap must be 'online' or 'target', got {actor_bootstrap!r}."
            )
        if actor_bootstrap == "target" and not use_target_value_network:
            raise ValueError("actor_bootstrap='target' needs use_target_value_network=True.")
        self.value_loss = TDLambdaValueLoss(
            value_network, use_target_network=use_target_value_network, reduction=reduction
        )
        self.actor_bootstrap = actor_bootstrap
        self.world_model_loss = TDMPC2ModelLoss(
            world_model,
            consistency_coef=consistency_coef,
            reward_coef=reward_coef,
            temporal_discount=temporal_discount,
            reduction=reduction,
        )
        self.actor_loss = FirstOrderActorLoss(
            actor_network,
            value_network,
            world_model,  # owned by world_model_loss; the actor loss only references it
            imagination_horizon=imagination_horizon,
            normalize_returns=normalize_returns,
            detach_policy_input=detach_policy_input,
            value_network_params=(
                self.value_loss.target_value_network_params if actor_bootstrap == "target" else None
            ),
            mean_penalty_coef=actor_mean_penalty_coef,
            mean_penalty_threshold=actor_mean_penalty_threshold,
            disagreement_coef=actor_disagreement_coef,
            reduction=reduction,
        )

    @property
    def world_model(self) -> TDMPC2WorldModel:
        return self.world_model_loss.world_model

    @property
    def actor_network(self) -> TensorDictModuleBase:
        return self.actor_loss.actor_network

    @property
    def value_network(self) -> TensorDictModuleBase:
        return self.value_loss.value_network

    def make_value_estimator(
        self, value_type: ValueEstimators | None = None, *, gamma: float = 0.99, lmbda: float = 0.95
    ) -> None:
        """Discount ``gamma`` for the actor's return (TD(1)) and the critic's TD(λ) targets."""
        if value_type not in (None, ValueEstimators.TDLambda):
            raise NotImplementedError(f"PWMLoss uses TD(λ) critic targets, got {value_type}.")
        self.actor_loss.make_value_estimator(ValueEstimators.TD1, gamma=gamma)
        self.value_loss.make_value_estimator(ValueEstimators.TDLambda, gamma=gamma, lmbda=lmbda)

    def set_keys(self, **kwargs) -> None:
        """Rename keys in every component that reads them."""
        known = set()
        for loss in (self.world_model_loss, self.actor_loss, self.value_loss):
            accepted = loss._AcceptedKeys.__dataclass_fields__
            known |= set(accepted)
            loss.set_keys(**{k: v for k, v in kwargs.items() if k in accepted})
        unknown = set(kwargs) - known
        if unknown:
            raise ValueError(f"Unknown keys {sorted(unknown)}; PWMLoss accepts {sorted(known)}.")

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        model_out = self.world_model_loss(tensordict)
        actor_out, trajectory = self.actor_loss.loss_and_trajectory(tensordict[:, 0])
        value_out = self.value_loss(trajectory)
        out = TensorDict(batch_size=[])
        out.update(model_out).update(actor_out).update(value_out)
        return out
