"""Stable and optimal SGD step sizes vs batch size for least squares in the interpolation regime.

Model: targets y = w*.x with no noise, loss L(w) = E[(w.x - y)^2]/2, Hessian H = E[x x^T] with eigenvalues
lambda_1 >= lambda_2 >= ...; mean-form SGD w <- w - (eta/m) sum_j x_j x_j^T (w - w*) over a batch of m
examples drawn independently (Gaussian inputs, or uniformly with replacement from a fixed dataset).

Two views are given:

* Ma, Bassily & Belkin (2018), "The power of interpolation", arXiv 1712.06559, Sec. 3-4: with per-example
  smoothness beta, the step eta*(m) = m / (beta + (m - 1) lambda_1) and the critical batch m* = beta/lambda_1
  (linear scaling below m*, saturation at ~1/lambda_1 above it).
* An exact mean-square analysis derived here: the second moment P_t = E[e_t e_t^T] of e_t = w_t - w*
  evolves linearly, P_{t+1} = E[(I - eta H_B) P_t (I - eta H_B)], H_B = (1/m) sum_j x_j x_j^T. SGD is
  mean-square stable iff that linear map has spectral radius < 1; the largest such eta and the eta with the
  smallest radius (fastest contraction of E|e|^2) are found numerically. At m -> infinity the map is
  gradient descent, stable iff eta < 2/lambda_1.

numpy/scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from batchscale.errors import InputError, require
from batchscale.vocabulary import finite_population_factor


def checked_spectrum(spectrum: Sequence[float]) -> np.ndarray:
    """Eigenvalues as a float array sorted descending; each must be finite and > 0."""
    lam = np.asarray(spectrum, dtype=float).ravel()
    require(lam.size > 0, "the spectrum is empty")
    bad = lam[~(np.isfinite(lam) & (lam > 0))]
    require(bad.size == 0, f"eigenvalues must be finite and > 0, got {bad.tolist()[:1]}")
    return np.sort(lam)[::-1]


def _checked_batch(batch_size: float) -> float:
    require(math.isfinite(batch_size) and batch_size >= 1, f"batch size must be >= 1, got {batch_size}")
    return float(batch_size)


def gaussian_smoothness(spectrum: Sequence[float]) -> float:
    r"""Effective per-example smoothness for Gaussian inputs, :math:`\beta = \mathrm{tr}\Lambda + 2\lambda_1`.

    MBB's analysis needs :math:`E[|x|^2 x x^\top] \preceq \beta H`. For :math:`x \sim N(0, \Lambda)`
    (Isserlis), :math:`E[|x|^2 x x^\top] = \mathrm{tr}(\Lambda)\Lambda + 2\Lambda^2 \preceq
    (\mathrm{tr}\Lambda + 2\lambda_1)\Lambda`, and the bound is attained along the top eigenvector.
    :math:`\Lambda` is ``spectrum``.
    """
    lam = checked_spectrum(spectrum)
    return float(lam.sum() + 2 * lam[0])


def dataset_smoothness(inputs: np.ndarray) -> float:
    r"""Per-example smoothness of a fixed dataset, :math:`\beta = \max_i |x_i|^2` (MBB 2018, Sec. 3).

    ``inputs`` is the (n, d) matrix of the :math:`x_i`.
    """
    x = np.asarray(inputs, dtype=float)
    require(x.ndim == 2 and x.shape[0] > 0, "inputs must be a non-empty (n, d) matrix")
    return float(np.max(np.sum(x * x, axis=1)))


def mbb_critical_batch(beta: float, lambda_max: float) -> float:
    r"""Critical batch size :math:`m^* = \beta / \lambda_1` (Ma, Bassily & Belkin 2018, Sec. 4).

    :math:`\beta` is ``beta`` (per-example smoothness), :math:`\lambda_1` is ``lambda_max``.
    """
    require(lambda_max > 0 and beta > 0, f"beta and lambda_max must be > 0, got {beta}, {lambda_max}")
    return beta / lambda_max


def mbb_optimal_step(batch_size: float, beta: float, lambda_max: float) -> float:
    r"""MBB's step :math:`\eta^*(m) = m / (\beta + (m-1)\lambda_1)` (Ma, Bassily & Belkin 2018, Sec. 4).

    m is ``batch_size``. It grows linearly, :math:`\approx m/\beta`, for :math:`m \ll m^*` and saturates
    at :math:`1/\lambda_1` for :math:`m \gg m^*` (the formula is evaluated for every m).
    """
    m = _checked_batch(batch_size)
    return m / (beta + (m - 1.0) * lambda_max)


def full_batch_step_limit(lambda_max: float) -> float:
    r"""Gradient descent on a quadratic is stable iff :math:`\eta < 2/\lambda_{max}`."""
    require(math.isfinite(lambda_max) and lambda_max > 0, f"lambda_max must be > 0, got {lambda_max}")
    return 2.0 / lambda_max


def gaussian_second_moment_matrix(spectrum: Sequence[float], step: float, batch_size: float) -> np.ndarray:
    r"""The map :math:`p_{t+1} = T p_t` of the second moments :math:`p_i = E[e_i^2]`, Gaussian inputs.

    :math:`T = \mathrm{diag}((1-\eta\lambda_i)^2) + \frac{\eta^2}{m}(\mathrm{diag}(\lambda_i^2) +
    \lambda\lambda^\top)`. Derivation: :math:`E[H_B P H_B] = \Lambda P \Lambda + \frac1m(\Lambda P\Lambda
    + \mathrm{tr}(\Lambda P)\Lambda)` for :math:`x \sim N(0,\Lambda)` (Isserlis), and the diagonal of
    :math:`P' = P - \eta(\Lambda P + P\Lambda) + \eta^2 E[H_B P H_B]` involves only the diagonal of P.
    :math:`\lambda` is ``spectrum``, :math:`\eta` is ``step``, m is ``batch_size``. T is symmetric.
    """
    lam = checked_spectrum(spectrum)
    m = _checked_batch(batch_size)
    # T = diag((1 - eta lam)^2 + eta^2 lam^2 / m) + (eta^2 / m) lam lam^T
    return np.diag((1 - step * lam) ** 2 + step**2 * lam**2 / m) + (step**2 / m) * np.outer(lam, lam)


def gaussian_spectral_radius(spectrum: Sequence[float], step: float, batch_size: float) -> float:
    r"""Per-step mean-square contraction factor: spectral radius of :func:`gaussian_second_moment_matrix`.

    :math:`T = \mathrm{diag}(d) + c\lambda\lambda^\top`, :math:`c = \eta^2/m`,
    :math:`d_i = (1-\eta\lambda_i)^2 + c\lambda_i^2`, is symmetric with non-negative entries, so its
    spectral radius is its largest eigenvalue :math:`\mu`: the root above :math:`\max_i d_i` of the
    secular equation :math:`1 = c\sum_i \lambda_i^2/(\mu - d_i)` (O(d) per evaluation instead of an
    O(d^3) eigen-decomposition; scipy ``brentq``).
    """
    from scipy.optimize import brentq

    lam = checked_spectrum(spectrum)
    m = _checked_batch(batch_size)
    c = step * step / m
    d = (1 - step * lam) ** 2 + c * lam**2
    w = c * lam**2
    top, spread = float(d.max()), float(w.sum())
    if spread == 0.0:
        return top

    # mu = max d + delta:  1 - sum_i w_i / (delta + gap_i) = 0,  gap_i = max d - d_i,  0 < delta <= sum w
    gap = top - d

    def secular(delta: float) -> float:
        with np.errstate(divide="ignore"):
            return 1.0 - float(np.sum(w / (delta + gap)))

    lo, hi = spread * 1e-16, spread * (1 + 1e-9)
    if secular(lo) >= 0:
        return top + lo
    return top + float(brentq(secular, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps))


def gaussian_stability_boundary(spectrum: Sequence[float], step: float, batch_size: float) -> float:
    r"""Left side of the exact mean-square stability boundary for Gaussian inputs (stable iff < 1).

    :math:`\frac{\eta}{m}\sum_i \frac{\lambda_i}{2 - \eta\lambda_i(1 + 1/m)}`: T is diagonal plus rank one,
    so 1 is an eigenvalue of T iff :math:`\frac{\eta^2}{m}\sum_i \lambda_i^2/(1 - d_i) = 1` with
    :math:`d_i = (1-\eta\lambda_i)^2 + \eta^2\lambda_i^2/m`; the left side grows with :math:`\eta`, so the
    root is the largest stable step. Returns ``inf`` once :math:`\eta \ge 2/((1+1/m)\lambda_1)` (where
    :math:`d_1 \ge 1`).
    """
    lam = checked_spectrum(spectrum)
    m = _checked_batch(batch_size)
    denominator = 2.0 - step * lam * (1.0 + 1.0 / m)
    if np.any(denominator <= 0):
        return math.inf
    return float(step / m * np.sum(lam / denominator))


def dataset_second_moment_operator(inputs: np.ndarray, step: float, batch_size: float) -> np.ndarray:
    r"""The map :math:`P_{t+1} = \mathcal{T}(P_t)` on symmetric matrices, batches drawn with replacement.

    For a fixed dataset :math:`x_1..x_n` (rows of ``inputs``), :math:`A = \frac1n\sum_i x_i x_i^\top`,
    :math:`K(P) = \frac1n \sum_i (x_i^\top P x_i)\, x_i x_i^\top`:
    :math:`\mathcal{T}(P) = P - \eta(AP + PA) + \eta^2[(1 - \tfrac1m) APA + \tfrac1m K(P)]`
    (the m draws are independent, so :math:`E[H_B P H_B] = (1-\frac1m)APA + \frac1m K(P)`).
    Returned as a symmetric matrix in an orthonormal basis of symmetric d x d matrices
    (size d(d+1)/2); :math:`\eta` is ``step``, m is ``batch_size``.
    """
    x = np.asarray(inputs, dtype=float)
    m = _checked_batch(batch_size)
    n, d = x.shape
    a = x.T @ x / n
    eye = np.eye(d)
    z = np.einsum("ni,nj->nij", x, x).reshape(n, d * d)  # (n, d*d): vec(x_i x_i^T)
    full = (
        np.kron(eye, eye)
        - step * (np.kron(eye, a) + np.kron(a, eye))
        + step**2 * ((1 - 1 / m) * np.kron(a, a) + (z.T @ z) / (n * m))
    )
    basis = _symmetric_basis(d)
    return basis.T @ full @ basis


def _symmetric_basis(d: int) -> np.ndarray:
    """(d*d, d(d+1)/2) orthonormal basis of vec(symmetric d x d matrices)."""
    columns = []
    for i in range(d):
        for j in range(i, d):
            e = np.zeros((d, d))
            e[i, j] = e[j, i] = 1.0
            columns.append(e.ravel() / np.linalg.norm(e))
    return np.array(columns).T


def dataset_spectral_radius(inputs: np.ndarray, step: float, batch_size: float) -> float:
    """Per-step mean-square contraction factor, fixed dataset (:func:`dataset_second_moment_operator`)."""
    return float(np.max(np.abs(np.linalg.eigvalsh(dataset_second_moment_operator(inputs, step, batch_size)))))


@dataclass(frozen=True)
class MeanSquareSteps:
    """Mean-square step sizes at one batch size (mean form: the step multiplies the batch-mean gradient).

    Attributes:
        batch_size: m.
        optimal_step: the step minimising the per-step contraction factor of E|w - w*|^2.
        optimal_rate: that smallest factor (spectral radius at ``optimal_step``).
        max_stable_step: the largest step with spectral radius < 1 (mean-square stability bound).
    """

    batch_size: float
    optimal_step: float
    optimal_rate: float
    max_stable_step: float


def mean_square_steps(
    radius: Callable[[float], float], lambda_max: float, batch_size: float
) -> MeanSquareSteps:
    """Optimal and maximal stable step of a spectral-radius function ``radius(step)`` on (0, 2/lambda_max].

    ``radius(2/lambda_max) >= 1`` always (the top eigen-direction alone is neutral there), so the largest
    stable step lies below it. The minimiser is bracketed on a 64-point grid and refined with bounded Brent;
    the stability bound is the root of ``radius - 1`` above the minimiser (scipy ``brentq``).
    """
    from scipy.optimize import brentq, minimize_scalar

    upper = 2.0 / lambda_max
    grid = np.linspace(0, upper, 65)[1:]
    values = np.array([radius(s) for s in grid])
    k = int(np.argmin(values))
    lo, hi = grid[max(k - 1, 0)] if k > 0 else 0.0, grid[min(k + 1, grid.size - 1)]
    best = minimize_scalar(radius, bounds=(lo, hi), method="bounded", options={"xatol": upper * 1e-10})
    optimal, rate = (float(best.x), float(best.fun)) if best.fun <= values[k] else (float(grid[k]), values[k])
    # largest stable step: radius(step) = 1 between the optimum and 2 / lambda_max
    top = (
        brentq(lambda s: radius(s) - 1.0, optimal, upper, xtol=upper * 1e-12) if radius(upper) > 1 else upper
    )
    return MeanSquareSteps(float(batch_size), optimal, rate, float(top))


def gaussian_mean_square_steps(spectrum: Sequence[float], batch_size: float) -> MeanSquareSteps:
    """Optimal and maximal mean-square-stable step for Gaussian inputs x ~ N(0, diag(spectrum))."""
    lam = checked_spectrum(spectrum)
    m = _checked_batch(batch_size)
    return mean_square_steps(lambda s: gaussian_spectral_radius(lam, s, m), float(lam[0]), m)


def dataset_mean_square_steps(inputs: np.ndarray, batch_size: float) -> MeanSquareSteps:
    """Optimal and maximal mean-square-stable step for a fixed dataset, batches drawn with replacement."""
    x = np.asarray(inputs, dtype=float)
    require(x.ndim == 2 and x.shape[0] > 0, "inputs must be a non-empty (n, d) matrix")
    m = _checked_batch(batch_size)
    lambda_max = float(np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1])
    require(lambda_max > 0, "the inputs' covariance is zero")
    return mean_square_steps(lambda s: dataset_spectral_radius(x, s, m), lambda_max, m)


def mean_square_critical_batch(max_stable_step_at_1: float, lambda_max: float) -> float:
    r"""Batch where the stable step's linear growth meets 2/lambda_1: :math:`2/(\lambda_1\eta_{max}(1))`.

    The mean-square analogue of MBB's :math:`m^*`: the largest stable step grows about linearly,
    :math:`\eta_{max}(m) \approx m\,\eta_{max}(1)`, for small m and saturates at :math:`2/\lambda_1`.
    ``max_stable_step_at_1`` is :math:`\eta_{max}(1)`, ``lambda_max`` is :math:`\lambda_1`.
    """
    require(max_stable_step_at_1 > 0, f"max_stable_step_at_1 must be > 0, got {max_stable_step_at_1}")
    return full_batch_step_limit(lambda_max) / max_stable_step_at_1


def curvature_noise_max_stable_step(
    curvature: float, curvature_variance: float, batch_size: float, dataset_size: int | None = None
) -> float:
    r"""Largest step at which an error along the sharpest direction does not grow in mean square, on a
    local quadratic with per-example Hessians :math:`H_i`: :math:`\eta_{max}(m) = 2\lambda/(\lambda^2 +
    c(m)\,S^2/m)` (mean form).

    Model: near the current point the error e moves by :math:`e' = (I - \eta H_B) e`,
    :math:`H_B = \frac1m\sum_{i\in B} H_i`. From e along the top eigenvector v of
    :math:`H = E[H_i]` (eigenvalue :math:`\lambda`, ``curvature``),
    :math:`E|e'|^2/|e|^2 = 1 - 2\eta\lambda + \eta^2 E|H_B v|^2` and
    :math:`E|H_B v|^2 = \lambda^2 + c(m) S^2/m`, where :math:`S^2 = E|H_i v|^2 - \lambda^2`
    (``curvature_variance``) is the trace of the population covariance of :math:`H_i v` and c(m) the
    finite-population factor (M - m)/(M - 1) of batches drawn without replacement from M =
    ``dataset_size`` examples (1 with replacement: ``dataset_size`` None). The growth is below 1 iff
    :math:`\eta < 2\lambda/(\lambda^2 + c(m)S^2/m)`. In one dimension (:math:`S^2` the variance of the
    scalar curvatures) this is the exact mean-square stability bound of :math:`e' = (1 - \eta h_B)e`.
    Additive gradient noise adds variance but never changes stability. The bound grows about linearly,
    :math:`2m\lambda/S^2`, while :math:`m \ll S^2/\lambda^2` and saturates at the full-batch
    :math:`2/\lambda` above it (exactly 2/lambda at m = M).
    """
    require(math.isfinite(curvature) and curvature > 0, f"curvature must be > 0, got {curvature}")
    require(math.isfinite(curvature_variance) and curvature_variance >= 0,
            f"curvature variance must be >= 0, got {curvature_variance}")
    m = _checked_batch(batch_size)
    c = 1.0 if dataset_size is None else finite_population_factor(dataset_size, int(m), "without")
    return 2.0 * curvature / (curvature**2 + c * curvature_variance / m)


@dataclass(frozen=True)
class StabilityRow:
    """Every step-size prediction at one batch size (mean form; divide by m for the sum form)."""

    batch_size: int
    optimal_step: float
    optimal_rate: float
    max_stable_step: float
    mbb_step: float
    mbb_critical_batch: float
    full_batch_limit: float
    ms_critical_batch: float
    beta: float
    lambda_max: float


def stability_table(
    batch_sizes: Sequence[int], spectrum: Sequence[float] | None = None, inputs: np.ndarray | None = None
) -> list[StabilityRow]:
    """Predictions per batch size for Gaussian inputs with ``spectrum``, or for the dataset ``inputs``."""
    require((spectrum is None) != (inputs is None), "give exactly one of spectrum or inputs")
    for b in batch_sizes:
        require(b >= 1, f"batch size must be >= 1, got {b}")
    # Every step scales as 1/lambda: solve the problem with lambda_1 (or the largest |x_ij|) brought near 1 by
    # a power of two, which is exact in floating point (the same bits wherever nothing over- or underflows),
    # and scale the steps back, so spectra near 1e+-308 neither overflow nor lose digits.
    if inputs is not None:
        x = np.asarray(inputs, dtype=float)
        require(x.ndim == 2 and x.size > 0, "inputs must be a non-empty (n, d) matrix")
        require(bool(np.isfinite(x).all()), "inputs must be finite")
        root = _power_of_two_scale(float(np.max(np.abs(x))))
        x = x * root
        scale = root * root  # H scales as x^2
        lam_max, beta = float(np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]), dataset_smoothness(x)
        solve = lambda m: dataset_mean_square_steps(x, m)  # noqa: E731
    else:
        lam = checked_spectrum(spectrum)
        scale = _power_of_two_scale(float(lam[0]))
        _require_resolvable(lam, lam * scale)
        lam = lam * scale
        lam_max, beta = float(lam[0]), gaussian_smoothness(lam)
        solve = lambda m: gaussian_mean_square_steps(lam, m)  # noqa: E731
    ms_critical = mean_square_critical_batch(solve(1).max_stable_step, lam_max)
    rows = []
    for m in batch_sizes:
        ms = solve(m)
        rows.append(
            StabilityRow(
                batch_size=int(m),
                optimal_step=ms.optimal_step * scale,
                optimal_rate=ms.optimal_rate,
                max_stable_step=ms.max_stable_step * scale,
                mbb_step=mbb_optimal_step(m, beta, lam_max) * scale,
                mbb_critical_batch=mbb_critical_batch(beta, lam_max),
                full_batch_limit=full_batch_step_limit(lam_max) * scale,
                ms_critical_batch=ms_critical,
                beta=beta / scale,
                lambda_max=lam_max / scale,
            )
        )
    _require_finite_rows(rows)
    return rows


def _power_of_two_scale(value: float) -> float:
    """2^-k with ``value`` * 2^-k in [1, 2): multiplying by it is exact in floating point."""
    require(math.isfinite(value) and value > 0, f"expected a positive finite value, got {value}")
    exponent = 1 - math.frexp(value)[1]
    require(
        exponent <= 1023,
        f"{value:.3g} is below float64's normal range: steps of order 1/{value:.3g} cannot be represented",
    )
    return math.ldexp(1.0, exponent)


def _require_resolvable(lam: np.ndarray, scaled: np.ndarray) -> None:
    """Eigenvalues below lambda_1 / 2^1022 cannot be held beside lambda_1 in float64's normal range."""
    if scaled[-1] < np.finfo(float).tiny:
        raise InputError(
            f"the eigenvalues span lambda_1 = {lam[0]:.3g} down to {lam[-1]:.3g}, a ratio beyond float64's "
            "range (at most about 4e307); drop or raise the smallest eigenvalues"
        )


def _require_finite_rows(rows: list[StabilityRow]) -> None:
    for row in rows:
        bad = [name for name, value in vars(row).items() if not math.isfinite(value)]
        if bad:
            raise InputError(
                f"{bad[0]} at batch size {row.batch_size} is beyond float64's range; rescale the spectrum"
            )
