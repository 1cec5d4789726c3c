"""``sharpness``: the verdict logic on synthetic solutions and grids (planted wrong predictions fail), the
grid's read-outs against hand-made arrays, and a linear model's solution sharpness against its exact value."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchscale.empirical.solutions import Solution
from batchscale.verify import sharpness
from batchscale.verify.lr_grid import (
    Grid,
    best_accuracy,
    best_batch,
    good_width,
    largest_stable,
    seed_slopes,
    t_interval,
)


def solutions(m: int, values: list[float], status: str = "reached") -> list[Solution]:
    return [Solution(m, 0.1, s, status, 100, 0.05, v, 1e-6, 20) for s, v in enumerate(values)]


def test_sharper_large_batch_passes_and_the_planted_flatter_prediction_fails():
    small, large = solutions(8, [1.0, 1.2, 0.9]), solutions(512, [3.0, 3.3, 2.8])
    row = sharpness.ratio_row(small, large, "w", {})
    assert row.verdict == "pass" and row.measured == pytest.approx(math.exp(np.mean(np.log([3, 3.3 / 1.2,
                                                                                            2.8 / 0.9]))))
    assert sharpness.ratio_row(small, large, "w", {}, direction="flatter").verdict == "fail"
    flatter = sharpness.ratio_row(large, small, "w", {})  # the data say flatter: the claim fails
    assert flatter.verdict == "fail"


def test_unreached_targets_leave_the_ratio_inconclusive():
    row = sharpness.ratio_row(solutions(8, [1.0, 1.0, 1.0], "missed"), solutions(512, [2.0] * 3), "w", {})
    assert row.verdict == "inconclusive" and "fewer than 2 seeds" in row.reason


def grid(peak: int, sizes=(2, 8, 32, 128, 512), noise: float = 0.002) -> Grid:
    """Accuracy peaked at batch ``peak`` (0.95 there, 1 point lower per factor 4 away), three seeds."""
    rng = np.random.default_rng(0)
    rates = (0.001, 0.01, 0.1)
    acc = np.zeros((len(sizes), len(rates), 3))
    for i, m in enumerate(sizes):
        top = 0.95 - 0.01 * abs(math.log(m / peak, 4))
        jitter = noise * rng.standard_normal((len(rates), 3))
        acc[i] = np.array([top - 0.05, top, top - 0.01])[:, None] + jitter
    return Grid("w", {}, "sum", tuple(sizes), rates, (0, 1, 2), 3.0, acc, np.zeros(acc.shape, bool), "-")


def test_best_batch_inside_two_to_thirty_two_passes_and_planted_large_batch_fails():
    row = sharpness.best_batch_row(grid(8), {})
    assert row.measured == 8 and row.verdict == "pass"
    assert sharpness.best_batch_row(grid(8), {}, expect="large").verdict == "fail"


def test_a_best_batch_at_512_fails_the_masters_luschi_range():
    assert sharpness.best_batch_row(grid(512), {}).verdict == "fail"


def test_grid_read_outs_on_hand_made_arrays():
    acc = np.array([[[0.90, 0.80], [0.95, np.nan], [0.94, 0.93]]])  # (1 batch, 3 rates, 2 seeds)
    assert best_accuracy(acc).tolist() == [[0.95, 0.93]]
    assert good_width(acc, [1.0, 2.0, 4.0]).tolist() == [[2.0, 1.0]]  # within 0.02: 2 rates, 1 rate
    diverged = np.array([[[False, False], [False, True], [True, True]]])
    rates = np.array([[1.0, 2.0, 4.0]])
    assert largest_stable(diverged, rates).tolist() == [[2.0, 1.0]]
    assert np.isnan(largest_stable(np.ones((1, 3, 1), bool), rates)[0, 0])
    assert seed_slopes([0.0, 1.0, 2.0], np.array([[0.0, 1.0], [2.0, np.nan], [4.0, 3.0]])) == pytest.approx(
        [2.0, 1.0])
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.302652729911275 / math.sqrt(3))


def test_best_batch_interval_spreads_when_seeds_disagree():
    best = np.array([[0.90, 0.95, 0.90], [0.95, 0.90, 0.91]])  # (2 batches, 3 seeds)
    found = best_batch([2, 8], best)
    assert found.batch_size == 8 and (found.low, found.high) == (2, 8)


def test_a_linear_models_solution_has_its_exact_sharpness():
    from batchscale.empirical.solutions import train_to_loss
    from batchscale.empirical.workloads import get_workload

    wl = get_workload("linreg", device="cpu", seed=0, dim=5, n_train=64, n_test=8, noise_std=0.1)
    start = float(((wl.y_train) ** 2).mean())
    found = train_to_loss(wl, 16, 0.05, 0, target=0.5 * start, max_steps=2000, tol=1e-8)
    x = wl.x_train.double()
    exact = 2 * float(np.linalg.eigvalsh((x.T @ x / x.shape[0]).numpy())[-1])  # Hessian of mean (w.x - y)^2
    assert found.status == "reached" and found.train_loss <= 0.5 * start
    assert found.sharpness == pytest.approx(exact, rel=1e-4)
