"""PWM's critic: an ensemble of state-value MLPs evaluated in one vectorised call."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn

from torchrl_pwm.modules.layers import EnsembleMLP

__all__ = ["ValueEnsemble"]


class _MinOverMembers(nn.Module):
    def __init__(self, ensemble: EnsembleMLP):
        super().__init__()
        self.ensemble = ensemble

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = self.ensemble(latent)  # [*B, N, 1]
        return values, values.min(-2).values


class ValueEnsemble(TensorDictModule):
    """``num_critics`` state-value networks ``V_k(z)`` in one batched call, with their min.

    Every member is a ``[400, 200]`` MLP with ``Linear → Mish → LayerNorm`` blocks and
    orthogonal initialisation (gain √2), as PWM's ``CriticMLP``; the members run as one
    batched matrix product per layer (:class:`~torchrl_pwm.modules.EnsembleMLP`), not one by
    one.

    Writes ``member_value_key`` (every member, ``[*B, num_critics, 1]``) and ``out_key``
    (the min over members, ``[*B, 1]``: the value PWM bootstraps with). Because the min is
    written under TorchRL's default ``"state_value"``, TorchRL's value estimators use it
    unchanged.

    Args:
        latent_dim: input size.

    Keyword Args:
        num_critics: ensemble size (3).
        hidden_sizes: hidden sizes of each member (``(400, 200)``).
        in_key: input key (``"latent"``).
        out_key: key of the min (``"state_value"``).
        member_value_key: key of the members' values (``"state_value_members"``).
        device: where to build the parameters.

    Examples:
        >>> from tensordict import TensorDict
        >>> critic = ValueEnsemble(16, num_critics=3)
        >>> td = critic(TensorDict(latent=torch.randn(8, 16), batch_size=[8]))
        >>> td["state_value_members"].shape, td["state_value"].shape
        (torch.Size([8, 3, 1]), torch.Size([8, 1]))
        >>> bool((td["state_value"] == td["state_value_members"].min(-2).values).all())
        True
    """

    def __init__(
        self,
        latent_dim: int,
        *,
        num_critics: int = 3,
        hidden_sizes: Sequence[int] = (400, 200),
        in_key: NestedKey = "latent",
        out_key: NestedKey = "state_value",
        member_value_key: NestedKey = "state_value_members",
        device: torch.device | str | None = None,
    ) -> None:
        if num_critics < 1:
            raise ValueError(f"num_critics must be >= 1, got {num_critics}.")
        ensemble = EnsembleMLP(num_critics, latent_dim, hidden_sizes, 1, norm_first=False)
        super().__init__(
            _MinOverMembers(ensemble).to(device),
            in_keys=[in_key],
            out_keys=[member_value_key, out_key],
        )
        self.num_critics = num_critics
