"""TDMPC2ModelLoss's value term (TD-MPC2's Q ensemble and policy prior) against a hand-written,
sample-by-sample computation; which parameters each loss reaches; the target Qs and their
soft update; the pre-training stepper."""

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from torchrl_pwm.modules import TDMPC2WorldModel
from torchrl_pwm.objectives import TDMPC2ModelLoss, tdmpc2_discount
from torchrl_pwm.trainers import NonFiniteLossError, WorldModelOptimizationStepper

B, H, OBS, A = 3, 4, 5, 2
BINS = torch.linspace(-10, 10, 101, dtype=torch.float64)


def _model(multitask: bool, num_q: int = 2) -> TDMPC2WorldModel:
    torch.manual_seed(0)
    wm = TDMPC2WorldModel(
        OBS, A, size=None, latent_dim=16, enc_dim=32, mlp_dim=32, num_q=num_q,
        num_tasks=2 if multitask else None, task_dim=8, action_dims=[2, 1] if multitask else None,
        value_heads=True,
    ).double()  # fmt: skip
    with torch.no_grad():  # non-zero reward and Q heads (TD-MPC2 zeroes their last layer)
        wm.get_reward_operator().module.net[-1].weight.normal_(std=0.3)
        wm.q_ensemble.weights[-1].normal_(std=1.0)
    wm.q_ensemble.dropout = 0.0  # deterministic predictions for the hand computation
    return wm


def _slices(seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, H + 1, OBS, generator=g, dtype=torch.float64)
    return TensorDict(
        observation=obs[:, :-1],
        action=torch.rand(B, H, A, generator=g, dtype=torch.float64) * 2 - 1,
        task=torch.tensor([[0] * H, [1] * H, [1] * H]),
        next=TensorDict(
            observation=obs[:, 1:],
            reward=torch.rand(B, H, 1, generator=g, dtype=torch.float64) * 3,
            batch_size=[B, H],
        ),
        batch_size=[B, H],
    )


# -- a scalar re-implementation -----------------------------------------------------------------


def _symexp(x):
    return math.copysign(math.expm1(abs(x)), x)


def _two_hot(x):
    s = min(max(math.copysign(math.log1p(abs(x)), x), -10.0), 10.0)
    pos = (s + 10.0) / 0.2
    k = min(math.floor(pos), 100)
    out = torch.zeros(101, dtype=torch.float64)
    out[k] += 1 - (pos - k)
    out[(k + 1) % 101] += pos - k
    return out


def _member(params, k, x):
    """Member k of the Q ensemble (Linear -> LayerNorm -> Mish blocks, then Linear) by hand."""
    n = len([key for key in params if key.startswith("weights.")])
    h = x
    for i in range(n):
        h = h @ params[f"weights.{i}"][k] + params[f"biases.{i}"][k, 0]
        if i < n - 1:
            h = torch.nn.functional.layer_norm(h, h.shape[-1:])
            h = h * params[f"norm_weights.{i}"][k, 0] + params[f"norm_biases.{i}"][k, 0]
            h = h * torch.tanh(torch.nn.functional.softplus(h))
    return h


def _decode(logits):
    return _symexp(float((logits.softmax(-1) * BINS).sum()))


def _decode_differentiable(logits):
    v = (logits.softmax(-1) * BINS).sum()
    return v.sign() * torch.expm1(v.abs())


def _pi(wm, z, emb, task, eps):
    """TD-MPC2's paper-era policy prior: sampled action and log-probability."""
    x = z if emb is None else torch.cat([z, emb])
    mean, raw = wm.policy_prior(x).chunk(2)
    log_std = -10 + 0.5 * 12 * (torch.tanh(raw) + 1)
    size = A
    if task is not None:
        mask = torch.tensor([1.0, 1.0] if task == 0 else [1.0, 0.0], dtype=torch.float64)
        mean, log_std, eps, size = mean * mask, log_std * mask, eps * mask, mask.sum()
    log_pi = ((-0.5 * eps**2 - log_std).sum() - 0.5 * math.log(2 * math.pi)) * size
    action = torch.tanh(mean + eps * log_std.exp())
    log_pi = log_pi - torch.log(torch.relu(1 - action**2) + 1e-6).sum()
    return action, log_pi


