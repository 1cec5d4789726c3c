"""Coverage of the bootstrap intervals of analyze_steps_curve on seeded synthetic curves.

Truth = the parameters the curves were drawn from, S(B) = S_min (1 + B_crit/B) times log-normal noise per
seed; an interval counts as holding the truth when the truth lies strictly inside it (an open end, flagged
not identifiable, is 0 or inf). Each check plants the old, uncalibrated percentile interval (raw
residuals; each point's own seeds resampled) and asserts that it under-covers on the same curves.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchscale.theory import noise_scale as ns
from batchscale.theory import regimes as rg

GRIDS = {"6pts": (0, 12, 2), "11pts": (0, 11, 1), "7pts": (2, 9, 1)}


def old_rule_intervals(batch: np.ndarray, steps: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    """The uncalibrated 95% percentile intervals: one seed, the fit's residuals only rescaled by
    sqrt(n/(n-2)); several, each point's own seeds resampled with replacement. ``steps`` (points, seeds)."""
    rng = np.random.default_rng(seed)
    median = np.median(steps, axis=1)  # (points,)
    if steps.shape[1] == 1:
        fit = ns.fit_steps_curve(batch, median)
        curves = ns.residual_bootstrap(fit, batch, median, n_bootstrap, rng)  # (K, points)
    else:
        shape = (n_bootstrap, *steps.shape)
        pick = rng.integers(0, steps.shape[1], size=shape)  # (K, points, seeds)
        curves = np.log(np.median(np.take_along_axis(np.broadcast_to(steps, shape), pick, axis=2), axis=2))
    params = np.exp(ns.fit_log_curves(np.log(batch), curves))  # (K, 2): S_min, B_crit
    draws = {"s_min": params[:, 0], "b_crit": params[:, 1], "e_min": params[:, 0] * params[:, 1]}
    return {name: tuple(np.quantile(d, [0.025, 0.975])) for name, d in draws.items()}


def bootstrap_coverage(batch, n_curves: int, n_seeds: int, noise: float, *, s_min: float = 300.0,
                       b_crit: float = 20.0, n_bootstrap: int = 200, seed: int = 7,
                       rule: str = "analysis") -> dict[str, float]:
    """Share of ``n_curves`` synthetic curves whose 95% interval of S_min, B_crit, E_min holds the truth.
    ``rule``: analyze_steps_curve's intervals, ``"fit"`` fit_steps_curve's ``*_boot_low/high`` (one seed),
    ``"planted"`` the old rule's."""
    batch = np.asarray(batch, dtype=float)
    rng = np.random.default_rng(seed)
    truth = {"s_min": s_min, "b_crit": b_crit, "e_min": s_min * b_crit}
    hits = dict.fromkeys(truth, 0)
    for k in range(n_curves):
        noise_draw = np.exp(rng.normal(0.0, noise, (batch.size, n_seeds)))  # (points, seeds)
        steps = s_min * (1.0 + b_crit / batch)[:, None] * noise_draw  # (points, seeds)
        if rule == "planted":
            intervals = old_rule_intervals(batch, steps, n_bootstrap, seed=k)
        elif rule == "fit":
            fit = ns.fit_steps_curve(batch, steps[:, 0], n_bootstrap=n_bootstrap, seed=k)
            intervals = {name: (getattr(fit, f"{name}_boot_low"), getattr(fit, f"{name}_boot_high"))
                         for name in truth}
        else:
            per_point = steps.tolist() if n_seeds > 1 else steps[:, 0].tolist()
            a = rg.analyze_steps_curve(batch.astype(int).tolist(), per_point, n_bootstrap=n_bootstrap, seed=k)
            assert a.bootstrap == ("seeds" if n_seeds > 1 else "residuals")
            intervals = {name: (getattr(a, name).low or 0.0, getattr(a, name).high or math.inf)
                         for name in truth}
        for name, value in truth.items():
            low, high = intervals[name]
            hits[name] += low < value < high
    return {name: h / n_curves for name, h in hits.items()}


