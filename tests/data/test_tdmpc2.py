"""TDMPC2Dataset: TD-MPC2 chunk files from real DMC rollouts, their alignment, validation,
safe loading, per-task sampling, and the layout the world-model loss takes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from torchrl_pwm.data import (
    TDMPC2DataError,
    TDMPC2Dataset,
    load_tdmpc2_chunk,
    rollout_to_tdmpc2,
    validate_tdmpc2_chunk,
)
from torchrl_pwm.envs import make_env, task_set

MT30 = [t.name for t in task_set("mt30")]
TASKS = {"cartpole-swingup": 5, "reacher-easy": 6}  # name -> obs dim; ids 10 and 4 in mt30
STEPS = 12  # agent steps per (short) episode
GARBAGE = 12345.0  # row 0's action and reward in pre-Dec-2023 files: must never be read


@pytest.fixture(scope="module")
def rollouts():
    """Two short real episodes per task: {task: [rollout [STEPS], ...]}."""
    torch.manual_seed(0)
    out = {}
    for i, task in enumerate(TASKS):
        env = make_env(task, seed=i, max_episode_steps=STEPS)
        out[task] = [env.rollout(STEPS) for _ in range(2)]
    return out


def tdmpc2_chunk(rollouts, garbage_row0: bool = True) -> TensorDict:
    """The chunk TD-MPC2's buffer would save for these episodes, built by hand from its
    documented layout: row 0 the reset observation, row t + 1 the next observation of step t
    with that step's action and reward; obs padded to 24, action to 6, int32 task."""
    episodes = []
    for task, eps in rollouts.items():
        for ro in eps:
            obs = torch.cat([ro["observation"][:1], ro["next", "observation"]])
            action = torch.cat([torch.full((1, ro["action"].shape[-1]), math.nan), ro["action"]])
            reward = torch.cat([torch.full((1,), math.nan), ro["next", "reward"].squeeze(-1)])
            if garbage_row0:
                action[0], reward[0] = GARBAGE, GARBAGE
            episodes.append(
                TensorDict(
                    obs=torch.nn.functional.pad(obs, (0, 24 - obs.shape[-1])),
                    action=torch.nn.functional.pad(action, (0, 6 - action.shape[-1])),
                    reward=reward,
                    task=torch.full((STEPS + 1,), MT30.index(task), dtype=torch.int32),
                    batch_size=[STEPS + 1],
                )
            )
    return torch.stack(episodes).contiguous()


def save(chunk, path: Path) -> Path:
    torch.save(chunk, path)  # what TD-MPC2 does
    return path


def test_rollout_to_tdmpc2_matches_the_documented_layout(rollouts):
    expected = tdmpc2_chunk(rollouts, garbage_row0=False)
    ours = torch.stack(
        [
            rollout_to_tdmpc2(ro, task=MT30.index(task), observation_dim=24, action_dim=6)
            for task, eps in rollouts.items()
            for ro in eps
        ]
    )
    for key in ("obs", "action", "reward", "task"):
        assert ours[key].dtype == expected[key].dtype
        rows = slice(None) if key in ("obs", "task") else slice(1, None)  # row 0: no action
        assert torch.equal(ours[key][:, rows], expected[key][:, rows]), key
    assert ours["reward"][:, 0].isnan().all() and ours["action"][:, 0].isnan().all()


