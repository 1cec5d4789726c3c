"""``reproduce ma2018``: verdict logic on planted curves, the training loop against a plain loop, and the
quick command end to end (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli
from batchscale.reproduce import ma2018
from batchscale.theory.regimes import analyze_steps_curve

BATCHES = (1, 2, 4, 8, 16, 32, 64)


def planted_curve(m_star: float, seed: int = 0) -> object:
    """MBB's steps S(m) = 100 (1 + (m* - 1)/m), three seeds with 3% log-normal noise."""
    rng = np.random.default_rng(seed)
    steps = [[100 * (1 + (m_star - 1) / m) * math.exp(0.03 * rng.standard_normal()) for _ in range(3)]
             for m in BATCHES]
    return analyze_steps_curve(BATCHES, steps, n_bootstrap=300)


def test_m_star_row_reproduces_the_true_m_star():
    row = ma2018.m_star_row(10.0, planted_curve(10.0))
    assert row.measured == pytest.approx(10.0, rel=0.15)
    assert row.verdict == "reproduced"


def test_m_star_row_fails_a_planted_wrong_m_star():
    """The nearest wrong prediction: m* off by more than the declared factor (here 4x) is not reproduced."""
    assert ma2018.m_star_row(40.0, planted_curve(10.0)).verdict == "not reproduced"
    assert ma2018.m_star_row(2.5, planted_curve(10.0)).verdict == "not reproduced"


def test_predicted_steps_is_the_log_ratio():
    assert ma2018.predicted_steps(0.5) == pytest.approx(math.log(1e-3) / math.log(0.5))
    assert ma2018.predicted_steps(1.0) == math.inf


def test_steps_to_target_matches_a_plain_loop():
    """The stacked (lr x seed) loop against a one-run numpy loop fed the same batch indices."""
    import torch

    from batchscale.empirical.workloads import get_workload

    w = get_workload("linreg", dim=4, n_train=32, n_test=4, noise_std=0.0, seed=3)
    got = ma2018.steps_to_target(w, 4, [0.05, 0.2], [7])  # (2, 1)
    x, y = w.x_train.double().numpy(), w.y_train.double().numpy()[:, 0]
    for i, lr in enumerate([0.05, 0.2]):
        g = torch.Generator().manual_seed(7)
        v, start, steps = np.zeros(4), float(np.mean(y**2)), 0
        while steps < ma2018.MAX_STEPS:
            idx = torch.randint(32, (4,), generator=g).numpy()
            v = v - lr * 2 * x[idx].T @ (x[idx] @ v - y[idx]) / 4
            steps += 1
            if np.mean((x @ v - y) ** 2) <= ma2018.TARGET * start:
                break
        assert got[i, 0] == steps


@pytest.mark.slow
def test_quick_command_verdicts(tmp_path):
    out = tmp_path / "ma"
    args = ["reproduce", "ma2018", "--quick", "--out", str(out), "--format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "verdicts.json").read_text())
    assert rows[0]["verdict"] == "reproduced" and rows[0]["ci_low"] <= 2 * 10.01
    text = (out / "report.md").read_text()
    assert text.index("## Verdicts") < text.index("## Figures")
    assert (out / "steps_vs_batch.png").stat().st_size > 0 and (out / "stability_rows.json").exists()
