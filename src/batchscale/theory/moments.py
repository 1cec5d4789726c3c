r"""Exact mean and covariance of one SGD update, for every loss form, sampling scheme and normalisation.

Setting (Masters & Luschi 2018, Sec. 2; docs/claims.md, "moments"). M examples with per-example gradients
:math:`g_i` at the current weights w, mean :math:`G = \frac1M\sum_i g_i` and population covariance
:math:`\Sigma = \frac1M\sum_i (g_i-G)(g_i-G)^\top`. A batch B of m examples has gradient sum
:math:`S = \sum_{i\in B} g_i` and the update :math:`\Delta w = w_{next} - w` is

* ``form="mean"``: :math:`\Delta w = -\eta\, S/m` (mean loss, learning rate eta);
* ``form="sum"``:  :math:`\Delta w = -\tilde\eta\, S` (summed loss, base learning rate
  :math:`\tilde\eta = \eta/m`, the symbol ``eta_base``).

Sampling: ``with`` replacement (m independent uniform draws), ``without`` replacement (each batch a uniform
m-subset, batches of different steps independent), ``reshuffle`` (each epoch a uniformly random partition
of the data into batches; steps of one epoch are the batches of one partition).

Normalisation (``per``): ``step`` is one update; ``example`` is the per-step moments divided by m (mean and
covariance both), so that N examples' worth of independent steps accumulate N times these moments;
``epoch`` is the sum of the M/m updates of one epoch with every gradient held at w. The symbolic
per-epoch results assume m divides M; :func:`update_moments_numeric` gives the exact result with a last
partial batch (kept or dropped).

Every symbolic result is a scalar coefficient times G (mean) or Sigma (covariance), written with the
commutative symbols of :mod:`batchscale.theory.symbols`; the same coefficient multiplies the vector G and
the matrix Sigma.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import sympy as sp

from batchscale.errors import require
from batchscale.theory import accounting
from batchscale.theory.symbols import G, M, Sigma, eta, eta_base, m
from batchscale.vocabulary import LOSS_FORMS, PERS, SAMPLINGS, check_choice

DIM = sp.Symbol("d", positive=True, integer=True)  # dimension of G and Sigma in matrix form


def _check_case(form: str, sampling: str, per: str) -> None:
    check_choice("form", form, LOSS_FORMS)
    check_choice("sampling", sampling, SAMPLINGS)
    check_choice("per", per, PERS)


def learning_rate_symbol(form: str) -> sp.Symbol:
    """The learning-rate symbol of ``form``: eta (mean loss) or eta_base (sum loss)."""
    return eta if check_choice("form", form, LOSS_FORMS) == "mean" else eta_base


def step_scale(form: str) -> sp.Expr:
    r"""The factor c in :math:`\Delta w = -c\,S`: :math:`\eta/m` (mean form) or :math:`\tilde\eta` (sum)."""
    return eta / m if check_choice("form", form, LOSS_FORMS) == "mean" else eta_base


def finite_population_factor_symbolic(sampling: str) -> sp.Expr:
    r"""Factor f in :math:`\mathrm{Cov}[S] = m f \Sigma`: 1 with replacement, :math:`\frac{M-m}{M-1}` else.

    Sampling without replacement from a finite population of M (simple random sampling, Cochran 1977,
    Sampling Techniques, Ch. 2; docs/claims.md, "moments"). One batch of a random partition
    (``reshuffle``) is a uniform m-subset, so the same.
    """
    return sp.Integer(1) if check_choice("sampling", sampling, SAMPLINGS) == "with" else (M - m) / (M - 1)


def batch_sum_mean() -> sp.Expr:
    r""":math:`\mathbb E[S] = m G` for every sampling scheme (each draw is a uniform example)."""
    return m * G


def batch_sum_covariance(sampling: str) -> sp.Expr:
    r""":math:`\mathrm{Cov}[S] = m\Sigma` (with replacement) or :math:`m\Sigma\frac{M-m}{M-1}` (else)."""
    return m * Sigma * finite_population_factor_symbolic(sampling)


def batch_cross_covariance(sampling: str) -> sp.Expr:
    r"""Covariance of the gradient sums of two different steps of one epoch, :math:`\mathrm{Cov}[S_j,S_k]`.

    Zero for independent draws (``with``, ``without``); for two disjoint batches of one random partition
    (``reshuffle``) :math:`-\frac{m^2\Sigma}{M-1}`: a pair (a, b) of distinct uniform examples has
    :math:`\mathrm{Cov}[g_a, g_b] = -\Sigma/(M-1)` and there are m^2 such pairs.
    """
    if check_choice("sampling", sampling, SAMPLINGS) != "reshuffle":
        return sp.Integer(0)
    return -(m**2) * Sigma / (M - 1)


def steps_per_epoch_symbolic() -> sp.Expr:
    """M/m steps per epoch (m divides M; see :mod:`batchscale.theory.accounting` for the integers)."""
    return M / m


def update_mean(form: str, sampling: str, per: str) -> sp.Expr:
    r"""Expected update :math:`\mathbb E[\Delta w]`.

    Per step :math:`-c\,mG` with c from :func:`step_scale`, i.e. :math:`-\eta G` (mean form) or
    :math:`-\tilde\eta m G` (sum form); per example that over m; per epoch that times M/m
    (Masters & Luschi 2018, Sec. 2). The sampling scheme does not enter.
    """
    _check_case(form, sampling, per)
    step = -step_scale(form) * batch_sum_mean()
    return _tidy(_normalise(step, per, cross=sp.Integer(0)))


def update_covariance(form: str, sampling: str, per: str) -> sp.Expr:
    r"""Covariance of the update :math:`\mathrm{Cov}[\Delta w]`.

    Per step :math:`c^2 m f \Sigma` (f from :func:`finite_population_factor_symbolic`):
    :math:`\eta^2\Sigma/m` or :math:`\tilde\eta^2 m \Sigma` with replacement, times
    :math:`\frac{M-m}{M-1}` without. Per example that over m. Per epoch of s = M/m steps
    :math:`s\,c^2\mathrm{Cov}[S] + s(s-1)\,c^2\mathrm{Cov}[S_j,S_k]`,
    which vanishes for ``reshuffle`` (Masters & Luschi 2018, Sec. 2; docs/claims.md, "moments").
    """
    _check_case(form, sampling, per)
    c = step_scale(form)
    step = c**2 * batch_sum_covariance(sampling)
    return _tidy(_normalise(step, per, cross=c**2 * batch_cross_covariance(sampling)))


def _tidy(expr: sp.Expr) -> sp.Expr:
    # keep the readable product form (eta**2*Sigma*(M - m)/(m*(M - 1))); only collapse exact zeros
    return sp.Integer(0) if sp.simplify(expr) == 0 else expr


def _normalise(step: sp.Expr, per: str, cross: sp.Expr) -> sp.Expr:
    if per == "step":
        return step
    if per == "example":
        return step / m
    s = steps_per_epoch_symbolic()
    # sum over s steps: s diagonal terms and s (s - 1) ordered pairs of different steps
    return s * step + s * (s - 1) * cross


def limit_batch_one(expr: sp.Expr) -> sp.Expr:
    """``expr`` at m = 1 (online SGD)."""
    return sp.simplify(expr.subs(m, 1))


def limit_full_batch(expr: sp.Expr) -> sp.Expr:
    """``expr`` at m = M (full-batch gradient descent)."""
    return sp.simplify(expr.subs(m, M))


def limit_infinite_data(expr: sp.Expr) -> sp.Expr:
    r"""Leading behaviour as :math:`M\to\infty` at fixed m: the limit when finite, else the leading term.

    Per-step and per-example moments have a finite limit (without replacement tends to with replacement);
    per-epoch moments grow like M, and the leading term (e.g. :math:`-\eta M G/m`) is returned.
    """
    x = sp.Dummy("x", positive=True)
    near_zero = sp.cancel(sp.together(expr.subs(M, 1 / x)))
    return sp.simplify(near_zero.as_leading_term(x).subs(x, 1 / M))


NOTES = {
    ("with", "step"): "m independent uniform draws (repeats allowed).",
    ("without", "step"): "one uniform m-subset per step, steps independent; covariance 0 at m = M.",
    ("reshuffle", "step"): "one batch of a random partition is a uniform m-subset: same moments as "
    "without replacement; two batches of one epoch covary, Cov[S_j, S_k] = -m**2*Sigma/(M - 1).",
    ("with", "example"): "per-step moments / m; N examples of independent steps accumulate N times these.",
    ("without", "example"): "per-step moments / m; N examples of independent steps accumulate N times these.",
    ("reshuffle", "example"): "per-step moments / m; the steps of one epoch are negatively correlated, so "
    "an epoch accumulates less covariance than M times this (see per epoch).",
    ("with", "epoch"): "sum of M/m independent steps, gradients held at w; assumes m divides M.",
    ("without", "epoch"): "sum of M/m independent steps, gradients held at w; assumes m divides M.",
    ("reshuffle", "epoch"): "deterministic: with m dividing M the epoch's batches partition the data, so "
    "the summed update is exactly -c*M*G (c = eta/m or eta_base); the negative covariances between "
    "batches cancel the per-batch ones.",
}


class UpdateMoments(NamedTuple):
    """Symbolic mean and covariance of the update for one (form, sampling, per), with their limits."""

    form: str
    sampling: str
    per: str
    mean: sp.Expr
    covariance: sp.Expr
    mean_m1: sp.Expr
    mean_mM: sp.Expr
    mean_Minf: sp.Expr
    covariance_m1: sp.Expr
    covariance_mM: sp.Expr
    covariance_Minf: sp.Expr
    note: str


def update_moments(form: str, sampling: str, per: str) -> UpdateMoments:
    """Mean, covariance and their m=1, m=M and M->oo limits for one case (see the module docstring)."""
    mean = update_mean(form, sampling, per)
    cov = update_covariance(form, sampling, per)
    return UpdateMoments(
        form=form,
        sampling=sampling,
        per=per,
        mean=mean,
        covariance=cov,
        mean_m1=limit_batch_one(mean),
        mean_mM=limit_full_batch(mean),
        mean_Minf=limit_infinite_data(mean),
        covariance_m1=limit_batch_one(cov),
        covariance_mM=limit_full_batch(cov),
        covariance_Minf=limit_infinite_data(cov),
        note=NOTES[(sampling, per)],
    )


def all_update_moments(
    forms: tuple[str, ...] = LOSS_FORMS, samplings: tuple[str, ...] = SAMPLINGS, pers: tuple[str, ...] = PERS
) -> list[UpdateMoments]:
    """:func:`update_moments` for every combination of the given forms, samplings and normalisations."""
    return [update_moments(f, s, p) for s in samplings for f in forms for p in pers]


def as_matrix_expression(expr: sp.Expr, dim: int | sp.Symbol = DIM) -> sp.MatrixExpr:
    """A moment with G as a (d, 1) and Sigma as a (d, d) MatrixSymbol: the same coefficient times each.

    Every moment is (scalar coefficient) * G or * Sigma (or 0, returned as a (d, d) zero matrix).
    """
    for symbol, shape in ((G, (dim, 1)), (Sigma, (dim, dim))):
        if expr.has(symbol):
            coefficient = expr.subs(symbol, 1)
            require(sp.simplify(expr - coefficient * symbol) == 0, f"{expr} is not linear in {symbol}")
            return coefficient * sp.MatrixSymbol(symbol.name, *shape)
    require(expr == 0, f"{expr} has neither G nor Sigma")
    return sp.ZeroMatrix(dim, dim)


# ---------------------------------------------------------------------------------------------------------
# Numbers: exact moments for given G, Sigma, sizes and learning rate, including a last partial batch.


class NumericMoments(NamedTuple):
    """Mean vector (d,) and covariance matrix (d, d) of an update."""

    mean: np.ndarray
    covariance: np.ndarray


def gradient_statistics(per_example_grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean gradient G (d,) and population covariance :math:`\Sigma = \frac1M\sum_i(g_i-G)(g_i-G)^\top`.

    ``per_example_grads`` is (M, d).
    """
    grads = np.asarray(per_example_grads, dtype=float)
    require(grads.ndim == 2 and grads.shape[0] >= 1, f"per_example_grads must be (M, d), got {grads.shape}")
    mean = grads.mean(axis=0)  # (d,)
    centred = grads - mean  # (M, d)
    return mean, centred.T @ centred / grads.shape[0]


