"""``nqm-transfer`` rows on a synthetic network that IS a noisy quadratic model (its seeded steps are the
model's times log-normal noise): the model built from its own spectra passes; the planted wrong models
(isotropic noise with the same total, the noise x10) fail; a too-noisy measurement is inconclusive. And the
measuring side end to end on a tiny digits MLP: reference run, spectra, model, rows."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from batchscale.verify import nqm_transfer
from batchscale.verify.nqm_transfer import (
    build_model,
    joined,
    measuring_point,
    predict,
    reference_run,
    transfer_rows,
)
from batchscale.verify.registry import resolve
from batchscale.verify.steps_sweep import curves_of

BATCH = (4, 8, 16, 32, 64, 128, 256)
PARTS = {
    "top_curvature": list(np.geomspace(4.7, 1.0, 10)),
    "top_noise": list(np.geomspace(4.0, 0.5, 10)),
    "bulk_curvature": list(np.geomspace(1.0, 5e-3, 20)),
    "bulk_counts": list(np.geomspace(5, 300, 20)),
}
MEASURED = {"spectrum": {**PARTS, "trace_sigma": float(sum(PARTS["top_noise"])) + 30.0},
            "initial_loss": 2.3, "target_loss": 0.4, "floor": 0.0}


def synthetic_network(predicted, seeds: int, noise: float, seed: int = 0):
    """Sweep curves whose per-seed steps are the model's steps times exp(noise * N(0, 1))."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, curve in predicted.items():
        for b, s in zip(curve.batch_sizes, curve.steps, strict=True):
            steps = s * np.exp(noise * rng.standard_normal(seeds))
            rows.append({"optimizer": name, "batch_size": b, "steps": float(np.median(steps)),
                         "learning_rate": 0.1, "seed_steps": [float(v) for v in steps],
                         "seed_learning_rates": [0.1] * seeds})
    return curves_of(rows, tuple(predicted))


def model_curves(**planted):
    model, target = build_model(MEASURED, **planted)
    return predict(model, target, BATCH, 1437, 0.9)


@pytest.fixture(scope="module")
def truth():
    return model_curves()


@pytest.fixture(scope="module")
def network(truth):
    return synthetic_network(truth, seeds=5, noise=0.04)


def verdicts(rows, quantity):
    return [r.verdict for r in rows if r.quantity == quantity]


def test_the_model_of_the_network_passes(truth, network):
    rows = transfer_rows(truth, network, {}, "synthetic", 5)
    assert verdicts(rows, "critical_batch") == ["pass", "pass"]
    assert set(verdicts(rows, "steps_shape")) == {"pass"} and len(verdicts(rows, "steps_shape")) == 14
    assert "verdict uses mccandlish" in rows[0].reason and "zhang2024" in rows[0].reason


@pytest.mark.parametrize("planted", [{"noise_model": "isotropic"}, {"noise_factor": 10.0}])
def test_planted_wrong_models_fail(network, planted):
    rows = transfer_rows(model_curves(**planted), network, {}, "synthetic", 5)
    assert verdicts(rows, "critical_batch") == ["fail", "fail"]
    assert "fail" in verdicts(rows, "steps_shape")


def test_a_too_noisy_sweep_is_inconclusive_never_pass(truth):
    noisy = synthetic_network(truth, seeds=3, noise=0.6, seed=2)
    rows = transfer_rows(model_curves(noise_model="isotropic"), noisy, {}, "synthetic", 3)
    assert "inconclusive" in verdicts(rows, "critical_batch")
    assert "pass" not in verdicts(rows, "critical_batch")


def test_the_prediction_seed_range_joins_the_measured_interval(truth, network):
    p, span = joined((30.0, 60.0), [20.0, 80.0])
    assert p == pytest.approx(40.0) and span == pytest.approx((15.0, 120.0))  # ratio [30/80, 60/20] x 40
    assert joined((30.0, 60.0), [40.0]) == (40.0, (30.0, 60.0))
    # the right model from three seeds of the spectra, one of them 3x off: too spread to decide
    wide = model_curves(noise_factor=3.0)
    rows = transfer_rows({n: [truth[n], truth[n], wide[n]] for n in truth}, network, {}, "synthetic", 5)
    assert "pass" not in verdicts(rows, "critical_batch")
    same = transfer_rows({n: [truth[n]] * 3 for n in truth}, network, {}, "synthetic", 5)
    assert verdicts(same, "critical_batch") == ["pass", "pass"]


def test_measuring_point_is_the_nearest_reached_sgd_batch():
    rows = [{"optimizer": "sgd", "batch_size": b, "steps": s, "learning_rate": 0.1 * b}
            for b, s in ((8, 10.5), (32, None), (64, 3.0))] + [
        {"optimizer": "momentum", "batch_size": 16, "steps": 4.0, "learning_rate": 1.0}]
    assert measuring_point(rows, 32) == (64, 6.4, 3)  # 32 missed: log-distance 1 to 64, 2 to 8
    assert measuring_point(rows, 16) == (8, 0.8, 11)
    assert measuring_point(rows[1:2], 16) is None


def test_the_measuring_side_end_to_end_on_a_tiny_mlp(monkeypatch):
    monkeypatch.setitem(nqm_transfer.SPECTRUM, True, {"k": 3, "probes": 1, "steps": 4})
    sweep = SimpleNamespace(
        rows=[{"optimizer": "sgd", "batch_size": 16, "steps": 6.0, "learning_rate": 0.3}],
        config={"workload": "digits-mlp", "workload_options": {"hidden": 8}},
    )
    measured = reference_run(resolve(quick=True), sweep)
    spec = measured["spectrum"]
    assert measured["checkpoint"] == 3 and measured["n_train"] == measured["examples"] == 1437
    assert measured["initial_loss"] > measured["target_loss"] > 0
    assert len(spec["top_curvature"]) == 3 and spec["top_curvature"][0] >= spec["top_curvature"][2]
    assert sum(spec["bulk_counts"]) == pytest.approx(spec["dim"] - 3)
    assert 0 <= sum(spec["top_noise"]) <= spec["trace_sigma"]
    model, target = build_model(measured)
    assert model.spectrum.initial_loss() == pytest.approx(measured["initial_loss"])
    assert target == pytest.approx(measured["target_loss"])
    curves = predict(model, target, (4, 16, 64), measured["n_train"], 0.9)
    for curve in curves.values():
        assert all(math.isfinite(s) and s > 0 for s in curve.steps)
        assert curve.steps[0] >= curve.steps[-1]
