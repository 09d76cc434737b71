"""One training run's bookkeeping: evaluation, checkpoints, a clean stop, progress, timings.

Every example (PWM, and the TorchRL SAC / PPO baselines it is compared with) writes the same
run directory: ``eval.csv`` (``env_steps, return_mean, return_std, wall_time_s``),
``timings.json``, TorchRL logs under ``logs/`` and ``checkpoint.pt``. The helpers here attach
the hooks that produce them to a plain ``torchrl.trainers.Trainer``, so that the protocol is
identical across algorithms. They take plain arguments: reading a config, plotting and console
output belong to the scripts (``examples/run_utils.py``).
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensordict import TensorDictBase
from torchrl.envs import EnvBase
from torchrl.record.loggers import Logger, get_logger
from torchrl.trainers import DefaultOptimizationStepper, Trainer

from torchrl_pwm.trainers.hooks import (
    CheckpointHook,
    EnvStepProgressBar,
    PolicyEvaluator,
    StopOnSignal,
)

__all__ = [
    "RunHooks",
    "TimedOptimizationStepper",
    "check_fresh_run",
    "make_logger",
    "register_run_hooks",
    "timing_split",
    "write_timings",
]

# Logger backends that need an optional dependency: backend -> (import name, extra).
_OPTIONAL_BACKENDS = {"wandb": ("wandb", "wandb"), "tensorboard": ("tensorboard", "tensorboard")}


def make_logger(
    backend: str,
    exp_name: str,
    *,
    log_dir: str | Path = "logs",
    project_name: str = "torchrl_pwm",
    mode: str = "offline",
) -> Logger:
    """A TorchRL logger (``csv``, ``tensorboard`` or ``wandb``, offline unless ``mode``
    says otherwise).

    Raises:
        ImportError: the backend's package is not installed; the message names the extra that
            installs it (``pip install -e ".[wandb]"``).

    Examples:
        >>> import tempfile
        >>> type(make_logger("csv", "run", log_dir=tempfile.mkdtemp())).__name__
        'CSVLogger'
    """
    kwargs: dict[str, Any] = {}
    if backend == "wandb":
        kwargs["wandb_kwargs"] = {"mode": mode, "project": project_name}
    try:
        return get_logger(backend, str(log_dir), exp_name, **kwargs)
    except ImportError as err:
        if backend not in _OPTIONAL_BACKENDS:
            raise
        package, extra = _OPTIONAL_BACKENDS[backend]
        raise ImportError(
            f"The {backend!r} logger backend needs the {package} package, which is not "
            f'installed: pip install -e ".[{extra}]" (from the repository) or pip install '
            f"{package}. The csv backend needs nothing more."
        ) from err


def check_fresh_run(
    run_dir: str | Path,
    resume: bool,
    *,
    checkpoint_name: str = "checkpoint.pt",
    ignore: Sequence[str] = (".hydra", "*.log", ".lock"),
) -> None:
    """Refuse a run directory that holds a previous run's output, unless resuming it whole.

    A new run (``resume=False``) needs a directory with nothing in it but names matching
    ``ignore`` (Hydra's own ``.hydra/`` and log file, written before the script starts, and
    the ``.lock`` in which ``benchmarks/learning.py`` names the process it started): a new
    run never appends to an old one's files. A resumed run needs the checkpoint, from which
    every output is continued (``eval.csv`` is rewritten from the checkpointed history).

    Raises:
        FileExistsError: a new run over a directory with output; the message lists it.
        FileNotFoundError: ``resume`` without a checkpoint in ``run_dir``.

    Examples:
        >>> import tempfile
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> check_fresh_run(run_dir, resume=False)  # empty: fine
        >>> _ = (run_dir / "eval.csv").write_text("env_steps")
        >>> check_fresh_run(run_dir, resume=False)
        Traceback (most recent call last):
        ...
        FileExistsError: ... holds a previous run's output (eval.csv): ...
    """
    run_dir = Path(run_dir)
    checkpoint = run_dir / checkpoint_name
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(
                f"Nothing to resume: no checkpoint at {checkpoint}. Start a new run "
                "(without resume=true) in an empty directory."
            )
        return
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    output = [e for e in entries if not any(fnmatch.fnmatch(e, pat) for pat in ignore)]
    if output:
        what = (
            "pass resume=true to continue that run, or choose" if checkpoint.exists() else "choose"
        )
        raise FileExistsError(
            f"{run_dir} holds a previous run's output ({', '.join(output)}): {what} another "
            "hydra.run.dir / env.seed, or delete the directory."
        )


class TimedOptimizationStepper(DefaultOptimizationStepper):
    """TorchRL's :class:`~torchrl.trainers.DefaultOptimizationStepper` (sum of the ``loss*``
    entries, one backward, one ``trainer.optimizer`` step) that also counts its steps and
    their wall-clock, for ``timings.json``.

    Examples:
        >>> stepper = TimedOptimizationStepper()
        >>> stepper.steps, stepper.seconds
        (0, 0.0)
    """

    def __init__(self, loss_components: list[str] | None = None) -> None:
        super().__init__(loss_components)
        self.steps = 0
        self.seconds = 0.0

    def step(self, trainer: Trainer, sub_batch: TensorDictBase) -> TensorDictBase:
        t0 = time.perf_counter()
        out = super().step(trainer, sub_batch).detach()
        self.seconds += time.perf_counter() - t0
        self.steps += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = state_dict["steps"]
        self.seconds = state_dict["seconds"]


@dataclass
class RunHooks:
    """The hooks of one run (see :func:`register_run_hooks`): evaluation, checkpoints (or
    ``None``), the clean stop on SIGINT / SIGTERM and the progress bar (or ``None``)."""

    evaluator: PolicyEvaluator
    checkpoint: CheckpointHook | None
    stop: StopOnSignal
    progress: EnvStepProgressBar | None
    run_dir: Path
    frame_to_env_steps: int


def register_run_hooks(
    trainer: Trainer,
    eval_env: EnvBase,
    policy,
    *,
    run_dir: str | Path,
    eval_every: int,
    eval_episodes: int,
    frame_to_env_steps: int,
    checkpoint_every: int | None,
    checkpoint_path: str = "checkpoint.pt",
    metadata: dict[str, Any] | None = None,
    resume: bool = False,
    check_metadata: tuple[str, ...] = ("task",),
    video_env: EnvBase | None = None,
    video_every_eval: bool = False,
    episode_metrics: Callable[[list[TensorDictBase]], dict[str, float]] | None = None,
    progress_bar: bool = False,
) -> RunHooks:
    """Attach the project's evaluation protocol, checkpoints, clean stop and progress bar to
    ``trainer``; resume.

    Registers, in this order at the ``post_steps_log`` stage: a
    :class:`~torchrl_pwm.trainers.PolicyEvaluator` (``eval_episodes`` deterministic episodes
    every ``eval_every`` **env** steps, rows appended to ``run_dir/eval.csv``); when
    ``checkpoint_every`` is set, a :class:`~torchrl_pwm.trainers.CheckpointHook`; with
    ``progress_bar``, an :class:`~torchrl_pwm.trainers.EnvStepProgressBar` (build the
    ``Trainer`` with ``progress_bar=False``); and a :class:`~torchrl_pwm.trainers.StopOnSignal`
    (enter ``hooks.stop`` around ``trainer.train()`` to checkpoint and stop on Ctrl-C). With
    ``resume=True`` the checkpoint is loaded into the trainer (every module registered
    *before* this call is restored, so register the replay buffer and optimisation hooks
    first).

    Args:
        trainer: a ``torchrl.trainers.Trainer`` with its other hooks registered.
        eval_env: the evaluation environment (seeded apart from the training one).
        policy: the policy evaluated; ``ExplorationType.DETERMINISTIC`` is set around it.

    Keyword Args:
        run_dir: where ``eval.csv`` and the checkpoint go.
        eval_every: env steps between evaluations.
        eval_episodes: episodes per evaluation.
        frame_to_env_steps: the action repeat.
        checkpoint_every: env steps between checkpoints; ``None`` or 0: no checkpoints.
        checkpoint_path: checkpoint file name inside ``run_dir``.
        metadata: plain values stored in the checkpoint (e.g. the task and config).
        resume: load the checkpoint now.
        check_metadata: metadata keys that must match the checkpoint's to resume.
        video_env: a pixel-rendering env: a GIF of one episode goes to ``run_dir/videos/`` at
            the final evaluation (see :class:`~torchrl_pwm.trainers.PolicyEvaluator`).
        video_every_eval: record a GIF at every evaluation.
        episode_metrics: more scalars computed from each evaluation's episodes (see
            :class:`~torchrl_pwm.trainers.PolicyEvaluator`).
        progress_bar: show an :class:`~torchrl_pwm.trainers.EnvStepProgressBar`.

    Raises:
        ValueError: non-positive ``eval_every``, ``eval_episodes`` or ``frame_to_env_steps``;
            ``resume`` without checkpoints.
        torchrl_pwm.checkpoint.CheckpointError: the checkpoint cannot be resumed.

    Examples:
        >>> import tempfile, torch
        >>> from torchrl.collectors import Collector
        >>> from torchrl_pwm.envs import make_env
        >>> env = make_env("cartpole-swingup", max_episode_steps=4)
        >>> collector = Collector(env, None, frames_per_batch=4, total_frames=8)
        >>> trainer = Trainer(collector=collector, total_frames=8, frame_skip=1,
        ...                   optim_steps_per_batch=0, loss_module=torch.nn.Linear(1, 1),
        ...                   optimizer=None, progress_bar=False)
        >>> hooks = register_run_hooks(trainer, env, None, run_dir=tempfile.mkdtemp(),
        ...     eval_every=8, eval_episodes=1, frame_to_env_steps=2, checkpoint_every=8)
        >>> with hooks.stop:
        ...     trainer.train()
        >>> # evaluations and checkpoints every 8 env steps (4 frames): at 8 and 16 env steps
        >>> [int(row[0]) for row in hooks.evaluator.history], hooks.checkpoint.saves
        ([8, 16], 2)
    """
    for name, value in (
        ("eval_every", eval_every),
        ("eval_episodes", eval_episodes),
        ("frame_to_env_steps", frame_to_env_steps),
    ):
        if value is None or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if resume and not checkpoint_every:
        raise ValueError("resume=true needs checkpoints (checkpoint.every > 0).")
    run_dir = Path(run_dir)
    evaluator = PolicyEvaluator(
        eval_env,
        policy,
        interval=max(eval_every // frame_to_env_steps, 1),
        num_episodes=eval_episodes,
        frame_to_env_steps=frame_to_env_steps,
        csv_path=run_dir / "eval.csv",
        video_env=video_env,
        video_dir=run_dir / "videos",
        video_every_eval=video_every_eval,
        episode_metrics=episode_metrics,
    )
    evaluator.register(trainer)
    checkpoint = None
    if checkpoint_every:
        checkpoint = CheckpointHook(
            run_dir / checkpoint_path,
            interval=max(checkpoint_every // frame_to_env_steps, 1),
            metadata=metadata,
        )
        checkpoint.register(trainer)
        if resume:
            checkpoint.resume(check_metadata=check_metadata)
    progress = None
    if progress_bar:
        progress = EnvStepProgressBar(
            trainer.total_frames * frame_to_env_steps,
            frame_to_env_steps=frame_to_env_steps,
            evaluator=evaluator,
        )
        progress.register(trainer)
    stop = StopOnSignal(checkpoint)
    stop.register(trainer)
    return RunHooks(evaluator, checkpoint, stop, progress, run_dir, frame_to_env_steps)


def timing_split(hooks: RunHooks, timings: dict[str, float] | None = None) -> dict[str, float]:
    """Where a run's wall-clock went so far, in seconds: ``timings`` (e.g.
    ``{"optimization": 12.0}``, keyed ``optimization_s``), ``evaluation_s``, ``checkpoint_s``,
    the remainder ``collection_and_overhead_s`` and ``total_s``, the run's wall-clock over all
    its processes (resumed runs included).

    Returns:
        ``{"<name>_s": seconds, ..., "total_s": seconds}``; the parts sum to ``total_s``.
    """
    evaluator, checkpoint = hooks.evaluator, hooks.checkpoint
    total = evaluator.state_dict()["elapsed"]
    split = {f"{k}_s": round(v, 1) for k, v in (timings or {}).items()}
    split["evaluation_s"] = round(evaluator.eval_seconds, 1)
    split["checkpoint_s"] = round(checkpoint.save_seconds, 1) if checkpoint else 0.0
    split["collection_and_overhead_s"] = round(total - sum(split.values()), 1)
    split["total_s"] = round(total, 1)
    return split


def write_timings(hooks: RunHooks, timings: dict[str, float] | None = None) -> dict[str, float]:
    """Write :func:`timing_split` to ``run_dir/timings.json``; its existence marks the run
    finished.

    Returns:
        The dictionary written.
    """
    split = timing_split(hooks, timings)
    (hooks.run_dir / "timings.json").write_text(json.dumps(split, indent=1))
    return split
