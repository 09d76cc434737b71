"""Atomic checkpoints, corrupt and mismatched files, kill-and-resume of a real Trainer."""

import os

import pytest
import torch

from tests.trainers._tiny import tiny_trainer
from torchrl_pwm.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_replay_buffer,
    load_state_dict_checked,
    save_checkpoint,
    save_replay_buffer,
)
from torchrl_pwm.data import make_sequence_replay_buffer
from torchrl_pwm.modules import TDMPC2WorldModel
from torchrl_pwm.trainers import CheckpointHook


def test_round_trip_and_atomic_write(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1, "w": torch.arange(3.0)}, path)
    assert load_checkpoint(path)["step"] == 1

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1  # the previous checkpoint is intact
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def test_corrupt_and_foreign_files(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load_checkpoint(path)
    assert path.read_bytes() == data[: len(data) // 2]  # loading never modifies the file
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    torch.save({"model": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="not a torchrl_pwm checkpoint"):
        load_checkpoint(path)
    torch.save(
        {"format": "torchrl_pwm.checkpoint", "version": 1, "x": CheckpointError("code")}, path
    )
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(path)  # unpickling arbitrary objects is refused
    with pytest.raises(CheckpointError, match="No checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_mismatched_world_model(tmp_path):
    cartpole = TDMPC2WorldModel(5, 1, size="1M")
    acrobot = TDMPC2WorldModel(6, 1, size="1M")
    with pytest.raises(CheckpointError, match="world model does not match"):
        load_state_dict_checked(acrobot, cartpole.state_dict(), "world model")


def test_replay_buffer_swap(tmp_path):
    rb = make_sequence_replay_buffer(100, horizon=2, num_slices=2)
    from tensordict import TensorDict

    rb.extend(
        TensorDict(
            x=torch.arange(10.0),
            collector=TensorDict(traj_ids=torch.zeros(10, dtype=torch.long), batch_size=[10]),
            batch_size=[10],
        )
    )
    save_replay_buffer(rb, tmp_path / "rb")
    save_replay_buffer(rb, tmp_path / "rb")  # replaces the previous copy
    os.replace(tmp_path / "rb", tmp_path / ".rb.old")  # killed between the two renames
    rb2 = make_sequence_replay_buffer(100, horizon=2, num_slices=2)
    load_replay_buffer(rb2, tmp_path / "rb")
    assert len(rb2) == 10
    with pytest.raises(CheckpointError, match="No replay buffer"):
        load_replay_buffer(rb2, tmp_path / "nothing")


class _Killed(Exception):
    pass


def test_kill_after_first_checkpoint_and_resume(tmp_path):
    path = tmp_path / "ckpt.pt"
    trainer, stepper, rb, loss = tiny_trainer(300)
    hook = CheckpointHook(path, interval=100, metadata={"task": "cartpole-swingup"})
    hook.register(trainer)
    snapshot = {}

    def kill_after_checkpoint(batch=None):
        if path.exists():
            snapshot["frames"] = hook.last_frames
            snapshot["buffer"] = len(rb)
            snapshot["steps"] = stepper.steps
            snapshot["params"] = [p.detach().clone() for p in loss.parameters()]
            raise _Killed

    trainer.register_op("post_steps_log", kill_after_checkpoint)
    with pytest.raises(_Killed):
        trainer.train()
    assert snapshot["frames"] >= 100

    fresh, stepper2, rb2, loss2 = tiny_trainer(300, seed=0)
    hook2 = CheckpointHook(path, interval=100, metadata={"task": "cartpole-swingup"})
    hook2.register(fresh)
    hook2.resume(check_metadata=("task",))
    assert fresh.collected_frames == snapshot["frames"]
    assert fresh.collector._frames == snapshot["frames"]
    assert len(rb2) == snapshot["buffer"] and stepper2.steps == snapshot["steps"]
    for a, b in zip(snapshot["params"], loss2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    fresh.train()  # continues to the end
    assert fresh.collected_frames == 300 and len(rb2) == 300

    wrong = CheckpointHook(path, interval=100, metadata={"task": "acrobot-swingup"})
    other, *_ = tiny_trainer(300)
    wrong.register(other)
    with pytest.raises(CheckpointError, match="task='cartpole-swingup'"):
        wrong.resume(check_metadata=("task",))
