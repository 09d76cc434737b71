"""Real environments by task name, with the transforms PWM's training and evaluation expect."""

from __future__ import annotations

import difflib
import os

import torch
from torchrl.envs import (
    CatTensors,
    DoubleToFloat,
    EnvBase,
    InitTracker,
    RewardSum,
    StepCounter,
    TransformedEnv,
)

from torchrl_pwm.envs.dmc_custom import CUSTOM_TASKS, UNAVAILABLE_CUSTOM_TASKS, load_custom_task
from torchrl_pwm.envs.multitask import MultiTaskPadding
from torchrl_pwm.envs.task_sets import task_set as _task_set

__all__ = ["OBSERVATION_LAYOUT_VERSION", "UnknownTaskError", "available_tasks", "make_env"]

#: Version of the observation layout :func:`make_env` produces; checkpoints store it.
#: 1: DMC entries concatenated in sorted-key order (before this version).
#: 2: DMC entries concatenated in dm_control's own order (the task's ``OrderedDict``), as
#: TD-MPC2 does; differs from 1 on walker, hopper, finger and fish. Gymnasium tasks and the
#: other DMC domains are the same in both.
OBSERVATION_LAYOUT_VERSION = 2


class UnknownTaskError(ValueError):
    """:func:`make_env` was given a name that is not in :func:`available_tasks`; the message
    lists the closest names, or the valid ones.

    Examples:
        >>> try:
        ...     make_env("cheeta-run")
        ... except UnknownTaskError as err:
        ...     print(str(err)[:53])
        Unknown task 'cheeta-run'. Did you mean 'cheetah-run'
    """


# TD-MPC2's names for DMC domains whose dm_control names differ.
_DMC_DOMAIN_ALIASES = {"cup": "ball_in_cup", "pointmass": "point_mass"}
_GYM_PREFIXES = ("HalfCheetah", "Hopper", "Walker2d", "Ant", "Humanoid", "Swimmer", "Reacher",
                 "InvertedPendulum", "InvertedDoublePendulum", "Pusher", "HumanoidStandup")  # fmt: skip


def _dmc_tasks() -> dict[str, tuple[str, str]]:
    from dm_control import suite

    names = {}
    inverse = {v: k for k, v in _DMC_DOMAIN_ALIASES.items()}
    for domain, task in suite.ALL_TASKS:
        names[f"{inverse.get(domain, domain)}-{task.replace('_', '-')}"] = (domain, task)
    return names


def _gym_tasks() -> list[str]:
    import gymnasium as gym

    return sorted(k for k in gym.envs.registry if k.split("-")[0] in _GYM_PREFIXES)


def available_tasks() -> list[str]:
    """Names accepted by :func:`make_env`: DMC tasks in TD-MPC2's ``domain-task`` form
    (``"cheetah-run"``, ``"cup-catch"``, ``"cartpole-swingup-sparse"``), the custom DMC tasks
    of TD-MPC2's ``mt30`` that can be built (:mod:`torchrl_pwm.envs.dmc_custom`), TD-MPC2's 50
    Meta-World tasks (``"mw-reach"``, :mod:`torchrl_pwm.envs.metaworld`) when the optional
    ``metaworld`` package is installed, and Gymnasium MuJoCo ids (``"HalfCheetah-v5"``).

    Examples:
        >>> "cheetah-run" in available_tasks() and "HalfCheetah-v5" in available_tasks()
        True
    """
    from torchrl_pwm.envs.metaworld import metaworld_available, metaworld_tasks

    metaworld = metaworld_tasks() if metaworld_available() else []
    return sorted([*_dmc_tasks(), *CUSTOM_TASKS, *metaworld]) + _gym_tasks()


def _metaworld_tasks() -> list[str]:
    from torchrl_pwm.envs.metaworld import metaworld_tasks

    return metaworld_tasks()


