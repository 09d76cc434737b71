"""Learning benchmark of online PWM: run ``examples/pwm/train.py`` on tasks x seeds.

Resumable: a finished run (its ``timings.json`` exists) is skipped, an interrupted one
continues from its checkpoint. Each run's evaluation CSV and timings are copied to
``docs/results/online/<task>_seed<k>.{csv,json}`` as soon as it finishes, and
``docs/results/online/<task>.png`` plots mean ± std over the finished seeds with the
published TD-MPC2 / SAC returns at 100k env steps.

    python benchmarks/online.py --tasks cartpole-swingup --seeds 0 --env-steps 100000
    python benchmarks/online.py --tasks cheetah-run --seeds 0 1 2 --env-steps 100000

Extra Hydra overrides for the example follow ``--``. Overrides that change the algorithm (not
just threads, checkpoints, evaluation or compilation) need a ``--tag``: the runs then go to
``outputs/benchmarks/online/<task>_<env_steps>_<tag>/`` and their copies and plot to
``docs/results/online/<tag>/``, apart from the defaults'. For example, an update-ratio sweep::

    python benchmarks/online.py --tasks cheetah-run --seeds 0 --tag utd0.4 -- \
        collector.optim_steps_per_batch=4 threads=1 compile.enabled=true
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from torchrl_pwm.evaluation import plot_learning_curves, published_references, read_eval_csv

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "outputs" / "benchmarks" / "online"
RESULTS = ROOT / "docs" / "results" / "online"


def _runs(task: str, env_steps: int, tag: str | None, root: Path = RUNS) -> Path:
    return root / (f"{task}_{env_steps}" + (f"_{tag}" if tag else ""))


def _results(tag: str | None, root: Path = RESULTS) -> Path:
    return root / tag if tag else root


def run(
    task: str,
    seed: int,
    env_steps: int,
    overrides: list[str],
    tag: str | None = None,
    runs_root: Path = RUNS,
) -> Path:
    run_dir = _runs(task, env_steps, tag, runs_root) / f"seed{seed}"
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


def publish(
    task: str,
    env_steps: int,
    seeds: list[int],
    tag: str | None = None,
    runs_root: Path = RUNS,
    results_root: Path = RESULTS,
) -> None:
    results = _results(tag, results_root)
    results.mkdir(parents=True, exist_ok=True)
    csvs = []
    for seed in seeds:
        run_dir = _runs(task, env_steps, tag, runs_root) / f"seed{seed}"
        if not (run_dir / "timings.json").exists():
            continue
        dst = results / f"{task}_seed{seed}.csv"
        shutil.copy(run_dir / "eval.csv", dst)
        shutil.copy(run_dir / "timings.json", results / f"{task}_seed{seed}.timings.json")
        csvs.append(dst)
    if not csvs:
        return
    plot_learning_curves(
        {"PWM (torchrl_pwm)" + (f", {tag}" if tag else ""): csvs},
        results / f"{task}.png",
        title=f"{task}: online PWM" + (f" ({tag})" if tag else ""),
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
    parser.add_argument("--tag", default=None, help="name of a variant (see the module doc)")
    parser.add_argument("--runs-dir", type=Path, default=RUNS)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.tag is not None and not args.tag.replace(".", "").replace("-", "").isalnum():
        parser.error(f"--tag must be letters, digits, '.' and '-', got {args.tag!r}")
    for task in args.tasks:
        for seed in args.seeds:
            run(task, seed, args.env_steps, overrides, args.tag, args.runs_dir)
            publish(task, args.env_steps, args.seeds, args.tag, args.runs_dir, args.results_dir)
    results = _results(args.tag, args.results_dir)
    summary = {
        t: {
            s: json.loads((results / f"{t}_seed{s}.timings.json").read_text())
            for s in args.seeds
            if (results / f"{t}_seed{s}.timings.json").exists()
        }
        for t in args.tasks
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
