"""The one verdict function every claim uses: pass, fail, inconclusive under each tolerance kind."""

from __future__ import annotations

import math

import pytest

from batchscale.errors import InputError
from batchscale.verify import Row, all_pass, judge, summary
from batchscale.verify.rows import make_row, not_built

CASES = [
    # (predicted, measured, tolerance, kind, stderr, ci, expected)
    (10.0, 10.0, 0, "absolute", None, None, "pass"),
    (10.0, 11.0, 0, "absolute", None, None, "fail"),  # an exact count off by one
    (10.0, 10.4, 0.5, "absolute", 0.01, None, "pass"),
    (10.0, 10.4, 0.5, "absolute", 0.1, None, "inconclusive"),  # 95% interval reaches 10.6 > 10.5
    (10.0, 11.0, 0.5, "absolute", 0.1, None, "fail"),  # interval [10.8, 11.2] wholly above the band
    (2.0, 2.08, 0.05, "relative", None, None, "pass"),
    (2.0, 2.2, 0.05, "relative", None, None, "fail"),
    (100.0, 180.0, 2, "factor", None, (150.0, 190.0), "pass"),
    (100.0, 300.0, 2, "factor", None, (250.0, 350.0), "fail"),
    (100.0, 180.0, 2, "factor", None, (120.0, 260.0), "inconclusive"),
    (100.0, -1.0, 2, "factor", None, None, "fail"),
    (1.0, 1.03, 4, "z-score", 0.01, None, "pass"),
    (1.0, 1.05, 4, "z-score", 0.01, None, "fail"),
    (1.0, 1.0, 4, "z-score", 0.3, None, "inconclusive"),  # 4 stderr = 1.2 >= |predicted|: cannot decide
    (1.0, 1.0, 4, "z-score", None, None, "inconclusive"),
    (0.0, 1e-9, 4, "z-score", 0.0, None, "fail"),  # exact zero predicted, no noise: any gap fails
    (0.0, 0.0, 0, "absolute", None, None, "pass"),
    (math.inf, math.inf, 0, "absolute", None, None, "pass"),
    (1.0, math.nan, 1, "relative", None, None, "inconclusive"),
]


@pytest.mark.parametrize(("predicted", "measured", "tol", "kind", "stderr", "ci", "expected"), CASES)
def test_judge(predicted, measured, tol, kind, stderr, ci, expected):
    verdict = judge(predicted, measured, tol, kind, stderr=stderr, ci=ci)
    assert verdict.verdict == expected, verdict.reason
    assert verdict.reason


def test_floor_widens_a_z_score_only_by_the_floor():
    assert judge(1.0, 1.0 + 3e-6, 4, "z-score", stderr=0.0, floor=1e-6).verdict == "pass"
    assert judge(1.0, 1.0 + 5e-6, 4, "z-score", stderr=0.0, floor=1e-6).verdict == "fail"


def test_planted_wrong_prediction_fails_where_the_right_one_passes():
    # a variance measured as 0.39 +- 0.006 for a batch of 37 out of 1437: c(m')/m' is right, 1/m is not
    m, population, trace = 37, 1437, 10.0
    right = (population - m) / (population - 1) * trace / m
    wrong = (population - 100) / (population - 1) * trace / 100  # the last batch treated as a full one
    measured = right * 1.01
    assert judge(right, measured, 4, "z-score", stderr=0.015 * right).verdict == "pass"
    assert judge(wrong, measured, 4, "z-score", stderr=0.015 * right).verdict == "fail"


def test_bad_kind_and_tolerance_are_input_errors():
    with pytest.raises(InputError):
        judge(1.0, 1.0, 1, "sigma")
    with pytest.raises(InputError):
        judge(1.0, 1.0, -1, "absolute")
    with pytest.raises(InputError):
        judge(1.0, 1.0, 0.5, "factor")


def rows(*verdicts: str, by_construction: bool = False) -> list[Row]:
    return [
        Row("c", f"q{i}", "w", 1.0, 1.0, None, None, None, 0.0, "absolute", v, "r", 1, by_construction)
        for i, v in enumerate(verdicts)
    ]


def test_summary_counts_evidence_and_names_what_did_not_pass():
    text = summary(rows("pass", "fail", "inconclusive") + rows("pass", by_construction=True))
    assert text.startswith("1 pass, 1 fail, 1 inconclusive (1 by construction, not counted)")
    assert "c/q1: fail" in text and "c/q2: inconclusive" in text
    assert not all_pass(rows("pass", "inconclusive"))
    assert all_pass(rows("pass", "pass"))
    assert not all_pass([])


def test_summary_counts_repeated_quantities_once():
    row = Row("c", "q", "w", 1.0, 1.0, None, None, None, 0.0, "absolute", "inconclusive", "r", 1, False)
    same = [row] * 14
    text = summary(same + rows("fail"))
    assert text.endswith("not passing: c/q: inconclusive (x14); c/q0: fail")


def test_make_row_uses_the_declared_tolerance_and_marks_construction():
    row = make_row("accounting", "steps_per_epoch", "w", 11, 12, n_seeds=1, config={}, by_construction=True)
    assert (row.tolerance, row.tolerance_kind, row.verdict) == (0.0, "absolute", "fail")
    assert row.reason.startswith("holds by construction, not evidence")
    with pytest.raises(InputError):
        make_row("accounting", "no-such-quantity", "w", 1, 1, n_seeds=1, config={})


def test_a_claim_not_built_is_inconclusive_never_pass():
    row = not_built("regimes", "critical_batch", "w", "a sweep", {})
    assert row.verdict == "inconclusive" and "not built yet" in row.reason
