"""What the benchmarks share: device sync, random replay slices, FLOP counting, the speed
benchmarks' append-only results CSV, and the check that keeps a published table a clone cannot
rebuild."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tensordict import TensorDict
from torch.utils.flop_counter import FlopCounterMode

#: The 16-step recipe, ``examples/pwm``'s defaults until 2026-11-30 (the paper's horizons at
#: 256 slices), as Hydra overrides: the ablation's arms, update_cost's rows and the offline
#: benchmark's PWM data run pin it, so that the 8-step defaults do not change what they measure.
SIXTEEN_STEP = (
    "world_model.batch_size=256",
    "world_model.horizon=16",
    "actor.imagination_horizon=16",
)


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_slices(batch: int, horizon: int, obs_dim: int, act_dim: int, device="cpu") -> TensorDict:
    """``[batch, horizon]`` replay slices of random observations, actions in [-1, 1] and
    rewards (seeded): an online PWM update's input, for timing and counting it."""
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(batch, horizon + 1, obs_dim, generator=g)
    return TensorDict(
        observation=obs[:, :-1],
        action=torch.rand(batch, horizon, act_dim, generator=g) * 2 - 1,
        next=TensorDict(observation=obs[:, 1:], reward=torch.rand(batch, horizon, 1, generator=g)),
        batch_size=[batch, horizon],
    ).to(device)


class _TotalsOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP counts as global."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        return None


def matmul_flops(fn) -> float:
    """Matrix-product FLOPs (forward and backward) of one call of ``fn``, counted eagerly
    (:class:`~torch.utils.flop_counter.FlopCounterMode`; the same math when compiled)."""
    counter = FlopCounterMode(display=False)
    # Totals only: its per-module tracker walks every module's children, and TorchRL losses
    # hold TensorDictParams, which refuse the equality test that walk makes.
    counter.mod_tracker = _TotalsOnly()
    with torch.compiler.set_stance("force_eager"), counter:
        fn()
    return counter.get_total_flops()


def append_results(path: Path, fields: Sequence[str], rows: list[dict]) -> list[dict]:
    """Add ``rows`` to the CSV at ``path`` (rewritten whole through a temporary file, so a
    killed run leaves the old file intact) and return every row, oldest first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = list(csv.DictReader(path.open())) if path.exists() else []
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(old + rows)
    os.replace(tmp, path)
    return old + rows


def unrebuilt_rows(published: Path, key: Sequence[str], have: set[tuple[str, ...]]) -> list[str]:
    """Rows of the ``published`` CSV whose ``key`` columns are not in ``have`` (the keys this
    run can rebuild), each as its key joined by spaces: a benchmark run in a clone without the
    published run folders must not replace the table with its own few rows."""
    if not published.exists():
        return []
    with published.open(newline="") as f:
        listed = [tuple(row[k] for k in key) for row in csv.DictReader(f)]
    return [" ".join(k) for k in listed if k not in have]


def latest(rows: list[dict], key: Sequence[str]) -> list[dict]:
    """The last row of each ``key`` combination, in the order the combinations first appear."""
    return list({tuple(r[k] for k in key): r for r in rows}.values())
