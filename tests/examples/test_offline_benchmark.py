"""benchmarks/offline.py: its arguments and the report it builds from the stages' folders."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest

from tests import load_module
from tests.examples.test_baselines import _fake_run  # a finished run folder of learning.py

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """benchmarks/offline.py with its run folders and results redirected into ``tmp_path``."""
    module = load_module(ROOT / "benchmarks" / "offline.py", "offline")
    monkeypatch.setattr(module.learning, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module.learning, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    yield module
    sys.modules.pop("offline", None)


def _results_csv(d: Path, rows: dict[str, tuple[float, float]]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    lines = ["task,seed,final_return,final_return_std,best_return,best_iteration,iterations,"
             "train_s,eval_s,warmup_s,s_per_iteration"]  # fmt: skip
    lines += [f"{t},0,{f},1.0,{b},100,200,10.0,2.0,1.0,0.04" for t, (f, b) in rows.items()]
    (d / "results.csv").write_text("\n".join(lines) + "\n")


def test_sources_are_checked(offline):
    assert offline.parse_sources(["walker-run:sac:50000"]) == {"walker-run": ("sac", 50000)}
    for bad in ("walker-run:sac", "walker-run:dreamer:1000", "walker-run:sac:many"):
        with pytest.raises(ValueError, match=r"TASK:pwm\|sac:ENV_STEPS"):
            offline.parse_sources([bad])


def test_report_rows_compare_the_offline_policy_with_its_data_and_online_agents(offline, tmp_path):
    """offline.csv: the policy's return against the data run's final and best returns, the
    data run's own algorithm at its budget, and the other algorithm from the committed learning
    curves (mean over seeds, interpolated at the dataset's env steps) or NaN without any."""
    runs = tmp_path / "runs"
    _fake_run(runs / "sac" / "cheetah-run_4000" / "seed0", [50, 300, 250], [1000, 3000, 4000])
    _fake_run(runs / "pwm" / "cartpole-swingup_2000" / "seed0", [100, 700], [1000, 2000])
    # committed 100k-style curves: PWM on cheetah-run, two seeds; none for SAC on cartpole
    with (tmp_path / "results" / "learning.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algorithm", "task", "seed", "env_steps", "eval_return", "wall_time", "budget"])
        for seed, values in ((0, (100, 300)), (1, (200, 500))):
            for steps, value in zip((2000, 6000), values):
                w.writerow(["pwm", "cheetah-run", seed, steps, value, 1.0, 6000])
    ns = type("Args", (), {})()  # the parsed arguments the report reads
    ns.seeds, ns.data_seed, ns.out = [0], 0, tmp_path / "out"
    ns.sources = {"cheetah-run": ("sac", 4000), "cartpole-swingup": ("pwm", 2000)}
    _results_csv(ns.out / "policies_1M" / "seed0", {"cheetah-run": (280.0, 320.0),
                                                    "cartpole-swingup": (650.0, 720.0)})  # fmt: skip
    ns.world_model = "1M"
    rows, notes = offline.build_rows(ns)
    by_task = {r["task"]: r for r in rows}
    cheetah, cartpole = by_task["cheetah-run"], by_task["cartpole-swingup"]
    assert cheetah["offline_return"] == 280.0
    assert (cheetah["data_final_return"], cheetah["data_best_return"]) == (250.0, 300.0)
    assert cheetah["sac_return"] == 250.0  # the data run is SAC's run at that budget
    # PWM from the committed curves at 4000 env steps: seed 0 200, seed 1 350 -> 275
    assert cheetah["online_pwm_return"] == pytest.approx(275.0)
    assert cheetah["dataset_env_steps"] == 4000
    assert cartpole["online_pwm_return"] == 700.0 and math.isnan(cartpole["sac_return"])
    assert {n["sac_from"] for n in notes} == {"data run", "none"}
    # a cell the current table lacks comes from the previous edition's curves (here SAC on
    # cartpole: 100 at 1000 and 400 at 4000 env steps -> 200 at the dataset's 2000)
    previous = tmp_path / "results" / "learning_2026-11-26" / "learning.csv"
    previous.parent.mkdir()
    previous.write_text("algorithm,task,seed,env_steps,eval_return,wall_time,budget\n"
                        "sac,cartpole-swingup,0,1000,100,1.0,4000\n"
                        "sac,cartpole-swingup,0,4000,400,1.0,4000\n")  # fmt: skip
    rows_, notes_ = offline.build_rows(ns)
    assert {r["task"]: r["sac_return"] for r in rows_}["cartpole-swingup"] == pytest.approx(200.0)
    assert "learning_2026-11-26/learning.csv, 1 runs" in {n["sac_from"] for n in notes_}
    assert {r["task"]: r["online_pwm_return"] for r in rows_}["cheetah-run"] == pytest.approx(275.0)
    previous.unlink()

    ledger = offline.Ledger(ns.out / "stages.json")
    ledger.record("pretrain/1M/500", seconds=12.0, summary={
        "steps": 500, "samples_per_s": 900.0, "world_model_parameters": 1.2e6})  # fmt: skip
    ns.se_tasks, ns.snapshots, ns.pretrain_batch = ["cartpole-swingup"], [500, 1000], 256
    ns.pretrain_steps, ns.se_iterations = 1000, 200  # the policy stage's: 200 iterations
    _results_csv(ns.out / "sample_efficiency" / "cartpole-swingup" / "step_500" / "seed0",
                 {"cartpole-swingup": (400.0, 450.0)})  # fmt: skip
    offline.write_report(ns, ledger, "python benchmarks/offline.py")
    with (tmp_path / "results" / "offline.csv").open(newline="") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == offline.CSV_COLUMNS
    assert [r["task"] for r in written] == ["cheetah-run", "cartpole-swingup"]
    assert written[1]["sac_return"] == "nan"
    md = (tmp_path / "results" / "offline.md").read_text()
    assert "| cheetah-run | 0 | **280** | 250 | 300 | 275 (learning.csv, 2 runs)" in md
    assert (tmp_path / "results" / "offline_sample_efficiency.png").exists()
    assert (tmp_path / "results" / "offline_policies.png").exists()
    assert "![offline policies](offline_policies.png)" in md
    # the last snapshot's point is the policy stage's policy (same world model, iterations)
    se = list(csv.DictReader((tmp_path / "results" / "offline_sample_efficiency.csv").open()))
    assert [(r["pretrain_steps"], r["offline_return"]) for r in se] == [
        ("500", "400.0"),
        ("1000", "650.0"),
    ]
    # a folder that cannot rebuild every published row leaves the published report alone
    published = (tmp_path / "results" / "offline.csv").read_text()
    ns.sources = {"cheetah-run": ("sac", 4000)}
    offline.write_report(ns, ledger, "python benchmarks/offline.py --markdown")
    assert (tmp_path / "results" / "offline.csv").read_text() == published
    ns.sources = {"cheetah-run": ("sac", 4000), "cartpole-swingup": ("pwm", 2000)}
    # rebuilding keeps the text written outside the generated block
    (tmp_path / "results" / "offline.md").write_text(md + "\n## Analysis\nkept\n")
    offline.write_report(ns, ledger, "python benchmarks/offline.py")
    assert (tmp_path / "results" / "offline.md").read_text().count("## Analysis\nkept") == 1


def test_ledgers_of_concurrent_stages_keep_each_others_records(offline, tmp_path):
    """Stages run as separate processes at once (e.g. throughput beside pre-training): a
    ledger opened before another's record must not erase it when it records."""
    path = tmp_path / "out" / "stages.json"
    pretrain, throughput = offline.Ledger(path), offline.Ledger(path)
    throughput.record("throughput/1M", policy_s_per_iteration=2.4)
    pretrain.record("pretrain/1M/8000", seconds=10.0)
    pretrain.record("pretrain/1M/8000", steps=8000)  # merges into its own key
    assert offline.Ledger(path).data == {
        "throughput/1M": {"policy_s_per_iteration": 2.4},
        "pretrain/1M/8000": {"seconds": 10.0, "steps": 8000},
    }


def test_missing_data_run_is_a_clear_error(offline, tmp_path):
    ns = type("Args", (), {})()
    ns.sources, ns.data_seed = {"walker-run": ("sac", 50000)}, 0
    with pytest.raises(SystemExit, match="not finished"):
        offline.data_run(ns, "walker-run")
