"""TD-MPC2 checkpoints (``{"model": state_dict}``) to and from :class:`TDMPC2WorldModel`.

TD-MPC2 has written two layouts (``nicklashansen/tdmpc2``):

- **current** (Nov 2024 on): every network as ``nn.Sequential`` of ``NormedLinear`` layers
  (``<net>.<i>.weight``, ``.bias``, ``.ln.weight``, ``.ln.bias``; the last layer of reward, Q
  and policy prior a plain ``Linear``); the Q ensemble as TensorDict parameters stacked on
  dim 0 (``_Qs.params.<i>.<name>``), a detached view with the same values
  (``_detach_Qs_params``) and the EMA target (``_target_Qs_params``), each with non-tensor
  ``__batch_size`` / ``__device`` entries; buffers ``log_std_min``, ``log_std_dif`` and, for
  multi-task models, ``_action_masks``.
- **paper-era** (Oct 2023 - Nov 2024, the released multi-task models): the same networks,
  but the Q ensemble from functorch's ``combine_state_for_ensemble``: ``_Qs.params.<n>`` and
  ``_target_Qs.params.<n>`` with four tensors per layer in parameter order (``n = 4 * layer +
  {weight, bias, ln.weight, ln.bias}``), and neither ``log_std_*`` nor ``_action_masks`` (they
  were plain attributes).

Our ``normed_mlp`` is ``Linear, LayerNorm, Mish`` per hidden layer (TD-MPC2's ``NormedLinear``
computes the same), and :class:`~torchrl_pwm.modules.EnsembleMLP` stores weights as
``[members, in, out]`` and biases / LayerNorm affines as ``[members, 1, features]``: the
conversion transposes and reshapes, nothing else.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchrl_pwm.modules.layers import EnsembleMLP

__all__ = ["TDMPC2CheckpointReport", "load_tdmpc2_checkpoint", "to_tdmpc2_state_dict"]

_PAPER_ERA_NAMES = ("weight", "bias", "ln.weight", "ln.bias")


@dataclass
class TDMPC2CheckpointReport:
    """What :meth:`TDMPC2WorldModel.from_tdmpc2_checkpoint` did with each key of a file.

    Attributes:
        path: the file.
        layout: ``"current"`` or ``"paper-era"``.
        config: the architecture read from the shapes (constructor arguments).
        consumed: key -> where its values went (or what it was checked against).
        ignored: key -> why it was not used.
        defaulted: a value the file does not hold -> what was used instead.
        target_q_ensemble: the target Q ensemble (TD-MPC2's EMA copy), as an
            :class:`~torchrl_pwm.modules.EnsembleMLP` in eval mode, laid out like the model's
            ``q_ensemble``.
    """

    path: str
    layout: str
    config: dict[str, Any]
    consumed: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    defaulted: dict[str, str] = field(default_factory=dict)
    target_q_ensemble: EnsembleMLP | None = None


# -- where each TD-MPC2 tensor lives in our modules ------------------------------------------

# (TD-MPC2 key suffix, our tensor, TD-MPC2 tensor -> ours, ours -> TD-MPC2)
_Entry = tuple[str, torch.Tensor, Callable[[torch.Tensor], torch.Tensor], Callable]


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _mlp_entries(net: nn.Sequential) -> list[_Entry]:
    """TD-MPC2 layer ``i`` is our ``i``-th ``Linear`` and the ``LayerNorm`` after it."""
    entries: list[_Entry] = []
    layer = -1
    for module in net:
        if isinstance(module, nn.Linear):
            layer += 1
            entries += [
                (f"{layer}.weight", module.weight, _same, _same),
                (f"{layer}.bias", module.bias, _same, _same),
            ]
        elif isinstance(module, nn.LayerNorm):
            entries += [
                (f"{layer}.ln.weight", module.weight, _same, _same),
                (f"{layer}.ln.bias", module.bias, _same, _same),
            ]
    return entries


def _ensemble_entries(ensemble: EnsembleMLP) -> list[_Entry]:
    """TD-MPC2 stacks ``Linear`` weights as ``[N, out, in]`` and vectors as ``[N, n]``."""

    def transpose(t):
        return t.transpose(1, 2)

    def unsqueeze(t):
        return t.unsqueeze(1)

    def squeeze(t):
        return t.squeeze(1)

    entries: list[_Entry] = []
    for i, (w, b) in enumerate(zip(ensemble.weights, ensemble.biases, strict=True)):
        entries += [
            (f"{i}.weight", w, transpose, transpose),
            (f"{i}.bias", b, unsqueeze, squeeze),
        ]
    for i, (w, b) in enumerate(zip(ensemble.norm_weights, ensemble.norm_biases, strict=True)):
        entries += [
            (f"{i}.ln.weight", w, unsqueeze, squeeze),
            (f"{i}.ln.bias", b, unsqueeze, squeeze),
        ]
    return entries


def _model_entries(model) -> list[_Entry]:
    """Every tensor of the model TD-MPC2's checkpoints hold, under TD-MPC2's (current) key."""
    groups = [
        ("_encoder.state.", _mlp_entries(model.encoder.module.net)),
        ("_dynamics.", _mlp_entries(model.get_transition_model_operator().module.net)),
        ("_reward.", _mlp_entries(model.get_reward_operator().module.net)),
        ("_pi.", _mlp_entries(model.policy_prior)),
        ("_Qs.params.", _ensemble_entries(model.q_ensemble)),
    ]
    entries = [(prefix + key, *rest) for prefix, group in groups for key, *rest in group]
    if model.task_conditioning is not None:
        entries.append(("_task_emb.weight", model.task_conditioning.embedding.weight, _same, _same))
    return entries


# -- reading ---------------------------------------------------------------------------------


def _read(path: str | os.PathLike) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No TD-MPC2 checkpoint at {path}.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise RuntimeError(
            f"Cannot load {path} with torch.load(weights_only=True) ({type(err).__name__}: "
            f"{err}). TD-MPC2 checkpoints hold only tensors and load weights-only; a file "
            "that needs arbitrary unpickling is refused."
        ) from err
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(
            f"{path} is not a TD-MPC2 checkpoint: expected {{'model': state_dict}}, got "
            f"{type(obj).__name__}."
        )
    return dict(state)


def _canonical(state: dict[str, Any], path) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The state under current-layout keys, the layout, and canonical key -> file key."""
    if "_Qs.params.0.weight" in state:
        return "current", state, {k: k for k in state}
    if "_Qs.params.0" not in state:
        raise ValueError(
            f"{path}: no Q ensemble found (neither '_Qs.params.0.weight', current layout, nor "
            "'_Qs.params.0', paper-era layout): is it a TD-MPC2 checkpoint?"
        )
    out, origin = {}, {}
    pattern = re.compile(r"^(_Qs|_target_Qs)\.params\.(\d+)$")
    for key, value in state.items():
        match = pattern.match(key)
        if match:
            n = int(match.group(2))
            prefix = "_Qs.params." if match.group(1) == "_Qs" else "_target_Qs_params."
            new = f"{prefix}{n // 4}.{_PAPER_ERA_NAMES[n % 4]}"
        else:
            new = key
        out[new], origin[new] = value, key
    return "paper-era", out, origin


def _shape(state, key, origin, path) -> torch.Size:
    if key not in state:
        raise ValueError(f"{path}: the key {key!r} is missing (TD-MPC2 always writes it).")
    value = state[key]
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{path}: {origin.get(key, key)!r} is not a tensor.")
    return value.shape


def _infer_config(state, origin, path) -> dict[str, Any]:
    multitask = "_task_emb.weight" in state
    num_tasks, task_dim = _shape(state, "_task_emb.weight", origin, path) if multitask else (0, 0)
    enc_layers = sorted(
        int(m.group(1)) for k in state if (m := re.match(r"^_encoder\.state\.(\d+)\.weight$", k))
    )
    if not enc_layers:
        raise ValueError(f"{path}: the key '_encoder.state.0.weight' is missing.")
    enc_in = _shape(state, "_encoder.state.0.weight", origin, path)
    latent_dim = _shape(state, f"_encoder.state.{enc_layers[-1]}.weight", origin, path)[0]
    dyn_in = _shape(state, "_dynamics.0.weight", origin, path)
    reward_out = _shape(state, "_reward.2.weight", origin, path)[0]
    q_first = _shape(state, "_Qs.params.0.weight", origin, path)
    config = {
        "observation_dim": enc_in[1] - task_dim,
        "action_dim": dyn_in[1] - latent_dim - task_dim,
        "latent_dim": latent_dim,
        "enc_dim": enc_in[0],
        "mlp_dim": dyn_in[0],
        "num_enc_layers": len(enc_layers),
        "num_bins": reward_out if reward_out > 1 else 0,
        "num_q": q_first[0],
        "num_tasks": num_tasks or None,
        "task_dim": task_dim or 96,
    }
    if config["observation_dim"] < 1 or config["action_dim"] < 1:
        raise ValueError(
            f"{path}: '_encoder.state.0.weight' {tuple(enc_in)} and '_dynamics.0.weight' "
            f"{tuple(dyn_in)} give observation size {config['observation_dim']} and action "
            f"size {config['action_dim']} (latent {latent_dim}, task embedding {task_dim}): "
            "the shapes are inconsistent."
        )
    return config


def _task_action_dims(task_set) -> tuple[str, list[int], int]:
    if isinstance(task_set, str):
        # Task sets are plain data (standard library only); imported here so that
        # torchrl_pwm.modules does not load torchrl_pwm.envs at import.
        from torchrl_pwm.envs.task_sets import task_set as get_task_set

        tasks = get_task_set(task_set)
        name = task_set
    else:
        tasks, name = list(task_set), "given"
    return name, [t.action_dim for t in tasks], max(t.obs_dim for t in tasks)


def _masks(action_dims: Sequence[int], width: int) -> torch.Tensor:
    masks = torch.zeros(len(action_dims), width)
    for i, n in enumerate(action_dims):
        masks[i, :n] = 1.0
    return masks


def _check_task_set(state, origin, config, task_set, path, report) -> list[int] | None:
    """The tasks' action sizes, from the task set (checked against the file) or the masks."""
    masks = state.get("_action_masks")
    if config["num_tasks"] is None:
        if task_set is not None:
            raise ValueError(
                f"{path} is a single-task checkpoint (no '_task_emb.weight'), but "
                f"task_set={task_set!r} was given: pass task_set=None."
            )
        if masks is not None:
            report.ignored["_action_masks"] = "single-task model: no task to mask for"
        return None
    task_dim, obs_dim, action_dim = (
        config["task_dim"],
        config["observation_dim"],
        config["action_dim"],
    )
    if task_set is None:
        if masks is None:
            raise ValueError(
                f"{path} is a multi-task checkpoint without '_action_masks' (paper-era "
                "layout): pass task_set='mt30' or 'mt80' to give the tasks' action sizes."
            )
        dims = [int(row.sum()) for row in masks]
        if not torch.equal(masks.float(), _masks(dims, masks.shape[-1])):
            raise ValueError(
                f"{path}: '_action_masks' rows are not of the form [1, ..., 1, 0, ...]."
            )
        report.consumed["_action_masks"] = "task_conditioning.action_masks (tasks' action sizes)"
        return dims
    name, dims, max_obs = _task_action_dims(task_set)
    num_tasks = config["num_tasks"]
    if num_tasks != len(dims):
        raise ValueError(
            f"{path}: '_task_emb.weight' has {num_tasks} rows (one per task), but the task set "
            f"{name!r} has {len(dims)} tasks: expected shape ({len(dims)}, {task_dim})."
        )
    if obs_dim != max_obs:
        raise ValueError(
            f"{path}: '_encoder.state.0.weight' takes {obs_dim + task_dim} inputs (observation "
            f"{obs_dim} + task embedding {task_dim}); the task set {name!r} pads observations "
            f"to {max_obs}: expected {max_obs + task_dim} inputs."
        )
    if action_dim != max(dims):
        raise ValueError(
            f"{path}: '_dynamics.0.weight' implies actions of size {action_dim}; the task set "
            f"{name!r} pads actions to {max(dims)}: expected "
            f"{config['latent_dim'] + task_dim + max(dims)} inputs."
        )
    expected = _masks(dims, action_dim)
    if masks is not None:
        if tuple(masks.shape) != tuple(expected.shape):
            raise ValueError(
                f"{path}: '_action_masks' has shape {tuple(masks.shape)}, expected "
                f"{tuple(expected.shape)} for the task set {name!r}."
            )
        bad = [i for i in range(len(dims)) if not torch.equal(masks[i].float(), expected[i])]
        if bad:
            raise ValueError(
                f"{path}: '_action_masks' rows {bad} differ from the action sizes of the task "
                f"set {name!r} (expected {[dims[i] for i in bad]} valid entries): the "
                "checkpoint was trained on another task list or order."
            )
        report.consumed["_action_masks"] = f"checked against the task set {name!r}"
    else:
        report.defaulted["_action_masks"] = f"the action sizes of the task set {name!r}"
    return dims


def load_tdmpc2_checkpoint(cls, path, task_set=None, **kwargs):
    """Implementation of :meth:`TDMPC2WorldModel.from_tdmpc2_checkpoint`; returns
    ``(model, report)``."""
    path = os.fspath(path)
    raw = _read(path)
    layout, state, origin = _canonical(raw, path)
    config = _infer_config(state, origin, path)
    report = TDMPC2CheckpointReport(path=path, layout=layout, config=dict(config))
    action_dims = _check_task_set(state, origin, config, task_set, path, report)
    for key in ("observation_dim", "action_dim", "latent_dim", "num_tasks", "task_dim"):
        if key in kwargs:
            raise TypeError(f"{key} is read from the checkpoint; do not pass it.")
    model = cls(
        config.pop("observation_dim"),
        config.pop("action_dim"),
        size=None,
        action_dims=action_dims,
        value_heads=True,
        **config,
        **kwargs,
    )
    target = copy.deepcopy(model.q_ensemble).requires_grad_(False).eval()

    def load(key: str, ours: torch.Tensor, to_ours, to_theirs) -> None:
        file_key = origin.get(key, key)
        if key not in state:
            raise ValueError(
                f"{path}: the key {file_key!r} is missing (expected shape "
                f"{tuple(to_theirs(ours).shape)})."
            )
        value = state[key]
        expected = tuple(to_theirs(ours.detach()).shape)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"{path}: {file_key!r} has shape {got}, expected {expected} for a model with "
                f"{report.config} (read from the other keys)."
            )
        with torch.no_grad():
            ours.copy_(to_ours(value.to(ours.dtype)))

    for key, ours, to_ours, to_theirs in _model_entries(model):
        load(key, ours, to_ours, to_theirs)
        report.consumed[origin.get(key, key)] = "world model"
    for key, ours, to_ours, to_theirs in _ensemble_entries(target):
        key = "_target_Qs_params." + key
        load(key, ours, to_ours, to_theirs)
        report.consumed[origin.get(key, key)] = "report.target_q_ensemble"
    report.target_q_ensemble = target

    if "log_std_min" in state and "log_std_dif" in state:
        model.log_std_min = float(state["log_std_min"])
        model.log_std_dif = float(state["log_std_dif"])
        report.consumed["log_std_min"] = report.consumed["log_std_dif"] = (
            "model.log_std_min / log_std_dif"
        )
    else:
        report.defaulted["log_std_min / log_std_dif"] = (
            f"TD-MPC2's bounds: {model.log_std_min} / {model.log_std_dif} (log-std in [-10, 2])"
        )
    if model.task_conditioning is not None:
        with torch.no_grad():
            model.task_conditioning.action_masks.copy_(_masks(action_dims, model.action_dim))

    for key, value in state.items():
        file_key = origin.get(key, key)
        if file_key in report.consumed or key in report.consumed or key in report.ignored:
            continue
        if key.endswith((".__batch_size", ".__device")):
            report.ignored[file_key] = "TensorDict metadata of the Q ensemble (not a tensor)"
        elif key.startswith("_detach_Qs_params."):
            twin = "_Qs.params." + key[len("_detach_Qs_params.") :]
            if not (isinstance(value, torch.Tensor) and torch.equal(value, state.get(twin))):
                raise ValueError(
                    f"{path}: {key!r} should hold the same values as {twin!r} (TD-MPC2's "
                    "detached view of the Q ensemble), but they differ: the file is corrupt."
                )
            report.ignored[file_key] = f"detached view of {twin!r} (same values, checked)"
        elif key.startswith("_termination."):
            report.ignored[file_key] = (
                "termination head of an episodic TD-MPC2 model (torchrl_pwm has none)"
            )
        else:
            unknown = sorted(
                origin.get(k, k)
                for k in state
                if origin.get(k, k) not in report.consumed
                and origin.get(k, k) not in report.ignored
                and not k.endswith((".__batch_size", ".__device"))
                and not k.startswith(("_detach_Qs_params.", "_termination."))
            )
            raise ValueError(
                f"{path}: unknown key(s) {unknown}: this is not a TD-MPC2 layout "
                "torchrl_pwm knows (current or paper-era)."
            )
    return model, report


