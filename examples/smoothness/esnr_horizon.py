"""How useful are first-order policy gradients as the horizon grows? ESNR against H.

Two differentiable systems of the same kind, one learned and one exact:

(a) a TD-MPC2 world model (:class:`~torchrl_pwm.modules.TDMPC2WorldModel`) of DMC's
    ``acrobot-swingup`` (a chaotic double pendulum), trained with
    :class:`~torchrl_pwm.objectives.TDMPC2ModelLoss` on random-action episodes collected with
    ``env.rollout``; the objective is the imagined ``H``-step return of
    :class:`~torchrl_pwm.objectives.FirstOrderActorLoss` (no critic: ``V = 0``), from start
    observations of the collected data;
(b) a differentiable acrobot written in torch below (DMC's link lengths, masses, damping and
    gear; Spong's equations of motion; semi-implicit Euler at DMC's 0.01 s, two substeps per
    agent step as DMC's action repeat 2) and DMC's smooth swing-up reward, with the ``H``-step
    return from random start states (both angles uniform, as DMC's reset; velocities
    ``N(0, 2²)``, as the random episodes' states, which fall from their reset angles).

Both use the same policy class (:func:`~torchrl_pwm.modules.make_pwm_actor`, ``[64, 64]``,
freshly initialised, std ``e^-1``). For each ``H ∈ {1, 2, 4, ..., 64}`` the script measures
the ESNR of the first-order (pathwise) gradient and, for reference, of the zeroth-order
(score-function, leave-one-out baseline) estimate of the same gradient, with
:func:`torchrl_pwm.evaluation.diagnostics.gradient_statistics`, and writes a CSV and a plot.

Run:  python examples/smoothness/esnr_horizon.py [--quick] [--out docs/results/smoothness]
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_pwm.data import make_sequence_replay_buffer
from torchrl_pwm.envs import LatentWorldModelEnv, make_env
from torchrl_pwm.evaluation import actor_gradient_statistics, gradient_statistics
from torchrl_pwm.modules import TDMPC2WorldModel, make_pwm_actor
from torchrl_pwm.objectives import FirstOrderActorLoss, TDMPC2ModelLoss

HORIZONS = (1, 2, 4, 8, 16, 32, 64)
GAMMA = 0.99


# -- (b) a differentiable acrobot ------------------------------------------------------------
class TorchAcrobot:
    """DMC's acrobot (two 1 m, 1 kg rods, elbow motor with gear 2, joint damping 0.05) with
    Spong's equations of motion. Angles from the upward vertical (DMC's convention); the
    state is ``[q1, q2, dq1, dq2]`` with ``q2`` relative to the upper arm."""

    def __init__(self, dt: float = 0.01, substeps: int = 2, gear: float = 2.0):
        self.dt, self.substeps, self.gear = dt, substeps, gear
        self.m, self.l, self.lc, self.inertia = 1.0, 1.0, 0.5, 1.0 / 12.0
        self.g, self.damping = 9.81, 0.05

    def accel(self, s: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
        q1, q2, dq1, dq2 = s.unbind(-1)
        m, l1, lc, i = self.m, self.l, self.lc, self.inertia
        c2, s2 = q2.cos(), q2.sin()
        d11 = m * lc**2 + m * (l1**2 + lc**2 + 2 * l1 * lc * c2) + 2 * i
        d12 = m * (lc**2 + l1 * lc * c2) + i
        d22 = m * lc**2 + i
        h1 = -m * l1 * lc * s2 * (dq2**2 + 2 * dq1 * dq2)
        h2 = m * l1 * lc * s2 * dq1**2
        # angles from the top: gravity pulls the links away from q = 0
        phi2 = -m * lc * self.g * (q1 + q2).sin()
        phi1 = -(m * lc + m * l1) * self.g * q1.sin() + phi2
        tau1 = -self.damping * dq1 - h1 - phi1
        tau2 = torque - self.damping * dq2 - h2 - phi2
        det = d11 * d22 - d12**2
        return torch.stack([(d22 * tau1 - d12 * tau2) / det, (d11 * tau2 - d12 * tau1) / det], -1)

    def step(self, s: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        torque = self.gear * action.squeeze(-1)
        for _ in range(self.substeps):  # semi-implicit Euler
            dq = s[..., 2:] + self.dt * self.accel(s, torque)
            q = s[..., :2] + self.dt * dq
            s = torch.cat([q, dq], -1)
        return s

    @staticmethod
    def observation(s: torch.Tensor) -> torch.Tensor:
        q = s[..., :2]
        return torch.cat([q.cos(), q.sin(), s[..., 2:]], -1)

    def reward(self, s: torch.Tensor) -> torch.Tensor:
        """DMC's smooth swing-up reward: ``tolerance(|tip - target|, bounds=(0, 0.2),
        margin=1)`` with its Gaussian sigmoid (1 within 0.2 m of the upright tip position,
        0.1 at 1.2 m), the target being the tip of the upright pendulum."""
        q1, q2 = s[..., 0], s[..., 1]
        tip_x = self.l * q1.sin() + self.l * (q1 + q2).sin()
        tip_y = self.l * q1.cos() + self.l * (q1 + q2).cos()
        dist = (tip_x.square() + (tip_y - 2 * self.l).square() + 1e-12).sqrt()
        beyond = (dist - 0.2).clamp_min(0.0)
        return torch.exp(-math.log(10.0) * beyond.square())

    def sample_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        q = (torch.rand(n, 2, generator=generator) * 2 - 1) * math.pi
        return torch.cat([q, 2 * torch.randn(n, 2, generator=generator)], -1)

    def returns(self, actor, start: torch.Tensor, horizon: int) -> torch.Tensor:
        """Per-start-state ``Σ_h γ^h r(s_{h+1})`` with actions from the stochastic actor."""
        s, total = start, torch.zeros(start.shape[0])
        with set_exploration_type(ExplorationType.RANDOM):
            for h in range(horizon):
                td = actor(TensorDict(observation=self.observation(s), batch_size=s.shape[:1]))
                s = self.step(s, td["action"])
                total = total + GAMMA**h * self.reward(s)
        return total


# -- (a) a learned world model of acrobot-swingup --------------------------------------------
def collect(episodes: int, seed: int):
    env = make_env("acrobot-swingup", seed=seed)
    data = []
    for ep in range(episodes):
        td = env.rollout(500, break_when_any_done=False)  # random actions, one full episode
        td["collector", "traj_ids"] = torch.full(td.shape, ep)
        data.append(td)
    env.close()
    return torch.cat(data)


def train_world_model(data, args):
    wm = TDMPC2WorldModel(
        data["observation"].shape[-1],
        data["action"].shape[-1],
        latent_dim=args.latent_dim,
        enc_dim=args.hidden,
        mlp_dim=args.hidden,
        num_enc_layers=2,
    )
    rb = make_sequence_replay_buffer(
        data.numel(), horizon=args.wm_horizon, num_slices=args.wm_batch
    )
    rb.extend(data)
    loss = TDMPC2ModelLoss(wm)
    opt = torch.optim.Adam(wm.parameters(), lr=3e-4)
    log = []
    for step in range(args.wm_updates):
        batch = rb.sample().reshape(args.wm_batch, args.wm_horizon)
        out = loss(batch)
        total = out["loss_consistency"] + out["loss_reward"]
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(wm.parameters(), 20.0)
        opt.step()
        if step % max(args.wm_updates // 5, 1) == 0 or step == args.wm_updates - 1:
            log.append((step, out["consistency"].item(), out["reward_loss"].item()))
            print(f"  world model update {step:5d}: consistency {log[-1][1]:.4f} "
                  f"reward CE {log[-1][2]:.4f}")  # fmt: skip
    return wm.requires_grad_(False), log


def zero_critic(latent_dim: int) -> TensorDictModule:
    """``V = 0``: the objective is the H-step imagined return alone."""
    net = nn.Linear(latent_dim, 1)
    nn.init.zeros_(net.weight)
    nn.init.zeros_(net.bias)
    return TensorDictModule(net, in_keys=["latent"], out_keys=["state_value"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a < 1 minute smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=20, help="random episodes (500 steps)")
    parser.add_argument("--wm-updates", type=int, default=3000)
    parser.add_argument("--wm-horizon", type=int, default=8)
    parser.add_argument("--wm-batch", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--states", type=int, default=16, help="start states (per_state)")
    parser.add_argument("--noise-samples", type=int, default=32, help="rollouts per state")
    parser.add_argument("--samples", type=int, default=64, help="start states per pooled batch")
    parser.add_argument("--batches", type=int, default=4, help="pooled batches")
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--horizons", type=int, nargs="+", default=list(HORIZONS))
    parser.add_argument("--out", type=Path, default=Path("docs/results/smoothness"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.wm_updates, args.wm_horizon, args.wm_batch = 2, 30, 4, 16
        args.states, args.noise_samples, args.samples, args.batches = 3, 8, 8, 2
        args.horizons = [1, 4, 16]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()

    print(f"collecting {args.episodes} random episodes of acrobot-swingup")
    data = collect(args.episodes, args.seed)
    t_collect = time.time() - t0
    print(f"training the world model ({args.wm_updates} updates)")
    wm, wm_log = train_world_model(data, args)
    t_train = time.time() - t0 - t_collect

    obs = data["observation"]
    g = torch.Generator().manual_seed(args.seed + 1)
    sim = TorchAcrobot()

    # "per_state": each batch is one start state repeated (fresh action noise per copy), and
    # the per-batch ESNRs are averaged: PWM's E_s[ |E g|^2 / tr Var g ]. "pooled": each batch
    # holds distinct start states, so the start state is part of the noise.
    def wm_starts(kind):
        n = args.noise_samples if kind == "per_state" else args.samples
        idx = torch.randint(obs.shape[0], (1 if kind == "per_state" else n,), generator=g)
        return TensorDict(observation=obs[idx].expand(n, -1), batch_size=[n])

    def sim_starts(kind):
        if kind == "per_state":
            return sim.sample_states(1, g).expand(args.noise_samples, -1)
        return sim.sample_states(args.samples, g)

    settings = {
        "per_state": dict(num_batches=args.states, group_size=args.group_size),
        "pooled": dict(num_batches=args.batches, group_size=args.group_size),
    }
    rows = []
    torch.manual_seed(args.seed + 2)
    wm_actor = make_pwm_actor(wm.latent_dim, 1, hidden_sizes=(64, 64))
    sim_actor = make_pwm_actor(6, 1, hidden_sizes=(64, 64), in_key="observation")
    env = LatentWorldModelEnv(wm)
    for horizon in args.horizons:
        loss = FirstOrderActorLoss(
            wm_actor,
            zero_critic(wm.latent_dim),
            env,
            imagination_horizon=horizon,
            normalize_returns=False,
        )
        loss.make_value_estimator(gamma=GAMMA)
        for kind, common in settings.items():
            for estimator in ("first_order", "zeroth_order"):
                stats = actor_gradient_statistics(
                    loss, lambda kind=kind: wm_starts(kind), estimator=estimator, **common
                )
                rows.append(_row("world_model", estimator, kind, horizon, stats))

                def sim_objective(start, horizon=horizon, estimator=estimator):
                    if estimator == "first_order":
                        return sim.returns(sim_actor, start, horizon)
                    return _sim_score_function(sim, sim_actor, start, horizon)

                stats = gradient_statistics(
                    sim_objective,
                    list(sim_actor.parameters()),
                    lambda kind=kind: sim_starts(kind),
                    estimator=estimator,
                    **common,
                )
                rows.append(_row("true_dynamics", estimator, kind, horizon, stats))
        for r in rows[-8:]:
            print(f"H={horizon:3d} {r['system']:>13} {r['estimator']:>12} {r['kind']:>9}: "
                  f"ESNR {r['esnr']:9.4f} ± {r['esnr_std_error']:.4f}  "
                  f"|E g| {r['mean_grad_norm']:10.4g}  tr Var {r['total_variance']:10.4g}")  # fmt: skip
    elapsed = time.time() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    stem = "esnr_horizon_quick" if args.quick else "esnr_horizon"
    csv_path = args.out / f"{stem}.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()})
    png = args.out / f"{stem}.png"
    _plot(png, rows)
    print(f"world model: consistency {wm_log[-1][1]:.4f}, reward CE {wm_log[-1][2]:.4f}")
    print(f"time: collect {t_collect:.0f} s, world model {t_train:.0f} s, total {elapsed:.0f} s")
    print(f"wrote {csv_path} and {png}")
    return rows


def _row(system, estimator, kind, horizon, stats):
    s = stats.summary()
    per_state = kind == "per_state"
    return {
        "system": system,
        "estimator": estimator,
        "kind": kind,
        "horizon": horizon,
        "esnr": s["mean_batch_esnr"] if per_state else s["esnr"],
        "esnr_std_error": s["mean_batch_esnr_std_error"] if per_state else s["esnr_std_error"],
        # per-state ESNRs are skewed: the median says what a typical start state sees
        "median_batch_esnr": stats.batch_esnr.median().item(),
        "mean_grad_norm": s["mean_grad_norm"],
        "total_variance": s["total_variance"],
        "samples_per_batch": stats.num_samples,
        "batches": stats.num_batches,
    }


def _sim_score_function(sim, actor, start, horizon):
    """Zeroth-order objective on the torch acrobot: returns with detached actions and their
    log-probabilities (the pre-tanh Gaussian's; the tanh Jacobian does not depend on θ)."""
    s, total, log_prob = start, torch.zeros(start.shape[0]), torch.zeros(start.shape[0])
    for h in range(horizon):
        td = actor.get_dist_params(
            TensorDict(observation=sim.observation(s), batch_size=s.shape[:1])
        )
        loc, scale = td["loc"], td["scale"]
        base = torch.distributions.Normal(loc, scale)
        u = base.sample()
        log_prob = log_prob + base.log_prob(u).sum(-1)
        with torch.no_grad():
            s = sim.step(s, u.tanh())
            total = total + GAMMA**h * sim.reward(s)
    return total, log_prob


def _plot(path, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    styles = {
        ("world_model", "first_order"): ("tab:blue", "-", "world model, first order"),
        ("true_dynamics", "first_order"): ("tab:red", "-", "true dynamics, first order"),
        ("world_model", "zeroth_order"): ("tab:blue", ":", "world model, zeroth order"),
        ("true_dynamics", "zeroth_order"): ("tab:red", ":", "true dynamics, zeroth order"),
    }
    titles = {
        "per_state": "per start state (PWM's ESNR: E_s over states)",
        "pooled": "pooled (start state is part of the noise)",
    }
    for ax, (kind, title) in zip(axes, titles.items()):
        for (system, estimator), (color, ls, label) in styles.items():
            pts = [(r["horizon"], r["esnr"], r["esnr_std_error"]) for r in rows
                   if (r["system"], r["estimator"], r["kind"]) == (system, estimator, kind)]  # fmt: skip
            if pts:
                h, y, se = zip(*pts)
                ax.errorbar(h, y, yerr=se, color=color, ls=ls, marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("horizon H (agent steps of 0.02 s)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ESNR of a single-rollout gradient")
    axes[0].legend(fontsize=8)
    fig.suptitle("acrobot: gradient signal-to-noise ratio against the horizon")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
