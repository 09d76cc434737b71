"""World-model pre-training: the update of a ``TDMPC2ModelLoss`` with TD-MPC2's optimisers."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.objectives import SoftUpdate
from torchrl.trainers import OptimizationStepper, Trainer

from torchrl_pwm.objectives import TDMPC2ModelLoss
from torchrl_pwm.trainers.stepper import (
    NonFiniteLossError,
    _adam,
    _clip_extra,
    _load_counters,
    _step_unless,
    _world_model_adam,
)

__all__ = ["WorldModelOptimizationStepper"]


class WorldModelOptimizationStepper(OptimizationStepper):
    """One world-model update per batch of ``[B, H]`` slices, as TD-MPC2 trains its model.

    The world model (encoder at ``lr × encoder_lr_scale``, dynamics, reward, task embedding
    and, with the loss's value term, the Q ensemble) is stepped by Adam on
    ``loss_consistency + loss_reward (+ loss_value)`` with its gradient norm clipped at
    ``grad_clip``. With the value term (``loss.value_term``), the policy prior has its own
    Adam (``lr``, eps ``policy_eps`` = 1e-5, the same clip) on ``loss_pi``, and the target Q
    parameters follow the online ones with TorchRL's
    :class:`~torchrl.objectives.SoftUpdate` (``tau`` 0.01) after every update: TD-MPC2's
    ``_update``. The two losses reach disjoint parameters (see
    :class:`~torchrl_pwm.objectives.TDMPC2ModelLoss`), so one backward of their sum gives
    each optimiser its exact gradient; the policy loss is computed with the Q ensemble of
    before this update (TD-MPC2 computes it after the world-model step: one update of lag).
    This is also what lets PyTorch DDP wrap the whole loss (every parameter is used in one
    ``forward``).

    No host synchronisation inside an update: an update whose loss or gradient norm is not
    finite is skipped on the device (fused Adam's ``found_inf``, as
    :class:`~torchrl_pwm.trainers.PWMOptimizationStepper`), the loss's running Q scale is
    then rolled back, and :class:`~torchrl_pwm.trainers.NonFiniteLossError` is raised after
    ``max_nonfinite_steps`` skipped updates in a row (one host read per update).
    :meth:`state_dict` holds the optimisers, the target Q parameters, the running scale and
    the counters, so a checkpointed pre-training resumes exactly (the world model's own
    parameters are checkpointed with it).

    Args:
        loss: the :class:`~torchrl_pwm.objectives.TDMPC2ModelLoss`.
        horizon: the slice length, to reshape flat batches.

    Keyword Args:
        lr: Adam learning rate of the world model and of the policy prior (3e-4).
        encoder_lr_scale: the encoder's learning-rate factor (0.3).
        grad_clip: gradient-norm clip of the world model and (separately) of the policy
            prior (20).
        policy_eps: Adam ``eps`` of the policy prior (1e-5, TD-MPC2).
        tau: the soft update's rate of the target Qs (0.01).
        max_nonfinite_steps: skipped updates in a row before
            :class:`~torchrl_pwm.trainers.NonFiniteLossError` (10).
        compile: run the loss compiled (``fullgraph=True``).
        compile_mode: :func:`torch.compile`'s ``mode``.
        loss_function: what computes the losses from the batch's tensors (default
            ``loss.loss_from_tensors``); e.g. the loss wrapped in DDP.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_pwm.modules import TDMPC2WorldModel
        >>> from torchrl_pwm.objectives import TDMPC2ModelLoss
        >>> wm = TDMPC2WorldModel(5, 1, size="1M", value_heads=True)
        >>> stepper = WorldModelOptimizationStepper(TDMPC2ModelLoss(wm, value_term=True), 4)
        >>> B, H = 8, 4
        >>> batch = TensorDict(
        ...     observation=torch.randn(B, H, 5), action=torch.rand(B, H, 1) * 2 - 1,
        ...     next=TensorDict(observation=torch.randn(B, H, 5), reward=torch.rand(B, H, 1),
        ...                     batch_size=[B, H]),
        ...     batch_size=[B, H],
        ... )
        >>> metrics = stepper.world_model_step(batch)
        >>> sorted(k for k in metrics.keys() if k.startswith(("loss_", "grad_norm")))
        ['grad_norm_policy', 'grad_norm_world_model', 'loss_consistency', 'loss_pi', 'loss_reward', 'loss_value']
        >>> stepper.steps, stepper.skipped_steps
        (1, 0)
    """

    def __init__(
        self,
        loss: TDMPC2ModelLoss,
        horizon: int,
        *,
        lr: float = 3e-4,
        encoder_lr_scale: float = 0.3,
        grad_clip: float = 20.0,
        policy_eps: float = 1e-5,
        tau: float = 0.01,
        max_nonfinite_steps: int = 10,
        compile: bool = False,
        compile_mode: str | None = None,
        loss_function: Callable[..., dict[str, torch.Tensor]] | None = None,
    ) -> None:
        self.loss = loss
        self.horizon = horizon
        self.grad_clip = grad_clip
        self.max_nonfinite_steps = max_nonfinite_steps
        self.value_term = loss.value_term
        wm = loss.world_model
        policy_params = list(wm.policy_prior.parameters()) if self.value_term else []
        self.world_model_optimizer, self.world_model_params, self._extra_head_params = (
            _world_model_adam(wm, lr, encoder_lr_scale, exclude=policy_params)
        )
        self.policy_params = policy_params
        self.policy_optimizer = (
            _adam(policy_params, lr=lr, eps=policy_eps) if policy_params else None
        )
        self.target_updater = SoftUpdate(loss, tau=tau) if self.value_term else None
        self.steps = 0
        device = self.world_model_params[0].device
        #: skipped (non-finite) updates, counted on the device
        self.skipped_updates = {"world_model": torch.zeros((), device=device)}
        self.nonfinite_in_a_row = 0
        self.timings = {"world_model": 0.0}
        function = loss_function or loss.loss_from_tensors
        if compile:
            function = torch.compile(function, fullgraph=True, dynamic=False, mode=compile_mode)
        self._function = function
        self._cudagraphs = (
            compile
            and compile_mode in ("reduce-overhead", "max-autotune")
            and device.type == "cuda"
        )

    @property
    def skipped_steps(self) -> int:
        """Skipped updates so far (reads the device counter)."""
        return int(self.skipped_updates["world_model"])

    def step(self, trainer: Trainer | None, sub_batch: TensorDictBase) -> TensorDictBase:
        """:meth:`world_model_step` (the ``OptimizationStepper`` interface)."""
        return self.world_model_step(sub_batch)

    def world_model_step(self, batch: TensorDictBase) -> TensorDictBase:
        """One update on ``[B, H]`` slices (or flat ``[B * H]`` ones); returns the losses,
        the loss's diagnostics and the gradient norms (detached scalars)."""
        t0 = time.perf_counter()
        loss = self.loss
        batch = batch.reshape(-1, self.horizon) if batch.ndim == 1 else batch
        data = loss._tensors(batch)
        saved_scale = loss.value_scale.clone() if self.value_term else None
        if self._cudagraphs:  # a new replay may overwrite the previous one's outputs
            torch.compiler.cudagraph_mark_step_begin()
        out = self._function(**data)
        total = out["loss_consistency"] + out["loss_reward"]
        if self.value_term:
            total = total + out["loss_value"] + out["loss_pi"]
        total.backward()
        metrics = {
            k: v.detach().clone() if self._cudagraphs else v.detach() for k, v in out.items()
        }
        norm = nn.utils.clip_grad_norm_(self.world_model_params, self.grad_clip, foreach=True)
        ok = torch.isfinite(norm)  # also catches a non-finite loss
        ok = _clip_extra(self._extra_head_params, self.grad_clip, ok)
        metrics["grad_norm_world_model"] = norm.detach()
        if self.value_term:
            pi_norm = nn.utils.clip_grad_norm_(self.policy_params, self.grad_clip, foreach=True)
            ok = ok & torch.isfinite(pi_norm)
            metrics["grad_norm_policy"] = pi_norm.detach()
        _step_unless(self.world_model_optimizer, ok)
        self.world_model_optimizer.zero_grad(set_to_none=True)
        if self.value_term:
            _step_unless(self.policy_optimizer, ok)
            self.policy_optimizer.zero_grad(set_to_none=True)
            # the running scale is committed only with an accepted update
            loss.value_scale.copy_(torch.where(ok, loss.value_scale, saved_scale))
            self.target_updater.step()
        skipped = self.skipped_updates["world_model"]
        skipped += (~ok).to(skipped.dtype)
        self.steps += 1
        self.timings["world_model"] += time.perf_counter() - t0
        self._record(bool(ok))  # the one host read of an update
        return TensorDict(metrics, batch_size=[])

    def _record(self, ok: bool) -> None:
        if ok:
            self.nonfinite_in_a_row = 0
            return
        self.nonfinite_in_a_row += 1
        if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} world-model updates in a row had a non-finite loss "
                f"or gradient (skipped, parameters untouched; {self.skipped_steps} skipped so "
                "far). Check the data for NaN/inf and the learning rates."
            )

    def state_dict(self) -> dict:
        state = {
            "world_model_optimizer": self.world_model_optimizer.state_dict(),
            "steps": self.steps,
            "skipped_updates": {k: v.clone() for k, v in self.skipped_updates.items()},
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "timings": dict(self.timings),
        }
        if self.value_term:
            loss = self.loss
            state["policy_optimizer"] = self.policy_optimizer.state_dict()
            state["target_q_params"] = {
                k: v.clone() for k, v in loss.target_q_network_params.flatten_keys(".").items()
            }
            state["value_scale"] = loss.value_scale.clone()
            state["target_updater"] = self.target_updater.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        # torch optimisers keep the loaded state tensors as they are: copy them, so that a
        # state taken from a live stepper is not shared (and mutated) by both.
        state_dict = copy.deepcopy(state_dict)
        if self.value_term != ("policy_optimizer" in state_dict):
            raise ValueError(
                "This state was written by a stepper "
                + ("without" if self.value_term else "with")
                + " the value term: the same loss settings are needed to resume."
            )
        self.world_model_optimizer.load_state_dict(state_dict["world_model_optimizer"])
        if self.value_term:
            loss = self.loss
            self.policy_optimizer.load_state_dict(state_dict["policy_optimizer"])
            target = loss.target_q_network_params.flatten_keys(".")
            if set(target.keys()) != set(state_dict["target_q_params"]):
                raise ValueError("The saved target Q parameters do not match this Q ensemble.")
            with torch.no_grad():
                for key, value in state_dict["target_q_params"].items():
                    target.get(key).copy_(value)
                loss.value_scale.copy_(state_dict["value_scale"])
            self.target_updater.load_state_dict(state_dict["target_updater"])
        _load_counters(self, state_dict)
