"""``stability``: SGD's divergence boundary on least squares vs mean-square theory; planted bound fails."""

from __future__ import annotations

import math

import pytest

from batchscale.empirical.curvature_noise import CurvatureNoise
from batchscale.verify import registry, stability
from batchscale.verify.common import build_workload

TINY = {**stability.QUICK_OPTIONS, "n_test": 8}  # at dim 5, training at m = 1 survives 1.6x the prediction


@pytest.fixture(scope="module")
def measured():
    workload = build_workload(registry.resolve(device="cpu"), "linreg", TINY)
    inputs = workload.x_train.double().numpy()
    points = []
    for m in (1, 32):
        predicted = stability.predicted_max_lr(inputs, m)
        lrs = [predicted * f for f in stability.GRID]
        diverged = stability.diverges(workload, m, lrs, seeds=[0, 1, 2], steps=300)
        points.append(stability.StabilityPoint(m, predicted, stability.boundaries(lrs, diverged)))
    return inputs, points


def test_theory_predicts_the_boundary(measured):
    inputs, points = measured
    rows = stability.stability_rows(inputs, points, {})
    assert [r.verdict for r in rows] == ["pass", "pass"], [r.reason for r in rows]
    assert rows[1].measured > 2 * rows[0].measured  # larger batches tolerate larger learning rates


def test_planted_full_batch_bound_fails_at_small_batch(measured):
    inputs, points = measured
    rows = stability.stability_rows(inputs, points, {}, predict=stability.full_batch_lr)
    assert rows[0].verdict == "fail"


def test_boundaries_from_a_divergence_table():
    import torch

    diverged = torch.tensor([[False, False], [False, True], [True, True]])
    got = stability.boundaries([1.0, 2.0, 4.0], diverged)
    assert got[0] == pytest.approx(math.sqrt(8.0)) and got[1] == pytest.approx(math.sqrt(2.0))
    assert math.isnan(stability.boundaries([1.0, 2.0], torch.tensor([[False], [False]]))[0])


# --- networks: the local quadratic model with curvature noise (synthetic measurements: verdict logic) ---

NOISE = [CurvatureNoise(0.72, 0.72, 0.86, 8.66, 1437, 40, 1e-6)]  # digits-mlp's initial point, measured
SIZES = (1, 8, 64, 512)


def network_points(factor: float = 1.1) -> list:
    """Boundaries at ``factor`` x the model's prediction, with a 5% spread over three seeds."""
    model = stability.network_prediction(NOISE, 1437)
    return [stability.NetworkPoint(m, model(m), [model(m) * factor * f for f in (0.95, 1.0, 1.05)],
                                   [0.04] * 3) for m in SIZES]


def test_the_network_model_passes_where_training_follows_it():
    rows = stability.network_rows(network_points(), "digits-mlp", {})
    assert [r.verdict for r in rows] == ["pass"] * 6, [r.reason for r in rows]
    assert [r.quantity for r in rows[-2:]] == ["max_stable_base_lr_slope", "base_lr_range_narrows"]


@pytest.mark.parametrize("rule,failing", [
    ("no-noise", "max_stable_lr_network"),  # 2/lambda at m = 1 is 17x too large
    ("along-v", "max_stable_lr_network"),  # only v^T H_i v's variance: 7x too large at m = 1
    ("linear", "max_stable_base_lr_slope"),  # linear scaling past the noise-dominated range
])
def test_planted_network_predictions_fail(rule, failing):
    planted = stability.network_prediction(NOISE, 1437, rule)
    rows = stability.network_rows(network_points(), "digits-mlp", {}, predict=planted)
    assert any(r.quantity == failing and r.verdict == "fail" for r in rows), [r.reason for r in rows]


def test_a_widening_base_rate_range_fails_and_a_flat_one_is_undecided():
    rows = stability.network_rows(network_points(), "digits-mlp", {}, narrowing="widens")
    assert rows[-1].verdict == "fail"
    assert stability.narrowing_row(0.0, (-0.1, 0.1), 3, "w", {}).verdict == "inconclusive"
    assert stability.narrowing_row(0.3, (0.2, 0.4), 3, "w", {}).verdict == "fail"


@pytest.mark.slow
def test_quick_network_stability_runs_end_to_end(tmp_path):
    rows = stability.run(registry.resolve(workload="digits-mlp", workload_options={"hidden": 64}, quick=True,
                                          db=str(tmp_path / "runs.sqlite")))
    assert len(rows) == 6 and all(r.n_seeds == 3 for r in rows)
    assert rows[-1].verdict == "pass"  # the largest stable base rate falls with m
