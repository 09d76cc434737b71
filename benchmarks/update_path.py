"""The update path against the machine's own limit: every PWM update, eager and compiled.

Measures, in one run, on one device:

- ``peak``: the practical fp32 matmul peak, ``torch.mm`` / ``torch.bmm`` on the policy step's
  own GEMM shapes (the best of them, in IEEE float32, is the reference for every "% of peak"),
  each with its mean relative error against float64 (``rel_error``);
- ``policy_step``: PWM's offline policy-learning step on a frozen world model
  (``PWMOptimizationStepper.policy_step``: one actor update through ``B`` imagined rollouts of
  H = 16, TD(λ) targets, 8 passes x 4 critic minibatches; actor [400, 200, 100], 3 critics
  [400, 200], a TD-MPC2 preset world model with a 3-task embedding, observation 24, action 6)
  at 1M dims with B = 512 and B = 64 and at 5M dims with B = 512;
- ``pretrain``: one world-model pre-training update (``world_model_step``: ``TDMPC2ModelLoss``
  on 256 slices x 16 steps, clip, Adam) at 1M and 5M;
- ``online``: one update of ``examples/pwm`` with its config (``PWMOptimizationStepper.step``);
- ``sac`` (only with ``--only ... sac``): one update of ``examples/sac`` with its config
  (walker-walk sizes): the baseline's update on the same device;
- ``action_latency``: one action at batch 1 from an observation (5M encoder + actor), through
  ``TensorDictSequential(encoder, actor)`` and through ``make_pwm_policy`` (eager and
  compiled), on one thread.

FLOPs of each step are counted with :class:`torch.utils.flop_counter.FlopCounterMode`
(matrix products, forward and backward); "% of peak" is ``flops / seconds / peak``. The
variants are ``eager``, ``compile`` (``PWMOptimConfig(compile=True)``: the four tensor
functions of an update compiled with ``fullgraph=True``), ``max-autotune`` (the same with
``compile_mode="max-autotune"``: Inductor benchmarks its own GEMM kernels, with the bias and
activation fused in, against ATen's) and, on CUDA, ``cudagraph``
(``compile_mode="reduce-overhead"``: the compiled graphs replayed as CUDA graphs).

Usage::

    python benchmarks/update_path.py                      # CPU, 2 threads, eager + compile
    python benchmarks/update_path.py --device cuda --variants eager compile cudagraph
    python benchmarks/update_path.py --only policy_step --variants compile --quick
    python benchmarks/update_path.py --matmul-precision medium   # float32 matmuls on bf16 units

``--matmul-precision`` (:func:`torch.set_float32_matmul_precision`, ``highest`` by default)
applies to every row of the run; rows under another precision carry it in their variant
(``compile+medium``) and peak name, and their "% of peak" is of the IEEE float32 peak (it may
pass 100).

Rows are appended to ``docs/results/update_path.csv`` as they are measured (a killed run
keeps what it finished) and ``docs/results/update_path.md`` shows the latest of each.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torchrl.data import Bounded

from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor, make_pwm_policy
from torchrl_pwm.objectives import PWMLoss
from torchrl_pwm.trainers import PWMOptimConfig, PWMOptimizationStepper

from _common import (  # benchmarks/_common.py
    append_results,
    latest,
    matmul_flops,
    random_slices,
    sync,
)
from update_cost import make_sac_update  # benchmarks/update_cost.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "pwm"))
from utils import make_pwm_loss, make_pwm_stepper  # noqa: E402  (examples/pwm/utils.py)

RESULTS = ROOT / "docs" / "results"
FIELDS = [
    "date", "device", "threads", "what", "preset", "batch", "variant", "seconds", "gflop",
    "gflops_per_s", "pct_of_peak", "warmup_s", "torch", "rel_error",
]  # fmt: skip
OBS, ACT, HORIZON, TASKS = 24, 6, 16, 3
VARIANTS = {
    "eager": (False, None),
    "compile": (True, None),
    "max-autotune": (True, "max-autotune"),  # Inductor's own GEMMs with fused epilogues
    "cudagraph": (True, "reduce-overhead"),
}


def _time(fn, device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (each synchronised)."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device: torch.device, repeats: int) -> list[dict]:
    """GFLOP/s of the policy step's largest GEMMs (critic layers at minibatch 2048)."""
    g = torch.Generator(device=device).manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, device=device, generator=g)

    shapes = {
        "mm 2048x128 @ 128x1200": (torch.mm, rand(2048, 128), rand(128, 1200)),
        "bmm 3x2048x400 @ 3x400x200": (torch.bmm, rand(3, 2048, 400), rand(3, 400, 200)),
        "bmm 3x400x2048 @ 3x2048x200": (torch.bmm, rand(3, 400, 2048), rand(3, 2048, 200)),
        "mm 8192x134 @ 134x384": (torch.mm, rand(8192, 134), rand(134, 384)),
        "mm 8192x384 @ 384x384": (torch.mm, rand(8192, 384), rand(384, 384)),
    }
    out = []
    for name, (op, a, b) in shapes.items():
        flops = 2 * a.numel() * b.shape[-1]
        for _ in range(3):
            op(a, b)
        sec = _time(lambda op=op, a=a, b=b: op(a, b), device, max(repeats * 4, 20))
        exact = op(a.double(), b.double())
        error = (op(a, b).double() - exact).abs().mean() / exact.abs().mean()
        out.append(
            {"what": f"peak {name}", "seconds": sec, "gflop": flops / 1e9, "rel_error": error}
        )
    return out


