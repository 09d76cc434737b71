"""benchmarks/update_path.py: one failing case loses no other row, and the run says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import load_module

ROOT = Path(__file__).resolve().parents[2]


def test_a_failing_case_keeps_the_other_rows_and_exits_non_zero(monkeypatch, capsys):
    path = load_module(ROOT / "benchmarks" / "update_path.py")

    def broken(device, variant, repeats):
        raise RuntimeError("no such compile mode here")

    monkeypatch.setattr(path, "online", broken)
    argv = ["--only", "online", "sac", "--variants", "eager", "--repeats", "1", "--threads", "1",
            "--no-write"]  # fmt: skip
    with pytest.raises(SystemExit, match=r"1 case\(s\) failed:\nonline_update pwm  eager: Runtime"):
        path.main(argv)
    out = capsys.readouterr()
    assert "FAILED online_update" in out.err
    (row,) = [line for line in out.out.splitlines() if line.startswith("sac_update")]
    assert "GFLOP/s" in row  # SAC's update on the same device was still measured
