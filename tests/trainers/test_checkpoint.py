"""Atomic checkpoints, incremental replay-buffer dumps, every RNG, corrupt and mismatched
files, and a resumed real run that ends bit-identical to an uninterrupted one."""

import copy
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer

from tests.trainers._tiny import tiny_trainer
from torchrl_pwm.checkpoint import (
    CheckpointError,
    ReplayBufferDump,
    load_checkpoint,
    load_state_dict_checked,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from torchrl_pwm.envs import make_env
from torchrl_pwm.modules import TDMPC2WorldModel
from torchrl_pwm.trainers import CheckpointHook, PolicyEvaluator


def assert_identical(a, b, where="state"):
    """Exact equality of nested states: same keys, same lengths, bit-identical tensors."""
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), where
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {set(a) ^ set(b)} differ"
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{list(a.shape)}"
        assert torch.equal(a, b), f"{where}: values differ"
    elif isinstance(a, TensorDict):
        assert_identical(a.to_dict(), b.to_dict(), where)
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), f"{where}: values differ"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _rows(start, n, traj=0):
    return TensorDict(
        x=torch.arange(start, start + n, dtype=torch.float32),
        obs=torch.arange(start, start + n, dtype=torch.float32)[:, None].expand(n, 3).clone(),
        collector=TensorDict(traj_ids=torch.full((n,), traj), batch_size=[n]),
        batch_size=[n],
    )


def _restored(rb, folder, index, state, storage_cls=LazyTensorStorage):
    """A fresh buffer restored from a dump ``index`` and the rest of ``rb``'s state."""
    out = TensorDictReplayBuffer(storage=storage_cls(rb.storage.max_size), batch_size=4)
    ReplayBufferDump(out, folder).load(index)
    state = dict(state, _storage=dict(state["_storage"], _storage={}))
    out.load_state_dict(state)
    return out


# --------------------------------------------------------------------------------------------
# Files


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
    torch.save({"format": "torchrl_pwm.checkpoint", "version": 99}, path)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(path)
    torch.save(
        {"format": "torchrl_pwm.checkpoint", "version": 2, "x": CheckpointError("code")}, path
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


# --------------------------------------------------------------------------------------------
# Random-number generators


def test_rng_state_covers_every_generator_and_loads_weights_only(tmp_path):
    env = make_env("cartpole-swingup", seed=3)
    state = rng_state({"train": env})
    save_checkpoint({"rng": state}, tmp_path / "rng.pt")
    loaded = load_checkpoint(tmp_path / "rng.pt")["rng"]  # weights_only=True

    def draw():
        return (
            random.random(),
            np.random.rand(3),  # noqa: NPY002
            torch.rand(3),
            env.reset()["observation"],  # the task's initial-state noise
        )

    first = draw()
    set_rng_state(loaded, {"train": env})
    assert_identical(draw(), first)
    # each generator is restored, not only torch's: break them one at a time
    for breaker in (
        lambda: random.seed(1),
        lambda: np.random.seed(1),  # noqa: NPY002
        lambda: torch.manual_seed(1),
        lambda: env.set_seed(1),
    ):
        set_rng_state(loaded, {"train": env})
        breaker()
        with pytest.raises(AssertionError):
            assert_identical(draw(), first)


def test_rng_state_of_another_env_kind_is_refused():
    state = rng_state({"train": make_env("cartpole-swingup", seed=0)})
    state["envs"]["train"] = {"generator": {"bit_generator": "PCG64"}}
    with pytest.raises(CheckpointError, match="does not fit"):
        set_rng_state(state, {"train": make_env("cartpole-swingup", seed=0)})


# --------------------------------------------------------------------------------------------
# Replay-buffer dumps


@pytest.mark.parametrize("storage_cls", [LazyTensorStorage, LazyMemmapStorage])
def test_replay_dump_writes_only_new_rows_and_round_trips(tmp_path, storage_cls):
    rb = TensorDictReplayBuffer(storage=storage_cls(50), batch_size=4)
    dump = ReplayBufferDump(rb, tmp_path / "rb")
    rb.extend(_rows(0, 20))
    index = dump.save()
    assert [(c["start"], c["rows"]) for c in index["chunks"]] == [(0, 20)]
    rb.extend(_rows(20, 10, traj=1))
    index = dump.save()
    assert [(c["start"], c["rows"]) for c in index["chunks"]] == [(0, 20), (20, 10)]
    assert dump.save()["chunks"] == index["chunks"]  # nothing new: nothing written
    # the chunk holds exactly the new rows, nothing of the 20 unfilled ones
    chunk = TensorDict.load_memmap(tmp_path / "rb" / index["chunks"][1]["name"])
    assert chunk["x"].tolist() == list(range(20, 30))
    rb.extend(_rows(30, 40, traj=2))  # wraps around: positions 30..49 then 0..19
    index = dump.save()
    assert [(c["start"], c["rows"]) for c in index["chunks"]][-1] == (30, 40)
    dump.prune()
    restored = _restored(rb, tmp_path / "rb", index, rb.state_dict(), storage_cls)
    assert_identical(restored.state_dict(), rb.state_dict())
    assert_identical(restored[:], rb[:])


def test_replay_dump_compacts_and_recovers_from_unknown_writes(tmp_path):
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(30), batch_size=4)
    dump = ReplayBufferDump(rb, tmp_path / "rb", compact_after=2)
    for i in range(6):  # 6 x 12 rows through a 30-row buffer: more than 2x its capacity
        rb.extend(_rows(12 * i, 12, traj=i))
        index = dump.save()
        dump.prune()
        assert sum(c["rows"] for c in index["chunks"]) <= 2 * 30
        held = sorted(p.name for p in (tmp_path / "rb").iterdir())
        assert held == sorted(c["name"] for c in index["chunks"])  # the rest is pruned
        assert_identical(_restored(rb, tmp_path / "rb", index, rb.state_dict())[:], rb[:])
    assert index["chunks"][0]["name"].startswith("rows-all-")  # a full snapshot happened
    rb[3] = _rows(1000, 1)[0]  # an in-place write moves no counter: a full save takes it
    assert dump.save()["chunks"] == index["chunks"]
    index = dump.save(full=True)
    assert [(c["start"], c["rows"]) for c in index["chunks"]] == [(0, 30)]
    assert_identical(_restored(rb, tmp_path / "rb", index, rb.state_dict())[:], rb[:])
    rb.empty()
    assert dump.save()["chunks"] == []
    rb.extend(_rows(0, 5))  # the counters restarted: a full snapshot, not an append at 6
    index = dump.save()
    assert [(c["start"], c["rows"]) for c in index["chunks"]] == [(0, 5)]
    assert_identical(_restored(rb, tmp_path / "rb", index, rb.state_dict())[:], rb[:])