def _offline_agent(preset: str, device: torch.device, variant: str):
    compile_, mode = VARIANTS[variant]
    torch.manual_seed(0)
    wm = TDMPC2WorldModel(OBS, ACT, size=preset, num_tasks=TASKS).to(device)
    actor = make_pwm_actor(wm.latent_dim, ACT, device=device)
    critic = ValueEnsemble(wm.latent_dim, device=device)
    loss = PWMLoss(wm, actor, critic, imagination_horizon=HORIZON)
    loss.make_value_estimator(gamma=0.99, lmbda=0.95)
    config = PWMOptimConfig(compile=compile_, compile_mode=mode)  # 8 x 4 critic minibatches
    return loss, PWMOptimizationStepper(loss, HORIZON, config=config)


def _slices(batch: int, device: torch.device) -> TensorDict:
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(batch, HORIZON + 1, OBS, generator=g)
    return TensorDict(
        observation=obs[:, :-1],
        action=torch.rand(batch, HORIZON, ACT, generator=g) * 2 - 1,
        task=torch.randint(0, TASKS, (batch, 1), generator=g).expand(batch, HORIZON),
        next=TensorDict(observation=obs[:, 1:], reward=torch.rand(batch, HORIZON, 1, generator=g)),
        batch_size=[batch, HORIZON],
    ).to(device)


def policy_step(preset, batch, device, variant, repeats) -> dict:
    loss, stepper = _offline_agent(preset, device, variant)
    loss.world_model.requires_grad_(False)  # frozen, as offline policy learning
    start = _slices(batch, device)[:, 0]
    return _measure(lambda: stepper.policy_step(start), device, repeats)


def pretrain(preset, device, variant, repeats) -> dict:
    _, stepper = _offline_agent(preset, device, variant)
    batch = _slices(256, device)
    return _measure(lambda: stepper.world_model_step(batch), device, repeats)


def online(device, variant, repeats) -> tuple[dict, int]:
    compile_, mode = VARIANTS[variant]
    cfg = OmegaConf.load(ROOT / "examples" / "pwm" / "config.yaml")
    cfg.compile.enabled, cfg.compile.mode = compile_, mode
    torch.manual_seed(0)
    spec = Bounded(-1.0, 1.0, shape=(ACT,), device=device)
    loss, target_updater = make_pwm_loss(cfg, 17, spec, device)
    stepper = make_pwm_stepper(cfg, loss, target_updater, policy_updates=10_000)
    b = cfg.world_model.batch_size
    batch = random_slices(b, cfg.world_model.horizon, 17, ACT, device)
    return _measure(lambda: stepper.step(None, batch), device, repeats), b


