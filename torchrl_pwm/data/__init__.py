"""Data: replay buffers of trajectory slices."""

from torchrl_pwm.data.replay import make_sequence_replay_buffer

__all__ = ["make_sequence_replay_buffer"]
