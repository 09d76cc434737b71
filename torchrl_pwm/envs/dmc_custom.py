"""TD-MPC2's custom DMC tasks of ``mt30``, re-derived from their definitions.

TD-MPC2 adds 11 tasks to dm_control (``tdmpc2/envs/tasks/*.py`` and ``*.xml`` of
nicklashansen/tdmpc2, read at commit ``e9f5932``). Nine of them are a new reward (and, for
``cup-spin``, a new initial-state distribution) on an unchanged dm_control model, and are
built here from dm_control's own model, physics and task classes with only those parts
replaced:

=========================  ===================================================================
task                       definition (``tol`` = ``dm_control.utils.rewards.tolerance``)
=========================  ===================================================================
walker-walk-backwards      walker-walk's reward with the velocity term mirrored:
                           ``stand * (5 * tol(v_x, (-inf, -1), margin 0.5, value_at_margin 0.5,
                           linear) + 1) / 6``; ``stand = (3 * standing + upright) / 4`` as in
                           dm_control's walker.
walker-run-backwards       the same with speed 8 (margin 4).
cheetah-run-backwards      ``tol(v_x, (-inf, -8), margin 8, value_at_margin 0, linear)``.
cheetah-run-front          running on the front foot: ``up * (5 * tol(v_x, (6, inf), margin 6,
                           value_at_margin 0, linear) + 1) / 6`` with ``up = (3 * tol(z_bfoot)
                           + 2 * tol(z_torso)) / 5``, ``tol(z) = tol(z, (1.2, inf), margin 0.6)``
                           (the back foot and the torso up high).
cheetah-run-back           the same on the back foot (``ffoot`` up).
cheetah-jump               mean of "stand on the front foot" and "stand on the back foot":
                           ``(5 * tol((z_torso + z_foot) / 2, (1.2, inf), margin 0.6)
                           + tol(v_x, (-0.5, 0.5), margin 0.5, value_at_margin 0, linear)) / 6``
                           with the lifted foot ``bfoot``, then ``ffoot``.
hopper-hop-backwards       ``tol(height, (0.6, 2)) * tol(v_x, (-inf, -1), margin 0.5,
                           value_at_margin 0.5, linear)``.
cup-spin                   ``(1 - in_cup) * (tol(d, (0.5, inf), margin 0.25, value_at_margin
                           0.5, linear) + 2 * tol(|v_ball|, (6, inf), margin 3,
                           value_at_margin 0.5, linear)) / 3`` (``d``: ball-to-target
                           distance; ``|v_ball|``: norm of the ball's x/z velocity); episodes
                           start with the ball in the cup, except with probability 0.1 (one
                           draw per reset, before the usual collision-free placement).
pendulum-spin              ``tol(|ω|, (9, inf), margin 4.5, value_at_margin 0.5, linear)``
                           on pendulum-swingup's task (same initial states and observation).
=========================  ===================================================================

Models: TD-MPC2's ``hopper.xml``, ``pendulum.xml`` and ``ball_in_cup.xml`` are dm_control's
byte for byte (whitespace aside); its ``walker.xml`` and ``cheetah.xml`` differ from
dm_control's only in the floor plane's ``size`` (500 and 200 instead of 250 and 100: a floor
drawn behind the start for the backwards tasks). MuJoCo planes are infinite for collisions,
so that changes only rendering; the same change is made here. Time limits and control steps
are those of the dm_control domain (1000 control steps per episode; 500 agent steps with
TD-MPC2's action repeat of 2). Observations are the dm_control domain's.

Not available: ``reacher-three-easy`` and ``reacher-three-hard`` run on a new three-link arm
(``reacher_three_links.xml``: its link lengths, masses, joint ranges and actuator gains
exist only in that file, not in any documentation), so they cannot be re-derived; asking
for them raises :class:`NotImplementedError` naming them (:data:`UNAVAILABLE_CUSTOM_TASKS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["CUSTOM_TASKS", "UNAVAILABLE_CUSTOM_TASKS", "load_custom_task"]

_INF = float("inf")


def _tol(x, bounds, margin=0.0, value_at_margin=0.1, sigmoid="gaussian"):
    from dm_control.utils import rewards

    return rewards.tolerance(
        x, bounds=bounds, margin=margin, sigmoid=sigmoid, value_at_margin=value_at_margin
    )


def _linear(x, bounds, margin, value_at_margin):
    return _tol(x, bounds, margin, value_at_margin, "linear")


def _replace_once(xml: str | bytes, old: str, new: str, what: str) -> str | bytes:
    if isinstance(xml, bytes):
        old_b, new_b = old.encode(), new.encode()
        if xml.count(old_b) != 1:
            raise RuntimeError(f"dm_control's {what} model changed: cannot find {old!r} once.")
        return xml.replace(old_b, new_b)
    if xml.count(old) != 1:
        raise RuntimeError(f"dm_control's {what} model changed: cannot find {old!r} once.")
    return xml.replace(old, new)


# -- walker ----------------------------------------------------------------------------------


def _walker_backwards(move_speed: float):
    def build(random, environment_kwargs):
        from dm_control.rl import control
        from dm_control.suite import walker

        class BackwardsWalker(walker.PlanarWalker):
            def get_reward(self, physics):
                standing = _tol(
                    physics.torso_height(),
                    (walker._STAND_HEIGHT, _INF),
                    margin=walker._STAND_HEIGHT / 2,
                )
                upright = (1 + physics.torso_upright()) / 2
                stand = (3 * standing + upright) / 4
                move = _linear(
                    physics.horizontal_velocity(),
                    (-_INF, -self._move_speed),
                    self._move_speed / 2,
                    0.5,
                )
                return stand * (5 * move + 1) / 6

        xml, assets = walker.get_model_and_assets()
        xml = _replace_once(xml, 'size="250 .8 .2"', 'size="500 .8 .2"', "walker")
        physics = walker.Physics.from_xml_string(xml, assets)
        return control.Environment(
            physics,
            BackwardsWalker(move_speed=move_speed, random=random),
            time_limit=walker._DEFAULT_TIME_LIMIT,
            control_timestep=walker._CONTROL_TIMESTEP,
            **environment_kwargs,
        )

    return build


# -- cheetah ---------------------------------------------------------------------------------

_CHEETAH_UP = 1.2  # height (m) the raised foot / torso should reach


def _cheetah(reward: Callable[[Any], float]):
    def build(random, environment_kwargs):
        from dm_control.rl import control
        from dm_control.suite import cheetah

        class CustomCheetah(cheetah.Cheetah):
            def get_reward(self, physics):
                return reward(physics)

        xml, assets = cheetah.get_model_and_assets()
        xml = _replace_once(xml, 'size="100 .8 .5"', 'size="200 .8 .5"', "cheetah")
        physics = cheetah.Physics.from_xml_string(xml, assets)
        return control.Environment(
            physics,
            CustomCheetah(random=random),
            time_limit=cheetah._DEFAULT_TIME_LIMIT,
            **environment_kwargs,
        )

    return build


def _z(physics, body: str) -> float:
    return physics.named.data.xpos[body, "z"]


def _cheetah_run_backwards(physics) -> float:
    return _linear(physics.speed(), (-_INF, -8.0), 8.0, 0.0)


def _cheetah_run_on_one_foot(lifted: str) -> Callable[[Any], float]:
    def reward(physics) -> float:
        torso_up = _tol(_z(physics, "torso"), (_CHEETAH_UP, _INF), margin=_CHEETAH_UP / 2)
        foot_up = _tol(_z(physics, lifted), (_CHEETAH_UP, _INF), margin=_CHEETAH_UP / 2)
        up = (3 * foot_up + 2 * torso_up) / 5
        return up * (5 * _linear(physics.speed(), (6.0, _INF), 6.0, 0.0) + 1) / 6

    return reward


def _cheetah_stand_on_one_foot(physics, lifted: str) -> float:
    height = (_z(physics, "torso") + _z(physics, lifted)) / 2
    height_reward = _tol(height, (_CHEETAH_UP, _INF), margin=_CHEETAH_UP / 2)
    still = _linear(physics.speed(), (-0.5, 0.5), 0.5, 0.0)
    return (5 * height_reward + still) / 6


def _cheetah_jump(physics) -> float:
    return (
        _cheetah_stand_on_one_foot(physics, "bfoot") + _cheetah_stand_on_one_foot(physics, "ffoot")
    ) / 2


# -- hopper, pendulum, cup -------------------------------------------------------------------


def _hopper_hop_backwards(random, environment_kwargs):
    from dm_control.rl import control
    from dm_control.suite import hopper

    class BackwardsHopper(hopper.Hopper):
        def get_reward(self, physics):
            standing = _tol(physics.height(), (hopper._STAND_HEIGHT, 2))
            hopping = _linear(
                physics.speed(), (-_INF, -hopper._HOP_SPEED / 2), hopper._HOP_SPEED / 4, 0.5
            )
            return standing * hopping

    physics = hopper.Physics.from_xml_string(*hopper.get_model_and_assets())
    return control.Environment(
        physics,
        BackwardsHopper(hopping=True, random=random),
        time_limit=hopper._DEFAULT_TIME_LIMIT,
        control_timestep=hopper._CONTROL_TIMESTEP,
        **environment_kwargs,
    )


def _pendulum_spin(random, environment_kwargs):
    from dm_control.rl import control
    from dm_control.suite import pendulum

    class Spin(pendulum.SwingUp):
        def get_reward(self, physics):
            speed = np.linalg.norm(physics.angular_velocity())
            return _linear(speed, (9.0, _INF), 4.5, 0.5)

    physics = pendulum.Physics.from_xml_string(*pendulum.get_model_and_assets())
    return control.Environment(
        physics, Spin(random=random), time_limit=pendulum._DEFAULT_TIME_LIMIT, **environment_kwargs
    )


def _cup_spin(random, environment_kwargs):
    from dm_control.rl import control
    from dm_control.suite import ball_in_cup, base

    class SpinCup(ball_in_cup.BallInCup):
        def initialize_episode(self, physics):
            start_outside = self.random.uniform() < 0.1
            while True:
                physics.named.data.qpos["ball_x"] = self.random.uniform(-0.2, 0.2)
                physics.named.data.qpos["ball_z"] = self.random.uniform(0.2, 0.5)
                physics.after_reset()
                if physics.data.ncon == 0 and (start_outside or physics.in_target()):
                    break
            base.Task.initialize_episode(self, physics)

        def get_reward(self, physics):
            distance = np.linalg.norm(physics.ball_to_target())
            qvel = physics.named.data.qvel
            speed = np.linalg.norm([abs(qvel["ball_x"]), abs(qvel["ball_z"])])
            far = _linear(distance, (0.5, _INF), 0.25, 0.5)
            fast = _linear(speed, (6.0, _INF), 3.0, 0.5)
            return (1 - physics.in_target()) * (far + 2 * fast) / 3

    physics = ball_in_cup.Physics.from_xml_string(*ball_in_cup.get_model_and_assets())
    return control.Environment(
        physics,
        SpinCup(random=random),
        time_limit=ball_in_cup._DEFAULT_TIME_LIMIT,
        control_timestep=ball_in_cup._CONTROL_TIMESTEP,
        **environment_kwargs,
    )


#: The custom tasks built here, by TD-MPC2 name: ``build(random, environment_kwargs)``
#: returns a dm_control ``control.Environment``.
CUSTOM_TASKS: dict[str, Callable[..., Any]] = {
    "walker-walk-backwards": _walker_backwards(1.0),
    "walker-run-backwards": _walker_backwards(8.0),
    "cheetah-run-backwards": _cheetah(_cheetah_run_backwards),
    "cheetah-run-front": _cheetah(_cheetah_run_on_one_foot("bfoot")),
    "cheetah-run-back": _cheetah(_cheetah_run_on_one_foot("ffoot")),
    "cheetah-jump": _cheetah(_cheetah_jump),
    "hopper-hop-backwards": _hopper_hop_backwards,
    "cup-spin": _cup_spin,
    "pendulum-spin": _pendulum_spin,
}

_THREE_LINK = (
    "{task!r} is one of TD-MPC2's custom mt30 tasks that torchrl_pwm cannot build: it runs on "
    "a three-link reacher model (TD-MPC2's reacher_three_links.xml) whose link lengths, "
    "masses, joint ranges and actuator gains are defined only in that file, not in any "
    "documentation, so it cannot be re-derived. The custom tasks that can be built are: "
    "{available}. (The task keeps its id in the task set, so data and checkpoints of mt30 "
    "still load; only evaluation in the real env is missing.)"
)

#: The custom ``mt30`` tasks that cannot be built, with the reason.
UNAVAILABLE_CUSTOM_TASKS: dict[str, str] = {
    name: _THREE_LINK.format(task=name, available=", ".join(CUSTOM_TASKS))
    for name in ("reacher-three-easy", "reacher-three-hard")
}


def load_custom_task(task: str, *, seed: int | None = None, environment_kwargs=None):
    """The dm_control environment of one of TD-MPC2's custom tasks (see the module docstring).

    Args:
        task: a key of :data:`CUSTOM_TASKS`; those of :data:`UNAVAILABLE_CUSTOM_TASKS` raise
            :class:`NotImplementedError` with the reason.

    Keyword Args:
        seed: seed of the task's ``RandomState`` (``None``: unseeded).
        environment_kwargs: passed to ``dm_control.rl.control.Environment``.

    Examples:
        >>> env = load_custom_task("pendulum-spin", seed=0)
        >>> list(env.observation_spec()), env.action_spec().shape
        (['orientation', 'velocity'], (1,))
        >>> load_custom_task("reacher-three-easy")
        Traceback (most recent call last):
        ...
        NotImplementedError: 'reacher-three-easy' is one of TD-MPC2's custom mt30 tasks ...
    """
    if task in UNAVAILABLE_CUSTOM_TASKS:
        raise NotImplementedError(UNAVAILABLE_CUSTOM_TASKS[task])
    if task not in CUSTOM_TASKS:
        raise KeyError(f"{task!r} is not one of the custom tasks {list(CUSTOM_TASKS)}.")
    return CUSTOM_TASKS[task](seed, dict(environment_kwargs or {}))
