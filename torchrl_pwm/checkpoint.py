"""Atomic checkpoint files: written completely or not at all, loaded without running code."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "load_replay_buffer",
    "load_state_dict_checked",
    "save_checkpoint",
    "save_replay_buffer",
]

FORMAT = "torchrl_pwm.checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, corrupt or does not match the model."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, fsync,
    rename): a run killed mid-write leaves the previous checkpoint intact.

    ``state`` must hold only tensors, containers and plain Python values, so that it loads
    with ``torch.load(weights_only=True)``.

    Examples:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> _ = save_checkpoint({"step": 3, "w": torch.ones(2)}, path)
        >>> load_checkpoint(path)["step"]
        3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises:
        CheckpointError: if the file is missing, truncated or corrupt, was not written by
            :func:`save_checkpoint`, or would need to run code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated/corrupt files
        raise CheckpointError(
            f"Cannot read checkpoint {path}: the file is corrupt, truncated or not a "
            f"weights-only torch file ({type(err).__name__}: {err})."
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torchrl_pwm checkpoint.")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')}; this torchrl_pwm reads {VERSION}."
        )
    return state


def load_state_dict_checked(module: torch.nn.Module, state: dict[str, Any], what: str) -> None:
    """``module.load_state_dict(state)`` with a :class:`CheckpointError` naming ``what``."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"The checkpoint's {what} does not match this model (different sizes or "
            f"configuration?): {err}"
        ) from err


def save_replay_buffer(buffer, path: str | os.PathLike) -> Path:
    """``buffer.dumps`` into a fresh folder, then swap it in place of ``path`` by renames, so
    that a killed run leaves either the old or the new buffer on disk, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        buffer.dumps(tmp)
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_replay_buffer(buffer, path: str | os.PathLike) -> None:
    """Restore a buffer saved by :func:`save_replay_buffer` (falls back to the previous copy
    if a run was killed between the two renames of the swap)."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    source = path if path.exists() else old
    if not source.exists():
        raise CheckpointError(f"No replay buffer at {path}.")
    try:
        buffer.loads(source)
    except Exception as err:
        raise CheckpointError(f"Cannot restore the replay buffer from {source}: {err}") from err
