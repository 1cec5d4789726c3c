"""``reproduce zhang2024``: the table, the power law and the verdict logic (data only, a few seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli
from batchscale.reproduce import zhang2024 as z
from batchscale.reproduce.report import sign_verdict, value_verdict

BATCHES = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


def planted_table(exponent: float, noise: float = 0.02, seed: int = 1) -> z.StepsTable:
    """S(B) = S_min (1 + B_c/B) with B_c = 1000 (N/300)^exponent, times log-normal noise of sd ``noise``."""
    rng = np.random.default_rng(seed)
    sizes = (85.0, 151.0, 302.0, 604.0, 1200.0)
    steps = []
    for n in sizes:
        b = np.asarray(BATCHES, dtype=float)
        bc = 1000.0 * (n / 300.0) ** exponent
        s = 1000.0 * (1 + bc / b) * np.exp(noise * rng.standard_normal(b.size))
        steps.append(tuple(float(v) for v in s))
    return z.StepsTable(tuple(f"m{int(n)}" for n in sizes), sizes, (3.0,) * 5, (BATCHES,) * 5, tuple(steps))


def test_shipped_table_is_the_authors_table():
    table = z.load_table()
    assert table.models == ("85M", "151M", "302M", "604M", "1.2B")
    assert all(b == BATCHES for b in table.batch_sizes)
    # two cells read off the source file independently of the parser
    assert table.steps[0][0] == 46000 and table.steps[4][-1] == 6500


def test_power_law_fit_recovers_a_planted_exponent_and_its_interval():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    rng = np.random.default_rng(0)
    y = 3.0 * x**0.7 * np.exp(0.05 * rng.standard_normal(x.size))
    law = z.power_law_fit(x, y)
    # independent: numpy's polyfit slope, and the interval holds the truth
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert law.exponent == pytest.approx(slope, rel=1e-12)
    assert law.low < 0.7 < law.high
    exact = z.power_law_fit(x, 3.0 * x**0.7)
    assert exact.exponent == pytest.approx(0.7) and exact.prefactor == pytest.approx(3.0)


def test_planted_growth_is_reproduced_with_its_exponent():
    table = planted_table(0.5)
    laws = z.critical_laws(table, z.analyze(table, n_bootstrap=100))
    assert laws["mccandlish"].low < 0.5 < laws["mccandlish"].high
    assert laws["mccandlish"].exponent == pytest.approx(0.5, abs=0.1)
    rows = {r.quantity: r for r in z.verdict_rows(laws)}
    assert rows["alpha, critical batch = mccandlish"].verdict == "reproduced"


def test_planted_wrong_claim_fails():
    """Critical batch shrinking with model size: "it increases with scale" is not reproduced."""
    table = planted_table(-0.5)
    laws = z.critical_laws(table, z.analyze(table, n_bootstrap=100))
    rows = {r.quantity: r for r in z.verdict_rows(laws)}
    assert rows["alpha, critical batch = mccandlish"].verdict == "not reproduced"
    assert rows["alpha, critical batch = examples_overhead"].verdict == "not reproduced"


def test_sign_and_value_verdicts():
    assert sign_verdict(0.1, 0.5, "a")[0] == "reproduced"
    assert sign_verdict(-0.5, -0.1, "a")[0] == "not reproduced"
    assert sign_verdict(-0.1, 0.5, "a")[0] == "inconclusive"
    assert sign_verdict(None, 0.5, "a")[0] == "inconclusive"
    assert value_verdict(1.0, 0.5, 1.5, "a")[0] == "reproduced"
    assert value_verdict(2.0, 0.5, 1.5, "a")[0] == "not reproduced"
    assert value_verdict(1.0, math.nan, 1.5, "a")[0] == "inconclusive"


def test_cli_writes_the_report_with_the_verdict_table_first(tmp_path):
    out = tmp_path / "z"
    args = ["reproduce", "zhang2024", "--quick", "--out", str(out), "--format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    verdicts = text.index("## Verdicts")
    assert verdicts < text.index("## Figures") < text.index("## How this report was made")
    assert "could not source" in text and "Wall time:" in text
    for name in ("steps_vs_batch.png", "critical_batch_vs_model_size.png", "steps_vs_batch_points.csv",
                 "critical_batch_vs_model_size.csv", "power_laws.json", "verdicts.json"):
        assert (out / name).stat().st_size > 0
    # on the authors' data: McCandlish's critical batch grows with N (interval above 0), the paper's
    # model-free rule does not separate from 0 (1.2B's crossing lies below 604M's)
    import json

    rows = {r["quantity"]: r for r in json.loads((out / "verdicts.json").read_text())}
    assert rows["alpha, critical batch = mccandlish"]["verdict"] == "reproduced"
    assert rows["alpha, critical batch = zhang2024"]["verdict"] in ("inconclusive", "not testable")


def test_list_and_unbuilt_papers():
    runner = CliRunner()
    listing = runner.invoke(cli, ["reproduce", "list"])
    assert listing.exit_code == 0
    for name in ("masters2018", "shallue2018", "mccandlish2018", "zhang2019", "ma2018", "zhang2024"):
        assert name in listing.output
    from batchscale.reproduce import PAPERS

    unbuilt_names = [n for n, p in PAPERS.items() if not p.built]
    if unbuilt_names:  # every paper may be built by now
        name = unbuilt_names[0]
        assert "not built yet" in listing.output
        unbuilt = runner.invoke(cli, ["reproduce", name, "--quick"])
        assert unbuilt.exit_code == 2
        assert unbuilt.output.strip().splitlines() == [
            f"Error: reproduce {name}: not built yet (see `batchscale reproduce list`)"]
    assert runner.invoke(cli, ["reproduce", "nope"]).exit_code == 2
