r"""Noisy quadratic model (NQM): closed-form expected loss, steps to target and tuned learning rates.

Zhang, Li, Nado, Martens, Sachdeva, Dahl, Shallue, Grosse, "Which Algorithmic Choices Matter at Which Batch
Sizes? Insights From a Noisy Quadratic Model", NeurIPS 2019, arXiv 1907.04164 (cited as "Zhang et al.").

Model (Zhang et al. Sec. 3.1): loss :math:`L(x) = \tfrac12 \sum_i h_i x_i^2`; the minibatch gradient of
coordinate i is :math:`h_i x_i + \xi_i` with :math:`E\xi_i = 0`, :math:`\operatorname{Var}\xi_i = c_i / B`,
independent across steps. Every optimizer here is linear in (x, xi), so the expected loss depends only on
second moments, and each coordinate follows a 1- or 2-dimensional linear system
:math:`y_{t+1} = T y_t + b\,\eta\xi_t` whose second moments have the closed form

.. math:: E[(e^\top y_t)^2] = \ell_t^\top P_0 \ell_t + S_{ee} - \ell_t^\top S \ell_t,
          \qquad \ell_t = (T^t)^\top e,

with S the stationary covariance (discrete Lyapunov equation) and P_0 the initial second moments. The first
term ("signal") is the deterministic decay of x_0, the rest ("noise") the accumulated gradient noise; the
noise term never decreases in t. No loop over steps is needed: T^t is written with Chebyshev-type sequences.

Divergent settings (spectral radius of T >= 1 for some coordinate) are flagged, never evaluated.

Definition of "steps to target": the first integer t with E[L(x_t)] <= target, exactly (no assumption of
monotonicity: momentum makes the loss oscillate). The search steps forward with doubling strides and accepts
a stride only when a rigorous lower bound of the loss over it is above the target (the noise part never
decreases; monotone signals are smallest at the end; oscillating heavy-ball signals are bounded lobe by
lobe), halving the stride otherwise; it starts at the information bound :func:`steps_lower_bound`.

Modules: :mod:`.closed_forms` (per-coordinate second moments), :mod:`.power_sequences` (powers of the
per-coordinate maps), :mod:`.fast_trig` (bounded-error fast sines), :mod:`.model` (all configurations x
bins), :mod:`.search` (exact steps to target), :mod:`.bound` (information bound), :mod:`.tuning` (tuned
learning rate and momentum per batch size). The public names are re-exported here.
"""

from batchscale.theory.nqm.bound import information_bound_examples, information_bound_loss, steps_lower_bound
from batchscale.theory.nqm.closed_forms import (
    ema_second_moment,
    ema_stationary_moments,
    momentum_second_moment,
    momentum_stationary_moments,
    sgd_second_moment,
    sgd_stationary_variance,
)
from batchscale.theory.nqm.fast_trig import FAST_SINE_LIMIT, SINE_ERROR, fast_sin_cos
from batchscale.theory.nqm.model import Configs, build_model, expected_loss, largest_stable_learning_rate
from batchscale.theory.nqm.power_sequences import (
    PowerSequence,
    divided_power,
    divided_power_sequence,
    ema_power_sequence,
    heavy_ball_power_sequence,
    heavy_ball_sequence,
    power_sequence,
    power_sequence_pair,
)
from batchscale.theory.nqm.search import (
    DEFAULT_MAX_STEPS,
    DIVERGED,
    OK,
    UNREACHABLE,
    StepsResult,
    steps_to_target,
)
from batchscale.theory.nqm.tuning import (
    SEARCHES,
    TunedCurve,
    decade_grid,
    memory_estimate,
    planned_runs,
    searched_settings,
    tune_steps,
)

__all__ = [
    "DEFAULT_MAX_STEPS",
    "DIVERGED",
    "FAST_SINE_LIMIT",
    "OK",
    "SEARCHES",
    "SINE_ERROR",
    "UNREACHABLE",
    "Configs",
    "PowerSequence",
    "StepsResult",
    "TunedCurve",
    "build_model",
    "decade_grid",
    "divided_power",
    "divided_power_sequence",
    "ema_power_sequence",
    "ema_second_moment",
    "ema_stationary_moments",
    "expected_loss",
    "fast_sin_cos",
    "heavy_ball_power_sequence",
    "heavy_ball_sequence",
    "information_bound_examples",
    "information_bound_loss",
    "largest_stable_learning_rate",
    "memory_estimate",
    "planned_runs",
    "momentum_second_moment",
    "momentum_stationary_moments",
    "power_sequence",
    "power_sequence_pair",
    "searched_settings",
    "sgd_second_moment",
    "sgd_stationary_variance",
    "steps_lower_bound",
    "steps_to_target",
    "tune_steps",
]
