"""Smooth surrogates are easier to optimise: PWM's ball-and-wall toy problem, two protocols.

The physics, models and training are those of PWM's ``pedagogical/ball_wall.py`` (the
experiment behind the slides' table). A ball starts at ``x = 0`` with speed ``v = 10`` at
angle ``θ`` under gravity ``g = -9.81`` and a constant horizontal acceleration ``a = 1``,
towards a wall of top ``h = 0`` at distance ``w = 5``. It reaches the wall at

    ty = (-v cos θ + sqrt(v² cos² θ + a·w)) / a          (sic: a·w, not 2·a·w)

at height ``y = v sin θ · ty + g/2 · ty²``; its position at ``t = 2`` is
``v cos θ · t + a t² / 2``, or ``w`` (it sticks) where ``y < h`` and ``ty < t``. The objective
(minimised) is ``J(θ) = -position``, sampled on 1000 angles ``linspace(-π, π)``.

Two models are fitted to ``J`` on that grid (``torch.manual_seed(seed)`` right before each
is built; Adam, lr 2e-3; 100 epochs of ``1000 // 56 = 17`` steps on 56 indices drawn with
``torch.randint``; MSE on the raw values): the slides' "ReLU" model, ``normed_mlp(1, [32, 32],
1)`` (Linear → LayerNorm → Mish blocks, plain Linear output; PWM's ``mlp``), and the SimNorm
model, ``normed_mlp(1, [32], 32, last_activation=SimNorm(8))`` then a linear decoder
``32 → 1``. As in the original, each step zeroes the gradients of the SimNorm model's encoder
only (``model.zero_grad()``): the decoder's gradients accumulate over the whole training.
``--zero-decoder-grad`` zeroes them too.

``--protocol slides`` measures as the original script did: model error = RMSE over the grid;
"optimality gap" = ``J[328] - min J`` for the true J (a fixed grid index, θ ≈ -1.08, not an
optimisation), the ReLU model's own *predicted* value at its argmin over the first half of the
grid (θ < 0) minus ``min J``, and the SimNorm model's predicted value at its argmin over the
whole grid minus ``min J``.

``--protocol consistent`` (the default) measures the same thing for every row: the true ``J``
at the row's argmin over the whole grid minus ``min J``, and plain gradient descent (angles
wrapped to ``[-π, π)``) from random starts on the row's function (autograd through the
physics for the true J), ``J`` at the angle found minus ``min J``, averaged over the starts.

Run:  python examples/smoothness/ball_wall.py [--protocol {consistent,slides}]
          [--seeds 0 1 2 3 4] [--zero-decoder-grad] [--out docs/results/smoothness]
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from torchrl_pwm.modules import SimNorm, normed_mlp

# (model error, optimality gap) from the PWM slides; the slides call the Mish MLP "ReLU".
SLIDES = {"True": (0.0, 16.850), "ReLU": (0.707, 16.046), "SimNorm": (1.131, 3.473)}
SLIDES_TRUE_INDEX = 328  # the grid index the original script reports for the true J


@dataclass
class BallWall:
    """The original script's physics (its units; ``h`` is the top of the wall)."""

    gravity: float = -9.81
    wall_height: float = 0.0
    wall_distance: float = 5.0
    start: float = 0.0
    speed: float = 10.0
    acceleration: float = 1.0
    horizon: float = 2.0

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        """``J(θ)``: minus the position at the horizon; differentiable where it is smooth."""
        v, a, w, t = self.speed, self.acceleration, self.wall_distance, self.horizon
        cos = torch.cos(theta)
        ty = (-v * cos + (v**2 * cos**2 + a * w) ** 0.5) / a
        y = v * torch.sin(theta) * ty + self.gravity / 2 * ty**2
        out = self.start + v * cos * t + 1 / 2 * a * t**2
        return -torch.where((self.wall_height > y) & (ty < t), w, out)


def make_relu_model() -> nn.Module:
    """The slides' "ReLU" row: ``1 → [32, 32] → 1``, Linear → LayerNorm → Mish blocks."""
    return normed_mlp(1, [32, 32], 1)


def make_simnorm_model() -> nn.Sequential:
    """The SimNorm row: encoder ``1 → [32] → 32`` ending in LayerNorm + SimNorm(8), decoder."""
    return nn.Sequential(normed_mlp(1, [32], 32, last_activation=SimNorm(8)), nn.Linear(32, 1))


def predict(model: nn.Module, theta: torch.Tensor) -> torch.Tensor:
    """The model's ``J`` at angles ``theta`` (any shape)."""
    return model(theta.unsqueeze(-1)).squeeze(-1)


