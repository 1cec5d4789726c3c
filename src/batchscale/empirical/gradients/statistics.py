"""G, tr(Sigma) and B_simple of the per-example gradients, with a bootstrap interval over groups of
examples."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from batchscale.empirical.gradients.per_example import (
    DEFAULT_CHUNK,
    N_GROUPS,
    LossFn,
    Method,
    _blocks,
    block_counts,
    check_examples_independent,
    iter_per_example_gradients,
    num_parameters,
    per_example_sq_norms_and_block_sums,
)
from batchscale.errors import require


@dataclass(frozen=True)
class GradientStatistics:
    r"""Per-example gradient statistics over ``n_examples`` examples describing a population of M.

    ``grad_norm_sq`` is :math:`|G|^2`, ``trace_cov`` is :math:`\mathrm{tr}\,\Sigma` (population, divisor M),
    ``b_simple`` their ratio (McCandlish et al. 2018, eq. 2.8), ``b_simple_ci`` a bootstrap 95% interval
    over random groups of examples (the spread over draws of the data, not float error).
    ``mean_gradient`` (float64, (P,)) is the sample's mean gradient.
    """

    method: str
    n_examples: int
    population: int
    grad_norm_sq: float
    trace_cov: float
    mean_sq_norm: float
    b_simple: float
    b_simple_ci: tuple[float, float]
    mean_gradient: torch.Tensor = field(repr=False, compare=False)

    def as_row(self) -> dict[str, object]:
        """Flat dict for a result table."""
        return {
            "method": self.method,
            "examples": self.n_examples,
            "population": self.population,
            "grad_norm_sq": self.grad_norm_sq,
            "trace_cov": self.trace_cov,
            "b_simple": self.b_simple,
            "ci_low": self.b_simple_ci[0],
            "ci_high": self.b_simple_ci[1],
        }


def population_moments(
    mean_grad_sq: float, mean_sq_norm: float, n: int, population: int
) -> tuple[float, float]:
    r"""Unbiased :math:`(|G|^2, \mathrm{tr}\,\Sigma)` from a simple random sample of n of M examples.

    With :math:`\hat G` the sample mean and :math:`s^2 = \frac{n}{n-1}(\overline{|g|^2} - |\hat G|^2)`
    (divisor n-1): :math:`\mathrm{tr}\,\Sigma = s^2 (M-1)/M` and
    :math:`|G|^2 = |\hat G|^2 - s^2 (M-n)/(M n)` (finite-population sampling, Cochran 1977, ch. 2).
    With n = M both are the exact population values. ``mean_grad_sq`` is :math:`|\hat G|^2`,
    ``mean_sq_norm`` is :math:`\overline{|g|^2}`, n is ``n``, M is ``population``.
    """
    require(n >= 2, f"need at least 2 examples for gradient statistics, got {n}")
    require(n <= population, f"sample of {n} examples exceeds the population of {population}")
    s2 = (mean_sq_norm - mean_grad_sq) * n / (n - 1)
    return mean_grad_sq - s2 * (population - n) / (population * n), s2 * (population - 1) / population


def b_simple(grad_norm_sq: float, trace_cov: float) -> float:
    r""":math:`B_\mathrm{simple} = \mathrm{tr}\,\Sigma / |G|^2` (McCandlish et al. 2018, eq. 2.8)."""
    return trace_cov / grad_norm_sq if grad_norm_sq > 0 else math.inf


@dataclass(frozen=True)
class _GroupSums:
    """Sufficient statistics per random group of examples: count, sum of g_i, sum of |g_i|^2."""

    counts: np.ndarray  # (K,)
    sum_grad: torch.Tensor  # (K, P) float64
    sum_sq: np.ndarray  # (K,)


def _bootstrap_b_simple(
    sums: _GroupSums, point: float, population: int, n_boot: int, seed: int
) -> tuple[float, float]:
    """95% interval for the population's B_simple from resampling the K groups with replacement.

    Replicate b with group multiplicities w estimates |G|^2 by the U-statistic over pairs of distinct
    draws, (w^T Q w - sum_k w_k Q_kk) / (K (K - 1)) with Q the Gram matrix of group mean gradients, and
    tr(Sigma) by the weighted mean of |g_i|^2 minus that. The interval is the replicates' 2.5%-97.5%
    spread around their median on a log scale, shrunk by the finite-population factor sqrt((M-n)/(M-1))
    and placed around the point estimate: zero width when all M examples were used (the value is exact);
    (nan, nan) when ``n_boot`` is 0.
    """
    keep = sums.counts > 0
    k, n_total = int(keep.sum()), float(sums.counts.sum())
    shrink = math.sqrt((population - n_total) / (population - 1)) if population > 1 else 0.0
    if shrink == 0.0:
        return point, point
    if k < 2 or n_boot < 1 or not math.isfinite(point):
        return math.nan, math.nan
    counts, sum_sq = sums.counts[keep], sums.sum_sq[keep]
    means = (
        sums.sum_grad[torch.from_numpy(keep).to(sums.sum_grad.device)]
        / torch.from_numpy(counts).to(sums.sum_grad)[:, None]
    )
    gram = (means @ means.T).cpu().numpy()  # (K, K)
    w = np.random.default_rng(seed).multinomial(k, np.full(k, 1.0 / k), size=n_boot).astype(float)
    g2 = (np.einsum("bk,kl,bl->b", w, gram, w) - w @ np.diag(gram)) / (k * (k - 1))
    trace = w @ sum_sq / (w @ counts) - g2
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.where((g2 > 0) & (trace > 0), np.log(trace / g2), np.inf)
        low, mid, high = np.percentile(log_ratio, [2.5, 50, 97.5], method="nearest")
        out = (point * np.exp(-shrink * (mid - low)), point * np.exp(shrink * (high - mid)))
    return tuple(float(v) if np.isfinite(v) else math.inf for v in out)  # type: ignore[return-value]


def sample_indices(n_total: int, sample: int | None, seed: int, device: torch.device) -> torch.Tensor:
    """A seeded random permutation of all ``n_total`` indices, or of ``sample`` of them."""
    n = n_total if sample is None else sample
    require(n >= 1, f"sample size must be >= 1, got {n}")
    require(n <= n_total, f"sample of {n} examples exceeds the {n_total} training examples")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=generator)[:n].to(device)


def gradient_statistics(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: Method = "exact",
    sample: int | None = None,
    chunk_size: int | None = None,
    seed: int = 0,
    n_boot: int = 1000,
) -> GradientStatistics:
    r""":math:`|G|^2`, :math:`\mathrm{tr}\,\Sigma` and :math:`B_\mathrm{simple}` of the per-example gradients.

    Over all M = len(x) examples (``sample=None``: exact population values) or a random sample of
    ``sample`` of them (unbiased estimates, see :func:`population_moments`).
    ``method="exact"`` forms per-example gradients with torch.func; ``"fast"`` uses only their squared
    norms (:func:`per_example_sq_norms`). Both give :math:`\mathrm{tr}\,\Sigma = \overline{|g_i|^2} - |G|^2`
    accumulated in float64. The examples are shuffled and processed ``chunk_size`` at a time (default
    :data:`DEFAULT_CHUNK`: 256 exact, 4096 fast); each chunk
    is cut into K = 32 contiguous blocks and block k joins bootstrap group k (group sums of g_i come from
    the same pass: one batched matmul per layer on the fast path).
    """
    require(method in ("exact", "fast"), f"unknown method {method!r}; expected exact or fast")
    check_examples_independent(model)
    if chunk_size is None:  # exact holds chunk x P floats of gradients; fast only activations
        chunk_size = DEFAULT_CHUNK[method]
    require(chunk_size >= 1, f"chunk size must be >= 1, got {chunk_size}")
    population = int(x.shape[0])
    order = sample_indices(population, sample, seed, x.device)
    sums = {
        "counts": np.zeros(N_GROUPS),
        "sum_sq": np.zeros(N_GROUPS),
        "sum_grad": torch.zeros(N_GROUPS, num_parameters(model), dtype=x.dtype, device=x.device),
    }
    for start in range(0, order.numel(), chunk_size):
        idx = order[start : start + chunk_size]  # shuffled examples; block k of each chunk joins group k
        if method == "exact":
            (grads,) = iter_per_example_gradients(model, loss_fn, x[idx], y[idx], chunk_size=idx.numel())
            sq, block_sums = grads.double().pow(2).sum(1), _blocks(grads[:, None, :], N_GROUPS).sum(1)
        else:
            sq, block_sums = per_example_sq_norms_and_block_sums(model, loss_fn, x[idx], y[idx], N_GROUPS)
        counts = block_counts(idx.numel(), N_GROUPS)
        sums["counts"] += counts
        sums["sum_sq"] += _block_totals(sq.double(), N_GROUPS)
        sums["sum_grad"] += block_sums  # model precision within the chunks, float64 from here on
    sums["sum_grad"] = sums["sum_grad"].double()
    return _statistics_from_sums(method, _GroupSums(**sums), population, n_boot, seed)


def _block_totals(values: torch.Tensor, n_groups: int) -> np.ndarray:
    """Sums of a per-example (N,) tensor over the K contiguous blocks of :func:`block_counts`."""
    return _blocks(values[:, None, None], n_groups).sum((1, 2)).cpu().numpy()


def _statistics_from_sums(method: str, sums: _GroupSums, population: int, n_boot: int, seed: int):
    n = int(sums.counts.sum())
    mean_gradient = sums.sum_grad.sum(0) / n
    mean_grad_sq = float(mean_gradient.pow(2).sum())
    mean_sq_norm = float(sums.sum_sq.sum() / n)
    g2, tr = population_moments(mean_grad_sq, mean_sq_norm, n, population)
    point = b_simple(g2, tr)
    return GradientStatistics(
        method=method,
        n_examples=n,
        population=population,
        grad_norm_sq=g2,
        trace_cov=tr,
        mean_sq_norm=mean_sq_norm,
        b_simple=point,
        b_simple_ci=_bootstrap_b_simple(sums, point, population, n_boot, seed),
        mean_gradient=mean_gradient,
    )