def test_replay_dump_killed_mid_chunk_leaves_the_committed_index_loadable(tmp_path, monkeypatch):
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100), batch_size=4)
    dump = ReplayBufferDump(rb, tmp_path / "rb")
    rb.extend(_rows(0, 20))
    committed, committed_state = dict(dump.save()), rb.state_dict()
    rb.extend(_rows(20, 10, traj=1))

    def killed(self, prefix=None, **kwargs):
        Path(prefix).mkdir(parents=True)
        (Path(prefix) / "x.memmap").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(TensorDict, "memmap", killed)
    with pytest.raises(KeyboardInterrupt):
        dump.save()
    monkeypatch.undo()
    restored = _restored(rb, tmp_path / "rb", committed, committed_state)
    assert restored[:]["x"].tolist() == list(range(20))
    # a stray, complete chunk that no index references (killed before the commit) is pruned
    fresh = ReplayBufferDump(rb, tmp_path / "rb")
    fresh.load(committed)
    (tmp_path / "rb" / "rows-stray-0").mkdir()
    rb.extend(_rows(30, 5, traj=2))
    fresh.save()
    assert sorted(fresh.prune()) == ["rows-stray-0"]


def test_replay_dump_corrupt_missing_and_mismatched(tmp_path):
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100), batch_size=4)
    dump = ReplayBufferDump(rb, tmp_path / "rb")
    rb.extend(_rows(0, 20))
    index = dump.save()
    chunk = tmp_path / "rb" / index["chunks"][0]["name"]

    def load_into(capacity=100, data=None):
        other = TensorDictReplayBuffer(storage=LazyTensorStorage(capacity), batch_size=4)
        if data is not None:
            other.extend(data)
        ReplayBufferDump(other, tmp_path / "rb").load(index)

    with pytest.raises(CheckpointError, match="capacity 100, this run's has 50"):
        load_into(capacity=50)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_into(data=TensorDict(y=torch.zeros(3, 7), batch_size=[3]))
    data = (chunk / "x.memmap").read_bytes()
    (chunk / "x.memmap").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped
    with pytest.raises(CheckpointError, match="checksum differs"):
        load_into()
    (chunk / "x.memmap").write_bytes(data[:10])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_into()
    (chunk / "x.memmap").write_bytes(data)
    (chunk / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_into()
    os.rename(chunk, tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="is missing"):
        load_into()


# --------------------------------------------------------------------------------------------
# The hook on a real Trainer


def _run(tmp, total=200, *, kill_at=None, seed=0):
    """A tiny PWM run on real cartpole-swingup with an evaluator and checkpoints; ``end`` is
    filled with :func:`_final` at the last step.

    The collector starts a new episode every batch (``reset_at_each_iter``), so that the env's
    state at a checkpoint is its generator's: see :class:`CheckpointHook`.
    """
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global generator is what is checkpointed)
    torch.manual_seed(seed)
    trainer, _, rb, _ = tiny_trainer(total, seed=seed)
    trainer.collector.reset_at_each_iter = True
    evaluator = PolicyEvaluator(
        make_env("cartpole-swingup", seed=seed + 100, max_episode_steps=30),
        trainer.collector.policy,
        interval=40,
        num_episodes=2,
        csv_path=tmp / "eval.csv",
    )
    evaluator.register(trainer)
    hook = CheckpointHook(tmp / "checkpoint.pt", interval=60, metadata={"task": "cartpole"})
    hook.register(trainer)
    end = {}

    def kill_or_record(batch=None):
        if trainer.collected_frames == kill_at:  # after this step's evaluation and checkpoint
            raise KeyboardInterrupt
        if trainer.collected_frames >= total:  # before train() shuts the collector down
            end.update(_final(trainer, hook, evaluator))

    trainer.register_op("post_steps_log", kill_or_record)
    return trainer, hook, evaluator, rb, end


