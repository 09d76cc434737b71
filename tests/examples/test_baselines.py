"""examples/sac, examples/ppo and benchmarks/learning.py: configs, result bookkeeping and real runs."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests import load_module
from tests.examples.test_pwm_example import TINY_NETS

ROOT = Path(__file__).resolve().parents[2]
SAC = ROOT / "examples" / "sac" / "train.py"
PPO = ROOT / "examples" / "ppo" / "train.py"
PWM_TINY = [*TINY_NETS, "collector.seed_env_steps=400"]
SAC_TINY = ["network.hidden_sizes=[32,32]", "optim.batch_size=32", "collector.frames_per_batch=50",
            "collector.seed_env_steps=200"]  # fmt: skip
PPO_TINY = ["collector.frames_per_batch=100", "loss.mini_batch_size=50", "loss.ppo_epochs=2"]


def _learning():
    return load_module(ROOT / "benchmarks" / "learning.py", "learning")


def _run(script: Path, run_dir: Path, *overrides: str, timeout: int = 600):
    cmd = [sys.executable, str(script), f"hydra.run.dir={run_dir}", "logger.progress_bar=false",
           "threads=1", *overrides]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _eval_rows(run_dir: Path) -> list[list[float]]:
    rows = [list(map(float, r)) for r in list(csv.reader((run_dir / "eval.csv").open()))[1:]]
    assert rows and all(math.isfinite(v) for r in rows for v in r), run_dir
    return rows


def _check_run(run_dir: Path, final_env_steps: int) -> None:
    rows = _eval_rows(run_dir)
    assert int(rows[-1][0]) == final_env_steps  # env steps, after the action repeat
    timings = json.loads((run_dir / "timings.json").read_text())
    assert timings["total_s"] > 0 and timings["optimization_s"] >= 0
    assert (run_dir / "learning_curve.png").stat().st_size > 0


# -- configs -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sac", "ppo"])
def test_config_shares_pwm_groups_and_cites_sources(algorithm):
    cfg = OmegaConf.load(ROOT / "examples" / algorithm / "config.yaml")
    pwm = OmegaConf.load(ROOT / "examples" / "pwm" / "config.yaml")
    for group in ("env", "collector", "logger", "checkpoint"):
        assert group in cfg, group
    for key in ("task", "seed"):
        assert cfg.env[key] == pwm.env[key]
    # SAC steps the same env at repeat 1, as the published DMC SAC (one update per env step)
    assert cfg.env.action_repeat == (1 if algorithm == "sac" else pwm.env.action_repeat)
    for key in ("backend", "exp_name", "eval_every", "eval_episodes", "progress_bar"):
        assert key in cfg.logger
    assert cfg.logger.eval_episodes == pwm.logger.eval_episodes
    assert "total_env_steps" in cfg.collector and "resume" in cfg and "device" in cfg
    assert cfg.hydra.run.dir == f"outputs/{algorithm}/cartpole-swingup/seed0"  # resolved
    # every hyper-parameter line names where its value comes from
    text = (ROOT / "examples" / algorithm / "config.yaml").read_text()
    groups = {"network", "optim", "loss", "replay_buffer"}
    current = None
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            current = line.split(":")[0]
        elif current in groups and ":" in line and not line.strip().startswith("#"):
            assert "#" in line and ("sota" in line or "DEVIATION" in line), line


# -- learning.py bookkeeping on synthetic run dirs -----------------------------------------


def _fake_run(d: Path, returns: list[float], steps: list[int], total_s: float = 60.0) -> None:
    d.mkdir(parents=True, exist_ok=True)
    rows = ["env_steps,return_mean,return_std,wall_time_s"]
    rows += [f"{s},{r},1.0,{i * 10.0}" for i, (s, r) in enumerate(zip(steps, returns))]
    (d / "eval.csv").write_text("\n".join(rows) + "\n")
    (d / "timings.json").write_text(json.dumps({"total_s": total_s}))


def test_learning_plan_skips_resumes_imports_and_waits(tmp_path):
    lb = _learning()
    runs, online, copies = tmp_path / "runs", tmp_path / "online", tmp_path / "copies"
    budget, steps = 1000, [500, 1000]
    _fake_run(runs / "sac" / "cartpole-swingup_1000" / "seed0", [10, 20], steps)
    (runs / "ppo" / "cartpole-swingup_1000" / "seed0").mkdir(parents=True)
    (runs / "ppo" / "cartpole-swingup_1000" / "seed0" / "checkpoint.pt").write_bytes(b"x")
    busy = runs / "sac" / "cheetah-run_1000" / "seed0"
    busy.mkdir(parents=True)
    (busy / ".lock").write_text(str(os.getpid()))
    stale = runs / "ppo" / "cheetah-run_1000" / "seed0"
    stale.mkdir(parents=True)
    (stale / ".lock").write_text("999999999")  # no such process: not busy
    # PWM: a finished online run, a docs copy at the budget, an unfinished online run
    _fake_run(online / "cartpole-swingup_1000" / "seed0", [30, 40], steps, total_s=120.0)
    _fake_run(tmp_path / "tmp", [50, 60], steps)
    copies.mkdir()
    (tmp_path / "tmp" / "eval.csv").rename(copies / "cheetah-run_seed0.csv")
    (tmp_path / "tmp" / "timings.json").rename(copies / "cheetah-run_seed0.timings.json")
    (online / "walker-walk_1000" / "seed0").mkdir(parents=True)

    steps_ = lb.plan(["pwm", "sac", "ppo"], ["cartpole-swingup", "cheetah-run", "walker-walk"],
                     [0], budget, runs_root=runs, online_runs=online, online_results=copies)  # fmt: skip
    actions = {(s.run.algorithm, s.run.task): s.action for s in steps_}
    assert actions == {
        ("pwm", "cartpole-swingup"): "import",
        ("sac", "cartpole-swingup"): "done",
        ("ppo", "cartpole-swingup"): "resume",
        ("pwm", "cheetah-run"): "import",
        ("sac", "cheetah-run"): "busy",
        ("ppo", "cheetah-run"): "run",
        ("pwm", "walker-walk"): "wait",
        ("sac", "walker-walk"): "run",
        ("ppo", "walker-walk"): "run",
    }
    with pytest.raises(ValueError, match="Unknown algorithm"):
        lb.plan(["dreamer"], ["cartpole-swingup"], [0], budget, runs_root=runs)

    # a docs copy that stops short of the budget is not imported
    assert lb._online_pwm("cheetah-run", 0, 2000, online, copies) == (None, None)

    results = tmp_path / "results"
    found = lb.publish(results, runs, online_runs=online, online_results=copies,
                       budgets=[budget], tasks=["cartpole-swingup", "cheetah-run"], seeds=[0])  # fmt: skip
    assert {(r.algorithm, r.task, r.source) for r in found} == {
        ("sac", "cartpole-swingup", "learning"),
        ("pwm", "cartpole-swingup", "online run"),
        ("pwm", "cheetah-run", "online copy"),
    }
    rows = list(csv.DictReader((results / "learning.csv").open()))
    assert list(rows[0]) == ["algorithm", "task", "seed", "env_steps", "eval_return", "wall_time",
                             "budget", "return_std"]  # fmt: skip
    assert len(rows) == 6 and {r["budget"] for r in rows} == {"1000"}
    per_run = {
        (r["algorithm"], r["task"]): r
        for r in csv.DictReader((results / "learning_runs.csv").open())
    }
    assert per_run["pwm", "cartpole-swingup"]["final_return"] == "40.00"
    assert per_run["pwm", "cartpole-swingup"]["wall_clock_s"] == "120.0"
    assert (results / "learning" / "cartpole-swingup_1000.png").stat().st_size > 0
    md = (results / "learning.md").read_text()
    assert "| walker-walk | *not run* | *not run* | *not run* | 962 | 708 | 630 |" in md
    assert "### 500k env steps" in md and "Machine:" in md
    # mean return over the run, by hand: evaluations (500, 30), (1000, 40) interpolated at
    # 50, 100, ..., 1000 env steps: 30 up to 500 (nearest), then 31, 32, ..., 40
    pwm_cartpole = next(r for r in found if (r.algorithm, r.task) == ("pwm", "cartpole-swingup"))
    assert lb.mean_return_over_run(pwm_cartpole) == pytest.approx(
        (10 * 30 + sum(range(31, 41))) / 20
    )
    assert "| cartpole-swingup | 1k | 33 (1) | 13 (1) | *not run* |" in md

    # regenerating keeps hand-written text outside the generated block
    (results / "learning.md").write_text(md.replace(lb.END, lb.END + "\n\n## Analysis\nkept\n"))
    lb.publish(results, runs, online_runs=online, online_results=copies, budgets=[budget])
    assert (results / "learning.md").read_text().count("## Analysis\nkept") == 1


def test_learning_execute_lock_is_not_a_previous_run(tmp_path):
    """learning.execute writes .lock and train.log before the example checks its run folder:
    the check must take them for the benchmark's own files (it refused every run before)."""
    lb = _learning()
    run = lb._local(tmp_path, "sac", "cartpole-swingup", 0, 1000)
    probe = (
        "import sys; sys.path.insert(0, 'examples'); from pathlib import Path; "
        "from run_utils import HYDRA_FILES; from torchrl_pwm.trainers import check_fresh_run; "
        f"check_fresh_run(Path({str(run.run_dir)!r}), False, ignore=HYDRA_FILES)"
    )
    (run.run_dir / ".hydra").mkdir(parents=True)
    (run.run_dir / ".lock").write_text("999999999")  # as execute() leaves it before the start
    assert lb.execute(lb.Step("run", run), [sys.executable, "-c", probe]) == 0
    assert not (run.run_dir / ".lock").exists()  # released
    (run.run_dir / "eval.csv").write_text("env_steps\n")  # a real previous output: refused
    assert lb.execute(lb.Step("run", run), [sys.executable, "-c", probe]) != 0
    assert "previous run's output (eval.csv)" in (run.run_dir / "train.log").read_text()


