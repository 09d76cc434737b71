"""The docs' tutorial (docs/tutorials/own_loop.py) runs as shown."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_own_loop_tutorial_runs():
    script = ROOT / "docs" / "tutorials" / "own_loop.py"
    assert (
        f"literalinclude:: tutorials/{script.name}" in (ROOT / "docs" / "tutorial.rst").read_text()
    )
    out = subprocess.run(
        [sys.executable, str(script), "--env-steps", "1000", "--small"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("evaluation return after 1000 env steps:")
    assert math.isfinite(float(last.split(":")[1]))
