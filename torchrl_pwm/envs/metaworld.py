"""Meta-World's 50 MT50 tasks under TD-MPC2's ``mw-*`` names, with TD-MPC2's conventions.

:func:`~torchrl_pwm.envs.make_env` builds ``"mw-<task>"`` names through this module; it needs
the optional ``metaworld`` package, installed **without its dependencies**::

    pip install --no-deps metaworld==3.1.1

``metaworld`` 3.1.1 pins ``mujoco==3.3.0``, which cannot be installed beside the
``dm-control==1.0.50`` / ``mujoco==3.17.0`` this project pins for DMC; ``--no-deps`` keeps our
MuJoCo. Its other needs (``gymnasium>=1.1``, ``numpy``, ``scipy``, ``imageio``) are already
installed with this package. One line of Meta-World does not run on MuJoCo 3.17 as shipped:
its mocap weld reset writes 11 numbers per weld constraint and MuJoCo 3.17 stores 12 (the
12th is set by the compiler when a weld's ``relpose`` is left to it). This module replaces
that method with one that writes the same 11 numbers and marks the pose as given (12th = 0);
Checked on all 50 tasks (20 seeded episodes each, the same goals under both): Meta-World's
scripted experts (``metaworld.policies``) succeed within 500 steps in 98.4 % of episodes
under MuJoCo 3.17 with this patch and 98.9 % under the 3.3.0 that metaworld pins. The newer
MuJoCo's contact dynamics are not identical, though: at a fixed step the states differ on some
tasks (success at step 200, TD-MPC2's horizon, 72.6 % vs 68.2 % overall; door-open 95 vs 0 %,
stick-push 100 vs 0 %, shelf-place 10 vs 35 %). The 12th field's value does not change these
numbers. ``tests/envs/test_metaworld.py`` re-checks two tasks' experts.

TD-MPC2's conventions (``tdmpc2/envs/metaworld.py``), all kept here:

- the goal-observable env (``<task>-v3-goal-observable``): a 39-dim observation (hand, gripper,
  object poses, the previous frame's 18 entries and the goal), a 4-dim action in ``[-1, 1]``;
- a new goal and object placement at every reset (``_freeze_rand_vec = False``), drawn from
  the env's own seeded generator here (TD-MPC2 draws from NumPy's global one);
- after every reset one zero action is stepped, and the observation from *before* it is
  returned (TD-MPC2's quirk, kept so that first observations match its data);
- action repeat 2 (rewards summed) and 100 agent steps per episode, never terminated;
- ``success``: Meta-World's ``info["success"]`` of the last physics step, as a bool of shape
  ``[1]`` beside ``reward`` at every step (``False`` at reset). TD-MPC2 reports an episode's
  success as that of its **last** step; ``td["next", "success"][..., -1, :]`` of a rollout.

**v2 vs v3.** TD-MPC2's ``mt80`` data and checkpoints come from Meta-World **v2** envs
(``metaworld`` before 3.0, ``ALL_V2_ENVIRONMENTS_GOAL_OBSERVABLE``, on ``mujoco-py`` and Gym).
``metaworld`` 3.x ships only **v3** envs, so ``"mw-reach"`` builds ``reach-v3``: the same 50
tasks, names and 39 / 4-dim observation / action layout, moved to the ``mujoco`` bindings and
Gymnasium (metaworld 3.0.0's release notes), with fixes since (3.1.1: button-press's dense
reward). The simulator and some rewards therefore differ from v2: returns and success rates
are not strictly comparable with TD-MPC2's published v2 numbers, and a model trained on the
v2 data meets slightly different dynamics here.
"""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import torch

__all__ = [
    "METAWORLD_INSTALL",
    "MetaWorldTDMPC2Wrapper",
    "make_metaworld_env",
    "metaworld_available",
    "metaworld_env_name",
    "metaworld_tasks",
]

#: How to install the optional Meta-World dependency (see the module docstring for why
#: ``--no-deps``).
METAWORLD_INSTALL = "pip install --no-deps metaworld==3.1.1"

