"""Write a multi-task dataset in TD-MPC2's chunk format from this project's agents.

    python examples/collect_dataset/collect.py tasks=[cartpole-swingup,reacher-easy]
    python examples/collect_dataset/collect.py agent.kind=sac \\
        agent.run_dir=$PWD/outputs/sac/%task%/seed0 tasks=[cartpole-swingup]
        # (a SAC run made with env.action_repeat=null: the dataset's repeat, 2 on DMC)
    python examples/collect_dataset/collect.py agent.kind=replay_buffer \\
        agent.run_dir=$PWD/outputs/%task%/seed0            # a PWM run's whole replay buffer
    python examples/collect_dataset/collect.py resume=true  # continue a killed collection

For each task of ``tasks`` (names of ``task_set``: their index there is the task id written),
episodes come from one source: uniform random actions, a trained agent of ``examples/pwm`` or
``examples/sac`` rolled out in ``make_env`` (``agent.kind=pwm|sac``, from the run folder's
``checkpoint.pt`` and ``.hydra/config.yaml``), or the agent's whole training replay buffer
(``agent.kind=replay_buffer``: every complete episode of ``checkpoint.replay_buffer/``, which is
how TD-MPC2's ``mt30``/``mt80`` were made). Each episode becomes TD-MPC2 rows
(``torchrl_pwm.data.rollout_to_tdmpc2``: padded observations and actions, NaN action and reward
at row 0, int32 task ids) and every ``episodes_per_chunk`` episodes are written as
``chunk_<i>.pt`` (``torch.save`` of a TensorDict, checked with ``validate_tdmpc2_chunk``).
``progress.json`` is rewritten after each chunk: a killed collection resumes from the last
chunk, and since every rollout is seeded from (seed, task id, episode index), a resumed
collection writes the same chunks as an uninterrupted one. Load the result with
``TDMPC2Dataset.convert(sorted(glob("chunk_*.pt")), root, task_set=...)``.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import hydra
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from torchrl.data import LazyMemmapStorage, TensorDictReplayBuffer
from torchrl.envs.utils import ExplorationType, set_exploration_type
from tqdm.auto import tqdm

from torchrl_pwm.checkpoint import (
    CheckpointError,
    ReplayBufferDump,
    check_observation_layout,
    load_checkpoint,
    load_state_dict_checked,
)
from torchrl_pwm.data import rollout_to_tdmpc2, save_tdmpc2_chunk, validate_tdmpc2_chunk
from torchrl_pwm.envs import OBSERVATION_LAYOUT_VERSION, UnknownTaskError, make_env
from torchrl_pwm.envs.task_sets import DATA_EPISODE_ROWS, task_set
from torchrl_pwm.modules import make_pwm_policy
from torchrl_pwm.trainers import check_fresh_run

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # examples/run_utils.py
from run_utils import configure_torch, quiet_console

EXAMPLES = Path(__file__).resolve().parents[1]

PROGRESS = "progress.json"
KINDS = ("random", "pwm", "sac", "replay_buffer")


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_dir(cfg: DictConfig, task: str) -> Path:
    if cfg.agent.run_dir is None:
        raise SystemExit(f"agent.kind={cfg.agent.kind} needs agent.run_dir (a run folder).")
    path = Path(to_absolute_path(str(cfg.agent.run_dir).replace("%task%", task)))
    if not (path / cfg.agent.checkpoint).is_file():
        raise SystemExit(f"No checkpoint {cfg.agent.checkpoint} in {path} (agent.run_dir).")
    return path


def _load_run(cfg: DictConfig, task: str) -> tuple[Path, dict]:
    """The run folder of ``task`` and its checkpoint, checked: trained on ``task``, with this
    version's observation layout (TD-MPC2's; see ``check_observation_layout``)."""
    run_dir = _run_dir(cfg, task)
    path = run_dir / cfg.agent.checkpoint
    try:
        state = load_checkpoint(path)
        check_observation_layout(
            state,
            path,
            OBSERVATION_LAYOUT_VERSION,
            allow_old=cfg.agent.allow_old_observation_layout,
        )
    except CheckpointError as err:
        raise SystemExit(str(err)) from err
    trained = state.get("metadata", {}).get("task")
    if trained is not None and trained != task:
        raise SystemExit(f"{run_dir} trained on {trained!r}, not {task!r}.")
    _check_action_repeat(state, run_dir, task)
    return run_dir, state


def _check_action_repeat(state: dict, run_dir: Path, task: str) -> None:
    """The dataset steps each task at its default action repeat (2 on DMC, TD-MPC2's): a run
    trained at another (``examples/sac`` defaults to 1) has transitions of another time step
    and episodes of another length, and its policy acts at another rate."""
    config = json.loads(state.get("metadata", {}).get("config", "{}"))  # older runs: none
    repeat = config.get("env", {}).get("action_repeat")
    if repeat is None:
        return  # the run used the task's default, as the dataset does
    default = make_env(task, seed=None).action_repeat
    if repeat != default:
        raise SystemExit(
            f"{run_dir} ran at action repeat {repeat}; a {task} dataset is at {default} (the "
            f"task's default, as TD-MPC2's data). Train the agent with env.action_repeat=null."
        )


# -- episode sources ---------------------------------------------------------------------------


def run_config(run_dir: Path, kind: str) -> DictConfig:
    """The run's Hydra config over its example's current defaults, so that runs older than a
    config key (e.g. ``actor.mean_penalty_coef``) still load. This is right as long as a new
    key's default reproduces what older runs did or only shapes training, not the modules
    loaded here (true of every key so far: one reward head, the actor's penalties, the online
    bootstrap); a new architecture key whose default differs must be written into this
    function for old runs."""
    defaults = OmegaConf.load(EXAMPLES / kind / "config.yaml")
    return OmegaConf.merge(defaults, OmegaConf.load(run_dir / ".hydra" / "config.yaml"))


def load_policy(cfg: DictConfig, task: str, env):
    """The trained actor of an ``examples/pwm`` or ``examples/sac`` run (CPU)."""
    run_dir, state = _load_run(cfg, task)
    run_cfg = run_config(run_dir, cfg.agent.kind)
    loss_state = state["trainer"]["loss_module"]
    cpu = torch.device("cpu")
    if cfg.agent.kind == "pwm":
        utils = _import(EXAMPLES / "pwm" / "utils.py", "pwm_example_utils")
        run_cfg.compile.enabled = False
        obs_dim = env.observation_spec["observation"].shape[-1]
        loss, _ = utils.make_pwm_loss(run_cfg, obs_dim, env.action_spec, cpu)
        load_state_dict_checked(loss, loss_state, f"PWM agent of {run_dir}")
        return make_pwm_policy(loss.world_model, loss.actor_network)
    sac = _import(EXAMPLES / "sac" / "train.py", "sac_example_train")
    actor, qvalue = sac.make_sac_modules(run_cfg, env.action_spec, cpu)
    with torch.no_grad():  # materialise the lazy layers
        fake = env.fake_tensordict()
        actor(fake)
        qvalue(fake)
    prefix = "actor_network_params."  # SACLoss holds the actor's parameters under this name
    actor_state = {k[len(prefix) :]: v for k, v in loss_state.items() if k.startswith(prefix)}
    load_state_dict_checked(actor, actor_state, f"SAC actor of {run_dir}")
    return actor


def rollouts(cfg: DictConfig, task: str, task_id: int, steps: int, start: int) -> Iterator:
    """Episodes of ``steps`` agent steps from episode index ``start`` on, each seeded from
    (seed, task id, index): the same episodes whether or not the collection was resumed."""
    env = make_env(task, seed=None, max_episode_steps=steps)
    try:
        policy = None if cfg.agent.kind == "random" else load_policy(cfg, task, env)
    except CheckpointError as err:  # a checkpoint that does not fit its run's config
        raise SystemExit(str(err)) from err
    mode = (
        ExplorationType.RANDOM
        if cfg.agent.exploration == "random"
        else ExplorationType.DETERMINISTIC
    )
    index = start
    while True:
        seed = cfg.seed * 1_000_003 + task_id * 10_007 + index
        env.set_seed(seed)
        torch.manual_seed(seed)  # the random policy's and the agent's sampling
        with torch.no_grad(), set_exploration_type(mode):
            episode = env.rollout(steps, policy=policy, break_when_any_done=True)
        if episode.shape[0] != steps:
            raise SystemExit(
                f"{task}: episode {index} terminated after {episode.shape[0]} of {steps} steps; "
                "TD-MPC2's format stores episodes of one fixed length."
            )
        yield episode
        index += 1


def replay_buffer_episodes(cfg: DictConfig, task: str, steps: int) -> Iterator:
    """Every complete episode (``steps`` rows, from its reset) of a run's replay buffer, oldest
    first, read from the checkpoint's memory-mapped chunks into a scratch storage on disk."""
    run_dir, state = _load_run(cfg, task)
    path = run_dir / cfg.agent.checkpoint
    replay = state.get("replay") or {}
    if len(replay) != 1:
        raise SystemExit(
            f"{path} holds {len(replay)} replay buffers ({sorted(replay)}); expected one. "
            "(Checkpoints of format version 1 keep the buffer inside the file: resume the run "
            "once to rewrite it.)"
        )
    ((name, index),) = replay.items()
    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".scratch-") as scratch:
        buffer = TensorDictReplayBuffer(
            storage=LazyMemmapStorage(index["capacity"], scratch_dir=scratch)
        )
        try:
            ReplayBufferDump(buffer, path.with_name(f"{path.stem}.{name}")).load(index)
        except CheckpointError as err:
            raise SystemExit(str(err)) from err
        # the stored length and flags (the rows themselves are in the chunks just loaded)
        buffer.storage.load_state_dict(state["trainer"][name]["replay_buffer"]["_storage"])
        capacity, length = index["capacity"], index["length"]
        order = torch.arange(length)
        if length == capacity and index["cursor"] is not None:  # wrapped: oldest at the cursor
            order = (index["cursor"] + order) % capacity
        traj = torch.cat(
            [
                buffer.storage.get(order[i : i + 65536])["collector", "traj_ids"]
                for i in range(0, length, 65536)
            ]
        ).reshape(-1)
        cut = torch.nonzero(traj[1:] != traj[:-1]).reshape(-1) + 1
        bounds = torch.cat([torch.tensor([0]), cut, torch.tensor([length])]).tolist()
        for first, end in itertools.pairwise(bounds):
            if end - first != steps:
                continue  # an episode cut by the buffer's start, its wrap-around or the run's end
            episode = buffer.storage.get(order[first:end])
            if "step_count" in episode.keys() and int(episode["step_count"].reshape(-1)[0]) != 0:
                continue
            yield episode


