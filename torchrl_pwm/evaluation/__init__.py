"""Evaluation and analysis of a trained (or training) agent, outside the training loop.

- :mod:`~torchrl_pwm.evaluation.calibration`: how far the world model's and critic's
  predictions are from what the policy earns in the real environment;
- :mod:`~torchrl_pwm.evaluation.diagnostics`: statistics of the actor's gradient estimators
  (first- against zeroth-order, ESNR);
- :mod:`~torchrl_pwm.evaluation.record`: GIFs of evaluation episodes;
- :mod:`~torchrl_pwm.evaluation.plotting`: learning curves from ``eval.csv`` files, with
  published reference returns.

It may import ``modules``, ``envs`` and ``objectives``; ``trainers`` imports it.
"""

from torchrl_pwm.evaluation.calibration import (
    CalibrationMetrics,
    CalibrationReport,
    world_model_calibration,
)
from torchrl_pwm.evaluation.diagnostics import (
    GradientStatistics,
    actor_gradient_statistics,
    actor_loss_objective,
    gradient_statistics,
)
from torchrl_pwm.evaluation.plotting import (
    PUBLISHED_DMC_RETURNS,
    plot_learning_curves,
    published_references,
    read_eval_csv,
)
from torchrl_pwm.evaluation.record import record_episode, save_gif

__all__ = [
    "PUBLISHED_DMC_RETURNS",
    "CalibrationMetrics",
    "CalibrationReport",
    "GradientStatistics",
    "actor_gradient_statistics",
    "actor_loss_objective",
    "gradient_statistics",
    "plot_learning_curves",
    "published_references",
    "read_eval_csv",
    "record_episode",
    "save_gif",
    "world_model_calibration",
]
