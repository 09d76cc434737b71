"""Atomic checkpoint files, incremental replay-buffer dumps and RNG states.

A checkpoint is one file written atomically (:func:`save_checkpoint`) plus, for a replay buffer,
a folder of memory-mapped chunks that only ever grows by new chunk folders
(:class:`ReplayBufferDump`): the file holds the index of the chunks, so writing it is the single
commit point of a checkpoint, and a run killed at any moment leaves the previous one complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, is_tensor_collection
from torchrl.checkpoint import GlobalRNGState
from torchrl.data import ReplayBuffer, RoundRobinWriter, TensorStorage
from torchrl.envs import EnvBase, TransformedEnv

__all__ = [
    "CheckpointError",
    "ReplayBufferDump",
    "check_observation_layout",
    "load_checkpoint",
    "load_state_dict_checked",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "torchrl_pwm.checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: the replay buffer inside the file, torch's RNG only


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
        _fsync_dir(path.parent)
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
    if state.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')}; this torchrl_pwm reads "
            f"versions {READABLE_VERSIONS}."
        )
    return state


#: Checkpoint entry holding the observation layout of the envs a run was trained on
#: (:data:`torchrl_pwm.envs.make.OBSERVATION_LAYOUT_VERSION`); checkpoints without it were
#: written with layout 1.
OBSERVATION_LAYOUT_KEY = "observation_layout"


def check_observation_layout(
    state: Mapping[str, Any],
    path: str | os.PathLike,
    current: int,
    *,
    allow_old: bool = False,
) -> int:
    """Refuse a checkpoint whose networks were trained on another observation layout than
    ``current``; returns the checkpoint's layout.

    Layout 1 (checkpoints without :data:`OBSERVATION_LAYOUT_KEY`): ``make_env`` concatenated
    a DMC task's observation entries in sorted-key order. Layout 2: in dm_control's own order,
    as TD-MPC2 does. They differ on walker, hopper, finger and fish, where a network trained
    on one reads scrambled inputs in the other. ``allow_old=True`` accepts an older layout,
    for runs on tasks whose observation is the same in both (every other DMC domain and all
    Gymnasium tasks).

    Raises:
        CheckpointError: the layouts differ (and ``allow_old`` does not cover it).

    Examples:
        >>> check_observation_layout({"observation_layout": 2}, "ckpt.pt", 2)
        2
        >>> try:
        ...     check_observation_layout({}, "ckpt.pt", 2)
        ... except CheckpointError as err:
        ...     print(str(err)[:78])
        Checkpoint ckpt.pt was written with observation layout 1 (make_env concatenate
        >>> check_observation_layout({}, "ckpt.pt", 2, allow_old=True)
        1
    """
    saved = state.get(OBSERVATION_LAYOUT_KEY, 1)
    if saved == current or (allow_old and isinstance(saved, int) and saved < current):
        return saved
    if saved == 1:
        raise CheckpointError(
            f"Checkpoint {path} was written with observation layout 1 (make_env concatenated "
            f"DMC observation entries in sorted-key order); this torchrl_pwm builds layout "
            f"{current} (dm_control's own order, as TD-MPC2 does). On walker, hopper, finger "
            "and fish tasks the entries moved, so the checkpoint's networks would read "
            "scrambled observations: train again. A run on any other task (cartpole, cheetah, "
            "reacher, acrobot, pendulum, cup, Gymnasium, ...) sees the same observations in "
            "both layouts: resume it with allow_old_observation_layout=True. See CHANGELOG.md."
        )
    raise CheckpointError(
        f"Checkpoint {path} was written with observation layout {saved!r}; this torchrl_pwm "
        f"builds layout {current}. Use the torchrl_pwm version that wrote it."
    )


def load_state_dict_checked(module: torch.nn.Module, state: dict[str, Any], what: str) -> None:
    """``module.load_state_dict(state)`` with a :class:`CheckpointError` naming ``what``."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"The checkpoint's {what} does not match this model (different sizes or "
            f"configuration?): {err}"
        ) from err


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Random-number generators


def _env_random_source(env: EnvBase) -> np.random.RandomState | np.random.Generator | None:
    """The generator an env draws its initial states from: a dm_control task's ``RandomState``
    (the one ``DMControlEnv.set_seed`` replaces), or a Gymnasium env's ``np_random``."""
    while isinstance(env, TransformedEnv):
        env = env.base_env
    inner = getattr(env, "_env", None)
    for candidate in (inner, getattr(inner, "_env", None)):  # the pixels wrapper nests one more
        task = getattr(candidate, "task", None)
        random = getattr(task, "_random", None)
        if isinstance(random, np.random.RandomState):
            return random
    random = getattr(getattr(inner, "unwrapped", None), "_np_random", None)
    return random if isinstance(random, np.random.Generator) else None


