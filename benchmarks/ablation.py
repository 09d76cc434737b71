"""Ablation of online PWM's recipe on one task: each change alone, and together, with the
world model's calibration (is the actor exploiting its model?).

Each arm is ``examples/pwm/train.py`` with the Hydra overrides of :data:`ARMS`, on the same
task, seeds, budget and evaluation protocol. Runs go to
``outputs/benchmarks/ablation/<arm>/pwm/<task>_<budget>/seed<k>/``, the layout of
``benchmarks/learning.py``, whose planner, command line and run lock this script uses: a
finished run is skipped, an interrupted one resumes from its checkpoint, a run another
process holds is left alone. Run folders do not outlive their machine, so the committed
``ablation.csv`` is the record: its rows are kept for the runs that are not here, and a run
it lists as finished is not rerun (delete its row to rerun it). Results:
``docs/results/ablation.csv`` (one row per run) and ``docs/results/ablation.md`` (mean over
seeds per arm). Calibration columns are read from the
metrics every PWM evaluation logs (``eval/model_*``, ``eval/value_ratio``) and the training
scalar ``action_saturation``.

    python benchmarks/ablation.py --jobs 2                      # walker-walk, seed 0, 100k
    python benchmarks/ablation.py --arms paper penalty --seeds 10 --jobs 2
    python benchmarks/ablation.py --markdown                    # only rebuild the tables

Extra Hydra overrides for every run follow ``--`` (e.g. ``-- compile.enabled=false``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shlex
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import learning  # benchmarks/learning.py: plan, command, execute

from _common import SIXTEEN_STEP  # benchmarks/_common.py

ROOT = learning.ROOT
RUNS = ROOT / "outputs" / "benchmarks" / "ablation"
RESULTS = ROOT / "docs" / "results"


def _but(overrides: Sequence[str], *changes: str) -> list[str]:
    """``overrides`` with each ``key=value`` of ``changes`` replacing the same key's (Hydra
    refuses a key given twice), or appended."""
    keys = {c.split("=", 1)[0] for c in changes}
    return [o for o in overrides if o.split("=", 1)[0] not in keys] + list(changes)


CHEAP = [
    "actor.mean_penalty_coef=0.0",
    "world_model.batch_size=128",
    "world_model.horizon=8",
    "actor.imagination_horizon=8",
]

#: arm -> (what it changes, Hydra overrides). ``paper`` is the baseline: PWM's actor and
#: horizons as published, in the 16-step recipe (``_common.SIXTEEN_STEP``, 256 slices) at the
#: example's online settings otherwise (update ratio, network sizes). Every other single-change
#: arm adds one change to it; ``all`` combines the cheap ones; ``cheap`` is the example's
#: defaults since 2026-11-30, spelled out so that a later default change leaves it alone, and
#: each ``cheap-*`` arm undoes one of its changes.
ARMS: dict[str, tuple[str, list[str]]] = {
    "paper": (
        "PWM's actor as published (no mean penalty)",
        [*SIXTEEN_STEP, "actor.mean_penalty_coef=0.0"],
    ),
    "penalty": (
        "+ pre-tanh mean penalty 1e-3 (the example's default until 2026-11-30, morning)",
        [*SIXTEEN_STEP, "actor.mean_penalty_coef=1e-3", "actor.mean_penalty_threshold=0.0"],
    ),
    "hinge": (
        "+ mean penalty 1e-3 only beyond a pre-tanh mean of ±3 "
        "(the example's default until 2026-11-30, evening)",
        [*SIXTEEN_STEP, "actor.mean_penalty_coef=1e-3", "actor.mean_penalty_threshold=3.0"],
    ),
    "target": (
        "+ actor bootstraps from the target critic (SHAC)",
        [*SIXTEEN_STEP, "actor.mean_penalty_coef=0.0", "actor.bootstrap=target"],
    ),
    "std-floor": (
        "+ exploration floor: actor std >= 0.5",
        [
            *SIXTEEN_STEP,
            "actor.mean_penalty_coef=0.0",
            "actor.init_log_std=-0.693",
            "actor.min_log_std=-0.693",
        ],
    ),
    "disagreement": (
        "+ penalty on reward-head disagreement (5 heads, c = 1)",
        [
            *SIXTEEN_STEP,
            "actor.mean_penalty_coef=0.0",
            "world_model.reward_ensemble=5",
            "actor.disagreement_coef=1.0",
        ],
    ),
    "wm-1M": (
        "+ TD-MPC2's 1M world model instead of the 0.3M one",
        [*SIXTEEN_STEP, "actor.mean_penalty_coef=0.0", "world_model.size=1M"],
    ),
    "wm-updates": (
        "+ two world-model updates per policy update (each on a fresh batch)",
        [
            *SIXTEEN_STEP,
            "actor.mean_penalty_coef=0.0",
            "collector.optim_steps_per_batch=10",
            "optim.policy_every=2",
        ],
    ),
    "ratio": (
        "+ one update per agent step (twice the default ratio, twice the time)",
        [*SIXTEEN_STEP, "actor.mean_penalty_coef=0.0", "collector.optim_steps_per_batch=10"],
    ),
    "phases": (
        "+ phases of 500 steps: world model only, then policy only on the frozen model "
        "(same update counts: 10 steps per round)",
        [
            *SIXTEEN_STEP,
            "actor.mean_penalty_coef=0.0",
            "collector.optim_steps_per_batch=10",
            "optim.phase_steps=500",
        ],
    ),
    "cheap": (
        "+ a quarter of the FLOPs per run (update_cost.md): 128 slices, world-model slices and "
        "imagination of 8 steps (the example's default since 2026-11-30)",
        CHEAP,
    ),
    # cheap, one of its changes undone (which of them carries the effect)
    "cheap-im16": (
        "`cheap`, but a 16-step imagination",
        _but(CHEAP, "actor.imagination_horizon=16"),
    ),
    "cheap-wm16": (
        "`cheap`, but 16-step world-model slices",
        _but(CHEAP, "world_model.horizon=16"),
    ),
    "cheap-b256": (
        "`cheap`, but 256 world-model slices",
        _but(CHEAP, "world_model.batch_size=256"),
    ),
    "cheap-hinge": (
        "`cheap`, plus the hinge mean penalty",
        _but(CHEAP, "actor.mean_penalty_coef=1e-3", "actor.mean_penalty_threshold=3.0"),
    ),
    "all": (
        "hinge + target + std-floor",
        [
            *SIXTEEN_STEP,
            "actor.mean_penalty_coef=1e-3",
            "actor.mean_penalty_threshold=3.0",
            "actor.bootstrap=target",
            "actor.init_log_std=-0.693",
            "actor.min_log_std=-0.693",
        ],
    ),
}
DEFAULT_ARMS = ("paper", "penalty", "hinge", "target", "std-floor", "all")
FIELDS = [
    "arm", "task", "seed", "budget", "env_steps", "finished", "final_return", "mean_return",
    "promised_over_earned", "value_ratio", "reward_mae", "action_saturation", "wall_clock_min",
]  # fmt: skip


def summarise(arm: str, run: learning.Run, last_evals: int = 3) -> dict:
    """One run's row: returns (last evaluation, mean over the run as in ``learning.md``); its
    calibration over its last ``last_evals`` evaluations: the return the model promises the
    policy over the imagination horizon over the one it really earns from the same states
    (summed over those evaluations, then divided), the critic's value over the real
    return-to-go and the model's reward error (means); and the fraction of imagined pre-tanh
    means beyond ±3 over the second half of training. An unfinished run is summarised over
    the env steps it has run so far."""
    steps, final = learning.final_return(run)
    so_far = run if run.finished else dataclasses.replace(run, budget=steps)
    timings = json.loads(run.timings.read_text()) if run.timings.exists() else {}
    return {
        "arm": arm, "task": run.task, "seed": run.seed, "budget": run.budget,
        "env_steps": steps, "finished": run.finished, "final_return": final,
        "mean_return": learning.mean_return_over_run(so_far),
        **learning.calibration(run, last_evals),
        "wall_clock_min": timings["total_s"] / 60 if "total_s" in timings else None,
    }  # fmt: skip


def _seed(row: dict) -> str:
    return str(row["seed"]) + ("" if row["finished"] else f" (to {row['env_steps'] // 1000}k)")


def write(rows: list[dict], results: Path, cli: str) -> Path:
    """``ablation.csv`` (every run) and ``ablation.md`` (arms: mean ± std over seeds)."""
    fmt = learning.mean_std_cell
    results.mkdir(parents=True, exist_ok=True)
    with (results / "ablation.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    lines = [
        "# Ablation of online PWM's recipe",
        "",
        f"Generated by `{cli}` ({time.strftime('%Y-%m-%d')}); one row per arm, mean ± std over "
        "its seeds; every run in `ablation.csv`. A seed marked *(to N)* is unfinished: its "
        "figures cover its first N env steps (it resumes where it stopped).",
        "",
        "- *promised / earned*: the return the world model promises the deterministic policy "
        "over the imagination horizon, over the one it really earns from the same states "
        "(summed over the last 3 evaluations; 1 is an honest model, above 1 the actor exploits it);",
        "- *V / G*: the critic's value of real states over their real discounted return-to-go, "
        "and *reward error* the model's mean absolute reward error (means of the last 3);",
        "- *saturation*: fraction of imagined pre-tanh action means beyond ±3 over the second "
        "half of training (where `tanh`'s gradient vanishes).",
        "",
    ]
    for task in sorted({r["task"] for r in rows}):
        for budget in sorted({r["budget"] for r in rows if r["task"] == task}):
            cell = [r for r in rows if r["task"] == task and r["budget"] == budget]
            lines += [
                f"## {task}, {budget} env steps",
                "",
                "| arm | what it changes | seeds | return | mean over the run | promised / earned "
                "| V / G | reward error | saturation | min per run |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for arm in [a for a in ARMS if any(r["arm"] == a for r in cell)]:
                rs = [r for r in cell if r["arm"] == arm]
                col = {k: [r[k] for r in rs] for k in FIELDS}
                lines.append(
                    f"| `{arm}` | {ARMS[arm][0]} | {', '.join(_seed(r) for r in rs)} "
                    f"| {fmt(col['final_return'])} | {fmt(col['mean_return'])} "
                    f"| {fmt(col['promised_over_earned'], 2, 'x')} "
                    f"| {fmt(col['value_ratio'], 2)} | {fmt(col['reward_mae'], 3)} "
                    f"| {fmt(col['action_saturation'], 2)} | {fmt(col['wall_clock_min'], 1)} |"
                )
            lines.append("")
    lines += ["Overrides per arm:", ""]
    lines += [f"- `{a}`: `{' '.join(o) or '(the defaults)'}`" for a, (_, o) in ARMS.items()]
    path = results / "ablation.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def collect(arms: Sequence[str], tasks, seeds, budget: int, runs_root: Path) -> list[dict]:
    """Rows of every run of the given arms, tasks and seeds that has evaluated past its
    first evaluation (finished or not). A running run's files may end in a half-written
    line: such a run is left out of this table, with a message, and counted next time."""
    rows = []
    for arm in arms:
        for task in tasks:
            for seed in seeds:
                run = learning._local(runs_root / arm, "pwm", task, seed, budget)
                if not run.eval_csv.exists():
                    continue
                try:
                    if len(learning.read_eval_csv(run.eval_csv)["env_steps"]) > 1:
                        rows.append(summarise(arm, run))
                except (ValueError, IndexError, KeyError) as err:
                    print(f"[skip] {arm} {task} seed {seed}: {err!r}", flush=True)
    return rows


KEY = ("arm", "task", "seed", "budget")


def published_rows(results: Path) -> list[dict]:
    """The rows of the committed ``ablation.csv``, typed as :func:`summarise` returns them:
    run folders do not outlive their machine, the table must (every figure of a row is in
    the CSV)."""
    path = results / "ablation.csv"
    if not path.exists():
        return []
    typed = {"seed": int, "budget": int, "env_steps": int}
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for k in FIELDS:
                v = raw.get(k, "")
                if k in ("arm", "task"):
                    row[k] = v
                elif k == "finished":
                    row[k] = v == "True"
                else:
                    row[k] = typed.get(k, float)(v) if v != "" else None
            rows.append(row)
    return rows


def merge(rows: Sequence[dict], published: Sequence[dict]) -> list[dict]:
    """``rows`` (the runs here) and the published rows of every other run, in :data:`ARMS`'
    order; an arm no longer in :data:`ARMS` is dropped."""
    here = {tuple(r[k] for k in KEY) for r in rows}
    kept = [r for r in published if tuple(r[k] for k in KEY) not in here and r["arm"] in ARMS]
    order = list(ARMS)
    return sorted([*rows, *kept], key=lambda r: (order.index(r["arm"]), r["task"], r["budget"],
                                                 r["seed"]))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv, extra = learning.split_overrides(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS))
    learning.add_run_arguments(p, ["walker-walk"], [0])
    p.add_argument("--markdown", action="store_true", help="only rebuild the tables")
    p.add_argument("--runs-dir", type=Path, default=RUNS)
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    learning.check_run_arguments(p, args)
    cli = "python benchmarks/ablation.py " + shlex.join(
        [a for a in argv if a != "--dry-run"] + (["--", *extra] if extra else [])
    )
    threads = args.threads or max(1, learning.usable_cores() // args.jobs)

    lock = threading.Lock()  # one writer of the tables at a time

    def publish() -> None:
        with lock:
            _publish()

    def _publish() -> None:
        rows = collect(args.arms, args.tasks, args.seeds, args.env_steps, args.runs_dir)
        if rows:
            rows = merge(rows, published)
            done = sum(r["finished"] for r in rows)
            path = write(rows, args.results_dir, cli)
            print(f"{len(rows)} runs ({done} finished) -> {path}", flush=True)

    published = published_rows(args.results_dir)  # runs made before, here or elsewhere
    finished_elsewhere = {tuple(r[k] for k in KEY) for r in published if r["finished"]}
    if args.markdown:
        publish()
        return 0
    todo = []
    for arm in args.arms:
        steps = learning.plan(["pwm"], args.tasks, args.seeds, args.env_steps,
                              runs_root=args.runs_dir / arm, online_runs=None,
                              online_results=None)  # fmt: skip
        for step in steps:
            r = step.run
            name = f"{arm} {r.task} seed {r.seed}"
            if step.action in ("done", "busy"):
                print(f"[{step.action}] {name}: {r.run_dir}", flush=True)
                continue
            if (arm, r.task, r.seed, r.budget) in finished_elsewhere and not r.run_dir.exists():
                print(f"[published] {name}: {args.results_dir / 'ablation.csv'}", flush=True)
                continue
            cmd = learning.command(r, resume=step.action == "resume", eval_every=args.eval_every,
                                   eval_episodes=args.eval_episodes, threads=threads,
                                   extra=[*ARMS[arm][1], *extra])  # fmt: skip
            print(f"[{step.action}] {name}: {shlex.join(cmd)}", flush=True)
            todo.append((name, step, cmd))
    if args.dry_run:
        return 0
    failures = []

    def work(item) -> None:
        name, step, cmd = item
        t0 = time.time()
        if learning.execute(step, cmd) != 0:
            with lock:
                failures.append(name)
            print(f"[failed] {name}; see {step.run.run_dir / 'train.log'}", flush=True)
        else:
            print(f"[finished] {name} in {(time.time() - t0) / 60:.1f} min", flush=True)
        publish()

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(work, todo))
    publish()
    return learning.exit_code(failures)


if __name__ == "__main__":
    sys.exit(main())
