"""Statistics of the SGD update on a real network at a fixed parameter point.

- :func:`update_moments`: mean and tr(Cov) of the update over many minibatches per batch size m, in the
  mean-loss form (w <- w - eta g_B) and the sum-loss form (w <- w - eta_base m g_B), sampled with or
  without replacement, beside the exact prediction from the measured per-example statistics
  (Masters & Luschi 2018, sec. 2): E[dw] = -eta_eff G and tr Cov[dw] = eta_eff^2 c(m) tr(Sigma), with
  eta_eff = eta (mean form) or eta_base m (sum form), c(m) = 1/m (with replacement) or
  (M-m)/(m(M-1)) (without).
- :func:`gradient_cosine`: cos(g_B, G) vs m beside its expectation in a Gaussian model with the exact
  per-example covariance (:func:`gaussian_cosine`); :func:`predicted_cosine` is the older ratio form.
- :func:`accumulation`: k micro-batches vs one batch, and the autograd-saved memory per micro-batch.

Predictions here are plain arithmetic on measured statistics (the theory layer is never imported).


Modules: ``checks`` (Check, predictions), ``moments``, ``cosine``, ``accumulate``; every name is
re-exported here.
"""

from __future__ import annotations

from batchscale.empirical.update_stats.accumulate import (  # noqa: F401
    AccumulationResult,
    accumulated_update,
    accumulation,
    allocation_peak_bytes,
    batch_dependent_layers,
    check_micro_batches,
    micro_batch_peak_bytes,
    native_stderr_silenced,
    saved_tensor_meter,
)
from batchscale.empirical.update_stats.checks import (  # noqa: F401
    FLOAT_RTOL,
    FORMS,
    Z_TOLERANCE,
    Check,
    T,
    _check_common,
    draw_indices,
    effective_lr,
    predicted_cosine,
    predicted_update_mean,
    predicted_update_trace_cov,
)
from batchscale.empirical.update_stats.cosine import (  # noqa: F401
    GRAM_MAX_FLOATS,
    CosineCheck,
    GramStatistics,
    cosine_check,
    exact_cosine_m1,
    gaussian_cosine,
    gradient_cosine,
    gram_statistics,
    subset_cosine,
)
from batchscale.empirical.update_stats.moments import (  # noqa: F401
    N_DIRECTIONS,
    _draw_updates,
    _moment_checks,
    mean_all_directions_check,
    trace_draw_variance,
    update_moments,
)
