"""The five noise-scale estimators at one point, against the exact population value.

Independent reference: |G|^2 and tr(Sigma) from per-example gradients taken one example at a time
(a plain autograd loop), not from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from batchscale.empirical.estimators import EstimatorOptions, compare_estimators
from batchscale.errors import InputError

M = 96


def problem(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 1)).double()
    x = torch.randn(M, 6, dtype=torch.float64)
    y = (x[:, :1] * 2 + 0.5 * torch.randn(M, 1, dtype=torch.float64))

    def loss_fn(out, target):
        return 0.5 * (out - target).pow(2).sum(1)  # (N,)

    return model, loss_fn, x, y


def loop_b_simple(model, loss_fn, x, y) -> float:
    grads = []
    for i in range(x.shape[0]):
        model.zero_grad()
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
    model.zero_grad()
    g = torch.stack(grads)
    mean = g.mean(0)
    return float((g - mean).pow(2).sum(1).mean() / mean.pow(2).sum())


def by_name(rows):
    return {r["estimator"]: r for r in rows}


def test_population_estimators_equal_the_plain_loop():
    model, loss_fn, x, y = problem()
    rows = by_name(compare_estimators(model, loss_fn, x, y, EstimatorOptions(estimators=("exact", "fast"))))
    reference = loop_b_simple(model, loss_fn, x, y)
    assert rows["exact"]["b_simple"] == pytest.approx(reference, rel=1e-9)
    assert rows["fast"]["b_simple"] == pytest.approx(reference, rel=1e-9)
    assert rows["exact"]["covers_exact"] and rows["fast"]["covers_exact"]


def test_unbiased_estimators_cover_the_exact_value_and_consecutive_steps_are_biased():
    model, loss_fn, x, y = problem()
    reference = loop_b_simple(model, loss_fn, x, y)
    opts = EstimatorOptions(batch_size=32, small=4, micro_batches=4, window=8, lr=0.3, draws=80, seed=1)
    rows = by_name(compare_estimators(model, loss_fn, x, y, opts))
    for name in ("two-batch", "micro-batch"):
        assert rows[name]["covers_exact"], rows[name]
        assert rows[name]["ratio_to_exact"] == pytest.approx(1.0, abs=0.35)
    consecutive = rows["consecutive"]
    assert not consecutive["covers_exact"], consecutive  # the parameters moved: the estimate is biased
    assert consecutive["exact_b_simple"] == pytest.approx(reference, rel=1e-9)


@pytest.mark.slow
def test_consecutive_steps_lose_their_bias_as_the_learning_rate_vanishes():
    model, loss_fn, x, y = problem()
    rows = compare_estimators(model, loss_fn, x, y, EstimatorOptions(
        batch_size=32, window=8, lr=1e-9, draws=300, seed=1, estimators=("consecutive",)))
    assert rows[0]["covers_exact"], rows[0]


def test_bad_settings_are_input_errors():
    model, loss_fn, x, y = problem()
    for opts, fragment in [
        (EstimatorOptions(batch_size=200), "exceeds"),
        (EstimatorOptions(small=64, batch_size=64), "small batch"),
        (EstimatorOptions(micro_batches=5), "divide"),
        (EstimatorOptions(estimators=("bogus",)), "unknown estimator"),
        (EstimatorOptions(lr=math.nan), "positive"),
    ]:
        with pytest.raises(InputError, match=fragment):
            compare_estimators(model, loss_fn, x, y, opts)
    assert np.isfinite(loop_b_simple(model, loss_fn, x, y))


def test_cli_compare_estimators_prints_every_estimator_and_refuses_bad_sizes(tmp_path):
    from click.testing import CliRunner

    from batchscale.cli.main import cli

    args = ["measure", "compare-estimators", "--draws", "3", "--sample", "128", "--batch-size", "16",
            "--small", "4", "--window", "2", "--format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    import json

    rows = json.loads(result.stdout)
    assert [r["estimator"] for r in rows] == ["exact", "fast", "two-batch", "micro-batch", "consecutive"]
    assert all(r["step"] == 0 and r["config"]["command"] == "compare-estimators" for r in rows)
    bad_args = ["measure", "compare-estimators", "--batch-size", "16", "--micro-batches", "5"]
    bad = CliRunner().invoke(cli, bad_args)
    assert bad.exit_code == 2
    assert [line for line in bad.output.splitlines() if line.startswith("Error:")] == [
        "Error: --micro-batches must be >= 2 and divide the batch size 16, got 5"]
