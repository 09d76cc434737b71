"""The docs' Results page renders the markdown result files (tables and plots), not their source."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import load_module

ROOT = Path(__file__).resolve().parents[2]


def _conf():
    return load_module(ROOT / "docs" / "conf.py")


def test_results_page_renders_tables_and_shows_plots():
    pytest.importorskip("markdown")
    rst = _conf()._results_section()
    assert ".. literalinclude::" not in rst  # no raw source blocks
    assert rst.count(".. raw:: html") >= 5 and "<table>" in rst
    images = [ln.split("::")[1].strip() for ln in rst.splitlines() if ln.startswith(".. image::")]
    assert "results/learning_2026-11-26/cheetah-run_100000.png" in images  # a subfolder
    assert "results/online/walker-walk.png" in images
    for image in images:
        assert (ROOT / "docs" / image).is_file(), image
