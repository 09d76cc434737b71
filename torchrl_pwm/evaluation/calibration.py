"""Is the world model right where the policy goes? Reward and value calibration on real data.

A first-order policy learner climbs the gradient of *imagined* returns. When the world model or
the critic is wrong along the states the policy visits, the actor maximises the error (model
exploitation): imagined returns rise while real returns do not. :func:`world_model_calibration`
measures this on real trajectories of the policy, in the units the actor optimises:

- **reward error**: from every start ``o_t`` of a real episode, the world model is rolled open
  loop for ``horizon`` steps with the actions that were really taken,
  ``z_t = E(o_t)``, ``r̂_{t+k} = R(z_{t+k}, a_{t+k})``, ``z_{t+k+1} = F(z_{t+k}, a_{t+k})``, and
  ``r̂`` is compared with the real reward ``r_{t+k}`` (mapped with ``symlog`` when the model
  predicts rewards in symlog space, as the original PWM code does). Reported per imagination
  step ``k``: mean absolute error and mean bias.
- **imagined against real return**: ``Σ_k γ^k r̂_{t+k}`` against ``Σ_k γ^k r_{t+k}`` over the same
  ``horizon`` steps.
- **the policy's imagination** (with a ``policy``): from the same starts the policy acts on
  imagined latents, as in the actor's objective; its imagined H-return, compared with the real
  H-return, shows whether the actor finds actions the model over-rewards. With a critic too,
  the mean value of the last imagined latents, which the actor's objective bootstraps with.
- **value calibration** (with a ``critic``): ``V(E(o_t))`` against the real discounted
  return-to-go ``G_t = Σ_{k ≥ 0} γ^k r_{t+k}`` up to the end of the episode, over the starts that
  leave at least ``min_tail`` steps (``γ^min_tail ≤ 0.05`` by default), so that truncating the
  episode changes ``G_t`` by at most 5% of the largest discounted return. A critic that
  reproduces the policy's value has ``value / return_to_go ≈ 1``; much above 1 is the critic (and
  the imagined returns it bootstraps) promising more than the policy earns.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_pwm.modules.functional import symlog
from torchrl_pwm.modules.world_model import TDMPC2WorldModel

__all__ = ["CalibrationMetrics", "CalibrationReport", "world_model_calibration"]


@dataclass
class CalibrationReport:
    """What :func:`world_model_calibration` measured. Rewards and returns are in the model's
    reward space (``reward_space``), tensors of shape ``[horizon]`` are indexed by imagination
    step, scalars are means over all starts."""

    reward_space: str
    gamma: float
    reward_abs_error: torch.Tensor
    reward_bias: torch.Tensor
    real_reward: float
    imagined_return: float
    real_return: float
    num_starts: int
    value: float | None = None
    return_to_go: float | None = None
    num_value_starts: int = 0
    policy_imagined_return: float | None = None
    policy_imagined_end_value: float | None = None

    @property
    def horizon(self) -> int:
        return self.reward_abs_error.numel()

    @property
    def value_ratio(self) -> float | None:
        """``value / return_to_go`` (``None`` without a critic)."""
        if self.value is None or self.return_to_go is None:
            return None
        return self.value / self.return_to_go if self.return_to_go else math.inf

    def summary(self) -> dict[str, float | int | str | None]:
        """Flat dictionary for a table or a logger."""
        return {
            "reward_space": self.reward_space,
            "horizon": self.horizon,
            "real_reward": self.real_reward,
            "reward_mae_first": float(self.reward_abs_error[0]),
            "reward_mae_last": float(self.reward_abs_error[-1]),
            "reward_bias_mean": float(self.reward_bias.mean()),
            "imagined_return": self.imagined_return,
            "real_return": self.real_return,
            "value": self.value,
            "return_to_go": self.return_to_go,
            "value_ratio": self.value_ratio,
            "policy_imagined_return": self.policy_imagined_return,
            "policy_imagined_end_value": self.policy_imagined_end_value,
            "num_starts": self.num_starts,
        }


def _default_min_tail(gamma: float) -> int:
    """Fewest steps ``L`` with ``gamma**L <= 0.05``: truncating the return after them changes it
    by at most 5% of the largest discounted return."""
    return math.ceil(math.log(0.05) / math.log(gamma))


def _episodes(rollout: TensorDictBase, keys: tuple, done_key) -> TensorDictBase:
    if rollout.batch_dims == 1:
        rollout = rollout.unsqueeze(0)
    if rollout.batch_dims != 2:
        raise ValueError(
            f"rollout must be [T] or [episodes, T] (time last), got batch size {rollout.batch_size}."
        )
    for key in keys:
        if key not in rollout.keys(include_nested=True):
            raise KeyError(f"rollout has no {key!r} entry; keys: {list(rollout.keys(True, True))}")
    if done_key in rollout.keys(include_nested=True):
        done = rollout.get(done_key).reshape(*rollout.batch_size, -1).any(-1)
        if done[:, :-1].any():
            raise ValueError(
                "rollout rows must each be one episode from its first step: an episode ends "
                "before the last time step. Split episodes into rows of equal length first."
            )
    for key in keys:
        if not torch.isfinite(rollout.get(key)).all():
            raise ValueError(f"rollout[{key!r}] has non-finite entries.")
    return rollout


@torch.no_grad()
def world_model_calibration(
    world_model: TDMPC2WorldModel,
    rollout: TensorDictBase,
    *,
    critic: TensorDictModuleBase | None = None,
    policy: TensorDictModuleBase | None = None,
    horizon: int = 16,
    gamma: float = 0.99,
    min_tail: int | None = None,
    start_stride: int = 1,
    observation_key="observation",
    action_key="action",
    reward_key=("next", "reward"),
    done_key=("next", "done"),
    value_key="state_value",
    latent_key="latent",
) -> CalibrationReport:
    """Reward and value calibration of a world model (and critic) on real episodes.

    Args:
        world_model: the (single-task) world model.
        rollout: real episodes, ``[T]`` or ``[episodes, T]`` with time last, each row one episode
            from its start (as ``env.rollout`` returns), with ``observation_key``,
            ``action_key`` and ``reward_key`` entries.

    Keyword Args:
        critic: state-value module reading ``latent_key`` and writing ``value_key`` (e.g.
            :class:`~torchrl_pwm.modules.ValueEnsemble`, whose value is the min over members,
            the one PWM bootstraps with); ``None`` skips the value calibration.
        policy: actor reading ``latent_key`` and writing ``action_key``, run in imagination
            from every start (in the current exploration type: ``RANDOM`` as in training,
            ``DETERMINISTIC`` for the mean action); ``None`` skips it.
        horizon: imagination steps per start (16, PWM's).
        gamma: discount of the returns (0.99).
        min_tail: steps a start must leave before the end of its episode for the value
            calibration; default ``ceil(log 0.05 / log gamma)`` (299 for 0.99).
        start_stride: imagine from every ``start_stride``-th start only (cheaper).
        observation_key, action_key, reward_key, done_key, value_key, latent_key: entry names
            (the policy writes ``action_key`` too).

    Returns:
        a :class:`CalibrationReport`.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble
        >>> _ = torch.manual_seed(0)
        >>> wm = TDMPC2WorldModel(5, 2, size="1M")
        >>> episodes = TensorDict(
        ...     {"observation": torch.randn(3, 40, 5), "action": torch.rand(3, 40, 2) * 2 - 1,
        ...      ("next", "reward"): torch.rand(3, 40, 1)}, batch_size=[3, 40])
        >>> report = world_model_calibration(
        ...     wm, episodes, critic=ValueEnsemble(wm.latent_dim), horizon=4, gamma=0.9)
        >>> report.horizon, report.num_starts, report.num_value_starts
        (4, 111, 36)
        >>> # an untrained reward head predicts 0: its bias is minus the mean (symlog) reward
        >>> bool(torch.allclose(report.reward_bias, -report.reward_abs_error))
        True
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}.")
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must be in (0, 1), got {gamma}.")
    if start_stride < 1:
        raise ValueError(f"start_stride must be >= 1, got {start_stride}.")
    if getattr(world_model, "task_conditioning", None) is not None:
        raise NotImplementedError(
            "world_model_calibration supports single-task world models; this one is multi-task."
        )
    episodes = _episodes(rollout, (observation_key, action_key, reward_key), done_key)
    num_episodes, length = episodes.batch_size
    if length < horizon:
        raise ValueError(f"episodes of {length} steps are shorter than horizon={horizon}.")
    device = next(world_model.parameters()).device
    obs = episodes.get(observation_key).to(device)
    action = episodes.get(action_key).to(device)
    reward = episodes.get(reward_key).to(device).reshape(num_episodes, length)
    if world_model.reward_space == "symlog":
        reward = symlog(reward)

    # Starts t = 0, s, 2s, ... <= T - H: open-loop imagination with the actions really taken.
    first = torch.arange(0, length - horizon + 1, start_stride, device=device)
    starts = first.numel()
    window = first[:, None] + torch.arange(horizon, device=device)
    acts = action[:, window]  # [E, S, H, A]
    real = reward[:, window]  # [E, S, H]
    start_latents = world_model.encode(obs[:, first].reshape(num_episodes * starts, -1))
    latent = start_latents
    acts = acts.reshape(num_episodes * starts, horizon, -1)
    imagined = []
    for k in range(horizon):
        imagined.append(world_model.reward(latent, acts[:, k]).squeeze(-1))
        latent = world_model.next(latent, acts[:, k])
    imagined = torch.stack(imagined, -1).reshape(num_episodes, starts, horizon)
    error = imagined - real
    discount = gamma ** torch.arange(horizon, device=device, dtype=reward.dtype)

    report = CalibrationReport(
        reward_space=world_model.reward_space,
        gamma=gamma,
        reward_abs_error=error.abs().mean((0, 1)).cpu(),
        reward_bias=error.mean((0, 1)).cpu(),
        real_reward=float(reward.mean()),
        imagined_return=float((imagined * discount).sum(-1).mean()),
        real_return=float((real * discount).sum(-1).mean()),
        num_starts=num_episodes * starts,
    )
    if policy is not None:
        latent, ret = start_latents, 0.0
        for k in range(horizon):
            td = policy(TensorDict({latent_key: latent}, batch_size=latent.shape[:1]))
            act = td.get(action_key)
            ret = ret + discount[k] * world_model.reward(latent, act).squeeze(-1)
            latent = world_model.next(latent, act)
        report.policy_imagined_return = float(ret.mean())
        if critic is not None:
            end = critic(TensorDict({latent_key: latent}, batch_size=latent.shape[:1]))
            report.policy_imagined_end_value = float(end.get(value_key).mean())
    if critic is None:
        return report

    if min_tail is None:
        min_tail = _default_min_tail(gamma)
    value_starts = length - min_tail + 1
    if value_starts < 1:
        raise ValueError(
            f"episodes of {length} steps leave no start with min_tail={min_tail} steps to go; "
            "pass a smaller min_tail or longer episodes."
        )
    # Discounted return-to-go, backwards in time (the episode's end truncates it).
    return_to_go = torch.zeros_like(reward)
    running = torch.zeros_like(reward[:, 0])
    for t in range(length - 1, -1, -1):
        running = reward[:, t] + gamma * running
        return_to_go[:, t] = running
    z = world_model.encode(obs[:, :value_starts].reshape(num_episodes * value_starts, -1))
    values = critic(TensorDict({latent_key: z}, batch_size=z.shape[:1])).get(value_key)
    report.value = float(values.mean())
    report.return_to_go = float(return_to_go[:, :value_starts].mean())
    report.num_value_starts = num_episodes * value_starts
    return report


