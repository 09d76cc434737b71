"""One training run's bookkeeping, shared by the examples: evaluation, checkpoints, results.

Every example (PWM, and the TorchRL SAC / PPO baselines it is compared with) writes the same
run directory: ``eval.csv`` (``env_steps, return_mean, return_std, wall_time_s``),
``timings.json``, ``learning_curve.png``, TorchRL logs under ``logs/`` and ``checkpoint.pt``.
The helpers here attach the hooks that produce them to a plain ``torchrl.trainers.Trainer``
and write the summary at the end, so that the protocol is identical across algorithms.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from torchrl.envs import EnvBase
from torchrl.record.loggers import Logger, get_logger
from torchrl.trainers import DefaultOptimizationStepper, Trainer

from torchrl_pwm.checkpoint import CheckpointError
from torchrl_pwm.evaluation.plotting import plot_learning_curves, published_references
from torchrl_pwm.trainers.hooks import CheckpointHook, PolicyEvaluator

__all__ = [
    "RunHooks",
    "TimedOptimizationStepper",
    "attach_run",
    "begin_run",
    "check_fresh_run",
    "finish_run",
    "make_logger",
    "register_run_hooks",
]


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

    Examples:
        >>> import tempfile
        >>> type(make_logger("csv", "run", log_dir=tempfile.mkdtemp())).__name__
        'CSVLogger'
    """
    kwargs: dict[str, Any] = {}
    if backend == "wandb":
        kwargs["wandb_kwargs"] = {"mode": mode, "project": project_name}
    return get_logger(backend, str(log_dir), exp_name, **kwargs)


def check_fresh_run(checkpoint_path: str | Path, resume: bool) -> None:
    """Refuse to start over a run that has a checkpoint unless ``resume`` is set.

    Raises:
        FileExistsError: ``checkpoint_path`` exists and ``resume`` is False.

    Examples:
        >>> check_fresh_run("/nonexistent/checkpoint.pt", resume=False)  # nothing there: fine
    """
    path = Path(checkpoint_path)
    if not resume and path.exists():
        raise FileExistsError(
            f"{path} exists: pass resume=true to continue that run, or choose another "
            "hydra.run.dir / env.seed."
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
    """The evaluation and checkpoint hooks of one run (see :func:`register_run_hooks`)."""

    evaluator: PolicyEvaluator
    checkpoint: CheckpointHook | None
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
) -> RunHooks:
    """Attach the project's evaluation protocol and checkpoints to ``trainer``; resume.

    Registers a :class:`~torchrl_pwm.trainers.PolicyEvaluator` (``eval_episodes``
    deterministic episodes every ``eval_every`` **env** steps, rows appended to
    ``run_dir/eval.csv``) and, when ``checkpoint_every`` is set, a
    :class:`~torchrl_pwm.trainers.CheckpointHook` after it. With ``resume=True`` the
    checkpoint is loaded into the trainer (every module registered *before* this call is
    restored, so register the replay buffer and optimisation hooks first).

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

    Raises:
        ValueError: non-positive ``eval_every``, ``eval_episodes`` or ``frame_to_env_steps``;
            ``resume`` without checkpoints.
        torchrl_pwm.checkpoint.CheckpointError: the checkpoint cannot be resumed.
    """
    for name, value in (
        ("eval_every", eval_every),
        ("eval_episodes", eval_episodes),
        ("frame_to_env_steps", frame_to_env_steps),
    ):
        if value is None or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
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
    elif resume:
        raise ValueError("resume=true needs checkpoints (checkpoint.every > 0).")
    return RunHooks(evaluator, checkpoint, run_dir, frame_to_env_steps)


