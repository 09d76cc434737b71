"""TDMPC2Dataset at two dataset sizes: time and peak memory of converting, opening and sampling,
and the sampling rate of [1024, 17]-row slices.

    taskset -c 1 .venv/bin/python benchmarks/dataset.py                 # 0.5 GB and 2 GB
    taskset -c 1 .venv/bin/python benchmarks/dataset.py --sizes-gb 0.1 --batches 5 --no-write

For each size, synthetic chunks in TD-MPC2's exact ``mt30`` format are generated one at a time
(``torch.save`` of a TensorDict ``[E, 501]``: float32 ``obs`` [.., 24] with each episode's task
width filled and the rest 0, float32 ``action`` [.., 6] likewise, NaN action and reward at row
0, int32 ``task`` ids of random mt30 tasks). Each phase then runs in a fresh Python process, so
that the peak memory it reports is its own:

- ``convert``: ``TDMPC2Dataset.convert`` (validation included) into a new folder;
- ``open``: ``TDMPC2Dataset(root)`` and ``make_replay_buffer`` (nothing is read);
- ``sample``: batches of 1024 slices of 17 rows (H = 16) from the memory-mapped storage;
- ``slicesampler``: the same storage sampled by TorchRL's ``SliceSampler(traj_key="episode")``;
- ``in_ram``: TD-MPC2's own approach (every chunk ``torch.load``ed into a ``LazyTensorStorage``
  in RAM with an ``episode`` column, ``SliceSampler``), for comparison.

Memory: ``peak_rss`` is the process's high-water mark (VmHWM), which counts file pages mapped
into the process; ``peak_anon`` is the peak of its anonymous memory (RssAnon, polled every
5 ms): what the process itself allocated, and what cannot be given back to the page cache.
The generated data is deleted at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results, latest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
FIELDS = ["size_gb", "chunk_bytes", "episodes", "rows", "phase", "seconds", "peak_rss_mb",
          "peak_anon_mb", "slices_per_s", "batches", "threads"]  # fmt: skip
ROWS_PER_EPISODE = 501
EPISODE_BYTES = ROWS_PER_EPISODE * (24 * 4 + 6 * 4 + 4 + 4)  # obs, action, reward, task


# -- measurement -----------------------------------------------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class PeakAnon:
    """Polls RssAnon in a thread; ``peak`` is the highest value seen (bytes)."""

    def __init__(self, every: float = 0.005) -> None:
        self.peak, self.every, self._stop = _status("RssAnon"), every, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status("RssAnon"))
            time.sleep(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status("RssAnon"))
        return self.peak


# -- data ------------------------------------------------------------------------------------


def generate(folder: Path, size_gb: float, chunk_episodes: int, seed: int = 0) -> list[Path]:
    """Chunks totalling about ``size_gb`` GB in mt30's format, one chunk in memory at a time."""
    from tensordict import TensorDict

    from torchrl_pwm.envs import task_set

    specs = task_set("mt30")
    obs_dims = torch.tensor([t.obs_dim for t in specs])
    act_dims = torch.tensor([t.action_dim for t in specs])
    episodes = max(1, round(size_gb * 1e9 / EPISODE_BYTES))
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, e0 in enumerate(range(0, episodes, chunk_episodes)):
        n = min(chunk_episodes, episodes - e0)
        task = torch.randint(len(specs), (n,), generator=gen)
        obs = torch.randn(n, ROWS_PER_EPISODE, 24, generator=gen)
        obs *= torch.arange(24) < obs_dims[task][:, None, None]
        action = torch.rand(n, ROWS_PER_EPISODE, 6, generator=gen) * 2 - 1
        action *= torch.arange(6) < act_dims[task][:, None, None]
        action[:, 0] = float("nan")
        reward = torch.rand(n, ROWS_PER_EPISODE, generator=gen)
        reward[:, 0] = float("nan")
        chunk = TensorDict(
            obs=obs,
            action=action,
            reward=reward,
            task=task[:, None].expand(n, ROWS_PER_EPISODE).to(torch.int32).contiguous(),
            batch_size=[n, ROWS_PER_EPISODE],
        )
        path = folder / f"chunk_{i}.pt"
        torch.save(chunk, path)
        paths.append(path)
        del chunk, obs, action, reward
    return paths


