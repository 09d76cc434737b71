"""Data: replay buffers of trajectory slices, and TD-MPC2's multi-task datasets."""

from torchrl_pwm.data.replay import make_sequence_replay_buffer
from torchrl_pwm.data.tdmpc2 import (
    EpisodeSliceSampler,
    TaskSpec,
    TDMPC2DataError,
    TDMPC2Dataset,
    load_tdmpc2_chunk,
    rollout_to_tdmpc2,
    save_tdmpc2_chunk,
    validate_tdmpc2_chunk,
)

__all__ = [
    "EpisodeSliceSampler",
    "TDMPC2DataError",
    "TDMPC2Dataset",
    "TaskSpec",
    "load_tdmpc2_chunk",
    "make_sequence_replay_buffer",
    "rollout_to_tdmpc2",
    "save_tdmpc2_chunk",
    "validate_tdmpc2_chunk",
]
