"""Run bookkeeping: logger backends log at env steps and read back."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torchrl_pwm.trainers import EnvStepLogger, check_fresh_run, make_logger


def test_tensorboard_backend_logs_env_steps(tmp_path):
    logger = EnvStepLogger(make_logger("tensorboard", "pwm", log_dir=tmp_path), 2)
    logger.log_scalar("loss_actor", 1.5, step=10)
    logger.log_scalar("loss_actor", 0.5, step=11)
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "pwm"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss_actor")] == [(20, 1.5), (22, 0.5)]


def test_csv_backend_logs_env_steps(tmp_path):
    logger = EnvStepLogger(make_logger("csv", "pwm", log_dir=tmp_path), 2)
    logger.log_scalar("loss_actor", 1.5, step=10)
    rows = (tmp_path / "pwm" / "scalars" / "loss_actor.csv").read_text().split()
    assert rows == ["20,1.5"]


def test_check_fresh_run_refuses_to_overwrite(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"saved state")
    with pytest.raises(FileExistsError, match="resume=true"):
        check_fresh_run(ckpt, resume=False)
    check_fresh_run(ckpt, resume=True)
    assert ckpt.read_bytes() == b"saved state"
