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
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

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
    flat_grad,
    minibatch_variance_factor,
)
from batchscale.errors import require

FORMS: tuple[str, ...] = ("mean", "sum")
T = TypeVar("T")

# Default number of standard errors a measurement may differ from its prediction.
Z_TOLERANCE = 4.0
# Relative float floor on tolerances (float32 sums over up to ~1e4 terms).
FLOAT_RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@dataclass(frozen=True)
class Check:
    """One prediction beside its measurement: pass when |measured - predicted| <= tolerance.

    ``tolerance_kind`` says what the tolerance is made of; ``by_construction`` marks a row whose
    agreement follows from how it is measured (e.g. m = M without replacement: the batch is the whole
    population), so its verdict is ``holds_by_construction`` (or ``fail``, which would be a bug).
    """

    quantity: str
    form: str
    sampling: str
    batch_size: int
    predicted: float
    measured: float
    stderr: float
    tolerance: float
    draws: int
    tolerance_kind: str = "z stderr + float floor"
    by_construction: bool = False

    @property
    def passed(self) -> bool:
        return abs(self.measured - self.predicted) <= self.tolerance

    @property
    def verdict(self) -> str:
        """pass | fail | holds_by_construction."""
        if not self.passed:
            return "fail"
        return "holds_by_construction" if self.by_construction else "pass"

    def as_row(self) -> dict[str, object]:
        return {
            "quantity": self.quantity,
            "form": self.form,
            "sampling": self.sampling,
            "m": self.batch_size,
            "predicted": self.predicted,
            "measured": self.measured,
            "stderr": self.stderr,
            "tolerance": self.tolerance,
            "pass": "yes" if self.passed else "no",
            "draws": self.draws,
            "verdict": self.verdict,
            "tolerance_kind": self.tolerance_kind,
        }


# --------------------------------------------------------------------------------------------------
# predictions (plain arithmetic on measured statistics)


def effective_lr(lr: float, form: str, batch_size: int) -> float:
    r""":math:`\eta_\mathrm{eff}`, the step on :math:`g_B`: ``lr`` (mean form) or ``lr * m`` (sum form).

    Mean form :math:`w \leftarrow w - \eta \frac1m \sum_{i\in B} g_i`; sum form
    :math:`w \leftarrow w - \tilde\eta \sum_{i\in B} g_i = w - (\tilde\eta m) g_B` (Masters & Luschi 2018,
    eqs. 3-4). ``lr`` is :math:`\eta` or :math:`\tilde\eta`, ``batch_size`` is m.
    """
    require(form in FORMS, f"unknown loss form {form!r}; expected mean or sum")
    return lr if form == "mean" else lr * batch_size


def predicted_update_mean(lr: float, form: str, batch_size: int, grad_norm: float) -> float:
    r"""Component of :math:`E[\Delta w]` along :math:`-G/|G|`: :math:`\eta_\mathrm{eff} |G|`.

    :math:`E[\Delta w] = -\eta_\mathrm{eff} G` under either sampling scheme (Masters & Luschi 2018,
    sec. 2). ``grad_norm`` is :math:`|G|`.
    """
    return effective_lr(lr, form, batch_size) * grad_norm


def predicted_update_trace_cov(
    lr: float, form: str, batch_size: int, trace_cov: float, sampling: str, population: int
) -> float:
    r""":math:`\mathrm{tr\,Cov}[\Delta w] = \eta_\mathrm{eff}^2\, c(m)\, \mathrm{tr}\,\Sigma`.

    c(m) = 1/m with replacement, (M-m)/(m(M-1)) without (Masters & Luschi 2018, sec. 2). ``trace_cov``
    is :math:`\mathrm{tr}\,\Sigma` (population, divisor M), ``population`` is M.
    """
    c = minibatch_variance_factor(batch_size, population, sampling)
    return effective_lr(lr, form, batch_size) ** 2 * c * trace_cov


