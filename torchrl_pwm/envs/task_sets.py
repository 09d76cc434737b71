"""TD-MPC2's multi-task sets ``mt30`` and ``mt80`` as data.

Public names: :class:`TaskInfo` (``name``, ``obs_dim``, ``action_dim``, ``episode_length``),
:data:`TASK_SETS` (``{"mt30": (TaskInfo, ...), "mt80": (...)}``), :func:`task_set`,
:func:`task_id`, :func:`max_obs_dim`, :func:`max_action_dim`, :data:`DATA_EPISODE_ROWS`.
This module imports nothing but the standard library.

The position of a task in its set is its **task id**: the ``task`` entry of TD-MPC2's dataset
chunks and the row of a multi-task checkpoint's task embedding and action masks index these
tuples. The order is TD-MPC2's ``TASK_SET`` (``tdmpc2/common/__init__.py`` of
nicklashansen/tdmpc2, read at commit ``b1722ce``): the 19 standard DMC tasks, the 11 custom
DMC tasks, then (``mt80`` only) the 50 Meta-World MT50 tasks.

Where each number comes from:

- ``obs_dim`` / ``action_dim`` of the DMC tasks: the table of ``shared/reference/tdmpc2.md``
  (§6, dm_control's specs and TD-MPC2's custom task XMLs; the observation is the
  concatenation of the task's observation entries). The 19 standard tasks and the 9 custom
  tasks built by :mod:`torchrl_pwm.envs.dmc_custom` are re-checked against the real envs in
  ``tests/envs/test_task_sets.py``; ``reacher-three-easy`` / ``-hard`` (8 / 3) rest on the
  reference alone (their model is not available here).
- Meta-World: 39-dim observation, 4-dim action (same reference, §6: "obs 39, act 4"),
  re-checked for all 50 tasks against ``metaworld`` 3.1.1's v3 envs (TD-MPC2 used v2; see
  :mod:`torchrl_pwm.envs.metaworld`) in ``tests/envs/test_metaworld.py``. ``mw-<task>`` is
  Meta-World's ``<task>-v3`` (TD-MPC2: ``<task>-v2``), built by
  :func:`~torchrl_pwm.envs.make_env`.
- ``episode_length`` is in **agent** steps, after TD-MPC2's action repeat of 2: 500 for DMC
  (1000 physics control steps, ``Timeout(500)``), 100 for Meta-World (reference §6,
  "Episode lengths").
- A dataset episode has one more row than that (the reset observation): 501 rows in ``mt30``;
  in ``mt80`` every stored "episode" has 101 rows (a DMC episode is split in 5 chunks of
  100 transitions). :data:`DATA_EPISODE_ROWS` holds these.
- Padded widths (:func:`max_obs_dim`, :func:`max_action_dim`): 24 / 6 for ``mt30``,
  39 / 6 for ``mt80``, the maxima over the set (reference §1 and §6).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DATA_EPISODE_ROWS",
    "TASK_SETS",
    "TaskInfo",
    "max_action_dim",
    "max_obs_dim",
    "task_id",
    "task_set",
]


@dataclass(frozen=True)
class TaskInfo:
    """One task of a TD-MPC2 task set.

    Attributes:
        name: TD-MPC2's task name (``"walker-walk"``, ``"mw-reach"``).
        obs_dim: the task's own (unpadded) observation size.
        action_dim: the task's own (unpadded) action size.
        episode_length: agent steps per episode, after TD-MPC2's action repeat of 2.

    Examples:
        >>> info = task_set("mt30")[1]
        >>> info
        TaskInfo(name='walker-walk', obs_dim=24, action_dim=6, episode_length=500)
        >>> info.suite, task_set("mt80")[30].suite
        ('dmc', 'metaworld')
    """

    name: str
    obs_dim: int
    action_dim: int
    episode_length: int

    @property
    def suite(self) -> str:
        """``"metaworld"`` for ``mw-*`` tasks, ``"dmc"`` otherwise."""
        return "metaworld" if self.name.startswith("mw-") else "dmc"


def _dmc(name: str, obs_dim: int, action_dim: int) -> TaskInfo:
    return TaskInfo(name, obs_dim, action_dim, 500)


# The 19 standard DMC tasks, in TD-MPC2's order.
_MT30_STANDARD = (
    _dmc("walker-stand", 24, 6),
    _dmc("walker-walk", 24, 6),
    _dmc("walker-run", 24, 6),
    _dmc("cheetah-run", 17, 6),
    _dmc("reacher-easy", 6, 2),
    _dmc("reacher-hard", 6, 2),
    _dmc("acrobot-swingup", 6, 1),
    _dmc("pendulum-swingup", 3, 1),
    _dmc("cartpole-balance", 5, 1),
    _dmc("cartpole-balance-sparse", 5, 1),
    _dmc("cartpole-swingup", 5, 1),
    _dmc("cartpole-swingup-sparse", 5, 1),
    _dmc("cup-catch", 8, 2),
    _dmc("finger-spin", 9, 2),
    _dmc("finger-turn-easy", 12, 2),
    _dmc("finger-turn-hard", 12, 2),
    _dmc("fish-swim", 24, 5),
    _dmc("hopper-stand", 15, 4),
    _dmc("hopper-hop", 15, 4),
)

# TD-MPC2's 11 custom DMC tasks (``tdmpc2/envs/tasks``), in its order.
_MT30_CUSTOM = (
    _dmc("walker-walk-backwards", 24, 6),
    _dmc("walker-run-backwards", 24, 6),
    _dmc("cheetah-run-backwards", 17, 6),
    _dmc("cheetah-run-front", 17, 6),
    _dmc("cheetah-run-back", 17, 6),
    _dmc("cheetah-jump", 17, 6),
    _dmc("hopper-hop-backwards", 15, 4),
    _dmc("reacher-three-easy", 8, 3),
    _dmc("reacher-three-hard", 8, 3),
    _dmc("cup-spin", 8, 2),
    _dmc("pendulum-spin", 3, 1),
)

# Meta-World MT50 in TD-MPC2's order: observation 39, action 4, 100 agent steps.
_METAWORLD = tuple(
    TaskInfo(f"mw-{name}", 39, 4, 100)
    for name in (
        "assembly", "basketball", "button-press-topdown", "button-press-topdown-wall",
        "button-press", "button-press-wall", "coffee-button", "coffee-pull", "coffee-push",
        "dial-turn", "disassemble", "door-open", "door-close", "drawer-close", "drawer-open",
        "faucet-open", "faucet-close", "hammer", "handle-press-side", "handle-press",
        "handle-pull-side", "handle-pull", "lever-pull", "peg-insert-side", "peg-unplug-side",
        "pick-out-of-hole", "pick-place", "pick-place-wall", "plate-slide", "plate-slide-side",
        "plate-slide-back", "plate-slide-back-side", "push-back", "push", "push-wall", "reach",
        "reach-wall", "shelf-place", "soccer", "stick-push", "stick-pull", "sweep-into", "sweep",
        "window-open", "window-close", "bin-picking", "box-close", "door-lock", "door-unlock",
        "hand-insert",
    )
)  # fmt: skip

#: ``{"mt30": (TaskInfo, ...), "mt80": (...)}``; a task's index is its task id.
TASK_SETS: dict[str, tuple[TaskInfo, ...]] = {
    "mt30": _MT30_STANDARD + _MT30_CUSTOM,
    "mt80": _MT30_STANDARD + _MT30_CUSTOM + _METAWORLD,
}

#: Rows per stored episode in TD-MPC2's dataset chunks (reset observation included).
DATA_EPISODE_ROWS: dict[str, int] = {"mt30": 501, "mt80": 101}


def task_set(name: str) -> tuple[TaskInfo, ...]:
    """The tasks of ``"mt30"`` or ``"mt80"`` in TD-MPC2's order (index = task id).

    Examples:
        >>> tasks = task_set("mt80")
        >>> len(tasks), tasks[0].name, tasks[30].name, tasks[-1].name
        (80, 'walker-stand', 'mw-assembly', 'mw-hand-insert')
    """
    try:
        return TASK_SETS[name]
    except KeyError:
        raise ValueError(
            f"Unknown task set {name!r}; the task sets are {', '.join(map(repr, TASK_SETS))}."
        ) from None


def task_id(set_name: str, task: str) -> int:
    """The id of ``task`` in the set ``set_name`` (its index in :func:`task_set`).

    Examples:
        >>> task_id("mt30", "cheetah-run"), task_id("mt80", "mw-reach")
        (3, 65)
    """
    names = [t.name for t in task_set(set_name)]
    if task not in names:
        raise ValueError(f"Task {task!r} is not in the task set {set_name!r}: {', '.join(names)}.")
    return names.index(task)


def max_obs_dim(set_name: str) -> int:
    """The padded observation width of a set: 24 for ``mt30``, 39 for ``mt80``.

    Examples:
        >>> max_obs_dim("mt30"), max_obs_dim("mt80")
        (24, 39)
    """
    return max(t.obs_dim for t in task_set(set_name))


def max_action_dim(set_name: str) -> int:
    """The padded action width of a set: 6 for both ``mt30`` and ``mt80``.

    Examples:
        >>> max_action_dim("mt30"), max_action_dim("mt80")
        (6, 6)
    """
    return max(t.action_dim for t in task_set(set_name))
