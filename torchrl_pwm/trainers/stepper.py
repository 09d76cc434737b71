"""One PWM optimisation step inside a TorchRL ``Trainer``."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.trainers import OptimizationStepper, Trainer

from torchrl_pwm.modules.actor import StateIndependentScale
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
        policy_every: the policy update (actor, critic, target critic, schedules) runs at
            every ``policy_every``-th :meth:`~PWMOptimizationStepper.step` (1: every step);
            the steps between train the world model only, each on a fresh batch: more model
            updates per policy update, and a cheaper step. ``lr_decay_steps`` counts policy
            updates.
        phase_steps: alternate phases of ``phase_steps`` steps: world-model updates only,
            then policy updates only against the now frozen model (the policy trains in a
            fixed "offline simulation", as on PWM's pre-trained models, but online), and so on;
            ``None`` (default): both at every step. Each step then costs one phase's update,
            and ``lr_decay_steps`` counts policy updates. Needs ``policy_every=1``.
        max_nonfinite_steps: consecutive steps with a skipped update before
            :class:`NonFiniteLossError` (10).
        critic_shuffle: draw the critic minibatches from a fresh permutation at every pass
            (``True``, our default); ``False`` uses fixed contiguous minibatches of the
            flattened ``[B, H]`` trajectory, as the original code.
        compile: compile the three loss computations with :func:`torch.compile`
            (``fullgraph=True``: the update has no graph break and no host synchronisation;
            Inductor fuses Mish, LayerNorm and the elementwise work); eager by default.
        compile_mode: :func:`torch.compile`'s ``mode`` (``None``: its default);
            ``"reduce-overhead"`` replays the compiled graphs as CUDA graphs on a GPU.
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
    policy_every: int = 1
    phase_steps: int | None = None
    max_nonfinite_steps: int = 10
    critic_shuffle: bool = True
    compile: bool = False
    compile_mode: str | None = None


class PWMOptimizationStepper(OptimizationStepper):
    """Runs PWM's updates for one batch of replay slices, each loss with its own optimiser.

    One :meth:`step` is: ``world_model_updates`` world-model updates on the batch; then, at
    every ``policy_every``-th step (every step by default), one actor
    update from the batch's first observations (the start states of the imagination); the
    critic's ``critic_passes × critic_minibatches`` updates on the detached imagined
    trajectory with fixed TD(λ) targets; the soft update of a target critic if the value loss
    has one; the learning-rate schedules (:class:`~torch.optim.lr_scheduler.LinearLR`).

    **No host synchronisation inside an update.** Every update clips its gradient norm; an
    update whose loss or gradient is not finite is skipped on the device: the fused Adam
    kernels take a ``found_inf`` flag and then leave parameters, moments and step count
    untouched (the mechanism of :class:`torch.amp.GradScaler`), and the actor's return
    statistics are rolled back. Skipped updates are counted per phase (``skipped_updates``:
    world model, actor, critic); the only host read is once per :meth:`step`, after all
    updates, to raise :class:`NonFiniteLossError` after ``max_nonfinite_steps`` steps in a
    row with a skipped update. With ``config.compile`` the three loss computations run
    compiled with ``fullgraph=True``.

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

    PHASES = ("world_model", "actor", "critic")

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
        every = cfg.policy_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"policy_every must be an integer >= 1, got {cfg.policy_every!r}.")
        phase = cfg.phase_steps
        if phase is not None and (
            isinstance(phase, bool) or not isinstance(phase, int) or phase < 1
        ):
            raise ValueError(f"phase_steps must be None or an integer >= 1, got {phase!r}.")
        if phase is not None and every != 1:
            raise ValueError(
                f"phase_steps={phase} alternates world-model and policy phases: it needs "
                f"policy_every=1, got {every}."
            )
        self.world_model_optimizer, self.world_model_params, self._extra_head_params = (
            _world_model_adam(loss.world_model, cfg.world_model_lr, cfg.encoder_lr_scale)
        )
        self.actor_params = list(loss.actor_network.parameters())
        self.critic_params = list(loss.value_network.parameters())
        self.actor_optimizer = _adam(self.actor_params, lr=cfg.actor_lr, betas=cfg.actor_betas)
        self.critic_optimizer = _adam(self.critic_params, lr=cfg.critic_lr, betas=cfg.critic_betas)
        self.schedulers = [
            self._linear_decay(self.actor_optimizer, cfg.actor_lr),
            self._linear_decay(self.critic_optimizer, cfg.critic_lr),
        ]
        self.target_updater = target_updater
        self.steps = 0
        self._policy_metrics: TensorDictBase | None = None
        self._world_model_metrics: TensorDictBase | None = None
        device = self.actor_params[0].device
        #: skipped (non-finite) updates per phase, counted on the device
        self.skipped_updates = {k: torch.zeros((), device=device) for k in self.PHASES}
        self.nonfinite_in_a_row = 0
        #: wall-clock seconds spent in each phase (host time: on CUDA, queued kernels may be
        #: attributed to a later phase)
        self.timings = {"world_model": 0.0, "actor": 0.0, "critic": 0.0}
        self._cudagraphs = (
            cfg.compile
            and cfg.compile_mode in ("reduce-overhead", "max-autotune")
            and device.type == "cuda"
        )
        self._functions = self._loss_functions()

    def _loss_functions(self) -> dict[str, Callable]:
        loss, cfg = self.loss, self.config
        fns = {
            "world_model": loss.world_model_loss.loss_from_tensors,
            "actor": loss.actor_loss.loss_from_latents,
            "critic": loss.value_loss.loss_from_tensors,
            "targets": loss.value_loss.targets_from_tensors,
        }
        if cfg.compile:
            fns = {
                name: torch.compile(fn, fullgraph=True, dynamic=False, mode=cfg.compile_mode)
                for name, fn in fns.items()
            }
        return fns

    @property
    def skipped_steps(self) -> int:
        """Skipped updates of all phases (reads the device counters)."""
        return int(sum(v for v in self.skipped_updates.values()))

    def _linear_decay(self, optimizer, lr: float) -> torch.optim.lr_scheduler.LRScheduler:
        cfg = self.config
        if not cfg.lr_decay_steps:
            return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        return torch.optim.lr_scheduler.LinearLR(
            optimizer,
            start_factor=1.0,
            end_factor=cfg.final_lr / lr,
            total_iters=cfg.lr_decay_steps,
        )

    def _update(
        self,
        phase: str,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        params: Sequence[torch.Tensor],
        clip: float,
        extra_params: Sequence[torch.Tensor] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backward, clip and step, skipping the step on the device if the gradient (or the
        loss) is not finite. Returns ``(grad norm, accepted)`` as tensors."""
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(params, clip, foreach=True)
        ok = _clip_extra(extra_params, clip, torch.isfinite(grad_norm))  # and a non-finite loss
        _step_unless(optimizer, ok)
        optimizer.zero_grad(set_to_none=True)
        self.skipped_updates[phase] += (~ok).to(self.skipped_updates[phase].dtype)
        return grad_norm.detach(), ok

    def step(self, trainer: Trainer | None, sub_batch: TensorDictBase) -> TensorDictBase:
        """One PWM step on a batch of slices: :meth:`world_model_step`, then (every
        ``policy_every``-th step) :meth:`policy_step` from the slices' first observations;
        with ``phase_steps``, only the update of the current phase. The first step runs both,
        so that every step returns the same metric keys."""
        cfg = self.config
        batch = sub_batch.reshape(-1, self.horizon) if sub_batch.ndim == 1 else sub_batch
        skipped_before = sum(self.skipped_updates.values())
        if cfg.phase_steps is None:
            train_model, train_policy = True, self.steps % cfg.policy_every == 0
        else:
            train_policy = (self.steps // cfg.phase_steps) % 2 == 1
            train_model = not train_policy
        if train_model or self._world_model_metrics is None:
            self._world_model_metrics = self.world_model_step(batch, record=False)
        if train_policy or self._policy_metrics is None:
            self._policy_metrics = self.policy_step(batch[:, 0], record=False)
        # a step without one of the updates repeats that update's last metrics: every step
        # returns the same keys (the Trainer averages them over a batch's steps); the
        # skipped-update counters are the current ones
        metrics = self._world_model_metrics.clone(recurse=False)  # new keys, same tensors
        metrics.update(self._policy_metrics)
        for phase, count in self.skipped_updates.items():
            metrics[f"skipped_updates_{phase}"] = count.clone()
        self.steps += 1
        self._record_step(skipped_before)
        return metrics

    def world_model_step(self, batch: TensorDictBase, *, record: bool = True) -> TensorDictBase:
        """``world_model_updates`` updates of the world model on ``[B, H]`` slices (the
        pre-training update when called alone)."""
        cfg, loss = self.config, self.loss
        skipped_before = sum(self.skipped_updates.values()) if record else None
        metrics: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        if cfg.world_model_updates:  # 0: a frozen (e.g. pre-trained) world model
            data = loss.world_model_loss._tensors(batch)
        for _ in range(cfg.world_model_updates):
            self._mark_step()
            out = self._functions["world_model"](**data)
            total = out["loss_consistency"] + out["loss_reward"]
            norm, _ = self._update(
                "world_model",
                total,
                self.world_model_optimizer,
                self.world_model_params,
                cfg.world_model_grad_clip,
                self._extra_head_params,
            )
            metrics.update({k: self._keep(v) for k, v in out.items()})
            metrics["grad_norm_world_model"] = norm
        self.timings["world_model"] += time.perf_counter() - t0
        if record:
            self._record_step(skipped_before)
        return TensorDict(metrics, batch_size=[])

    def policy_step(self, start: TensorDictBase, *, record: bool = True) -> TensorDictBase:
        """One actor update from the start states ``start`` (``[B]``: observations or latents),
        its critic phase, the target-critic update and the learning-rate schedules: PWM's
        policy-learning step on a (frozen) world model."""
        cfg, loss = self.config, self.loss
        skipped_before = sum(self.skipped_updates.values()) if record else None
        metrics: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        actor_loss = loss.actor_loss
        latent, task = actor_loss._start_latents(start)
        saved_stats = actor_loss.return_statistics()
        self._mark_step()
        actor_out, rollout = self._functions["actor"](latent, task)
        norm, ok = self._update(
            "actor",
            actor_out["loss_actor"],
            self.actor_optimizer,
            self.actor_params,
            cfg.actor_grad_clip,
        )
        actor_loss.keep_return_statistics(saved_stats, ok)
        _clamp_log_std(loss.actor_network)
        metrics.update({k: self._keep(v) for k, v in actor_out.items()})
        metrics["grad_norm_actor"] = norm
        rollout = {k: self._keep(v) for k, v in rollout.items()}
        t1 = time.perf_counter()

        self._critic_phase(rollout, metrics)
        if self.target_updater is not None:
            self.target_updater.step()
        for scheduler in self.schedulers:
            scheduler.step()
        self.timings["actor"] += t1 - t0
        self.timings["critic"] += time.perf_counter() - t1
        if record:
            self.steps += 1
            self._record_step(skipped_before)
        out = TensorDict(metrics, batch_size=[])
        out["lr_actor"] = torch.tensor(self.actor_optimizer.param_groups[0]["lr"])
        for phase, count in self.skipped_updates.items():
            out[f"skipped_updates_{phase}"] = count.clone()
        return out

    def _record_step(self, skipped_before: torch.Tensor) -> None:
        # The one host read of a step, after every update was queued.
        self._record(bool(sum(self.skipped_updates.values()) == skipped_before))

    def _mark_step(self) -> None:
        if self._cudagraphs:  # a new replay may overwrite the previous one's outputs
            torch.compiler.cudagraph_mark_step_begin()

    def _keep(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor kept past the next compiled call (CUDA-graph outputs are overwritten by
        the next replay: copy them)."""
        tensor = tensor.detach()
        return tensor.clone() if self._cudagraphs else tensor

    def _critic_phase(self, rollout: dict[str, torch.Tensor], metrics: dict) -> None:
        """The critic's minibatch updates on the imagined ``rollout`` (``latent``
        ``[B, H + 1, L]``, ``reward`` ``[B, H, 1]``) with fixed TD(λ) targets."""
        cfg = self.config
        states = rollout["latent"]
        self._mark_step()
        target = self._keep(self._functions["targets"](states[:, 1:], rollout["reward"]))
        latent = states[:, :-1].reshape(-1, states.shape[-1])
        target = target.reshape(-1, 1)
        loss_sum = torch.zeros((), device=latent.device)
        n = 0
        max_updates = cfg.critic_updates or cfg.critic_passes * cfg.critic_minibatches
        for _ in range(cfg.critic_passes):
            if n >= max_updates:
                break
            if cfg.critic_shuffle:
                perm = torch.randperm(latent.shape[0], device=latent.device)
                # gathered one at a time: a capped phase gathers only the minibatches it uses
                minibatches = ((latent[i], target[i]) for i in perm.chunk(cfg.critic_minibatches))
            else:
                minibatches = zip(
                    latent.chunk(cfg.critic_minibatches), target.chunk(cfg.critic_minibatches)
                )
            for latent_mb, target_mb in minibatches:
                if n >= max_updates:
                    break
                self._mark_step()
                value, pred = self._functions["critic"](latent_mb, target_mb)
                norm, _ = self._update(
                    "critic", value, self.critic_optimizer, self.critic_params, cfg.critic_grad_clip
                )
                loss_sum = loss_sum + value.detach()
                n += 1
        if n:
            pred = self._keep(pred)
            metrics["loss_value"] = loss_sum / n
            metrics["target_value"] = target_mb.mean()
            metrics["pred_value"] = pred.mean()
            metrics["td_error"] = (pred - target_mb.unsqueeze(-2)).abs().mean()
            metrics["grad_norm_critic"] = norm

    def _record(self, ok: bool) -> None:
        if ok:
            self.nonfinite_in_a_row = 0
            return
        self.nonfinite_in_a_row += 1
        if self.nonfinite_in_a_row >= self.config.max_nonfinite_steps:
            counts = {k: int(v) for k, v in self.skipped_updates.items()}
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} optimisation steps in a row had a non-finite loss or "
                f"gradient (those updates were skipped, their parameters untouched; skipped "
                f"updates so far: {counts}). Check the data for NaN/inf and the learning rates."
            )

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
            "skipped_updates": {k: v.clone() for k, v in self.skipped_updates.items()},
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "timings": dict(self.timings),
            "policy_metrics": (
                None if self._policy_metrics is None else self._policy_metrics.to_dict()
            ),
            "world_model_metrics": (
                None if self._world_model_metrics is None else self._world_model_metrics.to_dict()
            ),
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
        _load_counters(self, state_dict)
        metrics = state_dict.get("policy_metrics")
        self._policy_metrics = None if metrics is None else TensorDict(metrics, batch_size=[])
        metrics = state_dict.get("world_model_metrics")  # absent from older checkpoints
        self._world_model_metrics = None if metrics is None else TensorDict(metrics, batch_size=[])