def test_learning_refresh_follows_what_another_runner_did_since_the_plan(tmp_path):
    """Two runners share a runs folder: a cell the other one finished, holds or started after
    this one planned it is skipped or resumed, not started over (the example refused it)."""
    lb = _learning()
    (step,) = lb.plan(["ppo"], ["cartpole-swingup"], [2], 1000, runs_root=tmp_path)
    assert step.action == "run"
    assert lb.refresh(step, tmp_path) == step
    step.run.run_dir.mkdir(parents=True)
    (step.run.run_dir / "checkpoint.pt").write_bytes(b"")  # the other runner started it
    assert lb.refresh(step, tmp_path).action == "resume"
    (step.run.run_dir / ".lock").write_text(str(os.getpid()))  # ... and holds it
    assert lb.refresh(step, tmp_path) is None
    (step.run.run_dir / ".lock").unlink()
    _fake_run(step.run.run_dir, [10, 20], [500, 1000])  # ... and finished it
    assert lb.refresh(step, tmp_path) is None


def test_learning_record_command_keeps_a_concurrent_runners_line(tmp_path, monkeypatch):
    """Two runners (one per core) share a runs folder: a command recorded by the other one
    between this one's read and its write must survive (a read-modify-write lost or garbled
    it)."""
    lb = _learning()
    path = tmp_path / "commands.txt"
    assert lb.record_command(tmp_path, "python a") == ["python a"]
    read = Path.read_text

    def read_then_other_runner_appends(self, *args, **kwargs):
        text = read(self, *args, **kwargs)
        if self == path and "python other" not in text:
            with path.open("a") as f:
                f.write("python other\n")
        return text

    monkeypatch.setattr(Path, "read_text", read_then_other_runner_appends)
    lb.record_command(tmp_path, "python b")
    monkeypatch.undo()
    assert path.read_text().splitlines() == ["python a", "python other", "python b"]
    assert lb.record_command(tmp_path, "python b")[-1] == "python b"  # recorded once
    assert path.read_text().count("python b") == 1