def _unknown_task_message(task: str) -> str:
    tasks = available_tasks()
    close = difflib.get_close_matches(task, tasks, n=5, cutoff=0.5)
    if close:
        return f"Unknown task {task!r}. Did you mean {', '.join(repr(c) for c in close)}?"
    dmc = [t for t in tasks if t in _dmc_tasks()]
    return (
        f"Unknown task {task!r}. Valid tasks: the DMC tasks {', '.join(dmc)}; and the "
        f"Gymnasium MuJoCo ids {', '.join(_GYM_PREFIXES)} with a version suffix "
        "(e.g. 'HalfCheetah-v5'); see torchrl_pwm.envs.available_tasks()."
    )


def _dm_control_observation_order(base: EnvBase) -> list[str]:
    """The observation entries of a TorchRL DMC env in dm_control's own order (the order of the
    task's ``OrderedDict``, which TD-MPC2 concatenates), without ``pixels``."""
    return [key for key in base._env.observation_spec() if key != "pixels"]


def make_env(
    task: str,
    *,
    task_set: str | None = None,
    seed: int | None = 0,
    action_repeat: int | None = None,
    max_episode_steps: int | None = None,
    from_pixels: bool = False,
    render_size: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
) -> TransformedEnv:
    """Build a real environment with PWM's standard transforms.

    The result has a flat float32 ``observation``, float32 actions in ``[-1, 1]`` (DMC), a
    ``step_count`` (agent steps), ``is_init`` (:class:`~torchrl.envs.InitTracker`, which the
    collectors need) and ``episode_reward`` (:class:`~torchrl.envs.RewardSum`).

    A DMC ``observation`` is the concatenation of the task's observation entries in
    dm_control's own order (the order of the ``OrderedDict`` the task returns), exactly as
    TD-MPC2 builds it, so models trained on TD-MPC2's data see what they were trained on
    (observation layout version 2, :data:`OBSERVATION_LAYOUT_VERSION`; version 1, before,
    sorted the entries by name, which differs on walker, hopper, finger and fish).

    DMC tasks repeat each action twice by default (TD-MPC2's convention: 500 agent steps per
    1000-step episode, summed rewards); Gymnasium tasks once. Everything the project reports
    counts **env steps, after the repeat**: ``frames * env.action_repeat``.

    Meta-World tasks (``"mw-reach"``: TD-MPC2's names for the 50 MT50 tasks, built as
    Meta-World **v3** envs where TD-MPC2 used v2) follow TD-MPC2's conventions
    (:mod:`torchrl_pwm.envs.metaworld`): a 39-dim observation, a 4-dim action, action repeat
    2, 100 agent steps per episode, and a bool ``success`` beside ``reward`` at every step (an
    episode's success is that of its last step, as TD-MPC2 reports it). They need the
    optional package: ``pip install --no-deps metaworld==3.1.1``.

    With ``task_set`` (``"mt30"`` or ``"mt80"``) the env speaks the set's padded interface
    (:class:`~torchrl_pwm.envs.multitask.MultiTaskPadding`): observations zero-padded to the
    set's largest, actions of the set's largest size (the extra entries are dropped before
    stepping) and the task's id under ``"task"``, as TD-MPC2 evaluates multi-task models.

    Args:
        task: a name from :func:`available_tasks` (any other raises
            :class:`UnknownTaskError`). Meta-World names (``"mw-reach"``) raise
            :class:`ImportError` with the install command when ``metaworld`` is missing. The
            custom ``mt30`` tasks that cannot be re-derived (``"reacher-three-easy"``,
            ``"reacher-three-hard"``; see :mod:`torchrl_pwm.envs.dmc_custom`) raise
            :class:`NotImplementedError` with the reason.

    Keyword Args:
        task_set: ``None`` (the task's own observation and action), ``"mt30"`` or ``"mt80"``
            (see above; ``task`` must belong to the set).
        seed: environment seed (``None``: unseeded).
        action_repeat: default 2 for DMC and Meta-World, 1 for Gymnasium.
        max_episode_steps: truncate episodes after this many agent steps (default: the task's
            own limit; 100 for Meta-World, TD-MPC2's).
        from_pixels: also render ``pixels`` (for evaluation videos).
            ``MUJOCO_GL`` defaults to ``egl``, which renders headless. Without a GPU, EGL
            renders in software: about 0.05 s per 240x320 frame on this project's 2-core
            CPU, and DMC renders at every repeated step, so keep videos small.
        render_size: ``(height, width)`` of ``pixels`` (default: the task's, 240x320 on
            DMC, 384x384 on Meta-World).
        device: device of the env's outputs.

    Examples:
        >>> env = make_env("cartpole-swingup", seed=0)
        >>> env.action_repeat, env.observation_spec["observation"].shape
        (2, torch.Size([5]))
        >>> td = env.rollout(3)
        >>> td["next", "step_count"].squeeze(-1).tolist()
        [1, 2, 3]
        >>> env = make_env("walker-walk", task_set="mt30")
        >>> env.observation_spec["observation"].shape, env.action_spec.shape
        (torch.Size([24]), torch.Size([6]))
        >>> env.reset()["task"]
        tensor(1)
    """
    # Headless rendering (and no GLFW warnings): EGL unless the user chose a backend.
    os.environ.setdefault("MUJOCO_GL", "egl")
    if task_set is not None:
        names = [info.name for info in _task_set(task_set)]
        if task not in names:
            raise ValueError(
                f"Task {task!r} is not in the task set {task_set!r}; its tasks are "
                f"{', '.join(names)}."
            )
    dmc = _dmc_tasks()
    if task in dmc or task in CUSTOM_TASKS:
        from torchrl.envs import DMControlEnv, DMControlWrapper

        repeat = 2 if action_repeat is None else action_repeat
        pixels = {"from_pixels": from_pixels, "pixels_only": False}
        if render_size is not None:
            pixels["render_kwargs"] = {"height": render_size[0], "width": render_size[1]}
        if task in CUSTOM_TASKS:
            base: EnvBase = DMControlWrapper(
                load_custom_task(task), frame_skip=repeat, device=device, **pixels
            )
        elif render_size is None:
            domain, name = dmc[task]
            base = DMControlEnv(domain, name, frame_skip=repeat, device=device, **pixels)
        else:
            # TorchRL 0.14's DMControlEnv forwards render_kwargs to suite.load (a TypeError);
            # the wrapper takes them.
            from dm_control import suite

            base = DMControlWrapper(
                suite.load(*dmc[task]), frame_skip=repeat, device=device, **pixels
            )
        # sort=False: CatTensors sorts its keys by default; TD-MPC2 keeps dm_control's order.
        cat = CatTensors(
            in_keys=_dm_control_observation_order(base), out_key="observation", sort=False
        )
        env = TransformedEnv(base, cat)
        env.append_transform(DoubleToFloat())
    elif task in _gym_tasks():
        from torchrl.envs import GymEnv

        repeat = 1 if action_repeat is None else action_repeat
        size = {} if render_size is None else {"height": render_size[0], "width": render_size[1]}
        base = GymEnv(
            task,
            frame_skip=repeat,
            from_pixels=from_pixels,
            pixels_only=False,
            device=device,
            **size,
        )
        env = TransformedEnv(base, DoubleToFloat())
    elif task.startswith("mw-") and task in _metaworld_tasks():
        from torchrl_pwm.envs.metaworld import make_metaworld_env

        repeat = 2 if action_repeat is None else action_repeat
        base = make_metaworld_env(
            task,
            seed=None,  # set_seed below, after the transforms, as for the other suites
            action_repeat=repeat,
            from_pixels=from_pixels,
            render_size=render_size,
            device=device,
        )
        env = TransformedEnv(base, DoubleToFloat())
        if max_episode_steps is None:
            max_episode_steps = 100  # TD-MPC2's Meta-World episode
    elif task in UNAVAILABLE_CUSTOM_TASKS:
        raise NotImplementedError(UNAVAILABLE_CUSTOM_TASKS[task])
    else:
        raise UnknownTaskError(_unknown_task_message(task))
    if task_set is not None:
        env.append_transform(MultiTaskPadding(task_set, task))
    env.append_transform(StepCounter(max_steps=max_episode_steps))
    env.append_transform(InitTracker())
    env.append_transform(RewardSum())
    if seed is not None:
        env.set_seed(seed)
    env.action_repeat = repeat
    env.task = task
    env.task_set = task_set
    return env