# -- chunks ------------------------------------------------------------------------------------


class ChunkWriter:
    """Buffers TD-MPC2 episode rows and writes ``chunk_<i>.pt`` every ``episodes_per_chunk``,
    then commits ``progress.json`` (chunks, episodes per task)."""

    def __init__(self, folder: Path, progress: dict, episodes_per_chunk: int, task_set_name: str):
        self.folder, self.progress = folder, progress
        self.episodes_per_chunk = episodes_per_chunk
        self.task_set_name = task_set_name
        self.pending: list[TensorDictBase] = []
        self.pending_tasks: dict[str, int] = {}

    def add(self, task: str, rows: TensorDictBase) -> None:
        self.pending.append(rows)
        self.pending_tasks[task] = self.pending_tasks.get(task, 0) + 1
        if len(self.pending) == self.episodes_per_chunk:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        chunk = torch.stack(self.pending)
        name = f"chunk_{len(self.progress['chunks'])}.pt"
        validate_tdmpc2_chunk(chunk, self.task_set_name, path=name)
        save_tdmpc2_chunk(chunk, self.folder / name)
        self.progress["chunks"].append(name)
        for task, n in self.pending_tasks.items():
            self.progress["episodes"][task] = self.progress["episodes"].get(task, 0) + n
        tmp = self.folder / f".{PROGRESS}.tmp"
        tmp.write_text(json.dumps(self.progress, indent=1))
        os.replace(tmp, self.folder / PROGRESS)  # the commit point of the chunk
        self.pending, self.pending_tasks = [], {}


