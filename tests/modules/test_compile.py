"""The one-exp Mish and compile_networks: same values and gradients as eager, same state dict."""

import pytest
import torch
import torch._inductor.config
from torch import nn

from tests.trainers._tiny import H, tiny_agent
from torchrl_pwm.modules import EnsembleMLP, Mish, compile_networks
from torchrl_pwm.trainers import PWMOptimConfig, PWMOptimizationStepper


def _reference_mish(x):  # the textbook definition, in float64
    return x * torch.tanh(nn.functional.softplus(x))


def test_one_exp_mish_matches_definition_values_and_gradients():
    x = torch.cat([torch.linspace(-60, 60, 4001), torch.tensor([-1e4, 19.9, 20.0, 20.1, 1e4])])
    x = x.double().requires_grad_()
    ours, ref = Mish._one_exp(x), _reference_mish(x)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-12)
    # float32, as the networks run it: as close to the float64 truth as aten's mish
    x32 = x.detach().float()
    err_ours = (Mish._one_exp(x32).double() - ref.detach()).abs().max()
    err_aten = (nn.functional.mish(x32).double() - ref.detach()).abs().max()
    assert err_ours <= 2 * err_aten + 1e-7


def test_mish_takes_the_one_exp_path_only_when_compiling():
    calls = []
    original = Mish._one_exp

    def spy(x):
        calls.append(1)
        return original(x)

    m = Mish()
    x = torch.randn(7)
    try:
        Mish._one_exp = staticmethod(spy)
        torch.testing.assert_close(m(x), nn.functional.mish(x))
        assert not calls  # eager: aten's kernel
        compiled = torch.compile(m, backend="eager")
        torch.testing.assert_close(compiled(x), nn.functional.mish(x))
        assert calls  # traced: the one-exp formula
    finally:
        Mish._one_exp = staticmethod(original)
        torch._dynamo.reset()


def test_compile_networks_finds_every_mlp_once_and_keeps_the_state_dict():
    *_, loss = tiny_agent()
    keys = {k: v.clone() for k, v in loss.state_dict().items()}
    names = compile_networks(loss, backend="eager")
    # encoder, dynamics, reward, actor MLP and the critic ensemble; nothing nested twice
    assert len(names) == 5, names
    assert sum("encoder" in n for n in names) == 1
    assert any(isinstance(loss.get_submodule(n), EnsembleMLP) for n in names)
    assert not any(a != b and b.startswith(a + ".") for a in names for b in names)
    after = loss.state_dict()
    assert after.keys() == keys.keys()
    assert all(torch.equal(after[k], v) for k, v in keys.items())
    torch._dynamo.reset()


def _batch(b=8):
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(b, H + 1, 5, generator=g)
    from tensordict import TensorDict

    return TensorDict(
        observation=obs[:, :-1],
        action=torch.rand(b, H, 1, generator=g) * 2 - 1,
        next=TensorDict(observation=obs[:, 1:], reward=torch.rand(b, H, 1, generator=g)),
        batch_size=[b, H],
    ).reshape(-1)


@pytest.mark.parametrize(
    "backend",
    ["eager", pytest.param("inductor", marks=pytest.mark.slow)],  # ~1 min of compiling
)
def test_compiled_update_equals_eager_update(backend):
    """Two PWM updates, eager and compiled from the same weights and data, agree: losses and
    the parameters after each Adam step (Inductor reorders float sums: 1e-4)."""
    steppers = []
    for compiled in (False, True):
        torch.manual_seed(0)
        *_, loss = tiny_agent()
        if compiled:
            compile_networks(loss, backend=backend)
        cfg = PWMOptimConfig(critic_passes=1, critic_minibatches=2)
        steppers.append(PWMOptimizationStepper(loss, H, config=cfg))
    for _ in range(2):
        torch.manual_seed(1)  # same critic minibatch permutation and actor noise
        eager = steppers[0].step(None, _batch())
        torch.manual_seed(1)
        comp = steppers[1].step(None, _batch())
        for key in ("loss_consistency", "loss_reward", "loss_actor", "loss_value"):
            torch.testing.assert_close(comp[key], eager[key], rtol=1e-4, atol=1e-5)
    for (name, p_eager), p_comp in zip(
        steppers[0].loss.named_parameters(), steppers[1].loss.parameters()
    ):
        torch.testing.assert_close(p_comp, p_eager, rtol=1e-4, atol=1e-5, msg=name)
    torch._dynamo.reset()


@pytest.mark.slow  # ~1 min of compiling
@torch._inductor.config.patch(fallback_random=True)
def test_compiled_stepper_equals_eager_stepper():
    """PWMOptimConfig(compile=True): the four update functions compiled with fullgraph=True
    (Inductor) give the eager losses and parameters after two PWM steps (1e-4: Inductor
    reorders float sums). Inductor draws the actor's noise from its own generator unless
    ``fallback_random``; with it, the same noise as eager."""
    steppers = []
    for compiled in (False, True):
        torch.manual_seed(0)
        *_, loss = tiny_agent()
        cfg = PWMOptimConfig(critic_passes=2, critic_minibatches=2, compile=compiled)
        steppers.append(PWMOptimizationStepper(loss, H, config=cfg))
    for _ in range(2):
        torch.manual_seed(1)
        eager = steppers[0].step(None, _batch())
        torch.manual_seed(1)
        comp = steppers[1].step(None, _batch())
        for key in ("loss_consistency", "loss_reward", "loss_actor", "loss_value"):
            torch.testing.assert_close(comp[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
    for (name, p_eager), p_comp in zip(
        steppers[0].loss.named_parameters(), steppers[1].loss.parameters(), strict=True
    ):
        torch.testing.assert_close(p_comp, p_eager, rtol=1e-4, atol=1e-5, msg=name)
    torch._dynamo.reset()
