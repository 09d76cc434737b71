"""TorchRL's PPO on the same tasks and evaluation protocol as PWM: the on-policy baseline.

    python examples/ppo/train.py                                  # cartpole-swingup, 100k env steps
    python examples/ppo/train.py env.task=cheetah-run env.seed=1
    python examples/ppo/train.py resume=true                       # continue a killed run

Everything is TorchRL's own: ``ClipPPOLoss`` with ``GAE`` advantages, the tanh-Gaussian policy
and value MLPs and the ``VecNorm`` observation normalisation of
``sota-implementations/ppo/utils_mujoco.py``, a ``Collector``, a ``TensorDictReplayBuffer``
sampled without replacement, and a plain ``torchrl.trainers.Trainer`` running ``ppo_epochs``
epochs per batch with TorchRL's value-estimator, learning-rate and weight-sync hooks. Only the
environment (``torchrl_pwm.envs.make_env``) and the evaluation / checkpoint bookkeeping
(``torchrl_pwm.trainers.register_run_hooks``) are shared with ``examples/pwm``. Results go to
``outputs/ppo/<task>/seed<seed>/``: ``eval.csv``, ``timings.json``, ``learning_curve.png``,
TorchRL logs under ``logs/`` and ``checkpoint.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from tensordict.nn import AddStateIndependentNormalScale, InteractionType, TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
from torchrl.envs import ClipTransform, VecNorm
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import ClipPPOLoss, group_optimizers
from torchrl.objectives.value import GAE
from torchrl.trainers import (
    LogScalar,
    LRSchedulerHook,
    ReplayBufferTrainer,
    Trainer,
    UpdateWeights,
    ValueEstimatorHook,
)

from torchrl_pwm.envs import make_env
from torchrl_pwm.trainers import TimedOptimizationStepper

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # examples/run_utils.py
from run_utils import (
    attach_run,
    finish_run,
    make_run_logger,
    run_directory,
    train,
)

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def make_ppo_env(cfg: DictConfig, seed: int):
    """``make_env`` plus sota's observation normalisation (``utils_mujoco._add_ppo_transforms``);
    returns the env and its ``VecNorm`` (``None`` without normalisation)."""
    env = make_env(cfg.env.task, seed=seed, action_repeat=cfg.env.action_repeat)
    norm = None
    if cfg.env.normalize_observation:
        norm = VecNorm(in_keys=["observation"], decay=0.99999, eps=1e-2, new_api=True)
        env.append_transform(norm)
        env.append_transform(ClipTransform(in_keys=["observation"], low=-10, high=10))
    return env, norm


def make_ppo_modules(cfg: DictConfig, env, device: torch.device):
    """Policy and value networks as ``sota-implementations/ppo/utils_mujoco.make_ppo_models_state``."""
    if cfg.network.activation not in ACTIVATIONS:
        raise ValueError(f"network.activation must be one of {sorted(ACTIVATIONS)}")
    act = ACTIVATIONS[cfg.network.activation]
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_spec = env.action_spec.to(device)

    def mlp(out_features: int, gain: float) -> MLP:
        net = MLP(
            in_features=obs_dim,
            out_features=out_features,
            num_cells=list(cfg.network.hidden_sizes),
            activation_class=act,
            device=device,
        )
        for layer in net.modules():
            if isinstance(layer, nn.Linear):
                nn.init.orthogonal_(layer.weight, gain)
                layer.bias.data.zero_()
        return net

    policy_net = nn.Sequential(
        mlp(action_spec.shape[-1], 1.0),
        AddStateIndependentNormalScale(action_spec.shape[-1], scale_lb=1e-8).to(device),
    )
    actor = ProbabilisticActor(
        TensorDictModule(policy_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={
            "low": action_spec.space.low,
            "high": action_spec.space.high,
            "tanh_loc": False,
        },
        return_log_prob=True,
        default_interaction_type=InteractionType.RANDOM,
    )
    critic = ValueOperator(mlp(1, 0.01), in_keys=["observation"])
    return actor, critic


@hydra.main(version_base="1.3", config_path="", config_name="config")
def main(cfg: DictConfig) -> dict:
    with run_directory(cfg) as run_dir:  # refuses old output; failed starts leave nothing
        return run(cfg, run_dir)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    device = torch.device(cfg.device)

    # -- environments ------------------------------------------------------------------------
    env, train_norm = make_ppo_env(cfg, cfg.env.seed)
    eval_env, eval_norm = make_ppo_env(cfg, cfg.env.seed + 10_000)
    repeat = env.action_repeat

    # -- networks, advantage and loss (sota ppo_mujoco.py) -----------------------------------
    actor, critic = make_ppo_modules(cfg, env, device)
    lc = cfg.loss
    advantage = GAE(gamma=lc.gamma, lmbda=lc.gae_lambda, value_network=critic, average_gae=False)
    loss = ClipPPOLoss(
        actor_network=actor,
        critic_network=critic,
        clip_epsilon=lc.clip_epsilon,
        loss_critic_type=lc.loss_critic_type,
        entropy_coeff=lc.entropy_coeff,
        critic_coeff=lc.critic_coeff,
        normalize_advantage=lc.normalize_advantage,
    )
    optimizer = group_optimizers(
        *(
            torch.optim.Adam(
                net.parameters(), lr=cfg.optim.lr, eps=1e-5, weight_decay=cfg.optim.weight_decay
            )
            for net in (actor, critic)
        )
    )

    # -- data --------------------------------------------------------------------------------
    total_frames = cfg.collector.total_env_steps // repeat
    frames_per_batch = cfg.collector.frames_per_batch
    if frames_per_batch < lc.mini_batch_size:
        raise SystemExit(
            f"collector.frames_per_batch ({frames_per_batch}) must be at least "
            f"loss.mini_batch_size ({lc.mini_batch_size})."
        )
    if total_frames < frames_per_batch:  # no full batch: no PPO update, no schedule to decay
        raise SystemExit(
            f"collector.total_env_steps={cfg.collector.total_env_steps} is less than one PPO "
            f"batch (collector.frames_per_batch={frames_per_batch} agent steps = "
            f"{frames_per_batch * repeat} env steps): nothing would be trained. Raise the "
            "budget or lower frames_per_batch."
        )
    collector = Collector(
        env, actor, frames_per_batch=frames_per_batch, total_frames=total_frames, device=device
    )
    # Holds the current batch only; iterated once per epoch, without replacement.
    data_buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(frames_per_batch),
        sampler=SamplerWithoutReplacement(),
        batch_size=lc.mini_batch_size,
    )

    # -- trainer -----------------------------------------------------------------------------
    logger = make_run_logger(cfg, repeat)  # logs at env steps
    stepper = TimedOptimizationStepper()
    trainer = Trainer(
        collector=collector,
        total_frames=total_frames,
        frame_skip=1,
        optim_steps_per_batch=None,  # one pass over the batch per epoch
        num_epochs=lc.ppo_epochs,
        loss_module=loss,
        optimizer=optimizer,
        optimization_stepper=stepper,
        clip_grad_norm=False,  # sota PPO (MuJoCo) does not clip
        logger=logger,
        progress_bar=False,  # attach_run adds a bar in env steps
        log_interval=frames_per_batch,
    )
    # Per epoch: GAE with the current critic over the whole batch, then the batch into the buffer.
    ValueEstimatorHook(advantage).register(trainer)
    batches = ReplayBufferTrainer(data_buffer, device=device, iterate=True)
    trainer.register_op("pre_epoch", batches.extend)
    trainer.register_op("process_optim_batch", batches.sample)
    if cfg.optim.anneal_lr:
        minibatches = -(-frames_per_batch // lc.mini_batch_size)
        total_updates = (total_frames // frames_per_batch) * lc.ppo_epochs * minibatches
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: max(1.0 - step / total_updates, 0.0)
        )
        LRSchedulerHook(scheduler, interval="optim").register(trainer)
        if lc.anneal_clip_epsilon:  # sota: the clip range decays like the learning rate

            def anneal_clip_epsilon() -> None:
                loss.clip_epsilon.fill_(lc.clip_epsilon * scheduler.get_last_lr()[0] / cfg.optim.lr)

            trainer.register_op("post_optim", anneal_clip_epsilon)
    UpdateWeights(collector, update_weights_interval=1).register(trainer)
    LogScalar(("next", "reward"), "train/reward", include_std=False).register(trainer)
    if train_norm is not None:  # evaluate with the training statistics, frozen

        def sync_eval_normalization(batch) -> None:
            eval_norm.load_state_dict(train_norm.state_dict())

        eval_norm.freeze()
        trainer.register_op("post_steps_log", sync_eval_normalization)
    hooks = attach_run(
        trainer,
        cfg,
        eval_env,
        actor,
        run_dir=run_dir,
        frame_to_env_steps=repeat,
        metadata={
            "algorithm": "ppo",
            "task": cfg.env.task,
        },
        check_metadata=("algorithm", "task"),
    )

    # -- train -------------------------------------------------------------------------------
    # evaluates and checkpoints at the end too; Ctrl-C / SIGTERM checkpoints and prints the split
    train(trainer, hooks, lambda: {"optimization": stepper.seconds})
    print(f"{stepper.steps} PPO updates in {stepper.seconds:.1f} s", flush=True)
    return finish_run(
        hooks,
        label="PPO (TorchRL)",
        task=cfg.env.task,
        seed=cfg.env.seed,
        total_env_steps=cfg.collector.total_env_steps,
        timings={"optimization": stepper.seconds},
    )


if __name__ == "__main__":
    main()
