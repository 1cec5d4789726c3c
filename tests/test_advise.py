"""``batchscale advise``: S(B), E(B) and the recommended ranges against their definitions; the trend, the
learning-rate probe's analysis, the memory plan and the check against independent computations with
planted wrong answers; the command end to end on tiny runs (a built-in and a user's module)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli
from batchscale.verify.advise import MAX_TREND_SPREAD, b_simple_trend, batch_range, steps_and_examples
from batchscale.verify.advise_lr import analyse_probe, best_log_rate, probe_batch_sizes, rule_of


@pytest.mark.parametrize("b_crit", [3.0, 47.0, 1000.0])
def test_steps_and_examples_lie_on_the_tradeoff_curve(b_crit):
    for batch in (1, 2, 8, 64, 4096):
        s, e = steps_and_examples(batch, b_crit)
        assert (s - 1) * (e - 1) == pytest.approx(1.0)  # (S/S_min - 1)(E/E_min - 1) = 1
        assert e - 1 == pytest.approx(batch / b_crit)
    assert steps_and_examples(int(b_crit), float(int(b_crit))) == pytest.approx((2.0, 2.0))


@pytest.mark.parametrize(("low", "high"), [(100.0, 100.0), (47.0, 300.0), (3.0, 9.0)])
def test_recommended_range_is_the_largest_power_of_two_within_the_overhead(low, high):
    for overhead in (0.2, 0.05):
        ends = batch_range(overhead, low, high)
        for end, b_crit in zip(ends, (low, high), strict=True):
            assert end & (end - 1) == 0  # a power of two
            if overhead * b_crit >= 1:
                assert steps_and_examples(end, b_crit)[1] <= 1 + overhead + 1e-12
                assert steps_and_examples(2 * end, b_crit)[1] > 1 + overhead  # the next one is over
            else:
                assert end == 1


def test_advise_command_end_to_end(tmp_path):
    report = tmp_path / "advice.md"
    args = ["advise", "--budget-steps", "6", "--checkpoints", "2", "--format", "json",
            "--report", str(report), "--lr-probe-steps", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    low, high = out["interval"]
    assert low <= out["critical_batch_size"] <= high
    assert [row["batch_size"] for row in out["curve"]][:4] == [1, 2, 4, 8]
    assert out["method"] == "fast" and out["n_train"] == 1437
    assert not any("not built yet" in a for a in out["assumptions"])
    assert {row["step"] for row in out["measurements"]} == {0, 3, 6}
    assert "critical batch size B_crit" in report.read_text()
    assert out["lr_probe"] is None and out["trend"]["horizon"] is None


def test_advise_bad_input_is_one_line_before_training():
    result = CliRunner().invoke(cli, ["advise", "--batch-size", "100000"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("Error:")
    assert "step" not in result.output


USER_MODULE = '''
import torch
from torch import nn

from batchscale.empirical import Workload


def make(n_train: int = 600, seed: int = 0) -> Workload:
    """A user's model outside the package: LayerNorm has no fast per-example path."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + 100, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)

    def model(s):
        torch.manual_seed(s)
        return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 3))

    return Workload("user", model, x[:n_train], y[:n_train], x[n_train:], y[n_train:])
