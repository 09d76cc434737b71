"""Run bookkeeping: logger backends, fresh-run checks, progress bar, clean stop on a signal."""

from __future__ import annotations

import io
import os
import re
import signal
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchrl.collectors import Collector
from torchrl.trainers import Trainer

from torchrl_pwm.checkpoint import load_checkpoint
from torchrl_pwm.envs import make_env
from torchrl_pwm.trainers import EnvStepLogger, check_fresh_run, make_logger, register_run_hooks


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


def test_check_fresh_run_refuses_any_previous_output(tmp_path):
    (tmp_path / ".hydra").mkdir()  # Hydra's own files are not a run's output
    (tmp_path / "train.log").write_text("")
    check_fresh_run(tmp_path, resume=False)
    (tmp_path / "eval.csv").write_text("env_steps\n20\n")  # a run killed before its checkpoint
    with pytest.raises(FileExistsError, match=r"previous run's output \(eval.csv\)"):
        check_fresh_run(tmp_path, resume=False)
    with pytest.raises(FileNotFoundError, match="Nothing to resume"):
        check_fresh_run(tmp_path, resume=True)
    (tmp_path / "checkpoint.pt").write_bytes(b"saved state")
    with pytest.raises(FileExistsError, match="resume=true"):
        check_fresh_run(tmp_path, resume=False)
    check_fresh_run(tmp_path, resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"saved state"


def test_missing_logger_backend_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ImportError, match=re.escape('pip install -e ".[wandb]"')):
        make_logger("wandb", "pwm", log_dir=tmp_path)


def _bare_trainer(total_frames: int = 8, frames_per_batch: int = 4) -> Trainer:
    """A Trainer that collects cartpole with random actions and optimises nothing."""
    env = make_env("cartpole-swingup", max_episode_steps=4)
    collector = Collector(env, None, frames_per_batch=frames_per_batch, total_frames=total_frames)
    return Trainer(collector=collector, total_frames=total_frames, frame_skip=1,
                   optim_steps_per_batch=0, loss_module=torch.nn.Linear(1, 1), optimizer=None,
                   progress_bar=False)  # fmt: skip


def test_progress_bar_counts_env_steps_and_shows_returns(tmp_path):
    trainer = _bare_trainer()
    hooks = register_run_hooks(trainer, make_env("cartpole-swingup", max_episode_steps=4), None,
                               run_dir=tmp_path, eval_every=8, eval_episodes=1,
                               frame_to_env_steps=2, checkpoint_every=None, progress_bar=True)  # fmt: skip
    hooks.progress.file = out = io.StringIO()
    with hooks.stop:
        trainer.train()
    hooks.progress.close()
    text = out.getvalue()
    assert "16/16 [" in text and "env steps" in text  # 8 agent steps x action repeat 2
    assert "eval return" in text and "train episode" in text
    assert len(text.split("\r")[-1]) < 140  # one short line, not every logged scalar


def test_stop_on_signal_checkpoints_the_finished_step_and_stops(tmp_path):
    trainer = _bare_trainer(total_frames=40)
    hooks = register_run_hooks(trainer, make_env("cartpole-swingup", max_episode_steps=4), None,
                               run_dir=tmp_path, eval_every=1000, eval_episodes=1,
                               frame_to_env_steps=2, checkpoint_every=1000)  # fmt: skip
    # the user presses Ctrl-C during the second batch (the hook runs before the stop hook)
    trainer.register_op(
        "pre_steps_log",
        lambda batch: (
            os.kill(os.getpid(), signal.SIGINT) if trainer.collected_frames == 8 else None
        ),
    )
    # whatever handler was installed before (Python's, or one that a library such as
    # torchrl's memory-mapped storages installs) is the one restored
    before = signal.getsignal(signal.SIGINT)
    with hooks.stop:
        trainer.train()
    assert signal.getsignal(signal.SIGINT) is before  # restored
    assert hooks.stop.received == signal.SIGINT and hooks.stop.saved == tmp_path / "checkpoint.pt"
    assert trainer.collected_frames == 8  # the batch in progress finished, no other started
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["trainer"]["state"]["collected_frames"] == 8


def test_evaluator_resume_drops_csv_rows_after_the_checkpoint(tmp_path):
    from torchrl_pwm.envs import make_env
    from torchrl_pwm.trainers import PolicyEvaluator

    def evaluator():
        env = make_env("cartpole-swingup", max_episode_steps=3)
        return PolicyEvaluator(
            env, None, interval=5, num_episodes=1, frame_to_env_steps=2, csv_path=tmp_path / "e.csv"
        )

    ev = evaluator()
    ev.evaluate(frames=0)
    ev.evaluate(frames=5)
    saved = ev.state_dict()  # the checkpoint
    ev.evaluate(frames=10)  # after the checkpoint, then the run is killed
    assert [r.split(",")[0] for r in (tmp_path / "e.csv").read_text().split()[1:]] == [
        "0",
        "10",
        "20",
    ]
    resumed = evaluator()
    resumed.load_state_dict(saved)
    resumed.evaluate(frames=10)  # the resumed run evaluates the same step again
    lines = (tmp_path / "e.csv").read_text().split()
    assert lines[0] == "env_steps,return_mean,return_std,wall_time_s"
    assert [r.split(",")[0] for r in lines[1:]] == ["0", "10", "20"]  # no duplicate row
    assert [float(r.split(",")[1]) for r in lines[1:3]] == [h[1] for h in saved["history"]]


def test_evaluator_logs_episode_metrics_of_the_evaluation_episodes():
    from torchrl_pwm.envs import make_env
    from torchrl_pwm.trainers import PolicyEvaluator

    seen = []

    def metrics(episodes):
        seen.append(episodes)
        return {"eval/steps": float(sum(len(ep) for ep in episodes))}

    env = make_env("cartpole-swingup", max_episode_steps=4)
    ev = PolicyEvaluator(env, None, interval=5, num_episodes=3, episode_metrics=metrics)
    out = ev.evaluate(frames=0)
    assert out["eval/steps"] == 12.0 and "eval/return_mean" in out
    (episodes,) = seen
    assert [ep.batch_size for ep in episodes] == [torch.Size([4])] * 3
    # the episodes are the ones whose returns were logged
    returns = torch.stack([ep["next", "reward"].sum() for ep in episodes])
    assert out["eval/return_mean"] == pytest.approx(returns.mean().item(), rel=1e-5)
