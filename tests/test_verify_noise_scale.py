"""``noise-scale`` rows on synthetic seeded curves from S(B) = S_min (1 + B_crit/B): B_simple near B_crit
passes and B_simple / 20 fails; measured points on the hyperbola pass (S/S_min - 1)(E/E_min - 1) = 1 and
the planted exponent-2 hyperbola fails."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_verify_regimes import synthetic_curves

from batchscale.verify.noise_scale import b_simple_of_run, noise_scale_rows, tradeoff_products


@pytest.fixture(scope="module")
def curves():
    return synthetic_curves(sgd=32.0, momentum=64.0)


def verdicts(rows, quantity):
    return [r.verdict for r in rows if r.quantity == quantity]


def test_b_simple_near_b_crit_passes_and_the_claim_says_which_definition(curves):
    rows = noise_scale_rows([25.0, 40.0, 31.0], curves, {}, "synthetic")
    ratio = rows[0]
    assert ratio.verdict == "pass"
    assert "verdict uses mccandlish" in ratio.reason
    for name in ("mccandlish", "examples_overhead", "zhang2024"):
        assert name in ratio.reason


def test_planted_b_simple_over_twenty_fails(curves):
    rows = noise_scale_rows([25.0, 40.0, 31.0], curves, {}, "synthetic", scale=1 / 20)
    assert rows[0].verdict == "fail"


def test_points_on_the_hyperbola_pass(curves):
    rows = noise_scale_rows([32.0] * 3, curves, {}, "synthetic")
    assert len(verdicts(rows, "tradeoff_product")) == 14
    found = verdicts(rows, "tradeoff_product")
    assert "fail" not in found and found.count("pass") >= 6  # far from B_crit a point can be too noisy


def test_planted_exponent_two_fails(curves):
    rows = noise_scale_rows([32.0] * 3, curves, {}, "synthetic", exponent=2.0)
    assert "fail" in verdicts(rows, "tradeoff_product")


def test_tradeoff_product_is_one_on_the_model_curve():
    b = np.array([2.0, 10.0, 500.0])
    steps = 7.0 * (1 + 40.0 / b)
    assert tradeoff_products(b, steps, 7.0, 280.0) == pytest.approx([1.0, 1.0, 1.0])
    assert tradeoff_products(b, steps, 7.0, 280.0, exponent=2.0) == pytest.approx(b / 40.0)


def test_b_simple_of_run_skips_the_start_and_bad_checkpoints():
    rows = [
        {"step": 0, "b_simple": 1000.0, "status": "ok"},
        {"step": 5, "b_simple": 10.0, "status": "ok"},
        {"step": 10, "b_simple": 30.0, "status": "ok"},
        {"step": 15, "b_simple": 1e6, "status": "undefined"},
    ]
    assert b_simple_of_run(rows) == pytest.approx(20.0)
    assert math.isnan(b_simple_of_run(rows[:1]))


def test_no_b_simple_is_inconclusive_never_pass(curves):
    rows = noise_scale_rows([], curves, {}, "synthetic")
    assert rows[0].verdict == "inconclusive"


def test_no_reached_batch_measures_nothing():
    from types import SimpleNamespace

    from batchscale.verify.noise_scale import measure_b_simple
    from batchscale.verify.registry import resolve

    sweep = SimpleNamespace(rows=[{"optimizer": "sgd", "batch_size": 4, "steps": None}], n_seeds=3)
    assert measure_b_simple(resolve(quick=True), sweep)[0] == []
