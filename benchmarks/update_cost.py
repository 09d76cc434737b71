"""What one run computes: online PWM's updates, by phase and per recipe knob, against TorchRL
SAC's, in matrix-product FLOPs per update and per run.

FLOPs (:class:`~torch.utils.flop_counter.FlopCounterMode`, forward and backward, counted
eagerly) do not depend on the machine: they say how much of the wall-clock gap between PWM and
SAC is arithmetic, and what each of PWM's knobs costs, on any machine. Each row is
``examples/pwm/config.yaml`` (or ``examples/sac/config.yaml``) with the given Hydra overrides,
on the task's observation and action sizes, for a run of ``--env-steps``: the world-model
update (``PWMOptimizationStepper.world_model_step``), the policy update (``policy_step``: the
actor through the imagined rollouts, TD(λ) targets, the critic's minibatches) and SAC's update
(``SACLoss`` forward and backward), times the number of each in the run (the examples' own
schedule: :func:`pwm_update_counts`; SAC: ``utd_ratio`` updates per agent step after the seed
steps). How fast this machine runs those FLOPs: ``update_path.md``. Writes
``docs/results/update_cost.md``.

    python benchmarks/update_cost.py                               # walker-walk, 100k
    python benchmarks/update_cost.py --task cheetah-run --variants world_model.batch_size=256
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torchrl.objectives import SoftUpdate

from torchrl_pwm.envs import make_env

from _common import SIXTEEN_STEP, matmul_flops, random_slices  # benchmarks/_common.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "pwm"))
from utils import make_pwm_loss, make_pwm_stepper, pwm_update_counts  # noqa: E402

RESULTS = ROOT / "docs" / "results"
#: the 16-step recipe (``_common.SIXTEEN_STEP``), as one row's overrides
SIXTEEN = " ".join(SIXTEEN_STEP)
#: the example's defaults, the 16-step recipe, each recipe knob of the ablation and the issue's
#: candidates alone on the 16-step recipe, and the 1M world model on the defaults; a row's
#: overrides are space-separated Hydra overrides of examples/pwm/config.yaml, applied in order
#: (a later one wins)
DEFAULT_VARIANTS = (
    "",
    SIXTEEN,
    f"{SIXTEEN} world_model.horizon=8",
    f"{SIXTEEN} world_model.batch_size=128",
    f"{SIXTEEN} actor.imagination_horizon=8",
    f"{SIXTEEN} critic.updates=4",
    f"{SIXTEEN} world_model.size=1M",
    f"{SIXTEEN} collector.optim_steps_per_batch=10",
    f"{SIXTEEN} collector.optim_steps_per_batch=10 optim.policy_every=2",
    f"{SIXTEEN} collector.optim_steps_per_batch=10 optim.phase_steps=500",
    "world_model.size=1M",
)


def _config(kind: str, overrides: Sequence[str], env_steps: int) -> DictConfig:
    cfg = OmegaConf.load(ROOT / "examples" / kind / "config.yaml")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    cfg.collector.total_env_steps = env_steps
    if "compile" in cfg:
        cfg.compile.enabled = False  # the same math; FLOPs are counted eagerly
    return cfg


def pwm_cost(task: str, overrides: Sequence[str], env_steps: int) -> dict:
    """GFLOP per world-model and policy update of ``examples/pwm`` with ``overrides`` on
    ``task``, the run's update counts and its total TFLOP."""
    cfg = _config("pwm", overrides, env_steps)
    env = make_env(task, seed=0, action_repeat=cfg.env.action_repeat)
    obs_dim, spec = env.observation_spec["observation"].shape[-1], env.action_spec
    torch.manual_seed(0)
    loss, target_updater = make_pwm_loss(cfg, obs_dim, spec, torch.device("cpu"))
    counts = pwm_update_counts(cfg, env.action_repeat)
    stepper = make_pwm_stepper(cfg, loss, target_updater, max(counts["policy"], 1))
    wm = cfg.world_model
    batch = random_slices(wm.batch_size, wm.horizon, obs_dim, spec.shape[-1])
    model = matmul_flops(lambda: stepper.world_model_step(batch)) / 1e9
    policy = matmul_flops(lambda: stepper.policy_step(batch[:, 0])) / 1e9
    env.close()
    return {
        "world_model_gflop": model,
        "policy_gflop": policy,
        "world_model_updates": counts["world_model"],
        "policy_updates": counts["policy"],
        "run_tflop": (model * counts["world_model"] + policy * counts["policy"]) / 1e3,
    }


