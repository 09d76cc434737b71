"""The fast update path: the tensor imagination against the TorchRL env rollout, the TD(λ)
recursion against TorchRL's estimator, no graph break, no host sync, and the review's bugs."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate, ValueEstimators
from torchrl.objectives.value import TDLambdaEstimator
from torchrl.record import CSVLogger

from tests.objectives.test_contract import _agent, _slices
from tests.trainers._tiny import tiny_agent
from torchrl_pwm.modules import TDMPC2WorldModel, symlog
from torchrl_pwm.modules.functional import td_lambda_return
from torchrl_pwm.objectives import FirstOrderActorLoss, PWMLoss, TDMPC2ModelLoss
from torchrl_pwm.trainers import PWMOptimConfig, PWMOptimizationStepper

H = 4


def test_tensor_imagination_equals_the_env_rollout():
    """Same noise, same rollout and same actor gradients as ``LatentWorldModelEnv.rollout``
    with the TorchRL actor (the user-facing env)."""
    wm, env, actor, critic = _agent()
    loss = FirstOrderActorLoss(actor, critic, env, imagination_horizon=H, detach_policy_input=False)
    loss.make_value_estimator(ValueEstimators.TD1, gamma=0.9)
    start = _slices()[:, 0]
    torch.manual_seed(3)
    returns, traj = loss.imagine(start)
    returns.sum().backward()
    ours = [p.grad.clone() for p in actor.parameters()]
    actor.zero_grad()

    torch.manual_seed(3)
    with set_exploration_type(ExplorationType.RANDOM):
        ref = env.rollout(
            H, actor, auto_reset=False, tensordict=env.reset(start.select("observation"))
        )
    for key in ("latent", "action", ("next", "latent"), ("next", "reward")):
        torch.testing.assert_close(traj[key], ref[key], msg=str(key))
    gammas = 0.9 ** torch.arange(H, dtype=torch.float32)
    bootstrap = critic(ref["next"][:, -1].select("latent"))["state_value"]
    ref_return = (ref["next", "reward"].squeeze(-1) * gammas).sum(
        1, keepdim=True
    ) + 0.9**H * bootstrap
    torch.testing.assert_close(returns, ref_return)
    wm.zero_grad(), critic.zero_grad()
    ref_return.sum().backward()
    for a, b in zip(ours, actor.parameters(), strict=True):
        # the same arithmetic in another order (H steps of backward through both rollouts):
        # 1.7e-5 absolute on a gradient of ~5 on an Intel Xeon, over the fp32 default's 1e-5
        torch.testing.assert_close(a, b.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("lmbda", [0.0, 0.5, 0.95, 1.0])
def test_td_lambda_return_equals_torchrl_estimator(lmbda):
    g = torch.Generator().manual_seed(0)
    b, t = 5, 9
    reward = torch.randn(b, t, 1, generator=g, dtype=torch.float64)
    next_value = torch.randn(b, t, 1, generator=g, dtype=torch.float64)
    done = torch.zeros(b, t, 1, dtype=torch.bool)
    terminated = torch.zeros(b, t, 1, dtype=torch.bool)
    done[0, 3] = True
    done[2, 5] = terminated[2, 5] = True
    td = TensorDict(
        next=TensorDict(reward=reward, done=done, terminated=terminated, batch_size=[b, t]),
        batch_size=[b, t],
    )
    gamma = torch.tensor(0.9, dtype=torch.float64)  # TorchRL keeps a float32 copy of a float
    estimator = TDLambdaEstimator(
        gamma=gamma, lmbda=lmbda, value_network=None, vectorized=lmbda > 0
    )
    ref = estimator.value_estimate(td, next_value=next_value)
    ours = td_lambda_return(
        reward, next_value, gamma=gamma, lmbda=lmbda, done=done, terminated=terminated
    )
    torch.testing.assert_close(ours, ref)


def test_pwm_loss_passes_gamma_and_lambda_to_the_right_places():
    """γ and λ swapped in ``make_value_estimator`` would change these targets."""
    *_, loss = tiny_agent()
    loss.make_value_estimator(gamma=0.9, lmbda=0.5)
    traj = loss.actor_loss.loss_and_trajectory(_tiny_slices()[:, 0])[1]
    targets = loss.value_loss.compute_targets(traj.clone())["value_target"]
    with torch.no_grad():
        v = loss.value_network(traj["next"].select("latent").clone())["state_value"]
    r = traj["next", "reward"]
    expected = torch.zeros_like(r)
    g = v[:, -1]
    for t in reversed(range(H)):
        g = r[:, t] + 0.9 * (0.5 * v[:, t] + 0.5 * g) if t < H - 1 else r[:, t] + 0.9 * v[:, t]
        expected[:, t] = g
    torch.testing.assert_close(targets, expected)
    assert loss.actor_loss._gamma_lambda() == (pytest.approx(0.9), 1.0)
    # TD(λ)'s λ is the estimator's own buffer, never read to the host (a CUDA sync per update)
    assert loss.value_loss.gamma_lambda()[1] is loss.value_loss.value_estimator.lmbda


def _tiny_slices(b=8, nan_obs=False):
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(b, H + 1, 5, generator=g)
    if nan_obs:
        obs[0, 0, 0] = float("nan")
    return TensorDict(
        observation=obs[:, :-1],
        action=torch.rand(b, H, 1, generator=g) * 2 - 1,
        next=TensorDict(
            observation=obs[:, 1:], reward=torch.rand(b, H, 1, generator=g), batch_size=[b, H]
        ),
        batch_size=[b, H],
    )


def test_nan_observation_does_not_poison_later_steps():
    """One NaN observation: the step's updates are skipped and the return normaliser keeps its
    statistics, so training goes on (it used to turn ``return_var`` NaN for good)."""
    *_, loss = tiny_agent()
    stepper = PWMOptimizationStepper(loss, H, config=PWMOptimConfig(critic_passes=1))
    stepper.step(None, _tiny_slices())
    stats = loss.actor_loss.return_statistics()
    actor_before = [p.detach().clone() for p in loss.actor_network.parameters()]
    metrics = stepper.step(None, _tiny_slices(nan_obs=True))
    assert metrics["skipped_updates_actor"] == 1 and metrics["skipped_updates_world_model"] == 1
    assert torch.equal(loss.actor_loss.return_statistics(), stats)
    for a, p in zip(actor_before, loss.actor_network.parameters(), strict=True):
        assert torch.equal(a, p)
    for _ in range(3):
        metrics = stepper.step(None, _tiny_slices())
    assert torch.isfinite(loss.actor_loss.return_statistics()).all()
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert stepper.nonfinite_in_a_row == 0


def test_gradient_skip_rolls_back_the_return_statistics():
    """A finite loss with a non-finite gradient: the actor update is skipped, and so is the
    statistics update that its forward made."""
    *_, loss = tiny_agent()
    stepper = PWMOptimizationStepper(loss, H, config=PWMOptimConfig(critic_passes=1))
    stats = loss.actor_loss.return_statistics()
    log_std = loss.actor_network.module[0].module.log_std
    hook = log_std.register_hook(lambda g: g * float("inf"))
    try:
        metrics = stepper.step(None, _tiny_slices())
    finally:
        hook.remove()
    assert metrics["skipped_updates_actor"] == 1
    assert torch.equal(loss.actor_loss.return_statistics(), stats)


def test_pwm_loss_outputs_log_through_torchrl_logger(tmp_path):
    *_, loss = tiny_agent()
    out = loss(_tiny_slices())
    logger = CSVLogger("pwm", log_dir=str(tmp_path))
    for key, value in out.items():
        assert value.ndim == 0, key
        logger.log_scalar(key, value.detach())  # TypeError on a TensorDict entry


def test_partly_frozen_world_model_stays_frozen():
    wm, _env, actor, critic = _agent()
    wm.encoder.requires_grad_(False)
    loss = PWMLoss(wm, actor, critic, imagination_horizon=H)
    loss(_slices())["loss_actor"].backward()
    assert not any(p.requires_grad for p in wm.encoder.parameters())
    assert all(p.requires_grad for p in wm.get_transition_model_operator().parameters())
    assert all(p.grad is None for p in wm.parameters())


def test_actor_bootstraps_from_the_target_critic_when_asked():
    wm, _env, actor, critic = _agent()
    with pytest.raises(ValueError, match="use_target_value_network"):
        PWMLoss(wm, actor, critic, actor_bootstrap="target")
    losses = {
        mode: PWMLoss(
            wm,
            actor,
            critic,
            imagination_horizon=H,
            use_target_value_network=True,
            actor_bootstrap=mode,
        )
        for mode in ("online", "target")
    }
    target = losses["target"].value_loss.target_value_network_params
    target.apply(lambda p: p.data.add_(0.5 * torch.randn_like(p)))
    start = _slices()[:, 0]
    for mode, loss in losses.items():
        loss.make_value_estimator(gamma=0.9)
        torch.manual_seed(0)
        returns, traj = loss.actor_loss.imagine(start)
        z_h = traj["next", "latent"][:, -1]
        params = target if mode == "target" else loss.value_loss.value_network_params
        with params.to_module(critic):
            value = critic(TensorDict(latent=z_h, batch_size=z_h.shape[:1]))["state_value"]
        gammas = 0.9 ** torch.arange(H, dtype=torch.float32)
        expected = (traj["next", "reward"].squeeze(-1) * gammas).sum(1, keepdim=True)
        torch.testing.assert_close(returns, expected + 0.9**H * value, msg=mode)
    # the two bootstraps differ: the option has an effect
    torch.manual_seed(0)
    online = losses["online"].actor_loss.imagine(start)[0]
    torch.manual_seed(0)
    assert not torch.allclose(online, losses["target"].actor_loss.imagine(start)[0])


def test_stepper_soft_updates_the_target_critic_every_step():
    wm, _env, actor, critic = _agent()
    loss = PWMLoss(wm, actor, critic, imagination_horizon=H, use_target_value_network=True)
    loss.make_value_estimator(gamma=0.99, lmbda=0.95)
    updater = SoftUpdate(loss.value_loss, tau=0.25)
    stepper = PWMOptimizationStepper(
        loss, H, config=PWMOptimConfig(critic_passes=1), target_updater=updater
    )
    target = loss.value_loss.target_value_network_params
    for _ in range(2):
        before = target.clone()
        stepper.step(None, _slices())
        online = loss.value_loss.value_network_params
        expected = before.apply(lambda t, o: 0.75 * t + 0.25 * o, online)
        for got, want in zip(target.values(True, True), expected.values(True, True), strict=True):
            torch.testing.assert_close(got, want)
        assert not (target == before).all()


def test_contiguous_critic_minibatches_equal_a_hand_run():
    """``critic_shuffle=False``: the original's fixed contiguous minibatches."""
    *_, loss = tiny_agent()
    cfg = PWMOptimConfig(
        critic_passes=2, critic_minibatches=4, critic_shuffle=False, world_model_updates=0
    )
    stepper = PWMOptimizationStepper(loss, H, config=cfg)
    critic = loss.value_network
    reference = [p.detach().clone().requires_grad_() for p in critic.parameters()]
    opt = torch.optim.Adam(reference, lr=cfg.critic_lr, betas=cfg.critic_betas)
    torch.manual_seed(5)
    data = _tiny_slices()
    _, traj = loss.actor_loss.loss_and_trajectory(data[:, 0])
    targets = loss.value_loss.compute_targets(traj.clone())
    latent = targets["latent"].reshape(-1, 16)
    target = targets["value_target"].reshape(-1, 1)
    names = [n for n, _ in critic.named_parameters()]
    for _ in range(2):
        for lat, tgt in zip(latent.chunk(4), target.chunk(4), strict=True):
            params = dict(zip(names, reference, strict=True))
            pred = torch.func.functional_call(
                critic, params, (TensorDict(latent=lat, batch_size=lat.shape[:1]),)
            )
            value = ((pred["state_value_members"] - tgt.unsqueeze(-2)) ** 2).mean()
            value.backward()
            torch.nn.utils.clip_grad_norm_(reference, cfg.critic_grad_clip)
            opt.step()
            opt.zero_grad()
    torch.manual_seed(5)
    stepper.step(None, data)
    for a, b in zip(reference, critic.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_task_ids_of_every_documented_shape():
    wm = TDMPC2WorldModel(5, 2, size="1M", num_tasks=3)
    obs = torch.randn(1, 5)
    one = wm.encode(obs, torch.tensor([2]))  # a batch of one
    assert one.shape == (1, wm.latent_dim)
    torch.testing.assert_close(one, wm.encode(obs, torch.tensor([[2]])))
    seq = torch.randn(7, 4, 5)  # [T, B, D] with task [B]: broadcast over time (TD-MPC2)
    task = torch.tensor([0, 1, 2, 1])
    z = wm.encode(seq, task)
    torch.testing.assert_close(z[3], wm.encode(seq[3], task))
    with pytest.raises(ValueError, match="task ids of shape"):
        wm.encode(seq, torch.tensor([0, 1, 2]))
    loss = TDMPC2ModelLoss(wm)
    for horizon in (1, 3):
        data = TensorDict(
            observation=torch.randn(4, horizon, 5),
            action=torch.rand(4, horizon, 2),
            task=torch.tensor([0, 1, 2, 1])[:, None, None].expand(4, horizon, 1),  # [B, H, 1]
            next=TensorDict(
                observation=torch.randn(4, horizon, 5), reward=torch.rand(4, horizon, 1)
            ),
            batch_size=[4, horizon],
        )
        flat_task = data.clone().set("task", data["task"].squeeze(-1))
        torch.testing.assert_close(
            loss(data)["loss_consistency"], loss(flat_task)["loss_consistency"]
        )


def test_symlog_has_slope_one_at_zero():
    x = torch.zeros(1, requires_grad=True)
    symlog(x).backward()
    assert x.grad.item() == 1.0


def test_update_functions_compile_without_graph_breaks():
    """The three loss computations the stepper compiles trace as one graph each
    (``fullgraph=True`` raises on any graph break, e.g. a host read such as ``.item()``)."""
    *_, loss = tiny_agent()
    data = _tiny_slices()
    wm_inputs = loss.world_model_loss._tensors(data)
    latent, task = loss.actor_loss._start_latents(data[:, 0])
    functions = [
        (loss.world_model_loss.loss_from_tensors, (), wm_inputs),
        (loss.actor_loss.loss_from_latents, (latent, task), {}),
        (loss.value_loss.loss_from_tensors, (latent, torch.randn(8, 1)), {}),
        (loss.value_loss.targets_from_tensors, (torch.randn(8, H, 16), torch.randn(8, H, 1)), {}),
    ]
    try:
        for fn, args, kwargs in functions:
            out = torch.compile(fn, fullgraph=True, backend="eager")(*args, **kwargs)
            assert out is not None
    finally:
        torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_update_has_no_host_synchronisation_on_cuda():
    *_, loss = tiny_agent()
    loss = loss.to("cuda")
    stepper = PWMOptimizationStepper(loss, H, config=PWMOptimConfig(critic_passes=2))
    data = _tiny_slices().to("cuda")
    stepper.step(None, data)  # warm-up: lazy optimiser state, cuBLAS handles
    wm_inputs = loss.world_model_loss._tensors(data)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = stepper._functions["world_model"](**wm_inputs)
        stepper._update(
            "world_model",
            out["loss_consistency"] + out["loss_reward"],
            stepper.world_model_optimizer,
            stepper.world_model_params,
            20.0,
        )
        latent, task = loss.actor_loss._start_latents(data[:, 0])
        saved = loss.actor_loss.return_statistics()
        actor_out, rollout = stepper._functions["actor"](latent, task)
        _, ok = stepper._update(
            "actor", actor_out["loss_actor"], stepper.actor_optimizer, stepper.actor_params, 1.0
        )
        loss.actor_loss.keep_return_statistics(saved, ok)
        metrics = {}
        stepper._critic_phase(rollout, metrics)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(metrics["loss_value"])
