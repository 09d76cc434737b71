"""benchmarks/ablation.py: arms of examples/pwm, their runs and the calibration table."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests import load_module
from tests.examples.test_pwm_example import TINY_NETS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ablation.py"


def _cli(tmp_path, *args, timeout=120):
    cmd = [sys.executable, str(SCRIPT), "--runs-dir", str(tmp_path / "runs"),
           "--results-dir", str(tmp_path / "res"), *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_dry_run_gives_each_arm_its_overrides_and_refuses_bad_input(tmp_path):
    out = _cli(tmp_path, "--dry-run", "--arms", "paper", "target", "--seeds", "3")
    assert out.returncode == 0, out.stderr[-2000:]
    paper, target = [line for line in out.stdout.splitlines() if line.startswith("[run]")]
    assert "actor.mean_penalty_coef=0.0" in paper and "actor.bootstrap" not in paper
    assert "actor.bootstrap=target" in target and "env.seed=3" in target
    assert "runs/target/pwm/walker-walk_100000/seed3" in target
    assert not (tmp_path / "res").exists()  # a dry run writes nothing
    assert _cli(tmp_path, "--arms", "nope").returncode != 0
    bad = _cli(tmp_path, "--jobs", "0")
    assert bad.returncode != 0 and "must be positive" in bad.stderr


def test_a_real_tiny_arm_fills_the_table_with_its_calibration(tmp_path):
    """One arm, one real (tiny) cartpole run: the row holds the run's last evaluation and
    the calibration metrics its evaluations logged; a second call skips the finished run."""
    args = ["--arms", "target", "--tasks", "cartpole-swingup", "--env-steps", "600",
            "--eval-every", "300", "--eval-episodes", "1", "--threads", "1", "--",
            *TINY_NETS, "collector.seed_env_steps=300", "compile.enabled=false",
            "critic.target_tau=0.1"]  # fmt: skip
    out = _cli(tmp_path, *args, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    run_dir = tmp_path / "runs" / "target" / "pwm" / "cartpole-swingup_600" / "seed0"
    with (run_dir / "eval.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    with (tmp_path / "res" / "ablation.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["arm"] == "target" and int(row["env_steps"]) == 600
    assert float(row["final_return"]) == float(last["return_mean"])
    assert float(row["promised_over_earned"]) > 0 and float(row["value_ratio"]) != 0
    assert 0 <= float(row["action_saturation"]) <= 1
    table = (tmp_path / "res" / "ablation.md").read_text()
    assert "## cartpole-swingup, 600 env steps" in table and "| `target` |" in table
    again = _cli(tmp_path, *args)
    assert again.returncode == 0 and "[done] target cartpole-swingup seed 0" in again.stdout


def test_every_arm_overrides_existing_example_keys():
    """Each arm's overrides name keys of examples/pwm/config.yaml (Hydra would refuse an
    unknown one only when the arm starts, possibly hours into a benchmark)."""
    from omegaconf import OmegaConf

    ablation = load_module(SCRIPT)
    cfg = OmegaConf.load(ROOT / "examples" / "pwm" / "config.yaml")
    assert set(ablation.DEFAULT_ARMS) <= set(ablation.ARMS)
    for arm, (description, overrides) in ablation.ARMS.items():
        assert "|" not in description, arm  # it is a markdown table cell
        for override in overrides:
            key = override.split("=", 1)[0]
            assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", (arm, key)


def test_every_arm_spells_out_its_sizes():
    """An arm measures the same recipe whatever the example's defaults become: ``cheap`` runs its
    own 128 slices of 8 and 8-step imagination (today's defaults, which it must not merely
    inherit), each ``cheap-*`` arm exactly one change away from it, every other arm the
    16-step recipe."""
    ablation = load_module(SCRIPT)
    common = load_module(ROOT / "benchmarks" / "_common.py")
    sizes = ("world_model.batch_size", "world_model.horizon", "actor.imagination_horizon")
    cheap = set(ablation.ARMS["cheap"][1])
    assert {"world_model.batch_size=128", "world_model.horizon=8",
            "actor.imagination_horizon=8"} <= cheap  # fmt: skip
    undone = {"cheap-im16": {"actor.imagination_horizon=16"},
              "cheap-wm16": {"world_model.horizon=16"},
              "cheap-b256": {"world_model.batch_size=256"},
              "cheap-hinge": {"actor.mean_penalty_coef=1e-3",
                              "actor.mean_penalty_threshold=3.0"}}  # fmt: skip
    for arm, (_, overrides) in ablation.ARMS.items():
        keys = [o.split("=", 1)[0] for o in overrides]
        assert len(keys) == len(set(keys)), arm  # Hydra refuses a key given twice
        assert set(sizes) <= set(keys), arm
        if arm in undone:  # cheap with exactly the named changes
            assert set(overrides) - cheap == undone[arm], arm
            assert {o.split("=", 1)[0] for o in cheap} <= set(keys), arm  # nothing dropped
        elif arm != "cheap":
            assert overrides[: len(common.SIXTEEN_STEP)] == list(common.SIXTEEN_STEP), arm


def test_published_rows_survive_a_machine_without_their_run_folders(tmp_path):
    """Run folders do not outlive their machine: the committed ablation.csv's rows are kept
    beside the runs made here, round-trip unchanged, and a finished one is not rerun."""
    ablation = load_module(SCRIPT)
    res = tmp_path / "res"
    res.mkdir()
    row = dict.fromkeys(ablation.FIELDS, "")
    finished = {**row, "arm": "paper", "task": "walker-walk", "seed": "10", "budget": "100000",
                "env_steps": "100000", "finished": "True", "final_return": "510.25",
                "mean_return": "212.5", "value_ratio": "2.46", "wall_clock_min": "79.0"}  # fmt: skip
    unfinished = {**finished, "arm": "hinge", "env_steps": "40000", "finished": "False"}
    with (res / "ablation.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ablation.FIELDS)
        w.writeheader()
        w.writerows([unfinished, finished])
    out = _cli(tmp_path, "--dry-run", "--arms", "paper", "hinge", "--seeds", "10")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[published] paper walker-walk seed 10" in out.stdout
    assert "[run] hinge walker-walk seed 10" in out.stdout and "[run] paper" not in out.stdout

    published = ablation.published_rows(res)
    assert published[1]["final_return"] == 510.25 and published[1]["seed"] == 10
    assert published[1]["finished"] is True and published[1]["reward_mae"] is None
    here = {**published[0], "env_steps": 100_000, "finished": True, "final_return": 300.0}
    merged = ablation.merge([here], published)
    assert [(r["arm"], r["final_return"]) for r in merged] == [("paper", 510.25),
                                                               ("hinge", 300.0)]  # fmt: skip
    ablation.write(merged, res, "python benchmarks/ablation.py")
    assert ablation.published_rows(res) == merged  # the CSV round-trips
    table = (res / "ablation.md").read_text()
    assert "| `paper` |" in table and "| 510 | 212 | - | 2.46 | - | - | 79.0 |" in table
