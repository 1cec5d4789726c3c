"""The noisy quadratic model built from measured spectra: its construction against hand computations, the
effective batch against an enumeration of batches without replacement, and the tuned steps against a plain
loop over the second-moment recursions (SGD and heavy ball)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from batchscale.errors import InputError
from batchscale.theory.nqm_transfer import effective_batch, model_target, predict_curve, transfer_spectrum

TOP_H, TOP_C = [2.0, 1.0, 0.5], [3.0, 1.0, 0.2]
BULK_H, BULK_N = [0.1, 0.01, 1e-5, -0.2], [10.0, 100.0, 1000.0, 50.0]


def test_the_model_keeps_the_measured_parts_and_spreads_the_bulk_noise_with_curvature():
    model = transfer_spectrum(TOP_H, TOP_C, BULK_H, BULK_N, bulk_noise=4.0, initial_loss=2.0)
    s = model.spectrum
    np.testing.assert_allclose(s.curvature, [2.0, 1.0, 0.5, 0.1, 0.01])
    np.testing.assert_allclose(s.counts, [1, 1, 1, 10, 100])
    r = 4.0 / (10 * 0.1 + 100 * 0.01)  # bulk noise over the kept bulk trace
    np.testing.assert_allclose(s.noise, [3.0, 1.0, 0.2, r * 0.1, r * 0.01])
    assert model.dropped_count == 1050 and model.dropped_trace == pytest.approx(1000 * 1e-5 - 50 * 0.2)
    assert s.initial_loss() == pytest.approx(2.0)
    np.testing.assert_allclose(s.init_sq, 2.0 / (0.5 * (3.5 + 1.0 + 1.0)))


def test_the_planted_models_keep_the_total_noise_or_scale_it():
    iso = transfer_spectrum(TOP_H, TOP_C, BULK_H, BULK_N, bulk_noise=4.0, initial_loss=2.0,
                            noise_model="isotropic").spectrum
    np.testing.assert_allclose(iso.noise, (4.2 + 4.0) / 113.0)
    loud = transfer_spectrum(TOP_H, TOP_C, BULK_H, BULK_N, bulk_noise=4.0, initial_loss=2.0, noise_factor=10)
    assert np.dot(loud.spectrum.counts, loud.spectrum.noise) == pytest.approx(10 * (4.2 + 4.0))


def test_effective_batch_matches_an_enumeration_of_batches_without_replacement():
    values = np.array([0.3, -1.2, 2.0, 0.7, -0.4, 1.1])
    m = values.size
    var = values.var()  # (1/M) sum (v - mean)^2, the per-example variance c
    for b in range(1, m):
        means = [np.mean(values[list(s)]) for s in itertools.combinations(range(m), b)]
        assert np.var(means) == pytest.approx(var / effective_batch(b, m), rel=1e-12)
    assert effective_batch(m, m) == math.inf
    with pytest.raises(InputError):
        effective_batch(m + 1, m)


def test_model_target_is_the_loss_above_the_floor_and_refuses_an_impossible_one():
    assert model_target(2.3, 0.4, 0.1) == pytest.approx((2.2, 0.3))
    for bad in ((2.3, 0.05, 0.1), (0.3, 0.4, 0.0)):
        with pytest.raises(InputError):
            model_target(*bad)


def loop_steps(h, c, n, init, lr, batch, target, momentum=0.0, limit=100_000):
    """First t with the expected loss <= target, by iterating the second moments of (x_t, x_{t-1})."""
    h, c, n = (np.asarray(a, dtype=float) for a in (h, c, n))
    # per coordinate: y = (x_t, x_{t-1}), y' = T y + (-lr, 0) xi, Var xi = c / batch
    m11, m12, m22 = np.full(h.size, init), np.full(h.size, init), np.full(h.size, init)
    for t in range(limit + 1):
        if 0.5 * np.sum(n * h * m11) <= target:
            return t
        a = 1.0 + momentum - lr * h
        b = -momentum
        n11 = a * a * m11 + 2 * a * b * m12 + b * b * m22 + lr * lr * c / batch
        n12 = a * m11 + b * m12
        m11, m12, m22 = n11, n12, m11
    return None


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_tuned_steps_match_a_plain_loop_and_no_grid_rate_beats_them(optimizer):
    model = transfer_spectrum(TOP_H, TOP_C, BULK_H[:2], BULK_N[:2], bulk_noise=4.0, initial_loss=2.0)
    s = model.spectrum
    beta = 0.9 if optimizer == "momentum" else 0.0
    curve = predict_curve(s, [4, 64], 0.2, population=1000, optimizer=optimizer, momentum=0.9)
    init = float(s.init_sq[0])
    for b, steps, lr in zip(curve.batch_sizes, curve.steps, curve.learning_rates, strict=True):
        eff = effective_batch(b, 1000)
        assert loop_steps(s.curvature, s.noise, s.counts, init, lr, eff, 0.2, beta) == steps
        limit = 2.0 * (1 + beta) / s.curvature.max()
        grid = [loop_steps(s.curvature, s.noise, s.counts, init, lr, eff, 0.2, beta, limit=int(steps))
                for lr in np.geomspace(limit * 1e-3, limit * 0.999, 60)]
        assert min(g for g in grid if g is not None) >= steps - 1
    assert curve.steps[0] > curve.steps[1]
