"""PWMOptimizationStepper inside a plain torchrl Trainer, its schedule and its NaN guard."""

import csv
import math

import pytest
import torch
from tensordict import TensorDict

from tests.trainers._tiny import H, tiny_agent, tiny_trainer
from torchrl_pwm.trainers import NonFiniteLossError, PWMOptimConfig, PWMOptimizationStepper


def _batch(b=8, nan=False):
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(b, H + 1, 5, generator=g)
    reward = torch.rand(b, H, 1, generator=g)
    if nan:
        reward[0, 0] = float("nan")
    return TensorDict(
        observation=obs[:, :-1],
        action=torch.rand(b, H, 1, generator=g) * 2 - 1,
        next=TensorDict(observation=obs[:, 1:], reward=reward, batch_size=[b, H]),
        batch_size=[b, H],
    )


def _params(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


def test_trains_inside_a_torchrl_trainer(tmp_path):
    trainer, stepper, rb, loss = tiny_trainer(200, log_dir=tmp_path)
    before = _params(loss)
    trainer.train()
    # 200 frames in batches of 20, optimisation from 40 frames on: 9 batches x 2 steps
    assert stepper.steps == 18 and trainer.collected_frames == 200 and len(rb) == 200
    after = _params(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, after) if a.numel() > 1)
    scalars = tmp_path / "tiny" / "scalars"
    for name in ("loss_consistency", "loss_reward", "loss_actor", "loss_value", "r_train"):
        rows = list(csv.reader((scalars / f"{name}.csv").open()))
        assert rows and all(math.isfinite(float(r[1])) for r in rows), name


def test_schedule_counts_and_lr_decay():
    *_, loss = tiny_agent()
    cfg = PWMOptimConfig(
        critic_passes=2, critic_minibatches=3, lr_decay_steps=4, world_model_updates=2
    )
    stepper = PWMOptimizationStepper(loss, H, config=cfg)
    for _ in range(4):
        metrics = stepper.step(None, _batch().reshape(-1))
    critic_state = stepper.critic_optimizer.state_dict()["state"]
    assert int(next(iter(critic_state.values()))["step"]) == 4 * 6
    assert int(next(iter(stepper.actor_optimizer.state_dict()["state"].values()))["step"]) == 4
    wm_state = stepper.world_model_optimizer.state_dict()["state"]
    assert int(next(iter(wm_state.values()))["step"]) == 4 * 2
    assert stepper.actor_optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert stepper.world_model_optimizer.param_groups[0]["lr"] == pytest.approx(3e-4 * 0.3)
    assert all(torch.isfinite(v).all() for v in metrics.values())
    capped = PWMOptimizationStepper(loss, H, config=PWMOptimConfig(critic_updates=1))
    capped.step(None, _batch())
    assert int(next(iter(capped.critic_optimizer.state_dict()["state"].values()))["step"]) == 1


def test_nonfinite_steps_are_skipped_then_stop():
    *_, loss = tiny_agent()
    stepper = PWMOptimizationStepper(
        loss, H, config=PWMOptimConfig(critic_passes=1, max_nonfinite_steps=3)
    )
    stepper.step(None, _batch())
    wm_before = _params(loss.world_model)
    adam_steps = int(next(iter(stepper.world_model_optimizer.state.values()))["step"])
    for _ in range(2):
        metrics = stepper.step(None, _batch(nan=True))
    # only the world model reads the NaN reward: only its updates are counted as skipped
    assert metrics["skipped_updates_world_model"].item() == 2
    assert metrics["skipped_updates_actor"].item() == 0
    assert metrics["skipped_updates_critic"].item() == 0
    # the world-model step saw a NaN loss: its parameters and Adam state are untouched
    for a, b in zip(wm_before, _params(loss.world_model), strict=True):
        assert torch.equal(a, b)
    state = next(iter(stepper.world_model_optimizer.state.values()))
    assert int(state["step"]) == adam_steps and torch.isfinite(state["exp_avg"]).all()
    stepper.step(None, _batch())  # a good step resets the run of failures
    assert stepper.nonfinite_in_a_row == 0
    with pytest.raises(NonFiniteLossError, match="3 optimisation steps in a row"):
        for _ in range(3):
            stepper.step(None, _batch(nan=True))
    assert all(torch.isfinite(p).all() for p in loss.parameters())


def test_state_dict_round_trip():
    *_, loss = tiny_agent()
    stepper = PWMOptimizationStepper(
        loss, H, config=PWMOptimConfig(critic_passes=1, lr_decay_steps=10)
    )
    for _ in range(3):
        stepper.step(None, _batch())
    state = stepper.state_dict()
    *_, loss2 = tiny_agent()
    loss2.load_state_dict(loss.state_dict())
    stepper2 = PWMOptimizationStepper(
        loss2, H, config=PWMOptimConfig(critic_passes=1, lr_decay_steps=10)
    )
    stepper2.load_state_dict(state)
    assert (
        stepper2.steps == 3
        and stepper2.actor_optimizer.param_groups[0]["lr"]
        == stepper.actor_optimizer.param_groups[0]["lr"]
    )
    torch.manual_seed(1)
    stepper.step(None, _batch())
    torch.manual_seed(1)
    stepper2.step(None, _batch())
    for a, b in zip(_params(loss), _params(loss2)):
        torch.testing.assert_close(a, b)


