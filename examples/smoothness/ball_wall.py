"""Smooth surrogates are easier to optimise: PWM's ball-and-wall toy problem.

A ball is thrown from ``(0, y0)`` at speed ``v`` and angle ``θ ∈ [-π, π]`` (0 = forward,
π/2 = straight up) towards a wall of height ``h`` at ``x = d``. Without the wall it lands at
``x_land(θ)``; if its flight crosses ``x = d`` below the top of the wall it sticks there. The
objective (minimised) is minus the distance reached:

    J(θ) = -d            if the ball hits the wall (0 < d < x_land and y(d) < h),
    J(θ) = -x_land(θ)    otherwise (it lands before the wall, clears it, or is thrown back).

``J`` is piecewise smooth with a jump at the two angles that just clear the top of the wall,
flat (zero gradient) wherever the ball sticks, and has its minimum in the narrow band of
angles that clear the wall. The original ``pedagogical/ball_wall.py`` is not available to us:
this is our own instance of the setting the paper describes.

Two models are fitted to ``J`` on 1000 angles drawn uniformly on ``[-π, π]`` (Adam, lr 2e-3,
batch 56, 100 epochs, on standardised targets, as the original script's settings): (a) an MLP
``1 → [32, 32] → 1`` (the original's ``mlp``: Linear → LayerNorm → Mish blocks; the slides
call it "ReLU") and (b) a latent model ``1 → [32] → 32`` ending in LayerNorm + SimNorm(8),
then a linear decoder. Gradient descent then starts from the same angles on the true ``J``
(autograd through the piecewise-smooth physics) and on each model, and the script prints the
model error (RMSE against ``J`` on a dense grid) and the optimality gap (``J`` at the angle
found minus the best ``J``), mean ± std over seeds, beside the slides' numbers.

Run:  python examples/smoothness/ball_wall.py [--quick] [--seeds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from torchrl_pwm.modules import SimNorm, normed_mlp

# (model error, optimality gap) from the PWM slides.
SLIDES = {"True": (0.0, 16.850), "MLP": (0.707, 16.046), "SimNorm": (1.131, 3.473)}


@dataclass
class Throw:
    """The physics of the throw (SI units)."""

    speed: float = 15.0
    gravity: float = 9.81
    launch_height: float = 1.0
    wall_distance: float = 12.0
    wall_height: float = 6.0

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        """``J(θ)`` (minus the distance reached), differentiable where it is smooth."""
        g, y0, d = self.gravity, self.launch_height, self.wall_distance
        vx, vy = self.speed * theta.cos(), self.speed * theta.sin()
        t_land = (vy + (vy.square() + 2 * g * y0).sqrt()) / g
        x_land = vx * t_land
        forward = vx > 1e-6
        t_wall = d / torch.where(forward, vx, torch.ones_like(vx))  # safe: no inf/nan grads
        y_wall = y0 + vy * t_wall - 0.5 * g * t_wall.square()
        hits = forward & (x_land > d) & (y_wall < self.wall_height)
        return torch.where(hits, torch.full_like(x_land, -d), -x_land)


def make_mlp() -> nn.Module:
    return normed_mlp(1, [32, 32], 1)


def make_simnorm_model() -> nn.Module:
    return nn.Sequential(normed_mlp(1, [32], 32, last_activation=SimNorm(8)), nn.Linear(32, 1))


class Standardised(nn.Module):
    """``net`` trained on standardised targets, predicting in ``J``'s units."""

    def __init__(self, net: nn.Module, mean: float, std: float):
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return self.net(theta.unsqueeze(-1)).squeeze(-1) * self.std + self.mean