def _load_counters(stepper, state_dict: dict) -> None:
    """Restore a stepper's step and skip counters and phase timings from its ``state_dict``."""
    stepper.steps = state_dict["steps"]
    for k, v in state_dict["skipped_updates"].items():
        stepper.skipped_updates[k].copy_(v)
    stepper.nonfinite_in_a_row = state_dict["nonfinite_in_a_row"]
    stepper.timings = dict(state_dict.get("timings", stepper.timings))


def _world_model_adam(
    world_model: nn.Module, lr: float, encoder_lr_scale: float, exclude: Sequence = ()
) -> tuple[torch.optim.Adam, list[torch.Tensor], list[torch.Tensor]]:
    """TD-MPC2's world-model Adam (the encoder at ``lr × encoder_lr_scale``, the rest at
    ``lr``), the parameters its gradient clip covers (encoder first) and those clipped on
    their own: the extra reward heads of a ``reward_ensemble`` model, so that their losses
    never scale the model's own update. ``exclude``: parameters another optimiser steps
    (e.g. the policy prior)."""
    encoder_params = list(world_model.encoder.parameters())
    extra = getattr(world_model, "extra_reward_heads", None)
    extra_params = list(extra.parameters()) if extra is not None else []
    skip = {id(p) for p in (*encoder_params, *exclude, *extra_params)}
    other_params = [p for p in world_model.parameters() if id(p) not in skip]
    optimizer = _adam(
        [
            {"params": encoder_params, "lr": lr * encoder_lr_scale},
            {"params": other_params + extra_params},
        ],
        lr=lr,
    )
    return optimizer, [*encoder_params, *other_params], extra_params


def _clip_extra(params: Sequence[torch.Tensor], clip: float, ok: torch.Tensor) -> torch.Tensor:
    """Clip ``params``' gradient norm on its own; ``ok`` and-ed with its finiteness."""
    if not params:
        return ok
    return ok & torch.isfinite(nn.utils.clip_grad_norm_(params, clip, foreach=True))


def _adam(params, **kwargs) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel per step; it honours ``found_inf``), or the
    foreach one where the device has no fused Adam."""
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except RuntimeError:
        return torch.optim.Adam(params, foreach=True, **kwargs)


def _step_unless(optimizer: torch.optim.Optimizer, ok: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``ok`` is false, decided on the device for fused Adam."""
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = (~ok).to(torch.float32)
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif bool(ok):  # a host read: only optimisers without found_inf support get here
        optimizer.step()


def _clamp_log_std(actor: nn.Module) -> None:
    """Clamp a :class:`~torchrl_pwm.modules.StateIndependentScale`'s log-std in place after
    its update, as the original's in-place clamp (the forward's clamp is straight-through,
    so a compiled forward needs no in-place parameter write)."""
    for module in actor.modules():
        if isinstance(module, StateIndependentScale):
            module.clamp_()
