"""What the PWM, SAC and PPO examples share around TorchRL's ``Trainer``: a Hydra config read
into :mod:`torchrl_pwm.trainers`' run hooks, a quiet console, and the start, stop and end of a
run (the learning-curve plot and the printed summary).

This is the examples' glue, kept out of the library as TorchRL keeps its own in each
``sota-implementations/*/utils.py``: the library's run helpers take plain arguments, only this
file knows the config fields (``threads``, ``env.seed``, ``resume``, ``logger.*``,
``checkpoint.*``). Each ``train.py`` puts ``examples/`` on ``sys.path`` to import it.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_original_cwd
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from torchrl.envs import EnvBase
from torchrl.trainers import Trainer

from torchrl_pwm.checkpoint import CheckpointError
from torchrl_pwm.envs import UnknownTaskError
from torchrl_pwm.evaluation import plot_learning_curves, published_references
from torchrl_pwm.trainers import (
    EnvStepLogger,
    RunHooks,
    check_fresh_run,
    make_logger,
    register_run_hooks,
    timing_split,
    write_timings,
)

# Written into the run directory before the script starts, not a run's output: Hydra's files,
# and the .lock (plus train.log) with which benchmarks/learning.py holds the directory.
HYDRA_FILES = (".hydra", "*.log", ".lock")


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


def quiet_console() -> None:
    """Show the progress bar, the evaluations and real warnings only.

    Silences, by name, what a user cannot act on: absl's INFO lines (``MUJOCO_GL``, the MuJoCo
    version) and dm_control's ``settotalmass is deprecated`` (its own cheetah model), PyOpenGL's
    ``No OpenGL_accelerate module``, torchrl's INFO lines, and the ``post_loss`` FutureWarning
    that torchrl's own ``ReplayBufferTrainer`` triggers, the kernel timing tables that
    ``torch.compile(mode="max-autotune")`` writes to stderr while it compiles, and torch's
    note that the world-model rollout's compile region has two backward graphs (the last step
    receives its gradient from one consumer, the others from two; harmless). Every other
    warning still shows.
    """
    warnings.filterwarnings(
        "ignore", message="The 'post_loss' hook stage will be replaced", category=FutureWarning
    )
    warnings.filterwarnings(
        "ignore", message="invoke_subgraph traced multiple backward graphs", category=UserWarning
    )
    absl = logging.getLogger("absl")
    absl.setLevel(logging.WARNING)
    absl.addFilter(_DropMessages("'settotalmass' is deprecated"))
    logging.getLogger("OpenGL").setLevel(logging.WARNING)
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    from torch._inductor import config as inductor_config

    inductor_config.autotune_num_choices_displayed = 0
    inductor_config.max_autotune_report_choices_stats = False


def _remove_if_no_output(run_dir: Path) -> None:
    """Delete a run directory that holds nothing but Hydra's files, and its empty parents up to
    the directory the script was started from."""
    if not run_dir.is_dir():
        return
    if any(not any(p.match(pat) for pat in HYDRA_FILES) for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        stop = Path(get_original_cwd()).resolve()
    except ValueError:  # Hydra not initialised
        return
    parent = run_dir.parent
    while parent != stop and stop in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


MATMUL_PRECISIONS = ("highest", "high", "medium")


def configure_torch(cfg: Mapping[str, Any]) -> None:
    """``cfg["threads"]`` torch threads and ``cfg["matmul_precision"]`` for float32 matrix
    products (:func:`torch.set_float32_matmul_precision`).

    ``"medium"`` lets oneDNN run float32 matrix products on a CPU's bfloat16 units (here, an
    AMD EPYC with AVX512-BF16, one thread: 2.3x per product, 1.4-1.7x per compiled update,
    1.47x for the online PWM update; ``docs/results/update_path.md``). On this CPU it keeps
    float32 accuracy: the mean relative error of the benchmark's products against float64 is
    1.8-5.3e-7, against 1.8-2.5e-7 in IEEE float32 (``benchmarks/update_path.py
    --matmul-precision medium`` measures it on yours). On CUDA ``"medium"`` and ``"high"`` allow TF32 (10-bit mantissa);
    ``"highest"`` is strict IEEE float32 everywhere.
    """
    precision = cfg["matmul_precision"]
    if precision not in MATMUL_PRECISIONS:  # torch would only warn and keep its current one
        raise SystemExit(
            f"Bad configuration: matmul_precision must be one of {MATMUL_PRECISIONS}, "
            f"got {precision!r}."
        )
    torch.set_num_threads(cfg["threads"])
    torch.set_float32_matmul_precision(precision)


@contextmanager
def run_directory(cfg: DictConfig) -> Iterator[Path]:
    """The frame of every example's ``main``: yields the run directory (Hydra's
    ``hydra.run.dir``, the working directory).

    On entry: a quiet console, :func:`configure_torch` (threads, float32 matmul precision), the
    seed ``cfg.env.seed``, and
    a refusal of a directory with a previous run's output unless ``cfg.resume`` (see
    :func:`torchrl_pwm.trainers.check_fresh_run`). On a failed start (a bad setting, an
    unknown task, Ctrl-C before training) the error is one line without a traceback, and a run
    directory left with nothing but Hydra's files is deleted.
    """
    quiet_console()
    configure_torch(cfg)
    torch.manual_seed(cfg.env.seed)
    run_dir = Path.cwd()
    try:
        try:
            check_fresh_run(
                run_dir, cfg.resume, checkpoint_name=cfg.checkpoint.path, ignore=HYDRA_FILES
            )
        except (FileExistsError, FileNotFoundError) as err:
            raise SystemExit(str(err)) from err
        try:
            yield run_dir
        except UnknownTaskError as err:
            raise SystemExit(str(err)) from err
        except KeyboardInterrupt as err:
            raise SystemExit(
                "Interrupted before a checkpoint was written: nothing to resume."
            ) from err
    except BaseException:
        _remove_if_no_output(run_dir)
        raise


def make_run_logger(cfg: DictConfig, frame_to_env_steps: int) -> EnvStepLogger:
    """The TorchRL logger of ``cfg.logger`` (``backend``, ``exp_name``, ``project_name``,
    ``mode``), logging at env steps; a missing optional backend exits with the ``pip install``
    line that adds it."""
    log_cfg = cfg.logger
    try:
        logger = make_logger(
            log_cfg.backend, log_cfg.exp_name, project_name=log_cfg.project_name, mode=log_cfg.mode
        )
    except ImportError as err:
        raise SystemExit(str(err)) from err
    return EnvStepLogger(logger, frame_to_env_steps)


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
    """:func:`torchrl_pwm.trainers.register_run_hooks` with an example's settings.

    Reads ``cfg.logger.eval_every``, ``eval_episodes``, ``progress_bar`` and
    ``video_every_eval`` (if present), ``cfg.checkpoint.every`` / ``path`` and ``cfg.resume``;
    stores the whole resolved config in the checkpoint's metadata under ``"config"``; turns a
    bad setting or a checkpoint that cannot be resumed into a one-line exit, and says where a
    resumed run continues. Build the ``Trainer`` with ``progress_bar=False``: the bar shown is
    :class:`torchrl_pwm.trainers.EnvStepProgressBar`.
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
            progress_bar=cfg.logger.progress_bar,
        )
    except CheckpointError as err:
        raise SystemExit(f"Cannot resume: {err}") from err
    except ValueError as err:
        raise SystemExit(f"Bad configuration: {err}") from err
    if cfg.resume:
        print(f"Resumed at {trainer.collected_frames * frame_to_env_steps} env steps.", flush=True)
    return hooks


