"""Building blocks shared by the world model, the actor and the critics."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["EnsembleMLP", "Mish", "SimNorm", "compile_networks", "normed_mlp", "trunc_normal_init_"]


class Mish(nn.Mish):
    """``x * tanh(softplus(x))`` (TD-MPC2's and PWM's activation), with one exponential when
    compiled.

    Eager calls :func:`torch.nn.functional.mish`. Under :func:`torch.compile` it uses the
    identity ``tanh(softplus(x)) = n / (n + 2)`` with ``n = eˣ (eˣ + 2)``: Inductor fuses it
    into one loop with a single ``exp``, where ``aten.mish`` decomposes into ``exp``, ``log1p``
    and ``tanh`` (forward + backward about 3x faster on this project's CPU, see
    ``benchmarks/update_path.py``). Inputs are clamped at 20 inside the ratio, where it is 1
    in float32. Same values to float32 rounding; no parameters, so state dicts are unchanged.

    Examples:
        >>> x = torch.linspace(-30, 30, 101)
        >>> torch.allclose(Mish()(x), Mish._one_exp(x), atol=1e-5)
        True
    """

    @staticmethod
    def _one_exp(x: torch.Tensor) -> torch.Tensor:
        e = torch.exp(x.clamp(max=20.0))
        n = e * (e + 2.0)
        return x * (n / (n + 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return self._one_exp(x)
        return nn.functional.mish(x)


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
    activation_first: bool = False,
) -> nn.Sequential:
    """TD-MPC2's MLP: hidden blocks ``Linear → LayerNorm → Mish``, then the output layer.

    With ``activation_first=True`` the blocks are ``Linear → Mish → LayerNorm`` (SHAC's and
    PWM's actor and critics).

    Args:
        in_features: input size.
        hidden: hidden sizes, one block each.
        out_features: output size.

    Keyword Args:
        last_activation: if given, the output layer is ``Linear → LayerNorm → last_activation``
            (e.g. :class:`SimNorm` for encoders and dynamics); otherwise a plain ``Linear``.
        dropout: dropout probability after the first hidden ``Linear`` (TD-MPC2's Q heads).
        activation_first: block order, see above.

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
        block = [Mish(), nn.LayerNorm(n_out)] if activation_first else [nn.LayerNorm(n_out), Mish()]
        layers += block
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
        activation: activation class (default :class:`Mish`).
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
        activation: type[nn.Module] = Mish,
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
        #: layers after the first as one batched GEMM (``True``), one GEMM per member
        #: (``False``) or ``None``: batched on CUDA, per member on CPU, where a batch of 3
        #: splits unevenly over the threads (measured: 42.8 vs 46.1 ms per critic update on
        #: 2 threads, 73 vs 90 ms on one; ``benchmarks/update_path.py``)
        self.batched: bool | None = None

    def _block(self, h: torch.Tensor, i: int) -> torch.Tensor:
        """Activation and LayerNorm (per-member affine) of all members after hidden layer ``i``;
        ``h`` is ``[N, n, features]``."""
        norm = (h.shape[-1],)
        w, b = self.norm_weights[i], self.norm_biases[i]  # [N, 1, features]
        if self.norm_first:
            return self.activation(torch.addcmul(b, nn.functional.layer_norm(h, norm), w))
        return torch.addcmul(b, nn.functional.layer_norm(self.activation(h), norm), w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        n_members = self.ensemble_size
        # The input is shared: the first layer of all members is one GEMM; the others are one
        # batched GEMM each ([N, n, in] @ [N, in, out]) or one GEMM per member (see
        # ``batched``), with the LayerNorm affine broadcast over members.
        w0 = self.weights[0]
        h = torch.addmm(
            self.biases[0].transpose(0, 1).reshape(1, -1),
            x,
            w0.transpose(0, 1).reshape(w0.shape[1], -1),
        )
        if self.dropout and self.training:
            h = nn.functional.dropout(h, self.dropout, training=True)
        h = h.view(x.shape[0], n_members, -1).transpose(0, 1)  # [N, n, hidden]
        batched = self.batched if self.batched is not None else x.is_cuda
        for i in range(1, len(self.weights)):
            h = self._block(h, i - 1)
            if batched:
                h = torch.baddbmm(self.biases[i], h, self.weights[i])
            else:
                h = torch.stack(
                    [
                        torch.addmm(self.biases[i][k], h[k], self.weights[i][k])
                        for k in range(n_members)
                    ]
                )
        # [N, n, out] -> [*B, N, out]
        return h.transpose(0, 1).reshape(*batch, n_members, h.shape[-1])

    def extra_repr(self) -> str:
        sizes = [w.shape[1] for w in self.weights] + [self.weights[-1].shape[2]]
        return f"ensemble_size={self.ensemble_size}, sizes={sizes}, norm_first={self.norm_first}"


def compile_networks(module: nn.Module, **compile_kwargs) -> list[str]:
    """Compile, in place, the forward of every MLP inside ``module`` (its ``nn.Sequential``
    and :class:`EnsembleMLP` sub-modules, outermost only) with :func:`torch.compile`.

    The MLPs are where the FLOPs are and are plain tensor code, so they compile without graph
    breaks; the losses around them (TensorDict plumbing, value estimators) stay eager. Each
    MLP's ``forward`` is replaced on the instance, so parameter names, ``state_dict`` s and
    checkpoints are those of the eager model, and functional calls (target parameters swapped
    in with ``TensorDictParams.to_module``) reuse the compiled code. Call it last, on the
    modules that will run: a deep copy made afterwards would still call the original's
    forward. (:meth:`torch.nn.Module.compile` is not used: with torch 2.13 it leaves modules
    made only of ``torch.nn`` layers uncompiled.) Measured in ``benchmarks/update_path.py``.

    Args:
        module: e.g. a :class:`~torchrl_pwm.objectives.PWMLoss` or a world model.

    Keyword Args:
        compile_kwargs: passed to :func:`torch.compile` (``mode``, ``backend``, ``dynamic``).

    Returns:
        The qualified names of the compiled sub-modules (``""``: ``module`` itself).

    Examples:
        >>> net = nn.Sequential(normed_mlp(4, [8], 2), nn.Tanh())
        >>> compile_networks(net, backend="eager")
        ['']
        >>> net(torch.randn(3, 4)).shape
        torch.Size([3, 2])
    """
    names: list[str] = []
    seen: set[int] = set()
    for name, sub in _all_modules(module):
        if id(sub) in seen or not isinstance(sub, (nn.Sequential, EnsembleMLP)):
            continue
        seen.update(id(m) for m in sub.modules())  # not its layers, nor it again
        sub.forward = torch.compile(_own_code(sub.forward, len(names)), **compile_kwargs)
        names.append(name)
    return names


def _all_modules(module: nn.Module, prefix: str = "", visited: set[int] | None = None):
    """``named_modules`` plus the networks a TorchRL ``LossModule`` keeps unregistered (the
    module behind ``convert_to_functional``'s parameters is a plain attribute)."""
    visited = set() if visited is None else visited
    for name, sub in module.named_modules(prefix=prefix):
        if id(sub) in visited:
            continue
        visited.add(id(sub))
        yield name, sub
        for attr, value in vars(sub).items():
            if isinstance(value, nn.Module) and attr not in sub._modules:
                yield from _all_modules(value, f"{name}.{attr}" if name else attr, visited)


def _own_code(fn, index: int):
    """``fn`` behind a function with a code object of its own.

    Dynamo keeps its compiled graphs, and counts recompilations against
    ``torch._dynamo.config.recompile_limit`` (8), per code object; all ``nn.Sequential``
    share one ``forward`` (and ``torch.compile`` of any bound method one wrapper), so a
    world model's three MLPs plus the actor's, each with and without grad, would exhaust it
    and fall back to eager.
    """

    def forward(*args, **kwargs):
        return fn(*args, **kwargs)

    forward.__code__ = forward.__code__.replace(co_name=f"compiled_forward_{index}")
    return forward
