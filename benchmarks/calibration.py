"""Reward and value calibration of finished online PWM runs (model exploitation check).

For each run folder of ``benchmarks/online.py`` (default: every ``outputs/benchmarks/online/*/seed*``
with a checkpoint), rebuilds the agent from the checkpoint's own configuration, plays
``--episodes`` deterministic episodes in a separately seeded env (as the evaluation does), and
measures with :func:`torchrl_pwm.calibration.world_model_calibration` how far the world model's
rewards and the critic's values are from what the policy really earns, in the reward space the
actor optimises. Writes ``docs/results/calibration.{csv,md}``.

    python benchmarks/calibration.py
    python benchmarks/calibration.py --runs outputs/benchmarks/online/walker-walk_100000/seed0
"""

from __future__ import annotations

import argparse
import csv
import datetime
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tensordict.nn import TensorDictSequential
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_pwm.checkpoint import (
    check_observation_layout,
    load_checkpoint,
    load_state_dict_checked,
)
from torchrl_pwm.envs import OBSERVATION_LAYOUT_VERSION, make_env
from torchrl_pwm.evaluation import world_model_calibration
from torchrl_pwm.trainers import evaluate_policy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "pwm"))
from utils import make_pwm_loss  # noqa: E402  (examples/pwm/utils.py)

RUNS = ROOT / "outputs" / "benchmarks" / "online"
RESULTS = ROOT / "docs" / "results"
COLUMNS = [
    "run",
    "variant",
    "task",
    "seed",
    "env_steps",
    "episode_return",
    "real_reward",
    "reward_mae_first",
    "reward_mae_last",
    "reward_bias_mean",
    "imagined_return",
    "real_return",
    "value",
    "return_to_go",
    "value_ratio",
    "policy_imagined_return",
    "policy_imagined_end_value",
    "policy_imagined_return_mean_action",
]


def calibrate(run_dir: Path, episodes: int, seed_offset: int = 20_000) -> dict:
    """Calibration summary of the run's checkpoint (its latest state)."""
    torch.manual_seed(0)  # the sampled imagination: same numbers on every call
    state = load_checkpoint(run_dir / "checkpoint.pt")
    # Over the example's current defaults: runs older than a config group still load.
    defaults = OmegaConf.load(ROOT / "examples" / "pwm" / "config.yaml")
    cfg = OmegaConf.merge(defaults, OmegaConf.create(state["metadata"]["config"]))
    cfg.compile.enabled = False  # identical parameters; no warm-up for a few forward passes
    # A run trained on make_env's old sorted-key observations reads scrambled inputs where the
    # order changed (walker, hopper, finger, fish): refuse those, accept the others.
    domain = cfg.env.task.split("-")[0]
    check_observation_layout(
        state,
        run_dir / "checkpoint.pt",
        OBSERVATION_LAYOUT_VERSION,
        allow_old=domain not in ("walker", "hopper", "finger", "fish"),
    )
    env = make_env(
        cfg.env.task, seed=cfg.env.seed + seed_offset, action_repeat=cfg.env.action_repeat
    )
    obs_dim = env.observation_spec["observation"].shape[-1]
    loss, _ = make_pwm_loss(cfg, obs_dim, env.action_spec, torch.device("cpu"))
    load_state_dict_checked(loss, state["trainer"]["loss_module"], "loss module")
    policy = TensorDictSequential(loss.world_model.encoder, loss.actor_network)
    _, rollouts = evaluate_policy(env, policy, episodes, return_episodes=True)
    lengths = {len(r) for r in rollouts}
    if len(lengths) != 1:
        raise RuntimeError(f"{run_dir}: episodes of different lengths {sorted(lengths)}.")
    rollout = torch.stack(rollouts)
    kwargs = dict(
        policy=loss.actor_network, horizon=cfg.actor.imagination_horizon, gamma=cfg.optim.gamma
    )
    with set_exploration_type(ExplorationType.RANDOM):  # the actor samples, as in training
        report = world_model_calibration(
            loss.world_model, rollout, critic=loss.value_network, **kwargs
        )
    with set_exploration_type(ExplorationType.DETERMINISTIC):  # the policy that was played;
        mean_action = world_model_calibration(loss.world_model, rollout, **kwargs)  # no critic
    repeat = env.action_repeat
    return {
        "run": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
        "variant": _variant(run_dir.parent.name),
        "task": cfg.env.task,
        "seed": cfg.env.seed,
        "env_steps": state["trainer"]["state"]["collected_frames"] * repeat,
        "episode_return": float(rollout["next", "reward"].sum((1, 2)).mean()),
        **{k: v for k, v in report.summary().items() if k in COLUMNS},
        "policy_imagined_return_mean_action": mean_action.policy_imagined_return,
    }


