"""TDMPC2WorldModel.from_tdmpc2_checkpoint: TD-MPC2's two checkpoint layouts, built here from
the documented key names and shapes with random tensors, against reference modules written
below from TD-MPC2's definitions (``common/layers.py``, ``common/world_model.py``,
``common/math.py``), independently of torchrl_pwm's networks."""

import pytest
import torch
from torch import nn

from torchrl_pwm.envs.task_sets import task_set
from torchrl_pwm.modules import TDMPC2WorldModel, to_tdmpc2_state_dict

# --------------------------------------------------------------------------------------------
# TD-MPC2's networks, as its code defines them


class NormedLinear(nn.Linear):
    """Linear -> LayerNorm (``ln``) -> activation (dropout omitted: evaluation only)."""

    def __init__(self, n_in, n_out, act):
        super().__init__(n_in, n_out)
        self.ln = nn.LayerNorm(n_out)
        self.act = act

    def forward(self, x):
        return self.act(self.ln(super().forward(x)))


class RefSimNorm(nn.Module):
    def forward(self, x):
        shape = x.shape
        return torch.softmax(x.view(*shape[:-1], -1, 8), -1).view(shape)


def ref_mlp(n_in, hidden, n_out, act=None):
    dims = [n_in, *hidden, n_out]
    layers = [NormedLinear(dims[i], dims[i + 1], nn.Mish()) for i in range(len(dims) - 2)]
    layers.append(NormedLinear(dims[-2], n_out, act) if act else nn.Linear(dims[-2], n_out))
    return nn.Sequential(*layers)


def sub_state(state, prefix):
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


class RefTDMPC2:
    """encode / next / reward / Q / pi of TD-MPC2's WorldModel from a current-layout state."""

    def __init__(self, state, obs, act, latent, enc, mlp, enc_hidden, num_q, task_dim):
        self.task_dim = task_dim
        self.encoder = ref_mlp(obs + task_dim, [enc] * enc_hidden, latent, RefSimNorm())
        self.dynamics = ref_mlp(latent + task_dim + act, [mlp, mlp], latent, RefSimNorm())
        self.reward_net = ref_mlp(latent + task_dim + act, [mlp, mlp], 101)
        self.pi_net = ref_mlp(latent + task_dim, [mlp, mlp], 2 * act)
        for net, prefix in ((self.encoder, "_encoder.state."), (self.dynamics, "_dynamics."),
                            (self.reward_net, "_reward."), (self.pi_net, "_pi.")):  # fmt: skip
            net.load_state_dict(sub_state(state, prefix))  # strict: names and shapes
        self.qs, self.target_qs = [], []
        for members, prefix in ((self.qs, "_Qs.params."), (self.target_qs, "_target_Qs_params.")):
            stacked = {
                k: v for k, v in sub_state(state, prefix).items() if isinstance(v, torch.Tensor)
            }
            for k in range(num_q):
                q = ref_mlp(latent + task_dim + act, [mlp, mlp], 101)
                q.load_state_dict({name: value[k] for name, value in stacked.items()})
                members.append(q)
        if task_dim:
            self.emb = nn.Embedding(state["_task_emb.weight"].shape[0], task_dim, max_norm=1)
            self.emb.weight.data.copy_(state["_task_emb.weight"])
            self.masks = state["_action_masks"]
        self.log_std_min = state["log_std_min"]
        self.log_std_dif = state["log_std_dif"]

    def with_task(self, x, task):
        return x if not self.task_dim else torch.cat([x, self.emb(task)], -1)

    def encode(self, obs, task=None):
        return self.encoder(self.with_task(obs, task))

    def next(self, z, a, task=None):
        return self.dynamics(torch.cat([self.with_task(z, task), a], -1))

    def reward_logits(self, z, a, task=None):
        return self.reward_net(torch.cat([self.with_task(z, task), a], -1))

    def Q_all(self, z, a, task=None, target=False):
        x = torch.cat([self.with_task(z, task), a], -1)
        return torch.stack([q(x) for q in (self.target_qs if target else self.qs)])

    def pi_mean_log_std(self, z, task=None):
        mean, log_std = self.pi_net(self.with_task(z, task)).chunk(2, -1)
        log_std = self.log_std_min + 0.5 * self.log_std_dif * (torch.tanh(log_std) + 1)
        if self.task_dim:
            mean, log_std = mean * self.masks[task], log_std * self.masks[task]
        return mean, log_std