def predicted_cosine(b_simple: float, batch_size: int, sampling: str, population: int) -> float:
    r"""Approximate :math:`E[\cos(g_B, G)] \approx 1/\sqrt{1 + c(m)\,B_\mathrm{simple}}`.

    Exact for the ratio :math:`E[g_B\cdot G]/(|G|\sqrt{E|g_B|^2})` since
    :math:`E|g_B|^2 = |G|^2 + c(m)\,\mathrm{tr}\,\Sigma`; the mean cosine :math:`E[g_B\cdot G/|g_B|]/|G|`
    differs from it by a gap of either sign (|g_B| is correlated with :math:`g_B\cdot G`; on least squares
    at m = 1 the mean cosine is about half the ratio) that vanishes when :math:`|g_B|` concentrates.
    With replacement c(m) = 1/m, giving the familiar :math:`1/\sqrt{1 + B_\mathrm{simple}/m}`
    (McCandlish et al. 2018, App. A).
    """
    return 1.0 / math.sqrt(1.0 + minibatch_variance_factor(batch_size, population, sampling) * b_simple)


# --------------------------------------------------------------------------------------------------
# measurements


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


def draw_indices(population: int, batch_size: int, sampling: str, samples: int, seed: int) -> np.ndarray:
    """``samples`` seeded minibatches of indices (S, m), with or without replacement."""
    rng = np.random.default_rng(seed)
    if sampling == "with":
        return rng.integers(0, population, size=(samples, batch_size))
    return np.argsort(rng.random((samples, population)), axis=1)[:, :batch_size]


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
    (to plant a wrong prediction).
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
    for sampling in samplings:
        for m in batch_sizes:
            batches = [draw_batch(population, m, sampling, generator).to(x.device) for _ in range(draws)]
            for form in forms:
                updates = _draw_updates(model, loss_fn, x, y, batch_size=m, lr=lr, form=form, batches=batches)
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
    return checks


def _check_common(lr: float, draws: int, forms: Sequence[str], samplings: Sequence[str]) -> None:
    require(math.isfinite(lr) and lr > 0, f"learning rate must be positive, got {lr}")
    require(draws >= 2, f"need at least 2 draws per batch size, got {draws}")
    for form in forms:
        require(form in FORMS, f"unknown loss form {form!r}; expected mean or sum")
    for sampling in samplings:
        require(sampling in SAMPLINGS, f"unknown sampling {sampling!r}; expected with or without")


