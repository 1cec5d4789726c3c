"""Update moments: the symbolic results against brute-force enumeration and Monte Carlo.

Enumeration is exact: every ordered (and, as a cross-check, unordered with multinomial weights) draw with
replacement, every m-subset without replacement, every permutation (hence every ordered partition) for
reshuffle; per epoch the joint outcome of all the epoch's batches is enumerated too.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import sympy as sp

from batchscale.errors import InputError
from batchscale.theory import moments as mo
from batchscale.theory.symbols import BY_NAME
from batchscale.vocabulary import LOSS_FORMS, PERS, SAMPLINGS

EXACT_TOL = 1e-10
MC_DRAWS = 200_000
MC_Z = 5.0  # allowed deviation in Monte Carlo standard errors (a false alarm about once in 10^6 checks)
MC_FLOOR = 1e-9  # absolute slack for deterministic results: float rounding in sums of MC_DRAWS terms
LR = 0.3

# id, dataset size M, dimension d, batch size m (m divides M so the symbolic per-epoch result applies)
DATASETS = [
    ("M4-d2-m1", 4, 2, 1),
    ("M4-d2-m2", 4, 2, 2),
    ("M4-d3-m4", 4, 3, 4),
    ("M6-d3-m3", 6, 3, 3),
    ("M8-d2-m2", 8, 2, 2),
]
CASES = [
    pytest.param(ds, form, sampling, per, id=f"{ds[0]}-{form}-{sampling}-{per}")
    for ds in DATASETS
    for form in LOSS_FORMS
    for sampling in SAMPLINGS
    for per in PERS
]


@functools.cache
def grads_of(size: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(1000 * size + dim)
    return rng.normal(size=(size, dim)) + rng.normal(size=dim)  # (M, d), nonzero mean


def moments_of(values: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and covariance of a discrete distribution: values (K, d), probabilities (K,)."""
    assert math.isclose(probs.sum(), 1.0, rel_tol=1e-12)
    mean = probs @ values
    centred = values - mean
    return mean, (centred * probs[:, None]).T @ centred


def scale(form: str, size: int) -> float:
    return LR / size if form == "mean" else LR


@functools.cache
def batch_sums(size: int, dim: int, m: int, sampling: str, ordered: bool = True):
    """Every batch-sum outcome of one step and its probability: (K, d), (K,)."""
    grads = grads_of(size, dim)
    if sampling == "with" and ordered:
        draws = list(itertools.product(range(size), repeat=m))
        probs = np.full(len(draws), float(size) ** -m)
    elif sampling == "with":
        draws = list(itertools.combinations_with_replacement(range(size), m))
        weights = [math.factorial(m) / math.prod(math.factorial(b.count(i)) for i in set(b)) for b in draws]
        probs = np.array(weights) / float(size) ** m
    elif sampling == "without":
        draws = list(itertools.combinations(range(size), m))
        probs = np.full(len(draws), 1.0 / len(draws))
    else:  # reshuffle: any batch of any permutation's partition, all equally likely
        perms = list(itertools.permutations(range(size)))
        draws = [p[j : j + m] for p in perms for j in range(0, size - size % m, m)]
        probs = np.full(len(draws), 1.0 / len(draws))
    return np.array([grads[list(b)].sum(axis=0) for b in draws]), probs


def convolve(a, b):
    """Distribution of the sum of two independent discrete vectors."""
    (va, pa), (vb, pb) = a, b
    return (va[:, None, :] + vb[None, :, :]).reshape(-1, va.shape[1]), np.outer(pa, pb).ravel()