def test_learning_publish_keeps_a_table_whose_runs_are_absent(tmp_path, capsys):
    """A fresh clone has the committed table but not its run folders: a benchmark run there
    must not replace the table with its own few runs."""
    lb = _learning()
    runs, results = tmp_path / "runs", tmp_path / "results"
    _fake_run(runs / "sac" / "cartpole-swingup_1000" / "seed0", [10, 20], [500, 1000])
    lb.publish(results, runs, online_runs=None, online_results=None)
    table = (results / "learning_runs.csv").read_text()
    assert "sac,cartpole-swingup,0,1000" in table
    other = tmp_path / "other_runs"
    _fake_run(other / "ppo" / "cheetah-run_1000" / "seed0", [1, 2], [500, 1000])
    lb.publish(results, other, online_runs=None, online_results=None)
    assert (results / "learning_runs.csv").read_text() == table  # kept
    assert "not rewriting" in capsys.readouterr().out
    lb.publish(tmp_path / "elsewhere", other, online_runs=None, online_results=None)
    assert "ppo,cheetah-run,0,1000" in (tmp_path / "elsewhere" / "learning_runs.csv").read_text()


def _scalars(d: Path, name: str, rows: list[tuple[int, float]]) -> None:
    path = d / "logs" / "pwm" / "scalars" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{s},{v}\n" for s, v in rows))


