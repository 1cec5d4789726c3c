"""``saddle``: noise escapes, the full batch never does; planted wrong predictions fail."""

from __future__ import annotations

import math

import pytest

from batchscale.verify import saddle


@pytest.fixture(scope="module")
def problem():
    return saddle.make_problem(seed=0, pairs=8)  # M = 16


@pytest.fixture(scope="module")
def measured(problem):
    return [
        saddle.SaddleRuns(m, saddle.escape_steps(problem, m, 60, seed=m, max_steps=400), 400)
        for m in (1, 12, 16)
    ]


def test_offsets_mean_is_exactly_zero(problem):
    assert float(problem.offsets.sum(0).abs().max()) == 0.0
    assert float(saddle.gradient(problem.offsets[:1] * 0, problem.offsets[None]).abs().max()) == 0.0


def test_noise_escapes_full_batch_never(problem, measured):
    rows = saddle.saddle_rows(problem, measured, {})
    assert [r.verdict for r in rows] == ["pass"] * 3, [r.reason for r in rows]
    assert [r.quantity for r in rows] == ["escape_steps", "escape_steps", "full_batch_escaped_fraction"]
    assert rows[1].measured > rows[0].measured + 10  # fewer, less noisy steps: slower escape
    assert rows[2].measured == 0.0


def test_planted_full_batch_escapes_fails(problem, measured):
    def escapes_like_m_1(m, population, variance):
        return saddle.predicted_escape_steps(1, population, variance)

    rows = saddle.saddle_rows(problem, measured, {}, predict=escapes_like_m_1)
    assert rows[2].quantity == "full_batch_escaped_fraction" or rows[2].quantity == "escaped_fraction"
    assert rows[2].predicted == 1.0 and rows[2].verdict == "fail"
    assert rows[1].verdict == "fail"  # escape time independent of m is wrong at m = 12 of 16


def test_prediction_is_infinite_only_at_full_batch(problem):
    assert math.isinf(saddle.predicted_escape_steps(16, 16, problem.variance))
    assert math.isfinite(saddle.predicted_escape_steps(15, 16, problem.variance))
