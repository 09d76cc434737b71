"""SimNorm, the MLP builder and the vectorised ensemble against explicit per-member nets."""

import pytest
import torch
from torch import nn

from torchrl_pwm.modules import EnsembleMLP, SimNorm, normed_mlp


def test_simnorm_groups_sum_to_one():
    x = torch.randn(5, 7, 64) * 10
    z = SimNorm(8)(x)
    torch.testing.assert_close(z.view(5, 7, 8, 8).sum(-1), torch.ones(5, 7, 8))
    assert (z >= 0).all()
    # each group is exactly a softmax of its own inputs
    torch.testing.assert_close(z[..., 8:16], x[..., 8:16].softmax(-1))


def test_simnorm_rejects_bad_size():
    with pytest.raises(ValueError, match="multiple of simplex_dim"):
        SimNorm(8)(torch.randn(3, 12))


def test_normed_mlp_layout():
    net = normed_mlp(4, [16, 16], 8, last_activation=SimNorm(8), dropout=0.1)
    kinds = [type(m).__name__ for m in net]
    assert kinds == [
        "Linear", "Dropout", "LayerNorm", "Mish",
        "Linear", "LayerNorm", "Mish",
        "Linear", "LayerNorm", "SimNorm",
    ]  # fmt: skip
    assert type(normed_mlp(4, [16], 2)[-1]) is nn.Linear


def _member(ens: EnsembleMLP, k: int) -> nn.Sequential:
    """Rebuild member k as a plain nn.Sequential with the ensemble's weights."""
    layers = []
    n = len(ens.weights)
    for i in range(n):
        w = ens.weights[i][k]
        lin = nn.Linear(w.shape[0], w.shape[1], dtype=w.dtype)
        lin.weight.data.copy_(w.T)
        lin.bias.data.copy_(ens.biases[i][k, 0])
        layers.append(lin)
        if i < n - 1:
            ln = nn.LayerNorm(w.shape[1], dtype=w.dtype)
            ln.weight.data.copy_(ens.norm_weights[i][k, 0])
            ln.bias.data.copy_(ens.norm_biases[i][k, 0])
            layers += [ln, nn.Mish()] if ens.norm_first else [nn.Mish(), ln]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("batched", [None, True, False])
@pytest.mark.parametrize("norm_first", [False, True])
def test_ensemble_equals_members(norm_first, batched):
    ens = EnsembleMLP(3, 6, [10, 7], 2, norm_first=norm_first).double()
    ens.batched = batched  # one batched GEMM per layer, or one GEMM per member
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for p in [*ens.norm_weights, *ens.norm_biases, *ens.biases]:
            p.normal_()
    x = torch.randn(4, 5, 6, dtype=torch.float64)
    out = ens(x)
    assert out.shape == (4, 5, 3, 2)
    for k in range(3):
        torch.testing.assert_close(out[..., k, :], _member(ens, k)(x))


def test_ensemble_members_are_independent():
    ens = EnsembleMLP(3, 4, [8], 1)
    x = torch.randn(16, 4)
    ens(x)[:, 1].sum().backward()
    for p in ens.weights:
        assert p.grad[1].abs().sum() > 0
        assert p.grad[0].abs().sum() == 0 and p.grad[2].abs().sum() == 0


def test_ensemble_init_and_dropout():
    ens = EnsembleMLP(2, 256, [256], 3, init="trunc_normal", zero_last=True, dropout=0.5)
    assert ens.weights[-1].abs().sum() == 0
    # TD-MPC2's init: trunc_normal_(std=0.02) (its default bounds ±2 leave it ~normal)
    assert abs(ens.weights[0].std().item() - 0.02) < 1e-3
    ortho = EnsembleMLP(2, 16, [8], 1).weights[0][1]  # orthogonal, gain sqrt(2)
    torch.testing.assert_close(ortho.T @ ortho, 2 * torch.eye(8), atol=1e-5, rtol=0)
    x = torch.randn(32, 256)
    ens.eval()
    torch.testing.assert_close(ens(x), ens(x))
    with pytest.raises(ValueError, match="init must be"):
        EnsembleMLP(2, 4, [8], 1, init="xavier")
