r"""One big step vs n small steps: the difference as a series in the learning rate (docs/claims.md,
"staleness").

Sum form (base learning rate :math:`\tilde\eta`, symbol ``eta_base``). Batch j (j = 1..n) has summed gradient
:math:`S_j` at the start point :math:`w_0` and summed Hessian :math:`H_j`; linearised around :math:`w_0` its
gradient at w is :math:`S_j + H_j (w - w_0)` (exact for a quadratic loss). n small steps

.. math:: w_j = w_{j-1} - \tilde\eta\,(S_j + H_j(w_{j-1}-w_0))

end at :math:`w_n`; one big step on the union of the batches, all gradients at :math:`w_0`, gives
:math:`w_{big} = w_0 - \tilde\eta\sum_j S_j`. Exactly (product form, later factors on the left)

.. math:: w_n - w_{big} = -\tilde\eta\sum_{j=1}^n\Big[\prod_{l=n}^{j+1}(I-\tilde\eta H_l) - I\Big] S_j
          = \sum_{p\ge1} (-1)^{p+1}\tilde\eta^{p+1}
            \sum_{j}\sum_{n\ge l_1>\dots>l_p>j} H_{l_1}\cdots H_{l_p} S_j,

whose leading term is :math:`\tilde\eta^2\sum_{k<j} H_j S_k`. Mean form: the same with learning rate eta,
the batch-mean gradients :math:`g_j = S_j/m` and batch-mean Hessians :math:`H_j/m`, compared with one big
step at the linearly scaled learning rate :math:`n\eta` on the batch of nm (its mean gradient is
:math:`\frac1n\sum_j g_j`). The big step matches the small steps while :math:`\eta n \lambda_{max} \ll 1`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import sympy as sp

from batchscale.errors import require
from batchscale.theory.moments import learning_rate_symbol
from batchscale.theory.symbols import M, eta, eta_base, m, n
from batchscale.vocabulary import LOSS_FORMS, SAMPLINGS, check_choice

MAX_SYMBOLIC_TERMS = 2000  # refuse to write out more products than this (the count grows like C(n, K))

# Non-commutative stand-ins for the matrices, so products keep their order (H G, H Sigma H).
H_MAT, G_MAT, SIGMA_MAT, C_MAT = sp.symbols("H G Sigma C", commutative=False)


def _check_steps_order(steps: int, order: int) -> None:
    require(isinstance(steps, int) and steps >= 1, f"steps must be a positive integer, got {steps!r}")
    require(isinstance(order, int) and order >= 1, f"order must be a positive integer, got {order!r}")


def batch_symbols(steps: int, form: str) -> tuple[list[sp.Symbol], list[sp.Symbol]]:
    """Non-commutative symbols H_1..H_n and S_1..S_n (sum form) or g_1..g_n (mean form, batch means)."""
    grad_name = "S" if check_choice("form", form, LOSS_FORMS) == "sum" else "g"
    hessians = list(sp.symbols(f"H_1:{steps + 1}", commutative=False))
    grads = list(sp.symbols(f"{grad_name}_1:{steps + 1}", commutative=False))
    return hessians, grads


def staleness_exact_symbolic(steps: int, form: str = "sum") -> sp.Expr:
    r"""Product form of :math:`w_n - w_{big}` for n = ``steps`` (exact for a quadratic)."""
    _check_steps_order(steps, 1)
    factors = steps * (steps - 1) // 2  # (1 - lr H_l) factors over all j < l
    require(
        factors <= MAX_SYMBOLIC_TERMS,
        f"{factors} factors in the product form for steps={steps}: too many to write (at most "
        f"{MAX_SYMBOLIC_TERMS}, steps <= {max_written_steps()})",
    )
    lr = learning_rate_symbol(form)
    hessians, grads = batch_symbols(steps, form)
    total = sp.Integer(0)
    for j in range(steps):
        product = sp.Integer(1)
        for h in reversed(hessians[j + 1 :]):  # (1 - lr H_n) ... (1 - lr H_{j+1})
            product = product * (1 - lr * h)
        total += -lr * (product - 1) * grads[j]
    return total


def max_written_steps() -> int:
    """The largest n whose product form has at most MAX_SYMBOLIC_TERMS factors, n(n-1)/2."""
    return max(n for n in range(1, 2 * MAX_SYMBOLIC_TERMS) if n * (n - 1) // 2 <= MAX_SYMBOLIC_TERMS)


def staleness_terms(steps: int, order: int, form: str = "sum") -> dict[int, sp.Expr]:
    r"""Terms of :math:`w_n - w_{big}` by power q = 2..``order`` of the learning rate.

    The term of power p+1 is :math:`(-1)^{p+1}\eta^{p+1}V_p` with the chain sums
    :math:`V_p = \sum_t U_p^{(t)}`, :math:`U_0^{(t)} = S_t`, :math:`U_p^{(t)} = H_t\sum_{s<t}U_{p-1}^{(s)}`.
    There is no first-order term; powers above n vanish.
    """
    _check_steps_order(steps, order)
    # the power p+1 has one product per chain j < l_p < ... < l_1, i.e. C(n, p+1) of them
    count = sum(math.comb(steps, p + 1) for p in range(1, order))
    require(
        count <= MAX_SYMBOLIC_TERMS, f"{count} products for steps={steps}, order={order}: too many to write"
    )
    lr = learning_rate_symbol(form)
    hessians, grads = batch_symbols(steps, form)
    chains = list(grads)  # U_0
    terms: dict[int, sp.Expr] = {}
    for p in range(1, order):
        partial = [sp.Add(*chains[:t]) for t in range(steps)]  # sum_{s<t} U_{p-1}^{(s)}
        chains = [sp.expand(hessians[t] * partial[t]) for t in range(steps)]
        terms[p + 1] = (-1) ** (p + 1) * lr ** (p + 1) * sp.Add(*chains)
    return terms


def staleness_series(steps: int, order: int, form: str = "sum") -> sp.Expr:
    """:math:`w_n - w_{big}` to ``order`` in the learning rate (the sum of :func:`staleness_terms`)."""
    return sp.Add(*staleness_terms(steps, order, form).values())


def leading_term_symbolic(form: str = "sum") -> sp.Expr:
    r"""The leading term for general n: :math:`\tilde\eta^2\sum_{j=2}^n\sum_{k=1}^{j-1} H_j S_k` (sum form).

    Mean form: :math:`\eta^2\sum_{k<j} H_j g_k` with batch-mean Hessians and gradients.
    """
    lr = learning_rate_symbol(form)
    hess = sp.IndexedBase("H")
    grad = sp.IndexedBase("S" if form == "sum" else "g")
    jj, kk = sp.symbols("j k", integer=True, positive=True)
    return lr**2 * sp.Sum(sp.Sum(hess[jj] * grad[kk], (kk, 1, jj - 1)), (jj, 2, n))


def chain_count(steps: sp.Expr = n) -> sp.Expr:
    r""":math:`A_1 = \sum_{k=1}^n (n-k) = n(n-1)/2`, the number of ordered pairs k < j."""
    return steps * (steps - 1) / 2


def chain_square_sum(steps: sp.Expr = n) -> sp.Expr:
    r""":math:`A_2 = \sum_{k=1}^n (n-k)^2 = n(n-1)(2n-1)/6`."""
    return steps * (steps - 1) * (2 * steps - 1) / 6


def weighted_batch_sum_variance(sampling: str) -> sp.Expr:
    r""":math:`\mathrm{Cov}[\sum_k (n-k) S_k]` in units of Sigma, for batches of one run of n steps.

    with: :math:`m A_2`; without: :math:`m A_2\frac{M-m}{M-1}`; reshuffle (the n batches are disjoint
    batches of one partition, nm <= M): :math:`\frac{m(M A_2 - m A_1^2)}{M-1}` from
    :math:`\mathrm{Cov}[S_k,S_l] = -m^2\Sigma/(M-1)`. For a whole epoch (n = M/m) the reshuffle value is
    :math:`m^2 n^2 (n^2-1)/(12(M-1))`, far below the independent-batch :math:`m A_2`.
    """
    sampling = check_choice("sampling", sampling, SAMPLINGS)
    if sampling == "with":
        return m * chain_square_sum()
    if sampling == "without":
        return m * chain_square_sum() * (M - m) / (M - 1)
    # M A_2 - m A_1^2 = n (n - 1) (2 M (2n - 1) - 3 m n (n - 1)) / 12
    return sp.Rational(1, 12) * m * n * (n - 1) * (2 * M * (2 * n - 1) - 3 * m * n * (n - 1)) / (M - 1)


class LeadingTermMoments(NamedTuple):
    r"""Mean and covariance over the batches of the leading term :math:`D = \eta^2\sum_{k<j}H_jS_k`.

    mean = ``mean_hg`` * H G + ``mean_c`` * C, where H is the mean per-example Hessian, G the mean gradient
    and C = (1/M) sum_i (h_i - H)(g_i - G) the Hessian-gradient covariance. covariance =
    ``covariance_hsh`` * H Sigma H, valid when every example has the same Hessian H (a quadratic with shared
    curvature, as in the noisy quadratic model). ``mean`` and ``covariance`` are the full expressions with
    non-commutative H, G, Sigma, C.
    """

    form: str
    sampling: str
    mean_hg: sp.Expr
    mean_c: sp.Expr
    covariance_hsh: sp.Expr
    mean: sp.Expr
    covariance: sp.Expr
    note: str


def leading_term_moments(form: str = "sum", sampling: str = "with") -> LeadingTermMoments:
    r"""Expectation and covariance of the leading staleness term over random batches.

    Sum form: :math:`\mathbb E[D] = \tilde\eta^2 m^2 A_1 (HG - \kappa\,C/(M-1))` with :math:`A_1 = n(n-1)/2`,
    :math:`\kappa = 1` for ``reshuffle`` (batch j and batch k are disjoint, so :math:`\mathbb E[h_a g_b]`
    runs over distinct pairs) and 0 for independent batches. With a shared Hessian,
    :math:`D = \tilde\eta^2 m H\sum_k (n-k)S_k` and :math:`\mathrm{Cov}[D] = \tilde\eta^4 m^2 H\,
    \mathrm{Cov}[\sum_k(n-k)S_k]\,H` (:func:`weighted_batch_sum_variance`). Mean form: replace
    :math:`\tilde\eta` by :math:`\eta/m` (the same update written with batch means).
    """
    check_choice("form", form, LOSS_FORMS)
    check_choice("sampling", sampling, SAMPLINGS)
    lr = eta / m if form == "mean" else eta_base
    kappa = 1 if sampling == "reshuffle" else 0
    mean_hg = lr**2 * m**2 * chain_count()
    mean_c = -kappa * lr**2 * m**2 * chain_count() / (M - 1)
    cov = lr**4 * m**2 * weighted_batch_sum_variance(sampling)
    note = (
        "n batches of one random partition (needs n*m <= M); batch j and k < j are disjoint"
        if sampling == "reshuffle"
        else "the n batches are independent draws"
    )
    return LeadingTermMoments(
        form=form,
        sampling=sampling,
        mean_hg=mean_hg,
        mean_c=mean_c,
        covariance_hsh=cov,
        mean=mean_hg * H_MAT * G_MAT + mean_c * C_MAT,
        covariance=cov * H_MAT * SIGMA_MAT * H_MAT,
        note=note + "; covariance for a Hessian shared by all examples.",
    )


# ---------------------------------------------------------------------------------------------------------
# Numbers: per-batch Hessians (n, d, d) and gradients (n, d).


def _check_arrays(hessians: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hessians, grads = np.asarray(hessians, dtype=float), np.asarray(grads, dtype=float)
    require(
        hessians.ndim == 3 and grads.ndim == 2 and hessians.shape[:2] == (grads.shape[0], grads.shape[1]),
        f"need hessians (n, d, d) and grads (n, d), got {hessians.shape} and {grads.shape}",
    )
    return hessians, grads


def small_steps_minus_big_step(hessians: np.ndarray, grads: np.ndarray, lr: float) -> np.ndarray:
    r"""Exact :math:`w_n - w_{big}` from the product form (a quadratic: the linearisation is exact).

    ``hessians`` (n, d, d) are the :math:`H_j`, ``grads`` (n, d) the :math:`S_j` (sum form, ``lr`` =
    eta_base) or the batch means with ``lr`` = eta (mean form).
    """
    hessians, grads = _check_arrays(hessians, grads)
    eye = np.eye(grads.shape[1])
    product = eye.copy()  # prod_{l > j} (I - lr H_l), built from the right end
    total = np.zeros(grads.shape[1])
    for j in range(len(grads) - 1, -1, -1):
        # w_n - w_big = -lr sum_j (prod_{l>j}(I - lr H_l) - I) S_j
        total -= lr * (product - eye) @ grads[j]
        product = product @ (eye - lr * hessians[j])
    return total


def staleness_series_numeric(hessians: np.ndarray, grads: np.ndarray, lr: float, order: int) -> np.ndarray:
    r"""The series of :math:`w_n - w_{big}` to ``order`` in ``lr`` (see :func:`staleness_terms`), (d,)."""
    hessians, grads = _check_arrays(hessians, grads)
    _check_steps_order(len(grads), order)
    chains = grads.copy()  # U_0^{(t)} = S_t, (n, d)
    total = np.zeros(grads.shape[1])
    for p in range(1, order):
        earlier = np.cumsum(chains, axis=0) - chains  # sum_{s<t} U_{p-1}^{(s)}, (n, d)
        chains = np.einsum("tab,tb->ta", hessians, earlier)  # U_p^{(t)} = H_t sum_{s<t} U_{p-1}^{(s)}
        total += (-1) ** (p + 1) * lr ** (p + 1) * chains.sum(axis=0)
    return total


def leading_term(hessians: np.ndarray, grads: np.ndarray, lr: float) -> np.ndarray:
    r""":math:`\eta^2\sum_{k<j} H_j S_k`, (d,): the second-order staleness term."""
    return staleness_series_numeric(hessians, grads, lr, order=2)


def random_quadratic(dim: int, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch Hessians (n, d, d), SPD with largest eigenvalue 1 over all batches, and gradients (n, d)."""
    require(dim >= 1 and steps >= 1, f"need dim >= 1 and steps >= 1, got dim={dim}, steps={steps}")
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(steps, dim, dim))
    hessians = a @ a.transpose(0, 2, 1) / dim + 0.01 * np.eye(dim)  # (n, d, d)
    return hessians / np.linalg.eigvalsh(hessians).max(), rng.normal(size=(steps, dim))