def fit(
    model: nn.Module,
    grid: torch.Tensor,
    target: torch.Tensor,
    *,
    zeroed: nn.Module | None = None,
    epochs: int = 100,
    batch_size: int = 56,
    lr: float = 2e-3,
) -> nn.Module:
    """The original training loop, in place: ``epochs × (len(grid) // batch_size)`` Adam
    steps, each on ``batch_size`` grid indices drawn with ``torch.randint`` (the global
    generator), MSE on the raw targets. Only ``zeroed``'s gradients (default: all of
    ``model``'s) are zeroed before each backward; the others accumulate."""
    zeroed = model if zeroed is None else zeroed
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for _ in range(grid.shape[0] // batch_size):
            idx = torch.randint(0, grid.shape[0], (batch_size,))
            loss = (predict(model, grid[idx]) - target[idx]).square().mean()
            zeroed.zero_grad()
            loss.backward()
            opt.step()
    return model.requires_grad_(False)


def train_models(
    seed: int, grid: torch.Tensor, j: torch.Tensor, *, zero_decoder_grad: bool = False
) -> dict[str, nn.Module]:
    """Both fitted models for ``seed`` (the global generator is reseeded before each)."""
    torch.manual_seed(seed)
    relu = fit(make_relu_model(), grid, j)
    torch.manual_seed(seed)
    simnorm = make_simnorm_model()
    fit(simnorm, grid, j, zeroed=None if zero_decoder_grad else simnorm[0])
    return {"ReLU": relu, "SimNorm": simnorm}


def descend(fn, theta0: torch.Tensor, *, steps: int, lr: float) -> torch.Tensor:
    """Plain gradient descent on ``fn`` from every start; angles wrap around to ``[-π, π)``."""
    theta = theta0.clone().requires_grad_(True)
    for _ in range(steps):
        (grad,) = torch.autograd.grad(fn(theta).sum(), theta)
        with torch.no_grad():
            theta -= lr * grad
            theta.copy_(torch.remainder(theta + math.pi, 2 * math.pi) - math.pi)
    return theta.detach()


def measure_slides(j: torch.Tensor, predictions: dict[str, torch.Tensor]) -> dict[str, dict]:
    """The original script's table: RMSE over the grid and its three "optimality gaps" (``gap``).

    For comparison, every row also gets both of the slides' model measurements: its own
    minimum value over the first half of the grid (``pred_gap_first_half``, the "ReLU" row's
    measurement) and over the whole grid (``pred_gap_whole_grid``, the SimNorm row's), minus
    ``min J``.
    """
    j_star, half = j.min(), j.shape[0] // 2
    values = {"True": j, **predictions}
    gaps = {
        "True": j[SLIDES_TRUE_INDEX],
        "ReLU": predictions["ReLU"][:half].min(),  # predicted value, first half of the grid
        "SimNorm": predictions["SimNorm"].min(),  # predicted value, whole grid
    }
    return {
        name: {
            "model_error": (values[name] - j).square().mean().sqrt().item(),
            "gap": (gaps[name] - j_star).item(),
            "pred_gap_first_half": (values[name][:half].min() - j_star).item(),
            "pred_gap_whole_grid": (values[name].min() - j_star).item(),
        }
        for name in SLIDES
    }


def measure_consistent(
    problem: BallWall,
    grid: torch.Tensor,
    j: torch.Tensor,
    models: dict[str, nn.Module],
    starts: torch.Tensor,
    *,
    steps: int,
    lr: float,
) -> dict[str, dict]:
    """One measurement for every row: RMSE over the grid, the true J at the row's argmin over
    the whole grid, and the true J after gradient descent on the row from ``starts``, both
    minus ``min J`` over the grid."""
    j_star = j.min()
    fns = {"True": problem.objective}
    fns.update({name: (lambda th, m=model: predict(m, th)) for name, model in models.items()})
    out = {}
    for name, fn in fns.items():
        with torch.no_grad():
            values = fn(grid)
        found = descend(fn, starts, steps=steps, lr=lr)
        out[name] = {
            "model_error": (values - j).square().mean().sqrt().item(),
            "gap_argmin": (j[values.argmin()] - j_star).item(),
            "gap_descent": (problem.objective(found) - j_star).mean().item(),
        }
    return out


def plot(path: Path, grid: torch.Tensor, j: torch.Tensor, predictions: dict, seed: int):
    """J and both fits, with the points each protocol reads off (seed ``seed``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(grid, j, color="black", lw=2, label="true J")
    colors = {"ReLU": "tab:orange", "SimNorm": "tab:green"}
    for name, pred in predictions.items():
        ax.plot(
            grid,
            pred,
            color=colors[name],
            label=f'"{name}" fit (Mish MLP)' if name == "ReLU" else f"{name} fit",
        )
    i = SLIDES_TRUE_INDEX
    ax.plot(grid[i], j[i], "x", color="black", ms=10, mew=2, label="slides: true J at index 328")
    half = grid.shape[0] // 2
    for name, pred in predictions.items():
        k = pred[:half].argmin() if name == "ReLU" else pred.argmin()
        ax.plot(
            grid[k],
            pred[k],
            "x",
            color=colors[name],
            ms=10,
            mew=2,
            label=f"slides: {name}'s predicted min" + (" (θ < 0)" if name == "ReLU" else ""),
        )
        k = pred.argmin()
        ax.plot(
            grid[k],
            j[k],
            "o",
            mfc="none",
            color=colors[name],
            ms=9,
            mew=2,
            label=f"consistent: true J at {name}'s argmin",
        )
    ax.set_xlabel("throw angle θ (rad)")
    ax.set_ylabel("J(θ) = - position at t = 2")
    ax.set_title(f"Ball and wall: true objective and fitted models (seed {seed})")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(protocol: str, rows: dict[str, list[dict]]) -> str:
    """The printed table: one value per seed, or mean ± std over seeds."""
    keys = (
        ["model_error", "gap"]
        if protocol == "slides"
        else ["model_error", "gap_argmin", "gap_descent"]
    )
    head = {
        "model_error": "model error",
        "gap": "opt. gap (slides' way)",
        "gap_argmin": "gap at argmin",
        "gap_descent": "gap after descent",
    }
    width = 22
    lines = [f"{'model':<8} | " + " | ".join(f"{head[k]:>{width}}" for k in keys) + " | slides"]
    lines.append("-" * len(lines[0]))
    for name, values in rows.items():
        cells = []
        for k in keys:
            t = torch.tensor([v[k] for v in values], dtype=torch.float64)
            std = f" ± {t.std().item():6.3f}" if len(values) > 1 else ""
            cells.append(f"{t.mean().item():.3f}{std}".rjust(width))
        err, gap = SLIDES[name]
        lines.append(f"{name:<8} | " + " | ".join(cells) + f" | {err:.3f} / {gap:.3f}")
    return "\n".join(lines)


def main(argv=None):
    """Run the study and print its table(s); write a per-seed CSV and the seed's plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", choices=("consistent", "slides"), default="consistent")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--zero-decoder-grad",
        action="store_true",
        help="zero the SimNorm decoder's gradients too (the original does not)",
    )
    parser.add_argument("--starts", type=int, default=100, help="descent starts per seed")
    parser.add_argument("--gd-steps", type=int, default=500)
    parser.add_argument("--gd-lr", type=float, default=2e-3, help="rad per unit of dJ/dθ")
    parser.add_argument("--out", type=Path, default=Path("docs/results/smoothness"))
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start_time = time.time()

    problem = BallWall()
    grid = torch.linspace(-torch.pi, torch.pi, 1000)
    j = problem.objective(grid)

    rows: dict[str, list[dict]] = {name: [] for name in SLIDES}
    per_seed = []
    for seed in args.seeds:
        models = train_models(seed, grid, j, zero_decoder_grad=args.zero_decoder_grad)
        with torch.no_grad():
            predictions = {name: predict(m, grid) for name, m in models.items()}
        if args.protocol == "slides":
            out = measure_slides(j, predictions)
        else:
            starts = (
                torch.rand(args.starts, generator=torch.Generator().manual_seed(seed)) * 2 - 1
            ) * math.pi
            out = measure_consistent(
                problem, grid, j, models, starts, steps=args.gd_steps, lr=args.gd_lr
            )
        for name, values in out.items():
            rows[name].append(values)
            per_seed.append({"seed": seed, "model": name, **values})
        if seed == args.seeds[0]:
            first = (seed, predictions)

    suffix = "_zero_decoder_grad" if args.zero_decoder_grad else ""
    print(
        f"ball and wall, protocol {args.protocol}{suffix.replace('_', ' ')}; "
        f"min J = {j.min().item():.3f} (grid); seeds {args.seeds}"
    )
    if len(args.seeds) > 1:
        print(f"\nseed {args.seeds[0]}:")
        print(format_table(args.protocol, {n: v[:1] for n, v in rows.items()}))
        print(f"\nmean ± std over {len(args.seeds)} seeds:")
    print(format_table(args.protocol, rows))

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ball_wall_{args.protocol}{suffix}.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(per_seed[0]))
        writer.writeheader()
        writer.writerows(
            {k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()} for r in per_seed
        )
    written = [path]
    if not args.no_plot:
        written.append(args.out / f"ball_wall{suffix}.png")
        plot(written[-1], grid, j, first[1], first[0])
    print(f"\nwrote {', '.join(map(str, written))}  ({time.time() - start_time:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
