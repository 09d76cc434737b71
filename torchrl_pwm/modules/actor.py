"""PWM's stochastic actor: a tanh-squashed Gaussian with a state-independent log-std."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import Bounded, TensorSpec
from torchrl.modules import ProbabilisticActor, TanhNormal

from torchrl_pwm.modules.layers import normed_mlp

__all__ = ["StateIndependentScale", "make_pwm_actor"]


class StateIndependentScale(nn.Module):
    """Appends a learnable, state-independent standard deviation to a location head.

    ``forward(x)`` returns ``(loc, scale)`` with ``loc = net(x)`` and
    ``scale = exp(log_std)`` broadcast to ``loc``. Like the original PWM code, ``log_std`` is
    clamped *in place* to ``>= min_log_std`` on every call: the value is clamped, the gradient
    still flows to the parameter.

    Args:
        net: the location network.
        action_dim: size of the action.

    Keyword Args:
        init_log_std: initial log-std (-1.0).
        min_log_std: lower bound of the log-std (-1.427, i.e. std ≥ 0.24).

    Raises:
        ValueError: if ``init_log_std < min_log_std`` (the first call would silently clamp it).

    Examples:
        >>> m = StateIndependentScale(nn.Linear(3, 2), 2)
        >>> loc, scale = m(torch.zeros(4, 3))
        >>> scale
        tensor([[0.3679, 0.3679],
                [0.3679, 0.3679],
                [0.3679, 0.3679],
                [0.3679, 0.3679]], grad_fn=<ExpandBackward0>)
    """

    def __init__(
        self,
        net: nn.Module,
        action_dim: int,
        *,
        init_log_std: float = -1.0,
        min_log_std: float = -1.427,
    ) -> None:
        if init_log_std < min_log_std:
            raise ValueError(
                f"init_log_std={init_log_std} is below min_log_std={min_log_std}: the first "
                "call would clamp it; raise init_log_std or lower min_log_std."
            )
        super().__init__()
        self.net = net
        self.min_log_std = min_log_std
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    @torch.no_grad()
    def clamp_(self) -> StateIndependentScale:
        """Clamp the stored log-std to ``>= min_log_std`` in place (after an optimiser step)."""
        self.log_std.clamp_(min=self.min_log_std)
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.net(x)
        if not torch.compiler.is_compiling():
            # In-place on .data, as the original: no version bump, so repeated calls inside
            # one differentiable rollout stay valid. A traced forward cannot write its
            # parameters: PWMOptimizationStepper clamps after each actor step instead.
            self.log_std.data.clamp_(min=self.min_log_std)
        # straight-through: the clamped value, the gradient of the identity (as the original)
        log_std = self.log_std + (self.log_std.clamp(min=self.min_log_std) - self.log_std).detach()
        return loc, log_std.exp().expand_as(loc)


def make_pwm_actor(
    latent_dim: int,
    action_spec: TensorSpec | int,
    *,
    hidden_sizes: Sequence[int] = (400, 200, 100),
    init_log_std: float = -1.0,
    min_log_std: float = -1.427,
    in_key: NestedKey = "latent",
    action_key: NestedKey = "action",
    device: torch.device | str | None = None,
) -> ProbabilisticActor:
    """Build PWM's actor as a TorchRL :class:`~torchrl.modules.ProbabilisticActor`.

    ``a = tanh(μ(z) + σ·ε)`` (rescaled to the action bounds when they are not ``[-1, 1]``),
    sampled with ``rsample`` under ``ExplorationType.RANDOM``; ``tanh(μ(z))`` under
    ``DETERMINISTIC`` (evaluation). The std ``σ`` is a learned vector, independent of the
    state (see :class:`StateIndependentScale`). The MLP is ``[400, 200, 100]`` with
    ``Linear → Mish → LayerNorm`` blocks and PyTorch's default initialisation, as the
    original code.

    Args:
        latent_dim: size of the actor's input (the world model's latent).
        action_spec: the action spec (bounded), or the action size for ``[-1, 1]`` actions.

    Keyword Args:
        hidden_sizes: hidden layer sizes.
        init_log_std: initial log-std.
        min_log_std: lower bound of the log-std.
        in_key: input key (``"latent"``).
        action_key: output key (``"action"``).
        device: where to build the parameters.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl.envs.utils import ExplorationType, set_exploration_type
        >>> actor = make_pwm_actor(16, 2)
        >>> td = TensorDict(latent=torch.randn(5, 16), batch_size=[5])
        >>> with set_exploration_type(ExplorationType.RANDOM):
        ...     td = actor(td)
        >>> td["action"].shape, bool(td["action"].abs().max() < 1)
        (torch.Size([5, 2]), True)
    """
    if isinstance(action_spec, int):
        action_spec = Bounded(-1.0, 1.0, (action_spec,), device=device)
    if not isinstance(action_spec, Bounded):
        raise TypeError(
            f"make_pwm_actor needs a Bounded action spec (tanh-squashed actions), got "
            f"{type(action_spec).__name__}."
        )
    action_dim = action_spec.shape[-1]
    net = StateIndependentScale(
        normed_mlp(latent_dim, hidden_sizes, action_dim, activation_first=True),
        action_dim,
        init_log_std=init_log_std,
        min_log_std=min_log_std,
    ).to(device)
    low, high = action_spec.space.low, action_spec.space.high
    if bool((low == -1).all()) and bool((high == 1).all()):
        # plain floats: no per-call device copies and checks of the bounds in TanhNormal
        low, high = -1.0, 1.0
    return ProbabilisticActor(
        TensorDictModule(net, in_keys=[in_key], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        out_keys=[action_key],
        spec=action_spec,
        distribution_class=TanhNormal,
        # safe_tanh=False: exact tanh (we never evaluate log-probs of saturated actions).
        distribution_kwargs={"low": low, "high": high, "safe_tanh": False},
        return_log_prob=False,
    )