# Meta-World's own value for each mocap weld: anchor (3), relative pose (position 3,
# quaternion 4) and torque scale (1), the 11 fields of MuJoCo 3.3's eq_data.
_MOCAP_WELD = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)
_CAMERA = "corner2"  # TD-MPC2's render camera, moved to TD-MPC2's position
_CAMERA_POS = (0.75, 0.075, 0.7)


def metaworld_tasks() -> list[str]:
    """TD-MPC2's 50 ``mw-*`` task names, in ``mt80``'s order.

    Examples:
        >>> tasks = metaworld_tasks()
        >>> len(tasks), tasks[0], tasks[-1]
        (50, 'mw-assembly', 'mw-hand-insert')
    """
    from torchrl_pwm.envs.task_sets import task_set

    return [info.name for info in task_set("mt80") if info.suite == "metaworld"]


def metaworld_env_name(task: str) -> str:
    """Meta-World's v3 env name of a TD-MPC2 ``mw-*`` task name (TD-MPC2 used v2).

    Examples:
        >>> metaworld_env_name("mw-reach"), metaworld_env_name("mw-peg-insert-side")
        ('reach-v3', 'peg-insert-side-v3')
    """
    if not task.startswith("mw-"):
        raise ValueError(f"{task!r} is not a Meta-World task name (those start with 'mw-').")
    return f"{task[3:]}-v3"


def metaworld_available() -> bool:
    """Whether the optional ``metaworld`` package is installed (without importing it).

    Examples:
        >>> isinstance(metaworld_available(), bool)
        True
    """
    return importlib.util.find_spec("metaworld") is not None


def _reset_mocap_welds(self) -> None:
    """Meta-World's ``SawyerMocapBase.reset_mocap_welds`` for any MuJoCo: the same 11 numbers,
    and any field newer MuJoCo adds set to 0 (3.17's 12th: 1 when the compiler derived the
    relative pose, 0 when the model gives it, as Meta-World now does; 0 or 1 measured the
    same). Identical to the original on MuJoCo 3.3."""
    import mujoco

    model = self.model
    if model.nmocap > 0 and model.eq_data is not None:
        for i in range(model.neq):
            if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                model.eq_data[i, : len(_MOCAP_WELD)] = _MOCAP_WELD
                model.eq_data[i, len(_MOCAP_WELD) :] = 0.0


def _goal_observable_envs() -> dict:
    if not metaworld_available():
        raise ImportError(
            "Meta-World tasks need the optional metaworld package: "
            f"{METAWORLD_INSTALL} (--no-deps: it pins mujoco==3.3.0, older than the "
            "mujoco==3.17.0 that dm-control 1.0.50 needs; see torchrl_pwm.envs.metaworld)."
        )
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
    from metaworld.sawyer_xyz_env import SawyerMocapBase

    SawyerMocapBase.reset_mocap_welds = _reset_mocap_welds
    return ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE


