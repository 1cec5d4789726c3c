"""verify --plot: every row on one deviation axis in units of its own declared tolerance."""

from __future__ import annotations

import math

import pytest

from batchscale.verify.figures import VERDICT_COLOURS, deviation, forest_rows, plot_rows
from batchscale.verify.rows import Row


def row(kind: str, predicted: float, measured: float, tolerance: float, *, stderr=None, ci=(None, None),
        verdict="pass", by_construction=False) -> Row:
    return Row("c", "q", "w", predicted, measured, ci[0], ci[1], stderr, tolerance, kind, verdict,
               "first; note here; rest", 3, by_construction, {})


@pytest.mark.parametrize("kind, p, v, t, stderr, expected", [
    ("factor", 10.0, 20.0, 2.0, None, 1.0),          # at the band's upper edge: log 2 / log 2
    ("factor", 10.0, 2.5, 2.0, None, -2.0),          # two factors of 2 below
    ("relative", 4.0, 5.0, 0.5, None, 0.5),          # (5 - 4) / (0.5 * 4)
    ("absolute", 1.0, 0.25, 0.3, None, -2.5),        # (0.25 - 1) / 0.3
    ("z-score", 2.0, 2.3, 4.0, 0.05, 1.5),           # (2.3 - 2) / (4 * 0.05)
])
def test_deviation_is_the_distance_in_tolerance_units(kind, p, v, t, stderr, expected):
    assert deviation(row(kind, p, v, t, stderr=stderr), v) == pytest.approx(expected)


def test_deviation_edge_cases():
    assert deviation(row("absolute", 3.0, 3.0, 0.0), 3.0) == 0.0       # an exact count that matches
    assert deviation(row("absolute", 3.0, 4.0, 0.0), 4.0) == math.inf  # ... and one that does not
    assert deviation(row("factor", 3.0, -1.0, 2.0), -1.0) == -math.inf
    assert math.isnan(deviation(row("z-score", 1.0, 1.2, 4.0), 1.2))  # no error: no scale
    # a z-score row with only a 95% interval: sigma from its half-width
    assert deviation(row("z-score", 0.0, 1.0, 1.0, ci=(1.0 - 1.959964, 1.0 + 1.959964)), 1.0) == (
        pytest.approx(1.0))


def test_forest_rows_map_intervals_verdicts_and_skip_rows_without_scale():
    rows = [row("factor", 10.0, 20.0, 2.0, ci=(10.0, 40.0)),
            row("z-score", 1.0, 1.2, 4.0, verdict="inconclusive"),        # skipped: no error
            row("relative", 4.0, 5.0, 0.5, verdict="fail", by_construction=True)]
    entries = forest_rows(rows)
    assert len(entries) == 2
    first, second = entries
    assert (first.low, first.value, first.high) == pytest.approx((0.0, 1.0, 2.0))
    assert first.colour == VERDICT_COLOURS["pass"] and not first.hollow
    assert second.colour == VERDICT_COLOURS["fail"] and second.hollow
    assert second.label.endswith("[by construction]") and "note here" in first.label


def test_plot_rows_writes_a_figure(tmp_path):
    path = tmp_path / "rows.png"
    plot_rows(str(path), [row("factor", 10.0, 20.0, 2.0, ci=(10.0, 40.0)), row("absolute", 1.0, 9.0, 0.3)])
    assert path.stat().st_size > 1000
