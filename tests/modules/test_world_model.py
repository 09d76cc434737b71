"""TDMPC2WorldModel: presets, layout, task conditioning, reward decoding, errors."""

import pytest
import torch
from tensordict import TensorDict

from tests.conftest import DEVICES
from torchrl_pwm.modules import WORLD_MODEL_PRESETS, SimNorm, TDMPC2WorldModel, symexp

# TD-MPC2's own parameter counts of its presets on the 80-task set (obs 39, action 6, 80 tasks,
# task_dim 96), as computed from its MODEL_SIZE table.
TDMPC2_COUNTS = {"1M": 1.44e6, "5M": 5.39e6, "19M": 18.97e6, "48M": 48.79e6, "317M": 317.38e6}
NOMINAL = {"1M": 1e6, "5M": 5e6, "19M": 19e6, "48M": 48e6, "317M": 317e6}


@pytest.mark.parametrize("size", list(WORLD_MODEL_PRESETS))
def test_preset_parameter_counts(size):
    wm = TDMPC2WorldModel(39, 6, size=size, num_tasks=80, task_dim=96, value_heads=True)
    total = wm.num_parameters("all")
    assert abs(total - TDMPC2_COUNTS[size]) / TDMPC2_COUNTS[size] < 0.005
    if size != "1M":  # TD-MPC2's "1M" is 1.44M itself
        assert abs(total - NOMINAL[size]) / NOMINAL[size] < 0.10
    assert total == wm.num_parameters("world_model") + wm.num_parameters("value_heads")
    with pytest.raises(ValueError, match="part must be"):
        wm.num_parameters("encoder")


def test_layout_matches_tdmpc2():
    wm = TDMPC2WorldModel(17, 6, size="5M")
    enc = wm.encoder.module.net
    assert enc[0].in_features == 17 and enc[0].out_features == 256
    assert isinstance(enc[-1], SimNorm) and enc[-3].out_features == 512
    dyn = wm.get_transition_model_operator().module.net
    assert dyn[0].in_features == 512 + 6 and isinstance(dyn[-1], SimNorm)
    rew = wm.get_reward_operator().module.net
    assert rew[-1].out_features == 101 and rew[-1].weight.abs().sum() == 0
    assert abs(dyn[0].weight.std().item() - 0.02) < 2e-3 and dyn[0].bias.abs().sum() == 0


def test_keys_and_functional_api_agree():
    wm = TDMPC2WorldModel(5, 2, size="1M")
    torch.nn.init.normal_(wm.get_reward_operator().module.net[-1].weight)
    td = TensorDict(observation=torch.randn(3, 5), action=torch.rand(3, 2), batch_size=[3])
    td = wm(wm.encoder(td))
    z = wm.encode(td["observation"])
    torch.testing.assert_close(td["latent"], z)
    torch.testing.assert_close(td["next", "latent"], wm.next(z, td["action"]))
    torch.testing.assert_close(td["reward"], wm.reward(z, td["action"]))
    torch.testing.assert_close(td["reward_logits"], wm.reward_logits(z, td["action"]))
    torch.testing.assert_close(td["next", "latent"].view(3, -1, 8).sum(-1), torch.ones(3, 16))


def test_reward_space():
    sym = TDMPC2WorldModel(5, 1, size="1M")
    raw = TDMPC2WorldModel(5, 1, size="1M", reward_space="raw")
    raw.load_state_dict(sym.state_dict())
    bins = torch.linspace(-10, 10, 101)
    logits = torch.randn(4, 101)
    expected = (logits.softmax(-1) * bins).sum(-1, keepdim=True)
    torch.testing.assert_close(sym.decode_reward(logits), expected)
    torch.testing.assert_close(raw.decode_reward(logits), symexp(expected))
    scalar = TDMPC2WorldModel(5, 1, size="1M", num_bins=0)
    assert scalar.get_reward_operator().module.net[-1].out_features == 1
    torch.testing.assert_close(scalar.decode_reward(logits[:, :1]), logits[:, :1])
    with pytest.raises(ValueError, match="reward_space"):
        TDMPC2WorldModel(5, 1, reward_space="log")


