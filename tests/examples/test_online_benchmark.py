"""benchmarks/online.py: a tagged variant run lands apart from the defaults and is skipped once
finished."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.examples.test_pwm_example import TINY

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "online.py"


def _online(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--tasks", "cartpole-swingup", "--seeds", "0",
           "--env-steps", "600", "--runs-dir", str(tmp_path / "runs"),
           "--results-dir", str(tmp_path / "results"), *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_tagged_run_is_kept_apart_and_skipped_when_finished(tmp_path):
    out = _online(tmp_path, "--tag", "utd0.4", "--", *TINY, "logger.eval_every=300",
                  "collector.optim_steps_per_batch=4")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "runs" / "cartpole-swingup_600_utd0.4" / "seed0"
    assert (run_dir / "timings.json").exists()
    assert not (tmp_path / "runs" / "cartpole-swingup_600").exists()
    results = tmp_path / "results" / "utd0.4"
    assert (results / "cartpole-swingup_seed0.csv").read_text() == (
        run_dir / "eval.csv"
    ).read_text()
    assert (results / "cartpole-swingup.png").stat().st_size > 0
    assert "optim_steps_per_batch: 4" in (run_dir / ".hydra" / "config.yaml").read_text()

    again = _online(tmp_path, "--tag", "utd0.4")
    assert again.returncode == 0 and "[skip] cartpole-swingup seed 0: finished" in again.stdout

    bad = _online(tmp_path, "--tag", "a/b")
    assert bad.returncode == 2 and "--tag must be" in bad.stderr