# -- writing ---------------------------------------------------------------------------------


def to_tdmpc2_state_dict(model, target_q_ensemble: EnsembleMLP | None = None) -> dict[str, Any]:
    """A state dict in TD-MPC2's current layout (``TDMPC2.load`` reads
    ``{"model": state_dict}``) from a world model built with ``value_heads=True``.

    Args:
        model: the :class:`~torchrl_pwm.modules.TDMPC2WorldModel`.
        target_q_ensemble: the target Q ensemble (default: a copy of the online one).

    Examples:
        >>> from torchrl_pwm.modules import TDMPC2WorldModel
        >>> sd = to_tdmpc2_state_dict(TDMPC2WorldModel(5, 1, size="1M", value_heads=True))
        >>> sd["_dynamics.0.weight"].shape, sd["_Qs.params.0.weight"].shape, sd["log_std_dif"]
        (torch.Size([384, 129]), torch.Size([2, 384, 129]), tensor(12))
    """
    if model.q_ensemble is None:
        raise ValueError("to_tdmpc2_state_dict needs a world model built with value_heads=True.")
    state: dict[str, Any] = {}
    if model.task_conditioning is not None:
        state["_action_masks"] = model.task_conditioning.action_masks.detach().clone()

    def number(x: float) -> torch.Tensor:
        return torch.tensor(int(x)) if float(x).is_integer() else torch.tensor(x)

    state["log_std_min"] = number(model.log_std_min)
    state["log_std_dif"] = number(model.log_std_dif)
    for key, ours, _, to_theirs in _model_entries(model):
        state[key] = to_theirs(ours.detach()).clone()
    target = target_q_ensemble if target_q_ensemble is not None else model.q_ensemble
    for prefix, ensemble in (
        ("_Qs.params.", model.q_ensemble),
        ("_detach_Qs_params.", model.q_ensemble),
        ("_target_Qs_params.", target),
    ):
        for key, ours, _, to_theirs in _ensemble_entries(ensemble):
            state[prefix + key] = to_theirs(ours.detach()).clone()
        state[prefix + "__batch_size"] = torch.Size([ensemble.ensemble_size])
        state[prefix + "__device"] = None
    return state
