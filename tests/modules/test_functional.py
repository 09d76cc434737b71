"""symlog/two-hot math against closed forms and TorchRL's own implementation."""

import math

import pytest
import torch
from torchrl.modules.models.model_based import two_hot_decode, two_hot_encode
from torchrl.objectives import symexp as trl_symexp
from torchrl.objectives import symlog as trl_symlog

from torchrl_pwm.modules import soft_cross_entropy, symexp, symlog, two_hot, two_hot_inv


def test_symlog_symexp_closed_form():
    x = torch.tensor([-5.0, -0.5, 0.0, 0.5, 5.0], dtype=torch.float64)
    expected = torch.tensor(
        [math.copysign(math.log1p(abs(v)), v) for v in x.tolist()], dtype=x.dtype
    )
    torch.testing.assert_close(symlog(x), expected)
    torch.testing.assert_close(symexp(symlog(x)), x)
    torch.testing.assert_close(symlog(x), trl_symlog(x))
    torch.testing.assert_close(symexp(x), trl_symexp(x))


def test_two_hot_hand_values():
    # bins linspace(-2, 2, 5) = [-2, -1, 0, 1, 2]; symlog(e^0.25 - 1) = 0.25 -> bins 2 and 3.
    x = torch.tensor([[math.expm1(0.25)], [0.0], [-math.expm1(2.0)], [math.expm1(50.0)]])
    t = two_hot(x, num_bins=5, vmin=-2.0, vmax=2.0)
    expected = torch.tensor(
        [
            [0, 0, 0.75, 0.25, 0],
            [0, 0, 1.0, 0, 0],
            [1.0, 0, 0, 0, 0],  # exactly vmin
            [0, 0, 0, 0, 1.0],  # clamped to vmax
        ]
    )
    torch.testing.assert_close(t, expected)


def test_two_hot_matches_torchrl_and_round_trips():
    x = torch.randn(64, 1) * 30
    bins = torch.linspace(-10, 10, 101)
    ours = two_hot(x)
    ref = two_hot_encode(trl_symlog(x).squeeze(-1), bins)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.sum(-1), torch.ones(64))
    # decoding the exact two-hot distribution recovers x (in symlog space: exactly)
    logits = ours.clamp_min(1e-30).log()
    torch.testing.assert_close(
        two_hot_inv(logits, apply_symexp=False), symlog(x), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(two_hot_inv(logits), x, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(
        two_hot_inv(logits, apply_symexp=False).squeeze(-1),
        two_hot_decode(logits, bins),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("num_bins", [5, 101])
def test_soft_cross_entropy_hand(num_bins):
    logits = torch.randn(3, num_bins, dtype=torch.float64)
    target = torch.tensor([[0.3], [-1.0], [2.0]], dtype=torch.float64)
    log_p = logits.log_softmax(-1)
    expected = -(two_hot(target, num_bins) * log_p).sum(-1, keepdim=True)
    torch.testing.assert_close(soft_cross_entropy(logits, target), expected)
    # uniform prediction: CE = log(num_bins) for any target
    torch.testing.assert_close(
        soft_cross_entropy(torch.zeros(3, num_bins, dtype=torch.float64), target),
        torch.full((3, 1), math.log(num_bins), dtype=torch.float64),
    )


def test_two_hot_propagates_nan():
    t = two_hot(torch.tensor([[float("nan")], [1.0]]))
    assert t[0].isnan().any() and torch.isfinite(t[1]).all()