def test_real_rollouts_load_with_every_transition_aligned(rollouts, tmp_path):
    path = save(tdmpc2_chunk(rollouts), tmp_path / "chunk_0.pt")
    ds = TDMPC2Dataset.convert([path], tmp_path / "data", task_set="mt30")
    assert (ds.num_episodes, len(ds), ds.rows_per_episode) == (4, 4 * (STEPS + 1), STEPS + 1)
    assert ds.tasks == ["reacher-easy", "cartpole-swingup"]  # task-id order
    sources = [(task, ro) for task, eps in rollouts.items() for ro in eps]  # episode id order

    def check(batch):
        assert not (batch == GARBAGE).any(), "row 0's action/reward was read"
        for b in range(batch.shape[0]):
            task, ro = sources[int(batch["episode"][b, 0])]
            assert (batch["episode"][b] == batch["episode"][b, 0]).all()  # one episode
            assert (batch["task"][b] == MT30.index(task)).all()
            a, d = ro["action"].shape[-1], TASKS[task]
            # the slice's offset in its episode: the step whose observation it starts from
            start = int((ro["observation"] == batch["observation"][b, 0, :d]).all(-1).nonzero()[0])
            steps = slice(start, start + batch.shape[1])
            assert torch.equal(batch["observation"][b, :, :d], ro["observation"][steps])
            assert torch.equal(batch["action"][b, :, :a], ro["action"][steps])
            assert torch.equal(
                batch["next", "observation"][b, :, :d], ro["next", "observation"][steps]
            )
            assert torch.equal(batch["next", "reward"][b], ro["next", "reward"][steps])
            assert not batch["observation"][b, :, d:].any() and not batch["action"][b, :, a:].any()

    whole = ds.make_replay_buffer(horizon=STEPS, batch_size=16).sample()  # whole episodes
    assert whole.shape == (16, STEPS) and set(whole["episode"][:, 0].tolist()) == {0, 1, 2, 3}
    check(whole)
    check(ds.make_replay_buffer(horizon=3, batch_size=64).sample())
    # reopening the folder reads the same rows
    again = TDMPC2Dataset(tmp_path / "data")
    assert torch.equal(again.episode(2)["observation"], ds.episode(2)["observation"])
    assert again.episode(2)["reward"][0].isnan() and again.episode(2)["action"][0].isnan().all()


def test_samples_feed_the_world_model_loss(rollouts, tmp_path):
    from torchrl_pwm.modules import TDMPC2WorldModel
    from torchrl_pwm.objectives import TDMPC2ModelLoss

    path = save(tdmpc2_chunk(rollouts), tmp_path / "chunk_0.pt")
    ds = TDMPC2Dataset.convert([path], tmp_path / "data", task_set="mt30")
    specs = task_set("mt30")
    wm = TDMPC2WorldModel(
        24, 6, latent_dim=16, enc_dim=32, mlp_dim=32, num_tasks=30, task_dim=8,
        action_dims=[t.action_dim for t in specs],
    )  # fmt: skip
    out = TDMPC2ModelLoss(wm)(ds.make_replay_buffer(horizon=4, batch_size=8).sample())
    assert torch.isfinite(out["loss_consistency"]) and torch.isfinite(out["loss_reward"])


def test_per_task_filtering(rollouts, tmp_path):
    path = save(tdmpc2_chunk(rollouts), tmp_path / "chunk_0.pt")
    ds = TDMPC2Dataset.convert([path], tmp_path / "all", task_set="mt30")
    batch = ds.make_replay_buffer(horizon=4, batch_size=32, tasks=["cartpole-swingup"]).sample()
    assert (batch["task"] == 10).all() and set(batch["episode"].unique().tolist()) <= {0, 1}
    only = TDMPC2Dataset.convert(
        [path, path], tmp_path / "reacher", task_set="mt30", tasks=["reacher-easy"]
    )
    assert only.num_episodes == 4 and only.tasks == ["reacher-easy"]
    assert only.episodes["file"].tolist() == [0, 0, 1, 1]
    assert only.episodes["file_episode"].tolist() == [2, 3, 2, 3]
    assert torch.equal(only.episode(0)["observation"], ds.episode(2)["observation"])
    draws = [
        ds.make_replay_buffer(
            horizon=4, batch_size=8, generator=torch.Generator().manual_seed(1)
        ).sample()["episode"]
        for _ in range(2)
    ]
    assert torch.equal(*draws)  # a seeded generator draws the same slices
    prefetched = ds.make_replay_buffer(horizon=4, batch_size=8, prefetch=2)
    assert all(prefetched.sample().shape == (8, 4) for _ in range(4))
    with pytest.raises(ValueError, match="No episode of the tasks"):
        ds.make_replay_buffer(horizon=4, batch_size=8, tasks=["walker-walk"])
    with pytest.raises(ValueError, match="not in the task set"):
        ds.make_replay_buffer(horizon=4, batch_size=8, tasks=["walker-walkk"])