def _env_rng_state(env: EnvBase) -> dict[str, Any] | None:
    source = _env_random_source(env)
    if isinstance(source, np.random.RandomState):
        name, key, pos, has_gauss, cached = source.get_state()
        key = torch.from_numpy(key.astype(np.int64))  # a tensor, so that it loads weights-only
        return {"random_state": (name, key, int(pos), int(has_gauss), float(cached))}
    if isinstance(source, np.random.Generator):
        return {"generator": source.bit_generator.state}
    return None


def _set_env_rng_state(env: EnvBase, state: dict[str, Any], name: str) -> None:
    source = _env_random_source(env)
    if "random_state" in state and isinstance(source, np.random.RandomState):
        kind, key, pos, has_gauss, cached = state["random_state"]
        source.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    elif "generator" in state and isinstance(source, np.random.Generator):
        source.bit_generator.state = state["generator"]
    else:
        raise CheckpointError(
            f"The checkpoint's random state of env {name!r} ({sorted(state)}) does not fit this "
            f"run's env ({type(source).__name__}): was it built for another suite?"
        )


def rng_state(envs: Mapping[str, EnvBase] | None = None) -> dict[str, Any]:
    """Every random-number generator a run draws from, as plain values and tensors (loadable
    with ``weights_only=True``).

    ``"global"``: Python's ``random``, NumPy's global generator, torch's CPU generator and, once
    CUDA is initialised, every CUDA generator (TorchRL's
    :class:`~torchrl.checkpoint.GlobalRNGState`). ``"envs"``: for each env in ``envs``, the
    generator it draws initial states from (a dm_control task's ``RandomState``, a Gymnasium
    env's ``np_random``), or ``None`` for an env without one we know of.

    Args:
        envs: named environments (e.g. the collector's and the evaluation env).

    Examples:
        >>> import random
        >>> from torchrl_pwm.envs import make_env
        >>> env = make_env("cartpole-swingup", seed=0)
        >>> state = rng_state({"train": env})
        >>> sorted(state["global"])[:3], sorted(state["envs"]["train"])
        (['numpy', 'python', 'torch_cpu'], ['random_state'])
        >>> first = (random.random(), torch.rand(1), env.reset()["observation"])
        >>> set_rng_state(state, {"train": env})
        >>> second = (random.random(), torch.rand(1), env.reset()["observation"])
        >>> first[0] == second[0] and torch.equal(first[1], second[1])
        True
        >>> torch.equal(first[2], second[2])  # the same initial state of the env
        True
    """
    return {
        "global": GlobalRNGState().state_dict(),
        "envs": {name: _env_rng_state(env) for name, env in (envs or {}).items()},
    }


