"""Online PWM: collect with the actor, learn a world model, train the actor through it.

    python examples/pwm/train.py                                   # cartpole-swingup, ~10 min
    python examples/pwm/train.py env.task=cheetah-run collector.total_env_steps=100000
    python examples/pwm/train.py resume=true                        # continue a killed run

Each piece is a TorchRL object from ``torchrl_pwm``: ``make_env`` → ``Collector`` (policy =
encoder → actor) → slice replay buffer → ``PWMLoss`` → ``PWMOptimizationStepper``, driven by a
plain ``torchrl.trainers.Trainer`` with TorchRL's own replay-buffer, weight-sync and logging
hooks. Results go to ``outputs/<task>/seed<seed>/``: ``eval.csv``, ``learning_curve.png``,
TorchRL logs under ``logs/`` and ``checkpoint.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tensordict.nn import TensorDictSequential
from torchrl.collectors import Collector
from torchrl.objectives import SoftUpdate
from torchrl.trainers import LogScalar, ReplayBufferTrainer, Trainer, UpdateWeights

from torchrl_pwm.checkpoint import CheckpointError
from torchrl_pwm.data import make_sequence_replay_buffer
from torchrl_pwm.envs import make_env
from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, compile_networks, make_pwm_actor
from torchrl_pwm.objectives import PWMLoss
from torchrl_pwm.trainers import (
    EnvStepLogger,
    PWMOptimConfig,
    PWMOptimizationStepper,
    check_fresh_run,
    finish_run,
    make_logger,
    register_run_hooks,
)


@hydra.main(version_base="1.3", config_path="", config_name="config")
def main(cfg: DictConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.env.seed)
    device = torch.device(cfg.device)
    run_dir = Path.cwd()
    try:
        check_fresh_run(run_dir / cfg.checkpoint.path, cfg.resume)
    except FileExistsError as err:
        raise SystemExit(str(err)) from err

    # -- environments ------------------------------------------------------------------------
    env = make_env(cfg.env.task, seed=cfg.env.seed, action_repeat=cfg.env.action_repeat)
    eval_env = make_env(
        cfg.env.task, seed=cfg.env.seed + 10_000, action_repeat=cfg.env.action_repeat
    )
    repeat = env.action_repeat
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_spec = env.action_spec

    # -- networks and losses -----------------------------------------------------------------
    wm_cfg = cfg.world_model
    world_model = TDMPC2WorldModel(
        obs_dim,
        action_spec.shape[-1],
        size=wm_cfg.size,
        latent_dim=wm_cfg.latent_dim if wm_cfg.size is None else None,
        enc_dim=wm_cfg.enc_dim if wm_cfg.size is None else None,
        mlp_dim=wm_cfg.mlp_dim if wm_cfg.size is None else None,
        num_enc_layers=wm_cfg.num_enc_layers if wm_cfg.size is None else None,
        num_bins=wm_cfg.num_bins,
        reward_space=wm_cfg.reward_space,
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
        use_target_value_network=cfg.critic.target_tau is not None,
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
    if cfg.compile.enabled:  # in place: same parameter names, checkpoints and target params
        compile_networks(loss, mode=cfg.compile.mode)
    # Collect actions only: stored latents would be stale by the time they are sampled.
    policy = TensorDictSequential(world_model.encoder, actor, selected_out_keys=["action"])

    # -- data --------------------------------------------------------------------------------
    total_frames = cfg.collector.total_env_steps // repeat
    seed_frames = cfg.collector.seed_env_steps // repeat
    collector = Collector(
        env,
        policy,
        frames_per_batch=cfg.collector.frames_per_batch,
        total_frames=total_frames,
        init_random_frames=seed_frames,
        device=device,
    )
    replay_buffer = make_sequence_replay_buffer(
        cfg.replay_buffer.capacity or total_frames,
        horizon=wm_cfg.horizon,
        num_slices=wm_cfg.batch_size,
        device=cfg.replay_buffer.device,
        prefetch=cfg.replay_buffer.prefetch,
    )

    # -- optimisation ------------------------------------------------------------------------
    optim_rounds = max(total_frames - seed_frames, 0) // cfg.collector.frames_per_batch
    optim = cfg.optim
    stepper = PWMOptimizationStepper(
        loss,
        horizon=wm_cfg.horizon,
        config=PWMOptimConfig(
            world_model_lr=optim.world_model_lr,
            encoder_lr_scale=optim.encoder_lr_scale,
            world_model_grad_clip=optim.world_model_grad_clip,
            actor_lr=optim.actor_lr,
            critic_lr=optim.critic_lr,
            final_lr=optim.final_lr,
            lr_decay_steps=optim_rounds * cfg.collector.optim_steps_per_batch
            if optim.lr_decay
            else None,
            actor_grad_clip=optim.actor_grad_clip,
            critic_grad_clip=optim.critic_grad_clip,
            critic_passes=cfg.critic.passes,
            critic_minibatches=cfg.critic.minibatches,
            critic_updates=cfg.critic.updates,
            max_nonfinite_steps=optim.max_nonfinite_steps,
        ),
        target_updater=target_updater,
    )

    # -- logging -----------------------------------------------------------------------------
    log_cfg = cfg.logger
    logger = make_logger(
        log_cfg.backend, log_cfg.exp_name, project_name=log_cfg.project_name, mode=log_cfg.mode
    )
    trainer = Trainer(
        collector=collector,
        total_frames=total_frames,
        frame_skip=1,
        optim_steps_per_batch=cfg.collector.optim_steps_per_batch,
        loss_module=loss,
        optimization_stepper=stepper,
        logger=EnvStepLogger(logger, repeat),
        progress_bar=log_cfg.progress_bar,
        log_interval=cfg.collector.frames_per_batch * 10,
    )
    ReplayBufferTrainer(replay_buffer, device=device).register(trainer)
    UpdateWeights(collector, update_weights_interval=1).register(trainer)
    LogScalar(("next", "reward"), "train/reward", include_std=False).register(trainer)
    metadata = {
        "task": cfg.env.task,
        "config": json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True),
    }
    video_env = None
    if log_cfg.video:
        video_env = make_env(
            cfg.env.task,
            seed=cfg.env.seed + 20_000,
            action_repeat=cfg.env.action_repeat,
            from_pixels=True,
            render_size=tuple(log_cfg.video_size),
        )
    try:
        hooks = register_run_hooks(
            trainer,
            eval_env,
            policy,
            run_dir=run_dir,
            eval_every=log_cfg.eval_every,
            eval_episodes=log_cfg.eval_episodes,
            frame_to_env_steps=repeat,
            checkpoint_every=cfg.checkpoint.every,
            checkpoint_path=cfg.checkpoint.path,
            metadata=metadata,
            resume=cfg.resume,
            video_env=video_env,
            video_every_eval=log_cfg.video_every_eval,
        )
    except CheckpointError as err:
        raise SystemExit(f"Cannot resume: {err}") from err
    except ValueError as err:
        raise SystemExit(f"Bad configuration: {err}") from err
    if cfg.resume:
        print(f"Resumed at {trainer.collected_frames * repeat} env steps.", flush=True)

    # -- train -------------------------------------------------------------------------------
    trainer.train()  # evaluates and checkpoints at the end too
    result = finish_run(
        hooks,
        label="PWM (torchrl_pwm)",
        task=cfg.env.task,
        seed=cfg.env.seed,
        total_env_steps=cfg.collector.total_env_steps,
        timings=stepper.timings,
    )
    for video in hooks.evaluator.videos:
        print(f"video: {video}")
    return result


if __name__ == "__main__":
    main()
