"""``reproduce mccandlish2018``: steps to several targets from one sweep's histories, the verdict logic on
planted curves (each verdict also fails a planted wrong statement), the report from synthetic trials, and
the quick command end to end (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from batchscale.empirical.trials import TrainConfig, TrialResult
from batchscale.reproduce import mccandlish2018 as mc
from batchscale.reproduce.report import Options, render_report

BATCHES = (4, 8, 16, 32, 64, 128, 256)
TARGETS = (0.2, 0.1, 0.06)
S_MIN = {0.2: 5.0, 0.1: 9.0, 0.06: 12.0}
B_CRIT = {0.2: 10.0, 0.1: 30.0, 0.06: 100.0}  # planted: rising as the target gets harder


def model_steps(target: float, batch: int) -> float:
    return S_MIN[target] * (1 + B_CRIT[target] / batch)


def trial(batch: int, seed: int, lr: float, factor: float, b_crit: dict | None = None) -> TrialResult:
    """A finished sweep trial whose history crosses each target exactly at ``factor`` x the model's steps."""
    crit = b_crit or B_CRIT
    steps = {t: S_MIN[t] * (1 + crit[t] / batch) * factor for t in TARGETS}
    history = [(0, 0.9, 2.3)] + [(steps[t], t, 1.0) for t in TARGETS]
    config = TrainConfig(workload="digits-mlp", batch_size=batch, learning_rate=lr, seed=seed,
                         target=TARGETS[-1], max_steps=4000)
    return TrialResult(config, "complete", int(round(steps[TARGETS[-1]])), TARGETS[-1], 0.2, TARGETS[-1],
                       tuple(history))


def planted_results(b_crit: dict | None = None) -> list[TrialResult]:
    """Three seeds (3% log-normal scatter) x two rates per point, the larger rate 1.5x slower."""
    rng = np.random.default_rng(1)
    out = []
    for b in BATCHES:
        for seed in (0, 1, 2):
            noise = math.exp(0.03 * rng.standard_normal())
            out += [trial(b, seed, 0.1, noise, b_crit), trial(b, seed, 0.2, 1.5 * noise, b_crit)]
    return out


def planted_runs(growth: float = 1.0) -> tuple[tuple[dict, ...], ...]:
    """Noise-scale runs: B_simple ~ 20 growing by ``growth`` per checkpoint; the error falls through the
    targets."""
    runs = []
    for seed in (0, 1, 2):
        rows = []
        for i, (step, err) in enumerate(((0, 0.9), (2, 0.5), (5, 0.19), (10, 0.12), (20, 0.09), (40, 0.05))):
            rows.append({"seed": seed, "step": step, "train_loss": 1.0, "test_metric": err,
                         "b_simple": 20.0 * growth**i * (1 + 0.02 * seed), "b_noise": 15.0})
        runs.append(tuple(rows))
    return tuple(runs)


def measured(results=None, runs=None) -> mc.Measured:
    return mc.Measured("digits-mlp", TARGETS, BATCHES, (0, 1, 2), tuple(results or planted_results()),
                       runs if runs is not None else planted_runs(1.3), 16, {"target": TARGETS[-1]},
                       {"store": "runs.sqlite", "trials_trained": 42, "trials_reused": 0})


def test_steps_to_reach_interpolates_between_evaluations():
    history = [(0, 0.9, 1.0), (10, 0.5, 1.0), (11, 0.3, 1.0), (20, 0.1, 1.0)]
    assert mc.steps_to_reach(history, 0.5) == 10.0  # exactly at an evaluation
    assert mc.steps_to_reach(history, 0.2) == pytest.approx(11 + 0.5 * 9)  # halfway from 0.3 to 0.1
    assert mc.steps_to_reach(history, 0.05) == math.inf
    assert mc.steps_to_reach([(0, 0.9, 1.0), (5, None, None)], 0.5) == math.inf  # diverged first
    assert mc.steps_to_reach(history, 0.95) == 0.0