def make_sac_update(
    task: str,
    device: torch.device | str,
    overrides: Sequence[str] = (),
    env_steps: int = 100_000,
) -> tuple[Callable[[], None], DictConfig, int]:
    """One update of ``examples/sac`` on ``task`` as a closure over a random batch: ``SACLoss``
    (actor, Q and alpha losses) forward and backward, its Adam step and the target update.
    Returns ``(update, cfg, action_repeat)``."""
    sys.path.insert(0, str(ROOT / "examples" / "sac"))
    try:
        from train import make_sac_loss, make_sac_modules, make_sac_optimizer  # examples/sac
    finally:
        sys.path.pop(0)
    cfg = _config("sac", overrides, env_steps)
    env = make_env(task, seed=0, action_repeat=cfg.env.action_repeat)
    repeat, device = env.action_repeat, torch.device(device)
    torch.manual_seed(0)
    actor, qvalue = make_sac_modules(cfg, env.action_spec.to(device), device)
    fake = env.fake_tensordict().to(device)
    env.close()
    with torch.no_grad():  # materialise the lazy layers
        actor(fake)
        qvalue(fake)
    loss = make_sac_loss(cfg, actor, qvalue)
    optimizer = make_sac_optimizer(cfg, loss)
    target_updater = SoftUpdate(loss, eps=cfg.optim.target_update_polyak)  # as the example
    batch = fake.expand(cfg.optim.batch_size).clone()
    batch["observation"] = torch.randn_like(batch["observation"])
    batch["next", "observation"] = torch.randn_like(batch["next", "observation"])

    def update() -> None:
        out = loss(batch)
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        target_updater.step()

    return update, cfg, repeat


def sac_cost(task: str, overrides: Sequence[str], env_steps: int) -> dict:
    """GFLOP per update of ``examples/sac`` (:func:`make_sac_update`) on ``task``, its update
    count and the run's TFLOP."""
    update, cfg, repeat = make_sac_update(task, "cpu", overrides, env_steps)
    gflop = matmul_flops(update) / 1e9
    c = cfg.collector
    updates = int(max(c.total_env_steps - c.seed_env_steps, 0) // repeat * c.utd_ratio)
    return {"update_gflop": gflop, "updates": updates, "run_tflop": gflop * updates / 1e3}


def markdown(task: str, env_steps: int, sac: dict, rows: list[tuple[str, dict]]) -> str:
    lines = [
        "# What one run computes: PWM's update against SAC's",
        "",
        f"Written by `python benchmarks/update_cost.py --task {task} --env-steps {env_steps}` "
        "(its docstring says what is counted). Matrix-product FLOPs, forward and backward, "
        f"of each update of the examples' defaults (with the row's overrides) on {task}, "
        f"times the number of such updates in a {env_steps // 1000}k-env-step run. FLOPs do "
        "not depend on the machine; how fast this one runs them: `update_path.md`.",
        "",
        f"TorchRL SAC (`examples/sac`): {sac['update_gflop']:.3f} GFLOP per update, "
        f"{sac['updates']:,} updates, **{sac['run_tflop']:.0f} TFLOP per run**.",
        "",
        "| PWM overrides | GFLOP per world-model update | GFLOP per policy update "
        "| world-model / policy updates | TFLOP per run | × SAC |",
        "|---|---|---|---|---|---|",
    ]
    for overrides, r in rows:
        label = f"`{overrides}`" if overrides else "(defaults)"
        if overrides == SIXTEEN:
            label = f"16-step recipe: {label}"
        elif overrides.startswith(SIXTEEN + " "):
            label = f"16-step recipe + `{overrides[len(SIXTEEN) + 1 :]}`"
        lines.append(
            f"| {label} "
            f"| {r['world_model_gflop']:.1f} | {r['policy_gflop']:.1f} "
            f"| {r['world_model_updates']:,} / {r['policy_updates']:,} "
            f"| {r['run_tflop']:.0f} | {r['run_tflop'] / sac['run_tflop']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> list[tuple[str, dict]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="walker-walk")
    p.add_argument("--env-steps", type=int, default=100_000)
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        help="PWM rows: each a quoted, space-separated list of Hydra overrides ('' = defaults)",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    if args.env_steps <= 0:
        p.error(f"--env-steps must be positive, got {args.env_steps}")
    torch.set_num_threads(1)
    sac = sac_cost(args.task, [], args.env_steps)
    print(f"SAC: {sac['update_gflop']:.3f} GFLOP/update, {sac['run_tflop']:.0f} TFLOP/run")
    rows = []
    for variant in args.variants:
        r = pwm_cost(args.task, variant.split(), args.env_steps)
        rows.append((variant, r))
        print(
            f"PWM {variant or '(defaults)':55s} {r['world_model_gflop']:5.1f} + "
            f"{r['policy_gflop']:5.1f} GFLOP/update, {r['run_tflop']:6.0f} TFLOP/run "
            f"({r['run_tflop'] / sac['run_tflop']:.1f}x SAC)",
            flush=True,
        )
    if not args.no_write:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        path = args.results_dir / "update_cost.md"
        path.write_text(markdown(args.task, args.env_steps, sac, rows))
        print(f"-> {path}")
    return rows


if __name__ == "__main__":
    main()
