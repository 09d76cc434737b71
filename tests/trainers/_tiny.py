"""A tiny PWM agent on real cartpole-swingup, assembled from TorchRL parts, for the tests."""

from __future__ import annotations

from pathlib import Path

from tensordict.nn import TensorDictSequential
from torchrl.collectors import Collector
from torchrl.record import CSVLogger
from torchrl.trainers import LogScalar, ReplayBufferTrainer, Trainer, UpdateWeights

from torchrl_pwm.data import make_sequence_replay_buffer
from torchrl_pwm.envs import make_env
from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor
from torchrl_pwm.objectives import PWMLoss
from torchrl_pwm.trainers import PWMOptimConfig, PWMOptimizationStepper

H = 4


def tiny_agent(seed: int = 0, obs_dim: int = 5):
    wm = TDMPC2WorldModel(obs_dim, 1, latent_dim=16, enc_dim=32, mlp_dim=32)
    actor = make_pwm_actor(16, 1, hidden_sizes=(32,))
    critic = ValueEnsemble(16, hidden_sizes=(32,))
    loss = PWMLoss(wm, actor, critic, imagination_horizon=H)
    loss.make_value_estimator(gamma=0.99, lmbda=0.95)
    return wm, actor, critic, loss


def tiny_trainer(total_frames: int, log_dir: Path | None = None, seed: int = 0, **optim):
    """A plain torchrl Trainer: TorchRL's hooks plus our stepper, nothing else."""
    env = make_env("cartpole-swingup", seed=seed)
    wm, actor, _critic, loss = tiny_agent(seed)
    collector = Collector(
        env,
        TensorDictSequential(wm.encoder, actor, selected_out_keys=["action"]),
        frames_per_batch=20,
        total_frames=total_frames,
        init_random_frames=40,
    )
    stepper = PWMOptimizationStepper(
        loss, horizon=H, config=PWMOptimConfig(critic_passes=1, critic_minibatches=2, **optim)
    )
    logger = CSVLogger("tiny", log_dir=str(log_dir)) if log_dir is not None else None
    trainer = Trainer(
        collector=collector,
        total_frames=total_frames,
        frame_skip=1,
        optim_steps_per_batch=2,
        loss_module=loss,
        optimization_stepper=stepper,
        logger=logger,
        progress_bar=False,
        log_interval=0,
    )
    rb = make_sequence_replay_buffer(total_frames, horizon=H, num_slices=8)
    ReplayBufferTrainer(rb).register(trainer)
    UpdateWeights(collector, update_weights_interval=1).register(trainer)
    LogScalar(("next", "reward"), "r_train").register(trainer)
    return trainer, stepper, rb, loss
