"""Offline multi-task PWM, stage 1: pre-train one world model on a multi-task dataset.

    python examples/pwm_multitask/pretrain.py dataset.root=$PWD/data/mt30_mine
    python examples/pwm_multitask/pretrain.py dataset.root=... resume=true   # continue a killed run
    torchrun --standalone --nproc_per_node=2 examples/pwm_multitask/pretrain.py dataset.root=...

PWM's Algorithm 1 starts here: a ``TDMPC2WorldModel`` with task embeddings over the dataset's
task set (``mt30`` / ``mt80``), trained with ``TDMPC2ModelLoss`` at PWM's settings (H = 16,
rho = 0.99) and TD-MPC2's optimiser (Adam 3e-4, encoder lr x0.3, grad clip 20) on ``[B, H]``
slices of a ``TDMPC2Dataset`` (converted first from ``dataset.chunks`` if ``dataset.root``
holds no dataset yet). The update is ``WorldModelOptimizationStepper.world_model_step``.

``world_model.value_term=true`` adds TD-MPC2's value term, which shaped TD-MPC2's published
world models: the Q ensemble trained on two-hot TD targets from soft-updated target Qs and
the policy prior (its gradient reaches the encoder and dynamics), and the policy prior
trained by its own Adam (``TDMPC2ModelLoss(value_term=True)``); both heads are saved in
the checkpoint, and the policy stage ignores them.

Under ``torchrun`` the world-model loss is wrapped in PyTorch's ``DistributedDataParallel``
(gloo on CPU, NCCL on CUDA): every rank samples its own ``batch_size / world_size`` slices
with its own generator, DDP averages the gradients, so the step is that of the global batch.
Rank 0 writes the checkpoint (with every rank's sampler state) and the outputs.

Outputs in the run folder: ``checkpoint.pt`` (every ``checkpoint.every`` steps and at the end;
``resume=true`` continues bit-identically from it, target Qs and running Q scale included),
``losses.csv`` (with ``loss_value`` and ``loss_pi`` under the value term), ``losses.png``,
``summary.json``.
"""

from __future__ import annotations

import glob
import json
import sys
import time
from pathlib import Path

import hydra
import torch
import torch.distributed as dist
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from torchrl_pwm.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state_dict_checked,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from torchrl_pwm.data import TDMPC2Dataset
from torchrl_pwm.modules import TDMPC2WorldModel
from torchrl_pwm.trainers import StopOnSignal, check_fresh_run

from utils import (  # examples/pwm_multitask/utils.py
    WORLD_MODEL_KIND,
    barrier,
    init_distributed,
    make_pretrain_stepper,
    parameters_in_sync,
    plot_curves,
    renormalise_task_embeddings,
    shard_generator,
    value_discount,
    world_model_kwargs,
    write_csv,
)

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # examples/run_utils.py
from run_utils import HYDRA_FILES, configure_torch, quiet_console

LOSS_COLUMNS = ["step", "samples", "loss_consistency", "loss_reward", "grad_norm", "wall_s"]
VALUE_COLUMNS = ["loss_value", "loss_pi", "grad_norm_policy"]  # before wall_s, value term only


def open_dataset(cfg: DictConfig, rank: int) -> TDMPC2Dataset:
    """The dataset at ``dataset.root``, converted first (by rank 0) from ``dataset.chunks``
    if the folder holds none."""
    root = Path(to_absolute_path(cfg.dataset.root))
    if not (root / "dataset.json").is_file() and cfg.dataset.chunks:
        if rank == 0:
            pattern = to_absolute_path(cfg.dataset.chunks)
            files = sorted(glob.glob(pattern))
            if not files:
                raise SystemExit(f"dataset.chunks={pattern} matches no file.")
            TDMPC2Dataset.convert(
                files, root, task_set=cfg.dataset.task_set, progress=cfg.logger.progress_bar
            )
        barrier()
    return TDMPC2Dataset(root)


