"""The two-batch-size estimator of |G|^2 and tr(Sigma) (McCandlish et al. 2018, App. A), and its
moving averages."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from batchscale.empirical.gradients.per_example import (
    LossFn,
    Sampling,
    batch_gradient,
    check_examples_independent,
)
from batchscale.empirical.gradients.sampling import check_batch_size, draw_batch
from batchscale.empirical.gradients.statistics import b_simple
from batchscale.errors import require


def minibatch_variance_factor(batch_size: int, population: int | None, sampling: Sampling) -> float:
    r"""c(m) with :math:`E|g_B|^2 = |G|^2 + c(m)\,\mathrm{tr}\,\Sigma`.

    With replacement c(m) = 1/m; without replacement from M examples c(m) = (M-m)/(m (M-1)).
    """
    if sampling == "with" or population is None:
        return 1.0 / batch_size
    return (population - batch_size) / (batch_size * (population - 1))


@dataclass(frozen=True)
class TwoBatchEstimate:
    r"""Two-batch-size estimate of :math:`|G|^2`, :math:`\mathrm{tr}\,\Sigma` and their ratio B_simple.

    ``grad_norm_sq`` and ``trace_cov`` are averages of per-draw unbiased estimates (numerator and
    denominator averaged separately, never the ratio), with standard errors over the draws;
    ``b_simple_ci`` is a bootstrap 95% interval over the draws.
    """

    small: int
    big: int
    draws: int
    grad_norm_sq: float
    trace_cov: float
    b_simple: float
    b_simple_ci: tuple[float, float]
    grad_norm_sq_stderr: float = math.nan
    trace_cov_stderr: float = math.nan

    def as_row(self) -> dict[str, object]:
        return {
            "method": "two-batch",
            "small": self.small,
            "big": self.big,
            "draws": self.draws,
            "grad_norm_sq": self.grad_norm_sq,
            "trace_cov": self.trace_cov,
            "b_simple": self.b_simple,
            "ci_low": self.b_simple_ci[0],
            "ci_high": self.b_simple_ci[1],
        }


def ratio_interval(
    estimates: np.ndarray, rng: np.random.Generator, *, level: float = 0.95, n_boot: int = 1000
) -> tuple[float, float]:
    r"""Percentile-bootstrap interval of :math:`B_\mathrm{simple} = \overline{\mathrm{tr}\,\Sigma} /
    \overline{|G|^2}` from per-draw unbiased estimates ``estimates`` (n, 2) = (|G|^2, tr Sigma).

    Resamples the n draws with replacement and takes the ratio of the resampled means (numerator and
    denominator averaged separately, never the ratio); a resample whose mean |G|^2 is not positive gives
    inf, and so does a bound interpolated between two infinite replicates (inf - inf).
    """
    idx = rng.integers(0, len(estimates), size=(n_boot, len(estimates)))
    g2, tr = estimates[idx, 0].mean(1), estimates[idx, 1].mean(1)
    tail = round(50 * (1 - level), 12)  # 2.5 exactly for level 0.95 (no float residue in the percentile)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g2 > 0, tr / g2, np.inf)
        bounds = np.percentile(ratio, [tail, 100 - tail])
    low, high = np.nan_to_num(bounds, nan=np.inf, posinf=np.inf)
    return float(low), float(high)


def two_batch_estimates(sq_small: float, sq_big: float, c_small: float, c_big: float) -> tuple[float, float]:
    r"""Unbiased :math:`(|G|^2, \mathrm{tr}\,\Sigma)` from squared norms of two minibatch gradients.

    McCandlish et al. 2018, App. A (eqs. A.2-A.3), written with c(B) = 1/B for sampling with replacement:
    :math:`\mathcal{S} = (|G_s|^2 - |G_b|^2)/(c_s - c_b)` and :math:`|G|^2 = |G_b|^2 - c_b \mathcal{S}`,
    i.e. :math:`|G|^2 = (B_b|G_b|^2 - B_s|G_s|^2)/(B_b - B_s)` when c = 1/B. ``sq_small`` is
    :math:`|G_s|^2`, ``sq_big`` is :math:`|G_b|^2`, ``c_small``/``c_big`` are
    :func:`minibatch_variance_factor` of the two batch sizes.
    """
    trace = (sq_small - sq_big) / (c_small - c_big)
    return sq_big - c_big * trace, trace


def two_batch_noise_scale(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    small: int,
    big: int,
    draws: int = 50,
    sampling: Sampling = "with",
    seed: int = 0,
    n_boot: int = 1000,
) -> TwoBatchEstimate:
    """B_simple from minibatch gradient norms at two batch sizes (no per-example gradients needed).

    Each draw takes an independent batch of ``small`` and one of ``big`` examples and forms the unbiased
    estimates of :func:`two_batch_estimates`; the result averages numerators and denominators separately.
    """
    population = int(x.shape[0])
    require(1 <= small < big, f"need 1 <= small < big batch sizes, got small={small}, big={big}")
    require(draws >= 2, f"need at least 2 draws, got {draws}")
    check_batch_size(big, population, sampling)
    check_examples_independent(model)
    generator = torch.Generator().manual_seed(seed)
    c_s = minibatch_variance_factor(small, population, sampling)
    c_b = minibatch_variance_factor(big, population, sampling)
    per_draw = []
    for _ in range(draws):
        sq = []
        for m in (small, big):
            idx = draw_batch(population, m, sampling, generator).to(x.device)
            sq.append(float(batch_gradient(model, loss_fn, x[idx], y[idx]).double().pow(2).sum()))
        per_draw.append(two_batch_estimates(sq[0], sq[1], c_s, c_b))
    est = np.array(per_draw)  # (draws, 2): |G|^2, tr Sigma
    g2, tr = est.mean(0)
    low, high = ratio_interval(est, np.random.default_rng(seed), n_boot=n_boot)
    g2, tr = float(g2), float(tr)
    g2_se, tr_se = (est.std(0, ddof=1) / math.sqrt(draws)).tolist()
    return TwoBatchEstimate(
        small, big, draws, g2, tr, b_simple(g2, tr), (float(low), float(high)), g2_se, tr_se
    )


def two_batch_step_estimates(
    model: nn.Module,
    loss_fn: LossFn,
    x_big: torch.Tensor,
    y_big: torch.Tensor,
    big_gradient: torch.Tensor,
    *,
    small: int,
    population: int,
) -> tuple[float, float]:
    r"""Unbiased :math:`(|G|^2, \mathrm{tr}\,\Sigma)` from one training batch and a slice of it.

    The big batch is the training step's own batch (``x_big``, ``y_big``; its mean-loss gradient
    ``big_gradient`` is already computed), the small batch its first ``small`` examples: one extra
    forward/backward of ``small`` examples. Both are uniform subsets drawn without replacement from the
    M = ``population`` examples (slices of a random permutation), so
    :math:`E|G_B|^2 = |G|^2 + c(B)\,\mathrm{tr}\,\Sigma` holds for each and
    :func:`two_batch_estimates` is unbiased; the two norms are correlated, which changes only the variance
    (McCandlish et al. 2018, App. A use the per-device and the all-reduced gradient the same way).
    """
    big = int(x_big.shape[0])
    require(1 <= small < big, f"need 1 <= small < big batch sizes, got small={small}, big={big}")
    check_examples_independent(model)
    sq_big = float(big_gradient.double().pow(2).sum())
    sq_small = float(batch_gradient(model, loss_fn, x_big[:small], y_big[:small]).double().pow(2).sum())
    c_s = minibatch_variance_factor(small, population, "without")
    c_b = minibatch_variance_factor(big, population, "without")
    return two_batch_estimates(sq_small, sq_big, c_s, c_b)


@dataclass(frozen=True)
class TwoBatchEMA:
    r"""Exponential moving averages of the two-batch numerator and denominator, kept separately.

    :math:`\bar x_t = d\,\bar x_{t-1} + (1-d)\,x_t` for :math:`x = |G|^2` and :math:`x = \mathrm{tr}\,\Sigma`
    (McCandlish et al. 2018, App. A: average the two, not their ratio). ``weight`` is
    :math:`1 - d^t`, the bias correction; ``update`` returns a new state.
    """

    decay: float = 0.9
    grad_norm_sq: float = 0.0
    trace_cov: float = 0.0
    weight: float = 0.0

    def update(self, grad_norm_sq: float, trace_cov: float) -> TwoBatchEMA:
        d = self.decay
        return TwoBatchEMA(
            decay=d,
            grad_norm_sq=d * self.grad_norm_sq + (1 - d) * grad_norm_sq,
            trace_cov=d * self.trace_cov + (1 - d) * trace_cov,
            weight=d * self.weight + (1 - d),
        )

    @property
    def corrected(self) -> tuple[float, float]:
        """Bias-corrected averages (|G|^2, tr Sigma): each divided by 1 - d^t."""
        if self.weight == 0:
            return math.nan, math.nan
        return self.grad_norm_sq / self.weight, self.trace_cov / self.weight

    @property
    def b_simple(self) -> float:
        # the (1 - d^t) bias corrections of numerator and denominator cancel in the ratio
        return b_simple(self.grad_norm_sq, self.trace_cov)
