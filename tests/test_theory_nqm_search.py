"""NQM steps-to-target search internals against independent computations.

Independent twins: ``math.sin``/``math.cos`` (libm, correctly reduced) for the fast sine; the exact closed
form :meth:`_Model.evaluate` for the fast evaluation with error bounds; a plain step-by-step loop of the
heavy-ball second-moment recursion (extended precision) for the whole search; a deterministic loop of the
noise-free iteration for the analytic decay bound; the hint-free search (itself checked against the loop)
for search hints; exact steps of every configuration of a grid for the pair screening.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchscale.theory import nqm
from batchscale.theory.spectra import make_spectrum, power_law_spectrum

TIE_RTOL = 1e-9  # loop losses this close to the target are left out of exact step comparisons
ROUNDING = 1e-12  # relative slack for float64 rounding between two evaluations of the same closed form
PROBLEM = power_law_spectrum(1000, 1.0, bins=30)


def log_uniform(rng, lo, hi, size):
    return 10.0 ** rng.uniform(np.log10(lo), np.log10(hi), size)


def random_momenta(rng, size):
    """A mix of plain SGD (0), moderate momenta and momenta close to 1."""
    kind = rng.integers(0, 3, size)
    return np.where(
        kind == 0,
        0.0,
        np.where(kind == 1, rng.uniform(0.0, 0.95, size), 1 - log_uniform(rng, 1e-3, 0.1, size)),
    )


def momentum_model(spectrum, batch, lr, beta):
    return nqm.build_model(spectrum, nqm.model._configs(batch, lr, beta, 0.0))


# --------------------------------------------------------------------------------------------------------
# 1. fast_sin_cos against libm
# --------------------------------------------------------------------------------------------------------


def libm_sin_cos(x):
    return np.array([math.sin(v) for v in x]), np.array([math.cos(v) for v in x])


def fast_sine_arguments(kind, rng):
    n = 20_000
    if kind == "near-half-pi":  # near multiples of pi/2 (zeros of sin or cos), k up to the limit
        k = np.concatenate([np.arange(-50, 50), rng.integers(-(2**28) // 2, 2**28 // 2, n)])
        return k * (math.pi / 2) + rng.choice([0.0, 1e-12, -1e-9, 3e-7, -1e-4], k.size)
    if kind == "near-two-pi":
        k = np.concatenate([np.arange(-50, 50), rng.integers(-(2**28) // 7, 2**28 // 7, n)])
        return k * (2 * math.pi) + rng.choice([0.0, 1e-15, -1e-10, 2e-7, -3e-3], k.size)
    scale = float(kind)
    return rng.uniform(-1.0, 1.0, n) * scale


SINE_KINDS = ["1e-10", "1e-3", "1", "10", "1e3", "1e6", "1e8", "2.6e8", "near-half-pi", "near-two-pi"]


@pytest.mark.parametrize("kind", SINE_KINDS)
def test_fast_sin_cos_is_within_sine_error_of_libm(kind):
    """Independent: math.sin / math.cos (libm, exact argument reduction) on random arguments."""
    x = fast_sine_arguments(kind, np.random.default_rng(SINE_KINDS.index(kind)))
    assert np.all(np.abs(x) < nqm.FAST_SINE_LIMIT)
    sine, cosine = nqm.fast_sin_cos(x)
    ref_sin, ref_cos = libm_sin_cos(x)
    assert sine.dtype == cosine.dtype == np.float64 and sine.shape == x.shape
    assert np.max(np.abs(sine - ref_sin)) <= nqm.SINE_ERROR
    assert np.max(np.abs(cosine - ref_cos)) <= nqm.SINE_ERROR


# --------------------------------------------------------------------------------------------------------
# 2. evaluate_bounds against the exact evaluate
# --------------------------------------------------------------------------------------------------------


def bounds_case(name, rng):
    """(spectrum, batch, lr, beta, t) with t (N,) steps; momentum settings of the kind named."""
    n = 120
    batch = np.rint(log_uniform(rng, 1, 1e6, n))
    if name == "oscillating-mix":  # complex roots on the stiff bins, real roots on the flat ones
        beta = rng.uniform(0.3, 0.995, n)
        lr = log_uniform(rng, 1e-2, 2 * (1 + beta) * 0.99, n)
        t = np.rint(log_uniform(rng, 1, 1e5, n))
        return PROBLEM, batch, lr, beta, t
    if name == "near-double-roots":  # eta h within 1e-12 .. 1e-2 of (1 - sqrt(beta))^2, both sides
        beta0 = 0.9
        eps = np.concatenate([[0.0], 10.0 ** -np.arange(2, 13), -(10.0 ** -np.arange(2, 13))])
        spectrum = make_spectrum(
            (1 - math.sqrt(beta0)) ** 2 * (1 + eps), counts=rng.integers(1, 50, eps.size)
        )
        beta = rng.choice([0.5, 0.9, 0.99], n)
        lr = (
            (1 - np.sqrt(beta)) ** 2
            / (1 - math.sqrt(beta0)) ** 2
            * (1 + rng.choice([0.0, 1e-13, -1e-9, 1e-6], n))
        )
        t = np.rint(log_uniform(rng, 1, 3e4, n))
        return spectrum, batch, lr, beta, t
    beta = np.full(n, 0.999)
    lr = log_uniform(rng, 1e-4, 3.9, n)
    if name == "high-momentum-small-t":  # transient growth of a_t: |a_t| up to ~ t before beta^t decays
        return PROBLEM, batch, lr, beta, rng.integers(0, 60, n).astype(float)
    if name == "high-momentum-large-t":
        return PROBLEM, batch, lr, beta, np.rint(log_uniform(rng, 1e3, 3e6, n))
    raise AssertionError(name)


BOUNDS_CASES = ["oscillating-mix", "near-double-roots", "high-momentum-small-t", "high-momentum-large-t"]


def assert_within_bounds(fast, exact):
    loss, error, noise_lower, monotone, signal_lower = fast
    loss_x, noise_x, monotone_x, signal_x = exact
    slack = ROUNDING * np.abs(loss_x)
    assert np.all(error >= 0)
    assert np.all(np.abs(loss - loss_x) <= error + slack)
    assert np.all(noise_lower <= noise_x + slack)
    assert np.all(signal_lower >= 0)
    assert np.all(signal_lower <= signal_x * (1 + ROUNDING) + 1e-300)
    np.testing.assert_array_equal(monotone, monotone_x)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", BOUNDS_CASES)
def test_fast_evaluation_error_bounds_hold(name, seed):
    """Independent: the exact closed form (np.sin, no error bound) at the same steps."""
    spectrum, batch, lr, beta, t = bounds_case(name, np.random.default_rng(seed))
    model = momentum_model(spectrum, batch, lr, beta)
    assert model.stable.all() and model.seq.oscillating.any()
    fast = model.evaluate_bounds(t)
    assert_within_bounds(fast, model.evaluate(t))
    if name != "high-momentum-small-t":  # the fast sines were used (else the claim is vacuous)
        assert np.any(fast[1] > 0)


@pytest.mark.parametrize("name", BOUNDS_CASES)
def test_fast_evaluation_of_points_equals_column_by_column(name):
    """(N, M) steps give each column's (N,) evaluation, and the bounds hold there too."""
    rng = np.random.default_rng(7)
    spectrum, batch, lr, beta, t = bounds_case(name, rng)
    model = momentum_model(spectrum, batch, lr, beta)
    points = np.sort(t[:, None] + rng.integers(0, 40, (t.size, 5)), axis=1).astype(float)
    together = model.evaluate_bounds(points)
    assert_within_bounds(together, model.evaluate(points))
    for j in range(points.shape[1]):
        alone = model.evaluate_bounds(points[:, j])
        for got, want in zip(together, alone, strict=True):
            np.testing.assert_array_equal(got[:, j], want)


