"""examples/smoothness: the ball-and-wall tables (both protocols, seed 0) and the ESNR study, quick."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import load_module

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "smoothness"


def _load(name: str):
    return load_module(EXAMPLES / f"{name}.py")


def _ball_wall(tmp_path, *args) -> dict[str, dict[str, float]]:
    """Run ball_wall.py with ``args`` for seed 0; its CSV rows by model."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "ball_wall.py"), *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    protocol = args[args.index("--protocol") + 1]
    rows = csv.DictReader((tmp_path / f"ball_wall_{protocol}.csv").open())
    return {r["model"]: {k: float(v) for k, v in r.items() if k != "model"} for r in rows}


def test_ball_wall_slides_protocol_reproduces_the_slides_table(tmp_path):
    rows = _ball_wall(tmp_path, "--protocol", "slides", "--no-plot")
    # the slides' (model error, optimality gap), to three decimals
    slides = {"True": (0.0, 16.850), "ReLU": (0.707, 16.046), "SimNorm": (1.131, 3.473)}
    assert set(rows) == set(slides)
    for name, (err, gap) in slides.items():
        assert rows[name]["seed"] == 0
        assert round(rows[name]["model_error"], 3) == err, (name, rows[name])
        assert round(rows[name]["gap"], 3) == gap, (name, rows[name])


def test_ball_wall_consistent_protocol(tmp_path):
    rows = _ball_wall(tmp_path, "--protocol", "consistent")
    # same training as the slides' protocol: the same fitted models, hence the same errors
    assert round(rows["ReLU"]["model_error"], 3) == 0.707
    assert round(rows["SimNorm"]["model_error"], 3) == 1.131
    # descent on the true J ends on the wall's plateau (J = -5, zero gradient) from every
    # start: its gap is J(plateau) - min J = -5 + 21.850, measured, not assumed
    assert round(rows["True"]["gap_descent"], 3) == 16.850
    assert rows["True"]["gap_argmin"] == 0.0
    for name in ("ReLU", "SimNorm"):
        # each model's argmin lies near the true well (gap ≪ 16.85), not exactly on it
        assert 0.0 < rows[name]["gap_argmin"] < 2.0, (name, rows[name])
        # the smooth surrogates slope across the plateau: descent on them does better
        assert -0.01 < rows[name]["gap_descent"] < rows["True"]["gap_descent"] - 5.0
    assert (tmp_path / "ball_wall.png").stat().st_size > 0


def test_ball_wall_objective_is_the_documented_piecewise_function():
    bw = _load("ball_wall")
    problem = bw.BallWall()
    grid = torch.linspace(-math.pi, math.pi, 1000)
    j = problem.objective(grid)
    # sticks to the wall (J = -w): thrown forward-down (index 328, θ ≈ -1.08), or flat
    assert j[328].item() == -5.0 and problem.objective(torch.tensor(0.0)).item() == -5.0
    # clears the wall (0.5 rad) or is thrown back (π, never reaches it by t = 2):
    # J = -(v cos θ t + a t² / 2) = -(20 cos θ + 2)
    theta = torch.tensor([0.5, -2.5, math.pi])
    torch.testing.assert_close(problem.objective(theta), -(20 * theta.cos() + 2))
    # the slides' min J: the first angle on the grid that clears the top of the wall
    assert round(j.min().item(), 3) == -21.850 and 0.1 < grid[j.argmin()].item() < 0.15
    # the true gradient: zero on the plateau (the trap), 20 sin θ elsewhere
    theta = torch.tensor([0.0, -1.0, 0.5, 2.0], requires_grad=True)
    (grad,) = torch.autograd.grad(problem.objective(theta).sum(), theta)
    torch.testing.assert_close(grad, torch.tensor([0.0, 0.0, 1.0, 1.0]) * 20 * theta.sin())
    # descent on the true J from anywhere ends on the plateau
    found = bw.descend(problem.objective, torch.linspace(-3.1, 3.1, 50), steps=500, lr=2e-3)
    assert (problem.objective(found) == -5.0).all()


def test_torch_acrobot_conserves_energy_without_damping_and_torque():
    """The hand-written dynamics are right: with no damping or torque, the energy of the
    double pendulum is conserved up to the integrator's error."""
    sim = _load("esnr_horizon").TorchAcrobot(dt=0.0002, substeps=1)
    sim.damping = 0.0
    m, l1, lc, i, g = sim.m, sim.l, sim.lc, sim.inertia, sim.g

    def energy(s):
        q1, q2, dq1, dq2 = s.unbind(-1)
        # centres of mass (angles from the top), their velocities, potential and kinetic
        x1, y1 = lc * q1.sin(), lc * q1.cos()
        x2, y2 = l1 * q1.sin() + lc * (q1 + q2).sin(), l1 * q1.cos() + lc * (q1 + q2).cos()
        v1 = (lc * dq1) ** 2
        vx2 = l1 * q1.cos() * dq1 + lc * (q1 + q2).cos() * (dq1 + dq2)
        vy2 = -l1 * q1.sin() * dq1 - lc * (q1 + q2).sin() * (dq1 + dq2)
        kinetic = 0.5 * m * (v1 + vx2**2 + vy2**2) + 0.5 * i * (dq1**2 + (dq1 + dq2) ** 2)
        return kinetic + m * g * (y1 + y2), (x1, x2)

    s = torch.tensor([[2.0, -1.0, 0.5, 1.0], [0.3, 0.2, 0.0, 0.0]], dtype=torch.float64)
    e0, _ = energy(s)
    for _ in range(10000):  # 2 s
        s = sim.step(s, torch.zeros(2, 1, dtype=torch.float64))
    e1, _ = energy(s)
    assert (s[:, :2] - torch.tensor([[2.0, -1.0], [0.3, 0.2]])).abs().max() > 0.5  # it moved
    # semi-implicit Euler drifts by O(dt) here (0.06 J of ~18 J); a wrong term would cost joules
    torch.testing.assert_close(e1, e0, rtol=0, atol=0.1)


def test_esnr_horizon_quick_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "esnr_horizon.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "esnr_horizon_quick.csv").open()))
    assert {(r["system"], r["estimator"]) for r in rows} == {
        (s, e) for s in ("world_model", "true_dynamics") for e in ("first_order", "zeroth_order")
    }
    assert all(math.isfinite(float(r["esnr"])) for r in rows)
    assert (tmp_path / "esnr_horizon_quick.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["ball_wall", "esnr_horizon"])
def test_examples_use_only_the_public_api(name):
    for line in (EXAMPLES / f"{name}.py").read_text().splitlines():
        if "torchrl_pwm" in line and "import" in line:
            assert "._" not in line and " _" not in line, line