def _variant(folder: str) -> str:
    """``<task>_<env_steps>[_<tag>]`` (benchmarks/online.py's folders) → the tag or "default"."""
    parts = folder.split("_", 2)
    return parts[2] if len(parts) == 3 else "default"


def _fmt(value, digits=3):
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def write(rows: list[dict], results: Path, episodes: int) -> None:
    results.mkdir(parents=True, exist_ok=True)
    with open(results / "calibration.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Reward and value calibration of online PWM runs",
        "",
        f"Generated by `python benchmarks/calibration.py` ({datetime.date.today()}), from each "
        f"run's final checkpoint: {episodes} deterministic episodes per run in an env seeded "
        "apart from training and evaluation. Rewards and returns are in the space the actor "
        "optimises (symlog of the env reward for the default `world_model.reward_space=symlog`). "
        "Definitions: `torchrl_pwm/calibration.py`.",
        "",
        "- *real r*: mean reward per agent step of these episodes; *MAE k=1 / k=H*: mean "
        "absolute error of the model's reward at the first / last of H open-loop imagination "
        "steps with the real actions; *bias*: mean (predicted - real) over the H steps;",
        "- *imag. / real H-return*: discounted H-step return predicted / earned from the same "
        "starts; *V / G*: critic value of the real start states against their real discounted "
        "return-to-go (starts that leave at least log 0.05 / log γ steps);",
        "- *policy H-return*: discounted H-step return when the actor acts in imagination from "
        "the same starts, with its mean action (*mean a*: the policy that played the real "
        "episodes, so the same policy in the model and in the env) or sampling as in training "
        "(*sampled*); *V(z_H)*: critic value of its last "
        "imagined latents, the bootstrap of the actor's objective (compare with *V*).",
        "",
        "| task | variant | seed | env steps | return | real r | MAE k=1 | MAE k=H | bias | "
        "imag. H-return | real H-return | policy H-return, mean a | policy H-return, sampled | "
        "V | G | V / G | V(z_H) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['variant']} | {r['seed']} | {r['env_steps']} | {r['episode_return']:.0f} | "
            f"{r['real_reward']:.3f} | {r['reward_mae_first']:.3f} | {r['reward_mae_last']:.3f}"
            f" | {r['reward_bias_mean']:+.3f} | {r['imagined_return']:.2f} | "
            f"{r['real_return']:.2f} | {r['policy_imagined_return_mean_action']:.2f} | "
            f"{r['policy_imagined_return']:.2f} | {r['value']:.1f} | "
            f"{r['return_to_go']:.1f} | {r['value_ratio']:.2f} | "
            f"{r['policy_imagined_end_value']:.1f} |"
        )
    lines.append("")
    (results / "calibration.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="*", type=Path, help="run folders (default: all)")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = args.runs or sorted(p.parent for p in RUNS.glob("*/seed*/checkpoint.pt"))
    if not runs:
        parser.error(f"no run with a checkpoint.pt under {RUNS}")
    rows = []
    for run_dir in runs:
        row = calibrate(run_dir.resolve(), args.episodes)
        print(", ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)
        rows.append(row)
    write(rows, args.results_dir, args.episodes)
    print(f"wrote {args.results_dir / 'calibration.md'}")


if __name__ == "__main__":
    main()