def test_fast_evaluation_of_sgd_is_exact():
    """Plain SGD has no sines: error 0 and exactly the values of evaluate."""
    rng = np.random.default_rng(3)
    n = 50
    model = momentum_model(PROBLEM, log_uniform(rng, 1, 1e6, n), log_uniform(rng, 1e-3, 1.99, n), 0.0)
    assert model.family == "sgd"
    for t in (np.rint(log_uniform(rng, 1, 1e6, n)), np.rint(log_uniform(rng, 1, 1e4, (n, 4)))):
        loss, error, noise, monotone, signal = model.evaluate_bounds(t)
        exact = model.evaluate(t)
        np.testing.assert_array_equal(error, 0.0)
        for got, want in zip((loss, noise, monotone, signal), exact, strict=True):
            np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------------------------------------
# 3. the whole search against a plain loop
# --------------------------------------------------------------------------------------------------------


def loop_losses(spectrum, batch, lr, beta, steps):
    """Expected loss at t = 0..steps, (N, steps + 1), by a plain loop (long double) over steps.

    Per coordinate x_{t+1} = x_t - eta (h x_t + xi_t) + beta (x_t - x_{t-1}), Var xi = c / B, x_{-1} = x_0:
    the moments (E[x_t^2], E[x_t x_{t-1}], E[x_{t-1}^2]) map to
    (A^2 m00 - 2 A beta m01 + beta^2 m11 + eta^2 c / B, A m00 - beta m01, m00) with A = 1 - eta h + beta.
    """
    f = np.longdouble
    h, c = spectrum.curvature.astype(f), spectrum.noise.astype(f)
    weight = (0.5 * spectrum.counts * spectrum.curvature).astype(f)
    lr, beta, batch = (np.asarray(v, dtype=f)[:, None] for v in (lr, beta, batch))
    a = 1 - lr * h + beta
    kick = lr * lr * c / batch
    m00 = np.broadcast_to(spectrum.init_sq.astype(f), a.shape).copy()
    m01, m11 = m00.copy(), m00.copy()
    out = np.empty((a.shape[0], steps + 1), dtype=f)
    with np.errstate(over="ignore", invalid="ignore"):  # divergent rows blow up; they are not compared
        for t in range(steps + 1):
            out[:, t] = m00 @ weight
            m00, m01, m11 = (
                a * a * m00 - 2 * a * beta * m01 + beta * beta * m11 + kick,
                a * m00 - beta * m01,
                m00,
            )
    out[~(out < 1e300)] = np.inf  # overflowed or nan (divergent rows)
    return out.astype(float)


