"""Classify a steps-to-target vs batch-size curve into the three regimes of Shallue et al. (2018).

Shallue et al., "Measuring the Effects of Data Parallelism on Neural Network Training" (arXiv 1811.03600),
Sec. 4.1 / Fig. 1: with the learning rate tuned per batch size, the steps S(B) to reach a target fall in

* **perfect scaling**: doubling B halves S, i.e. the examples processed to reach the target,
  E(B) = B S(B), stay at their smallest-batch value;
* **diminishing returns**: S still falls, but E grows;
* **maximal data parallelism**: S stops falling (doubling B buys no, or almost no, fewer steps).

This module turns those words into exact rules (see :func:`classify_regimes`) and gives the usual
learning-rate scaling rules as predicted optimal-LR curves (:func:`scaling_rule_lr`). numpy only.


Modules: ``curve`` (one curve, point by point; scaling rules) and ``analysis`` (seeded curves,
fitted); every name is re-exported here.
"""

from __future__ import annotations

from batchscale.theory.regimes.analysis import (  # noqa: F401
    CRITICAL_DEFINITIONS,
    DEFAULT_BOOTSTRAP,
    DEFAULT_LEVEL,
    DEFAULT_PERFECT_TOLERANCE,
    EXTRAPOLATION,
    MAX_USEFUL_DEFINITION,
    NO_ESTIMATE,
    UNDECIDED,
    CurveAnalysis,
    Estimate,
    _batch_estimate,
    _medians,
    _quantiles,
    _ratio_estimate,
    _seed_matrix,
    _zhang_estimate,
    analyze_steps_curve,
    batch_at_speedup,
    fitted_speedup,
    label_speedup,
    model_regimes,
    padded_seed_matrix,
    seed_bootstrap_curves,
    speedup_thresholds,
)
from batchscale.theory.regimes.curve import (  # noqa: F401
    DEFAULT_CRITICAL_FRACTION,
    DEFAULT_FLAT_FRACTION,
    REFERENCES,
    REGIMES,
    SCALING_RULES,
    UNREACHABLE,
    RegimeReport,
    _checked_curve,
    _label,
    classify_regimes,
    critical_batch_from_curve,
    examples_to_target,
    max_useful_batch_from_curve,
    scaling_rule_lr,
)