_WALL_CLOCK = {"timings", "elapsed", "eval_seconds"}


def _final(trainer, hook, evaluator):
    """Everything a run ends with, wall-clock times aside."""

    def drop_clock(state):
        if isinstance(state, dict):
            return {k: drop_clock(v) for k, v in state.items() if k not in _WALL_CLOCK}
        return state

    rows = [line.split(",")[:3] for line in evaluator.csv_path.read_text().splitlines()]
    state = drop_clock(trainer.state_dict())  # parameters, buffers, optimisers, replay
    # the curve without its wall-clock column (as floats: a restored history holds floats)
    curve = [[float(x) for x in row[:3]] for row in evaluator.history]
    state["policy_evaluator"]["history"] = curve
    return {
        "trainer": state,
        "rng": rng_state(hook._envs()),  # Python, NumPy, torch, collector and eval envs
        "curve": curve,
        "eval_csv": rows,
    }


def test_resume_is_exact(tmp_path):
    """A run killed after a checkpoint and resumed ends bit-identical to an uninterrupted run:
    parameters and buffers (the return normaliser), optimiser states and schedules, every RNG,
    the replay buffer's rows, writer and sampler, and the evaluation curve."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trainer, hook, _, _, uninterrupted = _run(tmp_path / "a")
    trainer.train()
    assert len(uninterrupted["curve"]) >= 5 and hook.saves == 4  # 60, 120, 180, 200 frames

    killed, hook, _, rb, _ = _run(tmp_path / "b", kill_at=140)  # one batch past a checkpoint
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert hook.last_frames == 120 and killed.collected_frames == 140
    assert len(rb) == 140
    # the checkpoint file does not carry the buffer's rows; its folder does, one chunk of new
    # rows per checkpoint
    saved = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert saved["trainer"]["replay_buffer"]["replay_buffer"]["_storage"]["_storage"] == {}
    index = saved["replay"]["replay_buffer"]
    assert [c["rows"] for c in index["chunks"]] == [60, 60] and index["length"] == 120

    # a new process: other seeds everywhere, so only the checkpoint can make it match
    resumed, hook, _, _, end = _run(tmp_path / "b", seed=7)
    hook.resume(check_metadata=("task",))
    assert resumed.collected_frames == 120
    resumed.train()
    # TorchRL's Collector.load_state_dict gives the resumed collector's first trajectory a new
    # id (right for a collector cut mid-episode); with reset_at_each_iter its first batch takes
    # another, so the ids of the rows collected after the resume are one higher: labels only
    expected = copy.deepcopy(uninterrupted)
    expected["trainer"]["collector"]["traj_pool"]["traj_id"] += 1
    rows = expected["trainer"]["replay_buffer"]["replay_buffer"]["_storage"]["_storage"]
    rows["collector.traj_ids"][120:] += 1
    assert_identical(end, expected, "resumed run")


def test_checkpoint_killed_mid_write_keeps_the_previous_one(tmp_path, monkeypatch):
    trainer, hook, _, rb, _ = _run(tmp_path, kill_at=60)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    first = load_checkpoint(tmp_path / "checkpoint.pt")
    rb.extend(_tiny_rows_like(rb, 20))  # new rows: the next save writes a chunk first

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt  # killed after the chunk, before the file is replaced

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        hook.save()
    monkeypatch.undo()
    folder = tmp_path / "checkpoint.replay_buffer"
    assert len(list(folder.iterdir())) == 2  # the committed chunk and the orphan
    _, hook2, _, rb2, _ = _run(tmp_path, seed=1)
    hook2.resume()
    assert_identical(load_checkpoint(tmp_path / "checkpoint.pt"), first)
    assert len(rb2) == first["replay"]["replay_buffer"]["length"] == 60
    assert_identical(rb2[:], rb[:60])
    hook2.save()  # the next commit prunes the orphan
    assert len(list(folder.iterdir())) == 1


def _tiny_rows_like(rb, n):
    rows = rb[:n].clone()
    rows["collector", "traj_ids"] += 1000
    return rows


def test_resume_refuses_mismatched_checkpoints(tmp_path):
    trainer, *_ = _run(tmp_path, kill_at=60)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    other, *_ = _run(tmp_path)
    wrong = CheckpointHook(tmp_path / "checkpoint.pt", interval=60, metadata={"task": "acrobot"})
    wrong.register(other)
    with pytest.raises(CheckpointError, match="task='cartpole'"):
        wrong.resume(check_metadata=("task",))
    # a run without the replay buffer the checkpoint holds
    bare, *_ = tiny_trainer(200)
    bare._modules.pop("replay_buffer")
    hook = CheckpointHook(tmp_path / "checkpoint.pt", interval=60)
    hook.register(bare)
    with pytest.raises(CheckpointError, match="does not register"):
        hook.resume()
    # a deleted chunk folder
    for chunk in (tmp_path / "checkpoint.replay_buffer").iterdir():
        chunk.rename(tmp_path / chunk.name)
    _, hook, *_ = _run(tmp_path)
    with pytest.raises(CheckpointError, match="is missing"):
        hook.resume()


def test_version_1_checkpoints_still_resume(tmp_path):
    """Version 1 held the whole buffer inside the file and torch's RNG only."""
    trainer, _, rb, loss = tiny_trainer(200, seed=0)
    rb.extend(_rows(0, 30))
    torch.nn.init.constant_(next(loss.parameters()), 0.5)
    torch.save(
        {
            "format": "torchrl_pwm.checkpoint",
            "version": 1,
            "trainer": trainer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "cuda": []},
            "metadata": {},
        },
        tmp_path / "v1.pt",
    )
    resumed, _, rb2, loss2 = tiny_trainer(200, seed=1)
    hook = CheckpointHook(tmp_path / "v1.pt", interval=60)
    hook.register(resumed)
    with pytest.raises(CheckpointError, match="observation layout 1"):
        hook.resume()  # written before make_env's observation layout 2
    hook.resume(allow_old_observation_layout=True)  # cartpole: the same observation in both
    assert_identical(loss2.state_dict(), loss.state_dict())
    assert_identical(rb2[:], rb[:])


