"""benchmarks/update_cost.py: FLOPs per update and per run, PWM's knobs against SAC."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests import load_module
from tests.examples.test_pwm_example import TINY_NETS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cost():
    return load_module(ROOT / "benchmarks" / "update_cost.py")


def test_matmul_flops_of_a_linear_layer_by_hand(cost):
    """Forward 2·B·in·out, backward twice that (input and weight gradients): 6·B·in·out; a
    TorchRL loss holding TensorDictParams is counted too (the module tracker is bypassed)."""
    common = load_module(ROOT / "benchmarks" / "_common.py")
    layer, x = torch.nn.Linear(7, 5), torch.randn(11, 7, requires_grad=True)
    assert common.matmul_flops(lambda: layer(x).sum().backward()) == 6 * 11 * 7 * 5
    sac = cost.sac_cost("cartpole-swingup", ["network.hidden_sizes=[8]"], env_steps=10_000)
    assert sac["update_gflop"] > 0 and sac["run_tflop"] > 0


def test_update_counts_follow_the_examples_schedule():
    sys.path.insert(0, str(ROOT / "examples" / "pwm"))
    try:
        utils = load_module(ROOT / "examples" / "pwm" / "utils.py")
    finally:
        sys.path.pop(0)
    cfg = OmegaConf.load(ROOT / "examples" / "pwm" / "config.yaml")
    cfg.collector.total_env_steps = 100_000
    # (100k - 5k seed env steps) / repeat 2 = 47,500 agent steps; 5 updates per 10
    assert utils.pwm_update_counts(cfg, 2) == {"steps": 23_750, "world_model": 23_750,
                                               "policy": 23_750}  # fmt: skip
    cfg.optim.policy_every = 2
    assert utils.pwm_update_counts(cfg, 2)["policy"] == 11_875
    # 23 cycles of 500 model + 500 policy steps, then 500 model and 250 policy steps; the
    # first step also updates the policy
    cfg.optim.policy_every, cfg.optim.phase_steps = 1, 500
    assert utils.pwm_update_counts(cfg, 2) == {"steps": 23_750, "world_model": 12_000,
                                               "policy": 11_751}  # fmt: skip


def test_flops_scale_with_the_batch_and_the_table_is_written(cost, tmp_path):
    """Half the slices, half the FLOPs of both updates (every product is linear in the
    batch); the command writes one row per variant against SAC."""
    tiny = " ".join(TINY_NETS)
    full = cost.pwm_cost("cartpole-swingup", tiny.split(), env_steps=10_000)
    half = cost.pwm_cost("cartpole-swingup", [*tiny.split(), "world_model.batch_size=8"], 10_000)
    assert half["world_model_gflop"] == pytest.approx(full["world_model_gflop"] / 2)
    assert half["policy_gflop"] == pytest.approx(full["policy_gflop"] / 2)
    assert full["run_tflop"] == pytest.approx(
        (full["world_model_gflop"] + full["policy_gflop"]) * full["policy_updates"] / 1e3
    )
    rows = cost.main(["--task", "cartpole-swingup", "--env-steps", "10000",
                      "--variants", tiny, "--results-dir", str(tmp_path)])  # fmt: skip
    assert len(rows) == 1
    table = (tmp_path / "update_cost.md").read_text()
    assert table.count("| `world_model.latent_dim=16") == 1 and "TFLOP per run" in table


def test_rows_name_the_recipe_they_change_and_override_existing_keys(cost):
    """The default rows override keys of examples/pwm/config.yaml, and the table labels a row
    on the 16-step recipe as such (its overrides are long)."""
    cfg = OmegaConf.load(ROOT / "examples" / "pwm" / "config.yaml")
    for row in cost.DEFAULT_VARIANTS:
        for key in (o.split("=", 1)[0] for o in row.split()):
            assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", (row, key)
    sac = {"update_gflop": 1.0, "updates": 10, "run_tflop": 1.0}
    r = {"world_model_gflop": 1.0, "policy_gflop": 1.0, "world_model_updates": 1,
         "policy_updates": 1, "run_tflop": 2.0}  # fmt: skip
    table = cost.markdown("walker-walk", 1000, sac, [
        ("", r), (cost.SIXTEEN, r), (f"{cost.SIXTEEN} critic.updates=4", r)
    ])  # fmt: skip
    assert "| (defaults) |" in table
    assert f"| 16-step recipe: `{cost.SIXTEEN}` |" in table
    assert "| 16-step recipe + `critic.updates=4` |" in table
