"""Hand-built differentiable latent systems with known closed forms, for the loss tests."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule
from torch import nn

from torchrl_pwm.envs import LatentWorldModelEnv
from torchrl_pwm.modules import TDMPC2WorldModel, make_pwm_actor


class QuadraticReward(nn.Module):
    """r(z, a) = c·z - zᵀQz - aᵀRa on the concatenated input [z, a]."""

    def __init__(self, q: torch.Tensor, r: torch.Tensor, c: torch.Tensor):
        super().__init__()
        self.register_buffer("q", q)
        self.register_buffer("r", r)
        self.register_buffer("c", c)

    def forward(self, za: torch.Tensor) -> torch.Tensor:
        n = self.q.shape[0]
        z, a = za[..., :n], za[..., n:]
        quad = (z * (z @ self.q.T)).sum(-1) + (a * (a @ self.r.T)).sum(-1)
        return ((z * self.c).sum(-1) - quad).unsqueeze(-1)


class LinearSystem:
    """z' = A z + B a, r = c·z - zᵀQz - aᵀRa, V(z) = w·z, z_0 = o (identity encoder)."""

    def __init__(self, latent_dim: int = 4, action_dim: int = 2, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        dt = torch.float64
        n, m = latent_dim, action_dim
        self.a_mat = torch.eye(n, dtype=dt) + 0.1 * torch.randn(n, n, generator=g, dtype=dt)
        self.b_mat = 0.5 * torch.randn(n, m, generator=g, dtype=dt)
        q = torch.randn(n, n, generator=g, dtype=dt)
        self.q = 0.1 * q @ q.T
        self.r = 0.2 * torch.eye(m, dtype=dt)
        self.c = torch.randn(n, generator=g, dtype=dt)
        self.w = torch.randn(n, generator=g, dtype=dt)

        wm = TDMPC2WorldModel(n, m, latent_dim=n, simplex_dim=2, num_bins=0).double()
        wm.encoder.module.net = nn.Identity()
        dyn = nn.Linear(n + m, n, bias=False, dtype=dt)
        dyn.weight.data.copy_(torch.cat([self.a_mat, self.b_mat], 1))
        wm.get_transition_model_operator().module.net = dyn
        wm.get_reward_operator().module.net = QuadraticReward(self.q, self.r, self.c)
        self.world_model = wm
        self.env = LatentWorldModelEnv(wm)
        critic = nn.Linear(n, 1, bias=False, dtype=dt)
        critic.weight.data.copy_(self.w[None])
        self.critic = TensorDictModule(critic, in_keys=["latent"], out_keys=["state_value"])
        # std = e^-30: sampling noise far below float64 finite-difference resolution, so the
        # stochastic actor is tanh(μ(z)) to ~1e-13.
        self.actor = make_pwm_actor(
            n, m, hidden_sizes=(8,), init_log_std=-30.0, min_log_std=-30.0
        ).double()
        self.policy_mean = self.actor.module[0].module.net

    def reward(self, z, a):
        return z @ self.c - (z * (z @ self.q.T)).sum(-1) - (a * (a @ self.r.T)).sum(-1)

    def objective(self, z0, horizon, gamma, policy_inputs=None):
        """Closed-form J per start state; ``policy_inputs[h]`` fixes the actor's input."""
        z, total = z0, torch.zeros(z0.shape[0], dtype=z0.dtype)
        for h in range(horizon):
            a = self.policy_mean(z if policy_inputs is None else policy_inputs[h]).tanh()
            total = total + gamma**h * self.reward(z, a)
            z = z @ self.a_mat.T + a @ self.b_mat.T
        return total + gamma**horizon * (z @ self.w)

    def latents(self, z0, horizon):
        z, out = z0, []
        with torch.no_grad():
            for _ in range(horizon):
                out.append(z)
                a = self.policy_mean(z).tanh()
                z = z @ self.a_mat.T + a @ self.b_mat.T
        return out