def test_learning_calibration_by_hand_and_in_the_table(tmp_path):
    """The calibration of a PWM run, against values computed by hand: promised / earned sums
    the last 3 evaluations that logged both (paired by env step), saturation averages the
    second half of the run only; a SAC run logs none and gets no calibration row."""
    lb = _learning()
    runs = tmp_path / "runs"
    pwm = runs / "pwm" / "walker-walk_1000" / "seed0"
    _fake_run(pwm, [10, 20, 30, 40], [250, 500, 750, 1000])
    _scalars(pwm, "eval/model_policy_return", [(250, 99.0), (500, 6.0), (750, 9.0), (1000, 12.0)])
    # 500 lacks its earned value: the last 3 pairs are 250, 750, 1000
    _scalars(pwm, "eval/model_real_return", [(250, 1.0), (750, 3.0), (1000, 4.0)])
    _scalars(pwm, "eval/value_ratio", [(250, 9.0), (500, 1.0), (750, 2.0), (1000, 3.0)])
    _scalars(pwm, "action_saturation", [(100, 1.0), (400, 1.0), (500, 0.2), (900, 0.4)])
    _fake_run(runs / "sac" / "walker-walk_1000" / "seed0", [5, 6], [500, 1000])
    runs_ = lb.discover(runs, online_runs=None, online_results=None)
    by_algo = {r.algorithm: lb.calibration(r) for r in runs_}
    pwm_cal = by_algo["pwm"]
    assert pwm_cal["promised_over_earned"] == pytest.approx((99 + 9 + 12) / (1 + 3 + 4))
    assert pwm_cal["value_ratio"] == pytest.approx(2.0)  # mean of the last 3
    assert pwm_cal["action_saturation"] == pytest.approx(0.3)  # steps >= 500 only
    assert pwm_cal["reward_mae"] is None  # not logged
    assert set(by_algo["sac"].values()) == {None}
    table = lb.markdown(runs_, ["python benchmarks/learning.py"])
    assert "| walker-walk | 1k | 1 | 15.00x | 2.00 | - | 0.30 |" in table
    assert table.count("| walker-walk | 1k | 1 |") == 1  # no row from the SAC run