def divergent(spectrum, lr, beta):
    """Spectral radius of the per-coordinate map [[A, -beta], [1, 0]] at least 1 (numpy eigenvalues)."""
    a = 1 - lr[:, None] * spectrum.curvature + beta[:, None]
    maps = np.zeros(a.shape + (2, 2))
    maps[..., 0, 0], maps[..., 0, 1], maps[..., 1, 0] = a, -beta[:, None], 1.0
    return np.abs(np.linalg.eigvals(maps)).max(axis=(1, 2)) >= 1


def random_small_spectrum(rng):
    k = int(rng.integers(5, 21))
    return make_spectrum(
        log_uniform(rng, 1e-3, 1.0, k),
        log_uniform(rng, 1e-3, 1.0, k),
        counts=rng.integers(1, 100, k),
        init_sq=log_uniform(rng, 0.1, 10, k),
    )


@pytest.mark.parametrize("seed", range(4))
def test_steps_to_target_equals_a_plain_second_moment_loop(seed):
    """Independent: a plain long-double loop of the 3x3 second-moment recursion; first t with loss <= target
    (near-ties of the loop loss with the target left out)."""
    rng = np.random.default_rng(100 + seed)
    spectrum = random_small_spectrum(rng)
    n, max_steps = 200, 2000
    beta = random_momenta(rng, n)
    scale = np.where(rng.random(n) < 0.05, rng.uniform(1.001, 1.2, n), log_uniform(rng, 1e-3, 0.999, n))
    lr = scale * 2 * (1 + beta) / spectrum.curvature.max()  # about 5% divergent
    batch = np.rint(log_uniform(rng, 1, 1e6, n))
    target = spectrum.initial_loss() * float(log_uniform(rng, 1e-3, 0.2, 1)[0])
    losses = loop_losses(spectrum, batch, lr, beta, max_steps)
    result = nqm.steps_to_target(spectrum, batch, lr, target, momentum=beta, max_steps=max_steps)
    bad = divergent(spectrum, lr, beta)
    assert np.all(result.status[bad] == nqm.DIVERGED) and np.all(result.steps[bad] == -1)
    below = losses <= target
    crossed = below.any(axis=1)
    first = np.where(crossed, below.argmax(axis=1), -1)
    horizon = np.where(crossed, first, max_steps)
    near = np.abs(losses / target - 1) <= TIE_RTOL
    tie = np.array([near[i, : horizon[i] + 1].any() for i in range(n)])
    compared = ~bad & ~tie
    assert compared.sum() >= 0.8 * (~bad).sum()
    assert np.any(compared & crossed) and np.any(compared & ~crossed)  # both outcomes occur
    # complex roots of r^2 - (1 - eta h + beta) r + beta for some bin: the loss oscillates
    oscillating = np.any(lr[:, None] * spectrum.curvature > (1 - np.sqrt(beta[:, None])) ** 2, axis=1)
    assert np.sum(compared & crossed & oscillating & (beta > 0) & (first > 10)) >= 10
    np.testing.assert_array_equal(result.steps[compared], first[compared])
    want = np.where(crossed, nqm.OK, nqm.UNREACHABLE)
    np.testing.assert_array_equal(result.status[compared], want[compared])
    ok = compared & crossed
    assert np.all((result.steps_continuous[ok] > first[ok] - 1) | (first[ok] == 0))
    assert np.all(result.steps_continuous[ok] <= first[ok])