class MetaWorldTDMPC2Wrapper(gym.Wrapper):
    """TD-MPC2's ``MetaWorldWrapper`` in Gymnasium's API, over a goal-observable v3 env.

    A new goal every reset from the env's own seeded generator, one zero action stepped after
    each reset (the pre-step observation is returned), float32 observations, never terminated
    or truncated (the time limit is :class:`~torchrl.envs.StepCounter`'s), ``info["success"]``
    as a ``[1]``-shaped bool array. The action repeat is TorchRL's ``frame_skip``.
    ``reset(seed=s)`` reseeds the goal and object draws (Meta-World's own ``reset`` ignores its
    seed).

    Args:
        env: a Meta-World ``<task>-v3-goal-observable`` env.

    Examples:
        >>> from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as envs
        >>> _ = _goal_observable_envs()  # Meta-World on this MuJoCo
        >>> env = MetaWorldTDMPC2Wrapper(envs["reach-v3-goal-observable"](seed=0))
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype, env.step(np.zeros(4))[4]["success"]
        ((39,), dtype('float32'), array([False]))
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        base = env.unwrapped
        base._freeze_rand_vec = False  # TD-MPC2: a new goal at every reset
        base.seeded_rand_vec = True  # ...drawn from the env's seeded generator
        # Meta-World raises once max_path_length steps are taken since reset; TD-MPC2's limit
        # (100 x 2 repeats + 1 zero step) is under its 500, but max_episode_steps may not be.
        base.max_path_length = np.iinfo(np.int64).max
        self.observation_space = gym.spaces.Box(
            env.observation_space.low.astype(np.float32),
            env.observation_space.high.astype(np.float32),
            dtype=np.float32,
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.env.unwrapped.seed(seed)
        obs, info = self.env.reset()
        self.env.step(np.zeros(self.env.action_space.shape, dtype=np.float32))
        return obs.astype(np.float32), info

    def step(self, action):
        obs, reward, _, _, info = self.env.step(np.asarray(action, dtype=np.float32))
        info = dict(info, success=np.array([bool(info["success"])]))
        return obs.astype(np.float32), float(reward), False, False, info


def make_metaworld_env(
    task: str,
    *,
    seed: int | None = 0,
    action_repeat: int = 2,
    from_pixels: bool = False,
    render_size: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
):
    """The TorchRL :class:`~torchrl.envs.GymWrapper` of a Meta-World task with TD-MPC2's
    conventions (module docstring), before :func:`~torchrl_pwm.envs.make_env`'s transforms.

    Use :func:`~torchrl_pwm.envs.make_env` (``make_env("mw-reach")``), which adds the float
    casts, the 100-step limit, :class:`~torchrl.envs.InitTracker` and
    :class:`~torchrl.envs.RewardSum` like every other task.

    Args:
        task: a name from :func:`metaworld_tasks`.

    Keyword Args:
        seed: seed of the goal and object placements (``None``: unseeded).
        action_repeat: physics steps per agent step, rewards summed (TD-MPC2: 2).
        from_pixels: also render ``pixels`` from TD-MPC2's camera (``corner2``, moved).
        render_size: ``(height, width)`` of ``pixels`` (default 384x384, TD-MPC2's).
        device: device of the env's outputs.

    Examples:
        >>> env = make_metaworld_env("mw-reach", seed=0)
        >>> td = env.rollout(3)
        >>> td["observation"].shape, td["action"].shape, td["next", "success"].shape
        (torch.Size([3, 39]), torch.Size([3, 4]), torch.Size([3, 1]))
    """
    from torchrl.data import Categorical, Composite
    from torchrl.envs import GymWrapper, default_info_dict_reader

    if task not in metaworld_tasks():
        raise ValueError(f"{task!r} is not one of TD-MPC2's 50 Meta-World tasks.")
    envs = _goal_observable_envs()
    height, width = render_size or (384, 384)
    render = {"render_mode": "rgb_array"} if from_pixels else {}
    raw = envs[f"{metaworld_env_name(task)}-goal-observable"](seed=seed, **render)
    if from_pixels:
        import mujoco

        raw.model.cam_pos[mujoco.mj_name2id(raw.model, mujoco.mjtObj.mjOBJ_CAMERA, _CAMERA)] = (
            _CAMERA_POS
        )
        renderer = raw.mujoco_renderer
        renderer.camera_id = mujoco.mj_name2id(raw.model, mujoco.mjtObj.mjOBJ_CAMERA, _CAMERA)
        renderer.camera_name = None
        renderer.width, renderer.height = width, height
        raw.width, raw.height = width, height
    env = GymWrapper(
        MetaWorldTDMPC2Wrapper(raw),
        frame_skip=action_repeat,
        from_pixels=from_pixels,
        pixels_only=False,
        device=device,
    )
    success = Composite(success=Categorical(2, shape=(1,), dtype=torch.bool), shape=())
    env.set_info_dict_reader(default_info_dict_reader(["success"], spec=success))
    if seed is not None:
        env.set_seed(seed)
    return env
