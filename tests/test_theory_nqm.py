"""Noisy quadratic model: closed forms, steps to target and tuning against independent computations.

Independent twins: a plain step-by-step loop of the 3x3 second-moment recursion of (x_t, x_{t-1}, x~_t),
a Monte Carlo simulation of the stochastic iteration itself, a deterministic gradient-descent loop, and a
Monte Carlo of the Bayes estimator for the information bound.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchscale.errors import InputError
from batchscale.theory import nqm
from batchscale.theory.spectra import geometric_bins, load_spectrum, make_spectrum, power_law_spectrum

RTOL = 1e-9  # closed form vs step-by-step recursion (float rounding only)
MC_SAMPLES = 40_000
MC_RTOL = 3e-2  # ~5 standard errors of a mean of MC_SAMPLES squared Gaussians
SEED = 1234

SMALL = make_spectrum([1.0, 0.3, 0.01], [0.5, 0.2, 0.02], counts=[1, 2, 3], init_sq=[1.0, 2.0, 0.5])
UNIT = make_spectrum([1.0, 0.25, 0.04])  # C = H, x0^2 = 1

# (id, spectrum, batch size, learning rate, momentum, ema decay, precond power)
CASES = [
    ("sgd", SMALL, 8, 0.5, 0.0, 0.0, 0.0),
    ("sgd-eta-h-above-1", SMALL, 8, 1.7, 0.0, 0.0, 0.0),
    ("sgd-eta-h-exactly-1", UNIT, 4, 1.0, 0.0, 0.0, 0.0),
    ("momentum-underdamped", SMALL, 8, 0.5, 0.9, 0.0, 0.0),
    ("momentum-overdamped", SMALL, 2, 0.05, 0.3, 0.0, 0.0),
    ("momentum-critically-damped", UNIT, 4, 0.25, 0.25, 0.0, 0.0),  # A^2 = 4 beta for h = 1
    ("momentum-negative-root", SMALL, 8, 2.5, 0.5, 0.0, 0.0),  # eta h > 1 + beta
    ("precond-half", SMALL, 8, 0.2, 0.0, 0.0, 0.5),
    ("precond-momentum", SMALL, 8, 0.1, 0.8, 0.0, 1.0),
    ("ema", SMALL, 8, 0.5, 0.0, 0.9, 0.0),
    ("ema-r-equals-gamma", UNIT, 4, 0.5, 0.0, 0.5, 0.0),  # 1 - eta h = gamma for h = 1
    ("ema-negative-r", SMALL, 8, 1.8, 0.0, 0.3, 0.0),
    ("ema-precond", SMALL, 8, 0.3, 0.0, 0.99, 0.5),
]
IDS = [c[0] for c in CASES]


def reference_losses(spectrum, batch, lr, beta, gamma, power, steps):
    """Expected loss at t = 0..steps by iterating the second-moment matrix of (x_t, x_{t-1}, x~_t).

    One plain loop over steps; each step maps every coordinate's 3x3 moment matrix P to T P T^T + k k^T c/B.
    """
    h, c, n, x0 = spectrum.curvature, spectrum.noise, spectrum.counts, spectrum.init_sq
    eta = lr * h ** (-power)  # (K,)
    a = 1 - eta * h + beta
    zero, one = np.zeros_like(h), np.ones_like(h)
    step = np.stack(
        [
            np.stack([a, -beta * one, zero], -1),
            np.stack([one, zero, zero], -1),
            np.stack([(1 - gamma) * a, -(1 - gamma) * beta * one, gamma * one], -1),
        ],
        -2,
    )  # (K, 3, 3)
    kick = np.stack([eta, zero, (1 - gamma) * eta], -1)  # (K, 3)
    forcing = kick[:, :, None] * kick[:, None, :] * (c / batch)[:, None, None]  # (K, 3, 3)
    moments = x0[:, None, None] * np.ones((1, 3, 3))  # x_{-1} = x~_0 = x_0
    index = 2 if gamma > 0 else 0
    out = np.empty(steps + 1)
    for t in range(steps + 1):
        out[t] = 0.5 * np.sum(n * h * moments[:, index, index])
        moments = step @ moments @ step.transpose(0, 2, 1) + forcing
    return out


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_closed_form_equals_step_by_step_recursion(case):
    _, spectrum, batch, lr, beta, gamma, power = case
    steps = 300
    expected = reference_losses(spectrum, batch, lr, beta, gamma, power, steps)
    got = nqm.expected_loss(
        spectrum, batch, lr, np.arange(steps + 1), momentum=beta, ema_decay=gamma, precond_power=power
    )
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-300)


def simulate_losses(spectrum, batch, lr, beta, gamma, power, times, samples, seed):
    """Monte Carlo of the actual iteration: Gaussian x_0 and gradient noise, mean loss at ``times``."""
    rng = np.random.default_rng(seed)
    h, c, x0 = spectrum.curvature, spectrum.noise, spectrum.init_sq
    eta = lr * h ** (-power)
    x = rng.standard_normal((samples, h.size)) * np.sqrt(x0)
    previous, average, out = x.copy(), x.copy(), {}
    for t in range(max(times) + 1):
        if t in times:
            tracked = average if gamma > 0 else x
            out[t] = float(np.mean(0.5 * (tracked**2 * spectrum.counts * h).sum(axis=1)))
        noise = rng.standard_normal(x.shape) * np.sqrt(c / batch)
        x, previous = x - eta * (h * x + noise) + beta * (x - previous), x
        average = gamma * average + (1 - gamma) * x
    return out


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c[0] in {"sgd", "momentum-underdamped", "precond-half", "ema"}],
    ids=["sgd", "momentum-underdamped", "precond-half", "ema"],
)
def test_closed_form_matches_monte_carlo_of_the_iteration(case):
    _, spectrum, batch, lr, beta, gamma, power = case
    times = [0, 3, 20, 150]
    simulated = simulate_losses(spectrum, batch, lr, beta, gamma, power, times, MC_SAMPLES, SEED)
    exact = nqm.expected_loss(
        spectrum, batch, lr, np.array(times), momentum=beta, ema_decay=gamma, precond_power=power
    )
    for t, value in zip(times, exact, strict=True):
        assert simulated[t] == pytest.approx(value, rel=MC_RTOL), t


def first_crossing(spectrum, batch, lr, beta, gamma, power, target, max_steps):
    """Plain loop: the first t with expected loss <= target (None within max_steps)."""
    losses = reference_losses(spectrum, batch, lr, beta, gamma, power, max_steps)
    below = np.flatnonzero(losses <= target)
    return int(below[0]) if below.size else None


CROSSING_PROBLEM = power_law_spectrum(30, 1.0)
CROSSING_CASES = [
    # (id, batch, lr, momentum, ema decay, precond power, target)
    ("sgd-small-batch", 4, 0.3, 0.0, 0.0, 0.0, 0.5),
    ("sgd-large-batch", 10**6, 1.5, 0.0, 0.0, 0.0, 0.05),
    ("momentum-oscillating", 10**6, 1.0, 0.9, 0.0, 0.0, 0.05),
    ("momentum-small-batch", 8, 0.05, 0.8, 0.0, 0.0, 0.3),
    ("precond", 64, 0.1, 0.0, 0.0, 0.7, 0.04),
    ("ema", 16, 0.5, 0.0, 0.8, 0.0, 0.2),
    ("early-target", 10**6, 1.0, 0.0, 0.0, 0.0, 1.5),
]


@pytest.mark.parametrize("case", CROSSING_CASES, ids=[c[0] for c in CROSSING_CASES])
def test_steps_to_target_is_the_first_crossing_of_a_plain_loop(case):
    _, batch, lr, beta, gamma, power, target = case
    expected = first_crossing(CROSSING_PROBLEM, batch, lr, beta, gamma, power, target, 2500)
    assert expected is not None and expected > 0
    result = nqm.steps_to_target(
        CROSSING_PROBLEM,
        batch,
        lr,
        target,
        momentum=beta,
        ema_decay=gamma,
        precond_power=power,
        max_steps=2500,
    )
    assert result.status.tolist() == ["ok"]
    assert int(result.steps[0]) == expected
    assert expected - 1 < result.steps_continuous[0] <= expected


def test_many_configurations_at_once_match_the_loop():
    lrs = np.array([0.02, 0.1, 0.4, 1.0, 1.9])
    betas = np.array([0.0, 0.5, 0.95])
    result = nqm.steps_to_target(
        CROSSING_PROBLEM, 32, lrs[:, None], 0.3, momentum=betas[None, :], max_steps=3000
    )
    for i, lr in enumerate(lrs):
        for j, beta in enumerate(betas):
            expected = first_crossing(CROSSING_PROBLEM, 32, lr, beta, 0.0, 0.0, 0.3, 3000)
            got = result.steps.reshape(lrs.size, betas.size)[i, j]
            assert (got if got >= 0 else None) == expected, (lr, beta)


def test_divergent_settings_are_flagged_without_warnings():
    # filterwarnings = error: an overflow or invalid-value warning would fail this test
    result = nqm.steps_to_target(UNIT, 8, [0.5, 2.0, 5.0, 1e6], 0.1)
    assert result.status.tolist() == ["ok", "diverged", "diverged", "diverged"]
    assert result.steps.tolist()[1:] == [-1, -1, -1]
    assert np.all(np.isinf(result.loss_at_steps[1:]))


def test_momentum_extends_the_stable_range_to_two_plus_two_beta():
    loss = nqm.expected_loss(UNIT, 8, [3.7, 3.79], 50, momentum=0.9)
    assert np.all(np.isfinite(loss))
    assert np.isinf(nqm.expected_loss(UNIT, 8, 3.81, 50, momentum=0.9))


def test_unreachable_when_the_noise_floor_is_above_the_target():
    result = nqm.steps_to_target(UNIT, 1, 1.0, 0.05, max_steps=10_000)
    floor = result.floor[0]
    assert floor > 0.05
    assert result.status.tolist() == ["unreachable"]
    # the plain loop agrees: the loss stays above the target for all of max_steps
    assert first_crossing(UNIT, 1, 1.0, 0.0, 0.0, 0.0, 0.05, 2000) is None
    assert result.loss_at_steps[0] == pytest.approx(floor, rel=1e-6)


def test_max_steps_cap_reports_unreachable():
    result = nqm.steps_to_target(CROSSING_PROBLEM, 10**6, 0.01, 0.05, max_steps=100)
    assert result.status.tolist() == ["unreachable"]


def test_large_batch_limit_is_deterministic_gradient_descent():
    spectrum, target = power_law_spectrum(200, 1.0), 0.05
    for lr in (0.5, 1.0, 1.9):
        x_sq, t = spectrum.init_sq.copy(), 0
        while 0.5 * np.sum(spectrum.curvature * x_sq) > target:
            x_sq, t = x_sq * (1 - lr * spectrum.curvature) ** 2, t + 1
        assert int(nqm.steps_to_target(spectrum, 1e15, lr, target).steps[0]) == t


def test_information_bound_loss_matches_monte_carlo_of_the_bayes_estimator():
    rng = np.random.default_rng(SEED)
    spectrum = SMALL
    n = 7
    h, c, x0 = spectrum.curvature, spectrum.noise, spectrum.init_sq
    truth = rng.standard_normal((MC_SAMPLES, h.size)) * np.sqrt(x0)
    # each example observes y = x* + eps / h with Var eps = c; posterior mean of Gaussian prior and data
    looks = truth[:, None, :] + rng.standard_normal((MC_SAMPLES, n, h.size)) * np.sqrt(c) / h
    precision = 1 / x0 + n * h**2 / c
    estimate = (looks.sum(axis=1) * h**2 / c) / precision
    simulated = np.mean(0.5 * ((estimate - truth) ** 2 * spectrum.counts * h).sum(axis=1))
    assert float(nqm.information_bound_loss(spectrum, n)) == pytest.approx(simulated, rel=MC_RTOL)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "precond", "ema"])
def test_no_setting_beats_the_information_bound(optimizer):
    spectrum, target = power_law_spectrum(1000, 1.0, bins=30), 0.02
    lrs = nqm.decade_grid(-3, 0.5, 40)
    extra = {
        "sgd": {},
        "momentum": {"momentum": 0.9},
        "precond": {"precond_power": 0.5},
        "ema": {"ema_decay": 0.9},
    }[optimizer]
    for batch in (1, 16, 256, 4096):
        result = nqm.steps_to_target(spectrum, batch, lrs, target, max_steps=10**6, **extra)
        bound = nqm.steps_lower_bound(spectrum, batch, target)
        reached = result.steps[result.status == "ok"]
        assert reached.size and np.all(reached >= bound)


def test_information_bound_reads_d_over_2_b_target_when_every_coordinate_is_resolved():
    d, target = 50, 1e-4
    spectrum = make_spectrum(np.ones(d))  # h = c = 1: L_info(n) = d / (2 (1 + n))
    n_info = nqm.information_bound_examples(spectrum, target)
    assert n_info == math.ceil(d / (2 * target) - 1)
    assert nqm.steps_lower_bound(spectrum, 100, target) == math.ceil(n_info / 100)


def test_overdamped_momentum_signal_never_increases():
    rng = np.random.default_rng(SEED)
    beta = rng.uniform(0.0, 0.99, 500)
    eta_h = rng.uniform(0.0, 1.0, 500) * (1 - np.sqrt(beta)) ** 2  # real positive roots
    x, previous, last = np.ones(500), np.ones(500), np.ones(500)
    for _ in range(300):
        x, previous = (1 - eta_h + beta) * x - beta * previous, x
        assert np.all(x**2 <= last * (1 + 1e-12))
        last = x**2


GRID_PROBLEM = power_law_spectrum(20, 1.0)


def test_grid_search_equals_brute_force_over_the_grid():
    lrs = nqm.decade_grid(-1.5, 0.3, 8)
    batches, target = [2, 64, 10**6], 0.2
    curve = nqm.tune_steps(GRID_PROBLEM, batches, target, lr_grid=lrs, search="grid", max_steps=3000)
    for i, batch in enumerate(batches):
        loop = [first_crossing(GRID_PROBLEM, batch, lr, 0.0, 0.0, 0.0, target, 3000) for lr in lrs]
        best = min(s for s in loop if s is not None)
        assert int(curve.steps[i]) == best
        assert curve.learning_rate[i] in lrs[[s == best for s in loop]]


def test_momentum_grid_search_equals_brute_force_across_chunks(monkeypatch):
    # the race carries each batch size's best across chunks: the answer must not depend on the chunking
    lrs, momenta = nqm.decade_grid(-1.5, 0.3, 5), np.array([0.0, 0.5, 0.9])
    batches, target = [2, 10**6], 0.2
    loops = [
        {
            (lr, beta): first_crossing(GRID_PROBLEM, batch, lr, beta, 0.0, 0.0, target, 3000)
            for lr in lrs
            for beta in momenta
        }
        for batch in batches
    ]
    for chunk_elements in (2**17, 7 * GRID_PROBLEM.curvature.size):  # one chunk; 7 configurations a chunk
        monkeypatch.setattr(nqm.search, "CHUNK_ELEMENTS", chunk_elements)
        curve = nqm.tune_steps(
            GRID_PROBLEM, batches, target, lr_grid=lrs, momentum_grid=momenta, search="grid", max_steps=3000
        )
        for i, loop in enumerate(loops):
            best = min(s for s in loop.values() if s is not None)
            assert int(curve.steps[i]) == best
            assert loop[(curve.learning_rate[i], curve.momentum[i])] == best


@pytest.mark.parametrize("beta", [0.0, 0.9], ids=["sgd", "momentum"])
def test_a_guess_changes_only_the_search_path_not_the_steps(beta):
    spectrum = power_law_spectrum(1000, 1.0, bins=40)
    lrs = nqm.decade_grid(-3, 0.3, 40)
    plain = nqm.steps_to_target(spectrum, 64, lrs, 0.02, momentum=beta)
    rng = np.random.default_rng(0)
    for guess in (1.0, 1e9, np.inf, rng.uniform(1, 3 * plain.steps.max(), lrs.size)):
        guessed = nqm.steps_to_target(spectrum, 64, lrs, 0.02, momentum=beta, guess=guess)
        np.testing.assert_array_equal(guessed.steps, plain.steps)
        np.testing.assert_array_equal(guessed.status, plain.status)


def test_continuous_search_beats_the_grid_and_is_near_a_dense_scan():
    spectrum = power_law_spectrum(1000, 1.0, bins=40)
    batches, target = [4, 256, 65536], 0.02
    grid = nqm.tune_steps(spectrum, batches, target, lr_grid=nqm.decade_grid(-4, 0.5, 16), search="grid")
    cont = nqm.tune_steps(spectrum, batches, target, lr_grid=nqm.decade_grid(-4, 0.5, 16))
    dense = nqm.decade_grid(-4, 0.5, 4000)
    assert np.all(cont.steps <= grid.steps)
    for i, batch in enumerate(batches):
        scan = nqm.steps_to_target(spectrum, batch, dense, target).steps
        best = scan[scan >= 0].min()
        assert best <= cont.steps[i] <= best * 1.002


def test_momentum_tuning_finds_fewer_steps_than_sgd_at_large_batch():
    spectrum = power_law_spectrum(1000, 1.0, bins=40)
    lrs, momenta = nqm.decade_grid(-4, 0.5, 30), 1 - nqm.decade_grid(-2, 0, 6)
    sgd = nqm.tune_steps(spectrum, [8, 2**20], 0.02, lr_grid=lrs)
    heavy = nqm.tune_steps(spectrum, [8, 2**20], 0.02, lr_grid=lrs, momentum_grid=momenta)
    assert heavy.steps[1] < 0.5 * sgd.steps[1]  # acceleration at large batch (Zhang et al. Fig. 3)
    assert heavy.steps[0] == pytest.approx(sgd.steps[0], rel=0.02)  # no help at small batch
    assert heavy.rows()[0]["momentum"] == pytest.approx(heavy.momentum[0])


def test_default_problem_shows_three_regimes():
    from batchscale.theory.regimes import classify_regimes

    spectrum = power_law_spectrum(10_000, 1.0, bins=100)
    batches = [2**k for k in range(2, 22, 2)]
    curve = nqm.tune_steps(spectrum, batches, 0.01, lr_grid=nqm.decade_grid(-5, 0.5, 100), search="grid")
    regimes = classify_regimes(batches, curve.steps.astype(float)).regimes
    assert set(regimes) == {"perfect_scaling", "diminishing_returns", "maximal_parallelism"}


def test_same_inputs_same_numbers():
    a = nqm.tune_steps(SMALL, [4, 64], 0.05, lr_grid=nqm.decade_grid(-3, 0, 30))
    b = nqm.tune_steps(SMALL, [4, 64], 0.05, lr_grid=nqm.decade_grid(-3, 0, 30))
    assert a.rows() == b.rows()


def test_unreachable_batch_sizes_are_reported_per_batch_not_raised():
    curve = nqm.tune_steps(UNIT, [1, 10**6], 1e-3, lr_grid=nqm.decade_grid(-3, 0, 10), max_steps=200)
    assert curve.status.tolist() == ["unreachable", "ok"]
    assert curve.rows()[0]["steps"] is None and curve.loss_at_steps[0] > 1e-3


def test_binning_keeps_traces_and_initial_loss():
    full = power_law_spectrum(5000, 1.3, noise_scale=2.0)
    binned = geometric_bins(full, 50)
    h = np.arange(1, 5001) ** -1.3
    assert binned.dim == 5000 and binned.bins <= 50
    assert np.sum(binned.counts * binned.curvature) == pytest.approx(h.sum(), rel=1e-12)
    assert np.sum(binned.counts * binned.noise) == pytest.approx(2.0 * h.sum(), rel=1e-12)
    assert binned.initial_loss() == pytest.approx(0.5 * h.sum(), rel=1e-12)


def test_spectrum_files(tmp_path):
    values = np.column_stack([[1.0, 0.5, 0.1], [0.2, 0.2, 0.3]])
    np.save(tmp_path / "s.npy", values)
    (tmp_path / "s.csv").write_text("h,c\n1.0,0.2\n0.5,0.2\n0.1,0.3\n")
    (tmp_path / "h.csv").write_text("1.0\n0.5\n0.1\n")
    for name in ("s.npy", "s.csv"):
        spectrum = load_spectrum(tmp_path / name, noise_scale=2.0)
        np.testing.assert_array_equal(spectrum.curvature, [1.0, 0.5, 0.1])
        np.testing.assert_array_equal(spectrum.noise, [0.4, 0.4, 0.6])
    np.testing.assert_array_equal(load_spectrum(tmp_path / "h.csv").noise, [1.0, 0.5, 0.1])


BAD_SPECTRA = [
    ("negative-eigenvalue", lambda: make_spectrum([1.0, -0.5]), "positive"),
    ("nan-eigenvalue", lambda: make_spectrum([1.0, float("nan")]), "positive"),
    ("zero-eigenvalue", lambda: make_spectrum([0.0]), "positive"),
    ("empty", lambda: make_spectrum([]), "empty"),
    ("negative-noise", lambda: make_spectrum([1.0], [-1.0]), "noise"),
    ("negative-noise-scale", lambda: power_law_spectrum(10, noise_scale=-1.0), "noise scale"),
    ("zero-dim", lambda: power_law_spectrum(0), "dimension"),
]


@pytest.mark.parametrize("make, words", [c[1:] for c in BAD_SPECTRA], ids=[c[0] for c in BAD_SPECTRA])
def test_bad_spectra_raise_input_error(make, words):
    with pytest.raises(InputError, match=words):
        make()


BAD_CALLS = [
    ("batch-zero", lambda: nqm.steps_to_target(UNIT, 0, 0.1, 0.01), "batch size"),
    ("batch-negative", lambda: nqm.tune_steps(UNIT, [-4], 0.01, lr_grid=[0.1]), "batch size"),
    ("lr-negative", lambda: nqm.steps_to_target(UNIT, 4, -0.1, 0.01), "learning rate"),
    ("momentum-one", lambda: nqm.steps_to_target(UNIT, 4, 0.1, 0.01, momentum=1.0), "momentum"),
    ("target-zero", lambda: nqm.steps_to_target(UNIT, 4, 0.1, 0.0), "target"),
    ("target-nan", lambda: nqm.steps_to_target(UNIT, 4, 0.1, float("nan")), "target"),
    ("ema-and-momentum", lambda: nqm.steps_to_target(UNIT, 4, 0.1, 0.1, momentum=0.5, ema_decay=0.5), "EMA"),
    ("bad-search", lambda: nqm.tune_steps(UNIT, [4], 0.01, lr_grid=[0.1], search="random"), "search"),
]


@pytest.mark.parametrize("call, words", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_calls_raise_input_error(call, words):
    with pytest.raises(InputError, match=words):
        call()


def test_underdamped_signal_is_a_decaying_sine_and_the_lobe_bound_holds():
    eta_h, beta = np.array([0.05, 0.3, 1.2, 2.5]), 0.9  # complex roots: A^2 < 4 beta
    seq = nqm.heavy_ball_power_sequence(eta_h, beta)
    assert seq.oscillating.all()
    amplitude, theta, phase = nqm.model._momentum_wave(seq, eta_h, beta, 1.0)
    x, previous = np.ones(4), np.ones(4)
    signal = []
    for _ in range(200):
        signal.append(x**2)
        x, previous = (1 - eta_h + beta) * x - beta * previous, x
    signal = np.array(signal)  # (T, 4), plain deterministic loop
    t = np.arange(200)[:, None]
    np.testing.assert_allclose(
        amplitude * beta**t * np.sin(t * theta + phase) ** 2, signal, rtol=1e-9, atol=1e-15
    )
    spectrum = make_spectrum(eta_h, np.zeros(4))  # lr = 1: eta h = h
    model = nqm.build_model(spectrum, nqm.model._configs(1.0, 1.0, beta, 0.0))
    for a, b in [(0, 3), (10, 11), (20, 60), (5, 5)]:
        bound = model.wave_bound(np.array([a]), np.array([b]))[0]
        assert bound <= np.min(signal[a : b + 1] @ model.weight) * (1 + 1e-12)


HEAVY_MC_SAMPLES = 400_000
HEAVY_MC_RTOL = 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_closed_form_matches_heavy_monte_carlo(case):
    _, spectrum, batch, lr, beta, gamma, power = case
    if not np.isfinite(nqm.expected_loss(spectrum, batch, lr, 1, momentum=beta, ema_decay=gamma)):
        pytest.skip("divergent setting")
    times = [0, 5, 40]
    simulated = simulate_losses(spectrum, batch, lr, beta, gamma, power, times, HEAVY_MC_SAMPLES, SEED + 1)
    exact = nqm.expected_loss(
        spectrum, batch, lr, np.array(times), momentum=beta, ema_decay=gamma, precond_power=power
    )
    for t, value in zip(times, exact, strict=True):
        assert simulated[t] == pytest.approx(value, rel=HEAVY_MC_RTOL), t


@pytest.mark.slow
@pytest.mark.parametrize("batch", [256, 4096, 2**20])
def test_default_problem_tuned_grid_steps_equal_a_loop_over_the_whole_grid(batch):
    spectrum = power_law_spectrum(10_000, 1.0, bins=100)
    lrs = nqm.decade_grid(-5, 0.5, 100)
    curve = nqm.tune_steps(spectrum, [batch], 0.01, lr_grid=lrs, search="grid")
    h, c, n = spectrum.curvature, spectrum.noise, spectrum.counts
    x_sq = np.ones((lrs.size, h.size)) * spectrum.init_sq
    a, kick = (1 - lrs[:, None] * h) ** 2, lrs[:, None] ** 2 * c / batch
    stable = np.all(lrs[:, None] * h < 2, axis=1)
    t = 0
    while not np.any(stable & (x_sq @ (0.5 * n * h) <= 0.01)):
        x_sq, t = np.where(stable[:, None], a * x_sq + kick, 0.0), t + 1
    assert int(curve.steps[0]) == t


def test_a_negligible_extreme_coordinate_does_not_change_the_steps():
    """A coordinate with h = c = 1e-300 adds ~1e-300 to every loss: the tuned steps are those without it
    (it used to overflow or crash); and one at h = 1e300 makes every learning rate above 2e-300 diverge."""
    h = np.array([1.0, 0.3, 0.1, 0.02])
    lrs = nqm.decade_grid(-3, 0.3, 12)
    plain = nqm.tune_steps(make_spectrum(h), [4, 256], 0.02, lr_grid=lrs)
    tiny = nqm.tune_steps(make_spectrum(np.append(h, 1e-300)), [4, 256], 0.02, lr_grid=lrs)
    np.testing.assert_array_equal(tiny.steps, plain.steps)
    np.testing.assert_array_equal(tiny.learning_rate, plain.learning_rate)
    huge = make_spectrum(np.append(h, 1e300))
    assert nqm.largest_stable_learning_rate(huge) == 2e-300
    curve = nqm.tune_steps(huge, [4, 256], 0.02, lr_grid=lrs)
    assert (curve.status == nqm.UNREACHABLE).all() and np.isinf(curve.loss_at_steps).all()


@pytest.mark.parametrize("power", [0.0, 0.5, -1.0])
def test_largest_stable_learning_rate_is_the_divergence_threshold(power):
    spectrum = make_spectrum([2.0, 0.7, 0.01])
    limit = nqm.largest_stable_learning_rate(spectrum, power)
    lrs = np.array([limit * (1 - 1e-9), limit * (1 + 1e-9)])
    at = nqm.expected_loss(spectrum, 8, lrs, 10, precond_power=power)
    assert np.isfinite(at[0]) and np.isinf(at[1])


@pytest.mark.parametrize(
    "optimizer, kwargs",
    [
        ("sgd", {}),
        ("ema", {"ema_decay": 0.9}),
        ("momentum", {"momentum_grid": 1 - nqm.decade_grid(-2, 0, 4)}),
        ("momentum", {"momentum_grid": 1 - nqm.decade_grid(-2, 0, 4), "search": "grid"}),
    ],
    ids=["sgd", "ema", "momentum-continuous", "momentum-grid"],
)
def test_memory_estimate_bounds_the_measured_peak(optimizer, kwargs):
    """The estimate ``predict nqm --max-memory`` compares with is above tracemalloc's peak (numpy reports its
    allocations there) and not far above it."""
    import tracemalloc

    spectrum = power_law_spectrum(400, 1.0)
    lrs = nqm.decade_grid(-3, 0.3, 20)
    search = kwargs.get("search", "continuous")
    momenta = kwargs.get("momentum_grid")
    settings = nqm.searched_settings(lrs.size, None if momenta is None else momenta.size, search)
    estimate = nqm.memory_estimate(spectrum.bins, settings, optimizer, search)
    tracemalloc.start()
    try:
        nqm.tune_steps(spectrum, [4, 1024], 0.05, lr_grid=lrs, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= estimate <= 8 * peak, (peak, estimate)
