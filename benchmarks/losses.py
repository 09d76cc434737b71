"""Update throughput of the three PWM losses (forward + backward + Adam step).

Measures, for one world-model preset:

- ``TDMPC2ModelLoss``: one update on ``--model-batch`` slices of ``--horizon`` transitions
  (``horizon + 1`` observations each);
- ``FirstOrderActorLoss``: one update from ``--actor-batch`` start states imagined for
  ``--horizon`` steps;
- ``TDLambdaValueLoss``: one minibatch step (``actor_batch * horizon / critic_minibatches``
  samples), and the whole critic phase of a PWM iteration (targets + ``critic_passes x
  critic_minibatches`` steps);
- the policy-learning step of the original code's ``update()``: one actor update and its
  critic phase.

Usage::

    python benchmarks/losses.py --preset 5M            # the issue's reference setting
    python benchmarks/losses.py --preset 1M --device cuda

Results are appended to ``docs/results/losses.csv`` and the table of the latest runs is
rewritten in ``docs/results/losses.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import torch
from tensordict import TensorDict

import torchrl_pwm
from torchrl_pwm.envs import LatentWorldModelEnv
from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor
from torchrl_pwm.objectives import FirstOrderActorLoss, TDLambdaValueLoss, TDMPC2ModelLoss

from _common import append_results, latest, sync  # benchmarks/_common.py

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
FIELDS = [
    "date",
    "device",
    "threads",
    "preset",
    "what",
    "batch",
    "horizon",
    "seconds_per_update",
    "updates_per_second",
    "torch",
]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or "cpu"


def _time(fn, device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="5M")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--observation-dim", type=int, default=17, help="17: cheetah-run")
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--model-batch", type=int, default=256)
    parser.add_argument("--actor-batch", type=int, default=512)
    parser.add_argument("--critic-passes", type=int, default=8)
    parser.add_argument("--critic-minibatches", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    obs_dim, act_dim, horizon = args.observation_dim, args.action_dim, args.horizon

    wm = TDMPC2WorldModel(obs_dim, act_dim, size=args.preset).to(device)
    env = LatentWorldModelEnv(wm)
    actor = make_pwm_actor(wm.latent_dim, env.action_spec, device=device)
    critic = ValueEnsemble(wm.latent_dim, device=device)
    model_loss = TDMPC2ModelLoss(wm)
    actor_loss = FirstOrderActorLoss(actor, critic, env, imagination_horizon=horizon)
    value_loss = TDLambdaValueLoss(critic)
    wm_opt = torch.optim.Adam(wm.parameters(), lr=3e-4)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=5e-4, betas=(0.7, 0.95))
    critic_opt = torch.optim.Adam(critic.parameters(), lr=5e-4, betas=(0.7, 0.95))

    b = args.model_batch
    slices = TensorDict(
        observation=torch.randn(b, horizon, obs_dim),
        action=torch.rand(b, horizon, act_dim) * 2 - 1,
        next=TensorDict(
            observation=torch.randn(b, horizon, obs_dim),
            reward=torch.rand(b, horizon, 1),
            batch_size=[b, horizon],
        ),
        batch_size=[b, horizon],
    ).to(device)
    starts = TensorDict(
        observation=torch.randn(args.actor_batch, obs_dim), batch_size=[args.actor_batch]
    ).to(device)

    def model_update():
        out = model_loss(slices)
        (out["loss_consistency"] + out["loss_reward"]).backward()
        torch.nn.utils.clip_grad_norm_(wm.parameters(), 20.0)
        wm_opt.step()
        wm_opt.zero_grad(set_to_none=True)

    state = {}

    def actor_update():
        out = actor_loss(starts)
        out["loss_actor"].backward()
        torch.nn.utils.clip_grad_norm_(actor.parameters(), 1.0)
        actor_opt.step()
        actor_opt.zero_grad(set_to_none=True)
        state["trajectory"] = out["imagined_trajectory"]

    actor_update()
    flat = value_loss.compute_targets(state["trajectory"]).reshape(-1)
    minibatch = flat[: flat.shape[0] // args.critic_minibatches]

    def critic_step(data=minibatch):
        value_loss(data)["loss_value"].backward()
        torch.nn.utils.clip_grad_norm_(critic.parameters(), 100.0)
        critic_opt.step()
        critic_opt.zero_grad(set_to_none=True)

    def critic_phase():
        data = value_loss.compute_targets(state["trajectory"]).reshape(-1)
        for _ in range(args.critic_passes):
            for idx in torch.randperm(data.shape[0], device=device).chunk(args.critic_minibatches):
                critic_step(data[idx])

    def policy_step():
        actor_update()
        critic_phase()

    runs = [
        ("model_loss_update", model_update, b, args.warmup, args.repeats),
        ("actor_loss_update", actor_update, args.actor_batch, args.warmup, args.repeats),
        ("value_loss_minibatch_step", critic_step, minibatch.shape[0], args.warmup, args.repeats),
        ("critic_phase", critic_phase, args.actor_batch, 1, max(2, args.repeats // 2)),
        (
            "policy_step_actor_plus_critic",
            policy_step,
            args.actor_batch,
            1,
            max(2, args.repeats // 2),
        ),
    ]
    rows = []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    dev_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu"
    )
    for what, fn, batch, warmup, repeats in runs:
        sec = _time(fn, device, warmup, repeats)
        row = {
            "date": stamp,
            "device": f"{device.type} ({dev_name})",
            "threads": args.threads,
            "preset": args.preset,
            "what": what,
            "batch": batch,
            "horizon": horizon,
            "seconds_per_update": f"{sec:.4f}",
            "updates_per_second": f"{1 / sec:.2f}",
            "torch": torch.__version__,
        }
        rows.append(row)
        print(f"{what:32s} batch {batch:5d}  {sec * 1e3:9.1f} ms  {1 / sec:8.2f} /s", flush=True)
    if not args.no_write:
        _write(rows)
    return rows


def _write(rows: list[dict]) -> None:
    every = append_results(RESULTS / "losses.csv", FIELDS, rows)
    lines = [
        "# Loss update throughput",
        "",
        "Forward + backward + Adam step (with the DESIGN.md gradient clipping), synthetic",
        "inputs of cheetah-run's sizes (observation 17, action 6). Written by",
        "`python benchmarks/losses.py --preset <size>`; all runs are kept in `losses.csv`.",
        f"torchrl_pwm {torchrl_pwm.__version__}.",
        "",
        "| device | threads | preset | update | batch | H | s/update | updates/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in latest(every, ("device", "threads", "preset", "what")):
        lines.append(
            f"| {r['device']} | {r['threads']} | {r['preset']} | {r['what']} | {r['batch']} | "
            f"{r['horizon']} | {r['seconds_per_update']} | {r['updates_per_second']} |"
        )
    lines += ["", "Analysis and comparison with the original code: `losses_notes.md`."]
    (RESULTS / "losses.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