# -- phases (each in its own process) --------------------------------------------------------


def phase(name: str, chunks: list[Path], root: Path, batches: int) -> dict:
    from torchrl_pwm.data import TDMPC2Dataset

    peak = PeakAnon()
    t0 = time.perf_counter()
    out: dict = {}
    if name == "convert":
        TDMPC2Dataset.convert(chunks, root, task_set="mt30")
    elif name == "open":
        ds = TDMPC2Dataset(root)
        ds.make_replay_buffer(horizon=16, batch_size=1024)
    elif name == "sample":
        rb = TDMPC2Dataset(root).make_replay_buffer(horizon=16, batch_size=1024)
        for _ in range(3):
            rb.sample()
        t0 = time.perf_counter()
        for _ in range(batches):
            batch = rb.sample()
        assert batch.shape == (1024, 16)
        out["slices_per_s"] = batches * 1024 / (time.perf_counter() - t0)
    elif name == "slicesampler":
        from torchrl.data import SliceSampler, TensorDictReplayBuffer

        ds = TDMPC2Dataset(root)
        rb = TensorDictReplayBuffer(
            storage=ds.storage,
            sampler=SliceSampler(
                slice_len=17, traj_key="episode", strict_length=True, cache_values=True
            ),
            batch_size=1024 * 17,
        )
        for _ in range(3):
            rb.sample()
        t0 = time.perf_counter()
        for _ in range(batches):
            rb.sample().reshape(1024, 17)
        out["slices_per_s"] = batches * 1024 / (time.perf_counter() - t0)
    elif name == "in_ram":  # TD-MPC2's offline loader: every chunk in one RAM storage
        from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer

        from torchrl_pwm.data import load_tdmpc2_chunk

        rows = sum(load_tdmpc2_chunk(c).numel() for c in chunks)
        rb = TensorDictReplayBuffer(
            storage=LazyTensorStorage(rows),
            sampler=SliceSampler(
                slice_len=17, traj_key="episode", strict_length=True, cache_values=True
            ),
            batch_size=1024 * 17,
        )
        import tensordict

        allowed = [tensordict._td.TensorDict, tensordict._reductions._make_td]
        episodes = 0
        for path in chunks:
            with torch.serialization.safe_globals(allowed):  # read whole, as TD-MPC2 does
                td = torch.load(path, weights_only=True)
            e, t = td.batch_size
            td["episode"] = torch.arange(episodes, episodes + e)[:, None].expand(e, t)
            rb.extend(td.reshape(-1))
            episodes += e
            del td
        out["load_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(batches):
            rb.sample().reshape(1024, 17)
        out["slices_per_s"] = batches * 1024 / (time.perf_counter() - t0)
        out["seconds_total"] = out["load_seconds"] + time.perf_counter() - t0
    elif name == "update":  # the pre-training update these batches feed (CPU, 1M dims)
        from torchrl_pwm.envs import task_set
        from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor
        from torchrl_pwm.objectives import PWMLoss
        from torchrl_pwm.trainers import PWMOptimizationStepper

        rb = TDMPC2Dataset(root).make_replay_buffer(horizon=16, batch_size=1024)
        wm = TDMPC2WorldModel(24, 6, size="1M", num_tasks=30,
                              action_dims=[t.action_dim for t in task_set("mt30")])  # fmt: skip
        loss = PWMLoss(wm, make_pwm_actor(wm.latent_dim, 6), ValueEnsemble(wm.latent_dim))
        loss.make_value_estimator(gamma=0.99, lmbda=0.95)
        stepper = PWMOptimizationStepper(loss, horizon=16)
        stepper.world_model_step(rb.sample())
        t0 = time.perf_counter()
        for _ in range(batches):
            stepper.world_model_step(rb.sample())
        out["slices_per_s"] = batches * 1024 / (time.perf_counter() - t0)
    else:
        raise ValueError(name)
    out.setdefault("seconds", time.perf_counter() - t0)
    out["peak_anon"] = peak.stop()
    out["peak_rss"] = max(
        _status("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return out


def run_phase(name: str, chunks: list[Path], root: Path, batches: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--root", str(root), "--batches",
           str(batches), "--threads", str(threads), "--chunks", *map(str, chunks)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"phase {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report ----------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_markdown(rows: list[dict], path: Path) -> None:
    """The results page from ``rows`` (one run: the CSV's last rows of each size and phase)."""
    mb = lambda v: f"{float(v):,.0f}"  # noqa: E731
    sizes = sorted({r["size_gb"] for r in rows}, key=float)
    batches = next((r["batches"] for r in rows if r["phase"] == "sample" and r["batches"]), 50)
    threads = rows[0]["threads"]
    command = (
        "taskset -c 1 .venv/bin/python benchmarks/dataset.py --sizes-gb "
        f"{' '.join(f'{float(s):g}' for s in sizes)} --batches {batches} --threads {threads}"
    )
    lines = [
        "# TD-MPC2 datasets: converting, opening and sampling (`TDMPC2Dataset`)",
        "",
        f"Machine: {_cpu_name()}, {os.cpu_count()} cores, no GPU, torch {torch.__version__}; "
        f"{threads} torch thread(s), pinned to one core; each phase in a fresh process. The "
        "generated chunks and the converted storage sit in the page cache (just written), so "
        "reads come from memory, not from the disk.",
        "",
        "Command (generates synthetic chunks in TD-MPC2's mt30 format, one chunk in memory at a "
        "time, and deletes them afterwards; `--report` rewrites this page from the CSV):",
        "",
        "```bash",
        command,
        "```",
        "",
        "Peak RSS is the process's high-water mark (VmHWM). It counts pages of memory-mapped "
        "files (the chunks read, the storage written or sampled) and of the shared libraries "
        "(about 550 MB here with torch, TorchRL and tensordict loaded): clean file pages that "
        "the kernel reclaims when memory runs short. Peak anonymous memory (RssAnon, polled every "
        "5 ms) is what the process itself allocated (about 250 MB after the imports). Time: the "
        f"phase's work after its imports; for the sampling rows, {batches} batches after 3 "
        "warm-up ones (the TD-MPC2-style row: loading plus the batches).",
        "",
        "| dataset (chunks on disk) | phase | time (s) | peak RSS (MB) | peak anon (MB) | "
        "[1024, 17] slices/s |",
        "|---|---|---|---|---|---|",
    ]
    names = {
        "convert": "convert (validate + write memmap)",
        "open": "open + make_replay_buffer",
        "sample": "sample, EpisodeSliceSampler (ours)",
        "slicesampler": "sample, TorchRL SliceSampler",
        "in_ram": "TD-MPC2-style: load all into RAM + sample",
        "update": "world_model_step, 1M dims, B=1024, H=16 (CPU)",
    }
    for size in sizes:
        for r in (r for r in rows if r["size_gb"] == size):
            rate = f"{float(r['slices_per_s']):,.0f}" if r["slices_per_s"] else ""
            lines.append(
                f"| {int(r['chunk_bytes']) / 1e9:.2f} GB ({int(r['episodes']):,} episodes, "
                f"{int(r['rows']) / 1e6:.1f}M rows) | {names[r['phase']]} "
                f"| {float(r['seconds']):.2f} | {mb(r['peak_rss_mb'])} | {mb(r['peak_anon_mb'])} "
                f"| {rate} |"
            )
    lines.append("")

    def value(size, phase, field):
        row = next((r for r in rows if r["size_gb"] == size and r["phase"] == phase), None)
        return float(row[field]) if row and row[field] != "" else None

    small, large = sizes[0], sizes[-1]
    if len(sizes) > 1:
        lines.append(f"From {float(small):g} GB to {float(large):g} GB of chunks:")
        lines.append("")
        for phase in ("convert", "open", "sample", "slicesampler", "in_ram"):
            a, b = value(small, phase, "peak_anon_mb"), value(large, phase, "peak_anon_mb")
            if a is not None and b is not None:
                lines.append(
                    f"- {names[phase]}: peak anonymous memory {a:,.0f} MB -> {b:,.0f} MB "
                    f"({b - a:+,.0f} MB); peak RSS {value(small, phase, 'peak_rss_mb'):,.0f} -> "
                    f"{value(large, phase, 'peak_rss_mb'):,.0f} MB."
                )
        lines.append("")
    grown = value(large, "sample", "peak_rss_mb")
    if len(sizes) > 1 and grown is not None:
        lines.append(
            f"Sampling's peak RSS grows with the dataset "
            f"({value(small, 'sample', 'peak_rss_mb'):,.0f} -> {grown:,.0f} MB) while its "
            f"anonymous memory does not: {batches} random batches touch most pages of the "
            "storage, which stay mapped as clean page cache. The kernel may evict those pages "
            "(re-reading them from disk when sampled again), so they need not fit in RAM (not "
            "measured here: these datasets fit in the page cache); TD-MPC2's loader needs the "
            "whole dataset as anonymous memory (its row: +1 GB per 1 GB of chunks here; it asks "
            "for a 47 GB buffer for mt30)."
        )
        lines.append("")
    ours, theirs = (
        value(large, "sample", "slices_per_s"),
        value(large, "slicesampler", "slices_per_s"),
    )
    update = value(large, "update", "slices_per_s")
    if ours and theirs:
        lines.append(
            f"Sampling at {float(large):g} GB: {ours:,.0f} slices/s with `EpisodeSliceSampler`, "
            f"{theirs:,.0f} with TorchRL's `SliceSampler` (which, in TorchRL 0.14.1, gathers "
            "every sampled row a second time for its done / `is_init` flags)."
        )
    if ours and update:
        lines.append("")
        lines.append(
            f"The pre-training update (`world_model_step`, 1M-parameter preset, 1024 slices of "
            f"H = 16) consumes {update:,.0f} slices/s on this CPU: sampling on one core is "
            f"{ours / update:,.0f}x faster than the update needs. A GPU update would need "
            f"{ours / 1024:,.1f} updates/s to outrun the sampler (with the storage on the GPU, "
            "gathering happens there instead)."
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[0.5, 2.0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/torchrl_pwm_dataset_bench"))
    parser.add_argument("--chunk-episodes", type=int, default=3000, help="~190 MB per chunk")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--phases", nargs="+",
                        default=["convert", "open", "sample", "slicesampler", "in_ram", "update"])  # fmt: skip
    parser.add_argument("--update-batches", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--report", action="store_true", help="rewrite dataset.md from the CSV")
    # internal: one phase in this process
    parser.add_argument("--phase")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--chunks", type=Path, nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.report:  # rewrite the page from the CSV's latest rows
        rows = latest(list(csv.DictReader((RESULTS / "dataset.csv").open())), ["size_gb", "phase"])
        write_markdown(rows, RESULTS / "dataset.md")
        return
    if args.phase:
        out = phase(args.phase, args.chunks, args.root, args.batches)
        print(json.dumps(out))
        return

    rows = []
    try:
        for size in args.sizes_gb:
            folder = args.workdir / f"{size:g}GB"
            shutil.rmtree(folder, ignore_errors=True)
            chunks = generate(folder / "chunks", size, args.chunk_episodes)
            chunk_bytes = sum(c.stat().st_size for c in chunks)
            root = folder / "converted"
            for name in args.phases:
                batches = args.update_batches if name == "update" else args.batches
                out = run_phase(name, chunks, root, batches, args.threads)
                meta = json.loads((root / "dataset.json").read_text())
                row = {
                    "size_gb": size,
                    "chunk_bytes": chunk_bytes,
                    "episodes": meta["episodes"],
                    "rows": meta["rows"],
                    "phase": name,
                    "seconds": round(out.get("seconds_total", out["seconds"]), 3),
                    "peak_rss_mb": round(out["peak_rss"] / 2**20, 1),
                    "peak_anon_mb": round(out["peak_anon"] / 2**20, 1),
                    "slices_per_s": round(out["slices_per_s"], 1) if "slices_per_s" in out else "",
                    "batches": batches if "slices_per_s" in out else "",
                    "threads": args.threads,
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    if not args.no_write:
        append_results(RESULTS / "dataset.csv", FIELDS, rows)
        write_markdown(rows, RESULTS / "dataset.md")


if __name__ == "__main__":
    main()