def _check_numeric(dataset_size: int, batch_size: int, sampling: str) -> None:
    for name, value in (("dataset_size", dataset_size), ("batch_size", batch_size)):
        require(isinstance(value, (int, np.integer)), f"{name} must be an integer, got {value!r}")
    require(dataset_size >= 1, f"dataset_size must be >= 1, got {dataset_size}")
    require(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    require(
        sampling == "with" or batch_size <= dataset_size,
        f"batch_size {batch_size} > dataset_size {dataset_size} needs sampling with replacement",
    )


def _float_ratio(a: int, b: int) -> float:
    return a / b


def _exact_ratio(a: int, b: int) -> sp.Rational:
    return sp.Rational(a, b)


def _scale(form: str, lr, size: int, ratio):
    # c in dw = -c S: eta / b for the mean loss of a batch of b, eta_base for the sum loss
    return lr * ratio(1, size) if form == "mean" else lr


def _population_factor(sampling: str, dataset_size: int, size: int, ratio):
    # (M - b) / (M - 1) without replacement; M = 1 has Sigma = 0, so any factor will do
    if sampling == "with" or dataset_size == 1:
        return ratio(1, 1)
    return ratio(dataset_size - size, dataset_size - 1)


def _step(mean_grad, grad_cov, dataset_size, size, lr, form, sampling, ratio) -> tuple:
    c = _scale(form, lr, size, ratio)
    f = _population_factor(sampling, dataset_size, size, ratio)
    return -c * size * mean_grad, c**2 * size * f * grad_cov


def _reshuffle_epoch(mean_grad, grad_cov, dataset_size, batch_size, lr, form, drop_last, ratio) -> tuple:
    # dw = -c (T - S_L) - c_L S_L with T = M G fixed and S_L the last partial batch of r examples
    r = dataset_size % batch_size
    c = _scale(form, lr, batch_size, ratio)
    c_last = 0 * lr if (drop_last or r == 0) else _scale(form, lr, r, ratio)
    mean = -c * (dataset_size - r) * mean_grad - c_last * r * mean_grad
    factor = 0 if r == 0 else r * ratio(dataset_size - r, dataset_size - 1)
    return mean, (c_last - c) ** 2 * factor * grad_cov


def _sized_moments(mean_grad, grad_cov, dataset_size, batch_size, lr, form, sampling, per, drop_last, ratio):
    """Mean and covariance for given sizes; works on numpy arrays (float ratio) or sympy (exact ratio)."""
    _check_case(form, sampling, per)
    _check_numeric(dataset_size, batch_size, sampling)
    args = (mean_grad, grad_cov, dataset_size)
    if per == "step":
        return _step(*args, batch_size, lr, form, sampling, ratio)
    if per == "example":
        mean, cov = _step(*args, batch_size, lr, form, sampling, ratio)
        return mean * ratio(1, batch_size), cov * ratio(1, batch_size)
    if sampling == "reshuffle":
        return _reshuffle_epoch(*args, batch_size, lr, form, drop_last, ratio)
    # independent steps: the moments add up; steps of equal size are counted, not listed (M/m may be huge)
    steps = [
        (count, _step(*args, size, lr, form, sampling, ratio))
        for size, count in accounting.epoch_batch_counts(dataset_size, batch_size, drop_last).items()
    ]
    return sum(c * s[0] for c, s in steps), sum(c * s[1] for c, s in steps)


class SizedMoments(NamedTuple):
    """Exact moments for given integer sizes, in the symbols G, Sigma and eta (or eta_base)."""

    form: str
    sampling: str
    per: str
    dataset_size: int
    batch_size: int
    drop_last: bool
    mean: sp.Expr
    covariance: sp.Expr


def update_moments_at(
    form: str, sampling: str, per: str, dataset_size: int, batch_size: int, drop_last: bool = False
) -> SizedMoments:
    """Exact mean and covariance at given M and m, including a last partial batch per epoch.

    Same conventions and formulas as :func:`update_moments_numeric`, with exact rationals: the result is
    a rational number times G (mean) or Sigma (covariance) and the learning-rate symbol.
    """
    mean, cov = _sized_moments(
        G,
        Sigma,
        dataset_size,
        batch_size,
        learning_rate_symbol(form),
        form,
        sampling,
        per,
        drop_last,
        _exact_ratio,
    )
    return SizedMoments(
        form, sampling, per, dataset_size, batch_size, drop_last, sp.sympify(mean), sp.sympify(cov)
    )


def update_moments_numeric(
    mean_grad: np.ndarray,
    grad_cov: np.ndarray,
    dataset_size: int,
    batch_size: int,
    lr: float,
    form: str = "mean",
    sampling: str = "with",
    per: str = "step",
    drop_last: bool = False,
) -> NumericMoments:
    r"""Exact :math:`\mathbb E[\Delta w]` and :math:`\mathrm{Cov}[\Delta w]` for given numbers.

    G is ``mean_grad`` (d,), Sigma is ``grad_cov`` (d, d) (population), M is ``dataset_size``, m is
    ``batch_size``, and ``lr`` is eta (mean form) or eta_base (sum form). Step and example moments are
    those of a full batch of m (:func:`update_mean`, :func:`update_covariance`). Per epoch the batches are
    :func:`batchscale.theory.accounting.epoch_batch_sizes`: for ``with``/``without`` the sum of
    independent steps of those sizes; for ``reshuffle`` the last batch L of r = M mod m examples carries
    all the randomness, :math:`\Delta w = -c(MG - S_L) - c_L S_L`, so
    :math:`\mathrm{Cov} = (c_L - c)^2\, r\frac{M-r}{M-1}\Sigma` (c_L = 0 when the last batch is dropped).
    """
    mean_grad = np.asarray(mean_grad, dtype=float)
    grad_cov = np.asarray(grad_cov, dtype=float)
    mean, cov = _sized_moments(
        mean_grad, grad_cov, dataset_size, batch_size, lr, form, sampling, per, drop_last, _float_ratio
    )
    return NumericMoments(mean, cov)