class CalibrationMetrics:
    """Model-exploitation scalars from evaluation episodes, logged while training.

    Meant for :class:`~torchrl_pwm.trainers.PolicyEvaluator`'s ``episode_metrics`` (the
    ``examples/pwm`` script's ``logger.calibration``): after each evaluation it runs
    :func:`world_model_calibration` on the deterministic evaluation episodes, with the policy
    acting deterministically in imagination too (the same policy in the model and in the env),
    and returns

    - ``{prefix}model_real_return``: real discounted H-step return from the episodes' states;
    - ``{prefix}model_open_loop_return``: the model's, fed the actions really taken;
    - ``{prefix}model_policy_return``: the model's, the policy acting in imagination;
    - ``{prefix}model_reward_mae``: mean absolute reward error over the H open-loop steps;
    - ``{prefix}value_ratio``: critic value / real return-to-go (with a ``critic``, on episodes
      long enough for the default ``min_tail``).

    A ``model_policy_return`` well above ``model_real_return`` is the actor exploiting the
    world model. The networks run eagerly here even when compiled (``torch.compile``'d
    networks would recompile for the evaluation's batch size). Episodes of the most common
    length are used (all of them on DMC); none is returned when they are shorter than
    ``horizon``.

    Args:
        world_model: the world model.

    Keyword Args:
        critic: the state-value module (``None``: no ``value_ratio``).
        policy: the actor reading the latent (``None``: no ``model_policy_return``).
        horizon: imagination steps (16).
        gamma: discount (0.99).
        start_stride: imagine from every ``start_stride``-th step of the episodes (4).
        prefix: prepended to every name (``"eval/"``).

    Examples:
        >>> from torchrl_pwm.envs import make_env
        >>> from torchrl_pwm.modules import TDMPC2WorldModel
        >>> env = make_env("cartpole-swingup", max_episode_steps=20)
        >>> wm = TDMPC2WorldModel(5, 1, size="1M")
        >>> metrics = CalibrationMetrics(wm, horizon=4)
        >>> sorted(metrics([env.rollout(100), env.rollout(100)]))
        ['eval/model_open_loop_return', 'eval/model_real_return', 'eval/model_reward_mae']
    """

    def __init__(
        self,
        world_model: TDMPC2WorldModel,
        *,
        critic: TensorDictModuleBase | None = None,
        policy: TensorDictModuleBase | None = None,
        horizon: int = 16,
        gamma: float = 0.99,
        start_stride: int = 4,
        prefix: str = "eval/",
    ) -> None:
        self.world_model = world_model
        self.critic = critic
        self.policy = policy
        self.horizon = horizon
        self.gamma = gamma
        self.start_stride = start_stride
        self.prefix = prefix
        self.min_tail = _default_min_tail(gamma)

    def __call__(self, episodes: list[TensorDictBase]) -> dict[str, float]:
        if not episodes:
            return {}
        length, _ = Counter(ep.batch_size[-1] for ep in episodes).most_common(1)[0]
        if length < self.horizon:
            return {}
        rollout = torch.stack([ep for ep in episodes if ep.batch_size[-1] == length])
        critic = self.critic if length > self.min_tail else None
        with (
            torch.compiler.set_stance("force_eager"),
            set_exploration_type(ExplorationType.DETERMINISTIC),
        ):
            report = world_model_calibration(
                self.world_model,
                rollout,
                critic=critic,
                policy=self.policy,
                horizon=self.horizon,
                gamma=self.gamma,
                start_stride=self.start_stride,
            )
        out = {
            "model_real_return": report.real_return,
            "model_open_loop_return": report.imagined_return,
            "model_reward_mae": float(report.reward_abs_error.mean()),
        }
        if report.policy_imagined_return is not None:
            out["model_policy_return"] = report.policy_imagined_return
        if report.value_ratio is not None:
            out["value_ratio"] = report.value_ratio
        return {self.prefix + k: v for k, v in out.items()}