def _run_and_resume(config: PWMOptimConfig, steps: int, snapshot_at: int):
    """Step a tiny agent ``steps`` times with ``config``; per step: which of (world model,
    actor, critic) changed, the metric keys and the actor's lr. Then restore a fresh agent
    and stepper from the state taken before step ``snapshot_at``, step it to the end with the
    same batches, and check its parameters equal the original's. Returns the per-step records
    and the resumed stepper."""
    import copy

    *_, loss = tiny_agent()
    stepper = PWMOptimizationStepper(loss, H, config=config)
    modules = (loss.world_model, loss.actor_network, loss.value_loss.value_network)
    records = []
    for step in range(steps):
        if step == snapshot_at:
            snapshot = copy.deepcopy((loss.state_dict(), stepper.state_dict()))
        before = [_params(m) for m in modules]
        torch.manual_seed(step)
        keys = sorted(stepper.step(None, _batch()).keys())
        changed = tuple(any(not torch.equal(a, b) for a, b in zip(old, _params(m)))
                        for old, m in zip(before, modules))  # fmt: skip
        records.append((changed, keys, stepper.actor_optimizer.param_groups[0]["lr"]))

    *_, loss2 = tiny_agent(seed=1)
    loss2.load_state_dict(snapshot[0])
    resumed = PWMOptimizationStepper(loss2, H, config=config)
    resumed.load_state_dict(snapshot[1])
    for step in range(snapshot_at, steps):
        torch.manual_seed(step)
        resumed.step(None, _batch())
    assert resumed.steps == steps
    for a, b in zip(_params(loss), _params(loss2), strict=True):
        torch.testing.assert_close(b, a)
    return records, resumed


MODEL_ONLY, POLICY_ONLY, BOTH = (True, False, False), (False, True, True), (True, True, True)


def test_policy_every_trains_the_policy_every_kth_step_and_resumes_in_phase():
    """policy_every=3: the world model changes at every step, the actor, the critic and the
    learning-rate schedule only at steps 0 and 3; every step returns the same metric keys
    (world-model-only steps repeat the last policy update's). A stepper restored between two
    policy updates continues in the same phase: its parameters after steps 2-4 equal the
    original's."""
    cfg = PWMOptimConfig(critic_passes=1, lr_decay_steps=10, policy_every=3)
    records, resumed = _run_and_resume(cfg, steps=5, snapshot_at=2)
    changed, keys, lrs = zip(*records)
    assert list(changed) == [BOTH, MODEL_ONLY, MODEL_ONLY, BOTH, MODEL_ONLY]
    assert all(k == keys[0] for k in keys) and "loss_actor" in keys[0]
    assert lrs[0] == lrs[1] == lrs[2] > lrs[3] == lrs[4]  # two policy updates, two decays
    assert resumed.actor_optimizer.param_groups[0]["lr"] == lrs[4]


def test_phase_steps_alternate_model_and_policy_phases_and_resume_in_phase():
    """phase_steps=2: steps 0-1 train the world model only (step 0 also the policy, once, so
    that every step returns the same keys), steps 2-3 the policy only against the frozen model,
    4-5 the model again. A stepper restored inside the policy phase continues it: its
    parameters after steps 3-5 equal the original's."""
    cfg = PWMOptimConfig(critic_passes=1, phase_steps=2)
    records, _ = _run_and_resume(cfg, steps=6, snapshot_at=3)
    changed, keys, _ = zip(*records)
    assert list(changed) == [BOTH, MODEL_ONLY, POLICY_ONLY, POLICY_ONLY, MODEL_ONLY, MODEL_ONLY]
    assert all(k == keys[0] for k in keys) and {"loss_actor", "loss_reward"} <= set(keys[0])


def test_phase_steps_refuses_nonsense():
    *_, loss = tiny_agent()
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="phase_steps"):
            PWMOptimizationStepper(loss, H, config=PWMOptimConfig(phase_steps=bad))
    with pytest.raises(ValueError, match="policy_every=1"):
        PWMOptimizationStepper(loss, H, config=PWMOptimConfig(phase_steps=2, policy_every=2))


def test_policy_every_refuses_nonsense():
    *_, loss = tiny_agent()
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="policy_every"):
            PWMOptimizationStepper(loss, H, config=PWMOptimConfig(policy_every=bad))


def test_extra_reward_heads_are_clipped_on_their_own():
    """With reward_ensemble=3 the world model's clip covers its own parameters only (the
    extra heads are clipped separately): its gradient norm and its update, clip engaged, equal
    the one-head model's with the same weights; the extra heads are trained too."""
    from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor
    from torchrl_pwm.objectives import PWMLoss

    models, steppers = [], []
    for heads in (3, 1):
        torch.manual_seed(0)
        wm = TDMPC2WorldModel(5, 1, latent_dim=16, enc_dim=32, mlp_dim=32, reward_ensemble=heads)
        if heads == 1:
            shared = models[0].state_dict()
            wm.load_state_dict({k: v for k, v in shared.items() if "extra_reward" not in k})
        loss = PWMLoss(wm, make_pwm_actor(16, 1), ValueEnsemble(16), imagination_horizon=H)
        cfg = PWMOptimConfig(critic_passes=1, world_model_grad_clip=0.01)  # clip engaged
        models.append(wm)
        steppers.append(PWMOptimizationStepper(loss, H, config=cfg))
    extra_before = _params(models[0].extra_reward_heads)
    norms = [s.world_model_step(_batch())["grad_norm_world_model"] for s in steppers]
    torch.testing.assert_close(norms[0], norms[1])
    assert norms[0] > 0.01
    own = dict(models[1].named_parameters())
    for name, p in models[0].named_parameters():
        if not name.startswith("extra_reward_heads"):
            torch.testing.assert_close(p, own[name], msg=name)
    assert all(not torch.equal(a, b) for a, b in
               zip(extra_before, _params(models[0].extra_reward_heads)))  # fmt: skip
