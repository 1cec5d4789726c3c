"""Per-example gradients and their statistics: G, tr(Sigma), |G|^2, B_simple, and the two-batch estimator.

Conventions (used by every function here and in :mod:`~batchscale.empirical.curvature` and
:mod:`~batchscale.empirical.update_stats`):

- ``loss_fn(output, target)`` returns the per-example loss l_i, shape (N,) (``Workload.per_example_loss``).
- The per-example gradient is g_i = dl_i/dw: the gradient of that example's own loss, neither divided by
  the batch size nor multiplied by it.
- The full gradient is G = (1/M) sum_i g_i, the gradient of the *mean* loss over the M examples.
- Sigma = (1/M) sum_i (g_i - G)(g_i - G)^T is the population covariance over the M examples (divisor M),
  so tr(Sigma) = mean_i |g_i|^2 - |G|^2.
- A mean-form minibatch gradient is g_B = (1/m) sum_{i in B} g_i; the sum form's is m g_B.

Models must treat examples independently (no BatchNorm in training mode): per-example gradients are
not defined otherwise.


Modules: ``per_example``, ``statistics``, ``two_batch``, ``sampling``; every name is re-exported here.
"""

from __future__ import annotations

from batchscale.empirical.gradients.per_example import (  # noqa: F401
    DEFAULT_CHUNK,
    FAST_LAYERS,
    N_GROUPS,
    SAMPLINGS,
    LossFn,
    Method,
    Sampling,
    _as_positions,
    _blocks,
    _check_fast_supported,
    _hooked_backward,
    _single_example_loss,
    _SqNormRecorder,
    _weight_sq_norms,
    batch_gradient,
    block_counts,
    check_examples_independent,
    flat_grad,
    flatten_per_example,
    iter_per_example_gradients,
    num_parameters,
    per_example_gradients,
    per_example_sq_norms,
    per_example_sq_norms_and_block_sums,
    trainable_parameters,
    unflatten,
)
from batchscale.empirical.gradients.sampling import (  # noqa: F401
    check_batch_size,
    draw_batch,
)
from batchscale.empirical.gradients.statistics import (  # noqa: F401
    GradientStatistics,
    _block_totals,
    _bootstrap_b_simple,
    _GroupSums,
    _statistics_from_sums,
    b_simple,
    gradient_statistics,
    population_moments,
    sample_indices,
)
from batchscale.empirical.gradients.two_batch import (  # noqa: F401
    TwoBatchEMA,
    TwoBatchEstimate,
    minibatch_variance_factor,
    ratio_interval,
    two_batch_estimates,
    two_batch_noise_scale,
    two_batch_step_estimates,
)