def _drop(chunk, key):
    chunk = chunk.clone()
    del chunk[key]
    return chunk


def _set(chunk, key, index, value):
    chunk = chunk.clone()
    chunk[key][index] = value
    return chunk


MALFORMED = {
    "missing key": (lambda c: _drop(c, "reward"), r"missing key\(s\) \['reward'\]"),
    "extra key": (lambda c: c.clone().set("episode", torch.zeros(c.shape)), r"unexpected key"),
    "wrong dtype": (
        lambda c: c.clone().set("obs", c["obs"].double()),
        r"'obs' has dtype torch.float64; expected torch.float32",
    ),
    "wrong task dtype": (
        lambda c: c.clone().set("task", c["task"].float()),
        r"'task' has dtype torch.float32",
    ),
    "wrong shape": (
        lambda c: TensorDict({**c.to_dict(), "obs": c["obs"][..., :23]}, batch_size=c.shape),
        r"'obs' has shape \(4, 13, 23\); expected \(4, 13, 24\)",
    ),
    "task id outside the task set": (
        lambda c: _set(c, "task", 1, 30),
        r"'task' holds id 30 \(episode 1, row 0\), outside the task set 'mt30' \(ids 0..29\)",
    ),
    "task changes in an episode": (
        lambda c: _set(c, "task", (2, 5), 3),
        r"'task' changes within episode 2",
    ),
    "NaN after row 0": (
        lambda c: _set(c, "action", (3, 4, 0), math.nan),
        r"'action' holds nan at episode 3, row 4 \(only row 0 may",
    ),
    "NaN observation": (
        lambda c: _set(c, "obs", (0, 0, 1), math.inf),
        r"'obs' holds inf at episode 0, row 0\.",
    ),
    "non-zero observation padding": (
        lambda c: _set(c, "obs", (1, 2, 10), 0.5),
        r"'obs' is not zero-padded: episode 1 \(task 10, 'cartpole-swingup', 5 dims\) has 0.5 "
        r"at row 2, dim 10",
    ),
    "non-zero action padding": (
        lambda c: _set(c, "action", (2, 7, 3), -1.0),
        r"'action' is not zero-padded: episode 2 \(task 4, 'reacher-easy', 2 dims\)",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_each_malformed_chunk_has_its_own_error(case, rollouts, tmp_path):
    mutate, message = MALFORMED[case]
    good = save(tdmpc2_chunk(rollouts), tmp_path / "good.pt")
    bad = save(mutate(tdmpc2_chunk(rollouts)), tmp_path / "bad_chunk.pt")
    with pytest.raises(TDMPC2DataError, match=r"bad_chunk\.pt: " + message):
        validate_tdmpc2_chunk(load_tdmpc2_chunk(bad), "mt30", path=bad)
    with pytest.raises(TDMPC2DataError, match=r"bad_chunk\.pt: " + message):
        TDMPC2Dataset.convert([good, bad], tmp_path / "data", task_set="mt30")
    assert not (tmp_path / "data").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data")]  # no temp left


def test_truncated_and_mismatched_files(rollouts, tmp_path):
    good = save(tdmpc2_chunk(rollouts), tmp_path / "good.pt")
    data = good.read_bytes()
    for name, size in (("half.pt", len(data) // 2), ("tail.pt", len(data) - 100)):
        (tmp_path / name).write_bytes(data[:size])
        with pytest.raises(TDMPC2DataError, match=rf"{name}: .*truncated or corrupt"):
            TDMPC2Dataset.convert([tmp_path / name], tmp_path / "data", task_set="mt30")
    with pytest.raises(TDMPC2DataError, match=r"missing\.pt: no such file"):
        load_tdmpc2_chunk(tmp_path / "missing.pt")
    torch.save({"obs": torch.zeros(2)}, tmp_path / "dict.pt")
    with pytest.raises(TDMPC2DataError, match=r"dict\.pt: holds a dict"):
        load_tdmpc2_chunk(tmp_path / "dict.pt")
    short = save(tdmpc2_chunk(rollouts)[:, :7].contiguous(), tmp_path / "short.pt")
    with pytest.raises(TDMPC2DataError, match=r"short.pt: 7 rows per episode; expected 13"):
        TDMPC2Dataset.convert([good, short], tmp_path / "data", task_set="mt30")
    # a converted dataset whose storage file was cut short is refused on opening
    ds = TDMPC2Dataset.convert([good], tmp_path / "data", task_set="mt30")
    obs_file = ds.root / "storage" / "observation.memmap"
    os.truncate(obs_file, obs_file.stat().st_size - 8)
    with pytest.raises(TDMPC2DataError, match=r"observation\.memmap: missing or truncated"):
        TDMPC2Dataset(tmp_path / "data")
    with pytest.raises(FileExistsError, match="not empty"):
        TDMPC2Dataset.convert([good], tmp_path / "data", task_set="mt30")
    TDMPC2Dataset.convert([good], tmp_path / "data", task_set="mt30", overwrite=True)
    assert TDMPC2Dataset(tmp_path / "data").num_episodes == 4


def _run_code_then_build(marker: str, tensors: dict, batch_size: list) -> TensorDict:
    Path(marker).touch()  # stands for arbitrary code
    return TensorDict(tensors, batch_size=batch_size)


class _CodeOnLoad:
    """Unpickles into a valid chunk, after running a function: what a malicious file does."""

    def __init__(self, marker: Path, chunk: TensorDict) -> None:
        self.marker, self.chunk = marker, chunk

    def __reduce__(self):
        return _run_code_then_build, (
            str(self.marker),
            self.chunk.to_dict(),
            list(self.chunk.shape),
        )


def test_files_that_run_code_are_refused_unless_trusted(rollouts, tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save(_CodeOnLoad(marker, tdmpc2_chunk(rollouts)), path)
    with pytest.raises(TDMPC2DataError, match=r"evil.pt: loading it would run code .*trust_pickle"):
        TDMPC2Dataset.convert([path], tmp_path / "data", task_set="mt30")
    assert not marker.exists() and not (tmp_path / "data").exists()
    ds = TDMPC2Dataset.convert([path], tmp_path / "data", task_set="mt30", trust_pickle=True)
    assert marker.exists() and ds.num_episodes == 4


def test_custom_task_set_and_bad_arguments(rollouts, tmp_path):
    from torchrl_pwm.data import TaskSpec

    specs = [TaskSpec(f"task{i}", 24 if i == 0 else 5, 6 if i == 0 else 1) for i in range(11)]
    path = save(tdmpc2_chunk(rollouts), tmp_path / "chunk_0.pt")
    with pytest.raises(TDMPC2DataError, match="not zero-padded"):  # id 4 has 5 dims here
        TDMPC2Dataset.convert([path], tmp_path / "data", task_set=specs)
    with pytest.raises(TypeError, match="sequence of objects with name"):
        TDMPC2Dataset.convert([path], tmp_path / "data", task_set=[1, 2])
    with pytest.raises(ValueError, match="Unknown task set"):
        TDMPC2Dataset.convert([path], tmp_path / "data", task_set="mt31")
    with pytest.raises(TDMPC2DataError, match="not a converted TD-MPC2 dataset"):
        TDMPC2Dataset(tmp_path)
    ds = TDMPC2Dataset.convert([path], tmp_path / "data", task_set="mt30")
    with pytest.raises(ValueError, match="horizon 13 needs 14 rows"):
        ds.make_replay_buffer(horizon=13, batch_size=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_storage_and_pinned_prefetch(rollouts, tmp_path):
    path = save(tdmpc2_chunk(rollouts), tmp_path / "chunk_0.pt")
    ds = TDMPC2Dataset.convert([path], tmp_path / "data", task_set="mt30")
    on_gpu = ds.make_replay_buffer(horizon=4, batch_size=8, device="cuda")
    assert on_gpu.storage.device.type == "cuda" and on_gpu.sample().device.type == "cuda"
    pinned = ds.make_replay_buffer(horizon=4, batch_size=8, device="cuda", storage_device="cpu")
    batch = pinned.sample()
    assert pinned.storage.device.type == "cpu" and batch.device.type == "cuda"
    ref = ds.episode(int(batch["episode"][0, 0]))["observation"]
    assert (ref.cuda()[:, None] == batch["observation"][0]).all(-1).any(0).all()


def _rss_file() -> int:
    status = Path("/proc/self/status").read_text()
    return (
        int(next(ln for ln in status.splitlines() if ln.startswith("RssFile:")).split()[1]) * 1024
    )


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux only")
def test_pages_of_memory_mapped_files_are_released(tmp_path):
    """The mechanism that keeps conversion's resident memory flat: pages of the chunks read
    (private mappings of torch.load(mmap=True)) and of the storage written (shared) leave the
    process's RSS after each block; the data stays readable."""
    from tensordict import MemoryMappedTensor

    from torchrl_pwm.data.tdmpc2 import _drop_pages

    size = 64 * 2**20
    shared = MemoryMappedTensor.empty((size // 4,), dtype=torch.float32, filename=tmp_path / "m")
    shared.fill_(1.0)
    torch.save(TensorDict(x=torch.full((size // 4,), 2.0), batch_size=[]), tmp_path / "c.pt")
    private = load_tdmpc2_chunk(tmp_path / "c.pt")["x"]
    assert float(private.sum()) == 2.0 * (size // 4)
    for tensor, kwargs in ((shared, {}), (private, {"private": True})):
        before = _rss_file()
        _drop_pages(tensor, **kwargs)
        assert before - _rss_file() > size * 0.9
    assert float(shared.sum()) == size // 4 and float(private.sum()) == 2.0 * (size // 4)
    before = _rss_file()
    _drop_pages(private)  # a private mapping is kept unless the caller says it was never written
    _drop_pages(torch.ones(size // 4))  # anonymous memory is never touched
    assert before - _rss_file() < size * 0.1


def test_episode_slice_sampler_distribution():
    """SliceSampler's distribution (strict_length=True): an episode uniformly among those long
    enough, then a start uniformly among its windows; short episodes never drawn."""
    from torchrl_pwm.data import EpisodeSliceSampler

    sampler = EpisodeSliceSampler(torch.tensor([0, 10, 40]), torch.tensor([10, 30, 3]), slice_len=5)
    sampler._rng = torch.Generator().manual_seed(0)  # what ReplayBuffer(generator=) sets
    n = 20000
    index = sampler.sample(None, n * 5)[0].view(n, 5)
    assert (index[:, 1:] - index[:, :-1] == 1).all()
    first = index[:, 0]
    short = first < 10
    assert ((first >= 0) & (first <= 5) | (first >= 10) & (first <= 35)).all()
    assert abs(short.float().mean() - 0.5) < 5 * (0.25 / n) ** 0.5  # episodes equally likely
    for starts, windows in ((first[short], 6), (first[~short] - 10, 26)):
        counts = torch.bincount(starts, minlength=windows).float()
        p = 1 / windows
        assert ((counts / len(starts) - p).abs() < 5 * (p * (1 - p) / len(starts)) ** 0.5).all()
    with pytest.raises(ValueError, match="No episode has 50 rows"):
        EpisodeSliceSampler(torch.tensor([0]), torch.tensor([10]), slice_len=50)
