"""Building blocks shared by the world model, the actor and the critics."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["EnsembleMLP", "SimNorm", "normed_mlp", "trunc_normal_init_"]


class SimNorm(nn.Module):
    """Simplicial normalisation: a softmax over consecutive groups of ``simplex_dim`` features.

    TD-MPC2's latent regulariser: the latent is a concatenation of ``dim / simplex_dim``
    points on simplices, which keeps it bounded and smooth (Lavoie et al., 2022).

    Args:
        simplex_dim: size of each group (8 in TD-MPC2); must divide the last dimension.

    Examples:
        >>> z = SimNorm(8)(torch.randn(4, 32))
        >>> torch.allclose(z.view(4, 4, 8).sum(-1), torch.ones(4, 4))
        True
    """

    def __init__(self, simplex_dim: int = 8) -> None:
        super().__init__()
        self.simplex_dim = simplex_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.simplex_dim:
            raise ValueError(
                f"SimNorm: last dimension {x.shape[-1]} is not a multiple of "
                f"simplex_dim={self.simplex_dim}."
            )
        shape = x.shape
        return x.unflatten(-1, (-1, self.simplex_dim)).softmax(-1).view(shape)

    def extra_repr(self) -> str:
        return f"simplex_dim={self.simplex_dim}"


def normed_mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    *,
    last_activation: nn.Module | None = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """TD-MPC2's MLP: hidden blocks ``Linear → LayerNorm → Mish``, then the output layer.

    Args:
        in_features: input size.
        hidden: hidden sizes, one block each.
        out_features: output size.

    Keyword Args:
        last_activation: if given, the output layer is ``Linear → LayerNorm → last_activation``
            (e.g. :class:`SimNorm` for encoders and dynamics); otherwise a plain ``Linear``.
        dropout: dropout probability after the first hidden ``Linear`` (TD-MPC2's Q heads).

    Examples:
        >>> net = normed_mlp(10, [32, 32], 16, last_activation=SimNorm(8))
        >>> net(torch.randn(3, 10)).shape
        torch.Size([3, 16])
    """
    layers: list[nn.Module] = []
    sizes = [in_features, *hidden]
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if dropout and i == 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.LayerNorm(n_out), nn.Mish()]
    layers.append(nn.Linear(sizes[-1], out_features))
    if last_activation is not None:
        layers += [nn.LayerNorm(out_features), last_activation]
    return nn.Sequential(*layers)


def trunc_normal_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """TD-MPC2's initialisation, in place: ``Linear`` weights ~ truncated normal, biases zero.

    Embeddings are drawn from ``U(-0.02, 0.02)``; LayerNorms keep their defaults.

    Examples:
        >>> net = trunc_normal_init_(nn.Linear(4, 4))
        >>> bool(net.bias.abs().sum() == 0)
        True
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.uniform_(m.weight, -0.02, 0.02)
    return module


class EnsembleMLP(nn.Module):
    """``ensemble_size`` independent MLPs evaluated in one batched matrix product per layer.

    Each member has its own weights (stored stacked on a leading dimension); the input is
    shared. The hidden blocks are ``Linear → activation → LayerNorm`` (PWM/SHAC critics,
    ``norm_first=False``) or ``Linear → LayerNorm → activation`` (TD-MPC2's heads,
    ``norm_first=True``).

    Args:
        ensemble_size: number of members.
        in_features: input size.
        hidden: hidden sizes.
        out_features: output size of each member.

    Keyword Args:
        norm_first: block order, see above.
        activation: activation class (default ``nn.Mish``).
        dropout: dropout after the first hidden layer, an independent mask per member.
        init: ``"orthogonal"`` (gain √2, PWM's critic) or ``"trunc_normal"`` (TD-MPC2).
        zero_last: zero the output layer's weights (TD-MPC2 reward/Q heads).

    Shapes:
        input ``[*B, in_features]`` → output ``[*B, ensemble_size, out_features]``.

    Examples:
        >>> ens = EnsembleMLP(3, 8, [16, 16], 1)
        >>> ens(torch.randn(5, 8)).shape
        torch.Size([5, 3, 1])
    """

    def __init__(
        self,
        ensemble_size: int,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        norm_first: bool = False,
        activation: type[nn.Module] = nn.Mish,
        dropout: float = 0.0,
        init: str = "orthogonal",
        zero_last: bool = False,
    ) -> None:
        super().__init__()
        if init not in ("orthogonal", "trunc_normal"):
            raise ValueError(f"init must be 'orthogonal' or 'trunc_normal', got {init!r}.")
        self.ensemble_size = ensemble_size
        self.norm_first = norm_first
        self.dropout = dropout
        sizes = [in_features, *hidden, out_features]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norm_weights = nn.ParameterList()
        self.norm_biases = nn.ParameterList()
        for n_in, n_out in itertools.pairwise(sizes):
            w = torch.empty(ensemble_size, n_in, n_out)
            for k in range(ensemble_size):
                if init == "orthogonal":
                    nn.init.orthogonal_(w[k].T, gain=math.sqrt(2))
                else:
                    nn.init.trunc_normal_(w[k], std=0.02)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(ensemble_size, 1, n_out)))
        for n in hidden:
            self.norm_weights.append(nn.Parameter(torch.ones(ensemble_size, 1, n)))
            self.norm_biases.append(nn.Parameter(torch.zeros(ensemble_size, 1, n)))
        if zero_last:
            nn.init.zeros_(self.weights[-1])
        self.activation = activation()

    def _block(self, h: torch.Tensor, k: int, i: int) -> torch.Tensor:
        """Activation and LayerNorm of member ``k`` after hidden layer ``i``."""
        norm = (h.shape[-1],)
        w, b = self.norm_weights[i][k, 0], self.norm_biases[i][k, 0]
        if self.norm_first:
            return self.activation(nn.functional.layer_norm(h, norm, w, b))
        return nn.functional.layer_norm(self.activation(h), norm, w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        n_members, n_layers = self.ensemble_size, len(self.weights)
        # The input is shared: the first layer of all members is one GEMM. The other layers
        # run member by member with fused addmm/layer_norm, which is faster on CPU than
        # batched bmm with a broadcast LayerNorm affine (see benchmarks/losses.py).
        w0 = self.weights[0]
        h0 = torch.addmm(
            self.biases[0].transpose(0, 1).reshape(1, -1),
            x,
            w0.transpose(0, 1).reshape(w0.shape[1], -1),
        )
        if self.dropout and self.training:
            h0 = nn.functional.dropout(h0, self.dropout, training=True)
        outs = []
        for k, h in enumerate(h0.chunk(n_members, dim=-1)):
            for i in range(1, n_layers):
                h = self._block(h, k, i - 1)
                h = torch.addmm(self.biases[i][k], h, self.weights[i][k])
            outs.append(h)
        # [B, N, out] -> [*B, N, out]
        return torch.stack(outs, -2).reshape(*batch, n_members, outs[0].shape[-1])

    def extra_repr(self) -> str:
        sizes = [w.shape[1] for w in self.weights] + [self.weights[-1].shape[2]]
        return f"ensemble_size={self.ensemble_size}, sizes={sizes}, norm_first={self.norm_first}"
