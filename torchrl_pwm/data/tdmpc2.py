"""TD-MPC2's multi-task datasets (``mt30``, ``mt80``) as a memory-mapped TorchRL storage.

A TD-MPC2 *chunk* is a ``torch.save``d :class:`~tensordict.TensorDict` of batch shape
``[episodes, rows]`` (501 rows per episode in ``mt30``, 101 in ``mt80``) with the keys

============  ===================  =======================================================
key           dtype and shape      meaning
============  ===================  =======================================================
``obs``       float32 [E, T, D]    observations, zero-padded to the set's widest (24 / 39)
``action``    float32 [E, T, A]    the action that *led to* the row's observation, padded
``reward``    float32 [E, T]       the reward of that action
``task``      int32 [E, T]         task id: the task's index in the task set
============  ===================  =======================================================

Row 0 of an episode is the reset observation: its action and reward are NaN (uninitialised
memory in files made before December 2023), so they are never read. Transition ``t`` is
``(obs[t], action[t + 1], reward[t + 1], obs[t + 1])``.

:func:`load_tdmpc2_chunk` loads a chunk safely (``weights_only=True`` plus exactly the two
tensordict globals the format needs), :func:`validate_tdmpc2_chunk` checks it against a task
set, :func:`rollout_to_tdmpc2` and :func:`save_tdmpc2_chunk` write chunks, and
:class:`TDMPC2Dataset` converts chunks, one block of episodes at a time, into one
memory-mapped storage on disk and samples ``[B, H]`` slices from it for
:class:`~torchrl_pwm.objectives.TDMPC2ModelLoss`.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import pickle
import shutil
import sys
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase, is_tensor_collection
from torchrl.data import ImmutableDatasetWriter, ReplayBuffer, TensorStorage
from torchrl.data.replay_buffers.samplers import Sampler

__all__ = [
    "EpisodeSliceSampler",
    "TDMPC2DataError",
    "TDMPC2Dataset",
    "TaskSpec",
    "load_tdmpc2_chunk",
    "rollout_to_tdmpc2",
    "save_tdmpc2_chunk",
    "validate_tdmpc2_chunk",
]

CHUNK_KEYS = ("obs", "action", "reward", "task")
_FLOAT_KEYS = ("obs", "action", "reward")
_TASK_DTYPES = (torch.int32, torch.int64)
FORMAT = "torchrl_pwm.tdmpc2_dataset"
VERSION = 1
_BLOCK_ROWS = 1 << 20  # rows validated and written at a time (~130 MB of mt30 data)


class TDMPC2DataError(ValueError):
    """A TD-MPC2 chunk or converted dataset is unreadable, unsafe or malformed; the message
    names the file and the problem."""


# ---------------------------------------------------------------------------------------------
# Task sets


@dataclass(frozen=True)
class TaskSpec:
    """What the loader needs to know about one task: its name and unpadded widths.

    :class:`torchrl_pwm.envs.TaskInfo` (the entries of ``task_set("mt30")``) has these fields;
    any object with ``name``, ``obs_dim`` and ``action_dim`` attributes works.

    Examples:
        >>> TaskSpec("cartpole-swingup", obs_dim=5, action_dim=1)
        TaskSpec(name='cartpole-swingup', obs_dim=5, action_dim=1)
    """

    name: str
    obs_dim: int
    action_dim: int


def _resolve_task_set(task_set: str | Sequence[Any]) -> tuple[str, tuple[TaskSpec, ...]]:
    """A task set by name (``"mt30"``, ``"mt80"``) or as a sequence of task descriptions."""
    if isinstance(task_set, str):
        # torchrl_pwm.envs.task_sets imports only the standard library: the task lists as data.
        from torchrl_pwm.envs.task_sets import task_set as named_task_set

        name, tasks = task_set, named_task_set(task_set)
    else:
        name, tasks = "custom", task_set
    specs = []
    for task in tasks:
        try:
            specs.append(TaskSpec(str(task.name), int(task.obs_dim), int(task.action_dim)))
        except AttributeError as err:
            raise TypeError(
                "A task set is 'mt30', 'mt80' or a sequence of objects with name, obs_dim and "
                f"action_dim (e.g. torchrl_pwm.envs.TaskInfo), got an entry {task!r}."
            ) from err
    if not specs:
        raise ValueError("The task set is empty.")
    return name, tuple(specs)


def _task_ids(tasks: Iterable[str | int] | None, specs: Sequence[TaskSpec]) -> list[int] | None:
    """Task names or ids -> sorted ids in the task set (``None``: all tasks)."""
    if tasks is None:
        return None
    names = [s.name for s in specs]
    ids = set()
    for task in tasks:
        if isinstance(task, str):
            if task not in names:
                raise ValueError(f"Task {task!r} is not in the task set ({', '.join(names)}).")
            ids.add(names.index(task))
        else:
            if not 0 <= int(task) < len(names):
                raise ValueError(f"Task id {task} is outside the task set (0..{len(names) - 1}).")
            ids.add(int(task))
    if not ids:
        raise ValueError("tasks is empty: name at least one task, or pass None for all.")
    return sorted(ids)


# ---------------------------------------------------------------------------------------------
# Chunk files


def _safe_globals() -> list[Any]:
    import tensordict._reductions
    import tensordict._td

    return [tensordict._td.TensorDict, tensordict._reductions._make_td]


def load_tdmpc2_chunk(path: str | os.PathLike, *, trust_pickle: bool = False) -> TensorDictBase:
    """Load a TD-MPC2 chunk file, memory-mapped (its tensors are read from disk on access).

    The file is a pickle. It is loaded with ``torch.load(weights_only=True)``, allowing only
    the two globals a pickled TensorDict needs (``tensordict._td.TensorDict`` and
    ``tensordict._reductions._make_td``): a file that would call anything else while
    unpickling (i.e. run code) is refused, unless ``trust_pickle=True``, which loads it with
    ``weights_only=False``. Only pass that for files whose source you trust.

    Args:
        path: the chunk file.

    Keyword Args:
        trust_pickle: load files that need arbitrary globals (runs their code).

    Raises:
        TDMPC2DataError: the file is missing, truncated or corrupt, needs code to load, or
            does not hold a TensorDict.

    Examples:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "chunk_0.pt")
        >>> td = TensorDict(obs=torch.zeros(2, 3, 4), batch_size=[2, 3])
        >>> torch.save(td, path)
        >>> load_tdmpc2_chunk(path).batch_size
        torch.Size([2, 3])
    """
    path = Path(path)
    if not path.is_file():
        raise TDMPC2DataError(f"{path}: no such file.")
    if not zipfile.is_zipfile(path):
        raise TDMPC2DataError(
            f"{path}: not a torch.save zip archive: the file is truncated or corrupt, or was "
            "written with the legacy (pre-1.6) format."
        )
    try:
        if trust_pickle:
            data = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        else:
            with torch.serialization.safe_globals(_safe_globals()):
                data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            culprit = next(
                (line.strip() for line in str(err).splitlines() if "GLOBAL" in line), str(err)
            )
            raise TDMPC2DataError(
                f"{path}: loading it would run code ({culprit[:200]}); a TD-MPC2 chunk needs "
                "only tensordict's TensorDict. Pass trust_pickle=True only if you trust the "
                "file's source."
            ) from err
        raise TDMPC2DataError(f"{path}: the file is truncated or corrupt ({err}).") from err
    except Exception as err:  # zip/storage readers raise several types on truncated data
        raise TDMPC2DataError(
            f"{path}: the file is truncated or corrupt ({type(err).__name__}: {err})."
        ) from err
    if not is_tensor_collection(data):
        raise TDMPC2DataError(
            f"{path}: holds a {type(data).__name__}; a TD-MPC2 chunk is a TensorDict of shape "
            "[episodes, rows] with keys obs, action, reward, task."
        )
    return data


def validate_tdmpc2_chunk(
    chunk: TensorDictBase,
    task_set: str | Sequence[Any],
    *,
    path: str | os.PathLike | None = None,
    episode_rows: int | None = None,
    block_rows: int = _BLOCK_ROWS,
) -> None:
    """Check a chunk against TD-MPC2's format and a task set; raise on the first problem.

    Checked: the keys (exactly ``obs``, ``action``, ``reward``, ``task``), dtypes (float32;
    int32 or int64 task ids), shapes (``[E, T, padded obs width]``, ``[E, T, padded action
    width]``, ``[E, T]``, ``[E, T]``), task ids (inside the task set, one per episode), values
    (no NaN or inf anywhere in ``obs``, nor in ``action`` / ``reward`` after row 0) and padding
    (observation and action entries beyond the episode's task's own width are exactly 0, rows
    from 1 for actions). Row 0's action and reward are not read. The data is read one block of
    episodes at a time (memory-mapped chunks stay on disk).

    Args:
        chunk: a chunk, e.g. from :func:`load_tdmpc2_chunk`.
        task_set: ``"mt30"``, ``"mt80"`` or a sequence of :class:`TaskSpec`-like entries.

    Keyword Args:
        path: the file name the errors quote.
        episode_rows: the rows per episode the chunk must have (``None``: any, at least 2).
        block_rows: rows read at a time.

    Raises:
        TDMPC2DataError: naming the file, the key, and the first offending episode.

    Examples:
        >>> chunk = TensorDict(
        ...     obs=torch.zeros(1, 3, 24), action=torch.zeros(1, 3, 6),
        ...     reward=torch.zeros(1, 3), task=torch.full((1, 3), 10, dtype=torch.int32),
        ...     batch_size=[1, 3])
        >>> validate_tdmpc2_chunk(chunk, "mt30")  # cartpole-swingup: 5 obs dims, 1 action dim
        >>> chunk["obs"][0, 1, 7] = 1.0
        >>> try:
        ...     validate_tdmpc2_chunk(chunk, "mt30", path="chunk_0.pt")
        ... except TDMPC2DataError as err:
        ...     print(err)
        chunk_0.pt: 'obs' is not zero-padded: episode 0 (task 10, 'cartpole-swingup', 5 dims) has 1.0 at row 1, dim 7.
    """
    name, specs = _resolve_task_set(task_set)
    where = str(path) if path is not None else "chunk"
    _check_layout(chunk, specs, where, episode_rows)
    episodes, rows = chunk.batch_size
    step = max(1, block_rows // rows)
    obs_dims = torch.tensor([s.obs_dim for s in specs])
    action_dims = torch.tensor([s.action_dim for s in specs])
    for e0 in range(0, episodes, step):
        block = chunk[e0 : e0 + step]
        _check_block(block, e0, specs, name, obs_dims, action_dims, where)
        _drop_pages(*(block.get(k) for k in CHUNK_KEYS))


def _check_layout(
    chunk: TensorDictBase, specs: Sequence[TaskSpec], where: str, episode_rows: int | None
) -> None:
    if chunk.batch_dims != 2:
        raise TDMPC2DataError(
            f"{where}: batch shape {tuple(chunk.batch_size)}; a TD-MPC2 chunk is [episodes, rows]."
        )
    keys = set(chunk.keys(include_nested=True, leaves_only=True))
    if missing := [k for k in CHUNK_KEYS if k not in keys]:
        raise TDMPC2DataError(
            f"{where}: missing key(s) {missing}; a TD-MPC2 chunk has {list(CHUNK_KEYS)}."
        )
    if extra := sorted(str(k) for k in keys - set(CHUNK_KEYS)):
        raise TDMPC2DataError(
            f"{where}: unexpected key(s) {extra}; a TD-MPC2 chunk has exactly {list(CHUNK_KEYS)}."
        )
    episodes, rows = chunk.batch_size
    for key in _FLOAT_KEYS:
        if chunk.get(key).dtype != torch.float32:
            raise TDMPC2DataError(
                f"{where}: {key!r} has dtype {chunk.get(key).dtype}; expected torch.float32."
            )
    if chunk.get("task").dtype not in _TASK_DTYPES:
        raise TDMPC2DataError(
            f"{where}: 'task' has dtype {chunk.get('task').dtype}; expected torch.int32 "
            "(or torch.int64)."
        )
    expected = {
        "obs": (episodes, rows, max(s.obs_dim for s in specs)),
        "action": (episodes, rows, max(s.action_dim for s in specs)),
        "reward": (episodes, rows),
        "task": (episodes, rows),
    }
    for key, shape in expected.items():
        if tuple(chunk.get(key).shape) != shape:
            raise TDMPC2DataError(
                f"{where}: {key!r} has shape {tuple(chunk.get(key).shape)}; expected {shape} "
                "([episodes, rows] then the task set's padded width)."
            )
    if rows < 2:
        raise TDMPC2DataError(f"{where}: {rows} row(s) per episode; a transition needs 2.")
    if episode_rows is not None and rows != episode_rows:
        raise TDMPC2DataError(
            f"{where}: {rows} rows per episode; expected {episode_rows} (as the other chunks)."
        )


def _first(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0])


def _check_block(
    block: TensorDictBase,
    e0: int,
    specs: Sequence[TaskSpec],
    set_name: str,
    obs_dims: torch.Tensor,
    action_dims: torch.Tensor,
    where: str,
) -> None:
    task = block.get("task")
    if (bad := (task < 0) | (task >= len(specs))).any():
        e, t = _first(bad)
        raise TDMPC2DataError(
            f"{where}: 'task' holds id {int(task[e, t])} (episode {e0 + e}, row {t}), outside "
            f"the task set {set_name!r} (ids 0..{len(specs) - 1})."
        )
    if (bad := task != task[:, :1]).any():
        e, t = _first(bad)
        raise TDMPC2DataError(
            f"{where}: 'task' changes within episode {e0 + e} (row {t}: {int(task[e, t])}, "
            f"row 0: {int(task[e, 0])}); an episode has one task."
        )
    ids = task[:, 0].long()
    for key, rows in (("obs", slice(None)), ("action", slice(1, None)), ("reward", slice(1, None))):
        value = block.get(key)[:, rows]
        if (bad := ~torch.isfinite(value)).any():
            index = _first(bad)
            e, t = index[0], index[1] + (rows.start or 0)
            only = "" if key == "obs" else " (only row 0 may: it has no action)"
            raise TDMPC2DataError(
                f"{where}: {key!r} holds {float(value[index])} at episode {e0 + e}, row {t}{only}."
            )
    for key, dims, rows in (
        ("obs", obs_dims, slice(None)),
        ("action", action_dims, slice(1, None)),
    ):
        value = block.get(key)[:, rows]
        width = dims[ids]  # [E]: each episode's own width
        padded = torch.arange(value.shape[-1]) >= width[:, None]  # [E, D]
        if not padded.any():
            continue
        if (bad := (value != 0) & padded[:, None, :]).any():
            e, t, d = _first(bad)
            spec = specs[int(ids[e])]
            raise TDMPC2DataError(
                f"{where}: {key!r} is not zero-padded: episode {e0 + e} (task {int(ids[e])}, "
                f"{spec.name!r}, {int(width[e])} dims) has {float(value[e, t, d])} at row "
                f"{t + (rows.start or 0)}, dim {d}."
            )


def rollout_to_tdmpc2(
    rollout: TensorDictBase,
    *,
    task: int,
    observation_dim: int,
    action_dim: int,
    observation_key: str = "observation",
) -> TensorDict:
    """One episode of TorchRL transitions (``[T]``: ``observation``, ``action``,
    ``("next", "observation")``, ``("next", "reward")``) as TD-MPC2 rows (``[T + 1]``).

    Row 0 holds the first observation with a NaN action and reward; row ``t + 1`` holds the
    next observation of transition ``t`` with that transition's action and reward.
    Observations and actions are zero-padded to ``observation_dim`` / ``action_dim``.

    Args:
        rollout: the episode's transitions, in order (e.g. ``env.rollout(...)``).

    Keyword Args:
        task: the episode's task id (its index in the task set).
        observation_dim: padded observation width (24 for ``mt30``).
        action_dim: padded action width (6).
        observation_key: the rollout's observation entry.

    Examples:
        >>> from torchrl_pwm.envs import make_env
        >>> rollout = make_env("cartpole-swingup", seed=0).rollout(3)
        >>> rows = rollout_to_tdmpc2(rollout, task=10, observation_dim=24, action_dim=6)
        >>> rows.batch_size, rows["obs"].shape, rows["task"].dtype
        (torch.Size([4]), torch.Size([4, 24]), torch.int32)
        >>> bool(rows["reward"][0].isnan()), torch.equal(rows["action"][1, :1], rollout["action"][0])
        (True, True)
    """
    if rollout.batch_dims != 1:
        raise ValueError(
            f"rollout_to_tdmpc2 takes one episode [T], got batch shape {tuple(rollout.batch_size)}."
        )
    steps = rollout.shape[0]
    obs = rollout.get(observation_key)
    next_obs = rollout.get(("next", observation_key))
    action = rollout.get("action")
    reward = rollout.get(("next", "reward")).reshape(steps)
    if obs.shape[-1] > observation_dim or action.shape[-1] > action_dim:
        raise ValueError(
            f"observation width {obs.shape[-1]} / action width {action.shape[-1]} exceed the "
            f"padded widths {observation_dim} / {action_dim}."
        )
    rows = TensorDict(
        obs=torch.zeros(steps + 1, observation_dim),
        action=torch.zeros(steps + 1, action_dim),
        reward=torch.empty(steps + 1),
        task=torch.full((steps + 1,), task, dtype=torch.int32),
        batch_size=[steps + 1],
    )
    rows["obs"][0, : obs.shape[-1]] = obs[0].float().cpu()
    rows["obs"][1:, : obs.shape[-1]] = next_obs.float().cpu()
    rows["action"][0] = float("nan")
    rows["action"][1:, : action.shape[-1]] = action.float().cpu()
    rows["reward"][0] = float("nan")
    rows["reward"][1:] = reward.float().cpu()
    return rows


def save_tdmpc2_chunk(chunk: TensorDictBase, path: str | os.PathLike) -> Path:
    """Write ``chunk`` (``[episodes, rows]``, keys ``obs``, ``action``, ``reward``, ``task``)
    in TD-MPC2's format: ``torch.save`` of a plain CPU :class:`~tensordict.TensorDict`,
    atomically (temporary file + rename).

    Examples:
        >>> import tempfile
        >>> from torchrl_pwm.envs import make_env
        >>> rows = rollout_to_tdmpc2(make_env("cartpole-swingup").rollout(5), task=10,
        ...                          observation_dim=24, action_dim=6)
        >>> path = save_tdmpc2_chunk(torch.stack([rows, rows]), tempfile.mkdtemp() + "/c.pt")
        >>> load_tdmpc2_chunk(path).batch_size
        torch.Size([2, 6])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = TensorDict(
        {key: chunk.get(key).detach().cpu().contiguous() for key in CHUNK_KEYS},
        batch_size=chunk.batch_size[:2],
    )
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# Memory


