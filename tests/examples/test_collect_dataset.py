"""examples/collect_dataset: TD-MPC2 chunks from random actions, trained SAC / PWM agents and a
run's replay buffer; collect -> load -> sample round trips, replays in the real env, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tests import load_module
from tests.examples.test_baselines import SAC, SAC_TINY
from tests.examples.test_pwm_example import TINY_NETS
from torchrl_pwm.checkpoint import ReplayBufferDump, load_checkpoint
from torchrl_pwm.data import TDMPC2Dataset, load_tdmpc2_chunk
from torchrl_pwm.envs import make_env, task_set
from torchrl_pwm.modules import make_pwm_policy

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "collect_dataset" / "collect.py"
PWM = ROOT / "examples" / "pwm" / "train.py"
MT30 = [t.name for t in task_set("mt30")]


def _run(script: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(script), f"hydra.run.dir={run_dir}", "threads=1", *overrides]
    if script == SCRIPT:
        cmd.append("progress_bar=false")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _episode_seed(seed: int, task: str, index: int) -> int:
    return seed * 1_000_003 + MT30.index(task) * 10_007 + index  # collect.py's seeding


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0))


def test_random_collect_load_sample_replay_and_resume(tmp_path):
    out_dir = tmp_path / "collect"
    args = ["tasks=[cartpole-swingup,reacher-easy]", "episodes_per_task=2", "max_episode_steps=10",
            "rows_per_episode=6", "episodes_per_chunk=3", "seed=3"]  # fmt: skip
    out = _run(SCRIPT, out_dir, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    chunks = sorted(out_dir.glob("chunk_*.pt"))
    # 2 tasks x 2 episodes x 2 stored pieces of 5 transitions (mt80's split): chunks of 3, 3, 2
    assert [load_tdmpc2_chunk(c).shape[0] for c in chunks] == [3, 3, 2]
    progress = json.loads((out_dir / "progress.json").read_text())
    assert progress["episodes"] == {"cartpole-swingup": 4, "reacher-easy": 4}

    # collect -> load -> sample
    ds = TDMPC2Dataset.convert(chunks, tmp_path / "data", task_set="mt30")
    assert (ds.num_episodes, ds.rows_per_episode) == (8, 6)
    assert ds.tasks == ["reacher-easy", "cartpole-swingup"]
    batch = ds.make_replay_buffer(horizon=5, batch_size=64, tasks=["reacher-easy"]).sample()
    assert batch.shape == (64, 5) and (batch["task"] == MT30.index("reacher-easy")).all()
    assert not batch["observation"][..., 6:].any() and not batch["action"][..., 2:].any()

    # the stored transitions are the real env's: replaying the stored actions from the same
    # seed gives the stored observations and rewards (episode 0 of each task, both pieces)
    for task, first in (("cartpole-swingup", 0), ("reacher-easy", 4)):
        rows = torch.cat([ds.episode(first), ds.episode(first + 1)[1:]])  # the split rejoined
        assert _same(ds.episode(first)["observation"][-1], ds.episode(first + 1)["observation"][0])
        env = make_env(task, seed=_episode_seed(3, task, 0), max_episode_steps=10)
        td = env.reset()
        d, a = task_set("mt30")[MT30.index(task)].obs_dim, env.action_spec.shape[-1]
        assert torch.equal(rows["observation"][0, :d], td["observation"])
        for t in range(10):
            td["action"] = rows["action"][t + 1, :a]
            td = env.step(td)
            assert torch.equal(rows["observation"][t + 1, :d], td["next", "observation"])
            assert torch.equal(rows["reward"][t + 1], td["next", "reward"].squeeze())
            td = td["next"]

    # a new collection over old output is refused
    again = _run(SCRIPT, out_dir, *args)
    assert again.returncode != 0 and "resume=true" in again.stderr
    # killed after chunk 0 was committed (chunk 0 ends inside reacher's first episode): the
    # resumed collection writes the same chunks as the uninterrupted one
    original = [load_tdmpc2_chunk(c).clone() for c in chunks]
    for c in chunks[1:]:
        c.unlink()
    (out_dir / "chunk_1.pt").write_bytes(b"partial")  # a chunk written after the last commit
    progress.update(chunks=["chunk_0.pt"], episodes={"cartpole-swingup": 3})
    (out_dir / "progress.json").write_text(json.dumps(progress))
    out = _run(SCRIPT, out_dir, *args, "resume=true")
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = [load_tdmpc2_chunk(c) for c in sorted(out_dir.glob("chunk_*.pt"))]
    assert len(resumed) == 3
    for before, after in zip(original, resumed):
        assert all(_same(before[k], after[k]) for k in ("obs", "action", "reward", "task"))
    other = _run(SCRIPT, out_dir, *args[:-1], "seed=4", "resume=true")
    assert other.returncode != 0 and "other settings" in other.stderr


def _sac_actor(run_dir: Path):
    sac = load_module(SAC)
    env = make_env("cartpole-swingup")
    actor, _qvalue = sac.make_sac_modules(
        OmegaConf.load(run_dir / ".hydra" / "config.yaml"), env.action_spec, torch.device("cpu")
    )
    actor(env.fake_tensordict())
    state = load_checkpoint(run_dir / "checkpoint.pt")["trainer"]["loss_module"]
    prefix = "actor_network_params."
    actor.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return actor


def test_sac_agent_rollouts_and_replay_buffer_dump(tmp_path):
    run_dir = tmp_path / "sac" / "cartpole-swingup"
    out = _run(SAC, run_dir, *SAC_TINY, "collector.total_env_steps=1200", "logger.eval_every=1200",
               "logger.eval_episodes=1", "checkpoint.every=1200", "logger.progress_bar=false",
               "env.action_repeat=null")  # the dataset's repeat (2 on DMC); SAC's default is 1  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    agent = [f"agent.run_dir={tmp_path}/sac/%task%", "tasks=[cartpole-swingup]"]

    # the trained actor's deterministic actions, on the stored observations
    out = _run(SCRIPT, tmp_path / "rollouts", "agent.kind=sac", *agent, "episodes_per_task=2",
               "max_episode_steps=8", "agent.exploration=deterministic")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    chunk = load_tdmpc2_chunk(tmp_path / "rollouts" / "chunk_0.pt")
    assert chunk.shape == (2, 9)
    actor = _sac_actor(run_dir)
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        acted = actor(TensorDict(observation=chunk["obs"][:, :-1, :5], batch_size=[2, 8]))
    torch.testing.assert_close(acted["action"], chunk["action"][:, 1:, :1])

    # the whole replay buffer: 600 agent steps hold one complete 500-step episode
    out = _run(SCRIPT, tmp_path / "dump", "agent.kind=replay_buffer", *agent)
    assert out.returncode == 0, out.stderr[-3000:]
    dumped = load_tdmpc2_chunk(tmp_path / "dump" / "chunk_0.pt")
    assert dumped.shape == (1, 501)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(state["replay"]["replay_buffer"]["capacity"])
    )
    ReplayBufferDump(buffer, run_dir / "checkpoint.replay_buffer").load(
        state["replay"]["replay_buffer"]
    )
    buffer.storage.load_state_dict(state["trainer"]["replay_buffer"]["replay_buffer"]["_storage"])
    assert len(buffer) == 600
    rows = buffer.storage.get(torch.arange(500))  # the first episode, from its reset
    assert torch.equal(dumped["obs"][0, 0, :5], rows["observation"][0])
    assert torch.equal(dumped["obs"][0, 1:, :5], rows["next", "observation"])
    assert torch.equal(dumped["action"][0, 1:, :1], rows["action"])
    assert torch.equal(dumped["reward"][0, 1:, None], rows["next", "reward"])
    ds = TDMPC2Dataset.convert(
        [tmp_path / "dump" / "chunk_0.pt"], tmp_path / "data", task_set="mt30"
    )
    assert ds.make_replay_buffer(horizon=16, batch_size=8).sample().shape == (8, 16)


def test_pwm_agent_rollouts(tmp_path):
    run_dir = tmp_path / "pwm" / "cartpole-swingup"
    out = _run(PWM, run_dir, *TINY_NETS, "collector.seed_env_steps=200", "collector.total_env_steps=300",
               "logger.eval_every=300", "logger.eval_episodes=1", "checkpoint.every=300",
               "logger.progress_bar=false", "logger.calibration=false")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    # a run older than some config keys still loads (over the example's current defaults)
    saved = run_dir / ".hydra" / "config.yaml"
    full, old = OmegaConf.load(saved), OmegaConf.load(saved)
    del old.actor["mean_penalty_coef"], old.world_model["reward_ensemble"]
    OmegaConf.save(old, saved)
    out = _run(SCRIPT, tmp_path / "rollouts", "agent.kind=pwm", f"agent.run_dir={tmp_path}/pwm/%task%",
               "tasks=[cartpole-swingup]", "episodes_per_task=1", "max_episode_steps=6",
               "agent.exploration=deterministic")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    chunk = load_tdmpc2_chunk(tmp_path / "rollouts" / "chunk_0.pt")
    utils = load_module(ROOT / "examples" / "pwm" / "utils.py")
    env = make_env("cartpole-swingup")
    loss, _ = utils.make_pwm_loss(full, 5, env.action_spec, torch.device("cpu"))
    loss.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["trainer"]["loss_module"])
    policy = make_pwm_policy(loss.world_model, loss.actor_network)
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        acted = policy(TensorDict(observation=chunk["obs"][0, :-1, :5], batch_size=[6]))
    torch.testing.assert_close(acted["action"], chunk["action"][0, 1:, :1])


def test_a_run_at_another_action_repeat_is_refused(tmp_path):
    """A SAC run at its default action repeat (1) cannot feed a DMC dataset (repeat 2, 500-step
    episodes): its buffer holds 1000-step episodes, its policy acts at twice the rate."""
    collect = load_module(SCRIPT)
    at = lambda repeat: {"metadata": {"config": json.dumps({"env": {"action_repeat": repeat}})}}  # noqa: E731
    with pytest.raises(
        SystemExit, match="ran at action repeat 1; a cartpole-swingup dataset is at 2"
    ):
        collect._check_action_repeat(at(1), tmp_path, "cartpole-swingup")
    for fine in (at(2), at(None), {"metadata": {}}):  # the task's default; runs without a config
        collect._check_action_repeat(fine, tmp_path, "cartpole-swingup")