@pytest.mark.parametrize("n_seeds", [1, 2], ids=["residuals", "seeds"])
def test_bootstrap_intervals_cover_light(n_seeds):
    """60 curves, 7 points (B = 4..256), 2% noise: the calibrated 95% intervals hold the truth >= 90% of
    the time; the old rule (raw residuals; with 2 seeds each point's own seeds resampled) does so < 90%
    for some quantity."""
    batch = 2.0 ** np.arange(*GRIDS["7pts"])
    coverage = bootstrap_coverage(batch, 60, n_seeds, 0.02)
    assert all(c >= 0.9 for c in coverage.values()), coverage
    planted = bootstrap_coverage(batch, 60, n_seeds, 0.02, rule="planted")
    assert min(planted.values()) < 0.9, planted


def test_fit_bootstrap_intervals_cover_light():
    """fit_steps_curve's own residual bootstrap (predict noise-scale --bootstrap), same 60 curves as the
    residuals case above (where the old rule, planted, covered < 90%): >= 90%."""
    coverage = bootstrap_coverage(2.0 ** np.arange(*GRIDS["7pts"]), 60, 1, 0.02, rule="fit")
    assert all(c >= 0.9 for c in coverage.values()), coverage


@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.02, 0.1])
@pytest.mark.parametrize("n_seeds", [1, 2, 3, 5], ids=["residuals", "2seeds", "3seeds", "5seeds"])
@pytest.mark.parametrize("grid", list(GRIDS))
def test_bootstrap_intervals_have_nominal_coverage(grid, n_seeds, noise):
    """200 curves (B_crit 20) per grid, seed count and noise level: the 95% intervals cover 91-99% (the
    goal is 92-99%; 200 curves measure a coverage of 95% to +-1.5 points, so the floor is 2.6 of them
    below 95%). The old rule covered 86-91% with one seed, 67-76% with 2, 97-98.5% with 5."""
    batch = 2.0 ** np.arange(*GRIDS[grid])
    coverage = bootstrap_coverage(batch, 200, n_seeds, noise, n_bootstrap=400)
    assert all(0.91 <= c <= 0.99 for c in coverage.values()), coverage


@pytest.mark.slow
@pytest.mark.parametrize("n_seeds", [1, 2], ids=["residuals", "2seeds"])
def test_old_bootstrap_rule_under_covers(n_seeds):
    """The planted old rule, on the same 200 curves per grid: below 91% for some quantity on every grid
    (with 3 seeds it happened to cover 93-98%: resampling 3 seeds overstates a median's variance 1.2x)."""
    for grid in GRIDS.values():
        planted = bootstrap_coverage(2.0 ** np.arange(*grid), 200, n_seeds, 0.02, n_bootstrap=400,
                                     rule="planted")
        assert min(planted.values()) < 0.91, (grid, planted)


@pytest.mark.slow
@pytest.mark.parametrize("b_crit", [3.0, 300.0])
@pytest.mark.parametrize("n_seeds", [1, 3], ids=["residuals", "3seeds"])
def test_bootstrap_intervals_cover_near_the_grid_ends(b_crit, n_seeds):
    """B_crit near either end of B = 1..1024: still 91-99% (open, not-identified ends count as 0/inf)."""
    coverage = bootstrap_coverage(2.0 ** np.arange(0, 11), 200, n_seeds, 0.02, b_crit=b_crit,
                                  n_bootstrap=400)
    assert all(0.91 <= c <= 0.99 for c in coverage.values()), coverage


@pytest.mark.slow
@pytest.mark.parametrize("grid", list(GRIDS))
def test_fit_bootstrap_intervals_have_nominal_coverage(grid):
    """fit_steps_curve's *_boot_low/high on 200 curves per grid: 91-99% (the old rule: 86-92%)."""
    coverage = bootstrap_coverage(2.0 ** np.arange(*GRIDS[grid]), 200, 1, 0.02, n_bootstrap=400, rule="fit")
    assert all(0.91 <= c <= 0.99 for c in coverage.values()), coverage