@dataclass(frozen=True)
class GramStatistics:
    r"""What minibatch statistics depend on, from the M per-example gradients: a factor F (M, r) of the
    Gram matrix of the centred gradients, :math:`K_{ij} = (g_i - G)\cdot(g_j - G) = (F F^\top)_{ij}`
    (F is the centred gradients themselves when P <= M, else from K's eigendecomposition),
    :math:`u_i = (g_i - G)\cdot G` (M,) and :math:`|G|^2` (all float64)."""

    factor: np.ndarray
    along: np.ndarray
    grad_norm_sq: float

    @property
    def population(self) -> int:
        return int(self.along.shape[0])

    @property
    def diagonal(self) -> np.ndarray:
        """:math:`K_{ii} = |g_i - G|^2`, (M,)."""
        return np.einsum("mr,mr->m", self.factor, self.factor)

    def batch_terms(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""For minibatches ``idx`` (S, m): :math:`(g_B - G)\cdot G` and :math:`|g_B - G|^2`, each (S,)."""
        samples, m = idx.shape
        rows = max(1, 4_000_000 // max(1, m * self.factor.shape[1]))  # bound the (rows, m, r) gather
        quad = np.empty(samples)
        for start in range(0, samples, rows):
            means = self.factor[idx[start : start + rows]].mean(1)  # (rows, r)
            quad[start : start + rows] = np.einsum("sr,sr->s", means, means)
        return self.along[idx].mean(1), quad


# Per-example gradients held at once for the Gram matrix (float32: 1 GB).
GRAM_MAX_FLOATS = 250_000_000


def gram_statistics(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int = 256
) -> GramStatistics:
    """:class:`GramStatistics` of the M = len(x) examples (exact per-example gradients, torch.func)."""
    from batchscale.empirical.gradients import iter_per_example_gradients, num_parameters

    population, params = int(x.shape[0]), num_parameters(model)
    require(
        population * params <= GRAM_MAX_FLOATS,
        f"the cosine prediction holds all {population} x {params} per-example gradients; that is more than "
        f"{GRAM_MAX_FLOATS:.0e} floats: use --sample with fewer examples",
    )
    grads = torch.cat(list(iter_per_example_gradients(model, loss_fn, x, y, chunk_size=chunk_size)))  # (M, P)
    d = grads.double()
    g = d.mean(0)  # (P,)
    d -= g  # (M, P): g_i - G
    along = (d @ g).cpu().numpy()
    if params <= population:
        return GramStatistics(d.cpu().numpy(), along, float(g @ g))
    lam, vec = np.linalg.eigh((d @ d.T).cpu().numpy())  # K = V diag(lam) V^T
    keep = lam > max(float(lam.max()), 0.0) * 1e-13
    return GramStatistics(vec[:, keep] * np.sqrt(lam[keep]), along, float(g @ g))


def exact_cosine_m1(stats: GramStatistics) -> float:
    r""":math:`E[\cos(g_B, G)]` at m = 1 (either sampling): :math:`\frac1M\sum_i \cos(g_i, G)`, with
    :math:`g_i\cdot G = |G|^2 + u_i` and :math:`|g_i|^2 = K_{ii} + 2u_i + |G|^2`."""
    g2, u = stats.grad_norm_sq, stats.along
    norms = np.sqrt(np.maximum(stats.diagonal + 2 * u + g2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 0, (g2 + u) / (math.sqrt(g2) * norms), 0.0)
    return float(cos.mean())


def gaussian_cosine(
    stats: GramStatistics, variance_factors: Sequence[float], *, samples: int = 4000, seed: int = 0
) -> list[tuple[float, float]]:
    r""":math:`E[\cos(g_B, G)]` for :math:`g_B = G + \xi`, :math:`\xi \sim N(0, c\,\Sigma)`, one c per entry
    of ``variance_factors``: (Monte Carlo mean, its standard error) over ``samples`` draws.

    The Gaussian model keeps the exact mean and covariance of the minibatch gradient
    (:math:`E g_B = G`, :math:`\mathrm{Cov}\, g_B = c(m)\Sigma`) and drops its higher cumulants. In the
    eigenbasis of :math:`K/M = V\Lambda V^\top` (Lambda: the non-zero eigenvalues of Sigma),
    :math:`\xi\cdot G = \sqrt c\,\sum_k n_k (v_k\cdot u)/\sqrt M` and
    :math:`|\xi|^2 = c\sum_k \lambda_k n_k^2` with :math:`n \sim N(0, I)`; then
    :math:`\cos = (|G|^2 + \xi\cdot G)/(|G|\,|G + \xi|)`. The same draws serve every c (smooth in m).
    """
    m_total = stats.population
    vec, sing, _ = np.linalg.svd(stats.factor / math.sqrt(m_total), full_matrices=False)  # K/M = U S^2 U^T
    lam = sing**2
    keep = lam > lam.max() * 1e-12 if lam.size and lam.max() > 0 else np.zeros(lam.shape, bool)
    lam, b = lam[keep], vec[:, keep].T @ stats.along / math.sqrt(m_total)  # (r,), (r,)
    n = np.random.default_rng(seed).standard_normal((samples, lam.size))  # (S, r)
    along, sq = n @ b, (n * n) @ lam  # (S,), (S,): xi.G and |xi|^2 at c = 1
    g2, out = stats.grad_norm_sq, []
    for c in variance_factors:
        norm = np.sqrt(np.maximum(g2 + 2 * math.sqrt(c) * along + c * sq, 1e-300))
        cos = (g2 + math.sqrt(c) * along) / (math.sqrt(g2) * norm)  # (S,)
        out.append((float(cos.mean()), float(cos.std(ddof=1) / math.sqrt(samples))))
    return out


def subset_cosine(
    stats: GramStatistics, batch_size: int, sampling: str, *, samples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    r""":math:`E[\cos(g_B, G)]` over minibatches of the M examples, by Monte Carlo over ``samples``
    index draws (with or without replacement) using only the Gram statistics: with w the batch's
    weights (multiplicity / m), :math:`g_B\cdot G = |G|^2 + w\cdot u` and
    :math:`|g_B|^2 = |G|^2 + 2 w\cdot u + w^\top K w`. Exact in expectation (no model): the per-example
    gradients determine every minibatch gradient. Returns (mean, standard error).
    """
    g2 = stats.grad_norm_sq
    along, quad = stats.batch_terms(draw_indices(stats.population, batch_size, sampling, samples, seed))
    norm = np.sqrt(np.maximum(g2 + 2 * along + quad, 1e-300))
    cos = (g2 + along) / (math.sqrt(g2) * norm)  # (S,)
    return float(cos.mean()), float(cos.std(ddof=1) / math.sqrt(samples)) if samples > 1 else math.inf


def cosine_check(
    values: np.ndarray,
    *,
    predicted: float,
    predicted_stderr: float,
    sampling: str,
    m: int,
    population: int,
    z: float,
) -> Check:
    """The cosine row: measured = mean of ``values`` (one cosine per draw); tolerance
    z * sqrt(stderr^2 + predicted_stderr^2) + 1e-6 (float rounding of the cosines); m = M without
    replacement holds by construction (the batch gradient is G)."""
    draws = int(values.size)
    stderr = float(values.std(ddof=1) / math.sqrt(draws))
    tolerance = z * math.hypot(stderr, predicted_stderr) + 1e-6
    return Check(
        "cosine",
        "mean",
        sampling,
        m,
        predicted,
        float(values.mean()),
        stderr,
        tolerance,
        draws,
        tolerance_kind="z stderr (measured and predicted Monte Carlo)",
        by_construction=sampling == "without" and m == population,
    )


def gradient_cosine(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    stats: GradientStatistics,
    batch_sizes: Sequence[int],
    sampling: str = "without",
    draws: int = 100,
    seed: int = 0,
    z: float = Z_TOLERANCE,
    gram: GramStatistics | None = None,
    samples: int = 2000,
    predictor: Callable[..., tuple[float, float]] | None = None,
) -> list[Check]:
    r"""Mean cos(g_B, G) over ``draws`` minibatches per m vs the predicted :math:`E[\cos(g_B, G)]`.

    G is ``stats.mean_gradient`` (exact over the M = len(x) examples). The prediction is the exact
    expectation over minibatches of the sampling scheme, computed from the per-example Gram statistics
    (``gram``, computed when None) by :func:`subset_cosine` with ``samples`` index draws (no backward
    pass); the measurement takes ``draws`` independent minibatches through real backward passes.
    Tolerance: :func:`cosine_check`. For comparison each check also gets the Gaussian model's value
    (:func:`gaussian_cosine`, exact mean and covariance of g_B) and the ratio form
    :func:`predicted_cosine`: both are approximations whose error can exceed the tolerance (heavy-tailed
    per-example gradients), which is why neither is the prediction checked. ``predictor`` replaces
    :func:`subset_cosine` (same signature), e.g. to plant a wrong prediction.
    """
    population = int(x.shape[0])
    _check_common(1.0, draws, FORMS, [sampling])
    check_examples_independent(model)
    for m in batch_sizes:
        check_batch_size(m, population, sampling)
    gram = gram_statistics(model, loss_fn, x, y) if gram is None else gram
    factors = [minibatch_variance_factor(m, population, sampling) for m in batch_sizes]
    gaussian = gaussian_cosine(gram, factors, samples=samples, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    g = stats.mean_gradient
    checks = []
    for m, (model_value, _) in zip(batch_sizes, gaussian, strict=True):
        predicted, predicted_se = (predictor or subset_cosine)(
            gram, m, sampling, samples=samples, seed=seed + m
        )
        cos = []
        for _ in range(draws):
            idx = draw_batch(population, m, sampling, generator).to(x.device)
            gb = batch_gradient(model, loss_fn, x[idx], y[idx]).double()
            cos.append(float(gb @ g / (gb.norm() * g.norm())))
        check = cosine_check(
            np.array(cos),
            predicted=predicted,
            predicted_stderr=predicted_se,
            sampling=sampling,
            m=m,
            population=population,
            z=z,
        )
        ratio = predicted_cosine(stats.b_simple, m, sampling, population)
        checks.append(CosineCheck(**vars(check), gaussian_model=model_value, ratio_formula=ratio))
    return checks


@dataclass(frozen=True)
class CosineCheck(Check):
    """A cosine :class:`Check` with two approximations beside it (not checked): the Gaussian model's
    expected cosine and the ratio formula 1/sqrt(1 + c(m) B_simple)."""

    gaussian_model: float = math.nan
    ratio_formula: float = math.nan

    def as_row(self) -> dict[str, object]:
        extra = {"gaussian_model": self.gaussian_model, "ratio_formula": self.ratio_formula}
        return {**super().as_row(), **extra}


# --------------------------------------------------------------------------------------------------
# accumulation and memory


@contextmanager
def saved_tensor_meter(model: nn.Module) -> Iterator[dict[str, int]]:
    """Count the bytes autograd saves for backward (activations), excluding the model's parameters.

    Yields a dict whose ``"bytes"`` is the total size of the distinct tensors packed while the context
    is open. All of them are alive together until the backward pass, so this is the activation memory
    one forward pass holds: on CPU it is the measurable, allocator-independent part of peak memory.
    """
    params = {(p.data_ptr(), p.numel()) for p in model.parameters()}
    seen: set[tuple[int, int]] = set()
    meter = {"bytes": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.data_ptr(), t.numel())
        if key not in params and key not in seen:
            seen.add(key)
            meter["bytes"] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield meter


def batch_dependent_layers(model: nn.Module) -> list[str]:
    """Layers whose output for one example depends on the rest of the batch or on random draws in the
    current mode: batch norm and Dropout in training mode. Without them the accumulation identity holds
    by construction (the gradient is linear in the per-example losses)."""
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    return [name for name, m in model.named_modules() if isinstance(m, kinds) and m.training]


@dataclass(frozen=True)
class AccumulationResult:
    """Accumulated update over k micro-batches vs the one-batch update, and the memory per micro-batch.

    ``peak_bytes`` is the allocation peak of one micro-batch's forward and backward measured by torch's
    profiler (:func:`micro_batch_peak_bytes`: activations, temporaries, the gradient it adds), the main
    memory figure; ``saved_bytes`` the bytes autograd saves for that backward (activations only: a lower
    bound). ``by_construction``: the model has no batch-dependent layer, so the identity holds
    for any weights and the row only shows float rounding.
    """

    form: str
    batch_size: int
    micro_batch: int
    max_abs_diff: float
    tolerance: float
    update_max_abs: float
    saved_bytes: int
    cuda_peak_bytes: int | None
    peak_bytes: int | None = None
    by_construction: bool = True

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    @property
    def verdict(self) -> str:
        if self.by_construction:
            return "holds_by_construction" if self.passed else "fail"
        return "pass" if self.passed else "fail"

    def as_row(self) -> dict[str, object]:
        return {
            "form": self.form,
            "m": self.batch_size,
            "micro_batch": self.micro_batch,
            "k": self.batch_size // self.micro_batch,
            "predicted": 0.0,
            "measured": self.max_abs_diff,
            "stderr": 0.0,  # deterministic: the same batch, the same float operations every time
            "tolerance": self.tolerance,
            "tolerance_kind": "float rounding",
            "pass": "yes" if self.passed else "no",
            "verdict": self.verdict,
            "peak_MiB": None if self.peak_bytes is None else self.peak_bytes / 2**20,
            "saved_MiB": self.saved_bytes / 2**20,
            "cuda_peak_MiB": None if self.cuda_peak_bytes is None else self.cuda_peak_bytes / 2**20,
        }


def micro_batch_peak_bytes(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *, scale: int, form: str
) -> int:
    """Allocation peak of one micro-batch's forward and backward (``x``, ``y``), accumulating into gradient
    buffers that already exist (as every micro-batch after the first does), above the level at its start,
    measured by :func:`allocation_peak_bytes`. ``scale`` is m, the divisor of the mean form."""
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)

    def step() -> None:
        losses = loss_fn(model(x), y)  # (b,)
        (losses.sum() / scale if form == "mean" else losses.sum()).backward()

    _, peak = allocation_peak_bytes(step)
    model.zero_grad(set_to_none=True)
    return peak


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 points to /dev/null inside: the profiler's native library writes a trace line
    at every start and stop there, which would bury the progress lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def allocation_peak_bytes(run: Callable[[], T]) -> tuple[T, int]:
    """``run()`` under torch's profiler (``profile_memory=True``, CPU): its result and the peak of the
    bytes allocated while it ran, above the level at its start (the running sum of the profiler's
    allocation and free records in time order)."""
    from torch.profiler import ProfilerActivity, profile

    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = run()
    changes = [
        (e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
        for e in prof.events()
        if e.name == "[memory]" or e.self_cpu_memory_usage != 0
    ]
    level = peak = 0
    for _, change in sorted(changes, key=lambda c: c[0]):
        level += change
        peak = max(peak, level)
    return result, int(peak)


def accumulated_update(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    micro_batch: int,
    lr: float,
    form: str,
) -> tuple[torch.Tensor, int, int | None]:
    r"""SGD update from k = m/``micro_batch`` micro-batches whose gradients are accumulated.

    Mean form: each micro-batch contributes :math:`\frac1m \sum_{i\in b} l_i` (divided by the full batch
    size m, not by the micro-batch size); sum form: :math:`\sum_{i\in b} l_i`. The update is
    :math:`-\eta` times the accumulated gradient. Returns (update (P,), peak autograd-saved bytes of one
    micro-batch, CUDA peak bytes or None on CPU).
    """
    m = int(x.shape[0])
    require(
        micro_batch >= 1 and m % micro_batch == 0,
        f"micro-batch size {micro_batch} must divide the batch size {m}",
    )
    on_cuda = x.device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(x.device)
    model.zero_grad(set_to_none=True)
    saved = 0
    for start in range(0, m, micro_batch):
        with saved_tensor_meter(model) as meter:
            losses = loss_fn(model(x[start : start + micro_batch]), y[start : start + micro_batch])
        (losses.sum() / m if form == "mean" else losses.sum()).backward()
        saved = max(saved, meter["bytes"])
    update = -lr * flat_grad(model).detach().clone()
    model.zero_grad(set_to_none=True)
    return update, saved, int(torch.cuda.max_memory_allocated(x.device)) if on_cuda else None


def check_micro_batches(batch_size: int, micro_batches: Sequence[int]) -> None:
    """InputError unless every micro-batch size is >= 1 and divides ``batch_size``."""
    for mb in micro_batches:
        require(
            mb >= 1 and batch_size % mb == 0, f"micro-batch size {mb} must divide the batch size {batch_size}"
        )


def accumulation(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    micro_batches: Sequence[int],
    lr: float,
    forms: Sequence[str] = FORMS,
    seed: int = 0,
) -> list[AccumulationResult]:
    """Accumulation identity: the update from k micro-batches equals the one-batch update (float rounding).

    One batch of ``batch_size`` examples is drawn without replacement; for each micro-batch size the
    accumulated update is compared with the single-pass update (micro-batch = m). Tolerance: float
    relative precision (1e-5 float32, 1e-12 float64) times the largest update component. On a model
    without batch-dependent layers (:func:`batch_dependent_layers`) the identity holds by construction:
    such rows say ``holds_by_construction`` (a failure would be a bug in the accumulation code). Memory:
    the profiler's allocation peak (:func:`allocation_peak_bytes`) and autograd's saved bytes.
    """
    population = int(x.shape[0])
    _check_common(lr, 2, forms, ["without"])
    check_batch_size(batch_size, population)
    idx = draw_batch(population, batch_size, "without", torch.Generator().manual_seed(seed)).to(x.device)
    xb, yb = x[idx], y[idx]
    check_micro_batches(batch_size, micro_batches)
    rtol = FLOAT_RTOL.get(x.dtype, 1e-5)
    by_construction = not batch_dependent_layers(model)
    results = []
    for form in forms:
        reference, _, _ = accumulated_update(model, loss_fn, xb, yb, micro_batch=batch_size, lr=lr, form=form)
        scale = float(reference.abs().max())
        for mb in micro_batches:
            update, saved, cuda_peak = accumulated_update(
                model, loss_fn, xb, yb, micro_batch=mb, lr=lr, form=form
            )
            peak = micro_batch_peak_bytes(model, loss_fn, xb[:mb], yb[:mb], scale=batch_size, form=form)
            diff = float((update - reference).abs().max())
            results.append(
                AccumulationResult(
                    form, batch_size, mb, diff, rtol * scale, scale, saved, cuda_peak, peak, by_construction
                )
            )
    return results