def test_multitask_embedding_and_action_mask():
    wm = TDMPC2WorldModel(8, 3, size="1M", num_tasks=2, task_dim=16, action_dims=[3, 1])
    z = torch.randn(4, 128).softmax(-1)
    a = torch.rand(4, 3)
    a_other = a.clone()
    a_other[:, 1:] = -a_other[:, 1:]  # differs only in dims masked for task 1
    t1 = torch.ones(4, dtype=torch.long)
    t0 = torch.zeros(4, dtype=torch.long)
    # TD-MPC2's behaviour (default): dynamics and reward see the padded entries as given
    assert not torch.allclose(wm.next(z, a, t1), wm.next(z, a_other, t1))
    # ... and equal an explicit concatenation [z, e, a] through the network
    dyn = wm.get_transition_model_operator().module.net
    e = wm.task_conditioning.embedding(t1)
    torch.testing.assert_close(wm.next(z, a, t1), dyn(torch.cat([z, e, a], -1)))
    # the explicit option masks them before dynamics, reward and Q
    masked = TDMPC2WorldModel(
        8, 3, size="1M", num_tasks=2, task_dim=16, action_dims=[3, 1],
        mask_action_inputs=True, value_heads=True,
    )  # fmt: skip
    torch.nn.init.normal_(masked.get_reward_operator().module.net[-1].weight)
    torch.nn.init.normal_(masked.q_ensemble.weights[-1])
    masked.eval()  # no Q dropout
    torch.testing.assert_close(masked.next(z, a, t1), masked.next(z, a_other, t1))
    torch.testing.assert_close(masked.reward(z, a, t1), masked.reward(z, a_other, t1))
    torch.testing.assert_close(masked.q_logits(z, a, t1), masked.q_logits(z, a_other, t1))
    assert not torch.allclose(masked.next(z, a, t0), masked.next(z, a_other, t0))
    assert not torch.allclose(masked.q_logits(z, a, t0), masked.q_logits(z, a_other, t0))
    # tasks change the encoding; [B, 1] task ids are accepted; rows have norm <= 1 (max_norm)
    obs = torch.randn(4, 8)
    assert not torch.allclose(wm.encode(obs, t0), wm.encode(obs, t1))
    torch.testing.assert_close(wm.encode(obs, t1), wm.encode(obs, t1[:, None]))
    assert (wm.task_conditioning.embedding.weight.norm(dim=-1) <= 1 + 1e-5).all()
    with pytest.raises(TypeError, match="integers"):
        wm.encode(obs, torch.zeros(4))
    with pytest.raises(ValueError, match="entries for 2 tasks"):
        TDMPC2WorldModel(8, 3, num_tasks=2, action_dims=[3])


def test_bad_inputs_have_clear_errors():
    wm = TDMPC2WorldModel(5, 1, size="1M")
    with pytest.raises(ValueError, match="observations of size 5"):
        wm.encode(torch.randn(2, 7))
    with pytest.raises(ValueError, match="Unknown world-model size"):
        TDMPC2WorldModel(5, 1, size="7M")
    with pytest.raises(ValueError, match="multiple of 8"):
        TDMPC2WorldModel(5, 1, latent_dim=100)


@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip_and_device(device):
    wm = TDMPC2WorldModel(5, 2, size="1M", num_tasks=3, value_heads=True)
    wm2 = TDMPC2WorldModel(5, 2, size="1M", num_tasks=3, value_heads=True)
    wm2.load_state_dict(wm.state_dict())
    obs, task = torch.randn(4, 5), torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(wm.encode(obs, task), wm2.encode(obs, task))
    wm2 = wm2.to(device)
    out = wm2.encode(obs.to(device), task.to(device))
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), wm.encode(obs, task))


def test_reward_ensemble_members_and_state_dict():
    """reward_members: [..., K, 1], the primary head's reward first; one head has no extra
    parameters (the state dict of PWM / TD-MPC2 models is unchanged); K must be >= 1."""
    one = TDMPC2WorldModel(5, 2, size="1M")
    assert one.extra_reward_heads is None
    assert not any(k.startswith("extra_reward") for k in one.state_dict())
    wm = TDMPC2WorldModel(5, 2, size="1M", reward_ensemble=4)
    z = torch.softmax(torch.randn(3, 7, wm.latent_dim), -1)
    a = torch.rand(3, 7, 2) * 2 - 1
    members = wm.reward_members(z, a)
    assert members.shape == (3, 7, 4, 1)
    torch.testing.assert_close(members[..., 0, :], wm.reward(z, a))
    assert members[..., 1:, :].std(-2).mean() > 0  # independently initialised, not zeroed
    assert one.reward_members(z, a).shape == (3, 7, 1, 1)
    extra = sum(p.numel() for p in wm.extra_reward_heads.parameters())
    assert wm.num_parameters() == one.num_parameters() + extra
    with pytest.raises(RuntimeError, match="one reward head"):
        one.extra_reward_logits(z, a)
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="reward_ensemble"):
            TDMPC2WorldModel(5, 2, size="1M", reward_ensemble=bad)