def epoch_updates(size, dim, m, form, sampling, drop_last=False):
    """Every outcome of one epoch's summed update (gradients held at w) and its probability."""
    grads = grads_of(size, dim)
    sizes = [m] * (size // m) + ([size % m] if size % m and not drop_last else [])
    if sampling == "reshuffle":
        perms = np.array(list(itertools.permutations(range(size))))  # (P, M), each equally likely
        total = np.zeros((len(perms), dim))
        start = 0
        for b in sizes:
            total -= scale(form, b) * grads[perms[:, start : start + b]].sum(axis=1)
            start += b
        return total, np.full(len(perms), 1.0 / len(perms))
    dist = (np.zeros((1, dim)), np.ones(1))
    for b in sizes:
        sums, probs = batch_sums(size, dim, b, sampling, ordered=False)
        dist = convolve(dist, (-scale(form, b) * sums, probs))
    return dist


def enumerated(size, dim, m, form, sampling, per):
    if per == "epoch":
        return moments_of(*epoch_updates(size, dim, m, form, sampling))
    sums, probs = batch_sums(size, dim, m, sampling)
    mean, cov = moments_of(-scale(form, m) * sums, probs)
    return (mean, cov) if per == "step" else (mean / m, cov / m)


def evaluate(expr: sp.Expr, size: int, m: int, mean_grad, grad_cov) -> tuple:
    """A symbolic moment at numbers: its coefficient (linear in G or Sigma) times the vector/matrix."""
    numbers = {"M": size, "m": m, "eta": LR, "eta_base": LR, "G": 1, "Sigma": 1}
    coefficient = float(expr.subs({BY_NAME[k]: v for k, v in numbers.items()}))
    return coefficient * (mean_grad if expr.has(BY_NAME["G"]) else grad_cov)


@pytest.mark.parametrize("ds, form, sampling, per", CASES)
def test_symbolic_moments_equal_enumeration(ds, form, sampling, per):
    _, size, dim, m = ds
    mean_grad, grad_cov = mo.gradient_statistics(grads_of(size, dim))
    mean, cov = enumerated(size, dim, m, form, sampling, per)
    result = mo.update_moments(form, sampling, per)
    np.testing.assert_allclose(evaluate(result.mean, size, m, mean_grad, grad_cov), mean, atol=EXACT_TOL)
    expected_cov = evaluate(result.covariance, size, m, mean_grad, grad_cov) if result.covariance != 0 else 0
    np.testing.assert_allclose(expected_cov, cov, atol=EXACT_TOL)
    numeric = mo.update_moments_numeric(mean_grad, grad_cov, size, m, LR, form, sampling, per)
    np.testing.assert_allclose(numeric.mean, mean, atol=EXACT_TOL)
    np.testing.assert_allclose(numeric.covariance, cov, atol=EXACT_TOL)


def test_ordered_and_unordered_draws_with_replacement_agree():
    for size, m in [(4, 3), (5, 2)]:
        a = moments_of(*batch_sums(size, 2, m, "with", ordered=True))
        b = moments_of(*batch_sums(size, 2, m, "with", ordered=False))
        np.testing.assert_allclose(a[0], b[0], atol=EXACT_TOL)
        np.testing.assert_allclose(a[1], b[1], atol=EXACT_TOL)


# id, M, d, m: the last batch is partial (r = M mod m > 0)
PARTIAL = [("M5-d2-m2", 5, 2, 2), ("M7-d2-m3", 7, 2, 3), ("M7-d3-m5", 7, 3, 5)]


@pytest.mark.parametrize("drop_last", [False, True], ids=["keep-last", "drop-last"])
@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("form", LOSS_FORMS)
@pytest.mark.parametrize("ds", PARTIAL, ids=[p[0] for p in PARTIAL])
def test_numeric_epoch_with_partial_last_batch_equals_enumeration(ds, form, sampling, drop_last):
    _, size, dim, m = ds
    mean_grad, grad_cov = mo.gradient_statistics(grads_of(size, dim))
    mean, cov = moments_of(*epoch_updates(size, dim, m, form, sampling, drop_last))
    numeric = mo.update_moments_numeric(mean_grad, grad_cov, size, m, LR, form, sampling, "epoch", drop_last)
    np.testing.assert_allclose(numeric.mean, mean, atol=EXACT_TOL)
    np.testing.assert_allclose(numeric.covariance, cov, atol=EXACT_TOL)
    exact = mo.update_moments_at(form, sampling, "epoch", size, m, drop_last)  # rationals times G, Sigma
    np.testing.assert_allclose(evaluate(exact.mean, size, m, mean_grad, grad_cov), mean, atol=EXACT_TOL)
    expected_cov = evaluate(exact.covariance, size, m, mean_grad, grad_cov) if exact.covariance != 0 else 0
    np.testing.assert_allclose(expected_cov, cov, atol=EXACT_TOL)


def test_epoch_moments_at_a_huge_dataset_are_exact_and_fast():
    """M = 10^9 + 3, m = 10: 10^8 full batches and one of 3, counted rather than listed."""
    size, m = 10**9 + 3, 10
    full, last = size // m, size % m
    lr = BY_NAME["eta"]
    exact = mo.update_moments_at("mean", "without", "epoch", size, m)
    # by hand: each step -eta*G (mean form); Cov of a b-subset's mean: eta^2 Sigma/b * (M-b)/(M-1)
    expected_cov = sum(
        count * lr**2 * BY_NAME["Sigma"] * sp.Rational(size - b, b * (size - 1))
        for b, count in ((m, full), (last, 1))
    )
    assert exact.mean == -(full + 1) * lr * BY_NAME["G"]
    assert sp.simplify(exact.covariance - expected_cov) == 0


def test_reshuffle_epoch_is_deterministic_when_m_divides_M():
    for form in LOSS_FORMS:
        assert mo.update_covariance(form, "reshuffle", "epoch") == 0
    values, _ = epoch_updates(6, 2, 3, "mean", "reshuffle")
    assert np.ptp(values, axis=0).max() < 1e-12


def test_cross_batch_covariance_by_enumeration():
    size, dim, m = 6, 2, 2
    grads = grads_of(size, dim)
    perms = np.array(list(itertools.permutations(range(size))))
    first, second = grads[perms[:, :m]].sum(axis=1), grads[perms[:, m : 2 * m]].sum(axis=1)
    cross = (first - first.mean(0)).T @ (second - second.mean(0)) / len(perms)
    _, grad_cov = mo.gradient_statistics(grads)
    expected = evaluate(mo.batch_cross_covariance("reshuffle"), size, m, None, grad_cov)
    np.testing.assert_allclose(cross, expected, atol=EXACT_TOL)


def test_limits_match_direct_substitution_and_known_values():
    s = BY_NAME
    checks = {
        ("mean", "without", "step"): ("eta**2*Sigma", "0", "eta**2*Sigma/m"),
        ("mean", "with", "step"): ("eta**2*Sigma", "eta**2*Sigma/M", "eta**2*Sigma/m"),
        ("sum", "with", "step"): ("eta_base**2*Sigma", "eta_base**2*M*Sigma", "eta_base**2*m*Sigma"),
        ("sum", "without", "epoch"): ("eta_base**2*M*Sigma", "0", "eta_base**2*M*Sigma"),
        ("mean", "reshuffle", "epoch"): ("0", "0", "0"),
    }
    for (form, sampling, per), (m1, mM, minf) in checks.items():
        r = mo.update_moments(form, sampling, per)
        for got, want in [(r.covariance_m1, m1), (r.covariance_mM, mM), (r.covariance_Minf, minf)]:
            assert sp.simplify(got - sp.sympify(want, locals=s)) == 0, (form, sampling, per, got, want)
    # M -> oo of the finite-population factor, by sympy's own limit
    cov = mo.update_covariance("mean", "without", "step")
    assert sp.simplify(sp.limit(cov, s["M"], sp.oo) - mo.limit_infinite_data(cov)) == 0


# ---- Monte Carlo: the per-example and per-epoch normalisations -------------------------------------


def assert_mc_close(samples: np.ndarray, mean: np.ndarray, cov: np.ndarray, scale_by: float = 1.0):
    """Sample mean/covariance of ``samples`` (R, d), divided by ``scale_by``, within MC_Z standard errors."""
    n = len(samples)
    centred = samples - samples.mean(axis=0)
    se_mean = samples.std(axis=0) / math.sqrt(n)
    products = centred[:, :, None] * centred[:, None, :]  # (R, d, d)
    se_cov = products.std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(samples.mean(0) - mean * scale_by) <= MC_Z * se_mean + MC_FLOOR)
    assert np.all(np.abs(products.mean(0) - cov * scale_by) <= MC_Z * se_cov + MC_FLOOR)


