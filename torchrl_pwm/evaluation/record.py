"""Evaluation videos: roll out a policy in a pixel-rendering env and write an animated GIF.

GIFs need nothing beyond Pillow (already pulled in by matplotlib), play in any browser and in
GitHub's markdown, and stay small at the default half resolution.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

__all__ = ["record_episode", "save_gif"]


@torch.no_grad()
def record_episode(
    env: EnvBase,
    policy,
    max_steps: int = 500,
    *,
    pixels_key: str = "pixels",
) -> tuple[torch.Tensor, float]:
    """Roll out one deterministic episode and return its frames and its return.

    Args:
        env: an environment that writes ``pixels_key`` (e.g.
            ``make_env(task, from_pixels=True)``) and carries ``RewardSum``.
        policy: the policy (``None``: random actions).
        max_steps: agent steps at most.

    Keyword Args:
        pixels_key: where the env writes its ``[H, W, 3]`` ``uint8`` frames.

    Returns:
        ``(frames, episode_return)``, frames ``[T + 1, H, W, 3]`` ``uint8`` (the reset frame
        first).

    Examples:
        >>> from torchrl_pwm.envs import make_env
        >>> env = make_env("cartpole-swingup", from_pixels=True, render_size=(96, 128),
        ...                max_episode_steps=3)
        >>> frames, ret = record_episode(env, None)
        >>> frames.shape, frames.dtype
        (torch.Size([4, 96, 128, 3]), torch.uint8)
    """
    if pixels_key not in env.observation_spec.keys():
        raise ValueError(
            f"record_episode needs an env that renders {pixels_key!r}; build it with "
            "make_env(task, from_pixels=True)."
        )
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        td = env.rollout(max_steps, policy, break_when_any_done=True, auto_cast_to_device=True)
    frames = torch.cat([td[pixels_key][:1], td["next", pixels_key]]).cpu()
    return frames, td["next", "episode_reward"][-1].sum().item()


def save_gif(frames: torch.Tensor, path: str | Path, *, fps: int = 25, downscale: int = 1) -> Path:
    """Write ``[T, H, W, 3]`` ``uint8`` frames as a looping GIF, atomically.

    Args:
        frames: the frames (e.g. from :func:`record_episode`).
        path: the ``.gif`` file to write (its folder is created).

    Keyword Args:
        fps: frames per second of the animation.
        downscale: keep every ``downscale``-th pixel in each direction (2: a 240x320 DMC
            frame becomes 120x160, about 9 kB per GIF frame).

    Examples:
        >>> import tempfile, torch
        >>> frames = torch.randint(0, 255, (5, 8, 8, 3), dtype=torch.uint8)
        >>> save_gif(frames, tempfile.mkdtemp() + "/ep.gif").suffix
        '.gif'
    """
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(
            f"expected uint8 frames [T, H, W, 3], got {tuple(frames.shape)} {frames.dtype}"
        )
    if frames.shape[0] == 0:
        raise ValueError("no frames to write")
    array = frames[:, ::downscale, ::downscale].contiguous().numpy()
    # One fast octree palette per frame: Pillow's default median cut is ~4x slower.
    images = [Image.fromarray(f).quantize(method=Image.Quantize.FASTOCTREE) for f in array]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    images[0].save(
        tmp,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
    )
    os.replace(tmp, path)
    return path
