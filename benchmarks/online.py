"""Learning benchmark of online PWM: run ``examples/pwm/train.py`` on tasks x seeds.

Resumable: a finished run (its ``timings.json`` exists) is skipped, an interrupted one
continues from its checkpoint. Each run's evaluation CSV and timings are copied to
``docs/results/online/<task>_seed<k>.{csv,json}`` as soon as it finishes, and
``docs/results/online/<task>.png`` plots mean ± std over the finished seeds with the
published TD-MPC2 / SAC returns at 100k env steps.

    python benchmarks/online.py --tasks cartpole-swingup --seeds 0 --env-steps 100000
    python benchmarks/online.py --tasks cheetah-run --seeds 0 1 2 --env-steps 100000

Extra Hydra overrides for the example follow ``--``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from torchrl_pwm.plotting import plot_learning_curves, published_references, read_eval_csv

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "outputs" / "benchmarks" / "online"
RESULTS = ROOT / "docs" / "results" / "online"


def run(task: str, seed: int, env_steps: int, overrides: list[str]) -> Path:
    run_dir = RUNS / f"{task}_{env_steps}" / f"seed{seed}"
    if (run_dir / "timings.json").exists():
        print(f"[skip] {task} seed {seed}: finished", flush=True)
        return run_dir
    resume = (run_dir / "checkpoint.pt").exists()
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "pwm" / "train.py"),
        f"env.task={task}",
        f"env.seed={seed}",
        f"collector.total_env_steps={env_steps}",
        "logger.progress_bar=false",
        f"resume={'true' if resume else 'false'}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    print(("[resume] " if resume else "[run] ") + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return run_dir


def publish(task: str, env_steps: int, seeds: list[int]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    csvs = []
    for seed in seeds:
        run_dir = RUNS / f"{task}_{env_steps}" / f"seed{seed}"
        if not (run_dir / "timings.json").exists():
            continue
        dst = RESULTS / f"{task}_seed{seed}.csv"
        shutil.copy(run_dir / "eval.csv", dst)
        shutil.copy(run_dir / "timings.json", RESULTS / f"{task}_seed{seed}.timings.json")
        csvs.append(dst)
    if not csvs:
        return
    plot_learning_curves(
        {"PWM (torchrl_pwm)": csvs},
        RESULTS / f"{task}.png",
        title=f"{task}: online PWM",
        references=published_references(task, env_steps),
    )
    finals = [read_eval_csv(c)["return_mean"][-1] for c in csvs]
    print(f"{task}: final returns {finals}", flush=True)


def main() -> None:
    argv = sys.argv[1:]
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["cartpole-swingup"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--env-steps", type=int, default=100_000)
    args = parser.parse_args(argv)
    for task in args.tasks:
        for seed in args.seeds:
            run(task, seed, args.env_steps, overrides)
            publish(task, args.env_steps, args.seeds)
    summary = {
        t: {
            s: json.loads((RESULTS / f"{t}_seed{s}.timings.json").read_text())
            for s in args.seeds
            if (RESULTS / f"{t}_seed{s}.timings.json").exists()
        }
        for t in args.tasks
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