def simulate_batches(rng, size: int, m: int, steps: int, sampling: str, draws: int) -> np.ndarray:
    """Example indices (draws, steps, m) of ``steps`` consecutive batches."""
    if sampling == "with":
        return rng.integers(0, size, (draws, steps, m))
    if sampling == "without":
        return rng.random((draws, steps, size)).argsort(axis=-1)[..., :m]
    perms = rng.random((draws, size)).argsort(axis=-1)  # one random partition per draw
    return perms[:, : steps * m].reshape(draws, steps, m)


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("form", LOSS_FORMS)
def test_per_example_moments_monte_carlo(form, sampling):
    """N examples of steps accumulate N x (per-example moments) for independent steps."""
    size, dim, m = 6, 2, 2
    steps = 3 if sampling != "reshuffle" else 1  # reshuffle: one batch (its steps are correlated)
    rng = np.random.default_rng(7)
    grads = grads_of(size, dim)
    idx = simulate_batches(rng, size, m, steps, sampling, MC_DRAWS)
    totals = -scale(form, m) * grads[idx].sum(axis=(1, 2))  # (R, d): accumulated update
    r = mo.update_moments(form, sampling, "example")
    mean_grad, grad_cov = mo.gradient_statistics(grads)
    mean, cov = (evaluate(e, size, m, mean_grad, grad_cov) for e in (r.mean, r.covariance))
    assert_mc_close(totals, mean, cov, scale_by=steps * m)