def two_hot_inv(logits):
    """TD-MPC2's: symexp of the softmax expectation over linspace(-10, 10, 101)."""
    x = (torch.softmax(logits, -1) * torch.linspace(-10, 10, 101)).sum(-1, keepdim=True)
    return torch.sign(x) * (torch.exp(x.abs()) - 1)


# --------------------------------------------------------------------------------------------
# Checkpoints in TD-MPC2's layouts (key names and shapes of
# shared/reference/tdmpc2-checkpoint-keys.md and the paper-era Ensemble), random values


def _mlp_state(gen, prefix, n_in, hidden, n_out, last_ln):
    state, dims = {}, [n_in, *hidden, n_out]
    for i in range(len(dims) - 1):
        state[f"{prefix}{i}.weight"] = (
            torch.randn(dims[i + 1], dims[i], generator=gen) / dims[i] ** 0.5
        )
        state[f"{prefix}{i}.bias"] = 0.1 * torch.randn(dims[i + 1], generator=gen)
        if i < len(dims) - 2 or last_ln:
            state[f"{prefix}{i}.ln.weight"] = 1 + 0.1 * torch.randn(dims[i + 1], generator=gen)
            state[f"{prefix}{i}.ln.bias"] = 0.1 * torch.randn(dims[i + 1], generator=gen)
    return state  # fmt: skip


def _q_params(gen, num_q, n_in, mlp):
    members = [_mlp_state(gen, "", n_in, [mlp, mlp], 101, False) for _ in range(num_q)]
    return {k: torch.stack([m[k] for m in members]) for k in members[0]}


def tdmpc2_state(obs, act, *, latent=128, enc=256, mlp=384, enc_hidden=1, num_q=2,
                 tasks=None, task_dim=96, layout="current", seed=0):  # fmt: skip
    """A TD-MPC2 ``model`` state dict; ``tasks``: the task set's TaskInfos (multi-task)."""
    gen = torch.Generator().manual_seed(seed)
    e = task_dim if tasks else 0
    state = {}
    if tasks:
        masks = torch.zeros(len(tasks), act)
        for i, t in enumerate(tasks):
            masks[i, : t.action_dim] = 1.0
        if layout == "current":
            state["_action_masks"] = masks
    if layout == "current":
        state["log_std_min"] = torch.tensor(-10)
        state["log_std_dif"] = torch.tensor(12)
    if tasks:
        state["_task_emb.weight"] = torch.randn(len(tasks), task_dim, generator=gen)  # norm > 1
    state |= _mlp_state(gen, "_encoder.state.", obs + e, [enc] * enc_hidden, latent, True)
    state |= _mlp_state(gen, "_dynamics.", latent + e + act, [mlp, mlp], latent, True)
    state |= _mlp_state(gen, "_reward.", latent + e + act, [mlp, mlp], 101, False)
    state |= _mlp_state(gen, "_pi.", latent + e, [mlp, mlp], 2 * act, False)
    q = _q_params(gen, num_q, latent + e + act, mlp)
    target = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in q.items()}
    if layout == "current":
        for prefix, params in (("_Qs.params.", q), ("_detach_Qs_params.", q),
                               ("_target_Qs_params.", target)):  # fmt: skip
            state |= {prefix + k: v.clone() for k, v in params.items()}
            state[prefix + "__batch_size"] = torch.Size([num_q])
            state[prefix + "__device"] = None
    else:  # functorch's combine_state_for_ensemble: parameters in order, 4 per NormedLinear
        for prefix, params in (("_Qs.params.", q), ("_target_Qs.params.", target)):
            state |= {f"{prefix}{n}": v.clone() for n, v in enumerate(params.values())}
    return state


def current_layout_view(state):
    """The paper-era state under current-layout names, for the reference modules."""
    names = ("weight", "bias", "ln.weight", "ln.bias")
    out = {}
    for key, value in state.items():
        for old, new in (("_Qs.params.", "_Qs.params."), ("_target_Qs.params.", "_target_Qs_params.")):  # fmt: skip
            if key.startswith(old) and key[len(old) :].isdigit():
                n = int(key[len(old) :])
                key = f"{new}{n // 4}.{names[n % 4]}"
                break
        out[key] = value
    return out


