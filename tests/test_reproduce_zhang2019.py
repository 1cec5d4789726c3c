"""``reproduce zhang2019``: verdict logic on planted NQM and real-network curves (each statement also
planted wrong, which must come out 'not reproduced'), the report's content on a tiny problem, and the quick
command end to end (slow)."""

from __future__ import annotations

import json
import math

import pytest

from batchscale.reproduce import zhang2019 as z
from batchscale.reproduce.report import Options, write_report
from batchscale.verify.steps_sweep import curves_of

BATCHES = (4, 16, 64, 256, 1024, 4096)


def planted_nqm(**changes) -> z.NqmCurves:
    """Curves with the shape the paper describes: SGD perfect scaling to ~16 then flat at 100 steps;
    momentum the same at small batch and 100x further; p = 0.5 faster everywhere (critical batch 5x larger);
    EMA 20% faster at small batch; a schedule 70% faster at small batch, the same at large; rates linear
    then at the limit 2."""
    def curve(s_min, b_crit):
        return tuple(float(round(s_min * (1 + b_crit / b))) for b in BATCHES)

    steps = {("sgd", 0.0): curve(100, 100), ("momentum", 0.0): curve(10, 10_000),
             ("ema", 0.0): tuple(s * (0.8 if b < 64 else 1.0) for s, b in zip(curve(100, 100), BATCHES,
                                                                              strict=True)),
             ("schedule", 0.0): tuple(s * (0.3 if b < 64 else 1.0) for s, b in zip(curve(100, 100), BATCHES,
                                                                                   strict=True)),
             ("sgd", 0.5): curve(2, 500), ("momentum", 0.5): curve(2, 10_000),
             ("ema", 0.5): curve(10, 2000), ("schedule", 0.5): curve(10, 800)}
    lr = tuple(min(2.0 * b / 1024, 1.99) for b in BATCHES)
    rates = {k: lr if k[0] != "schedule" else (1.99,) * len(BATCHES) for k in steps}
    lower = tuple(int(curve(1, 100)[i] * 0.5) for i in range(len(BATCHES)))
    base = {"batch_sizes": BATCHES, "powers": (0.0, 0.5), "steps": steps, "rates": rates,
            "extra": {k: (None,) * len(BATCHES) for k in steps}, "lower_bound": lower,
            "stability_limit": {0.0: 2.0, 0.5: 2.0}}
    for key, value in changes.items():
        if isinstance(key, str) and key in base:
            base[key] = value
    return z.NqmCurves(**base)


def verdicts(rows) -> dict[str, str]:
    return {r.statement.split(":")[0][:40]: r.verdict for r in rows}


def test_threshold_verdict_reads_the_declared_threshold():
    assert z.threshold_verdict(0.4, "<=", 0.5, "x")[0] == "reproduced"
    assert z.threshold_verdict(0.6, "<=", 0.5, "x")[0] == "not reproduced"
    assert z.threshold_verdict(0.6, ">=", 0.5, "x")[0] == "reproduced"
    assert z.threshold_verdict(None, ">=", 0.5, "x")[0] == "inconclusive"
    assert z.threshold_verdict(math.inf, ">=", 0.5, "x")[0] == "inconclusive"


@pytest.mark.parametrize("a,b,word", [("reproduced", "reproduced", "reproduced"),
                                      ("reproduced", "not reproduced", "partly"),
                                      ("not reproduced", "not reproduced", "not reproduced"),
                                      ("inconclusive", "not reproduced", "inconclusive")])
def test_both_halves(a, b, word):
    assert z.both((a, "one"), (b, "two"))[0] == word


def test_ordered_verdict():
    assert z.ordered_verdict([5, 6, 7], [9, 10, 11], "a < b")[0] == "reproduced"
    assert z.ordered_verdict([9, 10, 11], [5, 6, 7], "a < b")[0] == "not reproduced"  # planted reversed
    assert z.ordered_verdict([5, 8, 10], [7, 9, 11], "a < b")[0] == "inconclusive"
    assert z.ordered_verdict([None, None], [7, 9], "a < b")[0] == "inconclusive"


def test_planted_nqm_curves_reproduce_every_statement():
    rows = z.nqm_rows(planted_nqm())
    assert len(rows) == 10
    assert {r.verdict for r in rows} == {"reproduced"}, [(r.statement, r.reason) for r in rows
                                                          if r.verdict != "reproduced"]


def test_a_planted_wrong_statement_is_not_reproduced():
    """The nearest wrong world for "momentum has little benefit at small batch": momentum halving the
    steps at the smallest batch (everything else unchanged)."""
    c = planted_nqm()
    steps = dict(c.steps)
    steps[("momentum", 0.0)] = (steps[("sgd", 0.0)][0] * 0.5, *steps[("momentum", 0.0)][1:])
    rows = z.nqm_rows(planted_nqm(steps=steps))
    little = next(r for r in rows if r.statement.startswith("momentum has little benefit"))
    assert little.verdict == "not reproduced"
    assert little.measured == pytest.approx(0.5)


@pytest.mark.parametrize("method,factor,statement,word", [
    ("schedule", 1.0, "optimal learning-rate schedules", "partly"),  # no help at small batch either
    ("ema", 1.0, "exponential moving", "partly"),
])
def test_planted_no_help_at_small_batch(method, factor, statement, word):
    c = planted_nqm()
    steps = dict(c.steps)
    steps[(method, 0.0)] = tuple(s * factor for s in steps[("sgd", 0.0)])
    row = next(r for r in z.nqm_rows(planted_nqm(steps=steps)) if r.statement.startswith(statement))
    assert row.verdict == word


