"""examples/smoothness: the ball-and-wall table and the ESNR-vs-horizon study, in quick mode."""

from __future__ import annotations

import csv
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "smoothness"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"smoothness_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_ball_wall_quick_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "ball_wall.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {line.split("|")[0].strip(): line for line in out.stdout.splitlines() if "|" in line}
    for name in ("True", "MLP", "SimNorm"):
        assert name in lines, out.stdout
        cells = lines[name].split("|")
        err, gap = (float(c.split("±")[0]) for c in cells[1:3])
        assert math.isfinite(err) and gap >= 0
    assert float(lines["True"].split("|")[1].split("±")[0]) == 0.0
    assert (tmp_path / "ball_wall_quick.png").stat().st_size > 0


def test_ball_wall_objective_is_the_documented_piecewise_function():
    throw = _load("ball_wall").Throw()
    d = throw.wall_distance
    theta = torch.tensor([0.3, math.radians(50.0), math.radians(85.0), math.pi])
    j = throw.objective(theta)
    # 0.3 rad: hits the wall and sticks there
    assert j[0].item() == -d
    # 50°: clears the wall, lands beyond it; 85°: lands before it; π: thrown backwards
    for i in (1, 2, 3):
        t = theta[i]
        vx, vy = throw.speed * t.cos(), throw.speed * t.sin()
        t_land = (vy + (vy**2 + 2 * throw.gravity * throw.launch_height).sqrt()) / throw.gravity
        torch.testing.assert_close(j[i], -vx * t_land)
    assert j[1] < -d < j[2] and j[3] > 0
    # flat where the ball sticks: zero true gradient, the trap of first-order descent
    theta = torch.tensor(0.3, requires_grad=True)
    (grad,) = torch.autograd.grad(throw.objective(theta), theta)
    assert grad.item() == 0.0


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