# --------------------------------------------------------------------------------------------------------
# 4. search hints never change the answer
# --------------------------------------------------------------------------------------------------------

HINT_MAX_STEPS = 30_000


def hint_setting(seed):
    rng = np.random.default_rng(200 + seed)
    n = 120
    beta = random_momenta(rng, n)
    lr = log_uniform(rng, 1e-3, 1.02, n) * 2 * (1 + beta)
    batch = np.rint(log_uniform(rng, 1, 1e6, n))
    target = float(log_uniform(rng, 0.01, 0.3, 1)[0])
    return rng, batch, lr, beta, target


def random_probes(kind, rng, n, plain, neighbour):
    top = HINT_MAX_STEPS
    if kind == "sorted":
        return np.sort(rng.integers(0, top, (n, 12)), axis=1)
    if kind == "beyond-max-steps":
        return np.sort(rng.integers(top - 5, 10 * top, (n, 6)), axis=1)
    if kind == "with-unused":
        probes = np.sort(rng.integers(0, 2 * top, (n, 10)), axis=1)
        return np.where(rng.random((n, 10)) < 0.4, -1, probes)
    if kind == "near-crossing":  # the true answer and its neighbours
        exact = np.where(plain.steps >= 0, plain.steps, top // 2)
        return np.sort(exact[:, None] + np.arange(-3, 4), axis=1)
    if kind == "unsorted":
        return rng.integers(-1, top, (n, 8))
    if kind == "one-row-for-all":
        return np.sort(rng.integers(0, top, 9))
    if kind == "neighbour-certified":
        return neighbour.certified
    if kind == "other-rows-certified":
        return plain.certified[rng.permutation(n)]
    raise AssertionError(kind)


PROBE_KINDS = [
    "sorted",
    "beyond-max-steps",
    "with-unused",
    "near-crossing",
    "unsorted",
    "one-row-for-all",
    "neighbour-certified",  # rows without certified steps are -1
    "other-rows-certified",
]


def assert_same_answer(hinted, plain):
    np.testing.assert_array_equal(hinted.steps, plain.steps)
    np.testing.assert_array_equal(hinted.status, plain.status)
    np.testing.assert_array_equal(hinted.steps_continuous, plain.steps_continuous)


@pytest.mark.parametrize("kind", PROBE_KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_probes_never_change_the_answer(kind, seed):
    """Independent: the same search without hints (itself checked against the plain loop above)."""
    rng, batch, lr, beta, target = hint_setting(seed)
    kwargs = {"momentum": beta, "max_steps": HINT_MAX_STEPS}
    plain = nqm.steps_to_target(PROBLEM, batch, lr, target, **kwargs)
    assert np.any(plain.status == nqm.OK) and np.any(plain.status != nqm.OK)
    neighbour = nqm.steps_to_target(PROBLEM, batch, lr * 1.07, target, **kwargs)
    probes = random_probes(kind, rng, batch.size, plain, neighbour)
    assert_same_answer(nqm.steps_to_target(PROBLEM, batch, lr, target, probes=probes, **kwargs), plain)


UNUSED_PROBE_CASES = [  # (id, spectrum, batch, lr, momentum, ema decay, target): the search starts at step 0
    ("momentum-batch-with-beta-0", PROBLEM, 1e6, 0.5, [0.0, 0.9], 0.0, 1.0),
    ("ema", make_spectrum([1.0, 0.5, 0.1]), 1e9, 1.0, 0.0, 0.5, 0.5),
    ("sgd-eta-h-1", make_spectrum([1.0, 0.5, 0.1]), 1e9, 1.0, 0.0, 0.0, 0.5),
]


@pytest.mark.parametrize("case", UNUSED_PROBE_CASES, ids=[c[0] for c in UNUSED_PROBE_CASES])
def test_unused_probe_entries_raise_no_warning(case):
    """Negative probe entries are unused; with the search starting at step 0 (information bound <= 1
    step) they once became padding at the virtual step -1, evaluated with a RuntimeWarning."""
    _, spectrum, batch, lr, beta, gamma, target = case
    assert int(nqm.steps_lower_bound(spectrum, batch, target)) <= 1
    kwargs = {"momentum": beta, "ema_decay": gamma}
    plain = nqm.steps_to_target(spectrum, batch, lr, target, **kwargs)
    probes = np.tile([-1, 3], (plain.steps.size, 1))
    assert_same_answer(nqm.steps_to_target(spectrum, batch, lr, target, probes=probes, **kwargs), plain)


def test_a_neighbours_certified_steps_as_probes_raise_no_warning():
    """The documented use of probes: another call's ``certified`` (a diverged row there is all -1)."""
    neighbour = nqm.steps_to_target(PROBLEM, 1e6, [5.0, 0.5], 1.0, momentum=[0.0, 0.9])
    assert neighbour.status.tolist() == [nqm.DIVERGED, nqm.OK] and np.all(neighbour.certified[0] == -1)
    plain = nqm.steps_to_target(PROBLEM, 1e6, 0.5, 1.0, momentum=[0.0, 0.9])
    hinted = nqm.steps_to_target(PROBLEM, 1e6, 0.5, 1.0, momentum=[0.0, 0.9], probes=neighbour.certified)
    assert_same_answer(hinted, plain)


def true_above(rng, plain):
    """Random steps up to which the loss is truly above the target: exact - 1 - k, or -1."""
    n = plain.steps.size
    k = rng.geometric(0.05, n) - 1
    reached = plain.status == nqm.OK
    above = np.where(reached, plain.steps - 1 - k, rng.integers(-1, HINT_MAX_STEPS + 1, n))
    return np.where(rng.random(n) < 0.2, -1, np.maximum(above, -1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_true_above_hints_never_change_the_answer(seed):
    """Independent: the hint-free search; ``above`` = exact steps - 1 - k (k >= 0) or -1."""
    rng, batch, lr, beta, target = hint_setting(seed)
    kwargs = {"momentum": beta, "max_steps": HINT_MAX_STEPS}
    plain = nqm.steps_to_target(PROBLEM, batch, lr, target, **kwargs)
    above = true_above(rng, plain)
    assert np.any(above > 0)
    assert_same_answer(nqm.steps_to_target(PROBLEM, batch, lr, target, above=above, **kwargs), plain)
    tight = np.where(plain.status == nqm.OK, plain.steps - 1, -1)  # the largest true hint
    assert_same_answer(nqm.steps_to_target(PROBLEM, batch, lr, target, above=tight, **kwargs), plain)
    neighbour = nqm.steps_to_target(PROBLEM, batch, lr * 0.93, target, **kwargs)
    together = nqm.steps_to_target(
        PROBLEM, batch, lr, target, above=above, probes=neighbour.certified, guess=neighbour.steps, **kwargs
    )
    assert_same_answer(together, plain)


# --------------------------------------------------------------------------------------------------------
# 5. screening of (learning rate, momentum) pairs against brute force
# --------------------------------------------------------------------------------------------------------

SCREEN_LRS = nqm.decade_grid(-2.0, 0.5, 8)
SCREEN_MOMENTA = np.array([0.0, 0.5, 0.9, 0.99])
SCREEN_BATCHES = np.array([1.0, 8.0, 64.0, 1024.0, 1e6])
SCREEN_CASES = [  # (target, max_steps)
    (0.05, 100_000),
    (0.02, 100_000),
    (0.2, 3_000),
    (0.01, 2_000),  # small batches cannot reach it
    (2.0, 1_000),  # crossings within a few steps: ``above`` is tight (one below the exact steps)
]


def screened_grid(target, max_steps):
    """(keep, above) of _screen_pairs and exact steps, status of every (batch, pair), all (n_batch, P)."""
    lr, beta = (a.ravel() for a in np.meshgrid(SCREEN_LRS, SCREEN_MOMENTA, indexing="ij"))
    keep, above = nqm.tuning._screen_pairs(PROBLEM, SCREEN_BATCHES, lr, beta, target, max_steps)
    exact = nqm.steps_to_target(
        PROBLEM, SCREEN_BATCHES[:, None], lr[None, :], target, momentum=beta[None, :], max_steps=max_steps
    )
    shape = (SCREEN_BATCHES.size, lr.size)
    assert keep.shape == above.shape == shape
    return keep, above, exact.steps.reshape(shape), exact.status.reshape(shape)


@pytest.mark.parametrize("target, max_steps", SCREEN_CASES)
def test_screening_keeps_every_fastest_pair(target, max_steps):
    """Independent: exact steps of every (batch, pair); every pair with the fewest steps is kept."""
    keep, _, steps, status = screened_grid(target, max_steps)
    for i in range(SCREEN_BATCHES.size):
        ok = status[i] == nqm.OK
        if ok.any():
            fastest = ok & (steps[i] == steps[i][ok].min())
            assert keep[i][fastest].all(), (SCREEN_BATCHES[i], np.flatnonzero(fastest & ~keep[i]))


@pytest.mark.parametrize("target, max_steps", SCREEN_CASES)
def test_screening_above_is_below_the_exact_steps(target, max_steps):
    """Independent: exact steps; wherever ``above`` >= 0 the loss stays above the target up to it."""
    _, above, steps, status = screened_grid(target, max_steps)
    known = above >= 0
    assert np.all(np.isin(status[known], [nqm.OK, nqm.UNREACHABLE]))
    reached = known & (status == nqm.OK)
    assert np.all(steps[reached] > above[reached])
    assert np.any(above[reached] > 0)


def test_screening_keeps_every_stable_pair_of_batch_sizes_that_never_reach():
    """Independent: exact steps; a batch size where no pair reaches the target keeps all stable pairs."""
    cases = 0
    for target, max_steps in SCREEN_CASES:
        keep, _, _, status = screened_grid(target, max_steps)
        for i in range(SCREEN_BATCHES.size):
            if not np.any(status[i] == nqm.OK):
                cases += 1
                np.testing.assert_array_equal(keep[i], status[i] != nqm.DIVERGED)
    assert cases > 0


def test_screening_prunes_some_pairs():
    """The claims above are not vacuous: on this grid screening drops pairs."""
    pruned = [not screened_grid(*case)[0].all() for case in SCREEN_CASES]
    assert any(pruned)


def loop_objective(spectrum, batch, lr, beta, target, max_steps):
    """(steps, steps_continuous) from the plain loop: first crossing and log-linear interpolation."""
    losses = loop_losses(spectrum, batch, lr, beta, max_steps)
    below = losses <= target
    crossed = below.any(axis=1)
    first = np.where(crossed, below.argmax(axis=1), -1)
    rows = np.flatnonzero(crossed & (first > 0))
    before, at = losses[rows, first[rows] - 1], losses[rows, first[rows]]
    continuous = np.full(first.size, np.inf)
    continuous[crossed & (first == 0)] = 0.0
    continuous[rows] = first[rows] - 1 + np.clip(np.log(before / target) / np.log(before / at), 0.0, 1.0)
    near = np.abs(losses / target - 1) <= TIE_RTOL
    return first, continuous, near.any(axis=1)


def test_momentum_grid_tuning_with_pruning_equals_a_loop_over_the_grid():
    """Independent: plain loop over every grid point; best = fewest steps, then smallest interpolated step,
    then first in (lr, momentum) order."""
    target, max_steps = 0.1, 2_500
    lrs, momenta = SCREEN_LRS, SCREEN_MOMENTA
    keep, _, _, _ = screened_grid(target, max_steps)
    assert not keep.all()  # the tuned result below goes through pruning
    curve = nqm.tune_steps(
        PROBLEM,
        SCREEN_BATCHES,
        target,
        lr_grid=lrs,
        momentum_grid=momenta,
        search="grid",
        max_steps=max_steps,
    )
    lr, beta = (a.ravel() for a in np.meshgrid(lrs, momenta, indexing="ij"))  # (lr, momentum) order
    reached = 0
    for i, batch in enumerate(SCREEN_BATCHES):
        steps, continuous, tie = loop_objective(PROBLEM, np.full(lr.size, batch), lr, beta, target, max_steps)
        steps = np.where(divergent(PROBLEM, lr, beta), -1, steps)
        assert not tie.any()
        if not np.any(steps >= 0):
            assert curve.status[i] == nqm.UNREACHABLE
            continue
        fewest = steps[steps >= 0].min()
        candidates = np.flatnonzero(steps == fewest)
        best = continuous[candidates].min()
        # the smallest interpolated step; several within rounding of it: the loop cannot order them, any
        allowed = candidates[continuous[candidates] <= best + TIE_RTOL * max(best, 1.0)]
        reached += 1
        assert int(curve.steps[i]) == fewest
        chosen = np.flatnonzero((lr == curve.learning_rate[i]) & (beta == curve.momentum[i]))
        assert chosen.size == 1 and chosen[0] in allowed, (batch, chosen, allowed)
    assert reached >= 3


# --------------------------------------------------------------------------------------------------------
# 6. analytic decay bound
# --------------------------------------------------------------------------------------------------------


def noise_free_losses(spectrum, lr, beta, steps):
    """Signal part of the loss (the loss at infinite batch, a lower bound at any batch), t = 0..steps,
    from the deterministic iteration x_{t+1} = (1 - eta h + beta) x_t - beta x_{t-1}, x_{-1} = x_0 = 1."""
    a = 1 - lr[:, None] * spectrum.curvature + beta[:, None]
    weight = 0.5 * spectrum.counts * spectrum.curvature * spectrum.init_sq
    x, previous = np.ones_like(a), np.ones_like(a)
    out = np.empty((a.shape[0], steps + 1))
    for t in range(steps + 1):
        out[:, t] = (x * x) @ weight
        x, previous = a * x - beta[:, None] * previous, x
    return out


# one dominant bin per scale: there the bound is within a fraction of a percent of the crossing
SEPARATED = make_spectrum([1.0, 0.03, 0.001], counts=[1, 30, 1000])


@pytest.mark.parametrize("spectrum", [PROBLEM, SEPARATED], ids=["power-law", "separated"])
@pytest.mark.parametrize("family", ["sgd", "momentum"])
@pytest.mark.parametrize("seed", [0, 1])
def test_decay_bound_is_below_every_crossing(family, seed, spectrum):
    """Independent: the noise-free loop (the loss at any batch is at least its signal) and the exact steps
    at random batch sizes; the loss stays above the target at every step up to the bound."""
    rng = np.random.default_rng(300 + seed)
    n, steps = 150, 4000
    beta = np.zeros(n) if family == "sgd" else rng.uniform(0.0, 0.999, n)
    lr = log_uniform(rng, 1e-3, 0.999, n) * 2 * (1 + beta)
    target = float(log_uniform(rng, 5e-3, 0.2, 1)[0])
    model = momentum_model(spectrum, 1.0, lr, beta)
    assert model.family == family
    bound = nqm.tuning._decay_bound(model, target)
    assert bound.shape == (n,) and np.all(bound >= -1)
    assert np.any((bound > 0) & (bound < steps))  # not vacuous within the loop
    signal = noise_free_losses(spectrum, lr, beta, steps)
    for i in np.flatnonzero(bound >= 0):
        assert np.all(signal[i, : min(bound[i], steps) + 1] > target), (lr[i], beta[i], bound[i])
    batch = np.rint(log_uniform(rng, 1, 1e9, n))
    exact = nqm.steps_to_target(spectrum, batch, lr, target, momentum=beta, max_steps=10**6)
    reached = exact.status == nqm.OK
    assert np.all(exact.steps[reached] > bound[reached])


def test_decay_bound_is_minus_one_for_ema():
    model = nqm.build_model(PROBLEM, nqm.model._configs(8.0, nqm.decade_grid(-2, 0.2, 20), 0.0, 0.9))
    assert model.family == "ema"
    np.testing.assert_array_equal(nqm.tuning._decay_bound(model, 0.01), -1)


# --------------------------------------------------------------------------------------------------------
# 7. a configuration's loss does not depend on what it is batched with
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sgd", "momentum", "ema"])
def test_loss_is_bit_identical_in_any_batch(family):
    """Independent: the same configuration evaluated in different row sets, sizes and positions."""
    rng = np.random.default_rng(400)
    n = 300
    beta = rng.uniform(0.0, 0.99, n) if family == "momentum" else 0.0
    gamma = rng.uniform(0.0, 0.99, n) if family == "ema" else 0.0
    configs = nqm.model._configs(log_uniform(rng, 1, 1e6, n), log_uniform(rng, 1e-3, 1.9, n), beta, gamma)
    model = nqm.build_model(PROBLEM, configs)
    assert model.family == family
    t = np.rint(log_uniform(rng, 1, 1e5, n))
    full_loss, full_eval = model.loss(t), model.evaluate(t)[0]
    for size in (1, 2, 3, 5, 7, 16, 33, 64, 128, 299):
        rows = rng.permutation(n)[:size]
        sub = model.take(rows)
        np.testing.assert_array_equal(sub.loss(t[rows]), full_loss[rows])
        np.testing.assert_array_equal(sub.evaluate(t[rows])[0], full_eval[rows])
    repeated = model.take(np.full(50, 17))  # one configuration at every position of a batch
    np.testing.assert_array_equal(repeated.loss(np.full(50, t[17])), full_loss[17])
