"""TD-MPC2's implicit (decoder-free) world model as a TorchRL ``WorldModelWrapper``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import WorldModelWrapper

from torchrl_pwm.modules.functional import two_hot_inv
from torchrl_pwm.modules.layers import EnsembleMLP, SimNorm, normed_mlp, trunc_normal_init_

__all__ = ["WORLD_MODEL_PRESETS", "TDMPC2WorldModel", "WorldModelPreset"]


@dataclass(frozen=True)
class WorldModelPreset:
    """Architecture of one TD-MPC2 size preset (``MODEL_SIZE`` in TD-MPC2)."""

    enc_dim: int
    mlp_dim: int
    latent_dim: int
    num_enc_layers: int
    num_q: int


#: TD-MPC2's size presets. The names count TD-MPC2's whole agent (encoder, dynamics, reward,
#: policy prior and Q ensemble) on the 80-task set; see :class:`TDMPC2WorldModel`.
WORLD_MODEL_PRESETS: dict[str, WorldModelPreset] = {
    "1M": WorldModelPreset(256, 384, 128, 2, 2),
    "5M": WorldModelPreset(256, 512, 512, 2, 5),
    "19M": WorldModelPreset(1024, 1024, 768, 3, 5),
    "48M": WorldModelPreset(1792, 1792, 768, 4, 5),
    "317M": WorldModelPreset(4096, 4096, 1376, 5, 8),
}


class _TaskConditioning(nn.Module):
    """Task embedding and action masks shared by every network of a multi-task model."""

    def __init__(self, num_tasks: int, task_dim: int, action_dims: Sequence[int], action_dim: int):
        super().__init__()
        # max_norm=1 renormalises rows on lookup; TD-MPC2 checkpoints rely on it.
        self.embedding = nn.Embedding(num_tasks, task_dim, max_norm=1)
        masks = torch.zeros(num_tasks, action_dim)
        for i, n in enumerate(action_dims):
            masks[i, :n] = 1.0
        self.register_buffer("action_masks", masks)

    @staticmethod
    def _index(task: torch.Tensor, batch_shape: torch.Size) -> torch.Tensor:
        """Task ids broadcast to ``batch_shape``: ``[*B]``, ``[*B, 1]`` or a trailing part of
        ``B`` (e.g. ``[B]`` for ``[T, B]`` inputs, as TD-MPC2 broadcasts over time)."""
        if task.dtype.is_floating_point:
            raise TypeError(f"task ids must be integers, got dtype {task.dtype}.")
        if task.shape == (*batch_shape, 1):
            task = task.squeeze(-1)
        if task.shape != batch_shape:
            if task.ndim > len(batch_shape) or batch_shape[len(batch_shape) - task.ndim :] != (
                task.shape
            ):
                raise ValueError(
                    f"task ids of shape {tuple(task.shape)} do not match inputs of batch shape "
                    f"{tuple(batch_shape)}: expected {tuple(batch_shape)}, "
                    f"{(*batch_shape, 1)} or a trailing part of it."
                )
            task = task.expand(batch_shape)
        return task.long()

    def embed(self, task: torch.Tensor, batch_shape: torch.Size) -> torch.Tensor:
        return self.embedding(self._index(task, batch_shape))

    def mask(self, action: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return action * self.action_masks[self._index(task, action.shape[:-1])]


class _Encoder(nn.Module):
    def __init__(self, net: nn.Module, observation_dim: int, tasks: _TaskConditioning | None):
        super().__init__()
        self.net = net
        self.observation_dim = observation_dim
        self.__dict__["tasks"] = tasks  # owned by the world model, not registered twice

    def forward(self, observation: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        if observation.shape[-1] != self.observation_dim:
            raise ValueError(
                f"The world model expects observations of size {self.observation_dim} "
                f"(last dimension), got shape {tuple(observation.shape)}. Multi-task models "
                "take observations zero-padded to the task set's largest observation."
            )
        if self.tasks is not None:
            observation = torch.cat(
                [observation, self.tasks.embed(task, observation.shape[:-1])], -1
            )
        return self.net(observation)


class _LatentActionNet(nn.Module):
    """Runs ``net([z, e, a])`` (TD-MPC2's input order, which its checkpoints depend on).

    The action goes in as given (TD-MPC2 and the original PWM: padded entries included);
    with ``mask_actions`` its padded entries are zeroed first with the task's action mask.
    """

    def __init__(self, net: nn.Module, tasks: _TaskConditioning | None, mask_actions: bool = False):
        super().__init__()
        self.net = net
        self.__dict__["tasks"] = tasks
        self.mask_actions = mask_actions

    def features(
        self, latent: torch.Tensor, action: torch.Tensor, task: torch.Tensor | None
    ) -> torch.Tensor:
        if self.tasks is None:
            return torch.cat([latent, action], -1)
        embedding = self.tasks.embed(task, latent.shape[:-1])
        if self.mask_actions:
            action = self.tasks.mask(action, task)
        return torch.cat([latent, embedding, action], -1)

    def forward(
        self, latent: torch.Tensor, action: torch.Tensor, task: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.net(self.features(latent, action, task))


class _RewardHead(_LatentActionNet):
    """Returns ``(decoded reward [..., 1], logits [..., num_bins or 1])``."""

    def __init__(
        self,
        net,
        tasks,
        num_bins: int,
        vmin: float,
        vmax: float,
        reward_space: str,
        mask_actions: bool = False,
    ):
        super().__init__(net, tasks, mask_actions)
        self.num_bins, self.vmin, self.vmax = num_bins, vmin, vmax
        self.reward_space = reward_space
        # the two-hot support, built once; not persistent: state dicts are unchanged
        self.register_buffer("bins", torch.linspace(vmin, vmax, max(num_bins, 1)), persistent=False)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        if self.num_bins <= 1:
            return logits
        return two_hot_inv(
            logits,
            self.vmin,
            self.vmax,
            apply_symexp=self.reward_space == "raw",
            bins=self.bins.to(logits.dtype),
        )

    def forward(self, latent, action, task=None):
        logits = super().forward(latent, action, task)
        return self.decode(logits), logits


class TDMPC2WorldModel(WorldModelWrapper):
    """TD-MPC2's latent world model: encoder ``E``, dynamics ``F`` and reward ``R``.

    ``z = E(o, e)`` and ``z' = F(z, e, a)`` end with ``Linear → LayerNorm → SimNorm``; the reward
    head ``R(z, e, a)`` predicts two-hot logits over ``num_bins`` symlog bins (or a scalar with
    ``num_bins=0``). ``e`` is an optional task embedding (multi-task models); observations are
    then zero-padded to the task set's largest observation and actions padded to its largest
    action.

    **Padded action entries.** As in TD-MPC2 and the original PWM, dynamics, reward and Q take
    the action as given, padded entries included: TD-MPC2 masks only its policy prior's mean
    and log-std (:meth:`policy_prior_mean_log_std`), so its data and its planner's actions
    hold zeros there, and an imported model computes exactly what TD-MPC2 computes. With
    ``mask_action_inputs=True`` the padded entries are zeroed with the task's action mask
    before entering dynamics, reward and Q, which makes the model blind to them whatever
    the policy writes there (not TD-MPC2's behaviour: a model trained that way and one
    trained by TD-MPC2 agree only where the padded entries are zero).

    The module is a :class:`~torchrl.modules.WorldModelWrapper` of two ``TensorDictModule``
    operators, both reading ``latent`` and ``action`` (and ``task``):

    - transition: writes the next latent under ``("next", latent_key)``;
    - reward: writes the decoded reward under ``reward_key`` and its logits under
      ``"reward_logits"``. Rewards are decoded as the softmax expectation over the bins, in
      symlog space (``reward_space="symlog"``, the original PWM code) or mapped back with
      ``symexp`` (``reward_space="raw"``, TD-MPC2).

    The encoder is the extra operator ``encoder`` (``observation → latent``). The
    functional API mirrors TD-MPC2: :meth:`encode`, :meth:`next`, :meth:`reward`.

    With ``value_heads=True`` the model also holds TD-MPC2's policy prior and Q ensemble
    (``num_q`` members, two-hot logits), which TD-MPC2 trains jointly with the world model and
    which its checkpoints contain (:meth:`policy_prior_mean_log_std`, :meth:`q_logits`). PWM's
    policy learning never uses them.

    **TD-MPC2 checkpoints** load with :meth:`from_tdmpc2_checkpoint` (both layouts TD-MPC2
    has written). Rewards then decode as TD-MPC2's ``two_hot_inv`` with
    ``reward_space="raw"`` (symexp of the softmax expectation over the bins: TD-MPC2 parity)
    and as the original PWM's ``almost_two_hot_inv`` with ``reward_space="symlog"`` (the same
    expectation without symexp: PWM parity, what PWM's actor and critic optimise).

    **What the preset names count.** TD-MPC2 names its sizes after the whole agent on the
    80-task set (observations 39, actions 6, 80 tasks, task_dim 96). With
    ``value_heads=True`` at those dimensions the parameter count is within 2% of the name
    (1.44M, 5.39M, 18.97M, 48.79M, 317.4M). Encoder + dynamics + reward alone, which is what
    PWM uses, is about a third of it (0.64M, 1.65M, 6.8M, 19.2M, 108M); see
    :meth:`num_parameters`.

    Args:
        observation_dim: size of the (flat, padded) observation.
        action_dim: size of the (padded) action.

    Keyword Args:
        size: a preset name of :data:`WORLD_MODEL_PRESETS` (default ``"5M"``); explicit
            ``latent_dim``, ``enc_dim``, ``mlp_dim``, ``num_enc_layers``, ``num_q`` override
            it.
        num_bins: reward bins (101); ``0`` or ``1`` for a scalar reward head.
        vmin: lower end of the bin support in symlog space (-10).
        vmax: upper end of the bin support in symlog space (10).
        simplex_dim: SimNorm group size (8).
        num_tasks: number of tasks; ``None`` for a single-task model (no embedding).
        task_dim: task-embedding size (96; the released mt30 5M/19M/48M checkpoints use 64).
        action_dims: valid action size per task, for the action masks (default: all).
        reward_space: ``"symlog"`` (default) or ``"raw"``, see above.
        mask_action_inputs: zero the padded action entries (task's action mask) before
            dynamics, reward and Q (default ``False``: TD-MPC2's behaviour, see above).
        value_heads: also build the policy prior and the Q ensemble.
        reward_ensemble: number of reward heads (1). With ``K > 1`` the model also holds
            ``extra_reward_heads``, ``K - 1`` more heads of the reward head's shape
            (:class:`~torchrl_pwm.modules.EnsembleMLP`, independently initialised, last layer
            not zeroed), trained on the same targets (on the detached latent:
            :class:`~torchrl_pwm.objectives.TDMPC2ModelLoss`); their spread,
            :meth:`reward_members`, measures where the model is unsure (an option, not in
            PWM or TD-MPC2; their checkpoints have one head). The primary head stays the
            reward of :meth:`reward` and of TD-MPC2 checkpoints.
        log_std_bounds: ``(min, max)`` of the policy prior's log-std (TD-MPC2: ``(-10, 2)``).
        observation_key: key of the observation (``"observation"``).
        latent_key: key of the latent (``"latent"``).
        action_key: key of the action (``"action"``).
        reward_key: key of the decoded reward (``"reward"``).
        task_key: key of the task id (``"task"``, multi-task models only).

    Examples:
        >>> from tensordict import TensorDict
        >>> wm = TDMPC2WorldModel(5, 1, size="1M")
        >>> td = TensorDict(observation=torch.randn(4, 5), action=torch.rand(4, 1), batch_size=[4])
        >>> td = wm(wm.encoder(td))
        >>> td["latent"].shape, td["next", "latent"].shape, td["reward"].shape
        (torch.Size([4, 128]), torch.Size([4, 128]), torch.Size([4, 1]))
        >>> r = wm.reward(td["latent"], td["action"])  # zero-initialised head: reward 0
        >>> r.shape, bool(r.abs().max() < 1e-6)
        (torch.Size([4, 1]), True)
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        *,
        size: str | None = "5M",
        latent_dim: int | None = None,
        enc_dim: int | None = None,
        mlp_dim: int | None = None,
        num_enc_layers: int | None = None,
        num_q: int | None = None,
        num_bins: int = 101,
        vmin: float = -10.0,
        vmax: float = 10.0,
        simplex_dim: int = 8,
        num_tasks: int | None = None,
        task_dim: int = 96,
        action_dims: Sequence[int] | None = None,
        reward_space: str = "symlog",
        mask_action_inputs: bool = False,
        value_heads: bool = False,
        log_std_bounds: tuple[float, float] = (-10.0, 2.0),
        reward_ensemble: int = 1,
        observation_key: NestedKey = "observation",
        latent_key: NestedKey = "latent",
        action_key: NestedKey = "action",
        reward_key: NestedKey = "reward",
        task_key: NestedKey = "task",
    ) -> None:
        if size is not None and size not in WORLD_MODEL_PRESETS:
            raise ValueError(
                f"Unknown world-model size {size!r}; choose one of {list(WORLD_MODEL_PRESETS)}."
            )
        if (
            isinstance(reward_ensemble, bool)
            or not isinstance(reward_ensemble, int)
            or reward_ensemble < 1
        ):
            raise ValueError(f"reward_ensemble must be an integer >= 1, got {reward_ensemble!r}.")
        if reward_space not in ("symlog", "raw"):
            raise ValueError(f"reward_space must be 'symlog' or 'raw', got {reward_space!r}.")
        preset = WORLD_MODEL_PRESETS[size or "5M"]
        latent_dim = latent_dim or preset.latent_dim
        enc_dim = enc_dim or preset.enc_dim
        mlp_dim = mlp_dim or preset.mlp_dim
        num_enc_layers = num_enc_layers or preset.num_enc_layers
        if latent_dim % simplex_dim:
            raise ValueError(f"latent_dim={latent_dim} must be a multiple of {simplex_dim}.")
        multitask = num_tasks is not None
        if multitask and action_dims is not None and len(action_dims) != num_tasks:
            raise ValueError(f"action_dims has {len(action_dims)} entries for {num_tasks} tasks.")
        tasks = (
            _TaskConditioning(
                num_tasks, task_dim, action_dims or [action_dim] * num_tasks, action_dim
            )
            if multitask
            else None
        )
        e = task_dim if multitask else 0
        out_bins = max(num_bins, 1)

        encoder = _Encoder(
            normed_mlp(
                observation_dim + e,
                [enc_dim] * max(num_enc_layers - 1, 1),
                latent_dim,
                last_activation=SimNorm(simplex_dim),
            ),
            observation_dim,
            tasks,
        )
        dynamics = _LatentActionNet(
            normed_mlp(
                latent_dim + e + action_dim,
                [mlp_dim, mlp_dim],
                latent_dim,
                last_activation=SimNorm(simplex_dim),
            ),
            tasks,
            mask_action_inputs,
        )
        reward = _RewardHead(
            normed_mlp(latent_dim + e + action_dim, [mlp_dim, mlp_dim], out_bins),
            tasks,
            num_bins,
            vmin,
            vmax,
            reward_space,
            mask_action_inputs,
        )
        for net in (encoder, dynamics, reward, tasks):
            if net is not None:
                trunc_normal_init_(net)  # the embedding: U(-0.02, 0.02), as TD-MPC2
        nn.init.zeros_(reward.net[-1].weight)

        task_in = [task_key] if multitask else []
        super().__init__(
            TensorDictModule(
                dynamics,
                in_keys=[latent_key, action_key, *task_in],
                out_keys=[("next", latent_key)],
            ),
            TensorDictModule(
                reward,
                in_keys=[latent_key, action_key, *task_in],
                out_keys=[reward_key, "reward_logits"],
            ),
        )
        self.encoder = TensorDictModule(
            encoder, in_keys=[observation_key, *task_in], out_keys=[latent_key]
        )
        self.task_conditioning = tasks
        self.observation_dim, self.action_dim, self.latent_dim = (
            observation_dim,
            action_dim,
            latent_dim,
        )
        self.num_bins, self.vmin, self.vmax = num_bins, vmin, vmax
        self.num_tasks = num_tasks
        self.observation_key, self.latent_key, self.action_key = (
            observation_key,
            latent_key,
            action_key,
        )
        self.reward_key, self.task_key = reward_key, task_key
        self.mask_action_inputs = mask_action_inputs
        # TD-MPC2's log_std_min / log_std_dif (plain numbers: not in our state dict)
        self.log_std_min = float(log_std_bounds[0])
        self.log_std_dif = float(log_std_bounds[1]) - float(log_std_bounds[0])
        if value_heads:
            self.policy_prior = trunc_normal_init_(
                normed_mlp(latent_dim + e, [mlp_dim, mlp_dim], 2 * action_dim)
            )
            self.q_ensemble = EnsembleMLP(
                num_q or preset.num_q,
                latent_dim + e + action_dim,
                [mlp_dim, mlp_dim],
                out_bins,
                norm_first=True,
                dropout=0.01,
                init="trunc_normal",
                zero_last=True,
            )
        else:
            self.policy_prior = None
            self.q_ensemble = None
        self.extra_reward_heads = (
            EnsembleMLP(
                reward_ensemble - 1,
                latent_dim + e + action_dim,
                [mlp_dim, mlp_dim],
                out_bins,
                norm_first=True,
                init="trunc_normal",
            )
            if reward_ensemble > 1
            else None
        )

    # -- functional API (TD-MPC2's) ------------------------------------------------------
    def encode(self, observation: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """``z = E(o, e)``."""
        return self.encoder.module(observation, task)

    def next(
        self, latent: torch.Tensor, action: torch.Tensor, task: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``z' = F(z, e, a)``."""
        return self.get_transition_model_operator().module(latent, action, task)

    def reward_logits(
        self, latent: torch.Tensor, action: torch.Tensor, task: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw output of the reward head (two-hot logits, or the scalar reward)."""
        head = self.get_reward_operator().module
        return _LatentActionNet.forward(head, latent, action, task)

    def reward(
        self, latent: torch.Tensor, action: torch.Tensor, task: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decoded reward ``R(z, e, a)`` of shape ``[..., 1]`` (see ``reward_space``)."""
        return self.get_reward_operator().module(latent, action, task)[0]

    def extra_reward_logits(
        self, latent: torch.Tensor, action: torch.Tensor, task: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw outputs ``[..., K - 1, num_bins or 1]`` of the extra reward heads."""
        if self.extra_reward_heads is None:
            raise RuntimeError("This world model has one reward head (reward_ensemble=1).")
        head = self.get_reward_operator().module
        return self.extra_reward_heads(head.features(latent, action, task))

    def reward_members(
        self, latent: torch.Tensor, action: torch.Tensor, task: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decoded rewards of every reward head, ``[..., K, 1]``, the primary head first
        (``[..., 1, 1]`` with one head). Their standard deviation over ``K`` is the
        disagreement :class:`~torchrl_pwm.objectives.FirstOrderActorLoss` can penalise."""
        head = self.get_reward_operator().module
        features = head.features(latent, action, task)
        rewards = [head.decode(head.net(features)).unsqueeze(-2)]
        if self.extra_reward_heads is not None:
            rewards.append(head.decode(self.extra_reward_heads(features)))
        return torch.cat(rewards, -2)

    def decode_reward(self, logits: torch.Tensor) -> torch.Tensor:
        """Decode reward-head outputs as the imagination does."""
        return self.get_reward_operator().module.decode(logits)

    def _value_head_input(self, latent: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        if self.policy_prior is None:
            raise RuntimeError(
                "This world model has no policy prior or Q ensemble: build it with "
                "value_heads=True (from_tdmpc2_checkpoint does)."
            )
        if self.task_conditioning is None:
            return latent
        return torch.cat([latent, self.task_conditioning.embed(task, latent.shape[:-1])], -1)

    def policy_prior_mean_log_std(
        self, latent: torch.Tensor, task: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TD-MPC2's policy prior ``π(z, e)``: the Gaussian's mean (before ``tanh``) and
        log-std, ``log_std_min + ½·log_std_dif·(tanh(x) + 1)``; for multi-task models both are
        multiplied by the task's action mask, as in TD-MPC2 (padded actions are ``tanh(0) =
        0``). TD-MPC2's evaluation action is ``tanh(mean)``. Needs ``value_heads=True``.

        Examples:
            >>> wm = TDMPC2WorldModel(5, 3, size="1M", num_tasks=2, action_dims=[3, 1],
            ...                       value_heads=True)
            >>> mean, log_std = wm.policy_prior_mean_log_std(
            ...     torch.rand(4, 128), torch.tensor([0, 1, 1, 0]))
            >>> mean.shape, bool((mean[1, 1:] == 0).all()), bool((log_std[1, 1:] == 0).all())
            (torch.Size([4, 3]), True, True)
        """
        mean, raw_log_std = self.policy_prior(self._value_head_input(latent, task)).chunk(2, -1)
        log_std = self.log_std_min + 0.5 * self.log_std_dif * (torch.tanh(raw_log_std) + 1)
        if self.task_conditioning is not None:
            mask = self.task_conditioning.action_masks[
                self.task_conditioning._index(task, latent.shape[:-1])
            ]
            mean, log_std = mean * mask, log_std * mask
        return mean, log_std

    def q_logits(
        self, latent: torch.Tensor, action: torch.Tensor, task: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Every member of TD-MPC2's Q ensemble on ``[z, e, a]``: two-hot logits of shape
        ``[..., num_q, num_bins]`` (TD-MPC2's ``Q(..., return_type="all")``, whose members
        come first). The action goes in as given, unless ``mask_action_inputs``. Needs
        ``value_heads=True``.

        Examples:
            >>> wm = TDMPC2WorldModel(5, 2, size="1M", value_heads=True)
            >>> wm.q_logits(torch.rand(4, 128), torch.rand(4, 2)).shape
            torch.Size([4, 2, 101])
        """
        features = self._value_head_input(latent, task)
        if self.mask_action_inputs and self.task_conditioning is not None:
            action = self.task_conditioning.mask(action, task)
        return self.q_ensemble(torch.cat([features, action], -1))

    @classmethod
    def from_tdmpc2_checkpoint(
        cls,
        path,
        task_set=None,
        *,
        return_report: bool = False,
        **kwargs,
    ):
        """Build a world model (with its policy prior and Q ensemble) from a checkpoint
        written by TD-MPC2 (``torch.save({"model": state_dict})``), loaded with
        ``torch.load(weights_only=True)``.

        Both layouts TD-MPC2 has written are read: the current one (Q ensemble as TensorDict
        parameters ``_Qs.params.<layer>.<name>``, ``_detach_Qs_params``,
        ``_target_Qs_params``, buffers ``log_std_min``, ``log_std_dif``, ``_action_masks``)
        and the paper-era functorch one (``_Qs.params.<n>`` and ``_target_Qs.params.<n>``,
        four tensors per layer; no ``log_std_*`` nor ``_action_masks``: TD-MPC2's log-std
        bounds ``(-10, 2)`` and the task set's action sizes are used). The architecture
        (observation, action and latent sizes, widths, encoder depth, task-embedding size,
        bins, ensemble size) is read from the tensors' shapes, which covers the released
        ``mt30`` models' quirks (``task_dim`` 64 at 5M/19M/48M, latent 512 at 19M).

        Every key is consumed or reported: encoder, dynamics, reward, task embedding, policy
        prior, Q ensemble, ``log_std_min`` / ``log_std_dif`` go into the model;
        ``_action_masks`` is checked against the task set; the target Q copy is returned in
        the report (``report.target_q_ensemble``); ``_detach_Qs_params`` (the same values as
        ``_Qs.params``: checked) and the ``__batch_size`` / ``__device`` entries are listed
        as ignored, as is an episodic model's termination head. Any other key is an error.

        Args:
            path: the checkpoint file.
            task_set: for multi-task checkpoints, ``"mt30"`` or ``"mt80"`` (checked against
                the number of task embeddings, the padded observation and action sizes and the
                action masks; gives the action masks of paper-era files), or ``None`` (current
                layout: the masks come from the file). Must be ``None`` for single-task
                checkpoints.

        Keyword Args:
            return_report: also return the :class:`TDMPC2CheckpointReport`.
            **kwargs: other constructor arguments (``reward_space="raw"`` for TD-MPC2
                parity, ``mask_action_inputs``, keys).

        Raises:
            ValueError: a key that is missing, unknown or of another shape than the others
                imply, or a task set that does not match; the message names the key and what
                was expected.
            FileNotFoundError / RuntimeError: no file, or one that does not load weights-only.

        Examples:
            >>> import tempfile, os
            >>> from torchrl_pwm.modules import to_tdmpc2_state_dict
            >>> src = TDMPC2WorldModel(5, 1, size="1M", value_heads=True)
            >>> path = os.path.join(tempfile.mkdtemp(), "tdmpc2.pt")
            >>> state = to_tdmpc2_state_dict(src)
            >>> torch.save({"model": state}, path)
            >>> wm, report = TDMPC2WorldModel.from_tdmpc2_checkpoint(path, return_report=True)
            >>> report.layout, wm.latent_dim, len(state), len(report.consumed), len(report.ignored)
            ('current', 128, 78, 62, 16)
            >>> report.ignored["_detach_Qs_params.0.weight"]
            "detached view of '_Qs.params.0.weight' (same values, checked)"
            >>> obs = torch.randn(3, 5)
            >>> torch.equal(wm.encode(obs), src.encode(obs))
            True
        """
        from torchrl_pwm.modules.tdmpc2_checkpoint import load_tdmpc2_checkpoint

        model, report = load_tdmpc2_checkpoint(cls, path, task_set, **kwargs)
        return (model, report) if return_report else model

    @property
    def reward_space(self) -> str:
        return self.get_reward_operator().module.reward_space

    def num_parameters(self, part: str = "world_model") -> int:
        """Parameter count of ``"world_model"`` (encoder, dynamics, reward heads, task
        embedding), ``"value_heads"`` (policy prior and Q ensemble) or ``"all"``."""
        heads = [m for m in (self.policy_prior, self.q_ensemble) if m is not None]
        wm = [self.encoder, *self.module]
        if self.extra_reward_heads is not None:
            wm.append(self.extra_reward_heads)
        if self.task_conditioning is not None:
            wm.append(self.task_conditioning)
        groups = {"world_model": wm, "value_heads": heads, "all": wm + heads}
        if part not in groups:
            raise ValueError(f"part must be one of {list(groups)}, got {part!r}.")
        return sum(p.numel() for m in groups[part] for p in m.parameters())