def sac(device, variant, repeats) -> tuple[dict, int]:
    """One update of ``examples/sac`` (walker-walk sizes, batch 256), for the same device's
    comparison; ``compile`` variants ``torch.compile`` the whole update (loss, backward, Adam,
    target update), as TorchRL's sota SAC script can (the example itself runs eager)."""
    compile_, mode = VARIANTS[variant]
    update, cfg, _ = make_sac_update("walker-walk", device)
    if compile_:
        update = torch.compile(update, mode=mode)
    return _measure(update, device, repeats), cfg.optim.batch_size


def _measure(fn, device, repeats: int) -> dict:
    start = time.perf_counter()
    for _ in range(2):  # compilation (and CUDA-graph recording) happen here
        fn()
    sync(device)
    warmup = time.perf_counter() - start
    flops = matmul_flops(fn)
    return {"seconds": _time(fn, device, repeats), "gflop": flops / 1e9, "warmup_s": warmup}


def action_latency(device: torch.device, repeats: int) -> list[dict]:
    """Seconds per action at batch 1 (5M encoder + PWM actor), one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    wm = TDMPC2WorldModel(OBS, ACT, size="5M").to(device)
    actor = make_pwm_actor(wm.latent_dim, ACT, device=device)
    td = TensorDict(observation=torch.randn(1, OBS), batch_size=[1]).to(device)
    policies = {
        "TensorDictSequential": TensorDictSequential(wm.encoder, actor, selected_out_keys=["action"]),
        "make_pwm_policy": make_pwm_policy(wm, actor),
        "make_pwm_policy compiled": make_pwm_policy(wm, actor, compile=True),
    }  # fmt: skip
    rows = []
    with torch.no_grad():
        for name, policy in policies.items():
            for _ in range(20):
                policy(td)
            n = max(repeats * 200, 1000)
            sync(device)
            start = time.perf_counter()
            for _ in range(n):
                policy(td)
            sync(device)
            rows.append(
                {"what": f"action_latency {name}", "seconds": (time.perf_counter() - start) / n}
            )
    torch.set_num_threads(threads)
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["eager", "compile"], choices=VARIANTS)
    parser.add_argument(
        "--only",
        nargs="+",
        default=["peak", "policy_step", "pretrain", "online", "action_latency"],
        choices=["peak", "policy_step", "pretrain", "online", "sac", "action_latency"],
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1M B=512 policy step only")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--matmul-precision", default="highest", choices=["highest", "high", "medium"]
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    suffix = "" if args.matmul_precision == "highest" else f"+{args.matmul_precision}"
    from torch._inductor import config as inductor_config  # no kernel timing tables on stderr

    inductor_config.autotune_num_choices_displayed = 0
    inductor_config.max_autotune_report_choices_stats = False
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    rows: list[dict] = []
    peak = None

    def emit(row: dict, preset="", batch="", variant="") -> None:
        gflops = row["gflop"] / row["seconds"] if row.get("gflop") else None
        what = row["what"].replace("peak ", f"peak{suffix} ", 1)
        variant = f"{variant}{suffix}" if variant else variant
        full = {
            "date": stamp, "device": f"{device.type} ({name})", "threads": args.threads,
            "what": what, "preset": preset, "batch": batch, "variant": variant,
            "seconds": f"{row['seconds']:.5f}",
            "gflop": f"{row['gflop']:.2f}" if row.get("gflop") else "",
            "gflops_per_s": f"{gflops:.1f}" if gflops else "",
            "pct_of_peak": f"{100 * gflops / peak:.0f}" if gflops and peak else "",
            "warmup_s": f"{row['warmup_s']:.1f}" if "warmup_s" in row else "",
            "torch": torch.__version__,
            "rel_error": f"{row['rel_error']:.1e}" if "rel_error" in row else "",
        }  # fmt: skip
        rows.append(full)
        print(
            f"{full['what']:40s} {preset:3s} {batch!s:>4s} {variant:14s} {row['seconds']:10.5f} s"
            f"  {full['gflops_per_s']:>7s} GFLOP/s  {full['pct_of_peak']:>3s}% of peak",
            flush=True,
        )
        if not args.no_write:
            append_results(RESULTS / "update_path.csv", FIELDS, [full])

    measured = matmul_peak(device, args.repeats)  # the reference of every "% of peak"
    peak = max(r["gflop"] / r["seconds"] for r in measured) if not suffix else 0.0
    if not args.no_write and (RESULTS / "update_path.csv").exists():
        old = append_results(RESULTS / "update_path.csv", FIELDS, [])
        peak = max(peak, _best_peaks(old).get((f"{device.type} ({name})", str(args.threads)), 0))
    if "peak" in args.only:
        for r in measured:
            emit(r)
    policy_cases = [("1M", 512)] if args.quick else [("1M", 512), ("1M", 64), ("5M", 512)]
    variants = [v for v in args.variants if v != "cudagraph" or device.type == "cuda"]
    cases = []  # (what, preset, batch, variant, measure); case by case, every variant of a
    # case together: a run cut short has whole comparisons
    if "policy_step" in args.only:
        for preset, batch in policy_cases:
            for v in variants:
                cases.append(("policy_step", preset, batch, v, partial(policy_step, preset, batch)))
    if "pretrain" in args.only and not args.quick:
        for preset in ("1M", "5M"):
            for v in variants:
                cases.append(("pretrain_update", preset, 256, v, partial(pretrain, preset)))
    for only, what, preset, fn in (("online", "online_update", "pwm", online),
                                   ("sac", "sac_update", "sac", sac)):  # fmt: skip
        if only in args.only and not args.quick:
            cases += [(what, preset, None, v, fn) for v in variants]
    failed = []
    for what, preset, batch, variant, measure in cases:
        try:  # one failing case (a compile mode on a new device, say) loses no other row
            r = measure(device, variant, args.repeats)
        except Exception as err:  # reported, and the run exits non-zero
            failed.append(f"{what} {preset} {batch or ''} {variant}: {type(err).__name__}: {err}")
            print(f"FAILED {failed[-1]}", file=sys.stderr, flush=True)
            torch._dynamo.reset()
            continue
        if isinstance(r, tuple):  # online / sac: (row, batch)
            r, batch = r
        emit({"what": what, **r}, preset, batch, variant)
    if "action_latency" in args.only and not args.quick:
        for r in action_latency(device, args.repeats):
            emit(r, "5M", 1)
    if not args.no_write:
        _write_markdown()
    if failed:
        raise SystemExit(f"{len(failed)} case(s) failed:\n" + "\n".join(failed))
    return rows


def _cpu_name() -> str:
    import os

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return "cpu"


def _best_peaks(rows: list[dict]) -> dict[tuple[str, str], float]:
    """The best IEEE float32 ``peak`` GFLOP/s ever measured per (device, threads): the
    machine's practical limit (a peak measured beside another job would understate it)."""
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["what"].startswith(("peak mm", "peak bmm")) and r["gflops_per_s"]:
            key = (r["device"], str(r["threads"]))
            best[key] = max(best.get(key, 0.0), float(r["gflops_per_s"]))
    return best