def fit(net, theta, target, *, epochs, batch_size=56, lr=2e-3, generator=None) -> Standardised:
    mean, std = target.mean().item(), target.std().item()
    y = (target - mean) / std
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(theta.shape[0], generator=generator)
        for idx in perm.split(batch_size):
            loss = (net(theta[idx, None]).squeeze(-1) - y[idx]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return Standardised(net, mean, std).requires_grad_(False)


def descend(fn, theta0, *, steps, lr) -> torch.Tensor:
    """Plain gradient descent on ``fn`` from every start; angles wrap around to ``[-π, π)``
    (a throw angle is periodic, and so is ``J``)."""
    theta = theta0.clone().requires_grad_(True)
    for _ in range(steps):
        (grad,) = torch.autograd.grad(fn(theta).sum(), theta)
        with torch.no_grad():
            theta -= lr * grad
            theta.copy_(torch.remainder(theta + math.pi, 2 * math.pi) - math.pi)
    return theta.detach()


def run_seed(seed, throw, args, grid, j_grid, j_star):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    theta = (torch.rand(args.samples, generator=g) * 2 - 1) * math.pi
    target = throw.objective(theta)
    models = {
        "MLP": fit(make_mlp(), theta, target, epochs=args.epochs, generator=g),
        "SimNorm": fit(make_simnorm_model(), theta, target, epochs=args.epochs, generator=g),
    }
    starts = (torch.rand(args.starts, generator=g) * 2 - 1) * math.pi
    out = {}
    for name, fn in {"True": throw.objective, **models}.items():
        with torch.no_grad():
            rmse = (fn(grid) - j_grid).square().mean().sqrt().item()
        found = descend(fn, starts, steps=args.gd_steps, lr=args.gd_lr)
        gap = (throw.objective(found) - j_star).mean().item()
        out[name] = (rmse, gap)
    return out, models


def plot(path, grid, j_grid, models, samples):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(grid, j_grid, color="black", lw=2, label="true J")
    with torch.no_grad():
        for (name, model), color in zip(models.items(), ("tab:red", "tab:blue")):
            ax.plot(grid, model(grid), color=color, label=f"{name} fit")
    ax.scatter(samples[0], samples[1], s=3, color="grey", alpha=0.4, label="training samples")
    ax.set_xlabel("throw angle θ (rad)")
    ax.set_ylabel("J(θ) = - distance (m)")
    ax.set_title("Ball and wall: true objective and learned surrogates (seed 0)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--starts", type=int, default=100, help="initial angles per seed")
    parser.add_argument("--gd-steps", type=int, default=500)
    parser.add_argument("--gd-lr", type=float, default=2e-3, help="rad per unit of dJ/dθ")
    parser.add_argument("--out", type=Path, default=Path("docs/results/smoothness"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.starts, args.gd_steps = 2, 5, 20, 50
    torch.set_num_threads(args.threads)
    start_time = time.time()

    throw = Throw()
    grid = torch.linspace(-math.pi, math.pi, 4001)
    j_grid = throw.objective(grid)
    j_star = throw.objective(torch.linspace(-math.pi, math.pi, 200_001)).min()

    results = {name: [] for name in SLIDES}
    for seed in range(args.seeds):
        out, models = run_seed(seed, throw, args, grid, j_grid, j_star)
        for name, value in out.items():
            results[name].append(value)
        if seed == 0:
            first_models = models
            g = torch.Generator().manual_seed(0)
            samples_theta = (torch.rand(args.samples, generator=g) * 2 - 1) * math.pi
            samples = (samples_theta, throw.objective(samples_theta))

    print(f"ball and wall, {args.seeds} seeds, {args.starts} starts each; best J = {j_star:.3f}")
    print(f"{'model':<8} | {'model error (ours)':>19} | {'opt. gap (ours)':>17} | slides")
    print(f"{'-' * 8}-|-{'-' * 19}-|-{'-' * 17}-|-{'-' * 16}")
    for name, values in results.items():
        t = torch.tensor(values)
        std = t.std(0) if len(values) > 1 else torch.zeros(2)
        s_err, s_gap = SLIDES[name]
        print(
            f"{name:<8} | {t[:, 0].mean():8.3f} ± {std[0]:7.3f} | {t[:, 1].mean():7.3f} ± "
            f"{std[1]:6.3f} | {s_err:.3f} / {s_gap:.3f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / ("ball_wall_quick.png" if args.quick else "ball_wall.png")
    plot(png, grid, j_grid, first_models, samples)
    print(f"plot: {png}  ({time.time() - start_time:.0f} s)")
    return results


if __name__ == "__main__":
    main()
