"""Run bookkeeping: logger backends log at env steps and read back."""

from __future__ import annotations

import pytest
import torch
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


def _example_cfg(**overrides):
    from omegaconf import OmegaConf

    cfg = {
        "threads": 1, "resume": False, "env": {"seed": 0},
        "checkpoint": {"every": 100, "path": "checkpoint.pt"},
        "logger": {"eval_every": 100, "eval_episodes": 1},
    }  # fmt: skip
    return OmegaConf.merge(OmegaConf.create(cfg), OmegaConf.create(overrides))


def test_begin_run_refuses_an_existing_run_with_a_clear_exit(tmp_path, monkeypatch):
    from torchrl_pwm.trainers import begin_run

    threads = torch.get_num_threads()
    monkeypatch.chdir(tmp_path)
    try:
        assert begin_run(_example_cfg()) == tmp_path and torch.get_num_threads() == 1
        (tmp_path / "checkpoint.pt").write_bytes(b"saved state")
        with pytest.raises(SystemExit, match="resume=true"):
            begin_run(_example_cfg())
        assert begin_run(_example_cfg(resume=True)) == tmp_path
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"saved state"


def test_attach_run_exits_with_the_reason(tmp_path):
    from tests.trainers._tiny import tiny_trainer
    from torchrl_pwm.envs import make_env
    from torchrl_pwm.trainers import attach_run

    env = make_env("cartpole-swingup", seed=1)
    kwargs = {"run_dir": tmp_path, "frame_to_env_steps": 2, "metadata": {"task": "cartpole"}}

    def attach(**cfg):  # a fresh trainer each time: a failed attach may leave hooks behind
        trainer, *_ = tiny_trainer(100)
        attach_run(trainer, _example_cfg(**cfg), env, trainer.collector.policy, **kwargs)

    with pytest.raises(SystemExit, match="Bad configuration: eval_every"):
        attach(logger={"eval_every": 0})
    with pytest.raises(SystemExit, match="Bad configuration: resume=true needs checkpoints"):
        attach(resume=True, checkpoint={"every": None})
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(SystemExit, match=r"Cannot resume: .*corrupt"):
        attach(resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"garbage"


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
