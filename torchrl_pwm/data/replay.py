"""Replay buffers of fixed-length slices for world-model training."""

from __future__ import annotations

import torch
from tensordict.utils import NestedKey
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer

__all__ = ["make_sequence_replay_buffer"]


def make_sequence_replay_buffer(
    capacity: int,
    *,
    horizon: int,
    num_slices: int,
    device: torch.device | str = "cpu",
    traj_key: NestedKey = ("collector", "traj_ids"),
    prefetch: int | None = None,
    pin_memory: bool = False,
) -> TensorDictReplayBuffer:
    """A replay buffer that samples ``num_slices`` windows of ``horizon`` consecutive steps.

    Each window holds ``horizon`` transitions, i.e. ``horizon + 1`` observations (the last
    under ``("next", "observation")``), all from one trajectory: windows never cross an
    episode boundary (``SliceSampler`` with ``strict_length=True``, trajectories identified
    by the collector's ``traj_key``). Storage is a ``LazyTensorStorage`` on ``device`` (CPU, or
    the GPU to keep sampling on-device). In a training run,
    :class:`~torchrl_pwm.trainers.CheckpointHook` saves it incrementally (only the rows added
    since the previous checkpoint, see :class:`~torchrl_pwm.checkpoint.ReplayBufferDump`);
    TorchRL's ``buffer.dumps(path)`` / ``buffer.loads(path)`` save and restore the whole of it.

    Samples come flat, ``[num_slices * horizon]`` (TorchRL's convention, which keeps the
    sampler's index metadata aligned): ``sample().reshape(num_slices, horizon)`` gives the
    ``[B, H]`` layout of :class:`~torchrl_pwm.objectives.TDMPC2ModelLoss`.

    Note that ``SliceSampler`` marks ``("next", "done")``/``("next", "truncated")`` at the end of
    every window: never train a termination model on them.

    Args:
        capacity: maximum number of stored steps.

    Keyword Args:
        horizon: transitions per window.
        num_slices: windows per sample.
        device: storage device.
        traj_key: trajectory-id key (the collector's by default).
        prefetch: number of batches to prefetch in a background thread.
        pin_memory: pin sampled CPU batches in page-locked memory, so that their copy to a
            GPU (``batch.to("cuda", non_blocking=True)``) overlaps compute. With ``prefetch``,
            sampling and pinning happen off the training thread.

    Examples:
        >>> from tensordict import TensorDict
        >>> rb = make_sequence_replay_buffer(1000, horizon=4, num_slices=3)
        >>> data = TensorDict(
        ...     observation=torch.arange(20.0)[:, None],
        ...     collector=TensorDict(traj_ids=torch.arange(20) // 10, batch_size=[20]),
        ...     batch_size=[20],
        ... )
        >>> rb.extend(data)  # doctest: +ELLIPSIS
        tensor(...)
        >>> batch = rb.sample().reshape(3, 4)
        >>> batch.shape
        torch.Size([3, 4])
        >>> bool((batch["collector", "traj_ids"] == batch["collector", "traj_ids"][:, :1]).all())
        True
    """
    if horizon < 1 or num_slices < 1:
        raise ValueError(f"horizon and num_slices must be >= 1, got {horizon}, {num_slices}.")
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(capacity, device=device),
        sampler=SliceSampler(slice_len=horizon, traj_key=traj_key, strict_length=True),
        batch_size=num_slices * horizon,
        prefetch=prefetch,
        pin_memory=pin_memory,
    )
