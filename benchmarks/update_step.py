"""One online PWM update (world model + actor + critic, ``PWMOptimizationStepper.step``),
eager against ``torch.compile``.

Builds the networks, losses and optimisation schedule of ``examples/pwm/config.yaml`` (the
online defaults: latent 128, MLPs 256 wide, 101 reward bins, H = 16, 256 slices per update)
with the example's own ``examples/pwm/utils.py``, feeds the stepper synthetic slices of
cheetah-run's sizes (observation 17, action 6), and times ``--rounds`` rounds of ``--steps``
updates for each variant, alternating the variants between rounds so that a background load
hits both alike. ``compile`` is :func:`torchrl_pwm.modules.compile_networks` (every MLP
compiled in place; the one-exp :class:`~torchrl_pwm.modules.Mish` under Inductor); its
warm-up (compilation) is reported apart.

Usage::

    python benchmarks/update_step.py --threads 1
    python benchmarks/update_step.py --device cuda --variants eager compile

Appends to ``docs/results/update_step.csv`` and rewrites ``docs/results/update_step.md``
(the latest measurement of each device / threads / variant).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from torchrl.data import Bounded

from torchrl_pwm.modules import compile_networks

from _common import append_results, latest, sync  # benchmarks/_common.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "pwm"))
from utils import make_pwm_loss, make_pwm_stepper  # noqa: E402  (examples/pwm/utils.py)

RESULTS = ROOT / "docs" / "results"
FIELDS = ["date", "device", "threads", "variant", "warmup_s", "s_per_update", "speedup", "torch"]
VARIANTS = {"eager": None, "compile": {}, "compile-max-autotune": {"mode": "max-autotune"}}


def build_stepper(cfg, obs_dim: int, act_dim: int, device: torch.device, variant: str):
    """The example's agent and stepper (``examples/pwm/utils.py``); ``variant`` names the
    compilation."""
    torch.manual_seed(0)
    spec = Bounded(-1.0, 1.0, shape=(act_dim,), device=device)
    cfg = cfg.copy()
    cfg.compile.enabled = False  # compiled below, with the variant's options
    loss, target_updater = make_pwm_loss(cfg, obs_dim, spec, device)
    if VARIANTS[variant] is not None:
        compile_networks(loss, **VARIANTS[variant])
    return make_pwm_stepper(cfg, loss, target_updater, optim_steps=10_000)


def synthetic_slices(cfg, obs_dim: int, act_dim: int, device: torch.device) -> TensorDict:
    """A flat replay-buffer sample: ``batch_size`` slices of ``horizon`` transitions."""
    b, h = cfg.world_model.batch_size, cfg.world_model.horizon
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(b, h + 1, obs_dim, generator=g)
    return (
        TensorDict(
            observation=obs[:, :-1],
            action=torch.rand(b, h, act_dim, generator=g) * 2 - 1,
            next=TensorDict(observation=obs[:, 1:], reward=torch.rand(b, h, 1, generator=g)),
            batch_size=[b, h],
        )
        .reshape(-1)
        .to(device)
    )


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["eager", "compile"], choices=VARIANTS)
    parser.add_argument("--warmup", type=int, default=3, help="updates before timing")
    parser.add_argument("--steps", type=int, default=5, help="updates per timed round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--observation-dim", type=int, default=17, help="17: cheetah-run")
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = OmegaConf.load(ROOT / "examples" / "pwm" / "config.yaml")
    batch = synthetic_slices(cfg, args.observation_dim, args.action_dim, device)

    steppers, warmup = {}, {}
    for variant in args.variants:
        steppers[variant] = build_stepper(
            cfg, args.observation_dim, args.action_dim, device, variant
        )
        start = time.perf_counter()
        for _ in range(args.warmup):
            steppers[variant].step(None, batch)
        sync(device)
        warmup[variant] = time.perf_counter() - start
        print(f"{variant}: warm-up ({args.warmup} updates) {warmup[variant]:.1f} s", flush=True)
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for _ in range(args.rounds):
        for variant, stepper in steppers.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                stepper.step(None, batch)
            sync(device)
            times[variant].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times[args.variants[0]])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "2-core AMD EPYC"
    rows = []
    for variant in args.variants:
        sec = statistics.median(times[variant])
        rows.append({
            "date": stamp, "device": f"{device.type} ({name})", "threads": args.threads,
            "variant": variant, "warmup_s": f"{warmup[variant]:.1f}",
            "s_per_update": f"{sec:.4f}", "speedup": f"{base / sec:.2f}",
            "torch": torch.__version__,
        })  # fmt: skip
        spread = f"{min(times[variant]):.3f}-{max(times[variant]):.3f}"
        print(f"{variant:22s} {sec:.4f} s/update (rounds {spread}), x{base / sec:.2f}")
    if not args.no_write:
        _write(rows)
    return rows


def _write(rows: list[dict]) -> None:
    every = append_results(RESULTS / "update_step.csv", FIELDS, rows)
    lines = [
        "# One online PWM update: eager against torch.compile",
        "",
        "`PWMOptimizationStepper.step` with `examples/pwm/config.yaml`'s networks and schedule",
        "(one world-model, one actor and one critic-minibatch update on 256 slices x 16",
        "transitions), synthetic cheetah-run-sized data. Median of the timed rounds; warm-up",
        "includes compilation. Written by `python benchmarks/update_step.py`; all runs are in",
        "`update_step.csv`. Analysis: `update_step_notes.md`.",
        "",
        "| device | threads | variant | warm-up (s) | s/update | speed-up | torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in latest(every, ("device", "threads", "variant")):
        lines.append(
            f"| {r['device']} | {r['threads']} | {r['variant']} | {r['warmup_s']} | "
            f"{r['s_per_update']} | {r['speedup']} | {r['torch']} |"
        )
    (RESULTS / "update_step.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