def _write_markdown() -> None:
    every = append_results(RESULTS / "update_path.csv", FIELDS, [])
    peaks = _best_peaks(every)
    lines = [
        "# The update path against the machine's limit",
        "",
        "Written by `python benchmarks/update_path.py` (see its docstring for what each row",
        "times); every run is kept in `update_path.csv`. `% of peak`: matrix-product FLOPs of",
        "the step (forward and backward, `FlopCounterMode`) per second over the best `peak`",
        "row ever measured on the same device and thread count (IEEE float32; rows marked",
        "`+medium` ran under `torch.set_float32_matmul_precision(\"medium\")`, float32 matmuls",
        "on bfloat16 units, and may pass 100). `rel. error`: mean relative error of the product",
        "against float64. Analysis: `update_path_notes.md`.",
        "",
        "| device | threads | what | preset | batch | variant | s | GFLOP | GFLOP/s | % of peak | warm-up s | rel. error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in latest(every, ("device", "threads", "what", "preset", "batch", "variant")):
        peak = peaks.get((r["device"], str(r["threads"])))
        pct = f"{100 * float(r['gflops_per_s']) / peak:.0f}" if r["gflops_per_s"] and peak else ""
        lines.append(
            f"| {r['device']} | {r['threads']} | {r['what']} | {r['preset']} | {r['batch']} | "
            f"{r['variant']} | {r['seconds']} | {r['gflop']} | {r['gflops_per_s']} | "
            f"{pct} | {r['warmup_s']} | {r.get('rel_error') or ''} |"
        )
    (RESULTS / "update_path.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
