"""One PWM optimisation step inside a TorchRL ``Trainer``."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.trainers import OptimizationStepper, Trainer

from torchrl_pwm.objectives import PWMLoss

__all__ = ["NonFiniteLossError", "PWMOptimConfig", "PWMOptimizationStepper"]


class NonFiniteLossError(RuntimeError):
    """Too many optimisation steps in a row produced a non-finite loss or gradient."""


@dataclass
class PWMOptimConfig:
    """Optimiser settings; defaults are DESIGN.md's (the original PWM and TD-MPC2 code).

    Attributes:
        world_model_lr: Adam learning rate of the world model (3e-4).
        encoder_lr_scale: the encoder's learning rate factor (0.3, TD-MPC2).
        world_model_grad_clip: gradient-norm clip of the world model (20).
        actor_lr: initial actor learning rate (5e-4), decayed linearly to ``final_lr``.
        critic_lr: initial critic learning rate (5e-4), decayed linearly to ``final_lr``.
        final_lr: learning rate reached after ``lr_decay_steps`` steps (1e-5).
        lr_decay_steps: length of the linear decay in optimisation steps; ``None`` keeps the
            learning rates constant. The world model is never decayed (TD-MPC2).
        actor_betas: Adam betas of the actor ((0.7, 0.95)).
        critic_betas: Adam betas of the critic ((0.7, 0.95)).
        actor_grad_clip: gradient-norm clip of the actor (1.0).
        critic_grad_clip: gradient-norm clip of the critic (100).
        critic_passes: passes over the imagined set per actor step (8).
        critic_minibatches: minibatches per pass (4).
        critic_updates: stop the critic phase after this many minibatch updates (``None``: all
            ``critic_passes × critic_minibatches``); a cheaper critic for online training.
        world_model_updates: world-model updates per step (1), each on the step's batch.
        max_nonfinite_steps: consecutive skipped steps before :class:`NonFiniteLossError` (10).
    """

    world_model_lr: float = 3e-4
    encoder_lr_scale: float = 0.3
    world_model_grad_clip: float = 20.0
    actor_lr: float = 5e-4
    critic_lr: float = 5e-4
    final_lr: float = 1e-5
    lr_decay_steps: int | None = None
    actor_betas: tuple[float, float] = (0.7, 0.95)
    critic_betas: tuple[float, float] = (0.7, 0.95)
    actor_grad_clip: float = 1.0
    critic_grad_clip: float = 100.0
    critic_passes: int = 8
    critic_minibatches: int = 4
    critic_updates: int | None = None
    world_model_updates: int = 1
    max_nonfinite_steps: int = 10


class PWMOptimizationStepper(OptimizationStepper):
    """Runs PWM's updates for one batch of replay slices, each loss with its own optimiser.

    One :meth:`step` is: ``world_model_updates`` world-model updates on the batch; one actor
    update from the batch's first observations (the start states of the imagination); the
    critic's ``critic_passes × critic_minibatches`` updates on the detached imagined
    trajectory with fixed TD(λ) targets; the soft update of a target critic if the value loss
    has one; the learning-rate schedules. Every update clips its gradient norm, and a step
    whose loss or gradient is not finite is skipped (parameters untouched) and counted;
    ``max_nonfinite_steps`` skips in a row raise :class:`NonFiniteLossError`.

    Register it in a plain :class:`torchrl.trainers.Trainer` with
    ``optimization_stepper=`` (the trainer samples with ``ReplayBufferTrainer``); batches may be
    flat (``[num_slices * horizon]``, as ``SliceSampler`` returns them) or ``[B, H]``.
    ``state_dict`` holds the optimisers, schedules and counters, so a checkpointed trainer
    resumes exactly.

    Args:
        loss: the :class:`~torchrl_pwm.objectives.PWMLoss`.
        horizon: the slice length, to reshape flat batches.

    Keyword Args:
        config: a :class:`PWMOptimConfig`.
        target_updater: a TorchRL target updater (e.g. ``SoftUpdate(loss.value_loss, tau=...)``).

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor
        >>> from torchrl_pwm.objectives import PWMLoss
        >>> wm = TDMPC2WorldModel(5, 1, size="1M")
        >>> loss = PWMLoss(wm, make_pwm_actor(wm.latent_dim, 1), ValueEnsemble(wm.latent_dim),
        ...                imagination_horizon=4)
        >>> stepper = PWMOptimizationStepper(loss, horizon=4,
        ...                                  config=PWMOptimConfig(critic_passes=1))
        >>> B, H = 8, 4
        >>> batch = TensorDict(
        ...     observation=torch.randn(B * H, 5), action=torch.rand(B * H, 1) * 2 - 1,
        ...     next=TensorDict(observation=torch.randn(B * H, 5), reward=torch.rand(B * H, 1),
        ...                     batch_size=[B * H]),
        ...     batch_size=[B * H],
        ... )
        >>> metrics = stepper.step(None, batch)
        >>> sorted(k for k in metrics.keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_consistency', 'loss_reward', 'loss_value']
    """

    def __init__(
        self,
        loss: PWMLoss,
        horizon: int,
        *,
        config: PWMOptimConfig | None = None,
        target_updater=None,
    ) -> None:
        self.loss = loss
        self.horizon = horizon
        self.config = cfg = config or PWMOptimConfig()
        wm = loss.world_model
        encoder_params = list(wm.encoder.parameters())
        enc_ids = {id(p) for p in encoder_params}
        other_params = [p for p in wm.parameters() if id(p) not in enc_ids]
        self.world_model_optimizer = torch.optim.Adam(
            [
                {"params": encoder_params, "lr": cfg.world_model_lr * cfg.encoder_lr_scale},
                {"params": other_params},
            ],
            lr=cfg.world_model_lr,
        )
        self.actor_optimizer = torch.optim.Adam(
            loss.actor_network.parameters(), lr=cfg.actor_lr, betas=cfg.actor_betas
        )
        self.critic_optimizer = torch.optim.Adam(
            loss.value_network.parameters(), lr=cfg.critic_lr, betas=cfg.critic_betas
        )
        self.schedulers = [
            self._linear_decay(self.actor_optimizer, cfg.actor_lr),
            self._linear_decay(self.critic_optimizer, cfg.critic_lr),
        ]
        self.target_updater = target_updater
        self.steps = 0
        self.skipped_steps = 0
        self.nonfinite_in_a_row = 0
        #: wall-clock seconds spent in each phase (host time: on CUDA, queued kernels may be
        #: attributed to a later phase)
        self.timings = {"world_model": 0.0, "actor": 0.0, "critic": 0.0}

    def _linear_decay(self, optimizer, lr: float) -> torch.optim.lr_scheduler.LambdaLR:
        cfg = self.config
        total = cfg.lr_decay_steps
        final = cfg.final_lr / lr

        def factor(step: int) -> float:
            if not total:
                return 1.0
            frac = min(step / total, 1.0)
            return 1.0 + frac * (final - 1.0)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def _update(
        self, loss: torch.Tensor, optimizer, params, clip: float
    ) -> tuple[torch.Tensor, bool]:
        """Backward, clip and step unless the gradient is non-finite; return (grad norm, ok)."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(params, clip)
        ok = bool(torch.isfinite(grad_norm))  # also catches a non-finite loss
        if ok:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return grad_norm.detach(), ok

    def _record(self, ok: bool) -> None:
        if ok:
            self.nonfinite_in_a_row = 0
            return
        self.skipped_steps += 1
        self.nonfinite_in_a_row += 1
        if self.nonfinite_in_a_row >= self.config.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} optimisation steps in a row had a non-finite loss or "
                f"gradient (skipped, parameters untouched; {self.skipped_steps} skipped in "
                "total). Check the data for NaN/inf and the learning rates."
            )

    def step(self, trainer: Trainer | None, sub_batch: TensorDictBase) -> TensorDictBase:
        cfg, loss = self.config, self.loss
        batch = sub_batch.reshape(-1, self.horizon) if sub_batch.ndim == 1 else sub_batch
        metrics = TensorDict(batch_size=[])
        all_ok = True

        t0 = time.perf_counter()
        wm_params = [p for g in self.world_model_optimizer.param_groups for p in g["params"]]
        for _ in range(cfg.world_model_updates):  # 0: a frozen (e.g. pre-trained) world model
            out = loss.world_model_loss(batch)
            total = out["loss_consistency"] + out["loss_reward"]
            norm, ok = self._update(
                total, self.world_model_optimizer, wm_params, cfg.world_model_grad_clip
            )
            all_ok &= ok
            metrics.update(out.detach())
            metrics["grad_norm_world_model"] = norm
        t1 = time.perf_counter()

        actor_out = loss.actor_loss(batch[:, 0])
        norm, ok = self._update(
            actor_out["loss_actor"],
            self.actor_optimizer,
            list(loss.actor_network.parameters()),
            cfg.actor_grad_clip,
        )
        all_ok &= ok
        trajectory = actor_out.pop("imagined_trajectory")
        metrics.update(actor_out.detach())
        metrics["grad_norm_actor"] = norm
        t2 = time.perf_counter()

        value_loss = loss.value_loss
        data = value_loss.compute_targets(trajectory)
        # the critic regresses latents on targets: index only those in the minibatches
        data = data.select(*value_loss.value_network.in_keys, value_loss.tensor_keys.value_target)
        data = data.reshape(-1)
        critic_params = list(loss.value_network.parameters())
        value_sum = torch.zeros((), device=data.device)
        n = 0
        max_updates = cfg.critic_updates or cfg.critic_passes * cfg.critic_minibatches
        for _ in range(cfg.critic_passes):
            perm = torch.randperm(data.shape[0], device=data.device)
            for idx in perm.chunk(cfg.critic_minibatches):
                if n >= max_updates:
                    break
                value_out = value_loss(data[idx])
                norm, ok = self._update(
                    value_out["loss_value"],
                    self.critic_optimizer,
                    critic_params,
                    cfg.critic_grad_clip,
                )
                all_ok &= ok
                value_sum = value_sum + value_out["loss_value"].detach()
                n += 1
                metrics.update(value_out.detach())
                metrics["grad_norm_critic"] = norm
        if n:
            metrics["loss_value"] = value_sum / n
        if self.target_updater is not None:
            self.target_updater.step()
        for scheduler in self.schedulers:
            scheduler.step()
        t3 = time.perf_counter()
        self.timings["world_model"] += t1 - t0
        self.timings["actor"] += t2 - t1
        self.timings["critic"] += t3 - t2
        self.steps += 1
        self._record(all_ok)
        metrics["lr_actor"] = torch.tensor(self.actor_optimizer.param_groups[0]["lr"])
        metrics["skipped_steps"] = torch.tensor(float(self.skipped_steps))
        return metrics

    def state_dict(self) -> dict:
        return {
            "world_model_optimizer": self.world_model_optimizer.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "schedulers": [s.state_dict() for s in self.schedulers],
            "target_updater": (
                self.target_updater.state_dict() if self.target_updater is not None else None
            ),
            "steps": self.steps,
            "skipped_steps": self.skipped_steps,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "timings": dict(self.timings),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        # torch optimisers keep the loaded state tensors as they are: copy them, so that a
        # state taken from a live stepper is not shared (and mutated) by both.
        state_dict = copy.deepcopy(state_dict)
        self.world_model_optimizer.load_state_dict(state_dict["world_model_optimizer"])
        self.actor_optimizer.load_state_dict(state_dict["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state_dict["critic_optimizer"])
        for scheduler, state in zip(self.schedulers, state_dict["schedulers"], strict=True):
            scheduler.load_state_dict(state)
        if self.target_updater is not None and state_dict.get("target_updater") is not None:
            self.target_updater.load_state_dict(state_dict["target_updater"])
        self.steps = state_dict["steps"]
        self.skipped_steps = state_dict["skipped_steps"]
        self.nonfinite_in_a_row = state_dict["nonfinite_in_a_row"]
        self.timings = dict(state_dict.get("timings", self.timings))