def test_learning_carries_published_runs_whose_folders_are_gone(tmp_path, capsys):
    """A new machine has the committed CSVs but not the run folders: with carry_published the
    table is rebuilt from the CSVs (returns, curves, wall-clock, set-up, calibration,
    commands) plus the runs made here; the planner skips the carried cells."""
    lb = _learning()
    old_runs, results = tmp_path / "old_runs", tmp_path / "results"
    pwm = old_runs / "pwm" / "walker-walk_1000" / "seed0"
    _fake_run(pwm, [10, 20, 30, 40], [250, 500, 750, 1000], total_s=600.0)
    _scalars(pwm, "eval/model_policy_return", [(750, 9.0), (1000, 12.0)])
    _scalars(pwm, "eval/model_real_return", [(750, 3.0), (1000, 4.0)])
    (pwm / ".hydra").mkdir()
    (pwm / ".hydra" / "config.yaml").write_text("threads: 1\ncompile:\n  enabled: true\n")
    _fake_run(old_runs / "sac" / "walker-walk_1000" / "seed0", [5, 7], [500, 1000], total_s=300.0)
    lb.record_command(old_runs, "python benchmarks/learning.py --seeds 0")
    before = lb.publish(results, old_runs, online_runs=None, online_results=None)
    md_before = (results / "learning.md").read_text()

    # elsewhere, later: the old folders are gone; one new run (seed 1) is made
    runs = tmp_path / "runs"
    _fake_run(runs / "sac" / "walker-walk_1000" / "seed1", [1, 9], [500, 1000], total_s=360.0)
    lb.record_command(runs, "python benchmarks/learning.py --seeds 1")
    steps = lb.plan(["pwm", "sac"], ["walker-walk"], [0, 1], 1000, runs_root=runs,
                    published=lb.published_runs(results))  # fmt: skip
    actions = {(s.run.algorithm, s.run.seed): s.action for s in steps}
    assert actions == {("pwm", 0): "carried", ("sac", 0): "carried", ("pwm", 1): "run",
                       ("sac", 1): "done"}  # fmt: skip
    found = lb.publish(results, runs, carry_published=True, online_runs=None, online_results=None)
    assert "[carried] 2 published run(s)" in capsys.readouterr().out
    assert [(r.algorithm, r.seed, r.published is not None) for r in found] == [
        ("pwm", 0, True), ("sac", 0, True), ("sac", 1, False)]  # fmt: skip
    for old, new in zip(before, found):  # the carried runs read as their folders did
        assert lb.final_return(new) == lb.final_return(old)
        assert lb.mean_return_over_run(new) == pytest.approx(lb.mean_return_over_run(old))
        assert new.wall_clock_s() == old.wall_clock_s()
        assert lb._setup(new) == lb._setup(old)
        assert lb.calibration(new) == pytest.approx(lb.calibration(old), nan_ok=True)
    assert lb._setup(found[0]) == "1 thr., compiled"
    assert lb.calibration(found[0])["promised_over_earned"] == pytest.approx(21 / 7)
    md = (results / "learning.md").read_text()
    # mean over the run, by hand: SAC (5 + 5.2 ... 7: 5.55) and (1 + 1.8 ... 9: 3.2)
    assert "| walker-walk | 1k | 22 (1) | 4 ± 1 (2) | *not run* |" in md
    assert "| walker-walk | 1k | 10 (1 thr., compiled) | 5, 6 (? thr.) | *not run* |" in md
    assert "| walker-walk | 1k | 1 | 3.00x | - | - | - |" in md  # carried calibration
    assert md.index("--seeds 0\n") < md.index("--seeds 1\n")  # both commands, in order
    assert md.split("Machine")[0] == md_before.split("Machine")[0]
    # rebuilt again from its own output: nothing drifts
    csvs = [(results / f).read_text() for f in ("learning.csv", "learning_runs.csv")]
    lb.publish(results, tmp_path / "empty", carry_published=True, online_runs=None,
               online_results=None)  # fmt: skip
    assert [(results / f).read_text() for f in ("learning.csv", "learning_runs.csv")] == csvs
    # the two CSVs must belong together
    (results / "learning.csv").write_text((results / "learning.csv").read_text().split("\n")[0])
    with pytest.raises(ValueError, match="do not belong together"):
        lb.published_runs(results)