def set_rng_state(state: Mapping[str, Any], envs: Mapping[str, EnvBase] | None = None) -> None:
    """Restore what :func:`rng_state` captured (envs matched by name; an env absent on either
    side is left alone).

    Raises:
        CheckpointError: a generator the state holds cannot be restored here (CUDA state on a
            machine without CUDA, an env of another kind).

    Examples:
        >>> state = rng_state()
        >>> a = torch.rand(2)
        >>> set_rng_state(state)
        >>> torch.equal(a, torch.rand(2))
        True
    """
    try:
        GlobalRNGState().load_state_dict(state["global"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"Cannot restore the random-number generators: {err}") from err
    saved = state.get("envs", {})
    for name, env in (envs or {}).items():
        if saved.get(name) is not None:
            _set_env_rng_state(env, saved[name], name)


# ---------------------------------------------------------------------------------------------
# Replay buffers


class ReplayBufferDump:
    """Incremental, crash-safe dumps of a replay buffer's rows into ``directory``.

    Each :meth:`save` writes the rows written since the previous save as one new chunk
    folder, in tensordict's memory-mapped format (``meta.json`` and one ``.memmap`` file per
    key), under a temporary name that is fsynced and then renamed: a chunk folder with a final
    name is always complete. :meth:`save` returns the *index* of the buffer (its chunks, in
    order, with the storage positions they fill). The caller stores the index in its
    atomically written checkpoint file, which is thus the commit point: a run killed while
    writing a chunk leaves a folder that no index references, and :meth:`prune` (called after
    the checkpoint file is written) deletes it. Unfilled rows are never written.

    The rows since the last save are found from TorchRL's :class:`~torchrl.data.RoundRobinWriter`
    (``_cursor`` and ``_write_count``): ``n`` new rows at the storage positions
    ``last_cursor, ..., last_cursor + n - 1`` (modulo the capacity), which is what ``extend``
    and ``add`` write. When the counters do not fit that (an ``empty()``, another writer) or
    when the chunks would hold more than ``compact_after`` times the capacity (a buffer that
    wraps around overwrites old rows), the save writes one full snapshot of the
    ``len(buffer)`` stored rows instead, and :meth:`prune` deletes the chunks it replaces.
    Rows changed in place (``rb[index] = ...``, ``rb.storage.set``) move no counter: call
    ``save(full=True)`` after such writes.

    Supported buffers: a :class:`~torchrl.data.TensorStorage` (``LazyTensorStorage``,
    ``LazyMemmapStorage``, on any device) of TensorDict rows with one storage dimension (see
    :meth:`supports`). The rest of the buffer's state (writer cursor, sampler, the stored length)
    belongs in the checkpoint file, from ``buffer.state_dict()`` without the storage's rows.

    Args:
        buffer: the replay buffer.
        directory: the folder of chunks (created on the first save).

    Keyword Args:
        compact_after: write a full snapshot once the chunks would hold more rows than this
            many times the capacity (the disk used stays under ``compact_after + 1`` buffers).

    Examples:
        >>> import tempfile
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100))
        >>> dump = ReplayBufferDump(rb, tempfile.mkdtemp())
        >>> _ = rb.extend(TensorDict(x=torch.arange(10.0), batch_size=[10]))
        >>> [c["rows"] for c in dump.save()["chunks"]]
        [10]
        >>> _ = rb.extend(TensorDict(x=torch.arange(10.0, 15.0), batch_size=[5]))
        >>> index = dump.save()  # only the 5 new rows are written
        >>> [(c["start"], c["rows"]) for c in index["chunks"]]
        [(0, 10), (10, 5)]
        >>> rb2 = TensorDictReplayBuffer(storage=LazyTensorStorage(100))
        >>> ReplayBufferDump(rb2, dump.directory).load(index)
        >>> rb2.storage._len = index["length"]  # (the rest of the state: rb2.load_state_dict)
        >>> rb2[:]["x"].tolist() == rb[:]["x"].tolist()
        True
    """

    def __init__(
        self, buffer: ReplayBuffer, directory: str | os.PathLike, *, compact_after: float = 2.0
    ) -> None:
        if not self.supports(buffer):
            raise TypeError(
                f"ReplayBufferDump needs a TensorStorage with one storage dimension, got "
                f"{type(buffer.storage).__name__}."
            )
        self.buffer = buffer
        self.directory = Path(directory)
        self.compact_after = compact_after
        self._index: dict[str, Any] | None = None  # the index of the last save or load

    @staticmethod
    def supports(buffer: Any) -> bool:
        """Whether ``buffer`` can be dumped in chunks (a one-dimensional ``TensorStorage``).

        Examples:
            >>> from torchrl.data import LazyTensorStorage, ListStorage, ReplayBuffer
            >>> ReplayBufferDump.supports(ReplayBuffer(storage=LazyTensorStorage(10)))
            True
            >>> ReplayBufferDump.supports(ReplayBuffer(storage=ListStorage(10)))
            False
        """
        storage = getattr(buffer, "storage", None)
        return isinstance(storage, TensorStorage) and storage.ndim == 1

    def _positions(self, start: int, rows: int) -> torch.Tensor:
        capacity = self.buffer.storage.max_size
        return (start + torch.arange(rows)) % capacity

    def _write_chunk(self, start: int, rows: int, tag: str) -> dict[str, Any]:
        storage = self.buffer.storage
        data = storage.get(self._positions(start, rows))
        if not is_tensor_collection(data):
            raise TypeError(
                f"ReplayBufferDump stores TensorDict rows, the storage holds {type(data).__name__}."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"rows-{tag}-{uuid.uuid4().hex[:8]}"
        tmp = self.directory / f".tmp-{name}"
        data = data.cpu()
        crc = _crc32(data)
        try:
            data.memmap(prefix=tmp)
            del data
            sizes = {}
            for folder, _, files in os.walk(tmp):
                for file in files:
                    with open(os.path.join(folder, file), "rb+") as f:
                        os.fsync(f.fileno())
                        sizes[Path(folder, file).relative_to(tmp).as_posix()] = os.fstat(
                            f.fileno()
                        ).st_size
                _fsync_dir(Path(folder))
            os.replace(tmp, self.directory / name)
            _fsync_dir(self.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return {"name": name, "start": start, "rows": rows, "files": sizes, "crc32": crc}

    def save(self, *, full: bool = False) -> dict[str, Any]:
        """Write the rows added since the last :meth:`save` / :meth:`load` (all the stored rows
        with ``full=True``); return the index to store in the checkpoint (plain values:
        loadable with ``weights_only=True``)."""
        storage, writer = self.buffer.storage, self.buffer._writer
        capacity, length = storage.max_size, len(storage)
        written = getattr(writer, "_write_count", None)
        cursor = getattr(writer, "_cursor", None)
        last = self._index
        chunks: list[dict[str, Any]] | None = None
        if isinstance(writer, RoundRobinWriter) and last is not None and length and not full:
            new = written - last["write_count"]
            held = sum(chunk["rows"] for chunk in last["chunks"])
            if (
                0 <= new < capacity
                and cursor == (last["cursor"] + new) % capacity
                and held + new <= self.compact_after * capacity
            ):
                chunks = list(last["chunks"])
                if new:
                    tag = f"{last['write_count']:012d}-{written:012d}"
                    chunks.append(self._write_chunk(last["cursor"], new, tag))
        if chunks is None:  # first save, or the rows since the last one are not known
            tag = f"all-{written or 0:012d}"
            chunks = [self._write_chunk(0, length, tag)] if length > 0 else []
        self._index = {
            "capacity": capacity,
            "length": length,
            "write_count": written,
            "cursor": cursor,
            "chunks": chunks,
        }
        return self._index

    def prune(self) -> list[str]:
        """Delete the chunk folders (and unfinished temporary ones) that the last index does not
        reference; returns their names. Call it once that index is committed."""
        keep = {chunk["name"] for chunk in (self._index or {}).get("chunks", [])}
        removed = []
        if self.directory.is_dir():
            for entry in sorted(self.directory.iterdir()):
                if entry.name not in keep and entry.name.startswith(("rows-", ".tmp-rows-")):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return removed

    def load(self, index: Mapping[str, Any]) -> None:
        """Write the rows of the chunks that ``index`` lists into the buffer's storage, in
        order (later chunks overwrite the positions of earlier ones). The storage's length and
        the writer's and sampler's state come from ``buffer.load_state_dict``, afterwards.

        Raises:
            CheckpointError: a chunk is missing, truncated or unreadable, or does not fit the
                buffer (other capacity, keys or shapes).
        """
        storage = self.buffer.storage
        if index["capacity"] != storage.max_size:
            raise CheckpointError(
                f"The replay buffer in {self.directory} has capacity {index['capacity']}, this "
                f"run's has {storage.max_size}."
            )
        for chunk in index["chunks"]:
            path = self.directory / chunk["name"]
            if not path.is_dir():
                raise CheckpointError(
                    f"Replay-buffer chunk {path} is missing: the checkpoint lists it, so its "
                    "folder was deleted or moved apart from the checkpoint file."
                )
            for file, size in chunk["files"].items():
                # tensordict would silently extend a short file with zeros when mapping it
                if not (path / file).is_file() or (path / file).stat().st_size != size:
                    raise CheckpointError(
                        f"Replay-buffer chunk {path} is corrupt or truncated: {file} is missing "
                        f"or does not have its {size} bytes."
                    )
            try:
                data = TensorDict.load_memmap(path)
            except Exception as err:  # truncated or corrupt files raise several types
                raise CheckpointError(
                    f"Cannot read replay-buffer chunk {path}: it is corrupt or truncated "
                    f"({type(err).__name__}: {err})."
                ) from err
            if tuple(data.batch_size) != (chunk["rows"],):
                raise CheckpointError(
                    f"Replay-buffer chunk {path} holds {tuple(data.batch_size)} rows, the "
                    f"checkpoint says {chunk['rows']}."
                )
            if chunk.get("crc32") is not None and _crc32(data) != chunk["crc32"]:
                raise CheckpointError(
                    f"Replay-buffer chunk {path} is corrupt: its checksum differs from the one "
                    "the checkpoint recorded."
                )
            if storage.initialized:
                _check_same_layout(storage._storage[0], data[0], path)
            try:
                storage.set(self._positions(chunk["start"], chunk["rows"]), data, set_cursor=False)
            except Exception as err:
                raise CheckpointError(
                    f"Replay-buffer chunk {path} does not fit this run's buffer (other keys or "
                    f"shapes?): {type(err).__name__}: {err}"
                ) from err
            del data
        self._index = dict(index)


def _check_same_layout(stored: TensorDict, loaded: TensorDict, path: Path) -> None:
    """Same keys, shapes and dtypes (a storage would ignore or broadcast a mismatch)."""

    def layout(td):
        return {
            key: (tuple(value.shape), value.dtype)
            for key, value in td.items(include_nested=True, leaves_only=True)
        }

    ours, theirs = layout(stored), layout(loaded)
    if ours != theirs:
        diff = sorted(
            str(key) for key in set(ours) | set(theirs) if ours.get(key) != theirs.get(key)
        )
        raise CheckpointError(
            f"Replay-buffer chunk {path} does not fit this run's buffer: the entries {diff} "
            "differ in presence, shape or dtype."
        )


def _crc32(data: TensorDict) -> int:
    """CRC-32 of every entry's bytes, in key order."""
    crc = 0
    for key in sorted(data.keys(include_nested=True, leaves_only=True), key=str):
        value = data.get(key).contiguous().view(-1).view(torch.uint8)
        crc = zlib.crc32(value.numpy(), crc)
    return crc
