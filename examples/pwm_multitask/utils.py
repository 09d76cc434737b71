"""Offline multi-task PWM: the pieces ``pretrain.py`` and ``train_policy.py`` share.

Kept apart from the scripts (as ``examples/pwm/utils.py``): the world model built from a
config or a checkpoint, the losses and optimisation steppers of the two stages, DDP's
set-up, and small writers (CSV, curves).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn

from torchrl_pwm.checkpoint import CheckpointError, load_checkpoint, load_state_dict_checked
from torchrl_pwm.data import TDMPC2Dataset
from torchrl_pwm.envs import task_set
from torchrl_pwm.modules import TDMPC2WorldModel
from torchrl_pwm.objectives import TDMPC2ModelLoss, tdmpc2_discount
from torchrl_pwm.trainers import WorldModelOptimizationStepper

#: what a pre-training checkpoint holds besides the optimisation state
WORLD_MODEL_KIND = "torchrl_pwm.pwm_multitask.world_model"


# ---------------------------------------------------------------------------------------------
# Distribution (PyTorch DDP through torchrun's environment variables)


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``: under ``torchrun`` (``WORLD_SIZE`` > 1) the default
    process group is initialised (NCCL on CUDA, gloo on CPU) and each rank takes the GPU of
    its ``LOCAL_RANK``; otherwise ``(0, 1, device)``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(device)
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def shard_generator(seed: int, rank: int) -> torch.Generator:
    """The generator rank ``rank`` draws its slices with: each rank samples its own shard."""
    return torch.Generator().manual_seed(seed * 1_000_003 + rank)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class _ModelLossForward(nn.Module):
    """``TDMPC2ModelLoss.loss_from_tensors`` as a module's ``forward``, so that
    :class:`~torch.nn.parallel.DistributedDataParallel` (which all-reduces the gradients of
    what its ``forward`` computed) can wrap it."""

    def __init__(self, model_loss: TDMPC2ModelLoss) -> None:
        super().__init__()
        self.model_loss = model_loss

    def forward(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        return TDMPC2ModelLoss.loss_from_tensors(self.model_loss, **tensors)


def distribute_model_loss(
    loss: TDMPC2ModelLoss,
    device: torch.device,
    *,
    compile: bool = False,
    compile_mode: str | None = None,
):
    """Wrap the world-model loss in DDP: rank 0's parameters are broadcast to every rank, and
    the gradients of each update are averaged over the ranks during ``backward``, so every
    rank's optimiser takes the step of the global batch. Returns the function the stepper
    calls (``loss_function=``). With the value term every parameter (Q ensemble and policy
    prior included) is used in the one ``forward``, as DDP requires; its buffers (the
    target Qs, the running Q scale) are broadcast from rank 0 at each ``forward``, so the
    scale of the policy loss is updated from each rank's own shard and then reset to rank
    0's.

    With ``compile`` the loss is compiled *inside* DDP (``fullgraph=True``; Dynamo cannot
    trace DDP's own ``forward``): build the stepper with ``compile=False`` then."""
    from torch.nn.parallel import DistributedDataParallel

    inner = _ModelLossForward(loss)
    if compile:
        inner.forward = torch.compile(
            inner.forward, fullgraph=True, dynamic=False, mode=compile_mode
        )
    ddp = DistributedDataParallel(
        inner,
        device_ids=[device] if device.type == "cuda" else None,
    )
    # A plain function, not the module: the stepper calls it with keywords.
    return lambda **tensors: ddp(**tensors)


def renormalise_task_embeddings(world_model: TDMPC2WorldModel) -> None:
    """Scale every task-embedding row to norm <= 1 now, as ``nn.Embedding(max_norm=1)`` does
    to the rows it looks up. The lookup renormalises rows *in place*: under DDP each rank
    would renormalise the rows of its own shard's tasks and the replicas would drift apart.
    Renormalising all rows before each update keeps them identical, and changes nothing a
    lookup computes (it renormalises the same rows again, a no-op)."""
    tasks = world_model.task_conditioning
    if tasks is None:
        return
    embedding = tasks.embedding
    with torch.no_grad():
        rows = torch.arange(embedding.num_embeddings, device=embedding.weight.device)
        torch.embedding_renorm_(embedding.weight, rows, embedding.max_norm, embedding.norm_type)


def parameters_in_sync(module: nn.Module) -> float:
    """The largest absolute difference between this rank's parameters and rank 0's (0.0 when
    not distributed): DDP replicas must stay bit-identical."""
    flat = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    if not dist.is_initialized():
        return 0.0
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


# ---------------------------------------------------------------------------------------------
# World model


def world_model_kwargs(cfg: DictConfig, dataset: TDMPC2Dataset) -> dict[str, Any]:
    """Constructor arguments of the multi-task ``TDMPC2WorldModel`` of ``cfg.world_model``
    over the dataset's task set (stored in checkpoints, so the policy stage rebuilds it)."""
    wm = cfg.world_model
    preset = wm.size is not None
    return {
        "observation_dim": dataset.observation_dim,
        "action_dim": dataset.action_dim,
        "size": wm.size,
        "latent_dim": None if preset else wm.latent_dim,
        "enc_dim": None if preset else wm.enc_dim,
        "mlp_dim": None if preset else wm.mlp_dim,
        "num_enc_layers": None if preset else wm.num_enc_layers,
        "num_bins": wm.num_bins,
        "num_tasks": len(dataset.task_specs),
        "task_dim": wm.task_dim,
        "action_dims": [s.action_dim for s in dataset.task_specs],
        "reward_space": wm.reward_space,
        "mask_action_inputs": wm.mask_action_inputs,
        # TD-MPC2's Q ensemble and policy prior, trained by the value term
        "value_heads": bool(wm.value_term),
    }


def value_discount(cfg: DictConfig, dataset: TDMPC2Dataset) -> float | list[float]:
    """``γ`` of the value term's TD targets: ``cfg.loss.discount`` if a number; for
    ``"heuristic"``, TD-MPC2's per task (:func:`~torchrl_pwm.objectives.tdmpc2_discount` of
    the task's episode length in agent steps: the task set's for ``mt30`` / ``mt80``, the
    dataset's episode length otherwise), indexed by task id."""
    if cfg.loss.discount != "heuristic":
        return float(cfg.loss.discount)
    lengths = {}
    if dataset.task_set_name in ("mt30", "mt80"):
        lengths = {t.name: t.episode_length for t in task_set(dataset.task_set_name)}
    default = dataset.rows_per_episode - 1  # TD-MPC2's layout: the reset row + T steps
    return [tdmpc2_discount(lengths.get(s.name, default)) for s in dataset.task_specs]


def make_pretrain_stepper(
    cfg: DictConfig,
    world_model: TDMPC2WorldModel,
    device: torch.device,
    distributed: bool,
    discount: float | Sequence[float] = 0.99,
) -> WorldModelOptimizationStepper:
    """``TDMPC2ModelLoss`` with ``cfg.loss``'s settings (and TD-MPC2's value term with
    ``world_model.value_term``, TD targets discounted by ``discount``: see
    :func:`value_discount`) in a ``WorldModelOptimizationStepper`` with TD-MPC2's
    optimisers (Adam, encoder lr x ``encoder_lr_scale``, clip; the policy prior's own Adam,
    eps ``policy_eps``; the target Qs' soft update, ``tau``); its ``world_model_step`` is
    the update."""
    value_term = bool(cfg.world_model.value_term)
    loss = TDMPC2ModelLoss(
        world_model,
        consistency_coef=cfg.loss.consistency_coef,
        reward_coef=cfg.loss.reward_coef,
        temporal_discount=cfg.loss.temporal_discount,
        value_term=value_term,
        value_coef=cfg.loss.value_coef,
        discount=discount,
        entropy_coef=cfg.loss.entropy_coef,
    ).to(device)
    compile, mode = cfg.compile.enabled, cfg.compile.mode
    function = None
    if distributed:
        function = distribute_model_loss(loss, device, compile=compile, compile_mode=mode)
    optim = cfg.optim
    return WorldModelOptimizationStepper(
        loss,
        cfg.loss.horizon,
        lr=optim.lr,
        encoder_lr_scale=optim.encoder_lr_scale,
        grad_clip=optim.grad_clip,
        policy_eps=optim.policy_eps,
        tau=optim.tau,
        max_nonfinite_steps=optim.max_nonfinite_steps,
        compile=compile and not distributed,  # under DDP: compiled inside it
        compile_mode=mode,
        loss_function=function,
    )


def load_world_model(
    path: str | Path, kind: str, task_set: str, *, mask_action_inputs: bool = True
) -> TDMPC2WorldModel:
    """A pre-trained world model: ``kind="ours"`` (a ``pretrain.py`` checkpoint) or
    ``"tdmpc2"`` (a TD-MPC2 checkpoint, through
    :meth:`~torchrl_pwm.modules.TDMPC2WorldModel.from_tdmpc2_checkpoint`, with
    ``reward_space="symlog"`` as the original PWM decodes rewards)."""
    if kind == "tdmpc2":
        return TDMPC2WorldModel.from_tdmpc2_checkpoint(
            path, task_set, reward_space="symlog", mask_action_inputs=mask_action_inputs
        )
    if kind != "ours":
        raise ValueError(f"pretrained.kind must be 'ours' or 'tdmpc2', got {kind!r}.")
    state = load_checkpoint(path)
    if state.get("kind") != WORLD_MODEL_KIND:
        raise CheckpointError(f"{path} is not a checkpoint of examples/pwm_multitask/pretrain.py.")
    if state["task_set"] != task_set:
        raise CheckpointError(
            f"{path} was pre-trained on task set {state['task_set']!r}, the dataset is "
            f"{task_set!r}."
        )
    kwargs = dict(state["world_model_kwargs"])
    kwargs["mask_action_inputs"] = mask_action_inputs
    observation_dim, action_dim = kwargs.pop("observation_dim"), kwargs.pop("action_dim")
    world_model = TDMPC2WorldModel(observation_dim, action_dim, **kwargs)
    load_state_dict_checked(world_model, state["world_model"], "world model")
    return world_model


# ---------------------------------------------------------------------------------------------
# Writers


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def plot_curves(
    path: Path,
    x: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    log_y: bool = False,
    std: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """One PNG with a line per curve (and a ± std band where ``std`` gives one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, values in curves.items():
        (line,) = ax.plot(x, values, label=label)
        if std and label in std:
            m, s = np.asarray(values), np.asarray(std[label])
            ax.fill_between(x, m - s, m + s, alpha=0.2, color=line.get_color())
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