def resume_command() -> str:
    """This script's command line with ``resume=true``."""
    args = [a for a in sys.argv[1:] if not a.startswith("resume=")]
    return shlex.join(["python", sys.argv[0], *args, "resume=true"])


def train(
    trainer: Trainer,
    hooks: RunHooks,
    timings: Callable[[], dict[str, float]] | None = None,
) -> None:
    """``trainer.train()``, stopping cleanly on Ctrl-C / SIGTERM: the step in progress
    finishes, a checkpoint is written, and the script exits (status 128 + the signal number)
    with one line saying how to resume, after the wall-clock split so far
    (:func:`~torchrl_pwm.trainers.timing_split` of ``timings()``). A resumed run that had
    finished trains nothing."""
    env_steps = trainer.collected_frames * hooks.frame_to_env_steps
    if trainer.collected_frames >= trainer.total_frames:
        print(f"The run had finished ({env_steps} env steps): nothing more to train.", flush=True)
        trainer.collector.shutdown()
        return
    try:
        with hooks.stop:
            trainer.train()
    finally:
        if hooks.progress is not None:
            hooks.progress.close()
    if hooks.stop.received is None:
        return
    env_steps = trainer.collected_frames * hooks.frame_to_env_steps
    if hooks.stop.saved is not None:
        message = (
            f"Stopped at {env_steps} env steps; checkpoint written to {hooks.stop.saved}. "
            f"Resume with: {resume_command()}"
        )
    else:
        message = f"Stopped at {env_steps} env steps; no checkpoint (checkpoint.every is off)."
    split = timing_split(hooks, timings() if timings is not None else None)
    print(f"wall-clock so far {split['total_s'] / 60:.1f} min; split: {split}", flush=True)
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(128 + hooks.stop.received)


def finish_run(
    hooks: RunHooks,
    *,
    label: str,
    task: str,
    seed: int,
    total_env_steps: int,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Write ``timings.json`` (:func:`torchrl_pwm.trainers.write_timings`) and
    ``learning_curve.png``, and print the learning curve.

    Returns:
        ``{"history": [[env_steps, mean, std, wall_s], ...], "timings": {...}}``.
    """
    split = write_timings(hooks, timings)
    evaluator = hooks.evaluator
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
    print(f"wall-clock {split['total_s'] / 60:.1f} min; split: {split}")
    print(f"learning curve: {png}")
    return {"history": history, "timings": split}
