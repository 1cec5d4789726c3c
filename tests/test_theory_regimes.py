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


# ---- analyze_steps_curve: fitted curve, seeds, every critical-batch definition ---------------------------

from scipy.optimize import brentq  # noqa: E402

from batchscale.theory import regimes as rg  # noqa: E402


def seeded(batch_sizes, s_min, b_crit, noise, n_seeds=3, seed=0):
    """Per-seed steps, the noise of a batch size drawn from a generator keyed by that batch size (so two
    grids sharing a batch size share its seeds' steps)."""
    out = []
    for b in batch_sizes:
        rng = np.random.default_rng([seed, int(b)])
        out.append(list(model_steps([b], s_min, b_crit)[0] * np.exp(rng.normal(0, noise, n_seeds))))
    return out


def test_speedup_is_the_ratio_of_steps_one_doubling_apart():
    # independent: the ratio of the model curve at B/sqrt2 and sqrt2 B, from steps_to_target
    from batchscale.theory.noise_scale import steps_to_target

    b = np.array([3.0, 40.0, 900.0])
    expected = steps_to_target(b / math.sqrt(2), 7, 50) / steps_to_target(b * math.sqrt(2), 7, 50)
    assert rg.fitted_speedup(b, 50) == pytest.approx(expected)
    # batch_at_speedup inverts it (found by root finding)
    for g in (1.1, 1.5, 1.9):
        root = brentq(lambda x, g=g: float(rg.fitted_speedup(x, 50)) - g, 1e-3, 1e7)
        assert float(rg.batch_at_speedup(g, 50)) == pytest.approx(root, rel=1e-6)


def test_exact_curve_critical_batches_by_every_definition():
    b = 2 ** np.arange(0, 11)
    analysis = rg.analyze_steps_curve(b, model_steps(b, 100.0, 40.0).tolist(), n_bootstrap=50)
    assert analysis.b_crit.value == pytest.approx(40, rel=1e-4)
    assert analysis.critical["mccandlish"].value == pytest.approx(40, rel=1e-4)
    assert analysis.critical["examples_overhead"].value == pytest.approx(0.2 * 40, rel=1e-4)
    # Zhang et al.'s rule from B0 = 1: E(B)/E(1) = 1.2 -> B = 1.2 * 1 + 0.2 * 40 (log-log interpolation)
    assert analysis.critical["zhang2024"].value == pytest.approx(9.2, rel=0.03)
    # max useful: the doubling around B cuts the steps by 10%, found by root finding on the model curve
    root = brentq(lambda x: float(model_steps([x * 2**0.5], 1, 40)[0] / model_steps([x / 2**0.5], 1, 40)[0])
                  - 0.9, 1, 1e6)
    assert analysis.max_useful.value == pytest.approx(root, rel=1e-4)
    assert set(analysis.critical) == set(rg.CRITICAL_DEFINITIONS)


@pytest.mark.parametrize("b_crit", [3.0, 40.0, 400.0])
def test_max_useful_is_never_below_any_fit_based_critical_batch(b_crit):
    b = 2 ** np.arange(0, 12)
    analysis = rg.analyze_steps_curve(b, seeded(b, 100, b_crit, 0.05), n_bootstrap=200)
    for name in ("mccandlish", "examples_overhead"):
        assert analysis.max_useful.value > analysis.critical[name].value
    labels = analysis.regimes
    order = {"perfect_scaling": 0, "diminishing_returns": 1, "maximal_parallelism": 2}
    decided = [order[x] for x in labels if x in order]
    assert decided == sorted(decided)  # never perfect after diminishing, etc.


def test_labels_do_not_depend_on_where_the_grid_starts():
    """Exact curve with B_crit = 400: the grid 1..65536, its tail from 4096 and a middle slice give the
    same label at every shared batch size; B = 4096 is not perfect scaling when the list starts there."""
    full = 2 ** np.arange(0, 17)
    labels = {}
    for grid in (full, full[full >= 4096], full[(full >= 64) & (full <= 2048)]):
        analysis = rg.analyze_steps_curve(grid, model_steps(grid, 50, 400).tolist(), n_bootstrap=100)
        labels[len(grid)] = dict(zip(analysis.batch_sizes, analysis.regimes, strict=True))
    whole = labels[len(full)]
    for part in labels.values():
        assert all(part[b] == whole[b] for b in part)
    assert labels[5][4096] == "maximal_parallelism"
    # the old cumulative rule labels the first point perfect whatever it is: the bug this replaces
    tail = full[full >= 4096]
    assert classify_regimes(tail, model_steps(tail, 50, 400)).regimes[0] == "perfect_scaling"