def test_planted_preconditioning_that_shrinks_the_critical_batch_is_not_reproduced():
    c = planted_nqm()
    steps = dict(c.steps)
    steps[("sgd", 0.5)] = tuple(float(round(10 * (1 + 50 / b))) for b in BATCHES)
    row = next(r for r in z.nqm_rows(planted_nqm(steps=steps)) if r.statement.startswith("preconditioning"))
    assert row.verdict == "not reproduced"


def sweep_rows(steps: dict[str, list[list[float]]], batches=(8, 32, 128)) -> list[dict]:
    return [{"optimizer": name, "batch_size": b, "seed_steps": s, "seed_learning_rates": [0.1] * len(s),
             "steps": sorted(s)[1], "learning_rate": 0.1}
            for name, curve in steps.items() for b, s in zip(batches, curve, strict=True)]


NQM_ORDER = {"SGD": 400.0, "momentum": 30_000.0, "Adam": 60_000.0}


def test_real_rows_follow_the_measured_order():
    good = curves_of(sweep_rows({"sgd": [[100, 104, 98], [30, 31, 33], [20, 21, 19]],
                                 "momentum": [[101, 99, 103], [27, 28, 26], [12, 13, 11]],
                                 "adam": [[90, 95, 99], [20, 22, 21], [6, 7, 6]]}), z.REAL_OPTIMIZERS)
    rows = z.real_rows(good, NQM_ORDER)
    assert [r.verdict for r in rows] == ["reproduced", "reproduced"]


def test_real_rows_planted_reverse_order_is_not_reproduced():
    bad = curves_of(sweep_rows({"sgd": [[100, 104, 98], [30, 31, 33], [6, 7, 6]],
                                "momentum": [[101, 99, 103], [27, 28, 26], [12, 13, 11]],
                                "adam": [[90, 95, 99], [20, 22, 21], [20, 21, 19]]}), z.REAL_OPTIMIZERS)
    rows = z.real_rows(bad, NQM_ORDER)
    assert rows[0].verdict == "not reproduced"


TINY = z.Settings(dim=300, bins=20, target=0.05, batch_sizes=(4, 256, 16384), powers=(0.0, 0.5),
                  lr_points=20, momentum_points=5, ema_decays=(0.9,), pieces=2,
                  sweep={"workload": "digits-mlp", "batch_sizes": (8, 32, 128), "target": 0.1})


def test_report_content_on_a_tiny_problem(tmp_path, monkeypatch):
    monkeypatch.setitem(z.SETTINGS, True, TINY)
    real = curves_of(sweep_rows({"sgd": [[100, 104, 98], [30, 31, 33], [20, 21, 19]],
                                 "momentum": [[101, 99, 103], [27, 28, 26], [12, 13, 11]],
                                 "adam": [[90, 95, 99], [20, 22, 21], [6, 7, 6]]}), z.REAL_OPTIMIZERS)
    monkeypatch.setattr(z, "run_real_sweep", lambda settings, options: (real, {"planted": True}, "none"))
    result = z.reproduce(Options(out=tmp_path, quick=True))
    path = write_report(tmp_path, result, "batchscale reproduce zhang2019 --quick", 1.0)
    text = path.read_text()
    assert text.startswith("# Reproduction: zhang2019 (Zhang et al. 2019, arXiv 1907.04164)")
    assert text.index("## Verdicts") < text.index("## Figures") < text.index("## How this report was made")
    assert len(result.rows) == 12
    for row in result.rows:
        assert row.statement.replace("|", "\\|") in text
        assert row.verdict in ("reproduced", "not reproduced", "partly", "inconclusive")
    for fig in result.figures:
        assert (tmp_path / fig.png).stat().st_size > 1000
        assert all((tmp_path / d).exists() for d in fig.data)
    assert "information bound" in text and "declared" in text
    saved = json.loads((tmp_path / "verdicts.json").read_text())
    assert [r["verdict"] for r in saved] == [r.verdict for r in result.rows]
    # the tiny NQM still shows the model's main facts
    def verdict(start):
        return next(r.verdict for r in result.rows if r.statement.startswith(start))

    assert verdict("momentum has little benefit") == "reproduced"
    assert verdict("momentum extends perfect scaling") == "reproduced"


def test_unknown_workload_is_one_error_line_before_any_work(tmp_path):
    from click.testing import CliRunner

    from batchscale.cli.main import cli

    result = CliRunner().invoke(cli, ["reproduce", "zhang2019", "--quick", "--out", str(tmp_path / "z"),
                                      "--workload", "no-such-workload"])
    assert result.exit_code == 2
    assert "unknown workload 'no-such-workload'" in result.output
    assert "zhang2019: NQM" not in result.output
    assert not (tmp_path / "z").exists()


@pytest.mark.slow
def test_quick_command_end_to_end(tmp_path):
    from click.testing import CliRunner

    from batchscale.cli.main import cli

    out = tmp_path / "z"
    result = CliRunner().invoke(cli, ["reproduce", "zhang2019", "--quick", "--out", str(out), "--format",
                                      "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 12
    text = (out / "report.md").read_text()
    assert "Real network" in text and (out / "runs.sqlite").exists()
    again = CliRunner().invoke(cli, ["reproduce", "zhang2019", "--quick", "--out", str(out), "--format",
                                     "json"])
    assert json.loads(again.stdout) == rows  # resumed from the store: the same measurements