class StalenessPoint(NamedTuple):
    """One learning rate of :func:`staleness_curve`; norms relative to the big step's length."""

    lr: float
    lr_n_lambda_max: float  # eta * n * lambda_max: the big step against the curvature
    difference: float  # |w_n - w_big| / |w_big - w_0|
    leading: float  # |eta^2 sum_{k<j} H_j S_k| / |w_big - w_0|
    leading_remainder: float  # |w_n - w_big - leading| / |w_big - w_0|, falls like eta^3
    series_remainder: float  # |w_n - w_big - series to `order`| / |w_big - w_0|


def staleness_curve(
    hessians: np.ndarray, grads: np.ndarray, lrs: np.ndarray, order: int = 2
) -> list[StalenessPoint]:
    r"""Exact difference, leading term and series remainder over learning rates (docs/claims.md, "staleness").

    The relative difference :math:`|w_n - w_{big}|/|w_{big}-w_0|` grows like :math:`\eta n\lambda_{max}`
    while that is small: linear learning-rate scaling holds there.
    """
    hessians, grads = _check_arrays(hessians, grads)
    lam = float(np.linalg.eigvalsh(hessians).max())
    points = []
    for lr in np.asarray(lrs, dtype=float):
        big = lr * np.linalg.norm(grads.sum(axis=0))
        diff = small_steps_minus_big_step(hessians, grads, lr)
        lead = leading_term(hessians, grads, lr)
        points.append(
            StalenessPoint(
                lr=float(lr),
                lr_n_lambda_max=float(lr * len(grads) * lam),
                difference=float(np.linalg.norm(diff) / big),
                leading=float(np.linalg.norm(lead) / big),
                leading_remainder=float(np.linalg.norm(diff - lead) / big),
                series_remainder=float(
                    np.linalg.norm(diff - staleness_series_numeric(hessians, grads, lr, order)) / big
                ),
            )
        )
    return points