def save(tmp_path, state, name="tdmpc2.pt"):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


def _inputs(n, obs, act, latent, tasks=None, seed=1):
    gen = torch.Generator().manual_seed(seed)
    o = torch.randn(n, obs, generator=gen)
    a = torch.rand(n, act, generator=gen) * 2 - 1  # padded entries non-zero on purpose
    z = torch.softmax(torch.randn(n, latent // 8, 8, generator=gen), -1).view(n, latent)
    task = None if tasks is None else torch.randint(0, len(tasks), (n,), generator=gen)
    if task is not None:  # observations zero-padded per task, as in TD-MPC2's data
        for i, t in enumerate(task.tolist()):
            o[i, tasks[t].obs_dim :] = 0
    return o, a, z, task


def assert_matches_reference(wm, ref, obs, act, latent, tasks=None):
    o, a, z, task = _inputs(64, obs, act, latent, tasks)
    wm.eval()
    close = torch.testing.assert_close
    with torch.no_grad():
        close(wm.encode(o, task), ref.encode(o, task))
        close(wm.next(z, a, task), ref.next(z, a, task))
        close(wm.reward_logits(z, a, task), ref.reward_logits(z, a, task))
        close(wm.q_logits(z, a, task), ref.Q_all(z, a, task).movedim(0, -2))
        mean, log_std = wm.policy_prior_mean_log_std(z, task)
        ref_mean, ref_log_std = ref.pi_mean_log_std(z, task)
        close(mean, ref_mean)
        close(log_std, ref_log_std)
    return z, a, task


MT30 = task_set("mt30")


def test_current_layout_multitask_loads_and_matches_tdmpc2(tmp_path):
    state = tdmpc2_state(24, 6, tasks=MT30)
    # the documented mt30 listing (1M preset): a few anchors and the key count
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    assert shapes["_action_masks"] == (30, 6) and shapes["_task_emb.weight"] == (30, 96)
    assert shapes["_encoder.state.0.weight"] == (256, 120)
    assert shapes["_dynamics.0.weight"] == (384, 230) and shapes["_pi.0.weight"] == (384, 224)
    assert shapes["_pi.2.weight"] == (12, 384) and shapes["_Qs.params.0.weight"] == (2, 384, 230)
    assert shapes["_target_Qs_params.2.bias"] == (2, 101) and len(state) == 80
    wm, report = TDMPC2WorldModel.from_tdmpc2_checkpoint(
        save(tmp_path, state), task_set="mt30", return_report=True, reward_space="raw"
    )
    assert report.layout == "current"
    # every key consumed or listed as ignored, never both
    assert set(report.consumed) | set(report.ignored) == set(state)
    assert not set(report.consumed) & set(report.ignored)
    assert set(report.ignored) == {
        *(k for k in state if k.startswith("_detach_Qs_params.")),
        *(k for k in state if k.endswith(("__batch_size", "__device"))),
    }
    assert report.defaulted == {}
    assert (wm.latent_dim, wm.observation_dim, wm.action_dim, wm.num_tasks) == (128, 24, 6, 30)
    ref = RefTDMPC2(state, 24, 6, 128, 256, 384, 1, 2, 96)
    z, a, task = assert_matches_reference(wm, ref, 24, 6, 128, MT30)
    with torch.no_grad():
        # TD-MPC2 parity of decoded rewards: two_hot_inv (symexp) with reward_space="raw"
        torch.testing.assert_close(
            wm.reward(z, a, task), two_hot_inv(ref.reward_logits(z, a, task))
        )
        # the target Q copy
        target = report.target_q_ensemble
        x = torch.cat([z, ref.emb(task), a], -1)
        torch.testing.assert_close(target(x), ref.Q_all(z, a, task, target=True).movedim(0, -2))
    torch.testing.assert_close(wm.task_conditioning.action_masks, state["_action_masks"])
    assert (wm.log_std_min, wm.log_std_dif) == (-10.0, 12.0)


def test_paper_era_layout_with_the_released_mt30_quirks(tmp_path):
    """Functorch ensemble keys, no log_std_* nor _action_masks, task_dim 64 and latent 512 (the
    released mt30 19M model's quirks; widths kept small)."""
    state = tdmpc2_state(24, 6, latent=512, enc_hidden=2, num_q=5, tasks=MT30, task_dim=64,
                         layout="paper-era")  # fmt: skip
    assert "_Qs.params.9" in state and "_target_Qs.params.0" in state
    assert "_action_masks" not in state and "log_std_min" not in state
    path = save(tmp_path, state)
    with pytest.raises(ValueError, match=r"without '_action_masks'.*pass task_set="):
        TDMPC2WorldModel.from_tdmpc2_checkpoint(path)
    wm, report = TDMPC2WorldModel.from_tdmpc2_checkpoint(path, task_set="mt30", return_report=True)
    assert report.layout == "paper-era"
    assert set(report.consumed) == set(state) and report.ignored == {}
    assert set(report.defaulted) == {"_action_masks", "log_std_min / log_std_dif"}
    assert report.config["task_dim"] == 64 and report.config["num_q"] == 5
    assert report.config["num_enc_layers"] == 3
    view = current_layout_view(state)
    view["_action_masks"] = torch.stack(
        [(torch.arange(6) < t.action_dim).float() for t in MT30]
    )  # TD-MPC2 builds them from the task set
    view["log_std_min"], view["log_std_dif"] = torch.tensor(-10), torch.tensor(12)
    ref = RefTDMPC2(view, 24, 6, 512, 256, 384, 2, 5, 64)
    z, a, task = assert_matches_reference(wm, ref, 24, 6, 512, MT30)
    # PWM parity: reward_space="symlog" (default) decodes without symexp
    with torch.no_grad():
        bins = torch.linspace(-10, 10, 101)
        expected = (torch.softmax(ref.reward_logits(z, a, task), -1) * bins).sum(-1, keepdim=True)
        torch.testing.assert_close(wm.reward(z, a, task), expected)


def test_single_task_layout(tmp_path):
    state = tdmpc2_state(5, 1)  # cartpole-swingup, the documented single-task listing
    assert len(state) == 78 and tuple(state["_dynamics.0.weight"].shape) == (384, 129)
    path = save(tmp_path, state)
    wm, report = TDMPC2WorldModel.from_tdmpc2_checkpoint(path, return_report=True)
    assert set(report.consumed) | set(report.ignored) == set(state)
    assert wm.num_tasks is None and wm.num_parameters("all") > 0
    assert_matches_reference(wm, RefTDMPC2(state, 5, 1, 128, 256, 384, 1, 2, 0), 5, 1, 128)
    with pytest.raises(ValueError, match=r"single-task checkpoint.*task_set='mt30'"):
        TDMPC2WorldModel.from_tdmpc2_checkpoint(path, task_set="mt30")


def test_padded_action_entries_reach_dynamics_unless_masked(tmp_path):
    """TD-MPC2 feeds the raw padded action to dynamics and reward; mask_action_inputs=True is
    the explicit alternative, equal to TD-MPC2 exactly where the padded entries are 0."""
    state = tdmpc2_state(24, 6, tasks=MT30)
    path = save(tmp_path, state)
    raw = TDMPC2WorldModel.from_tdmpc2_checkpoint(path, task_set="mt30").eval()
    masked = TDMPC2WorldModel.from_tdmpc2_checkpoint(
        path, task_set="mt30", mask_action_inputs=True
    ).eval()
    _, a, z, _ = _inputs(8, 24, 6, 128)
    task = torch.full((8,), 6)  # acrobot-swingup: one valid action entry
    zeroed = a * (torch.arange(6) < 1)
    with torch.no_grad():
        assert not torch.allclose(raw.next(z, a, task), masked.next(z, a, task))
        torch.testing.assert_close(raw.next(z, zeroed, task), masked.next(z, a, task))
        torch.testing.assert_close(raw.reward(z, zeroed, task), masked.reward(z, a, task))


def test_mismatches_name_the_key_and_the_expectation(tmp_path):
    state = tdmpc2_state(24, 6, tasks=MT30)
    load = TDMPC2WorldModel.from_tdmpc2_checkpoint

    def broken(**changes):
        s = dict(state)
        for key, value in changes.items():
            if value is None:
                del s[key]
            else:
                s[key] = value
        return save(tmp_path, s, "broken.pt")

    with pytest.raises(ValueError, match=r"'_reward\.1\.weight' has shape \(384, 383\), expected \(384, 384\)"):  # fmt: skip
        load(broken(**{"_reward.1.weight": torch.zeros(384, 383)}), task_set="mt30")
    with pytest.raises(ValueError, match=r"'_Qs\.params\.1\.ln\.bias' has shape \(3, 384\), expected \(2, 384\)"):  # fmt: skip
        load(broken(**{"_Qs.params.1.ln.bias": torch.zeros(3, 384)}), task_set="mt30")
    with pytest.raises(ValueError, match=r"'_pi\.2\.bias' is missing \(expected shape \(12,\)\)"):
        load(broken(**{"_pi.2.bias": None}), task_set="mt30")
    # task set: another number of tasks, other widths, other action sizes
    with pytest.raises(ValueError, match=r"'_task_emb\.weight' has 30 rows.*'mt80' has 80 tasks: expected shape \(80, 96\)"):  # fmt: skip
        load(broken(), task_set="mt80")
    masks = state["_action_masks"].clone()
    masks[3, 5] = 0.0
    with pytest.raises(ValueError, match=r"'_action_masks' rows \[3\] differ.*expected \[6\]"):
        load(broken(_action_masks=masks), task_set="mt30")
    wider = list(MT30)  # a task list given as TaskInfos: the file pads to 24, this one to 26
    wider[0] = type(MT30[0])("walker-stand", 26, 6, 500)
    with pytest.raises(ValueError, match=r"'_encoder\.state\.0\.weight' takes 120 inputs.*expected 122"):  # fmt: skip
        load(broken(), task_set=wider)
    # not TD-MPC2: unknown keys, inconsistent duplicates, no Q ensemble
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['_extra\.weight'\]"):
        load(broken(**{"_extra.weight": torch.zeros(3)}), task_set="mt30")
    with pytest.raises(ValueError, match=r"'_detach_Qs_params\.0\.bias' should hold the same values"):  # fmt: skip
        load(broken(**{"_detach_Qs_params.0.bias": torch.ones(2, 384)}), task_set="mt30")
    with pytest.raises(ValueError, match="no Q ensemble found"):
        load(broken(**{k: None for k in state if k.startswith("_Qs.")}), task_set="mt30")


def test_termination_head_is_reported_and_unsafe_files_refused(tmp_path):
    state = tdmpc2_state(5, 1)
    state["_termination.0.weight"] = torch.zeros(384, 128)
    _, report = TDMPC2WorldModel.from_tdmpc2_checkpoint(save(tmp_path, state), return_report=True)
    assert "termination head" in report.ignored["_termination.0.weight"]
    path = tmp_path / "unsafe.pt"
    torch.save({"model": {"hook": print}}, path)  # unpickling would import a callable
    with pytest.raises(RuntimeError, match=r"(?s)weights_only=True.*Unsupported global.*refused"):
        TDMPC2WorldModel.from_tdmpc2_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        TDMPC2WorldModel.from_tdmpc2_checkpoint(tmp_path / "missing.pt")


def test_export_round_trip(tmp_path):
    """to_tdmpc2_state_dict writes the current layout; reading it back gives the same model."""
    src = TDMPC2WorldModel(24, 6, size="1M", num_tasks=30, action_dims=[t.action_dim for t in MT30],
                           value_heads=True).eval()  # fmt: skip
    for p in src.parameters():
        torch.nn.init.normal_(p, std=0.1)
    state = to_tdmpc2_state_dict(src)
    assert {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)} == {
        k: tuple(v.shape) for k, v in tdmpc2_state(24, 6, tasks=MT30).items()
        if isinstance(v, torch.Tensor)
    }  # fmt: skip
    wm = TDMPC2WorldModel.from_tdmpc2_checkpoint(save(tmp_path, state), task_set="mt30").eval()
    o, a, z, task = _inputs(16, 24, 6, 128, MT30)
    with torch.no_grad():
        torch.testing.assert_close(wm.encode(o, task), src.encode(o, task))
        torch.testing.assert_close(wm.q_logits(z, a, task), src.q_logits(z, a, task))
