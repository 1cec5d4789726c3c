"""Mean and tr(Cov) of the SGD update over many drawn minibatches, beside the exact prediction
(:func:`update_moments`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from batchscale.empirical.gradients import (
    SAMPLINGS,
    GradientStatistics,
    LossFn,
    batch_gradient,
    check_batch_size,
    check_examples_independent,
    draw_batch,
    minibatch_variance_factor,
)
from batchscale.empirical.update_stats.checks import (
    FLOAT_RTOL,
    FORMS,
    Z_TOLERANCE,
    Check,
    _check_common,
    draw_indices,
    effective_lr,
    predicted_update_mean,
    predicted_update_trace_cov,
)
from batchscale.empirical.update_stats.cosine import GramStatistics, gram_statistics
from batchscale.errors import require
from batchscale.progress import counter


def _draw_updates(
    model: nn.Module, loss_fn: LossFn, x, y, *, batch_size: int, lr: float, form: str, batches
) -> torch.Tensor:
    """The SGD update dw = -lr * grad of the minibatch loss (mean or sum), one row per batch: (D, P)."""
    return torch.stack([-lr * batch_gradient(model, loss_fn, x[i], y[i], reduction=form) for i in batches])


def trace_draw_variance(
    gram: GramStatistics, batch_size: int, sampling: str, *, samples: int = 1000, seed: int = 0
) -> float:
    r"""Variance over minibatches of :math:`|g_B - G|^2 = w^\top K w` (w: the batch's weights,
    multiplicity / m), the per-draw spread of the tr Cov measurement at unit learning rate: exact at
    m = 1 (the variance of :math:`K_{ii}`), else by Monte Carlo over ``samples`` index draws."""
    if batch_size == 1:
        return float(np.var(gram.diagonal))
    _, quad = gram.batch_terms(draw_indices(gram.population, batch_size, sampling, samples, seed))
    return float(np.var(quad, ddof=1))


# Random directions of the all-directions test of the update mean.
N_DIRECTIONS = 16


def mean_all_directions_check(
    dev: torch.Tensor, *, form: str, sampling: str, m: int, z: float, seed: int, by_construction: bool
) -> Check:
    r"""Hotelling's :math:`T^2` test that the update's mean deviation ``dev`` (D, P) (update minus its
    predicted mean :math:`-\eta_\mathrm{eff} G`) is zero along R = min(16, D - 2, P) seeded random unit
    directions (and so not only along G): :math:`T^2 = D\,\bar t^\top S^{-1}\bar t` with t the
    projections and S their sample covariance; :math:`\frac{D-R}{R(D-1)}T^2 \sim F(R, D-R)` under the
    prediction (normal projections). Fails when :math:`T^2` exceeds the critical value at the two-sided
    level of ``z`` normal standard errors (6.3e-5 at z = 4)."""
    from scipy import stats as scipy_stats

    draws, params = dev.shape
    r = max(1, min(N_DIRECTIONS, draws - 2, params))
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(params, r, generator=gen, dtype=torch.float64).to(dev.device)
    directions /= directions.norm(dim=0)
    t = (dev @ directions).cpu().numpy()  # (D, R)
    mean = t.mean(0)
    cov = np.cov(t, rowvar=False).reshape(r, r)
    scale = np.sqrt(np.maximum(np.diag(cov), 1e-300))
    corr = cov / np.outer(scale, scale)
    t2 = float(draws * (mean / scale) @ np.linalg.pinv(corr) @ (mean / scale))
    level = 2 * scipy_stats.norm.sf(z)
    critical = float(scipy_stats.f.isf(level, r, draws - r) * r * (draws - 1) / (draws - r))
    return Check(
        "mean_all_directions",
        form,
        sampling,
        m,
        0.0,
        t2,
        math.nan,
        critical,
        draws,
        tolerance_kind=f"Hotelling T^2 critical value on {r} random directions (two-sided level of z)",
        by_construction=by_construction,
    )


def _moment_checks(
    updates: torch.Tensor,
    *,
    stats: GradientStatistics,
    gram: GramStatistics,
    lr: float,
    form: str,
    sampling: str,
    m: int,
    z: float,
    seed: int = 0,
    by_construction: bool = False,
    predict_sampling: str | None = None,
) -> list[Check]:
    d = updates.double()  # (D, P)
    draws = d.shape[0]
    g = stats.mean_gradient.to(d)
    g_norm = float(g.norm())
    rtol, eta = FLOAT_RTOL.get(updates.dtype, 1e-5), effective_lr(lr, form, m)
    dev = d + eta * g  # (D, P): dw - E[dw], the exact mean being known
    along = d @ (-g / g_norm)  # (D,): component of each update along -G
    dev_sq = dev.pow(2).sum(1)  # (D,): |dw - E dw|^2, unbiased for tr Cov
    floor = rtol * eta**2 * (stats.grad_norm_sq + stats.trace_cov / m)  # float floor on |dw|^2 scale
    predicted_mean = predicted_update_mean(lr, form, m, g_norm)
    c = minibatch_variance_factor(m, stats.population, sampling)
    # the population's own per-draw spreads (exact statistics of the M examples): never underestimated
    # by draws that miss a heavy-tailed example, as the draws' sample spread is
    along_sd = eta * math.sqrt(c * float(np.sum(gram.along**2)) / gram.population) / g_norm
    trace_sd = eta**2 * math.sqrt(trace_draw_variance(gram, m, sampling, seed=seed))
    whole = sampling == "without" and m == stats.population  # the batch is the population: no noise
    measured = [
        ("mean_along_-G", predicted_mean, along, rtol * predicted_mean, along_sd),
        (
            "trace_cov",
            predicted_update_trace_cov(
                lr, form, m, stats.trace_cov, predict_sampling or sampling, stats.population
            ),
            dev_sq,
            floor,
            trace_sd,
        ),
    ]
    kind = "z stderr (the larger of population and sample) + float floor"
    out = []
    for name, predicted, values, atol, population_sd in measured:
        stderr = max(float(values.std() / math.sqrt(draws)), population_sd / math.sqrt(draws))
        out.append(
            Check(
                name,
                form,
                sampling,
                m,
                predicted,
                float(values.mean()),
                stderr,
                z * stderr + atol,
                draws,
                tolerance_kind=kind,
                by_construction=by_construction or whole,
            )
        )
    if not whole and draws >= 4:
        out.append(
            mean_all_directions_check(
                dev, form=form, sampling=sampling, m=m, z=z, seed=seed, by_construction=by_construction
            )
        )
    return out


def update_moments(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    stats: GradientStatistics,
    batch_sizes: Sequence[int],
    lr: float,
    forms: Sequence[str] = FORMS,
    samplings: Sequence[str] = SAMPLINGS,
    draws: int = 200,
    seed: int = 0,
    z: float = Z_TOLERANCE,
    gram: GramStatistics | None = None,
    predict_sampling: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Check]:
    r"""Measured mean and tr(Cov) of the SGD update vs their exact predictions, per form, sampling and m.

    ``stats`` must hold the exact statistics of the M = len(x) examples the batches are drawn from
    (``gradient_statistics(..., sample=None)``). For each m, ``draws`` minibatches are drawn and the
    update computed by a real backward pass of the mean or sum loss. Reported per (form, sampling, m):
    the mean component of :math:`\Delta w` along :math:`-G/|G|` (predicted :math:`\eta_\mathrm{eff}|G|`),
    :math:`\mathrm{tr\,Cov}[\Delta w]` (predicted :math:`\eta_\mathrm{eff}^2 c(m)\,\mathrm{tr}\,\Sigma`,
    measured as the mean of :math:`|\Delta w + \eta_\mathrm{eff} G|^2`), and the mean in all directions
    (:func:`mean_all_directions_check`). Standard errors are the larger of the draws' and the
    population's own (from the exact per-example Gram statistics ``gram``, computed when None, see
    :func:`trace_draw_variance`); tolerance ``z`` of them plus a float floor. The predictions are exact
    (no model error). Rows that hold by construction say so: m = M without replacement (the batch is the
    population), and sum-form rows when the mean form is measured on the same batches (the sum-form
    update is m times the mean-form one). ``predict_sampling`` predicts with another sampling's c(m)
    (to plant a wrong prediction). ``progress`` gets a counter of the examples drawn
    (:func:`batchscale.progress.counter`).
    """
    population = int(x.shape[0])
    _check_common(lr, draws, forms, samplings)
    check_examples_independent(model)
    require(
        stats.population == population and stats.n_examples == population,
        "update_moments needs exact statistics over all the examples the batches are drawn from",
    )
    for sampling in samplings:
        for m in batch_sizes:
            check_batch_size(m, population, sampling)
    gram = gram_statistics(model, loss_fn, x, y) if gram is None else gram
    checks: list[Check] = []
    generator = torch.Generator().manual_seed(seed)
    total = len(samplings) * len(forms) * draws * sum(batch_sizes)
    with counter(progress, total, unit="example", desc="draws") as bar:
        for sampling in samplings:
            for m in batch_sizes:
                batches = [draw_batch(population, m, sampling, generator).to(x.device) for _ in range(draws)]
                for form in forms:
                    updates = _draw_updates(
                        model, loss_fn, x, y, batch_size=m, lr=lr, form=form, batches=batches
                    )
                    checks += _moment_checks(
                        updates,
                        stats=stats,
                        gram=gram,
                        lr=lr,
                        form=form,
                        sampling=sampling,
                        m=m,
                        z=z,
                        seed=seed + m,
                        by_construction=form == "sum" and "mean" in forms,
                        predict_sampling=predict_sampling,
                    )
                    bar.update(draws * m)
    return checks


