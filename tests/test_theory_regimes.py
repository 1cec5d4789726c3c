"""Regime classification on curves whose critical and maximal useful batch sizes are known analytically."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchscale.errors import InputError
from batchscale.theory.regimes import REGIMES, classify_regimes, scaling_rule_lr

POW2 = 2 ** np.arange(0, 16)


def model_steps(batch_sizes, s_min: float, b_crit: float) -> np.ndarray:
    """S(B) = S_min (1 + B_crit / B) (McCandlish et al. 2018, eq. 2.11)."""
    return s_min * (1.0 + b_crit / np.asarray(batch_sizes, dtype=float))


# For S = S_min (1 + Bc/B) and reference point B0: E(B)/E(B0) = (B + Bc)/(B0 + Bc), so the excess 1 + f
# is reached at B* = (1 + f) B0 + f Bc.  Doubling from B cuts steps by r = Bc / (2 (B + Bc)) <= f_flat
# iff B >= Bc (1/(2 f_flat) - 1).
MODEL_CASES = [
    pytest.param(1.0, 64.0, 0.2, 0.1, id="Bc64-f0.2-flat0.1"),
    pytest.param(1.0, 1000.0, 0.5, 0.05, id="Bc1000-f0.5-flat0.05"),
    pytest.param(1.0, 5.0, 1.0, 0.1, id="Bc5-f1-flat0.1"),
]


@pytest.mark.parametrize("s_min, b_crit, fraction, flat", MODEL_CASES)
def test_model_curve_dense_grid_critical_batch(s_min, b_crit, fraction, flat):
    batch = np.unique(np.round(np.logspace(0, 5, 2000)).astype(int))
    report = classify_regimes(batch, model_steps(batch, s_min, b_crit), fraction, flat)
    expected = (1 + fraction) * batch[0] + fraction * b_crit
    assert report.critical_batch_size == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize("s_min, b_crit, fraction, flat", MODEL_CASES)
def test_model_curve_powers_of_two(s_min, b_crit, fraction, flat):
    steps = model_steps(POW2, s_min, b_crit)
    report = classify_regimes(POW2, steps, fraction, flat)
    flat_from = b_crit * (1 / (2 * flat) - 1)
    assert report.max_useful_batch_size == int(POW2[POW2 >= flat_from][0])
    # log-log interpolation between grid points: within one grid step of the exact crossing
    exact = (1 + fraction) * POW2[0] + fraction * b_crit
    assert exact / 2 < report.critical_batch_size < exact * 2
    for b, label in zip(report.batch_sizes, report.regimes, strict=True):
        if b > report.max_useful_batch_size:
            assert label == "maximal_parallelism"
        elif b <= report.critical_batch_size:
            assert label == "perfect_scaling"
        else:
            assert label == "diminishing_returns"


def test_piecewise_curve():
    # perfect scaling to 32, then steps halve only every 4x, flat from 256 on
    batch = POW2[:12]
    steps = np.array(
        [1024 / b if b <= 32 else (32 / math.sqrt(b / 32) if b <= 256 else 32 / math.sqrt(8)) for b in batch]
    )
    report = classify_regimes(batch, steps, critical_fraction=0.2, flat_fraction=0.1)
    labels = dict(zip(report.batch_sizes, report.regimes, strict=True))
    assert [labels[b] for b in (1, 2, 4, 8, 16, 32)] == ["perfect_scaling"] * 6
    assert [labels[b] for b in (64, 128, 256)] == ["diminishing_returns"] * 3
    assert [labels[b] for b in (512, 1024, 2048)] == ["maximal_parallelism"] * 3
    assert report.max_useful_batch_size == 256
    # E doubles from 32 to 128 (sqrt law: E ~ sqrt(B)); 1.2 = sqrt(B/32) at B = 46.08
    assert report.critical_batch_size == pytest.approx(32 * 1.2**2, rel=1e-12)


def test_noisy_curve_keeps_monotone_labels():
    rng = np.random.default_rng(0)
    steps = model_steps(POW2, 100.0, 64.0) * np.exp(rng.normal(0, 0.05, POW2.size))
    report = classify_regimes(POW2, steps)
    order = [REGIMES.index(r) for r in report.regimes]
    assert order == sorted(order)
    assert 16 < report.critical_batch_size < 64
    assert 128 <= report.max_useful_batch_size <= 1024


def test_unreachable_points_are_skipped():
    steps = model_steps(POW2, 100.0, 64.0)
    steps[[3, 15]] = [np.nan, np.inf]
    report = classify_regimes(POW2[::-1], steps[::-1])  # order of input does not matter
    assert report.batch_sizes == tuple(int(b) for b in POW2)
    assert report.regimes[3] == report.regimes[15] == "unreachable"
    assert report.rows()[3] == {"batch_size": 8, "steps": None, "regime": "unreachable"}
    clean = classify_regimes(np.delete(POW2, [3, 15]), np.delete(steps, [3, 15]))
    assert report.critical_batch_size == clean.critical_batch_size


def test_reference_min_and_never_flat():
    batch = POW2[:6]
    steps = 1000.0 / batch  # perfect scaling throughout
    report = classify_regimes(batch, steps, reference="min")
    assert report.critical_batch_size is None and report.max_useful_batch_size is None
    assert set(report.regimes) == {"perfect_scaling"}


@pytest.mark.parametrize(
    "batch, steps, kwargs",
    [
        pytest.param([0, 2], [1, 1], {}, id="zero-batch"),
        pytest.param([1, 2], [1, -1], {}, id="negative-steps"),
        pytest.param([1, 2], [1], {}, id="length-mismatch"),
        pytest.param([], [], {}, id="empty"),
        pytest.param([2, 2], [1, 1], {}, id="duplicate"),
        pytest.param([1.5, 2], [1, 1], {}, id="non-integer"),
        pytest.param([1, 2], [2, 1], {"reference": "last"}, id="bad-reference"),
        pytest.param([1, 2], [2, 1], {"flat_fraction": 1.0}, id="bad-flat"),
    ],
)
def test_bad_input(batch, steps, kwargs):
    with pytest.raises(InputError):
        classify_regimes(batch, steps, **kwargs)


def test_scaling_rules():
    b = np.array([8.0, 32.0, 128.0])
    assert scaling_rule_lr(b, 32, 0.1, "linear") == pytest.approx([0.025, 0.1, 0.4])
    assert scaling_rule_lr(b, 32, 0.1, "sqrt") == pytest.approx([0.05, 0.1, 0.2])
    lr = scaling_rule_lr(b, 32, 0.1, "noise_scale", b_noise=32.0)
    # eps_max = 0.1 * (1 + 32/32) = 0.2; eps(B) = 0.2 / (1 + 32/B)
    assert lr == pytest.approx([0.2 / 5, 0.1, 0.2 / 1.25])
    with pytest.raises(InputError):
        scaling_rule_lr(b, 32, 0.1, "noise_scale")
    with pytest.raises(InputError):
        scaling_rule_lr([0.0], 32, 0.1, "linear")


def test_reference_min_skips_a_wasteful_first_point():
    # E = B S = 100, 80, 80, 120: against the first point (100) nothing exceeds 20% ; against the
    # minimum (80) the crossing of 96 lies between B=4 (80) and B=8 (120), log-log interpolated
    batch, steps = [1, 2, 4, 8], [100.0, 40.0, 20.0, 15.0]
    assert classify_regimes(batch, steps).critical_batch_size is None
    expected = 4 * 2 ** (math.log(1.2) / math.log(1.5))
    assert classify_regimes(batch, steps, reference="min").critical_batch_size == pytest.approx(expected)