_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)
_LIBC = None


def _file_mappings() -> list[tuple[int, int, bool]]:
    """This process's file-backed mappings: (start, end, shared)."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/"):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                out.append((start, end, parts[1][3] == "s"))
    return out


def _drop_pages(*tensors: torch.Tensor, private: bool = False) -> None:
    """Unmap the pages of memory-mapped tensors from this process (Linux ``madvise``): the data
    stays in the file and the page cache, but stops counting as this process's resident
    memory. Without this, reading a 40 GB file through a mapping leaves up to 40 GB counted as
    resident. Only pages of file-backed mappings are dropped: shared ones (tensordict's
    memory-mapped tensors, where written pages stay in the page cache), and private ones
    (``torch.load(mmap=True)``) only with ``private=True``, for mappings this module loaded and
    never wrote (dropping a written private page would lose the write).
    """
    global _LIBC
    if not sys.platform.startswith("linux"):
        return
    maps = None
    page = mmap.PAGESIZE
    for tensor in tensors:
        if tensor.device.type != "cpu" or not tensor.numel() or not tensor.is_contiguous():
            continue
        if maps is None:
            try:
                maps = _file_mappings()
            except OSError:
                return
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        for lo, hi, shared in maps:
            if lo <= start and end <= hi:
                if shared or private:
                    if _LIBC is None:
                        _LIBC = ctypes.CDLL(None, use_errno=True)
                        _LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                    first, last = start - start % page, min(end + (-end) % page, hi)
                    _LIBC.madvise(first, last - first, _MADV_DONTNEED)
                break


# ---------------------------------------------------------------------------------------------
# Sampling


class EpisodeSliceSampler(Sampler):
    """Slices of ``slice_len`` consecutive storage rows inside one episode, for storages that
    hold each episode contiguously (a TorchRL :class:`~torchrl.data.replay_buffers.Sampler`).

    Episodes are given as a table (first row, number of rows), so no per-row trajectory key
    is read: :class:`~torchrl.data.SliceSampler` would load the whole ``episode`` column to find
    the boundaries (2.7 GB of int64 for ``mt30``) and, in TorchRL 0.14.1, reads every sampled
    row a second time to compute its done/``is_init`` flags. The distribution is
    ``SliceSampler``'s with ``strict_length=True``: an episode uniformly among those long
    enough, then a start uniformly among its ``length - slice_len + 1`` windows.

    Args:
        starts: first storage row of each episode ``[N]``.
        lengths: rows of each episode ``[N]``.

    Keyword Args:
        slice_len: rows per slice (``H + 1`` for ``H`` transitions).

    Examples:
        >>> from torchrl.data import LazyTensorStorage, ReplayBuffer
        >>> rb = ReplayBuffer(
        ...     storage=LazyTensorStorage(20),
        ...     sampler=EpisodeSliceSampler(torch.tensor([0, 10]), torch.tensor([10, 10]), slice_len=4),
        ...     batch_size=8,
        ... )
        >>> _ = rb.extend(TensorDict(episode=torch.arange(20) // 10, batch_size=[20]))
        >>> slices = rb.sample()["episode"].view(2, 4)
        >>> bool((slices == slices[:, :1]).all())  # never crosses an episode
        True
    """

    def __init__(self, starts: torch.Tensor, lengths: torch.Tensor, *, slice_len: int) -> None:
        starts = torch.as_tensor(starts, dtype=torch.long).reshape(-1)
        lengths = torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
        if starts.shape != lengths.shape:
            raise ValueError("starts and lengths must have the same number of episodes.")
        if slice_len < 1:
            raise ValueError(f"slice_len must be >= 1, got {slice_len}.")
        long_enough = lengths >= slice_len
        if not long_enough.any():
            raise ValueError(
                f"No episode has {slice_len} rows (the longest has "
                f"{int(lengths.max()) if lengths.numel() else 0})."
            )
        self.starts = starts[long_enough]
        self.windows = lengths[long_enough] - slice_len + 1
        self.slice_len = slice_len
        self._offsets = torch.arange(slice_len)

    def sample(self, storage: Any, batch_size: int) -> tuple[torch.Tensor, dict]:
        if batch_size % self.slice_len:
            raise ValueError(
                f"batch_size {batch_size} is not a multiple of slice_len {self.slice_len}."
            )
        num_slices = batch_size // self.slice_len
        episode = torch.randint(len(self.starts), (num_slices,), generator=self._rng)
        offset = (torch.rand(num_slices, generator=self._rng) * self.windows[episode]).long()
        first = self.starts[episode] + offset
        return (first[:, None] + self._offsets).reshape(-1), {}

    def _sampleable_count(self, storage: Any, batch_size: int) -> int:
        return int(self.windows.sum())

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return

    def _empty(self) -> None:
        return

    def dumps(self, path) -> None:
        return

    def loads(self, path) -> None:
        return

    def __repr__(self) -> str:
        return f"{type(self).__name__}(episodes={len(self.starts)}, slice_len={self.slice_len})"


class _SlicesToTransitions:
    """Replay-buffer transform: ``[B * (H + 1)]`` stored rows -> ``[B, H]`` transitions in
    TorchRL's layout (``observation``, ``action``, ``task``, ``episode``,
    ``("next", "observation")``, ``("next", "reward")`` ``[B, H, 1]``), optionally pinned and
    sent to ``device`` (non-blocking)."""

    def __init__(self, horizon: int, device: torch.device | None, pin: bool) -> None:
        self.horizon, self.device, self.pin = horizon, device, pin

    def __call__(self, rows: TensorDictBase) -> TensorDict:
        x = rows.reshape(-1, self.horizon + 1)
        batch = TensorDict(
            {
                "observation": x.get("observation")[:, :-1],
                "action": x.get("action")[:, 1:],
                "task": x.get("task")[:, :-1].long(),
                "episode": x.get("episode")[:, :-1].long(),
                "next": {
                    "observation": x.get("observation")[:, 1:],
                    "reward": x.get("reward")[:, 1:, None],
                },
            },
            batch_size=[x.shape[0], self.horizon],
            device=x.device,
        )
        if self.pin:
            batch = batch.pin_memory()
        if self.device is not None and batch.device != self.device:
            batch = batch.to(self.device, non_blocking=self.pin)
        return batch


# ---------------------------------------------------------------------------------------------
# The dataset


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_tree(folder: Path) -> None:
    for entry in folder.rglob("*"):
        if entry.is_file():
            with open(entry, "rb+") as f:
                os.fsync(f.fileno())


class TDMPC2Dataset:
    """TD-MPC2 chunk files (``mt30``, ``mt80``, or collected with
    ``examples/collect_dataset``) as one memory-mapped TorchRL storage, and ``[B, H]``
    slices of it for world-model training.

    :meth:`convert` validates the chunks (:func:`validate_tdmpc2_chunk`) and writes their rows,
    one block of episodes at a time, into one folder of memory-mapped tensors
    (:class:`~tensordict.TensorDict` memmap format, wrapped in a
    :class:`~torchrl.data.TensorStorage`); ``TDMPC2Dataset(root)`` opens such a folder without
    reading it. Each observation is stored once, in TD-MPC2's row layout: row ``t`` of an
    episode holds ``observation`` ``o_t``, the ``action`` and ``reward`` that led to it (NaN at
    row 0) and the ``task`` and ``episode`` ids. :meth:`make_replay_buffer` samples slices of
    ``H + 1`` rows that never cross an episode (:class:`EpisodeSliceSampler`) and returns them
    as ``H`` transitions, ``next`` observations taken from the same slice.

    Memory: converting holds one block of about a million rows in RAM (~130 MB of ``mt30``),
    whatever the dataset's size, and opening reads nothing; sampling from disk reads only the sampled rows (through the
    page cache, which the kernel reclaims). With ``device="cuda"``, the storage is copied to
    the GPU when 2.5 times its size fits in free GPU memory (TD-MPC2's rule); otherwise it stays
    on disk and batches are gathered in background threads into pinned memory and copied
    asynchronously.

    Args:
        root: a folder written by :meth:`convert`.

    Raises:
        TDMPC2DataError: the folder is not a converted dataset, or its files are missing or
            truncated.

    Examples:
        >>> import tempfile
        >>> from torchrl_pwm.envs import make_env
        >>> tmp = tempfile.mkdtemp()
        >>> env = make_env("cartpole-swingup", seed=0, max_episode_steps=20)
        >>> episodes = [
        ...     rollout_to_tdmpc2(env.rollout(20), task=10, observation_dim=24, action_dim=6)
        ...     for _ in range(3)
        ... ]
        >>> _ = save_tdmpc2_chunk(torch.stack(episodes), tmp + "/chunk_0.pt")
        >>> ds = TDMPC2Dataset.convert([tmp + "/chunk_0.pt"], tmp + "/data", task_set="mt30")
        >>> ds
        TDMPC2Dataset(episodes=3, rows=63, rows_per_episode=21, tasks=['cartpole-swingup'], task_set='mt30')
        >>> rb = ds.make_replay_buffer(horizon=16, batch_size=4)
        >>> batch = rb.sample()
        >>> batch.shape, batch["next", "reward"].shape, batch["task"][0, 0].item()
        (torch.Size([4, 16]), torch.Size([4, 16, 1]), 10)
        >>> torch.equal(batch["observation"][:, 1:], batch["next", "observation"][:, :-1])
        True
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise TDMPC2DataError(
                f"{self.root}: not a converted TD-MPC2 dataset (no dataset.json); build one "
                "with TDMPC2Dataset.convert(files, root, task_set=...)."
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise TDMPC2DataError(
                f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r}; "
                f"this torchrl_pwm reads {FORMAT!r} version {VERSION}."
            )
        self.meta = meta
        for folder in ("storage", "episodes"):
            for name, size in meta["files"][folder].items():
                file = self.root / folder / name
                if not file.is_file() or file.stat().st_size != size:
                    raise TDMPC2DataError(
                        f"{file}: missing or truncated (expected {size} bytes); convert the "
                        "chunks again."
                    )
        try:
            self._rows = TensorDict.load_memmap(self.root / "storage")
            self.episodes = TensorDict.load_memmap(self.root / "episodes")
        except Exception as err:
            raise TDMPC2DataError(f"{self.root}: unreadable storage ({err}).") from err
        self.storage = TensorStorage(self._rows)
        self.task_set_name: str = meta["task_set"]["name"]
        self.task_specs = tuple(TaskSpec(**spec) for spec in meta["task_set"]["tasks"])
        self._device_storages: dict[torch.device, TensorStorage] = {}

    # -- description ------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        """Number of stored episodes."""
        return self.episodes.shape[0]

    @property
    def rows_per_episode(self) -> int:
        """Rows per episode (transitions + 1): 501 for ``mt30``, 101 for ``mt80``."""
        return self.meta["rows_per_episode"]

    @property
    def observation_dim(self) -> int:
        """Padded observation width."""
        return self._rows.get("observation").shape[-1]

    @property
    def action_dim(self) -> int:
        """Padded action width."""
        return self._rows.get("action").shape[-1]

    @property
    def tasks(self) -> list[str]:
        """Names of the tasks that have episodes here, in task-id order."""
        return [self.task_specs[i].name for i in self.meta["task_ids"]]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored rows."""
        return sum(self.meta["files"]["storage"].values())

    def __len__(self) -> int:
        return self._rows.shape[0]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(episodes={self.num_episodes}, rows={len(self)}, "
            f"rows_per_episode={self.rows_per_episode}, tasks={self.tasks}, "
            f"task_set={self.task_set_name!r})"
        )

    # -- conversion -------------------------------------------------------------------------

    @classmethod
    def convert(
        cls,
        files: Sequence[str | os.PathLike],
        root: str | os.PathLike,
        *,
        task_set: str | Sequence[Any],
        tasks: Iterable[str | int] | None = None,
        trust_pickle: bool = False,
        overwrite: bool = False,
        progress: bool = False,
        block_rows: int = _BLOCK_ROWS,
    ) -> TDMPC2Dataset:
        """Validate chunk files and write their rows into a memory-mapped storage at ``root``.

        Chunks are read memory-mapped and written one block of episodes at a time: memory
        use does not grow with the files. The storage is written into a temporary folder
        beside ``root`` and renamed when complete, so ``root`` never holds a partial dataset.
        All chunks must share the rows per episode.

        Args:
            files: TD-MPC2 chunk files, in order (episode ids follow it).
            root: the dataset folder to create (must not exist, or be empty, unless
                ``overwrite``).

        Keyword Args:
            task_set: ``"mt30"``, ``"mt80"``, or a sequence of :class:`TaskSpec`-like entries:
                the ids in the files index it.
            tasks: keep only the episodes of these tasks (names or ids); default all.
            trust_pickle: load chunks that need code to unpickle (see
                :func:`load_tdmpc2_chunk`).
            overwrite: replace an existing dataset at ``root``.
            progress: show a progress bar (tqdm) in rows.
            block_rows: rows read, checked and written at a time.

        Raises:
            TDMPC2DataError: a chunk is unreadable, unsafe or malformed (the message names the
                file and the problem); nothing is left at ``root``.
        """
        set_name, specs = _resolve_task_set(task_set)
        keep_ids = _task_ids(tasks, specs)
        root = Path(root)
        files = [Path(f) for f in files]
        if not files:
            raise ValueError("No chunk files given.")
        if root.exists() and any(root.iterdir()) and not overwrite:
            raise FileExistsError(
                f"{root} is not empty; pass overwrite=True to replace it, or open it with "
                "TDMPC2Dataset(root)."
            )
        # Pass 1: layouts (no data read), and the episodes kept when filtering by task.
        chunks, kept, rows_per_episode = [], [], None
        for path in files:
            chunk = load_tdmpc2_chunk(path, trust_pickle=trust_pickle)
            _check_layout(chunk, specs, str(path), rows_per_episode)
            rows_per_episode = chunk.batch_size[1]
            if keep_ids is None:
                kept.append(None)
            else:
                first_task = chunk.get("task")[:, 0].long()
                kept.append(torch.isin(first_task, torch.tensor(keep_ids)).nonzero().squeeze(-1))
                _drop_pages(chunk.get("task"), private=True)
            chunks.append(chunk)
        episode_counts = [c.batch_size[0] if k is None else len(k) for c, k in zip(chunks, kept)]
        total_episodes = sum(episode_counts)
        if not total_episodes:
            raise TDMPC2DataError(
                f"{[str(f) for f in files]}: no episode of the tasks {tasks} in these files."
            )
        total_rows = total_episodes * rows_per_episode
        obs_width, action_width = chunks[0].get("obs").shape[-1], chunks[0].get("action").shape[-1]

        tmp = root.with_name(f".{root.name}.tmp-{uuid.uuid4().hex[:8]}")
        bar = None
        try:
            template = TensorDict(
                observation=torch.zeros(1, obs_width),
                action=torch.zeros(1, action_width),
                reward=torch.zeros(1),
                task=torch.zeros(1, dtype=torch.int32),
                episode=torch.zeros(
                    1, dtype=torch.int32 if total_episodes < 2**31 else torch.int64
                ),
                batch_size=[1],
            )
            storage = template.expand(total_rows).memmap_like(prefix=tmp / "storage")
            episodes = TensorDict(
                start=torch.arange(total_episodes) * rows_per_episode,
                length=torch.full((total_episodes,), rows_per_episode),
                task=torch.zeros(total_episodes, dtype=torch.long),
                file=torch.zeros(total_episodes, dtype=torch.long),
                file_episode=torch.zeros(total_episodes, dtype=torch.long),
                batch_size=[total_episodes],
            )
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total_rows, unit="row", unit_scale=True, desc="converting")
            obs_dims = torch.tensor([s.obs_dim for s in specs])
            action_dims = torch.tensor([s.action_dim for s in specs])
            step = max(1, block_rows // rows_per_episode)
            episode = 0
            for file_index, (path, chunk, keep) in enumerate(zip(files, chunks, kept)):
                num = chunk.batch_size[0]
                for e0 in range(0, num, step):
                    block = chunk[e0 : e0 + step]
                    _check_block(block, e0, specs, set_name, obs_dims, action_dims, str(path))
                    source = torch.arange(e0, e0 + block.batch_size[0])
                    if keep is not None:
                        local = keep[(keep >= e0) & (keep < e0 + block.batch_size[0])] - e0
                        block, source = block[local], source[local]
                    n = block.batch_size[0]
                    if n:
                        r0, r1 = episode * rows_per_episode, (episode + n) * rows_per_episode
                        dest = storage[r0:r1]
                        dest.get("observation").copy_(block.get("obs").reshape(-1, obs_width))
                        action = dest.get("action").view(n, rows_per_episode, action_width)
                        action.copy_(block.get("action"))
                        action[:, 0] = float("nan")  # row 0 has no action (garbage in old files)
                        reward = dest.get("reward").view(n, rows_per_episode)
                        reward.copy_(block.get("reward"))
                        reward[:, 0] = float("nan")
                        dest.get("task").copy_(block.get("task").reshape(-1))
                        ids = torch.arange(episode, episode + n, dtype=dest.get("episode").dtype)
                        dest.get("episode").copy_(ids.repeat_interleave(rows_per_episode))
                        episodes["task"][episode : episode + n] = block.get("task")[:, 0].long()
                        episodes["file"][episode : episode + n] = file_index
                        episodes["file_episode"][episode : episode + n] = source
                        _drop_pages(*(dest.get(k) for k in dest.keys()))
                        episode += n
                    # chunks loaded above with mmap=True and only read: safe to drop
                    _drop_pages(*(chunk.get(k)[e0 : e0 + step] for k in CHUNK_KEYS), private=True)
                    if bar is not None:
                        bar.update(n * rows_per_episode)
            episodes.memmap(prefix=tmp / "episodes")
            del storage
            _fsync_tree(tmp)
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "task_set": {
                    "name": set_name,
                    "tasks": [
                        {"name": s.name, "obs_dim": s.obs_dim, "action_dim": s.action_dim}
                        for s in specs
                    ],
                },
                "task_ids": sorted(set(episodes["task"].tolist())),
                "rows_per_episode": rows_per_episode,
                "episodes": total_episodes,
                "rows": total_rows,
                "sources": [
                    {"path": str(p.resolve()), "bytes": p.stat().st_size, "episodes": c}
                    for p, c in zip(files, episode_counts)
                ],
                "files": {
                    folder: {
                        f.relative_to(tmp / folder).as_posix(): f.stat().st_size
                        for f in sorted((tmp / folder).rglob("*"))
                        if f.is_file()
                    }
                    for folder in ("storage", "episodes")
                },
            }
            _write_json(tmp / "dataset.json", meta)
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        return cls(root)

    # -- sampling ---------------------------------------------------------------------------

    def _episode_subset(self, tasks: Iterable[str | int] | None) -> TensorDictBase:
        ids = _task_ids(tasks, self.task_specs)
        if ids is None:
            return self.episodes
        mask = torch.isin(self.episodes["task"], torch.tensor(ids))
        if not mask.any():
            names = [self.task_specs[i].name for i in ids]
            raise ValueError(
                f"No episode of the tasks {names} in {self.root} (it has {self.tasks})."
            )
        return self.episodes[mask]

    def storage_on(self, device: torch.device | str) -> TensorStorage:
        """The rows as a :class:`~torchrl.data.TensorStorage` on ``device``: the memory-mapped
        storage for CPU, a copy (made once, block by block, and cached) for an accelerator."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.storage
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._device_storages:
            copy = TensorDict(
                {
                    k: torch.empty(v.shape, dtype=v.dtype, device=device)
                    for k, v in self._rows.items()
                },
                batch_size=self._rows.batch_size,
                device=device,
            )
            for r0 in range(0, len(self), _BLOCK_ROWS):
                block = self._rows[r0 : r0 + _BLOCK_ROWS]
                copy[r0 : r0 + _BLOCK_ROWS] = block.to(device)
                _drop_pages(*block.values())
            self._device_storages[device] = TensorStorage(copy, device=device)
        return self._device_storages[device]

    def fits_on(self, device: torch.device | str, factor: float = 2.5) -> bool:
        """Whether ``factor`` times the rows' size fits in ``device``'s free memory (TD-MPC2's
        rule for putting its buffer on the GPU). Always ``True`` for the CPU (memory-mapped)."""
        device = torch.device(device)
        if device.type == "cpu":
            return True
        if device.type != "cuda" or not torch.cuda.is_available():
            return False
        free, _ = torch.cuda.mem_get_info(device)
        return factor * self.nbytes < free

    def make_replay_buffer(
        self,
        *,
        horizon: int,
        batch_size: int,
        tasks: Iterable[str | int] | None = None,
        device: torch.device | str = "cpu",
        storage_device: torch.device | str | None = None,
        prefetch: int | None = None,
        generator: torch.Generator | None = None,
    ) -> ReplayBuffer:
        """A read-only TorchRL :class:`~torchrl.data.ReplayBuffer` whose ``sample()`` returns
        ``batch_size`` slices of ``horizon`` transitions, shaped ``[batch_size, horizon]``.

        The keys are those :class:`~torchrl_pwm.objectives.TDMPC2ModelLoss` and
        :meth:`~torchrl_pwm.trainers.PWMOptimizationStepper.world_model_step` read:
        ``observation``, ``action``, ``task`` (int64), ``("next", "observation")``,
        ``("next", "reward")`` (``[B, H, 1]``), plus ``episode`` (the episode id). A slice
        never crosses an episode, and so has one task.

        Args:
            (keyword only)

        Keyword Args:
            horizon: transitions per slice (slices hold ``horizon + 1`` observations).
            batch_size: slices per sample.
            tasks: sample only episodes of these tasks (names or ids); default all.
            device: where batches go.
            storage_device: where the rows are gathered from: ``None`` picks ``device`` when
                2.5 times the rows' size fits in its free memory (:meth:`fits_on`), the
                memory-mapped CPU storage otherwise.
            prefetch: batches prepared ahead in background threads; default 2 when gathering
                on the CPU for an accelerator (into pinned memory), none otherwise.
            generator: a CPU generator for the slices drawn (default: torch's global one).

        Examples:
            See :class:`TDMPC2Dataset`.
        """
        if horizon < 1 or batch_size < 1:
            raise ValueError(f"horizon and batch_size must be >= 1, got {horizon}, {batch_size}.")
        if horizon + 1 > self.rows_per_episode:
            raise ValueError(
                f"horizon {horizon} needs {horizon + 1} rows per slice; episodes here have "
                f"{self.rows_per_episode}."
            )
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={device} was asked for, but CUDA is not available.")
        if storage_device is None:
            storage_device = device if self.fits_on(device) else torch.device("cpu")
        storage = self.storage_on(storage_device)
        pin = storage.device.type == "cpu" and device.type == "cuda"
        if prefetch is None:
            prefetch = 2 if pin else 0
        episodes = self._episode_subset(tasks)
        return ReplayBuffer(
            storage=storage,
            sampler=EpisodeSliceSampler(
                episodes["start"], episodes["length"], slice_len=horizon + 1
            ),
            writer=ImmutableDatasetWriter(),
            batch_size=batch_size * (horizon + 1),
            transform=_SlicesToTransitions(horizon, device, pin),
            prefetch=prefetch or None,
            generator=generator,
        )

    def episode(self, index: int) -> TensorDict:
        """The stored rows of episode ``index`` (``[rows_per_episode]``, TD-MPC2's layout).

        Examples:
            See :class:`TDMPC2Dataset`.
        """
        start, length = int(self.episodes["start"][index]), int(self.episodes["length"][index])
        return self._rows[start : start + length].clone()