def _percentile(values, p):
    v = sorted(values)
    pos = p * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def _hand(wm, loss, data, eps_next, eps_pi, pair, rho, gammas, scale0, tau, alpha):
    online = {k: v.detach() for k, v in wm.q_ensemble.named_parameters()}
    target = {k: v for k, v in loss.target_q_network_params.flatten_keys(".").items()}
    value_total, pi_terms, q0 = 0.0, [], []
    for b in range(B):
        task = int(data["task"][b, 0]) if wm.num_tasks else None
        task_t = torch.tensor(task) if task is not None else None
        emb = wm.task_conditioning.embed(task_t, torch.Size([])) if task is not None else None
        gamma = gammas[task] if task is not None else gammas
        z = wm.encode(data["observation"][b, 0], task_t)
        zs, value = [z], 0.0
        for t in range(H):
            a = data["action"][b, t]
            with torch.no_grad():
                nz = wm.encode(data["next", "observation"][b, t], task_t)
                na, _ = _pi(wm, nz, emb, task, eps_next[b, t])
                x = torch.cat([nz, na] if emb is None else [nz, emb, na])
                q_next = min(_decode(_member(target, k, x)) for k in pair)
                y = data["next", "reward"][b, t, 0].item() + gamma * q_next
            x = torch.cat([z, a] if emb is None else [z, emb, a])
            for k in range(wm.q_ensemble.ensemble_size):
                ce = -(_two_hot(y) * _member(online, k, x).log_softmax(-1)).sum()
                value = value + rho**t * ce
            z = wm.next(z, a, task_t)
            zs.append(z)
        value_total = value_total + value / (H * wm.q_ensemble.ensemble_size)
        terms = []
        for t, z in enumerate(zs):
            z = z.detach()
            a, log_pi = _pi(wm, z, None if emb is None else emb.detach(), task, eps_pi[b, t])
            x = torch.cat([z, a] if emb is None else [z, emb.detach(), a])
            q = sum(_decode_differentiable(_member(online, k, x)) for k in pair) / 2
            if t == 0:
                q0.append(float(q.detach()))
            terms.append((rho**t, alpha * log_pi, q))
        pi_terms.append(terms)
    spread = max(_percentile(q0, 0.95) - _percentile(q0, 0.05), 1.0)
    scale = scale0 + tau * (spread - scale0)
    pi_total = sum(
        sum(w * (ent - q / scale) for w, ent, q in terms) / (H + 1) for terms in pi_terms
    )
    return value_total / B, pi_total / B, scale


@pytest.mark.parametrize("multitask", [False, True])
def test_value_and_policy_losses_equal_hand_computation(multitask, monkeypatch):
    wm = _model(multitask, num_q=3)
    gammas = [0.99, 0.9] if multitask else 0.97
    loss = TDMPC2ModelLoss(
        wm, temporal_discount=0.8, value_term=True, value_coef=0.1, discount=gammas,
        entropy_coef=0.05, scale_tau=0.3,
    )  # fmt: skip
    updater = SoftUpdate(loss, tau=0.01)
    with torch.no_grad():  # target Qs that differ from the online ones
        for p in loss.target_q_network_params.values(True, True):
            p.add_(torch.randn_like(p) * 0.05)
    loss.value_scale.fill_(2.0)
    data = _slices()
    g = torch.Generator().manual_seed(1)
    eps = {
        (B, H, A): torch.randn(B, H, A, generator=g, dtype=torch.float64),
        (B, H + 1, A): torch.randn(B, H + 1, A, generator=g, dtype=torch.float64),
    }
    monkeypatch.setattr(torch, "randn_like", lambda x: eps[tuple(x.shape)].clone())
    pair = [2, 0]
    monkeypatch.setattr(loss, "_random_pair", lambda device: torch.tensor(pair, device=device))
    out = loss(data)
    value, pi, scale = _hand(
        wm, loss, data, eps[(B, H, A)], eps[(B, H + 1, A)], pair, 0.8, gammas, 2.0, 0.3, 0.05
    )
    torch.testing.assert_close(out["loss_value"], 0.1 * value)
    torch.testing.assert_close(out["value_loss"], value.detach())
    torch.testing.assert_close(out["loss_pi"], pi)
    torch.testing.assert_close(out["value_scale"].item(), scale)
    torch.testing.assert_close(loss.value_scale.item(), scale)  # updated by the call
    assert scale != 2.0
    assert all(v.ndim == 0 for v in out.values())  # scalars only
    assert sorted(out.keys()) == sorted(loss.out_keys)
    del updater


def test_random_pair_is_two_distinct_members():
    wm = _model(False, num_q=5)
    loss = TDMPC2ModelLoss(wm, value_term=True)
    for _ in range(20):
        pair = loss._random_pair(torch.device("cpu"))
        assert pair.shape == (2,) and pair[0] != pair[1] and 0 <= pair.min() and pair.max() < 5


def _nonzero(params):
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]


def test_each_term_reaches_only_its_parameters():
    wm = _model(True)
    wm.q_ensemble.dropout = 0.01
    loss = TDMPC2ModelLoss(wm, value_term=True)
    SoftUpdate(loss, tau=0.01)
    data = _slices()
    targets_before = loss.target_q_network_params.clone()
    encoder_dynamics = [*wm.encoder.parameters(), *wm.get_transition_model_operator().parameters()]
    out = loss(data)

    out["loss_value"].backward(retain_graph=True)
    assert all(_nonzero(wm.q_ensemble.parameters()))
    assert all(_nonzero(encoder_dynamics))  # through the predicted latents, as TD-MPC2
    assert all(_nonzero(wm.task_conditioning.parameters()))
    assert not any(_nonzero(wm.policy_prior.parameters()))  # targets carry no gradient
    assert not any(_nonzero(wm.get_reward_operator().parameters()))

    wm.zero_grad(set_to_none=True)
    out["loss_pi"].backward()
    assert all(_nonzero(wm.policy_prior.parameters()))
    others = [p for n, p in wm.named_parameters() if not n.startswith("policy_prior")]
    assert not any(_nonzero(others))  # no Q, task-embedding, encoder or dynamics gradient

    # target Qs: no gradient, unchanged by the backward and an optimiser step
    assert all(not p.requires_grad for p in loss.target_q_network_params.values(True, True))
    torch.optim.SGD(wm.parameters(), lr=1.0).step()
    assert (loss.target_q_network_params == targets_before).all()


