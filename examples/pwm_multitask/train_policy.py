"""Offline multi-task PWM, stage 2: train each task's policy in imagination on a frozen,
pre-trained world model.

    python examples/pwm_multitask/train_policy.py pretrained.checkpoint=$PWD/outputs/pwm_multitask/pretrain/seed0/checkpoint.pt \\
        dataset.root=$PWD/data/mt30_mine tasks=[cartpole-swingup,walker-walk] jobs=2
    python examples/pwm_multitask/train_policy.py pretrained.kind=tdmpc2 \\
        pretrained.checkpoint=/path/to/mt30-48M.pt dataset.root=...   # a TD-MPC2 world model

For each task of ``tasks`` (PWM's Algorithm 1, lines 5-12): start states are observations of
that task's episodes in the dataset; every iteration one actor update through
``policy.batch_size`` (512) imagined rollouts of H = 16 steps with return normalisation, then
8 x 4 critic minibatches on TD(lambda) targets, no target critic
(``PWMOptimizationStepper.policy_step``; the world model is frozen: no world-model update, no
gradient); learning rates decay linearly over the ``policy.iterations`` (10k). Every
``eval.every`` iterations the deterministic policy ``tanh(mu(E(o, e)))`` plays
``eval.episodes`` (10) real episodes of the task in ``make_env(task, task_set=...)`` (padded
observations, the task id, padded actions dropped).

Tasks train in ``jobs`` parallel processes, one torch thread each. Outputs per task in
``<task>/``: ``eval.csv``, ``curve.png``, ``policy.pt`` (actor and critic); for the run:
``results.csv`` (printed at the end; ``warmup_s`` is the time of the first 3 iterations, where
compilation happens, ``s_per_iteration`` the mean time of the others, evaluations excluded). A task whose ``policy.pt`` exists is not trained again,
so a killed run continues with the tasks it had not finished.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from torchrl_pwm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from torchrl_pwm.data import TDMPC2Dataset
from torchrl_pwm.envs import make_env
from torchrl_pwm.modules import ValueEnsemble, make_pwm_actor, make_pwm_policy
from torchrl_pwm.objectives import PWMLoss
from torchrl_pwm.trainers import PWMOptimConfig, PWMOptimizationStepper, evaluate_policy

from utils import load_world_model, plot_curves, write_csv  # examples/pwm_multitask/utils.py

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # examples/run_utils.py
from run_utils import configure_torch, quiet_console

# a task trained by an earlier run of the folder is kept only if these settings are the same
SAME_SETTINGS = ("pretrained", "dataset", "policy", "eval", "seed")
EVAL_COLUMNS = ["iteration", "return_mean", "return_std", "wall_time_s"]
RESULT_COLUMNS = [
    "task", "seed", "final_return", "final_return_std", "best_return", "best_iteration",
    "iterations", "train_s", "eval_s", "warmup_s", "s_per_iteration",
]  # fmt: skip
WARMUP_ITERATIONS = 3  # the first iterations compile (compile.enabled) and warm the allocator


def train_task(cfg: dict[str, Any], task: str, out_dir: str) -> dict[str, Any]:
    """Train and evaluate the policy of one task (runs in a worker process with ``jobs`` > 1);
    returns its row of ``results.csv``."""
    quiet_console()
    configure_torch(cfg)
    torch.manual_seed(cfg["seed"])
    out = Path(out_dir) / task
    device = torch.device(cfg["device"])
    dataset = TDMPC2Dataset(cfg["dataset"]["root"])
    pre = cfg["pretrained"]
    world_model = load_world_model(
        pre["checkpoint"],
        pre["kind"],
        dataset.task_set_name,
        mask_action_inputs=pre["mask_action_inputs"],
    ).to(device)
    world_model.requires_grad_(False)  # frozen: an "offline simulator"

    # -- start states: observations of this task's episodes ---------------------------------
    p = cfg["policy"]
    starts = dataset.make_replay_buffer(
        horizon=1,
        batch_size=p["batch_size"],
        tasks=[task],
        device=device,
        prefetch=0,
        generator=torch.Generator().manual_seed(cfg["seed"]),
    )

    # -- actor, critic and their updates ----------------------------------------------------
    latent = world_model.latent_dim
    actor = make_pwm_actor(
        latent,
        world_model.action_dim,
        hidden_sizes=tuple(p["actor_hidden_sizes"]),
        init_log_std=p["init_log_std"],
        min_log_std=p["min_log_std"],
        device=device,
    )
    critic = ValueEnsemble(
        latent,
        num_critics=p["num_critics"],
        hidden_sizes=tuple(p["critic_hidden_sizes"]),
        device=device,
    )
    loss = PWMLoss(
        world_model,
        actor,
        critic,
        imagination_horizon=p["imagination_horizon"],
        normalize_returns=p["normalize_returns"],
        detach_policy_input=p["detach_policy_input"],
        actor_mean_penalty_coef=p["mean_penalty_coef"],
    )
    loss.make_value_estimator(gamma=p["gamma"], lmbda=p["lmbda"])
    stepper = PWMOptimizationStepper(
        loss,
        horizon=p["imagination_horizon"],
        config=PWMOptimConfig(
            actor_lr=p["actor_lr"],
            critic_lr=p["critic_lr"],
            final_lr=p["final_lr"],
            lr_decay_steps=p["iterations"],
            actor_grad_clip=p["actor_grad_clip"],
            critic_grad_clip=p["critic_grad_clip"],
            critic_passes=p["critic_passes"],
            critic_minibatches=p["critic_minibatches"],
            world_model_updates=0,  # frozen
            compile=cfg["compile"]["enabled"],
            compile_mode=cfg["compile"]["mode"],
        ),
    )

    # -- evaluation in the real task, through the task set's padded interface ---------------
    ev = cfg["eval"]
    env = make_env(
        task,
        task_set=dataset.task_set_name,
        seed=cfg["seed"] + 10_000,
        max_episode_steps=ev["max_episode_steps"],
    )
    policy = make_pwm_policy(world_model, actor)
    history: list[list[float]] = []
    eval_s, t0 = 0.0, time.perf_counter()

    def evaluate(iteration: int) -> None:
        nonlocal eval_s
        t = time.perf_counter()
        returns = evaluate_policy(env, policy, ev["episodes"])
        eval_s += time.perf_counter() - t
        history.append(
            [
                iteration,
                returns.mean().item(),
                returns.std(unbiased=False).item(),
                time.perf_counter() - t0,
            ]
        )
        if cfg["verbose"]:
            print(f"  {task}: iteration {iteration:>6d}: return {history[-1][1]:8.1f}", flush=True)

    warm_at, warm_eval_s, metrics = t0, 0.0, None  # clock and evaluation time after warm-up
    for i in range(p["iterations"]):
        if ev["every"] and i % ev["every"] == 0:
            evaluate(i)
        metrics = stepper.policy_step(starts.sample()[:, 0])
        if i + 1 == min(WARMUP_ITERATIONS, p["iterations"]):
            metrics["loss_actor"].item()  # wait for the device before reading the clock
            warm_at, warm_eval_s = time.perf_counter(), eval_s
    if metrics is not None:
        metrics["loss_actor"].item()
    steady_end, steady_eval_s = time.perf_counter(), eval_s
    evaluate(p["iterations"])
    total_s = time.perf_counter() - t0
    steady_iterations = p["iterations"] - WARMUP_ITERATIONS

    write_csv(out / "eval.csv", EVAL_COLUMNS, history)
    cols = list(zip(*history))
    plot_curves(
        out / "curve.png",
        cols[0],
        {"offline PWM": cols[1]},
        std={"offline PWM": cols[2]},
        xlabel="policy iterations",
        ylabel=f"return ({ev['episodes']} episodes)",
        title=task,
    )
    best = max(history, key=lambda r: r[1])
    result = {
        "task": task,
        "seed": cfg["seed"],
        "final_return": history[-1][1],
        "final_return_std": history[-1][2],
        "best_return": best[1],
        "best_iteration": int(best[0]),
        "iterations": p["iterations"],
        "train_s": total_s - eval_s,
        "eval_s": eval_s,
        # the first iterations (compilation) apart, and the rest per iteration: what a longer
        # run costs per iteration
        "warmup_s": warm_at - t0 - warm_eval_s,
        "s_per_iteration": (steady_end - warm_at - (steady_eval_s - warm_eval_s))
        / steady_iterations
        if steady_iterations > 0
        else float("nan"),
    }
    save_checkpoint(
        {"task": task, "actor": actor.state_dict(), "critic": critic.state_dict(),
         "policy_updates": stepper.steps, "eval_history": history, "result": result,
         "config": json.dumps(cfg)},
        out / "policy.pt",
    )  # fmt: skip
    return result


def _finished(cfg: dict[str, Any], out_dir: Path, task: str) -> dict[str, Any] | None:
    """The result of a task trained by an earlier (killed) run of this folder, if any."""
    path = out_dir / task / "policy.pt"
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
    except CheckpointError:
        return None
    saved = json.loads(state["config"])
    if any(saved[k] != cfg[k] for k in SAME_SETTINGS):
        raise SystemExit(
            f"{path} was trained with other settings (one of {SAME_SETTINGS} differs): use "
            "another run folder (hydra.run.dir=...) for new settings."
        )
    return state["result"]


@hydra.main(version_base="1.3", config_path="", config_name="train_policy")
def main(cfg: DictConfig) -> list[dict[str, Any]]:
    quiet_console()
    out_dir = Path.cwd()
    cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg["dataset"]["root"] = to_absolute_path(cfg["dataset"]["root"])
    cfg["pretrained"]["checkpoint"] = to_absolute_path(cfg["pretrained"]["checkpoint"])
    dataset = TDMPC2Dataset(cfg["dataset"]["root"])
    tasks = cfg["tasks"] or dataset.tasks
    missing = [t for t in tasks if t not in dataset.tasks]
    if missing:
        raise SystemExit(f"No episode of {missing} in {dataset.root} (it has {dataset.tasks}).")
    # a TD-MPC2 checkpoint that cannot be read fails here, once, not in every worker
    try:
        load_world_model(
            cfg["pretrained"]["checkpoint"], cfg["pretrained"]["kind"], dataset.task_set_name
        )
    except (CheckpointError, ValueError, FileNotFoundError, RuntimeError) as err:
        raise SystemExit(f"Cannot load the pre-trained world model: {err}") from err

    results = {t: r for t in tasks if (r := _finished(cfg, out_dir, t)) is not None}
    todo = [t for t in tasks if t not in results]
    if results:
        print(f"Already trained here (skipped): {sorted(results)}", flush=True)
    jobs = max(1, min(cfg["jobs"], len(todo)))
    print(f"Training {len(todo)} policies, {jobs} at a time.", flush=True)
    if jobs == 1:
        for task in todo:
            results[task] = train_task(cfg, task, str(out_dir))
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {t: pool.submit(train_task, cfg, t, str(out_dir)) for t in todo}
            for task, future in futures.items():
                results[task] = future.result()

    rows = [results[t] for t in tasks]
    write_csv(
        out_dir / "results.csv", RESULT_COLUMNS, [[r[c] for c in RESULT_COLUMNS] for r in rows]
    )
    print(f"\nOffline PWM on a frozen world model ({cfg['policy']['iterations']} iterations):")
    print(f"{'task':<24}{'final':>10}{'± std':>9}{'best':>10}{'train min':>11}")
    for r in rows:
        print(
            f"{r['task']:<24}{r['final_return']:>10.1f}{r['final_return_std']:>9.1f}"
            f"{r['best_return']:>10.1f}{r['train_s'] / 60:>11.1f}"
        )
    print(f"results: {out_dir / 'results.csv'}")
    return rows


if __name__ == "__main__":
    main()