def test_best_per_point_takes_the_fewest_steps_over_rates_and_flags_edges():
    best = mc.best_per_point(planted_results(), TARGETS, TARGETS[-1])
    for t in TARGETS:
        point = best[(t, 16, 0)]
        assert point["learning_rate"] == 0.1 and point["at_edge"]  # the lower of two rates: an edge
        assert point["steps"] == pytest.approx(model_steps(t, 16), rel=0.1)
    # the sweep's own target uses the engine's steps (rounded), the others the history
    exact = [r for r in planted_results() if r.config.batch_size == 16 and r.config.seed == 0][0]
    assert best[(TARGETS[-1], 16, 0)]["steps"] == exact.steps


def test_rising_b_crit_is_reproduced_and_the_planted_opposite_is_not():
    best = mc.best_per_point(planted_results(), TARGETS, TARGETS[-1])
    steps = np.asarray([mc.seed_steps(best, t, BATCHES, (0, 1, 2)) for t in TARGETS])
    draws = mc.joint_log_b_crit(BATCHES, steps, n_bootstrap=300)
    assert np.median(np.exp(draws), axis=0) == pytest.approx([B_CRIT[t] for t in TARGETS], rel=0.2)
    b_crit = [B_CRIT[t] for t in TARGETS]
    assert mc.rising_row(TARGETS, b_crit, draws).verdict == "reproduced"
    assert mc.rising_row(TARGETS, b_crit, draws, falling=True).verdict == "not reproduced"


def test_constant_b_crit_does_not_reproduce_rising():
    flat = {t: 30.0 for t in TARGETS}
    best = mc.best_per_point(planted_results(flat), TARGETS, TARGETS[-1])
    steps = np.asarray([mc.seed_steps(best, t, BATCHES, (0, 1, 2)) for t in TARGETS])
    draws = mc.joint_log_b_crit(BATCHES, steps, n_bootstrap=300)
    assert mc.rising_row(TARGETS, [30.0] * 3, draws).verdict != "reproduced"


def test_growth_row_reproduces_a_rising_noise_scale_and_fails_a_falling_one():
    assert mc.growth_row(planted_runs(1.3)).verdict == "reproduced"
    assert mc.growth_row(planted_runs(1 / 1.3)).verdict == "not reproduced"


def test_b_simple_until_averages_up_to_the_crossing():
    run = planted_runs(2.0)[0]  # b_simple 20, 40, 80, ... at steps 0, 2, 5, ...
    assert mc.b_simple_until(run, 0.2) == pytest.approx(np.mean([40, 80]))  # steps 2 and 5 (0.19 <= 0.2)
    assert mc.b_simple_until(run, 0.01) == pytest.approx(np.mean([20 * 2**i for i in range(1, 6)]))


def test_checkpoint_steps_are_log_spaced_and_distinct():
    steps = mc.checkpoint_steps(100, 8)
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 100 and steps == sorted(set(steps))


def test_report_from_planted_trials(tmp_path):
    result = mc.assemble(Options(out=tmp_path, quick=True), measured(), n_bootstrap=200, figures=False)
    assert len(result.rows) == 2 + 2 * len(TARGETS)
    assert result.rows[0].verdict == "reproduced"  # B_simple grows along the planted runs
    rising = [r for r in result.rows if "grows as the target" in r.statement]
    assert rising[0].verdict == "reproduced" and rising[0].measured == pytest.approx(math.log(10), rel=0.2)
    predict = [r for r in result.rows if r.statement.startswith("B_simple predicts")]
    assert [r.verdict for r in predict] == ["reproduced"] * 3  # planted B_simple 20..75 vs B_crit 10..100
    text = render_report(result, "batchscale reproduce mccandlish2018 --quick", 1.0)
    assert text.index("## Verdicts") < text.index("## Critical batch per target") < text.index("## Method")
    assert "S = S_min(1 + B_crit/B)" in text and "42 trained by this run" in text
    for t in TARGETS:
        assert f"at target {t:g}" in text
    for name in ("pareto.csv", "b_crit_vs_target.csv", "noise_scale_along_training.csv", "verify_rows.json"):
        assert (tmp_path / name).stat().st_size > 0