def test_soft_update_moves_target_toward_online():
    wm = _model(False)
    loss = TDMPC2ModelLoss(wm, value_term=True)
    updater = SoftUpdate(loss, tau=0.01)
    online = dict(wm.q_ensemble.named_parameters())
    targets = loss.target_q_network_params.flatten_keys(".")
    for k, p in online.items():  # fresh targets are a copy, not a view
        assert torch.equal(targets[k], p) and targets[k].data_ptr() != p.data_ptr()
    with torch.no_grad():
        for p in online.values():
            p.add_(1.0)
    before = {k: targets[k].clone() for k in online}
    updater.step()
    for k, p in online.items():
        torch.testing.assert_close(targets[k], before[k] + 0.01 * (p.detach() - before[k]))
        assert not torch.equal(targets[k], p)


def test_options_are_checked():
    with pytest.raises(ValueError, match="value_heads"):
        TDMPC2ModelLoss(TDMPC2WorldModel(OBS, A, size="1M"), value_term=True)
    wm = _model(True)
    with pytest.raises(ValueError, match="one per task"):
        TDMPC2ModelLoss(wm, value_term=True, discount=[0.9, 0.9, 0.9])
    # without the value term, nothing is added to the loss's state
    plain = TDMPC2ModelLoss(wm)
    assert all(k.startswith("world_model.") for k in plain.state_dict())
    assert "loss_value" not in plain(_slices()).keys()
    assert tdmpc2_discount(500) == 0.99 and tdmpc2_discount(20) == 0.95


# -- the pre-training stepper -------------------------------------------------------------------


def _stepper(**kwargs):
    wm = _model(True)
    wm.q_ensemble.dropout = 0.01
    loss = TDMPC2ModelLoss(wm, value_term=True, discount=[0.99, 0.95])
    return WorldModelOptimizationStepper(loss, H, **kwargs)


def test_stepper_updates_resumes_and_skips():
    stepper = _stepper()
    loss, wm = stepper.loss, stepper.loss.world_model
    target = loss.target_q_network_params.flatten_keys(".")
    target0 = {k: v.clone() for k, v in target.items()}
    pi0 = [p.clone() for p in wm.policy_prior.parameters()]
    torch.manual_seed(0)
    for seed in range(2):
        metrics = stepper.world_model_step(_slices(seed))
    assert {"loss_value", "loss_pi", "grad_norm_policy", "td_target"} <= set(metrics.keys())
    assert all(not torch.equal(target[k], v) for k, v in target0.items())  # soft-updated
    assert all(not torch.equal(p, q) for p, q in zip(wm.policy_prior.parameters(), pi0))
    assert stepper.policy_optimizer.defaults["eps"] == 1e-5
    assert all(id(p) not in {id(q) for q in stepper.world_model_params} for p in pi0)

    # resume: a fresh stepper loaded with the state (and the model) continues identically
    state, model_state = stepper.state_dict(), wm.state_dict()
    resumed = _stepper()
    resumed.loss.world_model.load_state_dict(model_state)
    resumed.load_state_dict(state)
    torch.manual_seed(5)
    a = stepper.world_model_step(_slices(7))
    torch.manual_seed(5)
    b = resumed.world_model_step(_slices(7))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a.keys())
    for x, y in zip(wm.parameters(), resumed.loss.world_model.parameters()):
        assert torch.equal(x, y)
    assert (resumed.loss.target_q_network_params == loss.target_q_network_params).all()
    assert torch.equal(resumed.loss.value_scale, loss.value_scale)

    # a non-finite batch: nothing moves (parameters, targets move only by the soft update
    # toward unchanged online values; the running scale is rolled back)
    bad = _slices(8)
    bad["next", "reward"][0, 0] = float("nan")
    params = [p.clone() for p in wm.parameters()]
    scale = loss.value_scale.clone()
    stepper.world_model_step(bad)
    assert stepper.skipped_steps == 1
    assert all(torch.equal(p, q) for p, q in zip(wm.parameters(), params))
    assert torch.equal(loss.value_scale, scale)
    with pytest.raises(NonFiniteLossError):
        for _ in range(10):
            stepper.world_model_step(bad)


def test_stepper_without_value_term_matches_plain_loss():
    wm = _model(True)
    stepper = WorldModelOptimizationStepper(TDMPC2ModelLoss(wm), H)
    metrics = stepper.world_model_step(_slices())
    assert "loss_value" not in metrics.keys() and stepper.policy_optimizer is None
    assert "policy_optimizer" not in stepper.state_dict()
    with pytest.raises(ValueError, match="value term"):
        _stepper().load_state_dict(stepper.state_dict())
