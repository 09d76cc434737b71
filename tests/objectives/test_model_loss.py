"""TDMPC2ModelLoss against a hand-written, loop-by-loop computation."""

import math

import pytest
import torch
from tensordict import TensorDict

from torchrl_pwm.modules import TDMPC2WorldModel
from torchrl_pwm.objectives import TDMPC2ModelLoss

B, H, OBS, A = 3, 4, 5, 2


def _slices(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, H + 1, OBS, generator=g, dtype=dtype)
    return TensorDict(
        observation=obs[:, :-1],
        action=torch.rand(B, H, A, generator=g, dtype=dtype) * 2 - 1,
        task=torch.tensor([[0] * H, [1] * H, [0] * H]),
        next=TensorDict(
            observation=obs[:, 1:],
            reward=torch.rand(B, H, 1, generator=g, dtype=dtype) * 3,
            batch_size=[B, H],
        ),
        batch_size=[B, H],
    )


def _two_hot_scalar(x, num_bins=101, vmin=-10.0, vmax=10.0):
    s = min(max(math.copysign(math.log1p(abs(x)), x), vmin), vmax)
    pos = (s - vmin) / ((vmax - vmin) / (num_bins - 1))
    k = min(math.floor(pos), num_bins - 1)
    out = [0.0] * num_bins
    out[k] += 1 - (pos - k)
    out[(k + 1) % num_bins] += pos - k
    return torch.tensor(out, dtype=torch.float64)


def _hand_loss(wm, data, rho, num_bins):
    cons_total, rew_total = 0.0, 0.0
    for b in range(B):
        task = data["task"][b, 0] if wm.num_tasks else None
        z = wm.encode(data["observation"][b, 0], task)
        cons, rew = 0.0, 0.0
        for t in range(H):
            a = data["action"][b, t]
            logits = wm.reward_logits(z, a, task)
            r = data["next", "reward"][b, t, 0].item()
            if num_bins:
                ce = -(_two_hot_scalar(r) * logits.log_softmax(-1)).sum()
            else:
                ce = (logits[0] - r) ** 2
            rew = rew + rho**t * ce
            z = wm.next(z, a, task)
            with torch.no_grad():
                target = wm.encode(data["next", "observation"][b, t], task)
            cons = cons + rho**t * ((z - target) ** 2).mean()
        cons_total = cons_total + cons / H
        rew_total = rew_total + rew / H
    return cons_total / B, rew_total / B


@pytest.mark.parametrize("num_bins", [101, 0])
@pytest.mark.parametrize("multitask", [False, True])
def test_equals_hand_computation(num_bins, multitask):
    wm = TDMPC2WorldModel(
        OBS,
        A,
        size="1M",
        num_bins=num_bins,
        num_tasks=2 if multitask else None,
        action_dims=[2, 1] if multitask else None,
    ).double()
    torch.nn.init.normal_(wm.get_reward_operator().module.net[-1].weight, std=0.1)
    data = _slices()
    loss = TDMPC2ModelLoss(wm, temporal_discount=0.9, consistency_coef=20, reward_coef=0.1)
    out = loss(data)
    cons, rew = _hand_loss(wm, data, 0.9, num_bins)
    torch.testing.assert_close(out["loss_consistency"], 20 * cons)
    torch.testing.assert_close(out["loss_reward"], 0.1 * rew)
    torch.testing.assert_close(out["consistency"], cons.detach())


def test_targets_are_stop_gradient():
    wm = TDMPC2WorldModel(OBS, A, size="1M").double()
    data = _slices()
    loss = TDMPC2ModelLoss(wm)
    # the targets E(o_{t+1}) carry no graph; the prediction path reaches the encoder via z_0
    out = loss(data)
    latents, targets, _ = loss.latent_rollout(data)
    assert not targets.requires_grad and latents.requires_grad
    out["loss_consistency"].backward()
    assert wm.encoder.module.net[0].weight.grad.abs().sum() > 0


def test_rejects_flat_batches():
    wm = TDMPC2WorldModel(OBS, A, size="1M")
    with pytest.raises(ValueError, match=r"\[batch, horizon\]"):
        TDMPC2ModelLoss(wm)(_slices(dtype=torch.float32).reshape(-1))


@pytest.mark.parametrize("multitask", [False, True])
def test_compiled_rollout_region_keeps_the_gradients(multitask):
    """The training rollout's dynamics step is a nested compile region (traced once, reused
    for the ``H`` steps). Through AOTAutograd (``aot_eager``: the path Inductor compiles) the
    losses and every parameter's gradient equal eager mode's."""
    wm = TDMPC2WorldModel(
        OBS,
        A,
        size="1M",
        num_tasks=2 if multitask else None,
        action_dims=[2, 1] if multitask else None,
    )
    loss = TDMPC2ModelLoss(wm)
    data = _slices(dtype=torch.float32)
    inputs = loss._tensors(data if multitask else data.exclude("task"))
    grads = []
    try:
        for fn in (
            loss.loss_from_tensors,
            torch.compile(loss.loss_from_tensors, backend="aot_eager", fullgraph=True),
        ):
            wm.zero_grad(set_to_none=True)
            out = fn(**inputs)
            (out["loss_consistency"] + out["loss_reward"]).backward()
            grads.append(
                {n: p.grad.clone() for n, p in wm.named_parameters() if p.grad is not None}
            )
            grads[-1]["loss"] = out["loss_consistency"].detach()
    finally:
        torch._dynamo.reset()
    eager, compiled = grads
    assert eager.keys() == compiled.keys() and len(eager) > 4
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-5, atol=1e-6, msg=name)
