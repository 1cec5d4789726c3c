"""cos(g_B, G) vs m: the exact expectation from the per-example Gram factor, the Gaussian model and the
ratio formula."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from batchscale.empirical.gradients import (
    GradientStatistics,
    LossFn,
    batch_gradient,
    check_batch_size,
    check_examples_independent,
    draw_batch,
    minibatch_variance_factor,
)
from batchscale.empirical.update_stats.checks import (
    FORMS,
    Z_TOLERANCE,
    Check,
    _check_common,
    draw_indices,
    predicted_cosine,
)
from batchscale.errors import require
from batchscale.progress import counter


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
    progress: Callable[[str], None] | None = None,
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
    with counter(progress, draws * sum(batch_sizes), unit="example", desc="draws") as bar:
        for m, (model_value, _) in zip(batch_sizes, gaussian, strict=True):
            predicted, predicted_se = (predictor or subset_cosine)(
                gram, m, sampling, samples=samples, seed=seed + m
            )
            cos = []
            for _ in range(draws):
                idx = draw_batch(population, m, sampling, generator).to(x.device)
                gb = batch_gradient(model, loss_fn, x[idx], y[idx]).double()
                cos.append(float(gb @ g / (gb.norm() * g.norm())))
            bar.update(draws * m)
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