def begin_run(cfg: DictConfig) -> Path:
    """The first step of every example: torch threads (``cfg.threads``) and seed
    (``cfg.env.seed``), and a refusal to start over an existing run.

    Args:
        cfg: an example's Hydra config (``threads``, ``env.seed``, ``checkpoint.path``,
            ``resume``).

    Returns:
        The run directory: the working directory, which Hydra sets to ``hydra.run.dir``.

    Raises:
        SystemExit: the run directory holds a checkpoint and ``resume`` is false (the
            message says what to do).

    Examples:
        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({
        ...     "threads": torch.get_num_threads(), "env": {"seed": 0}, "resume": False,
        ...     "checkpoint": {"path": "/nonexistent/checkpoint.pt"},  # no run there yet
        ... })
        >>> begin_run(cfg) == Path.cwd()
        True
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.env.seed)
    run_dir = Path.cwd()
    try:
        check_fresh_run(run_dir / cfg.checkpoint.path, cfg.resume)
    except FileExistsError as err:
        raise SystemExit(str(err)) from err
    return run_dir


def attach_run(
    trainer: Trainer,
    cfg: DictConfig,
    eval_env: EnvBase,
    policy,
    *,
    run_dir: str | Path,
    frame_to_env_steps: int,
    metadata: Mapping[str, Any],
    check_metadata: tuple[str, ...] = ("task",),
    video_env: EnvBase | None = None,
    episode_metrics: Callable[[list[TensorDictBase]], dict[str, float]] | None = None,
) -> RunHooks:
    """:func:`register_run_hooks` with an example's settings, for a command line.

    Reads ``cfg.logger.eval_every``, ``cfg.logger.eval_episodes``,
    ``cfg.logger.video_every_eval`` (if present), ``cfg.checkpoint.every`` /
    ``cfg.checkpoint.path`` and ``cfg.resume``; stores the whole resolved config in the
    checkpoint's metadata under ``"config"``; turns a bad setting or a checkpoint that cannot
    be resumed into ``SystemExit`` with the reason, and says where a resumed run continues.

    Args:
        trainer: the Trainer, with every hook whose state is checkpointed registered already.
        cfg: the example's Hydra config.
        eval_env: the evaluation environment.
        policy: the policy evaluated.

    Keyword Args:
        run_dir: from :func:`begin_run`.
        frame_to_env_steps: the action repeat.
        metadata: plain values stored in the checkpoint; ``check_metadata`` names those that
            must match to resume.
        video_env, episode_metrics: see :func:`register_run_hooks`.
    """
    metadata = {
        **metadata,
        "config": json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True),
    }
    try:
        hooks = register_run_hooks(
            trainer,
            eval_env,
            policy,
            run_dir=run_dir,
            eval_every=cfg.logger.eval_every,
            eval_episodes=cfg.logger.eval_episodes,
            frame_to_env_steps=frame_to_env_steps,
            checkpoint_every=cfg.checkpoint.every,
            checkpoint_path=cfg.checkpoint.path,
            metadata=metadata,
            resume=cfg.resume,
            check_metadata=check_metadata,
            video_env=video_env,
            video_every_eval=bool(cfg.logger.get("video_every_eval", False)),
            episode_metrics=episode_metrics,
        )
    except CheckpointError as err:
        raise SystemExit(f"Cannot resume: {err}") from err
    except ValueError as err:
        raise SystemExit(f"Bad configuration: {err}") from err
    if cfg.resume:
        print(f"Resumed at {trainer.collected_frames * frame_to_env_steps} env steps.", flush=True)
    return hooks


def finish_run(
    hooks: RunHooks,
    *,
    label: str,
    task: str,
    seed: int,
    total_env_steps: int,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Write ``timings.json`` and ``learning_curve.png`` and print the learning curve.

    ``timings.json`` holds ``timings`` (seconds, e.g. ``{"optimization": 12.0}``, written as
    ``optimization_s``), ``evaluation_s``, ``checkpoint_s``, the remainder
    ``collection_and_overhead_s`` and ``total_s``, the run's wall-clock over all its
    processes (resumed runs included). Its existence marks the run finished.

    Returns:
        ``{"history": [[env_steps, mean, std, wall_s], ...], "timings": {...}}``.
    """
    evaluator, checkpoint = hooks.evaluator, hooks.checkpoint
    total = evaluator.state_dict()["elapsed"]
    split = {f"{k}_s": round(v, 1) for k, v in (timings or {}).items()}
    split["evaluation_s"] = round(evaluator.eval_seconds, 1)
    split["checkpoint_s"] = round(checkpoint.save_seconds, 1) if checkpoint else 0.0
    split["collection_and_overhead_s"] = round(total - sum(split.values()), 1)
    split["total_s"] = round(total, 1)
    (hooks.run_dir / "timings.json").write_text(json.dumps(split, indent=1))

    history = evaluator.history
    print(
        f"\n{label} on {task}: evaluation return (mean ± std over {evaluator.num_episodes} "
        "episodes)"
    )
    for env_steps, mean, std, _ in history:
        print(f"  {int(env_steps):>8d} env steps: {mean:8.1f} ± {std:6.1f}")
    png = plot_learning_curves(
        {label: [hooks.run_dir / "eval.csv"]},
        hooks.run_dir / "learning_curve.png",
        title=f"{task}, seed {seed}",
        references=published_references(task, total_env_steps),
    )
    print(f"wall-clock {total / 60:.1f} min; split: {split}")
    print(f"learning curve: {png}")
    return {"history": history, "timings": split}
