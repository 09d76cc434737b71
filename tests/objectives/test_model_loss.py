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


def test_extra_reward_heads_learn_the_same_targets():
    """reward_ensemble=3: loss_reward adds each extra head's discounted two-hot CE (computed
    here member by member) to the primary's; the primary, encoder and dynamics get the
    gradients of the one-head model with the same weights; every extra head gets one."""
    from torchrl_pwm.modules.functional import soft_cross_entropy

    torch.manual_seed(0)
    wm3 = TDMPC2WorldModel(OBS, A, latent_dim=16, enc_dim=32, mlp_dim=32, reward_ensemble=3)
    wm1 = TDMPC2WorldModel(OBS, A, latent_dim=16, enc_dim=32, mlp_dim=32)
    shared = {k: v for k, v in wm3.state_dict().items() if not k.startswith("extra_reward")}
    wm1.load_state_dict(shared)
    data = _slices(dtype=torch.float32).exclude("task")
    rho = 0.9
    out3 = TDMPC2ModelLoss(wm3, temporal_discount=rho, reward_coef=0.1)(data)
    out1 = TDMPC2ModelLoss(wm1, temporal_discount=rho, reward_coef=0.1)(data)
    latents, _, _ = TDMPC2ModelLoss(wm3).latent_rollout(data)
    features = torch.cat([latents[:, :-1], data["action"]], -1)
    heads, extra = wm3.extra_reward_heads, 0.0
    for k in range(heads.ensemble_size):
        single = type(heads)(1, features.shape[-1], [32, 32], 101, norm_first=True)
        for name, p in single.named_parameters():
            p.data.copy_(dict(heads.named_parameters())[name][k : k + 1])
        ce = soft_cross_entropy(single(features)[..., 0, :], data["next", "reward"]).squeeze(-1)
        extra = extra + (ce * rho ** torch.arange(H)).sum(1).mean() / H
    torch.testing.assert_close(out3["loss_reward"] - out1["loss_reward"], 0.1 * extra)
    torch.testing.assert_close(out3["reward_loss"], out1["reward_loss"])  # the primary's
    for out in (out3, out1):
        (out["loss_reward"] + out["loss_consistency"]).backward()
    grads1 = dict(wm1.named_parameters())
    for name, p in wm3.named_parameters():
        if name.startswith("extra_reward_heads"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            torch.testing.assert_close(p.grad, grads1[name].grad, msg=name)


def test_single_task_rollout_traces_its_step_once():
    """The single-task rollout's dynamics step enters the traced graph as one reused
    subgraph (``invoke_subgraph``), not unrolled; a multi-task model unrolls it."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    for multitask in (False, True):
        wm = TDMPC2WorldModel(
            OBS, A, size="1M", num_tasks=2 if multitask else None,
            action_dims=[2, 1] if multitask else None,
        )  # fmt: skip
        loss = TDMPC2ModelLoss(wm)
        data = _slices(dtype=torch.float32)
        inputs = loss._tensors(data if multitask else data.exclude("task"))
        try:
            torch.compile(loss.loss_from_tensors, backend=capture, fullgraph=True)(**inputs)
        finally:
            torch._dynamo.reset()
    single, multi = graphs
    assert single.count("invoke_subgraph(") == H and "invoke_subgraph" not in multi
