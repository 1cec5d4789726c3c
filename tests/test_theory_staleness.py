"""n small steps vs one big step: series, product form and expectations against plain loops/enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

from batchscale.errors import InputError
from batchscale.theory import staleness as stl
from batchscale.theory.symbols import BY_NAME

EXACT_RTOL = 1e-10
SLOPE_TOL = 0.1  # fitted log-log slopes within this of the predicted power

# id, dimension d, steps n, seed: random quadratics with per-batch Hessians H_j (SPD) and gradients S_j
QUADRATICS = [("d2-n2", 2, 2, 0), ("d3-n3", 3, 3, 1), ("d4-n5", 4, 5, 2), ("d1-n4", 1, 4, 3)]


def quadratic(dim: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(steps, dim, dim))
    hessians = a @ a.transpose(0, 2, 1) / dim + 0.1 * np.eye(dim)  # (n, d, d), SPD
    grads = rng.normal(size=(steps, dim))  # (n, d)
    return hessians / np.linalg.eigvalsh(hessians).max(), grads  # largest eigenvalue 1


def loop_difference(hessians, grads, lr):
    """Plain step-by-step: n small steps on the quadratic minus one big step, in displacement form."""
    d = np.zeros(grads.shape[1])  # w_j - w_0
    for h, s in zip(hessians, grads, strict=True):
        d = d - lr * (s + h @ d)  # gradient of batch j at w_0 + d
    return d - (-lr * grads.sum(axis=0))  # w_n - w_big


@pytest.mark.parametrize("dim, steps, seed", [q[1:] for q in QUADRATICS], ids=[q[0] for q in QUADRATICS])
def test_product_form_equals_the_loop(dim, steps, seed):
    hessians, grads = quadratic(dim, steps, seed)
    for lr in (0.01, 0.3, 1.5):
        expected = loop_difference(hessians, grads, lr)
        np.testing.assert_allclose(
            stl.small_steps_minus_big_step(hessians, grads, lr), expected, rtol=EXACT_RTOL
        )
        # the series terminates at power n: the full series is exact
        series = stl.staleness_series_numeric(hessians, grads, lr, order=steps + 1)
        np.testing.assert_allclose(series, expected, rtol=EXACT_RTOL, atol=1e-14)


def fitted_slope(lrs: np.ndarray, values: np.ndarray) -> float:
    return float(np.polyfit(np.log(lrs), np.log(values), 1)[0])


CUBIC = [q for q in QUADRATICS if q[2] >= 3]  # n = 2 has no third-order term: the remainder is roundoff


@pytest.mark.parametrize("dim, steps, seed", [q[1:] for q in CUBIC], ids=[q[0] for q in CUBIC])
def test_leading_term_ratio_tends_to_one_with_cubic_remainder(dim, steps, seed):
    hessians, grads = quadratic(dim, steps, seed)
    lrs = np.geomspace(1e-2, 1e-4, 7)
    diffs = [loop_difference(hessians, grads, lr) for lr in lrs]
    leads = [stl.leading_term(hessians, grads, lr) for lr in lrs]
    remainders = np.array([np.linalg.norm(d - q) for d, q in zip(diffs, leads, strict=True)])
    ratios = np.array([d @ q / (q @ q) for d, q in zip(diffs, leads, strict=True)])
    assert abs(ratios[-1] - 1) < 1e-3
    assert abs(fitted_slope(lrs, remainders) - 3) < SLOPE_TOL
    assert abs(fitted_slope(lrs, np.abs(ratios - 1)) - 1) < SLOPE_TOL
    # the leading term itself is quadratic in the learning rate
    assert abs(fitted_slope(lrs, np.array([np.linalg.norm(q) for q in leads])) - 2) < 1e-9


@pytest.mark.parametrize("order", [2, 3, 4])
def test_series_remainder_falls_like_the_next_power(order):
    hessians, grads = quadratic(3, 6, 4)
    lrs = np.geomspace(3e-2, 1e-3, 6)
    remainders = np.array(
        [
            np.linalg.norm(
                loop_difference(hessians, grads, lr)
                - stl.staleness_series_numeric(hessians, grads, lr, order)
            )
            for lr in lrs
        ]
    )
    assert abs(fitted_slope(lrs, remainders) - (order + 1)) < SLOPE_TOL


def symbolic_loop(steps: int, form: str) -> sp.Expr:
    """The n small steps written with non-commutative symbols, minus the big step, expanded."""
    lr = BY_NAME["eta_base"] if form == "sum" else BY_NAME["eta"]
    hessians, grads = stl.batch_symbols(steps, form)
    d = sp.Integer(0)
    for h, s in zip(hessians, grads, strict=True):
        d = sp.expand(d - lr * (s + h * d))
    return sp.expand(d + lr * sp.Add(*grads)), lr


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
@pytest.mark.parametrize("form", ["sum", "mean"])
def test_symbolic_series_and_product_form_equal_the_symbolic_loop(steps, form):
    expanded, lr = symbolic_loop(steps, form)
    terms = stl.staleness_terms(steps, steps + 2, form)
    for power, term in terms.items():
        assert sp.expand(term - lr**power * expanded.coeff(lr, power)) == 0, power
    assert expanded.coeff(lr, 1) == 0
    assert sp.expand(stl.staleness_series(steps, steps + 2, form) - expanded) == 0
    assert sp.expand(stl.staleness_exact_symbolic(steps, form) - expanded) == 0


def test_leading_term_symbolic_matches_the_pairs_k_before_j():
    expanded, lr = symbolic_loop(4, "sum")
    hessians, grads = stl.batch_symbols(4, "sum")
    pairs = sp.Add(*(hessians[j] * grads[k] for j in range(4) for k in range(j)))
    assert sp.expand(expanded.coeff(lr, 2) - pairs) == 0
    # the general-n Sum, written out at n = 4, runs over exactly those pairs (j, k), k < j
    (total,) = stl.leading_term_symbolic("sum").atoms(sp.Sum)
    (k, k_lo, k_hi), (j, j_lo, j_hi) = total.limits
    n4 = {BY_NAME["n"]: 4}
    pairs_of_sum = {
        (jv, kv)
        for jv in range(int(j_lo), int(j_hi.subs(n4)) + 1)
        for kv in range(int(k_lo), int(k_hi.subs({j: jv})) + 1)
    }
    assert pairs_of_sum == {(jv, kv) for jv in range(1, 5) for kv in range(1, jv)}
    assert str(total.function) == "H[j]*S[k]"


# ---- expectation over batches, by enumeration ---------------------------------------------------------

LR = 0.5


def batch_sequences(size: int, m: int, steps: int, sampling: str):
    """Every equally likely sequence of ``steps`` batches (tuples of example indices)."""
    if sampling == "with":
        one = list(itertools.product(range(size), repeat=m))
        return list(itertools.product(one, repeat=steps))
    if sampling == "without":
        one = list(itertools.combinations(range(size), m))
        return list(itertools.product(one, repeat=steps))
    perms = itertools.permutations(range(size))
    return [tuple(p[j * m : (j + 1) * m] for j in range(steps)) for p in perms]


def leading_by_enumeration(g, h, m, steps, sampling, form):
    """Mean and covariance of D = lr^2 sum_{k<j} H_j S_k over every batch sequence (double loop)."""
    values = []
    for seq in batch_sequences(len(g), m, steps, sampling):
        sums = [g[list(b)].sum(axis=0) for b in seq]
        hess = [h[list(b)].sum(axis=0) for b in seq]
        if form == "mean":
            sums, hess = [s / m for s in sums], [x / m for x in hess]
        values.append(sum(LR**2 * hess[j] @ sums[k] for j in range(steps) for k in range(j)))
    values = np.array(values)
    centred = values - values.mean(axis=0)
    return values.mean(axis=0), centred.T @ centred / len(values)


def coefficient(expr: sp.Expr, size: int, m: int, steps: int) -> float:
    numbers = {"M": size, "m": m, "n": steps, "eta": LR, "eta_base": LR}
    return float(expr.subs({BY_NAME[k]: v for k, v in numbers.items()}))


# id, M, m, n (reshuffle needs n*m <= M)
ENUMERATIONS = [("M4-m2-n2", 4, 2, 2), ("M5-m1-n3", 5, 1, 3), ("M5-m2-n2", 5, 2, 2), ("M6-m1-n4", 6, 1, 4)]


@pytest.mark.parametrize("form", ["sum", "mean"])
@pytest.mark.parametrize("sampling", ["with", "without", "reshuffle"])
@pytest.mark.parametrize("case", ENUMERATIONS, ids=[e[0] for e in ENUMERATIONS])
def test_expectation_of_leading_term_by_enumeration(case, sampling, form):
    _, size, m, steps = case
    rng = np.random.default_rng(size * 10 + m)
    g = rng.normal(size=(size, 2)) + 0.5  # (M, d) per-example gradients
    a = rng.normal(size=(size, 2, 2))
    h = a + a.transpose(0, 2, 1)  # (M, d, d) per-example Hessians, all different
    mean_g, mean_h = g.mean(axis=0), h.mean(axis=0)
    c = np.einsum("iab,ib->a", h - mean_h, g - mean_g) / size  # Hessian-gradient covariance (d,)
    r = stl.leading_term_moments(form, sampling)
    predicted = (
        coefficient(r.mean_hg, size, m, steps) * mean_h @ mean_g + coefficient(r.mean_c, size, m, steps) * c
    )
    mean, _ = leading_by_enumeration(g, h, m, steps, sampling, form)
    np.testing.assert_allclose(predicted, mean, rtol=EXACT_RTOL, atol=1e-12)

    shared = np.broadcast_to(mean_h, h.shape)  # every example with the same Hessian
    _, cov = leading_by_enumeration(g, shared, m, steps, sampling, form)
    sigma = (g - mean_g).T @ (g - mean_g) / size
    expected = coefficient(r.covariance_hsh, size, m, steps) * mean_h @ sigma @ mean_h
    np.testing.assert_allclose(expected, cov, rtol=EXACT_RTOL, atol=1e-12)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: stl.staleness_terms(3, 0), "order must be a positive integer, got 0"),
        (lambda: stl.staleness_terms(0, 2), "steps must be a positive integer, got 0"),
        (lambda: stl.staleness_terms(60, 6), "too many to write"),
        (lambda: stl.staleness_exact_symbolic(1000), r"499500 factors .* steps <= 63\)"),
        (lambda: stl.leading_term_moments("avg", "with"), "unknown form 'avg'"),
        (lambda: stl.small_steps_minus_big_step(np.zeros((2, 2)), np.zeros((2, 2)), 0.1), "need hessians"),
    ],
    ids=["order-0", "steps-0", "too-many-terms", "too-many-factors", "form", "shapes"],
)
def test_bad_input(call, fragment):
    with pytest.raises(InputError, match=fragment):
        call()