@pytest.mark.parametrize(
    "size, m, drop_last", [(6, 2, False), (7, 3, False), (7, 3, True)], ids=["M6-m2", "M7-m3", "M7-m3-drop"]
)
@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("form", LOSS_FORMS)
def test_per_epoch_moments_monte_carlo(form, sampling, size, m, drop_last):
    dim = 2
    rng = np.random.default_rng(11)
    grads = grads_of(size, dim)
    sizes = [m] * (size // m) + ([size % m] if size % m and not drop_last else [])
    if sampling == "reshuffle":
        perms = rng.random((MC_DRAWS, size)).argsort(axis=-1)
        starts = np.cumsum([0, *sizes])
        parts = [perms[:, a : a + b] for a, b in zip(starts, sizes, strict=False)]
    else:
        parts = [simulate_batches(rng, size, b, 1, sampling, MC_DRAWS)[:, 0] for b in sizes]
    totals = sum(-scale(form, p.shape[1]) * grads[p].sum(axis=1) for p in parts)  # (R, d)
    mean_grad, grad_cov = mo.gradient_statistics(grads)
    expected = mo.update_moments_numeric(mean_grad, grad_cov, size, m, LR, form, sampling, "epoch", drop_last)
    assert_mc_close(totals, expected.mean, expected.covariance)
    if size % m == 0:
        r = mo.update_moments(form, sampling, "epoch")
        np.testing.assert_allclose(evaluate(r.mean, size, m, mean_grad, grad_cov), expected.mean, atol=1e-12)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: mo.update_moments("avg", "with", "step"), "unknown form 'avg'"),
        (lambda: mo.update_moments("mean", "replace", "step"), "unknown sampling 'replace'"),
        (lambda: mo.update_moments("mean", "with", "batch"), "unknown per 'batch'"),
        (lambda: mo.update_moments_numeric(np.zeros(2), np.eye(2), 4, 5, 0.1, sampling="without"), "> data"),
        (lambda: mo.update_moments_numeric(np.zeros(2), np.eye(2), 4, 0, 0.1), "batch_size must be >= 1"),
        (lambda: mo.update_moments_numeric(np.zeros(2), np.eye(2), 0, 1, 0.1), "dataset_size must be >= 1"),
    ],
    ids=["form", "sampling", "per", "m>M-without", "m=0", "M=0"],
)
def test_bad_input_is_one_line_input_error(call, fragment):
    with pytest.raises(InputError, match=fragment) as info:
        call()
    assert "\n" not in str(info.value)


def test_matrix_form_of_the_moments_evaluates_like_the_coefficients():
    size, dim, m = 6, 3, 3
    mean_grad, grad_cov = mo.gradient_statistics(grads_of(size, dim))
    numbers = {BY_NAME["M"]: size, BY_NAME["m"]: m, BY_NAME["eta"]: LR}
    for sampling in SAMPLINGS:
        r = mo.update_moments("mean", sampling, "step")
        for expr, value in ((r.mean, mean_grad[:, None]), (r.covariance, grad_cov)):
            matrix = mo.as_matrix_expression(expr, dim)
            (symbol,) = matrix.atoms(sp.MatrixSymbol)
            evaluated = matrix.xreplace({symbol: sp.ImmutableMatrix(value)}).subs(numbers).doit()
            coefficient = float(expr.subs(numbers).subs({BY_NAME["G"]: 1, BY_NAME["Sigma"]: 1}))
            np.testing.assert_allclose(np.array(evaluated, dtype=float), coefficient * value, atol=EXACT_TOL)
    assert mo.as_matrix_expression(mo.update_covariance("sum", "reshuffle", "epoch"), 2) == sp.ZeroMatrix(
        2, 2
    )


MC_DRAWS_SLOW = 1_000_000


@pytest.mark.slow
@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("form", LOSS_FORMS)
def test_per_epoch_moments_monte_carlo_heavy(form, sampling):
    """The per-epoch check at M = 8, m = 3 (partial last batch of 2) with MC_DRAWS_SLOW draws."""
    size, m, dim = 8, 3, 3
    rng = np.random.default_rng(13)
    grads = grads_of(size, dim)
    sizes = [3, 3, 2]
    if sampling == "reshuffle":
        perms = rng.random((MC_DRAWS_SLOW, size)).argsort(axis=-1)
        parts = [perms[:, 0:3], perms[:, 3:6], perms[:, 6:8]]
    else:
        parts = [simulate_batches(rng, size, b, 1, sampling, MC_DRAWS_SLOW)[:, 0] for b in sizes]
    totals = sum(-scale(form, p.shape[1]) * grads[p].sum(axis=1) for p in parts)  # (R, d)
    mean_grad, grad_cov = mo.gradient_statistics(grads)
    expected = mo.update_moments_numeric(mean_grad, grad_cov, size, m, LR, form, sampling, "epoch")
    assert_mc_close(totals, expected.mean, expected.covariance)