def test_checkpoints_of_the_old_observation_layout_are_refused(tmp_path):
    """make_env's observation layout 2 (dm_control's order) is recorded in every checkpoint;
    one without it was written with layout 1 (sorted keys) and is refused, naming the tasks
    that changed and the way to resume the others."""
    trainer, _, rb, _ = tiny_trainer(200, seed=0)
    rb.extend(_rows(0, 30))
    hook = CheckpointHook(tmp_path / "checkpoint.pt", interval=60)
    hook.register(trainer)
    hook.save()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["observation_layout"] == 2
    resumed, *_ = tiny_trainer(200, seed=1)
    fresh = CheckpointHook(tmp_path / "checkpoint.pt", interval=60)
    fresh.register(resumed)
    fresh.resume()
    del state["observation_layout"]  # what a version before layout 2 wrote
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")},
                    tmp_path / "checkpoint.pt")  # fmt: skip
    with pytest.raises(CheckpointError, match=r"observation layout 1.*walker, hopper, finger"):
        fresh.resume()
    with pytest.raises(CheckpointError, match="allow_old_observation_layout=True"):
        fresh.resume()
    fresh.resume(allow_old_observation_layout=True)
    state["observation_layout"] = 3  # written by a newer version: never accepted
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")},
                    tmp_path / "checkpoint.pt")  # fmt: skip
    with pytest.raises(CheckpointError, match="observation layout 3"):
        fresh.resume(allow_old_observation_layout=True)
