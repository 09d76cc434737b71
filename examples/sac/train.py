"""TorchRL's SAC on the same tasks and evaluation protocol as PWM: the off-policy baseline.

    python examples/sac/train.py                                  # cartpole-swingup, 100k env steps
    python examples/sac/train.py env.task=cheetah-run env.seed=1
    python examples/sac/train.py resume=true                       # continue a killed run

Everything is TorchRL's own: ``SACLoss`` with a tanh-Gaussian actor and two Q-networks built as
in ``sota-implementations/sac/utils.py``, a ``Collector``, a uniform ``TensorDictReplayBuffer``,
``SoftUpdate`` target networks and a plain ``torchrl.trainers.Trainer`` with its replay-buffer,
target-update and weight-sync hooks. Only the environment (``torchrl_pwm.envs.make_env``) and
the evaluation / checkpoint bookkeeping (``torchrl_pwm.trainers.register_run_hooks``) are
shared with ``examples/pwm``, so the results are comparable. Results go to
``outputs/sac/<task>/seed<seed>/``: ``eval.csv``, ``timings.json``, ``learning_curve.png``,
TorchRL logs under ``logs/`` and ``checkpoint.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from tensordict.nn import InteractionType, NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import SACLoss, SoftUpdate, group_optimizers
from torchrl.trainers import (
    LogScalar,
    ReplayBufferTrainer,
    TargetNetUpdaterHook,
    Trainer,
    UpdateWeights,
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

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}


def make_sac_modules(cfg: DictConfig, action_spec, device: torch.device):
    """Actor and Q-network exactly as ``sota-implementations/sac/utils.make_sac_agent``."""
    net = cfg.network
    if net.activation not in ACTIVATIONS:
        raise ValueError(f"network.activation must be one of {sorted(ACTIVATIONS)}")
    act = ACTIVATIONS[net.activation]
    actor_net = nn.Sequential(
        MLP(
            num_cells=list(net.hidden_sizes),
            out_features=2 * action_spec.shape[-1],
            activation_class=act,
            device=device,
        ),
        NormalParamExtractor(
            scale_mapping=f"biased_softplus_{net.default_policy_scale}", scale_lb=net.scale_lb
        ),
    )
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={
            "low": action_spec.space.low,
            "high": action_spec.space.high,
            "tanh_loc": False,
        },
        default_interaction_type=InteractionType.RANDOM,
    )
    qvalue = ValueOperator(
        MLP(num_cells=list(net.hidden_sizes), out_features=1, activation_class=act, device=device),
        in_keys=["action", "observation"],
    )
    return actor, qvalue


def make_sac_loss(cfg: DictConfig, actor, qvalue) -> SACLoss:
    """TorchRL's ``SACLoss`` as ``sota-implementations/sac/utils.make_loss_module``, with its
    value estimator (materialise the modules' lazy layers first)."""
    o = cfg.optim
    loss = SACLoss(
        actor_network=actor,
        qvalue_network=qvalue,
        num_qvalue_nets=o.num_qvalue_nets,
        loss_function=o.loss_function,
        delay_actor=False,
        delay_qvalue=True,
        alpha_init=o.alpha_init,
    )
    loss.make_value_estimator(gamma=o.gamma)
    return loss


def make_sac_optimizer(cfg: DictConfig, loss: SACLoss) -> torch.optim.Optimizer:
    """Adam for the actor, the Q-networks and the temperature (sota utils.make_sac_optimizer)."""
    o = cfg.optim
    return group_optimizers(
        torch.optim.Adam(
            loss.actor_network_params.flatten_keys().values(),
            lr=o.lr,
            weight_decay=o.weight_decay,
            eps=o.adam_eps,
        ),
        torch.optim.Adam(
            loss.qvalue_network_params.flatten_keys().values(),
            lr=o.lr,
            weight_decay=o.weight_decay,
            eps=o.adam_eps,
        ),
        torch.optim.Adam([loss.log_alpha], lr=3.0e-4),
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

    # -- networks and loss (sota utils.make_sac_agent / make_loss_module) ---------------------
    actor, qvalue = make_sac_modules(cfg, env.action_spec.to(device), device)
    with torch.no_grad():  # materialise the lazy layers
        td = env.fake_tensordict().to(device)
        actor(td)
        qvalue(td)
    o = cfg.optim
    loss = make_sac_loss(cfg, actor, qvalue)
    target_updater = SoftUpdate(loss, eps=o.target_update_polyak)
    optimizer = make_sac_optimizer(cfg, loss)

    # -- data --------------------------------------------------------------------------------
    total_frames = cfg.collector.total_env_steps // repeat
    frames_per_batch = cfg.collector.frames_per_batch
    if total_frames <= cfg.collector.seed_env_steps // repeat:
        raise SystemExit(
            f"collector.total_env_steps={cfg.collector.total_env_steps} does not exceed "
            f"collector.seed_env_steps={cfg.collector.seed_env_steps}: the run would only "
            "collect random actions and never train. Raise the first or lower the second."
        )
    collector = Collector(
        env,
        actor,
        frames_per_batch=frames_per_batch,
        total_frames=total_frames,
        init_random_frames=cfg.collector.seed_env_steps // repeat,
        device=device,
    )
    capacity = cfg.replay_buffer.capacity or total_frames
    replay_buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(capacity, device=cfg.replay_buffer.device),
        batch_size=o.batch_size,
        prefetch=cfg.replay_buffer.prefetch,
    )

    # -- trainer -----------------------------------------------------------------------------
    logger = make_run_logger(cfg, repeat)  # logs at env steps
    stepper = TimedOptimizationStepper()
    trainer = Trainer(
        collector=collector,
        total_frames=total_frames,
        frame_skip=1,
        optim_steps_per_batch=max(int(frames_per_batch * cfg.collector.utd_ratio), 1),
        loss_module=loss,
        optimizer=optimizer,
        optimization_stepper=stepper,
        clip_grad_norm=False,  # sota SAC does not clip
        logger=logger,
        progress_bar=False,  # attach_run adds a bar in env steps
        log_interval=frames_per_batch * 10,
    )
    ReplayBufferTrainer(replay_buffer, device=device).register(trainer)
    trainer.register_op("post_optim", TargetNetUpdaterHook(target_updater))  # every update
    UpdateWeights(collector, update_weights_interval=1).register(trainer)
    LogScalar(("next", "reward"), "train/reward", include_std=False).register(trainer)
    hooks = attach_run(
        trainer,
        cfg,
        eval_env,
        actor,
        run_dir=run_dir,
        frame_to_env_steps=repeat,
        metadata={
            "algorithm": "sac",
            "task": cfg.env.task,
            "action_repeat": repeat,  # the default changed (2 -> 1 on DMC): resume at the same
            "replay_capacity": capacity,  # the stored buffer only loads into one of the same size
        },
        check_metadata=("algorithm", "task", "action_repeat", "replay_capacity"),
    )

    # -- train -------------------------------------------------------------------------------
    # evaluates and checkpoints at the end too; Ctrl-C / SIGTERM checkpoints and prints the split
    train(trainer, hooks, lambda: {"optimization": stepper.seconds})
    print(f"{stepper.steps} SAC updates in {stepper.seconds:.1f} s", flush=True)
    return finish_run(
        hooks,
        label="SAC (TorchRL)",
        task=cfg.env.task,
        seed=cfg.env.seed,
        total_env_steps=cfg.collector.total_env_steps,
        timings={"optimization": stepper.seconds},
    )


if __name__ == "__main__":
    main()
