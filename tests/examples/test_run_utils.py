"""examples/run_utils.py: the examples' glue between a Hydra config and the run hooks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import run_utils


@pytest.fixture(autouse=True)
def _restore_torch_settings():
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    yield
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(precision)


def _example_cfg(**overrides):
    cfg = {
        "threads": 1, "matmul_precision": "medium", "resume": False, "env": {"seed": 0},
        "checkpoint": {"every": 100, "path": "checkpoint.pt"},
        "logger": {"eval_every": 100, "eval_episodes": 1, "progress_bar": False},
    }  # fmt: skip
    return OmegaConf.merge(OmegaConf.create(cfg), OmegaConf.create(overrides))


def test_run_directory_refuses_an_existing_run_with_a_clear_exit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with run_utils.run_directory(_example_cfg()) as run_dir:
        assert run_dir == tmp_path and torch.get_num_threads() == 1
        assert torch.get_float32_matmul_precision() == "medium"
        (tmp_path / "checkpoint.pt").write_bytes(b"saved state")
    with (
        pytest.raises(SystemExit, match="resume=true"),
        run_utils.run_directory(_example_cfg()),
    ):
        pass
    with run_utils.run_directory(_example_cfg(resume=True)) as run_dir:
        assert run_dir == tmp_path
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"saved state"


def test_configure_torch_refuses_an_unknown_precision():
    # torch itself only warns and keeps its current precision
    with pytest.raises(SystemExit, match="matmul_precision must be one of"):
        run_utils.configure_torch({"threads": 1, "matmul_precision": "bf16"})
    run_utils.configure_torch({"threads": 1, "matmul_precision": "highest"})
    assert torch.get_float32_matmul_precision() == "highest"


def test_run_directory_removes_a_failed_start(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    monkeypatch.chdir(run_dir)
    from torchrl_pwm.envs import make_env

    with (
        pytest.raises(SystemExit, match="Unknown task 'foo-bar'"),
        run_utils.run_directory(_example_cfg()),
    ):
        make_env("foo-bar")
    assert not run_dir.exists()


def test_attach_run_exits_with_the_reason(tmp_path):
    from tests.trainers._tiny import tiny_trainer
    from torchrl_pwm.envs import make_env

    env = make_env("cartpole-swingup", seed=1)
    kwargs = {"run_dir": tmp_path, "frame_to_env_steps": 2, "metadata": {"task": "cartpole"}}

    def attach(**cfg):  # a fresh trainer each time: a failed attach may leave hooks behind
        trainer, *_ = tiny_trainer(100)
        run_utils.attach_run(trainer, _example_cfg(**cfg), env, trainer.collector.policy, **kwargs)

    with pytest.raises(SystemExit, match="Bad configuration: eval_every"):
        attach(logger={"eval_every": 0})
    with pytest.raises(SystemExit, match="Bad configuration: resume=true needs checkpoints"):
        attach(resume=True, checkpoint={"every": None})
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(SystemExit, match=r"Cannot resume: .*corrupt"):
        attach(resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"garbage"


def test_resume_command_replaces_resume():
    argv = sys.argv
    sys.argv = ["examples/pwm/train.py", "env.task=cheetah-run", "resume=false"]
    try:
        assert run_utils.resume_command() == (
            "python examples/pwm/train.py env.task=cheetah-run resume=true"
        )
    finally:
        sys.argv = argv


def test_quiet_console_drops_only_the_named_warnings():
    """The world-model rollout region's backward note is dropped; other warnings still show."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_utils.quiet_console()
        warnings.warn(
            "invoke_subgraph traced multiple backward graphs for the same forward identifier "
            "'subgraph_0'.",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn("a real problem", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a real problem"]
