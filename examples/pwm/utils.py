"""The PWM agent of ``examples/pwm/config.yaml``: networks, losses and optimisation schedule.

Kept apart from ``train.py`` (as TorchRL's ``sota-implementations/*/utils.py``) so that
``benchmarks/update_path.py`` times exactly the agent the example trains.
"""

from __future__ import annotations

import shutil
import sysconfig
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig
from torchrl.data import TensorSpec
from torchrl.objectives import SoftUpdate

from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, compile_networks, make_pwm_actor
from torchrl_pwm.objectives import PWMLoss
from torchrl_pwm.trainers import PWMOptimConfig, PWMOptimizationStepper


def make_pwm_loss(
    cfg: DictConfig, observation_dim: int, action_spec: TensorSpec, device: torch.device
) -> tuple[PWMLoss, SoftUpdate | None]:
    """World model, actor and critic ensemble in a ``PWMLoss`` (compiled if
    ``cfg.compile.enabled``), and the critic's target updater (``None`` without target)."""
    wm_cfg = cfg.world_model
    preset = wm_cfg.size is not None  # a TD-MPC2 preset sets the dims below
    world_model = TDMPC2WorldModel(
        observation_dim,
        action_spec.shape[-1],
        size=wm_cfg.size,
        latent_dim=None if preset else wm_cfg.latent_dim,
        enc_dim=None if preset else wm_cfg.enc_dim,
        mlp_dim=None if preset else wm_cfg.mlp_dim,
        num_enc_layers=None if preset else wm_cfg.num_enc_layers,
        num_bins=wm_cfg.num_bins,
        reward_space=wm_cfg.reward_space,
        reward_ensemble=wm_cfg.reward_ensemble,
    ).to(device)
    latent_dim = world_model.latent_dim
    actor = make_pwm_actor(
        latent_dim,
        action_spec,
        hidden_sizes=tuple(cfg.actor.hidden_sizes),
        init_log_std=cfg.actor.init_log_std,
        min_log_std=cfg.actor.min_log_std,
        device=device,
    )
    critic = ValueEnsemble(
        latent_dim,
        num_critics=cfg.critic.num_critics,
        hidden_sizes=tuple(cfg.critic.hidden_sizes),
        device=device,
    )
    loss = PWMLoss(
        world_model,
        actor,
        critic,
        imagination_horizon=cfg.actor.imagination_horizon,
        normalize_returns=cfg.actor.normalize_returns,
        detach_policy_input=cfg.actor.detach_policy_input,
        actor_mean_penalty_coef=cfg.actor.mean_penalty_coef,
        actor_mean_penalty_threshold=cfg.actor.mean_penalty_threshold,
        actor_disagreement_coef=cfg.actor.disagreement_coef,
        use_target_value_network=cfg.critic.target_tau is not None,
        actor_bootstrap=cfg.actor.bootstrap,
        consistency_coef=wm_cfg.consistency_coef,
        reward_coef=wm_cfg.reward_coef,
        temporal_discount=wm_cfg.temporal_discount,
    )
    loss.make_value_estimator(gamma=cfg.optim.gamma, lmbda=cfg.critic.lmbda)
    target_updater = (
        SoftUpdate(loss.value_loss, tau=cfg.critic.target_tau)
        if cfg.critic.target_tau is not None
        else None
    )
    loss.to(device)
    if compile_enabled(cfg, device):  # in place: same names, checkpoints and target params
        compile_networks(loss, mode=cfg.compile.mode)
    return loss, target_updater


def pwm_update_counts(cfg: DictConfig, repeat: int) -> dict[str, int]:
    """Optimisation steps of a run of ``cfg`` at action repeat ``repeat``, and how many of them
    update the world model and the policy: one round of ``optim_steps_per_batch`` steps per
    ``frames_per_batch`` agent steps after the ``seed_env_steps``; a policy update every
    ``policy_every``-th step, or the steps of the policy phases with ``phase_steps`` (plus
    the first step, which updates both: :meth:`PWMOptimizationStepper.step`)."""
    c, optim = cfg.collector, cfg.optim
    total, seed = c.total_env_steps // repeat, c.seed_env_steps // repeat
    steps = max(total - seed, 0) // c.frames_per_batch * c.optim_steps_per_batch
    if k := optim.get("phase_steps"):
        cycles, rest = divmod(steps, 2 * k)  # each cycle: k model steps, then k policy steps
        model = cycles * k + min(rest, k)
        return {"steps": steps, "world_model": model, "policy": steps - model + (steps > 0)}
    return {"steps": steps, "world_model": steps, "policy": -(-steps // optim.policy_every)}


def make_pwm_stepper(
    cfg: DictConfig,
    loss: PWMLoss,
    target_updater: SoftUpdate | None,
    policy_updates: int,
) -> PWMOptimizationStepper:
    """The optimisers, clipping and schedules of ``cfg.optim`` / ``cfg.critic``;
    ``policy_updates`` (the run's, :func:`pwm_update_counts`) sets the learning-rate decay."""
    optim = cfg.optim
    return PWMOptimizationStepper(
        loss,
        horizon=cfg.world_model.horizon,
        config=PWMOptimConfig(
            world_model_lr=optim.world_model_lr,
            encoder_lr_scale=optim.encoder_lr_scale,
            world_model_grad_clip=optim.world_model_grad_clip,
            actor_lr=optim.actor_lr,
            critic_lr=optim.critic_lr,
            final_lr=optim.final_lr,
            lr_decay_steps=policy_updates if optim.lr_decay else None,  # the schedules
            actor_grad_clip=optim.actor_grad_clip,
            critic_grad_clip=optim.critic_grad_clip,
            critic_passes=cfg.critic.passes,
            critic_minibatches=cfg.critic.minibatches,
            critic_updates=cfg.critic.updates,
            max_nonfinite_steps=optim.max_nonfinite_steps,
            policy_every=optim.policy_every,
            phase_steps=optim.phase_steps,
            compile=compile_enabled(cfg, next(loss.parameters()).device),
            compile_mode=cfg.compile.mode,
        ),
        target_updater=target_updater,
    )


def compile_enabled(cfg: DictConfig, device: torch.device) -> bool:
    """``cfg.compile.enabled``, unless the machine cannot compile: on CPU, Inductor builds C++
    against Python's headers. Without a C++ compiler or ``Python.h`` the run goes on eagerly,
    with one warning."""
    if not cfg.compile.enabled or torch.device(device).type != "cpu":
        return bool(cfg.compile.enabled)
    compiler = any(shutil.which(c) for c in ("g++", "clang++", "c++"))
    headers = (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()
    if compiler and headers:
        return True
    missing = "a C++ compiler (g++ / clang++)" if not compiler else "Python's headers (Python.h)"
    warnings.warn(
        f"compile.enabled=true needs {missing} on CPU; running eagerly "
        "(install it, or set compile.enabled=false to silence this).",
        stacklevel=2,
    )
    return False