@hydra.main(version_base="1.3", config_path="", config_name="config")
def main(cfg: DictConfig) -> dict:
    quiet_console()
    configure_torch(cfg)
    rank, world_size, device = init_distributed(cfg.device)
    try:
        return run(cfg, Path.cwd(), rank, world_size, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(cfg: DictConfig, run_dir: Path, rank: int, world_size: int, device: torch.device) -> dict:
    checkpoint_path = run_dir / cfg.checkpoint.path
    try:
        check_fresh_run(
            run_dir, cfg.resume, checkpoint_name=cfg.checkpoint.path, ignore=HYDRA_FILES
        )
    except (FileExistsError, FileNotFoundError) as err:
        raise SystemExit(str(err)) from err
    barrier()  # every rank checked before rank 0 writes anything
    if cfg.optim.batch_size % world_size:
        raise SystemExit(
            f"optim.batch_size={cfg.optim.batch_size} is not a multiple of {world_size}."
        )

    # -- data: each rank its own shard of slices ---------------------------------------------
    dataset = open_dataset(cfg, rank)
    generator = shard_generator(cfg.seed, rank)
    replay_buffer = dataset.make_replay_buffer(
        horizon=cfg.loss.horizon,
        batch_size=cfg.optim.batch_size // world_size,
        tasks=cfg.dataset.tasks,
        device=device,
        prefetch=cfg.dataset.prefetch,  # >0 draws ahead: resuming is then not bit-identical
        generator=generator,
    )

    trained_tasks = dataset.tasks if cfg.dataset.tasks is None else list(cfg.dataset.tasks)

    # -- world model and its update ----------------------------------------------------------
    torch.manual_seed(cfg.seed)  # the same initial weights everywhere (DDP broadcasts rank 0's)
    kwargs = world_model_kwargs(cfg, dataset)
    world_model = TDMPC2WorldModel(**kwargs).to(device)
    stepper = make_pretrain_stepper(
        cfg, world_model, device, distributed=world_size > 1, discount=value_discount(cfg, dataset)
    )
    keys = ["loss_consistency", "loss_reward", "grad_norm_world_model"]
    columns = LOSS_COLUMNS
    if cfg.world_model.value_term:
        keys += VALUE_COLUMNS
        columns = [*LOSS_COLUMNS[:-1], *VALUE_COLUMNS, LOSS_COLUMNS[-1]]

    # -- resume ------------------------------------------------------------------------------
    step, history, elapsed = 0, [], 0.0
    if cfg.resume:
        try:
            state = load_checkpoint(checkpoint_path)
            if state.get("kind") != WORLD_MODEL_KIND:
                raise CheckpointError(f"{checkpoint_path} is not a pretrain.py checkpoint.")
            if state["world_size"] != world_size:
                raise CheckpointError(
                    f"{checkpoint_path} was written by {state['world_size']} process(es), this "
                    f"run has {world_size} (each rank's sampler state is saved): resume with "
                    f"{state['world_size']}."
                )
            load_state_dict_checked(world_model, state["world_model"], "world model")
        except CheckpointError as err:
            raise SystemExit(f"Cannot resume: {err}") from err
        stepper.load_state_dict(state["stepper"])
        generator.set_state(state["generators"][rank])
        set_rng_state(state["rng"][rank])
        step, history, elapsed = state["step"], state["history"], state["wall_s"]
        if rank == 0:
            print(f"Resumed at step {step}.", flush=True)

    def checkpoint() -> None:
        if dist.is_initialized():
            generators = [None] * world_size
            dist.all_gather_object(generators, generator.get_state())
            rngs = [None] * world_size
            dist.all_gather_object(rngs, rng_state())
        else:
            generators, rngs = [generator.get_state()], [rng_state()]
        if rank == 0:
            save_checkpoint(
                {
                    "kind": WORLD_MODEL_KIND,
                    "task_set": dataset.task_set_name,
                    "tasks": trained_tasks,
                    "world_model_kwargs": kwargs,
                    "world_model": world_model.state_dict(),
                    "stepper": stepper.state_dict(),
                    "step": step,
                    "history": history,
                    "wall_s": elapsed + time.perf_counter() - start_time,
                    "world_size": world_size,
                    "generators": generators,
                    "rng": rngs,
                    "config": json.dumps(OmegaConf.to_container(cfg, resolve=True)),
                },
                checkpoint_path,
            )
        barrier()

    # -- train -------------------------------------------------------------------------------
    total = cfg.optim.steps
    batch = cfg.optim.batch_size
    log_every = cfg.logger.log_every
    start_time = time.perf_counter()
    bar = tqdm(
        total=total, initial=step, unit="step", desc="pre-training",
        disable=rank != 0 or not cfg.logger.progress_bar, dynamic_ncols=True,
    )  # fmt: skip
    sums = torch.zeros(len(keys), device=device)  # the losses' sums since the last row
    since_log = 0
    stopped = None
    with StopOnSignal(None) as stop:
        while step < total:
            renormalise_task_embeddings(world_model)  # identical replicas under DDP
            metrics = stepper.world_model_step(replay_buffer.sample())
            sums += torch.stack([metrics[k] for k in keys])
            step += 1
            since_log += 1
            bar.update(1)
            if since_log == log_every or step == total:
                if dist.is_initialized():
                    dist.all_reduce(sums)
                    sums /= world_size  # the loss of the global batch: the ranks' mean
                means = (sums / since_log).tolist()
                wall = elapsed + time.perf_counter() - start_time
                history.append([step, step * batch, *means, wall])
                bar.set_postfix(consistency=f"{means[0]:.4f}", reward=f"{means[1]:.4f}")
                sums.zero_()
                since_log = 0
            flag = torch.tensor(float(stop.received is not None), device=device)
            if dist.is_initialized():
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stopping = bool(flag.item())  # every rank stops at the same step
            if stopping or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0):
                checkpoint()
            if stopping:
                stopped = stop.received or 15
                break
    bar.close()
    if step == total and (not cfg.checkpoint.every or step % cfg.checkpoint.every):
        checkpoint()
    if stopped is not None:
        if rank == 0:
            print(
                f"Stopped at step {step}; checkpoint written to {checkpoint_path}. Resume with "
                "the same command and resume=true.",
                file=sys.stderr,
                flush=True,
            )
        raise SystemExit(128 + stopped)

    # -- outputs -----------------------------------------------------------------------------
    drift = parameters_in_sync(world_model)
    wall = elapsed + time.perf_counter() - start_time
    summary = {
        "steps": step,
        "samples": step * batch,
        "world_size": world_size,
        "replicas_max_abs_diff": drift,
        "wall_s": wall,
        "samples_per_s": (step * batch) / wall if wall else None,
        "final": dict(zip(columns, history[-1])) if history else None,
        "skipped_updates": stepper.skipped_steps,
        "world_model_parameters": world_model.num_parameters(),
    }
    if rank == 0:
        write_csv(run_dir / "losses.csv", columns, history)
        if history:
            cols = dict(zip(columns, zip(*history)))
            curves = {"consistency (x20)": cols["loss_consistency"]}
            curves["reward CE (x0.1)"] = cols["loss_reward"]
            if "loss_value" in cols:
                curves["Q-ensemble CE (x0.1)"] = cols["loss_value"]
            plot_curves(
                run_dir / "losses.png",
                cols["step"],
                curves,
                xlabel="world-model updates",
                ylabel="loss",
                title=f"pre-training on {dataset.task_set_name} ({len(dataset.tasks)} tasks)",
                log_y=True,
            )
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print(
            f"pre-trained {step} steps ({step * batch} slices of {cfg.loss.horizon}) in "
            f"{wall / 60:.1f} min; final losses: "
            + (f"consistency {history[-1][2]:.4f}, reward {history[-1][3]:.4f}" if history else "-")
        )
        print(f"checkpoint: {checkpoint_path}\nloss curves: {run_dir / 'losses.png'}")
    if drift != 0.0:
        raise RuntimeError(f"DDP replicas differ (max |diff| {drift}): a bug, please report it.")
    return summary


if __name__ == "__main__":
    main()
