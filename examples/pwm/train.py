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

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torchrl.collectors import Collector
from torchrl.trainers import LogScalar, ReplayBufferTrainer, Trainer, UpdateWeights

from torchrl_pwm.data import make_sequence_replay_buffer
from torchrl_pwm.envs import make_env
from torchrl_pwm.evaluation import CalibrationMetrics
from torchrl_pwm.modules import make_pwm_policy

from utils import make_pwm_loss, make_pwm_stepper, pwm_update_counts  # examples/pwm/utils.py

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # examples/run_utils.py
from run_utils import (
    attach_run,
    finish_run,
    make_run_logger,
    run_directory,
    train,
)


@hydra.main(version_base="1.3", config_path="", config_name="config")
def main(cfg: DictConfig) -> dict:
    with run_directory(cfg) as run_dir:  # refuses old output; failed starts leave nothing
        return run(cfg, run_dir)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    device = torch.device(cfg.device)

    # -- environments ------------------------------------------------------------------------
    env = make_env(cfg.env.task, seed=cfg.env.seed, action_repeat=cfg.env.action_repeat)
    eval_env = make_env(
        cfg.env.task, seed=cfg.env.seed + 10_000, action_repeat=cfg.env.action_repeat
    )
    repeat = env.action_repeat
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_spec = env.action_spec

    # -- networks and losses (utils.py) ------------------------------------------------------
    loss, target_updater = make_pwm_loss(cfg, obs_dim, action_spec, device)
    world_model, actor = loss.world_model, loss.actor_network
    # Observation -> action in one tensor call (encoder + actor, no per-step TensorDict
    # plumbing); actions only: stored latents would be stale by the time they are sampled.
    policy = make_pwm_policy(world_model, actor)

    # -- data --------------------------------------------------------------------------------
    total_frames = cfg.collector.total_env_steps // repeat
    seed_frames = cfg.collector.seed_env_steps // repeat
    if total_frames <= seed_frames:
        raise SystemExit(
            f"collector.total_env_steps={cfg.collector.total_env_steps} does not exceed "
            f"collector.seed_env_steps={cfg.collector.seed_env_steps}: the run would only "
            "collect random actions and never train. Raise the first or lower the second."
        )
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
        horizon=cfg.world_model.horizon,
        num_slices=cfg.world_model.batch_size,
        device=cfg.replay_buffer.device,
        prefetch=cfg.replay_buffer.prefetch,
        pin_memory=cfg.replay_buffer.get("pin_memory", False),
    )

    # -- optimisation ------------------------------------------------------------------------
    updates = pwm_update_counts(cfg, repeat)
    stepper = make_pwm_stepper(cfg, loss, target_updater, updates["policy"])

    # -- logging -----------------------------------------------------------------------------
    log_cfg = cfg.logger
    logger = make_run_logger(cfg, repeat)  # logs at env steps
    trainer = Trainer(
        collector=collector,
        total_frames=total_frames,
        frame_skip=1,
        optim_steps_per_batch=cfg.collector.optim_steps_per_batch,
        loss_module=loss,
        optimization_stepper=stepper,
        logger=logger,
        progress_bar=False,  # attach_run adds a bar in env steps
        log_interval=cfg.collector.frames_per_batch * 10,
    )
    ReplayBufferTrainer(replay_buffer, device=device).register(trainer)
    UpdateWeights(collector, update_weights_interval=1).register(trainer)
    LogScalar(("next", "reward"), "train/reward", include_std=False).register(trainer)
    video_env = None
    if log_cfg.video:
        video_env = make_env(
            cfg.env.task,
            seed=cfg.env.seed + 20_000,
            action_repeat=cfg.env.action_repeat,
            from_pixels=True,
            render_size=tuple(log_cfg.video_size),
        )
    hooks = attach_run(
        trainer,
        cfg,
        eval_env,
        policy,
        run_dir=run_dir,
        frame_to_env_steps=repeat,
        metadata={"task": cfg.env.task},
        video_env=video_env,
        episode_metrics=CalibrationMetrics(
            world_model,
            critic=loss.value_network,
            policy=actor,
            horizon=cfg.actor.imagination_horizon,
            gamma=cfg.optim.gamma,
        )
        if log_cfg.get("calibration", True)
        else None,
    )

    # -- train -------------------------------------------------------------------------------
    # evaluates and checkpoints at the end too; Ctrl-C / SIGTERM checkpoints and prints the split
    train(trainer, hooks, lambda: stepper.timings)
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
