"""Learning-curve plots from the evaluation CSVs the trainers write."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_learning_curves", "read_eval_csv"]


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
    curves: Mapping[str, Sequence[str | Path]],
    out_path: str | Path,
    *,
    title: str = "",
    references: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Plot evaluation return against env steps, one line per label (mean ± std over the
    seeds' CSV files, which must share their evaluation steps; a single file shows its
    episodes' std).

    Args:
        curves: ``{label: [eval CSV of each seed]}``.
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
        runs = [read_eval_csv(p) for p in paths]
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