def test_learning_cli_dry_run_and_bad_input(tmp_path):
    args = [sys.executable, str(ROOT / "benchmarks" / "learning.py"), "--dry-run",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res")]  # fmt: skip
    out = subprocess.run([*args, "--quick"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("[run]") == 3 and "collector.total_env_steps=6000" in out.stdout
    assert not (tmp_path / "res").exists()  # a dry run writes nothing
    out = subprocess.run([*args, "--jobs", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "must be positive" in out.stderr
    # PWM's committed online.py copy of this cell (older defaults) is imported only on request
    cell = ["--algorithms", "pwm", "--tasks", "cartpole-swingup", "--seeds", "0"]
    assert (ROOT / "docs" / "results" / "online" / "cartpole-swingup_seed0.csv").exists()
    out = subprocess.run([*args, *cell], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "[run] pwm cartpole-swingup seed 0" in out.stdout, out.stdout
    out = subprocess.run([*args, *cell, "--import-online"], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0 and "[import] pwm cartpole-swingup seed 0" in out.stdout, out.stdout


# -- real, very short runs -----------------------------------------------------------------


def test_sac_example_short_run_and_resume(tmp_path):
    run_dir = tmp_path / "sac"
    args = [*SAC_TINY, "logger.eval_every=400", "logger.eval_episodes=1", "checkpoint.every=400",
            "replay_buffer.capacity=300"]  # fmt: skip
    out = _run(SAC, run_dir, "collector.total_env_steps=400", *args)
    assert out.returncode == 0, out.stderr[-3000:]
    _check_run(run_dir, 400)
    assert "SAC updates" in out.stdout
    refused = _run(SAC, run_dir, "collector.total_env_steps=600", *args)
    assert refused.returncode != 0 and "resume=true" in refused.stderr
    out = _run(SAC, run_dir, "collector.total_env_steps=600", *args, "resume=true")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Resumed at 400 env steps" in out.stdout
    _check_run(run_dir, 600)
    other = _run(SAC, run_dir, *args[:-1], "replay_buffer.capacity=500", "resume=true")
    assert other.returncode != 0 and "replay_capacity=300" in other.stderr
    other = _run(SAC, run_dir, *args, "env.action_repeat=2", "resume=true")
    assert other.returncode != 0 and "action_repeat=1" in other.stderr
    bad = _run(SAC, tmp_path / "bad", "env.task=cheeta-run")
    assert bad.returncode != 0 and "Did you mean 'cheetah-run'" in bad.stderr
    # a budget within the random seed steps would train nothing: refused, nothing left behind
    bad = _run(SAC, tmp_path / "bad", *SAC_TINY, "collector.total_env_steps=200")
    assert bad.returncode != 0 and "never train" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_ppo_example_short_run(tmp_path):
    run_dir = tmp_path / "ppo"
    out = _run(PPO, run_dir, "collector.total_env_steps=400", *PPO_TINY, "logger.eval_every=200",
               "logger.eval_episodes=1", "checkpoint.every=200")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    _check_run(run_dir, 400)
    assert "8 PPO updates" in out.stdout  # 2 batches x 2 epochs x 2 mini-batches
    bad = _run(PPO, tmp_path / "bad", "loss.mini_batch_size=5000")
    assert bad.returncode != 0 and "mini_batch_size" in bad.stderr
    # below one batch (was a ZeroDivisionError in the learning-rate schedule)
    bad = _run(PPO, tmp_path / "bad", *PPO_TINY, "collector.total_env_steps=100")
    assert bad.returncode != 0 and "less than one PPO batch" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()


# -- slow: default networks on a real task, and the benchmark end to end ---------------------


@pytest.mark.slow
def test_sac_and_ppo_default_config_few_hundred_frames(tmp_path):
    out = _run(SAC, tmp_path / "sac", "collector.total_env_steps=1000", "collector.seed_env_steps=400",
               "logger.eval_every=500", "logger.eval_episodes=2", timeout=1800)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    _check_run(tmp_path / "sac", 1000)
    out = _run(PPO, tmp_path / "ppo", "collector.total_env_steps=2000", "collector.frames_per_batch=500",
               "logger.eval_every=1000", "logger.eval_episodes=2", timeout=1800)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    _check_run(tmp_path / "ppo", 2000)


@pytest.mark.slow
def test_learning_quick_mode_tiny_budget(tmp_path, monkeypatch):
    lb = _learning()
    monkeypatch.setitem(lb.QUICK, "env_steps", 1000)
    monkeypatch.setitem(lb.QUICK, "eval_every", 500)
    monkeypatch.setitem(lb.QUICK, "eval_episodes", 1)
    monkeypatch.setitem(lb.QUICK, "overrides", {"pwm": PWM_TINY, "sac": SAC_TINY, "ppo": PPO_TINY})
    runs, results = tmp_path / "runs", tmp_path / "results"
    argv = ["--quick", "--runs-dir", str(runs), "--results-dir", str(results), "--threads", "1"]
    assert lb.main(argv) == 0
    rows = list(csv.DictReader((results / "learning.csv").open()))
    assert {r["algorithm"] for r in rows} == {"pwm", "sac", "ppo"}
    assert all(math.isfinite(float(r["eval_return"])) for r in rows)
    assert {int(r["env_steps"]) for r in rows if r["algorithm"] == "sac"} >= {1000}
    assert (results / "learning" / "cartpole-swingup_1000.png").exists()
    assert "learning.py --quick" in (results / "learning.md").read_text()
    # rerunning skips every finished run
    mtime = (runs / "sac" / "cartpole-swingup_1000" / "seed0" / "timings.json").stat().st_mtime
    assert lb.main(argv) == 0
    assert (
        runs / "sac" / "cartpole-swingup_1000" / "seed0" / "timings.json"
    ).stat().st_mtime == mtime
