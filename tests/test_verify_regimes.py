"""``regimes`` rows on synthetic seeded curves drawn from S(B) = S_min (1 + B_crit/B) with known B_crit and
the optimal rate eps_max / (1 + B_crit/B): the claim passes where the truth says so, and every planted wrong
prediction (momentum's critical batch equal to or below SGD's, perfect scaling throughout, linear or
square-root learning-rate scaling over the whole range) fails."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchscale.theory.regimes import Estimate
from batchscale.verify.regimes import (
    halves,
    model_lr_slope,
    order_verdict,
    regimes_rows,
    separation,
)
from batchscale.verify.steps_sweep import curves_of

BATCH = (4, 8, 16, 32, 64, 128, 256)


def synthetic_rows(optimizer: str, b_crit: float, seeds: int = 5, noise: float = 0.04, seed: int = 0) -> list:
    """Sweep rows with per-seed steps and best rates from the model, times log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in BATCH:
        steps = 12.0 * (1.0 + b_crit / b) * np.exp(noise * rng.standard_normal(seeds))
        rates = 0.8 / (1.0 + b_crit / b) * np.exp(noise * rng.standard_normal(seeds))
        rows.append({"optimizer": optimizer, "batch_size": b, "steps": float(np.median(steps)),
                     "learning_rate": float(np.median(rates)), "seed_steps": [float(s) for s in steps],
                     "seed_learning_rates": [float(r) for r in rates]})
    return rows


def synthetic_curves(sgd: float = 16.0, momentum: float = 128.0, **kw):
    rows = synthetic_rows("sgd", sgd, **kw) + synthetic_rows("momentum", momentum, seed=1, **kw)
    return curves_of(rows, ("sgd", "momentum"))


@pytest.fixture(scope="module")
def curves():
    return synthetic_curves()


def verdicts(rows, quantity):
    return [r.verdict for r in rows if r.quantity == quantity]


def test_the_curves_recover_the_planted_critical_batch(curves):
    for name, truth in (("sgd", 16.0), ("momentum", 128.0)):
        est = curves[name].analysis.critical["mccandlish"]
        assert est.low < truth < est.high


def test_the_claim_passes_on_curves_that_follow_it(curves):
    rows = regimes_rows(curves, {}, "synthetic", 5)
    assert verdicts(rows, "momentum_over_sgd_critical_batch")[0] == "pass"  # mccandlish
    assert verdicts(rows, "regime_order") == ["pass", "pass"]
    assert verdicts(rows, "lr_slope") == ["pass"] * 4
    named = [r.reason for r in rows if r.quantity == "critical_batch"]
    assert sum("; sgd, " in t for t in named) == 3 and sum("; momentum, " in t for t in named) == 3
    assert len(verdicts(rows, "critical_batch")) == 6  # 2 optimizers x 3 definitions


@pytest.mark.parametrize("direction", ["below", "equal"])
def test_planted_momentum_not_above_sgd_fails(curves, direction):
    rows = regimes_rows(curves, {}, "synthetic", 5, direction=direction)
    assert verdicts(rows, "momentum_over_sgd_critical_batch")[0] == "fail"


def test_sgd_above_momentum_fails_the_claim():
    swapped = synthetic_curves(sgd=128.0, momentum=16.0)
    rows = regimes_rows(swapped, {}, "synthetic", 5)
    assert verdicts(rows, "momentum_over_sgd_critical_batch")[0] == "fail"


def test_overlapping_intervals_are_inconclusive():
    mom, sgd = Estimate(40.0, 20.0, 80.0, True), Estimate(30.0, 15.0, 60.0, True)
    ratio, (low, high), verdict = separation(mom, sgd)
    assert verdict.verdict == "inconclusive" and low < 1 < high
    assert separation(Estimate(40.0, 35.0, 80.0, True), sgd)[2].verdict == "inconclusive"
    assert separation(Estimate(90.0, 61.0, None, False), sgd)[2].verdict == "pass"  # open above is fine
    assert separation(Estimate(90.0, None, 200.0, False), sgd)[2].verdict == "inconclusive"


def test_planted_perfect_scaling_throughout_fails(curves):
    rows = regimes_rows(curves, {}, "synthetic", 5, expect="linear")
    assert verdicts(rows, "regime_order") == ["fail", "fail"]


def test_one_regime_over_the_whole_range_fails_and_undecided_is_inconclusive():
    assert order_verdict(["perfect_scaling"] * 4)[1].verdict == "fail"
    assert order_verdict(["perfect_scaling", "undecided", "undecided"])[1].verdict == "inconclusive"
    assert order_verdict(["perfect_scaling", "undecided", "diminishing_returns"])[1].verdict == "pass"


@pytest.mark.parametrize("rule", ["linear", "sqrt"])
def test_planted_single_power_lr_scaling_fails(curves, rule):
    rows = regimes_rows(curves, {}, "synthetic", 5, lr_rule=rule)
    assert "fail" in verdicts(rows, "lr_slope")


def test_model_lr_slope_against_finite_differences():
    sizes = [32.0, 64.0]
    by_hand = math.log((1 / (1 + 50 / 64)) / (1 / (1 + 50 / 32))) / math.log(2.0)
    assert model_lr_slope(sizes, 50.0) == pytest.approx(by_hand)
    assert model_lr_slope([1.0, 2.0], 1e-9) == pytest.approx(0.0, abs=1e-8)


def test_halves_cover_the_grid():
    assert halves(BATCH) == {"small": [0, 1, 2, 3], "large": [3, 4, 5, 6]}
    assert halves((1, 2, 3, 4)) == {"small": [0, 1], "large": [2, 3]}


def test_a_db_that_cannot_be_written_is_refused_before_any_training(tmp_path):
    from click.testing import CliRunner

    from batchscale.cli.main import cli

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(cli, ["verify", "regimes", "--quick", "--db", str(blocker / "runs.sqlite")])
    assert result.exit_code == 2, result.output
    assert "Error" in result.output and "Traceback" not in result.output


def test_sweep_config_resolves_auto_device_like_sweep_steps():
    # `verify --device auto` (the CLI default) and `--device cpu` must store the same trial ids, as
    # `sweep steps` resolves the device before its trials are named (no GPU here: auto is the CPU).
    from batchscale.verify.registry import resolve
    from batchscale.verify.steps_sweep import sweep_config

    auto = sweep_config(resolve(device="auto", quick=True))
    cpu = sweep_config(resolve(device="cpu", quick=True))
    assert auto.device == "cpu" and auto == cpu
