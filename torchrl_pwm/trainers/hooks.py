"""Trainer hooks: evaluation in the real environment, atomic checkpoints, a clean stop on
SIGINT / SIGTERM, env-step logging and progress."""

from __future__ import annotations

import csv
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.trainers import ReplayBufferTrainer, Trainer, TrainerHookBase

from torchrl_pwm.checkpoint import (
    OBSERVATION_LAYOUT_KEY,
    CheckpointError,
    ReplayBufferDump,
    check_observation_layout,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from torchrl_pwm.envs.make import OBSERVATION_LAYOUT_VERSION
from torchrl_pwm.evaluation.record import record_episode, save_gif

__all__ = [
    "CheckpointHook",
    "EnvStepLogger",
    "EnvStepProgressBar",
    "PolicyEvaluator",
    "StopOnSignal",
    "episode_success",
    "evaluate_policy",
]


@torch.no_grad()
def evaluate_policy(
    env: EnvBase,
    policy,
    num_episodes: int,
    max_steps: int = 100_000,
    *,
    return_episodes: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[TensorDictBase]]:
    """Returns of ``num_episodes`` episodes of ``policy`` in ``env``, acting deterministically
    (``tanh(μ)`` for PWM's actor). The env must carry ``RewardSum`` (``episode_reward``).
    With ``return_episodes=True``, also the episodes (one ``[T]`` TensorDict each).

    Examples:
        >>> from torchrl_pwm.envs import make_env
        >>> env = make_env("cartpole-swingup", max_episode_steps=10)
        >>> evaluate_policy(env, None, num_episodes=2).shape
        torch.Size([2])
    """
    returns, episodes = [], []
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(num_episodes):
            td = env.rollout(max_steps, policy, break_when_any_done=True, auto_cast_to_device=True)
            returns.append(td["next", "episode_reward"][-1].sum())
            if return_episodes:
                episodes.append(td)
    returns = torch.stack(returns)
    return (returns, episodes) if return_episodes else returns


def episode_success(episodes: Sequence[TensorDictBase]) -> float | None:
    """The fraction of ``episodes`` that end in success, as TD-MPC2 scores Meta-World (the last
    step's ``("next", "success")``), or ``None`` when the episodes carry no success flag (DMC).

    Examples:
        >>> from tensordict import TensorDict
        >>> ep = lambda last: TensorDict(
        ...     {"next": {"success": torch.tensor([[False], [last]])}}, batch_size=[2])
        >>> episode_success([ep(True), ep(False)])
        0.5
        >>> episode_success([TensorDict({"next": {"reward": torch.ones(2, 1)}}, [2])]) is None
        True
    """
    if not episodes or ("next", "success") not in episodes[0].keys(include_nested=True):
        return None
    last = [bool(ep["next", "success"][-1].any()) for ep in episodes]
    return sum(last) / len(last)


class EnvStepLogger:
    """Wraps a TorchRL logger so that every ``step`` it receives is multiplied by ``scale``.

    TorchRL's collectors and ``Trainer`` count agent steps (frames); with an action repeat of
    ``k``, ``EnvStepLogger(logger, k)`` makes every logged step an *env* step, the unit the
    project reports everywhere.

    Examples:
        >>> import tempfile
        >>> from torchrl.record import CSVLogger
        >>> logger = EnvStepLogger(CSVLogger("run", log_dir=tempfile.mkdtemp()), 2)
        >>> logger.log_scalar("loss", 1.0, step=10)  # written at step 20
    """

    def __init__(self, logger, scale: int) -> None:
        self.logger = logger
        self.scale = scale

    def log_scalar(self, name: str, value: Any, step: int | None = None) -> None:
        self.logger.log_scalar(name, value, step=None if step is None else step * self.scale)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logger, name)


