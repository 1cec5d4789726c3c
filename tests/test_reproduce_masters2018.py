"""``reproduce masters2018``: verdict logic on planted grids, the report's content from synthetic
measurements (no training), and the quick command end to end (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from batchscale.reproduce import masters2018
from batchscale.reproduce.report import Options, write_report
from batchscale.verify.lr_grid import QUICK, Grid, good_width

SIZES = (2, 8, 32, 128, 512)


def planted_grid(workload: str, form: str, narrowing: bool = True) -> Grid:
    """Accuracy 0.95 inside a band of rates that shrinks (or grows) with m; 0.6 outside; the rates above
    the band diverge (three seeds, tiny jitter)."""
    rates = QUICK[form].rates
    rng = np.random.default_rng(1)
    acc = np.full((len(SIZES), len(rates), 3), 0.6)
    diverged = np.zeros(acc.shape, bool)
    for i in range(len(SIZES)):
        top = len(rates) - 1 - i // 2 if narrowing else len(rates) - 3 + i // 2
        top = min(top, len(rates) - 1)
        lo = 1 if narrowing else max(0, 2 - i)
        acc[i, lo : top + 1] = 0.95 - 0.002 * i
        if top + 1 < len(rates):
            diverged[i, top + 1 :] = True
            acc[i, top + 1 :] = np.nan
    acc += 0.0005 * rng.standard_normal(acc.shape)
    return Grid(workload, {}, form, SIZES, rates, (0, 1, 2), 3.0, acc, diverged, "-")


def test_direction_verdicts():
    assert masters2018.direction_verdict(-0.5, -0.1, "s")[0] == "reproduced"
    assert masters2018.direction_verdict(0.1, 0.5, "s")[0] == "not reproduced"
    assert masters2018.direction_verdict(-0.1, 0.1, "s")[0] == "inconclusive"
    assert masters2018.direction_verdict(math.nan, math.nan, "s")[0] == "inconclusive"


def test_a_narrowing_range_is_reproduced_and_a_widening_one_is_not():
    for narrowing, expected in ((True, "reproduced"), (False, "not reproduced")):
        grid = planted_grid("w", "sum", narrowing)
        width = good_width(grid.accuracy, grid.rates)
        row, _ = masters2018.slope_row("range", "width", grid, width, "s")
        assert row.verdict == expected, (narrowing, row.reason)
        row, _ = masters2018.slope_row("stable", "edge", grid, masters2018.log2_edges(grid), "s")
        assert row.verdict == expected, (narrowing, row.reason)


def test_best_batch_rows_say_reproduced_in_range_and_not_reproduced_at_large_batch():
    grid = planted_grid("w", "sum")
    assert masters2018.best_row(grid, 0)[0].verdict == "reproduced"
    late = Grid(grid.workload, {}, "sum", grid.batch_sizes, grid.rates, grid.seeds, 3.0,
                grid.accuracy[::-1].copy(), grid.diverged, "-")  # best at m = 512
    assert masters2018.best_row(late, 0)[0].verdict == "not reproduced"


def test_the_report_opens_with_the_verdict_table_and_quotes_the_paper_as_the_papers(tmp_path, monkeypatch):
    from batchscale.empirical.curvature_noise import CurvatureNoise
    from batchscale.verify import lr_grid, stability

    monkeypatch.setattr(lr_grid, "run_grid", lambda name, options, form, *a, **k: planted_grid(name, form))
    noise = [CurvatureNoise(0.72, 0.72, 0.86, 8.66, 1437, 40, 1e-6)]
    model = stability.network_prediction(noise, 1437)
    points = [stability.NetworkPoint(m, model(m), [model(m) * f for f in (1.0, 1.1, 1.2)], [0.05] * 3)
              for m in (1, 8, 64, 512)]
    monkeypatch.setattr(stability, "run", lambda opts: stability.network_rows(points, "digits-mlp", {}))
    out = tmp_path / "r"
    result = masters2018.reproduce(Options(out=out, quick=True, db=str(tmp_path / "runs.sqlite")))
    path = write_report(out, result, "batchscale reproduce masters2018 --quick", 1.0)
    text = path.read_text()
    assert text.index("## Verdicts") < text.index("## Figures") < text.index("## How this report was made")
    assert "arXiv 1804.07612, abstract" in text and "m = 32 or smaller" in text
    assert "Ours, not the paper's" in text
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert len(verdicts) == 2 * 2 + 2 * 2 + 1 and {v["verdict"] for v in verdicts} == {"reproduced"}
    for fig in result.figures:
        assert (out / fig.png).stat().st_size > 0 and all((out / d).exists() for d in fig.data)
    assert "digits-cnn" in (out / "grid.csv").read_text()


@pytest.mark.slow
def test_quick_command_end_to_end(tmp_path):
    from click.testing import CliRunner

    from batchscale.cli.main import cli

    out = tmp_path / "m18"
    result = CliRunner().invoke(cli, ["reproduce", "masters2018", "--quick", "--out", str(out), "--db",
                                      str(tmp_path / "runs.sqlite"), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 9 and "## Verdicts" in (out / "report.md").read_text()
