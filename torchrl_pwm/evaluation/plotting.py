"""Learning-curve plots from the evaluation CSVs the trainers write."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["PUBLISHED_DMC_RETURNS", "plot_learning_curves", "published_references", "read_eval_csv"]

#: Published DMC returns at 100k and 500k env steps (TD-MPC2 repository ``results/*.csv`` at
#: e9f5932, mean over its seeds, env steps after the action repeat of 2).
PUBLISHED_DMC_RETURNS: dict[str, dict[str, tuple[int, int]]] = {
    "cartpole-swingup": {"TD-MPC2": (839, 876), "SAC": (835, 835), "DreamerV3": (677, 789)},
    "cheetah-run": {"TD-MPC2": (519, 758), "SAC": (310, 595), "DreamerV3": (336, 494)},
    "walker-walk": {"TD-MPC2": (962, 979), "SAC": (708, 953), "DreamerV3": (630, 878)},
    "walker-run": {"TD-MPC2": (723, 820), "SAC": (340, 604), "DreamerV3": (245, 514)},
    "acrobot-swingup": {"TD-MPC2": (179, 361), "SAC": (8, 2), "DreamerV3": (101, 322)},
    "pendulum-swingup": {"TD-MPC2": (724, 842), "SAC": (96, 408), "DreamerV3": (699, 740)},
    "hopper-hop": {"TD-MPC2": (14, 303), "SAC": (0, 38), "DreamerV3": (10, 163)},
    "reacher-hard": {"TD-MPC2": (414, 914), "SAC": (161, 517), "DreamerV3": (813, 856)},
    "finger-spin": {"TD-MPC2": (948, 985), "SAC": (762, 873), "DreamerV3": (328, 752)},
}


def published_references(task: str, max_env_steps: int) -> dict[str, tuple[int, float]]:
    """Published points of ``task`` within ``max_env_steps``, as ``plot_learning_curves``'s
    ``references``.

    Examples:
        >>> published_references("cheetah-run", 100_000)
        {'TD-MPC2 (published)': (100000, 519), 'SAC (published)': (100000, 310), 'DreamerV3 (published)': (100000, 336)}
    """
    refs = {}
    for method, (at_100k, at_500k) in PUBLISHED_DMC_RETURNS.get(task, {}).items():
        if max_env_steps >= 500_000:
            refs[f"{method} @500k (published)"] = (500_000, at_500k)
        if max_env_steps >= 100_000:
            key = (
                f"{method} (published)"
                if max_env_steps < 500_000
                else f"{method} @100k (published)"
            )
            refs[key] = (100_000, at_100k)
    return refs


def read_eval_csv(path: str | Path) -> dict[str, list[float]]:
    """Columns of an evaluation CSV (``env_steps, return_mean, return_std, wall_time_s``).

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "eval.csv")
        >>> _ = open(p, "w").write("env_steps,return_mean,return_std,wall_time_s\\n0,1.5,0.1,2\\n")
        >>> read_eval_csv(p)["return_mean"]
        [1.5]
    """
    with Path(path).open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: [float(r[k]) for r in rows] for k in rows[0]}


def plot_learning_curves(
    curves: Mapping[str, Sequence[str | Path | Mapping[str, Sequence[float]]]],
    out_path: str | Path,
    *,
    title: str = "",
    references: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Plot evaluation return against env steps, one line per label (mean ± std over the
    seeds' CSV files, which must share their evaluation steps; a single file shows its
    episodes' std).

    Args:
        curves: ``{label: [eval CSV of each seed]}``; a seed may also be given as the CSV's
            columns, as :func:`read_eval_csv` returns them.
        out_path: the PNG to write.

    Keyword Args:
        title: plot title.
        references: ``{label: (env_steps, return)}`` published points drawn as markers.

    Examples:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> p = os.path.join(d, "eval.csv")
        >>> _ = open(p, "w").write("env_steps,return_mean,return_std,wall_time_s\\n0,1,0,1\\n10,5,1,2\\n")
        >>> plot_learning_curves({"PWM": [p]}, os.path.join(d, "curve.png")).suffix
        '.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, paths in curves.items():
        runs = [p if isinstance(p, Mapping) else read_eval_csv(p) for p in paths]
        runs = [r for r in runs if r]
        if not runs:
            continue
        n = min(len(r["env_steps"]) for r in runs)
        steps = np.asarray(runs[0]["env_steps"][:n])
        means = np.stack([np.asarray(r["return_mean"][:n]) for r in runs])
        if len(runs) > 1:
            mean, std = means.mean(0), means.std(0)
            label = f"{label} ({len(runs)} seeds)"
        else:
            mean, std = means[0], np.asarray(runs[0]["return_std"][:n])
        (line,) = ax.plot(steps, mean, label=label)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=line.get_color())
    for label, (step, value) in (references or {}).items():
        ax.plot([step], [value], marker="*", markersize=10, linestyle="none", label=label)
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