class PolicyEvaluator(TrainerHookBase):
    """Evaluate the policy in a real env every ``interval`` frames, at the first call and at
    the end of training.

    Logs ``eval/return_mean`` and ``eval/return_std`` over ``num_episodes`` deterministic
    episodes, ``eval/success`` where the env reports success (Meta-World: the fraction of
    episodes whose last step succeeds, :func:`episode_success`), and whatever
    ``episode_metrics`` computes from the episodes; shows the latest mean in
    the progress bar, and appends a row ``(env_steps, return_mean, return_std, wall_time_s)``
    to ``csv_path`` if given. The
    history is part of the hook's ``state_dict``, so a resumed run keeps its curve (and the
    CSV is rewritten from it, without the rows of evaluations after the last checkpoint).

    Args:
        env: the evaluation environment.
        policy: the deterministic policy (e.g. ``TensorDictSequential(encoder, actor)``).

    Keyword Args:
        interval: frames (agent steps) between evaluations.
        num_episodes: episodes per evaluation (10).
        frame_to_env_steps: the action repeat, to report env steps.
        csv_path: where to append the evaluation rows.
        video_env: a pixel-rendering copy of the env (``make_env(task, from_pixels=True)``);
            if given, one deterministic episode is written as a GIF to
            ``video_dir/eval_<env_steps>.gif`` at the final evaluation.
        video_dir: the folder for the GIFs (default ``videos``).
        video_every_eval: also record at every evaluation, not only the final one.
        episode_metrics: called with the list of evaluation episodes after each evaluation;
            the ``{name: float}`` it returns is logged too (e.g.
            :class:`~torchrl_pwm.evaluation.calibration.CalibrationMetrics`).

    Examples:
        >>> from torchrl_pwm.envs import make_env
        >>> ev = PolicyEvaluator(make_env("cartpole-swingup", max_episode_steps=5), None,
        ...                      interval=100, num_episodes=2, frame_to_env_steps=2)
        >>> out = ev.evaluate(frames=0)
        >>> sorted(out)
        ['eval/return_mean', 'eval/return_std', 'log_pbar']
    """

    def __init__(
        self,
        env: EnvBase,
        policy,
        *,
        interval: int,
        num_episodes: int = 10,
        frame_to_env_steps: int = 1,
        csv_path: str | Path | None = None,
        video_env: EnvBase | None = None,
        video_dir: str | Path = "videos",
        video_every_eval: bool = False,
        episode_metrics: Callable[[list[TensorDictBase]], dict[str, float]] | None = None,
    ) -> None:
        self.env = env
        self.episode_metrics = episode_metrics
        self.video_env = video_env
        self.video_dir = Path(video_dir)
        self.video_every_eval = video_every_eval
        self.videos: list[Path] = []
        self.policy = policy
        self.interval = interval
        self.num_episodes = num_episodes
        self.frame_to_env_steps = frame_to_env_steps
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.history: list[list[float]] = []
        self.last_frames: int | None = None
        self.start_time = time.time()
        self.elapsed_before = 0.0
        self.eval_seconds = 0.0
        self._trainer: Trainer | None = None

    def _write_csv(self, rows: list[list[float]], mode: str) -> None:
        if self.csv_path is None:
            return
        new = mode == "w" or not self.csv_path.exists()
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with self.csv_path.open(mode, newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["env_steps", "return_mean", "return_std", "wall_time_s"])
            writer.writerows([int(r[0]), *r[1:]] for r in rows)  # env steps as integers

    def evaluate(self, frames: int, video: bool = False) -> dict[str, Any]:
        """Run the episodes now and record them at ``frames`` agent steps (and a GIF of one
        more episode if ``video`` and a ``video_env`` was given)."""
        t0 = time.time()
        returns, episodes = evaluate_policy(
            self.env, self.policy, self.num_episodes, return_episodes=True
        )
        extra = {} if self.episode_metrics is None else dict(self.episode_metrics(episodes))
        success = episode_success(episodes)
        if success is not None:
            extra["eval/success"] = success
        returns = returns.float()
        if video and self.video_env is not None:
            frames_px, _ = record_episode(self.video_env, self.policy)
            path = self.video_dir / f"eval_{frames * self.frame_to_env_steps}.gif"
            self.videos.append(save_gif(frames_px, path))
        self.eval_seconds += time.time() - t0
        mean = returns.mean().item()
        std = returns.std(unbiased=False).item() if returns.numel() > 1 else 0.0
        row = [
            frames * self.frame_to_env_steps,
            mean,
            std,
            self.elapsed_before + time.time() - self.start_time,
        ]
        self.history.append(row)
        self.last_frames = frames
        self._write_csv([row], "a")
        return {"eval/return_mean": mean, "eval/return_std": std, **extra, "log_pbar": True}

    def __call__(self, batch: TensorDictBase | None = None) -> dict[str, Any] | None:
        trainer = self._trainer
        frames = trainer.collected_frames if trainer is not None else 0
        final = trainer is not None and frames >= trainer.total_frames
        due = self.last_frames is None or frames - self.last_frames >= self.interval
        if not (due or (final and frames != self.last_frames)):
            return None
        return self.evaluate(frames, video=final or self.video_every_eval)

    def register(self, trainer: Trainer, name: str = "policy_evaluator") -> None:
        self._trainer = trainer
        trainer.register_op("post_steps_log", self)
        trainer.register_module(name, self)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(map(float, r)) for r in self.history],
            "last_frames": self.last_frames,
            "elapsed": self.elapsed_before + time.time() - self.start_time,
            "eval_seconds": self.eval_seconds,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the curve and rewrite ``csv_path`` from it: rows a killed run appended after
        its last checkpoint are dropped, since the resumed run evaluates those steps again."""
        self.history = [list(r) for r in state_dict["history"]]
        self.last_frames = state_dict["last_frames"]
        self.elapsed_before = state_dict["elapsed"]
        self.eval_seconds = state_dict["eval_seconds"]
        self.start_time = time.time()
        if self.csv_path is not None:
            tmp = self.csv_path.with_name(self.csv_path.name + ".tmp")
            self.csv_path, final = tmp, self.csv_path
            try:
                self._write_csv(self.history, "w")
            finally:
                self.csv_path = final
            os.replace(tmp, final)


class CheckpointHook(TrainerHookBase):
    """Write the whole trainer state atomically every ``interval`` frames, and at the end.

    It runs at the ``post_steps_log`` stage: register it after a :class:`PolicyEvaluator` so
    that a checkpoint includes the evaluation of the same step.

    The checkpoint file holds ``trainer.state_dict()``: the loss module (world model, actor,
    critic, running statistics), the collector (policy weights, frame and trajectory counters)
    and every module registered in the trainer, e.g. the optimisation stepper (optimisers,
    schedules, counters), the replay-buffer hook (the buffer's writer, sampler and length) and
    the evaluator (the learning curve). It also holds every random-number generator the run
    draws from (:func:`~torchrl_pwm.checkpoint.rng_state`): Python's, NumPy's, torch's CPU and
    CUDA ones, and those the collector's and the registered modules' envs (the evaluator's)
    draw their initial states from.

    The rows of a replay buffer registered through TorchRL's
    :class:`~torchrl.trainers.ReplayBufferTrainer` are not in the file: they go to the folder
    ``<path stem>.<module name>`` beside it (``checkpoint.replay_buffer/``), one memory-mapped
    chunk per checkpoint with only the rows added since the previous one
    (:class:`~torchrl_pwm.checkpoint.ReplayBufferDump`), and the file holds their index. The
    file is written last with :func:`~torchrl_pwm.checkpoint.save_checkpoint` (temporary file +
    rename): it is the commit point, so a run killed at any moment leaves the previous
    checkpoint complete, buffer included, and it loads with ``weights_only=True``. Keep the
    folder with the file.

    What a resume cannot restore: the episode in progress in the collector's env (MuJoCo's
    state and the collector's carrier are not saved). The resumed collector starts a fresh
    episode, drawn from the env's restored generator after the reset of its construction, so
    a resumed run is bit-identical to an uninterrupted one only when the collector starts a
    new episode at the checkpoint anyway (``reset_at_each_iter=True``, as the test of this
    class does); otherwise it continues the same run with one episode cut short.

    Args:
        path: the checkpoint file.

    Keyword Args:
        interval: frames between checkpoints.
        metadata: plain values stored alongside (e.g. the config), checked by :meth:`resume`.
    """

    def __init__(
        self, path: str | Path, *, interval: int, metadata: dict[str, Any] | None = None
    ) -> None:
        self.path = Path(path)
        self.interval = interval
        self.metadata = metadata or {}
        self.last_frames = 0
        self.saves = 0
        self.save_seconds = 0.0
        self._trainer: Trainer | None = None
        self._dumps: dict[str, ReplayBufferDump] = {}

    def _modules(self) -> dict[str, Any]:
        return dict(self._trainer._modules)  # the Trainer has no public view of its modules

    def _envs(self) -> dict[str, EnvBase]:
        """The envs whose generators are saved, by name: the collector's and those of the
        registered modules (``<module>.env``, ``<module>.video_env``)."""
        envs = {}
        if isinstance(env := getattr(self._trainer.collector, "env", None), EnvBase):
            envs["collector"] = env
        for name, module in self._modules().items():
            for attr in ("env", "video_env"):
                if isinstance(env := getattr(module, attr, None), EnvBase):
                    envs[f"{name}.{attr}"] = env
        return envs

    def _replay_dumps(self) -> dict[str, ReplayBufferDump]:
        for name, module in self._modules().items():
            if (
                name not in self._dumps
                and isinstance(module, ReplayBufferTrainer)
                and ReplayBufferDump.supports(module.replay_buffer)
            ):
                folder = self.path.with_name(f"{self.path.stem}.{name}")
                self._dumps[name] = ReplayBufferDump(module.replay_buffer, folder)
        return self._dumps

    def save(self) -> Path:
        """Write the checkpoint now (the buffer's new rows first, the file last); returns the
        file's path."""
        t0 = time.time()
        trainer = self._trainer
        self.last_frames = trainer.collected_frames
        self.saves += 1
        state = trainer.state_dict()
        replay = {}
        for name, dump in self._replay_dumps().items():
            replay[name] = dump.save()
            state[name]["replay_buffer"]["_storage"]["_storage"] = {}  # the rows are in the dump
        payload = {
            "trainer": state,
            "replay": replay,
            "rng": rng_state(self._envs()),
            "metadata": self.metadata,
            OBSERVATION_LAYOUT_KEY: OBSERVATION_LAYOUT_VERSION,
        }
        save_checkpoint(payload, self.path)
        for dump in self._dumps.values():  # committed: the chunks no index needs can go
            dump.prune()
        self.save_seconds += time.time() - t0
        return self.path

    def __call__(self, batch: TensorDictBase | None = None) -> None:
        trainer = self._trainer
        done = trainer.collected_frames >= trainer.total_frames
        if done or trainer.collected_frames - self.last_frames >= self.interval:
            self.save()

    def resume(
        self,
        *,
        check_metadata: tuple[str, ...] = (),
        allow_old_observation_layout: bool = False,
    ) -> dict[str, Any]:
        """Load the checkpoint into the registered trainer, its replay buffers and the
        generators; return its metadata.

        Checkpoints record the observation layout of :func:`~torchrl_pwm.envs.make_env`
        (:data:`~torchrl_pwm.envs.make.OBSERVATION_LAYOUT_VERSION`); one written with another
        layout is refused (see :func:`~torchrl_pwm.checkpoint.check_observation_layout`).

        Keyword Args:
            check_metadata: metadata keys that must equal this run's.
            allow_old_observation_layout: accept a checkpoint of an older layout, for a run
                on a task whose observation did not change (not walker, hopper, finger or
                fish).

        Raises:
            CheckpointError: unreadable file or replay-buffer chunk, another observation
                layout, a state that does not fit this run's modules, or metadata
                ``check_metadata`` keys that differ from this run's (e.g. another task or
                model size).
        """
        state = load_checkpoint(self.path)
        check_observation_layout(
            state,
            self.path,
            OBSERVATION_LAYOUT_VERSION,
            allow_old=allow_old_observation_layout,
        )
        saved = state.get("metadata", {})
        for key in check_metadata:
            if saved.get(key) != self.metadata.get(key):
                raise CheckpointError(
                    f"Checkpoint {self.path} was written with {key}={saved.get(key)!r}, this run "
                    f"has {key}={self.metadata.get(key)!r}."
                )
        dumps = self._replay_dumps()
        replay = state.get("replay", {})
        if unknown := sorted(set(replay) - set(dumps)):
            raise CheckpointError(
                f"Checkpoint {self.path} holds the replay buffer(s) {unknown}, which this run "
                f"does not register (it has {sorted(dumps)})."
            )
        for name, index in replay.items():
            dumps[name].load(index)
        try:
            self._trainer.load_state_dict(state["trainer"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            raise CheckpointError(
                f"Checkpoint {self.path} does not match this run's modules: {err}"
            ) from err
        if state["version"] == 1:  # torch's generators only
            torch.set_rng_state(state["rng"]["torch"])
            if state["rng"].get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        else:
            set_rng_state(state["rng"], self._envs())
        self.last_frames = self._trainer.collected_frames
        return saved

    def register(self, trainer: Trainer, name: str = "checkpoint") -> None:
        self._trainer = trainer
        trainer.register_op("post_steps_log", self)

    def state_dict(self) -> dict[str, Any]:
        return {"last_frames": self.last_frames}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_frames = state_dict["last_frames"]


class StopOnSignal(TrainerHookBase):
    """Turn SIGINT (Ctrl-C) and SIGTERM into a clean stop: the batch in progress finishes, a
    checkpoint is written and the Trainer stops (:meth:`torchrl.trainers.Trainer.request_stop`).

    Use it as a context manager around ``trainer.train()``: the handlers are installed on
    entry and the previous ones restored on exit. It runs at the ``post_steps_log`` stage,
    after every other hook of the batch (register it last), so the checkpoint holds a
    consistent state: optimisers, replay buffer, counters and the evaluation history of the
    same step. A second signal while it is stopping raises :class:`KeyboardInterrupt` at once.
    After training, :attr:`received` is the signal number (``None`` if none came).

    Args:
        checkpoint: the run's :class:`CheckpointHook` (``None``: stop without saving).

    Keyword Args:
        signals: the signals handled (default SIGINT and SIGTERM).

    Examples:
        >>> import os, signal
        >>> stop = StopOnSignal(None)
        >>> with stop:
        ...     os.kill(os.getpid(), signal.SIGTERM)  # the handler records it, nothing raises
        >>> stop.received == signal.SIGTERM
        True
    """

    def __init__(
        self,
        checkpoint: CheckpointHook | None,
        *,
        signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
    ) -> None:
        self.checkpoint = checkpoint
        self.signals = signals
        self.received: int | None = None
        self.saved: Path | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: Trainer | None = None

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # a second signal: stop now, without saving
            raise KeyboardInterrupt
        self.received = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after the current step "
            "(send it again to abort without saving)...",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> StopOnSignal:
        for signum in self.signals:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals stay with their owner
                pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __call__(self, batch: TensorDictBase | None = None) -> None:
        if self.received is None or self._trainer is None:
            return
        if self.checkpoint is not None and self.saved is None:
            self.saved = self.checkpoint.save()
        self._trainer.request_stop(f"received {signal.Signals(self.received).name}")

    def register(self, trainer: Trainer, name: str = "stop_on_signal") -> None:
        self._trainer = trainer
        trainer.register_op("post_steps_log", self)


class EnvStepProgressBar(TrainerHookBase):
    """A progress bar in **env** steps (the unit of the configs and results), showing the
    latest evaluation return and the return of the last finished training episode.

    It replaces the Trainer's own bar (``Trainer(progress_bar=False)``), which counts agent
    steps and shows every logged scalar. The bar starts at the first ``post_steps_log`` call,
    after the initial evaluation, so that its rate (and ETA) is the training's; a resumed run
    starts it where the run stopped.

    Args:
        total_env_steps: the run's budget in env steps.

    Keyword Args:
        frame_to_env_steps: the action repeat.
        evaluator: the run's :class:`PolicyEvaluator`, whose latest return is shown.
        file: the stream (default ``sys.stderr``).

    Examples:
        >>> import io
        >>> bar = EnvStepProgressBar(100, frame_to_env_steps=2, file=io.StringIO())
        >>> bar.update(env_steps=40, train_return=12.5)
        >>> bar.postfix
        'train episode 12.5'
        >>> bar.close()
    """

    def __init__(
        self,
        total_env_steps: int,
        *,
        frame_to_env_steps: int = 1,
        evaluator: PolicyEvaluator | None = None,
        file=None,
    ) -> None:
        self.total_env_steps = total_env_steps
        self.frame_to_env_steps = frame_to_env_steps
        self.evaluator = evaluator
        self.file = file
        self.train_return: float | None = None
        self.postfix = ""
        self._bar = None
        self._trainer: Trainer | None = None

    def update(self, env_steps: int, train_return: float | None = None) -> None:
        """Move the bar to ``env_steps`` and refresh its postfix."""
        from tqdm.auto import tqdm

        if train_return is not None:
            self.train_return = train_return
        if self._bar is None:
            self._bar = tqdm(
                total=self.total_env_steps,
                initial=env_steps,
                unit=" env steps",
                file=self.file if self.file is not None else sys.stderr,
                dynamic_ncols=True,
                smoothing=0.1,
            )
        self._bar.update(env_steps - self._bar.n)
        parts = []
        if self.evaluator is not None and self.evaluator.history:
            parts.append(f"eval return {self.evaluator.history[-1][1]:.1f}")
        if self.train_return is not None:
            parts.append(f"train episode {self.train_return:.1f}")
        self.postfix = ", ".join(parts)
        self._bar.set_postfix_str(self.postfix, refresh=True)

    def __call__(self, batch: TensorDictBase | None = None) -> None:
        train_return = None
        if batch is not None:
            done = batch.get(("next", "done"), None)
            episode_reward = batch.get(("next", "episode_reward"), None)
            if done is not None and episode_reward is not None and done.any():
                train_return = float(episode_reward[done].reshape(-1)[-1])
        self.update(self._trainer.collected_frames * self.frame_to_env_steps, train_return)

    def close(self) -> None:
        """Close the bar (a no-op if it never started)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def register(self, trainer: Trainer, name: str = "env_step_progress_bar") -> None:
        self._trainer = trainer
        trainer.register_op("post_steps_log", self)