'''


def run_user_advise(tmp_path, monkeypatch, *extra: str) -> dict:
    """advise on a user's module outside the package (-W option), with the probe, memory, plot, report."""
    (tmp_path / "advise_user_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    plot, report, db = tmp_path / "advice.png", tmp_path / "advice.md", tmp_path / "probe.sqlite"
    args = ["advise", "--workload", "advise_user_models:make", "-W", "n_train=600", "--max-examples", "64",
            "--lr-probe-steps", "3", "--device-memory", "1e-5", "--db", str(db), "--plot", str(plot),
            "--report", str(report), "--format", "json", *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["method"] == "two-batch" and out["n_train"] == 600
    low, high = out["interval"]
    assert low < out["critical_batch_size"] < high  # two-batch: a real bootstrap interval, not a point
    assert {row["method"] for row in out["measurements"]} == {"two-batch"}
    probe = out["lr_probe"]
    b1, b2 = probe["batch_sizes"]
    assert b2 >= 4 * b1 and len(probe["seeds"]) == 3
    assert probe["n_trials"] == 2 * 15 * 3 and probe["steps"][0] == 3
    assert probe["rule"] in ("linear", "square-root", "neither", "undecided")
    assert db.exists()  # the probe's trials were stored through the sweep engine
    memory = out["memory"]
    assert memory["bytes_per_example"] > 0 and len(memory["peak_bytes"]) >= 2
    for plan in out["accumulation"]:  # 10 kB of device memory: the plan must agree with the fitted line
        fits = memory["state_bytes"] + max(memory["intercept_bytes"], 0) + memory["bytes_per_example"] * \
            plan["batch_size"] <= 1e4
        assert plan["fits"] == fits
    assert plot.stat().st_size > 0 and "learning-rate rule" in report.read_text()
    return out


def test_advise_on_a_user_model(tmp_path, monkeypatch):
    """The default suite's run: two measurements (step 0 and the end), so no trend is fitted."""
    out = run_user_advise(tmp_path, monkeypatch, "--budget-steps", "4", "--checkpoints", "1")
    assert out["trend"]["n_points"] == 1 and not out["trend"]["defensible"]


@pytest.mark.slow
def test_advise_on_a_user_model_full_run(tmp_path, monkeypatch):
    """Every part of advise on the user's module, the trend with a horizon included."""
    out = run_user_advise(tmp_path, monkeypatch, "--budget-steps", "6", "--checkpoints", "3",
                          "--train-steps", "40")
    assert out["trend"]["horizon"] == 40 and out["trend"]["n_points"] == 3
    assert math.isfinite(out["trend"]["exponent"])


# ----------------------------------------------------------------------------------------------------
# The trend of B_simple: a power law recovered exactly; extrapolation refused when not defensible


def test_trend_recovers_an_exact_power_law_and_extrapolates():
    steps = [10, 20, 40, 80]
    trend = b_simple_trend(steps, [3.0 * t**0.7 for t in steps], horizon=400)
    assert trend.exponent == pytest.approx(0.7)
    assert trend.defensible and trend.value == pytest.approx(3.0 * 400**0.7)
    assert trend.interval[0] == pytest.approx(trend.value) == pytest.approx(trend.interval[1])


def test_trend_refuses_noisy_far_and_short_extrapolations():
    steps = [10, 20, 40, 80]
    noisy = b_simple_trend(steps, [30.0, 300.0, 20.0, 200.0], horizon=400)
    assert not noisy.defensible and "not determined" in noisy.reason
    assert noisy.interval[1] / noisy.interval[0] > MAX_TREND_SPREAD
    far = b_simple_trend(steps, [3.0 * t**0.7 for t in steps], horizon=80 * 11)
    assert not far.defensible and "beyond" in far.reason
    short = b_simple_trend([0, 10, 20], [1.0, 2.0, 3.0], horizon=40)  # step 0 is left out: 2 points
    assert not short.defensible and math.isnan(short.exponent)


# ----------------------------------------------------------------------------------------------------
# The learning-rate probe's analysis on planted loss landscapes


def test_best_log_rate_finds_the_vertex_of_a_parabola():
    xs = [math.log(0.01) + 0.3 * k for k in range(12)]
    vertex = xs[5] + 0.11
    assert best_log_rate(xs, [(x - vertex) ** 2 + 1 for x in xs]) == pytest.approx(vertex)
    assert best_log_rate(xs, [x for x in xs]) is None  # minimum on the low edge: the best may lie outside
    assert best_log_rate(xs, [None] * len(xs)) is None


def planted_rows(alpha: float, b1: int, b2: int, jitter: float, seed: int) -> list[dict]:
    """Grid rows whose loss is a parabola in log rate around 0.05 (B/b1)^alpha (at b2 times a seed
    jitter exp(jitter (seed - 1)))."""
    rates = [0.01 * 2 ** (k / 2) for k in range(15)]
    rows = []
    for b in (b1, b2):
        best = math.log(0.05 * (b / b1) ** alpha) + (jitter * (seed - 1) if b == b2 else 0.0)
        rows += [{"batch_size": b, "learning_rate": r, "test_metric": (math.log(r) - best) ** 2, "steps": 10}
                 for r in rates]
    return rows


@pytest.mark.parametrize(("alpha", "rule"), [(1.0, "linear"), (0.5, "square-root"), (0.0, "neither")])
def test_probe_analysis_decides_the_planted_rule(alpha, rule):
    rows = [planted_rows(alpha, 8, 32, 0.05, seed) for seed in range(3)]
    probe = analyse_probe(rows, (8, 32), (0.01,), (0, 1, 2), 80)
    assert probe.exponent == pytest.approx(alpha, abs=1e-6)
    assert probe.rule == rule
    assert probe.lr_at(32) == pytest.approx(probe.base_rate() * 4**probe.exponent)


def test_probe_analysis_is_undecided_when_seeds_disagree():
    rows = [planted_rows(alpha, 8, 32, 0.0, 1) for alpha in (0.75, 0.2, 1.3)]
    probe = analyse_probe(rows, (8, 32), (0.01,), (0, 1, 2), 80)
    assert probe.rule == "undecided" and probe.interval[0] < 0.5 and probe.interval[1] > 1.0


@pytest.mark.parametrize(("low", "high", "rule"), [(0.8, 1.2, "linear"), (0.3, 0.7, "square-root"),
                                                    (-0.2, 0.2, "neither"), (0.4, 1.1, "undecided")])
def test_rule_of_interval(low, high, rule):
    assert rule_of(low, high) == rule


def test_probe_batch_sizes_stay_in_the_data():
    assert probe_batch_sizes(32, 64, 1437) == (32, 128)
    assert probe_batch_sizes(256, 512, 600) == (150, 600)
    assert probe_batch_sizes(1, 1, 600) == (1, 4)


# ----------------------------------------------------------------------------------------------------
# Memory: the fitted line bounds the measured peak; the accumulation plan


def test_memory_line_bounds_a_batch_it_was_not_fitted_on():
    import torch
    from torch import nn

    from batchscale.empirical.memory import memory_per_example
    from batchscale.empirical.update_stats.accumulate import micro_batch_peak_bytes

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 3))
    x, y = torch.randn(256, 20), torch.randint(0, 3, (256,))
    loss = nn.CrossEntropyLoss(reduction="none")
    fit = memory_per_example(model, loss, x, y, [16, 64, 256])
    measured = micro_batch_peak_bytes(model, loss, x[:128], y[:128], scale=128, form="mean")
    bound = fit.intercept_bytes + fit.bytes_per_example * 128
    assert 0.5 * bound <= measured <= bound * 1.01
    assert fit.bytes_per_example >= 4 * (64 + 64)  # at least the hidden activations it saves, in float32


def test_accumulation_plan_against_a_hand_computation():
    from batchscale.empirical.memory import MemoryFit, accumulation_plan

    fit = MemoryFit((8, 64), (0, 0), bytes_per_example=1000.0, intercept_bytes=500.0, max_residual=0.0,
                    state_bytes=10_000)
    assert accumulation_plan(fit, 64, 10_500 + 64_000)["fits"]
    plan = accumulation_plan(fit, 64, 10_500 + 20_000)  # room for 20 examples: 4 micro-batches of 16
    assert not plan["fits"] and (plan["micro_batches"], plan["micro_batch"]) == (4, 16)
    assert accumulation_plan(fit, 64, 10_000)["micro_batches"] is None


# ----------------------------------------------------------------------------------------------------
# --check: the advised B_crit against a sweep's fitted critical batch (planted wrong prediction fails)


def synthetic_sweep(b_crit: float = 40.0, s_min: float = 10.0):
    """Sweep rows whose per-seed steps follow S = S_min (1 + B_crit/B) within +-5 %, three seeds."""
    from batchscale.verify.steps_sweep import SweepResult, curves_of

    sizes = (4, 8, 16, 32, 64, 128, 256)
    rows = []
    for optimizer in ("sgd", "momentum"):
        for b in sizes:
            steps = [s_min * (1 + b_crit / b) * f for f in (0.95, 1.0, 1.05)]
            rows.append({"optimizer": optimizer, "batch_size": b, "seed_steps": steps, "steps": steps[1],
                         "seed_learning_rates": [0.1, 0.1, 0.1], "learning_rate": 0.1})
    curves = curves_of(rows, ("sgd", "momentum"))
    config = {"workload": "digits-mlp", "seeds": [0, 1, 2], "batch_sizes": list(sizes), "target": 0.1,
              "target_metric": "error"}
    return SweepResult(rows, curves, "synthetic.sqlite", config, 3)


@pytest.mark.parametrize(("scale", "verdict"), [(1.0, "pass"), (20.0, "fail"), (1 / 20, "fail")])
def test_check_row_passes_the_truth_and_fails_a_planted_wrong_prediction(scale, verdict):
    from batchscale.verify.advise_check import check_row

    measured = synthetic_sweep().curves["sgd"].analysis.critical["mccandlish"]
    assert measured.value == pytest.approx(40.0, rel=0.1)
    advised = 40.0 * scale
    row = check_row(advised, (0.9 * advised, 1.1 * advised), measured, "digits-mlp", {}, 3)
    assert row.verdict == verdict
    assert row.measured == pytest.approx(advised / measured.value)


def test_advise_check_command_prints_the_verdict(monkeypatch):
    import batchscale.verify.steps_sweep as steps_sweep

    monkeypatch.setattr(steps_sweep, "run_sweep", lambda opts: synthetic_sweep(b_crit=4000.0))
    args = ["advise", "--budget-steps", "4", "--checkpoints", "1", "--lr-probe-steps", "0", "--check"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "check: measured critical batch" in result.stdout
    assert "verdict fail" in result.stdout  # B_simple of a 4-step run is far below a planted 4000
    args[-1:] = ["--check", "--format", "json"]
    out = json.loads(CliRunner().invoke(cli, args).stdout)
    assert out["check"]["verdict"] == "fail" and out["check"]["quantity"] == "b_simple_over_b_crit"


@pytest.mark.parametrize("args", [["--device-memory", "0"], ["--device-memory", "nan"],
                                  ["--train-steps", "0"], ["--lr-probe-seeds", "2"],
                                  ["--lr-probe-steps", "-1"], ["--plot", "x.bmp"]])
def test_new_options_reject_bad_values_before_training(args):
    result = CliRunner().invoke(cli, ["advise", *args])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("Error:")


def test_check_refuses_a_regression_workload_before_training():
    result = CliRunner().invoke(cli, ["advise", "--workload", "linreg", "--check"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "classification" in result.output
    assert "training" not in result.output


def test_memory_fit_is_linear_for_planted_peaks():
    from batchscale.empirical.memory import upper_line

    slope, intercept = upper_line([8, 32, 128], [1000 + 50 * 8 + 300, 1000 + 50 * 32, 1000 + 50 * 128])
    assert slope == pytest.approx(50.0) and intercept == pytest.approx(1300.0)
    assert np.all(np.asarray([1700, 2600, 7400]) <= intercept + slope * np.asarray([8, 32, 128]))