def planted_analysis(b_crit: float = 30.0):
    from batchscale.theory.regimes import analyze_steps_curve

    rng = np.random.default_rng(2)
    steps = [[10 * (1 + b_crit / b) * math.exp(0.03 * rng.standard_normal()) for _ in range(3)]
             for b in BATCHES]
    return analyze_steps_curve(BATCHES, steps, n_bootstrap=300)


def test_prediction_row_fails_a_planted_wrong_b_simple():
    """B_simple at B_crit is reproduced; B_simple / 20 (the noise-scale claim's planted wrong prediction)
    lies outside its declared factor 10: not reproduced."""
    from batchscale.verify import noise_scale as vns

    analysis = planted_analysis(30.0)
    good = mc.prediction_row(0.1, vns.ratio_row([28.0, 30.0, 33.0], analysis, {}, "w"))
    bad = mc.prediction_row(0.1, vns.ratio_row([28.0, 30.0, 33.0], analysis, {}, "w", scale=1 / 20))
    assert good.verdict == "reproduced" and bad.verdict == "not reproduced"


def test_hyperbola_row_maps_the_verify_rows():
    class R:
        def __init__(self, verdict, measured=1.0):
            self.verdict, self.measured = verdict, measured

    assert mc.hyperbola_row(0.1, [R("pass"), R("inconclusive")]).verdict == "reproduced"
    assert mc.hyperbola_row(0.1, [R("fail"), R("inconclusive")]).verdict == "not reproduced"
    assert mc.hyperbola_row(0.1, [R("fail"), R("pass")]).verdict == "partly"
    assert mc.hyperbola_row(0.1, [R("inconclusive")]).verdict == "inconclusive"


def test_hyperbola_rows_fail_a_planted_wrong_exponent():
    """verify's tradeoff rows on a planted exact hyperbola: exponent 1 passes at B_crit, the planted
    exponent 2 fails there."""
    from batchscale.verify import noise_scale as vns
    from batchscale.verify.steps_sweep import Curve

    analysis = planted_analysis(30.0)
    rng = np.random.default_rng(3)
    seeds = tuple(tuple(10 * (1 + 30.0 / b) * math.exp(0.01 * rng.standard_normal()) for _ in range(5))
                  for b in BATCHES)
    curve = Curve("sgd", BATCHES, seeds, (), analysis)
    right = mc.hyperbola_row(0.1, vns.tradeoff_rows(curve, {}, "w", n_bootstrap=200))
    wrong = mc.hyperbola_row(0.1, vns.tradeoff_rows(curve, {}, "w", exponent=2.0, n_bootstrap=200))
    assert right.verdict == "reproduced" and wrong.verdict in ("not reproduced", "partly")


@pytest.mark.slow
def test_quick_command(tmp_path):
    from click.testing import CliRunner

    from batchscale.cli.main import cli

    out, db = tmp_path / "mc", tmp_path / "runs.sqlite"
    args = ["reproduce", "mccandlish2018", "--quick", "--out", str(out), "--db", str(db), "--format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "verdicts.json").read_text())
    assert len(rows) == 2 + 2 * len(mc.SETTINGS[True]["targets"])
    assert all(r["verdict"] != "not testable" for r in rows)
    assert (out / "report.md").read_text().count("![") == 3
    for name in ("pareto.png", "b_crit_vs_target.png", "noise_scale_along_training.png"):
        assert (out / name).stat().st_size > 0
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and json.loads((out / "verdicts.json").read_text()) == rows
    assert "0 trials trained" in again.output


def test_a_regression_workload_is_refused_before_training(tmp_path):
    from click.testing import CliRunner

    from batchscale.cli.main import cli

    db = tmp_path / "runs.sqlite"
    result = CliRunner().invoke(cli, ["reproduce", "mccandlish2018", "--quick", "--workload", "linreg",
                                      "--db", str(db), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "classification workload" in result.output, result.output
    assert not db.exists() and not (tmp_path / "out").exists()