def test_noisy_grid_shift_never_calls_a_flat_start_perfect():
    full = 2 ** np.arange(0, 17)
    tail = full[full >= 4096]
    analysis = rg.analyze_steps_curve(tail, seeded(tail, 50, 400, 0.02), n_bootstrap=300)
    assert analysis.regimes[0] in ("maximal_parallelism", "undecided")
    assert not analysis.critical["zhang2024"].identifiable  # no linear-scaling reference at 4096


def test_a_point_on_a_regime_boundary_is_undecided():
    # B = 64 sits where the fitted speed-up per doubling crosses the perfect-scaling threshold
    perfect, _ = rg.speedup_thresholds(0.2, 0.1)
    b_crit = 64 / float(rg.batch_at_speedup(perfect, 1.0))
    b = 2 ** np.arange(2, 12)
    analysis = rg.analyze_steps_curve(b, seeded(b, 100, b_crit, 0.05), n_bootstrap=300)
    assert analysis.regimes[list(b).index(64)] == rg.UNDECIDED
    # planted: exact data (no uncertainty) decides it
    exact = rg.analyze_steps_curve(b, model_steps(b, 100, b_crit * 1.3).tolist(), n_bootstrap=0)
    assert exact.regimes[list(b).index(64)] != rg.UNDECIDED


def test_unidentifiable_quantities_are_flagged_not_given_absurd_intervals():
    b = 2 ** np.arange(0, 9)
    perfect = rg.analyze_steps_curve(b, seeded(b, 10, 1e5, 0.03), n_bootstrap=300)
    assert not perfect.b_crit.identifiable and perfect.b_crit.high is None
    assert not perfect.s_min.identifiable and perfect.e_min.identifiable
    assert not perfect.max_useful.identifiable and perfect.max_useful.high is None
    flat = rg.analyze_steps_curve(b * 64, seeded(b * 64, 10, 0.5, 0.03), n_bootstrap=300)
    assert not flat.b_crit.identifiable and flat.b_crit.low is None
    assert flat.s_min.identifiable and not flat.e_min.identifiable
    good = rg.analyze_steps_curve(b, seeded(b, 100, 20, 0.03), n_bootstrap=300)
    assert good.b_crit.identifiable and good.b_crit.low < 20 < good.b_crit.high


def test_seed_misses_and_single_seed_fallback():
    b = [4, 8, 16, 32, 64]
    seeds = seeded(b, 100, 10, 0.05)
    seeds[0] = [None, None, 900.0]  # most seeds missed: unreachable
    seeds[1] = [None, 600.0, 610.0]  # one missed: the median is the larger reached value
    analysis = rg.analyze_steps_curve(b, seeds, n_bootstrap=100)
    assert analysis.regimes[0] == rg.UNREACHABLE and analysis.steps[0] == math.inf
    assert analysis.steps[1] == 610.0 and analysis.steps_low[1] == 600.0 and analysis.bootstrap == "seeds"
    single = rg.analyze_steps_curve(b, [s[2] for s in seeded(b, 100, 10, 0.05)], n_bootstrap=100)
    assert single.bootstrap == "residuals" and single.n_seeds == (1,) * 5
    few = rg.analyze_steps_curve(b, [None, None, None, 5.0, 4.0], n_bootstrap=100)
    assert few.fit is None and few.regimes == ("unreachable",) * 3 + ("undecided",) * 2


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"seed_steps": [[1.0]] * 3}, id="length-mismatch"),
        pytest.param({"seed_steps": [[1.0], [-2.0], [1.0], [1.0]]}, id="negative-steps"),
        pytest.param({"seed_steps": [[1.0], [], [1.0], [1.0]]}, id="no-seeds"),
        pytest.param({"seed_steps": [4.0, 3.0, 2.0, 1.0], "flat_fraction": 0.4}, id="flat-too-large"),
        pytest.param({"seed_steps": [4.0, 3.0, 2.0, 1.0], "level": 1.0}, id="level-1"),
    ],
)
def test_analyze_bad_input(kwargs):
    with pytest.raises(InputError):
        rg.analyze_steps_curve([1, 2, 4, 8], **kwargs)


@pytest.mark.slow
def test_seed_bootstrap_intervals_cover():
    """80 seeded curves, 3 seeds with 5% noise: the 95% seed-bootstrap intervals of B_crit, S_min, E_min
    hold the truth 88-100% of the time."""
    b = 2 ** np.arange(2, 9)
    hits = {"b_crit": 0, "s_min": 0, "e_min": 0}
    for k in range(80):
        a = rg.analyze_steps_curve(b, seeded(b, 100, 40, 0.05, seed=k + 1), n_bootstrap=400, seed=k)
        for name, truth in (("b_crit", 40), ("s_min", 100), ("e_min", 4000)):
            e = getattr(a, name)
            hits[name] += e.low < truth < e.high
    assert all(0.88 <= h / 80 <= 1.0 for h in hits.values()), hits