def _identity(cfg: DictConfig) -> dict:
    """The settings a resumed collection must share with the one it continues."""
    keep = ("task_set", "tasks", "agent", "max_episode_steps", "rows_per_episode", "seed")
    keep += ("episodes_per_chunk",)
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, list(keep)), resolve=True)


@hydra.main(version_base="1.3", config_path="", config_name="config")
def main(cfg: DictConfig) -> dict:
    quiet_console()
    configure_torch(cfg)
    folder = Path.cwd()
    try:
        check_fresh_run(folder, cfg.resume, checkpoint_name=PROGRESS)
    except (FileExistsError, FileNotFoundError) as err:
        raise SystemExit(str(err)) from err
    if cfg.agent.kind not in KINDS:
        raise SystemExit(f"agent.kind must be one of {KINDS}, got {cfg.agent.kind!r}.")
    specs = {t.name: (i, t) for i, t in enumerate(task_set(cfg.task_set))}
    if unknown := [t for t in cfg.tasks if t not in specs]:
        raise SystemExit(f"{unknown} not in the task set {cfg.task_set}: {', '.join(specs)}.")
    progress = {"config": _identity(cfg), "chunks": [], "episodes": {}}
    if cfg.resume:
        progress = json.loads((folder / PROGRESS).read_text())
        if progress["config"] != _identity(cfg):
            raise SystemExit(
                f"resume=true with other settings than {folder / PROGRESS}: "
                f"{progress['config']} vs {_identity(cfg)}."
            )
        for stray in folder.glob("chunk_*.pt"):  # written after the last commit
            if stray.name not in progress["chunks"]:
                stray.unlink()

    observation_dim = max(t.obs_dim for _, t in specs.values())
    action_dim = max(t.action_dim for _, t in specs.values())
    writer = ChunkWriter(folder, progress, cfg.episodes_per_chunk, cfg.task_set)
    total = None if cfg.agent.kind == "replay_buffer" else cfg.episodes_per_task * len(cfg.tasks)
    bar = tqdm(total=total, unit="episode", desc="collecting", disable=not cfg.progress_bar)
    for task in cfg.tasks:
        task_id, spec = specs[task]
        steps = cfg.max_episode_steps or spec.episode_length
        rows = cfg.rows_per_episode or (
            cfg.max_episode_steps + 1 if cfg.max_episode_steps else DATA_EPISODE_ROWS[cfg.task_set]
        )
        if steps % (rows - 1):
            raise SystemExit(
                f"{task}: episodes of {steps} steps do not split into stored episodes of "
                f"{rows} rows ({rows - 1} transitions); set rows_per_episode."
            )
        pieces = steps // (rows - 1)
        done = progress["episodes"].get(task, 0)  # stored episodes already committed
        start, skip_pieces = divmod(done, pieces)  # a chunk may end inside a split episode
        bar.update(start)
        if cfg.agent.kind == "replay_buffer":
            source = replay_buffer_episodes(cfg, task, steps)
            source = (e for i, e in enumerate(source) if i >= start)
        elif start < cfg.episodes_per_task:
            source = rollouts(cfg, task, task_id, steps, start=start)
            source = (e for _, e in zip(range(cfg.episodes_per_task - start), source))
        else:
            continue
        try:
            first = next(source, None)
        except (NotImplementedError, UnknownTaskError) as err:  # e.g. Meta-World, reacher-three
            raise SystemExit(f"{task}: {err}") from err
        for episode in itertools.chain([first] if first is not None else [], source):
            width = episode["observation"].shape[-1]
            if width != spec.obs_dim or episode["action"].shape[-1] != spec.action_dim:
                raise SystemExit(
                    f"{task}: observations of {width} dims and actions of "
                    f"{episode['action'].shape[-1]}, the task set says {spec.obs_dim} and "
                    f"{spec.action_dim}."
                )
            for k in range(skip_pieces, pieces):  # mt80: a DMC episode as 5 of 100 transitions
                piece = episode[k * (rows - 1) : (k + 1) * (rows - 1)]
                writer.add(
                    task,
                    rollout_to_tdmpc2(
                        piece, task=task_id, observation_dim=observation_dim, action_dim=action_dim
                    ),
                )
            skip_pieces = 0
            bar.update(1)
    writer.flush()
    bar.close()
    episodes = sum(progress["episodes"].values())
    print(
        f"{episodes} episodes in {len(progress['chunks'])} chunks in {folder}: "
        f"{progress['episodes']}. Load them with torchrl_pwm.data.TDMPC2Dataset.convert("
        f"sorted(glob('{folder}/chunk_*.pt')), root, task_set={cfg.task_set!r}).",
        flush=True,
    )
    return progress


if __name__ == "__main__":
    main()
