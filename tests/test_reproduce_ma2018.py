"""``reproduce ma2018``: verdict logic on planted curves, the training loop against a plain loop, and the
quick command end to end (slow)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli
from batchscale.errors import InputError
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


LSQ_MODULE = """
import torch
from torch import nn
from batchscale.empirical.models import seeded
from batchscale.empirical.workloads import Workload


def data(seed, n=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, (x @ torch.tensor([1.0, -2.0, 0.5]))[:, None] + 0.3


def linear_with_bias(seed=0):
    x, y = data(seed)
    return Workload("lsq", lambda s: seeded(lambda: nn.Linear(3, 1), s), x, y, x, y, loss="mse")


def mlp(seed=0):
    x, y = data(seed)
    make = lambda s: seeded(lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)), s)
    return Workload("mlp", make, x, y, x, y, loss="mse")


def classifier(seed=0):
    x, _ = data(seed)
    y = (x[:, 0] > 0).long()
    return Workload("cls", lambda s: seeded(lambda: nn.Linear(3, 2), s), x, y, x, y)
"""


@pytest.fixture()
def lsq_module(tmp_path, monkeypatch):
    (tmp_path / "ma_lsq_workloads.py").write_text(LSQ_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ma_lsq_workloads", raising=False)
    return "ma_lsq_workloads"


def test_least_squares_inputs_accepts_linear_mse_and_appends_a_bias_column(lsq_module):
    from batchscale.empirical.workloads import get_workload

    w = get_workload("linreg", dim=4, n_train=16, n_test=4, noise_std=0.0)
    assert np.array_equal(ma2018.least_squares_inputs("linreg", w), w.x_train.double().numpy())
    b = get_workload(f"{lsq_module}:linear_with_bias")
    x = ma2018.least_squares_inputs("b", b)
    assert x.shape == (64, 4) and np.all(x[:, 3] == 1.0)
    start, floor = ma2018.start_and_floor(b, 0, bias=True)
    assert floor < 1e-10 < start  # the data are exactly linear with an intercept


@pytest.mark.parametrize("name, fragment",
                         [("mlp", "not one nn.Linear"), ("classifier", "loss cross_entropy")])
def test_least_squares_inputs_refuses_other_workloads(lsq_module, name, fragment):
    from batchscale.empirical.workloads import get_workload

    with pytest.raises(InputError, match=fragment):
        ma2018.least_squares_inputs(name, get_workload(f"{lsq_module}:{name}"))


def test_cli_refuses_a_non_least_squares_workload_before_training(lsq_module, tmp_path):
    db = tmp_path / "runs.sqlite"
    args = ["reproduce", "ma2018", "--quick", "--workload", f"{lsq_module}:mlp", "--db", str(db),
            "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "least squares" in errors[0] and "Traceback" not in result.output
    assert not db.exists() and not (tmp_path / "out").exists()


def test_trial_configs_pair_rates_seeds_and_targets():
    configs = ma2018.trial_configs("linreg", {"dim": 3}, 4, [0.1, 0.2], [5, 6], [1e-3, 2e-3], 9)
    assert [(c.learning_rate, c.seed, c.target) for c in configs] == [
        (0.1, 5, 1e-3), (0.1, 6, 2e-3), (0.2, 5, 1e-3), (0.2, 6, 2e-3)]
    assert all(c.batch_size == 4 and c.data_seed == 9 and c.target_metric == "loss" and c.optimizer == "sgd"
               for c in configs)


def test_measured_steps_is_lr_major_and_inf_when_not_reached():
    class R:
        def __init__(self, status, steps):
            self.status, self.steps = status, steps

    got = ma2018.measured_steps([R("complete", 3), R("incomplete", None), R("diverged", None),
                                 R("complete", 7)], 2)
    assert got.tolist() == [[3.0, math.inf], [math.inf, 7.0]]


@pytest.mark.slow
def test_quick_command_verdicts(tmp_path):
    out = tmp_path / "ma"
    args = ["reproduce", "ma2018", "--quick", "--out", str(out), "--format", "json", "--db",
            str(tmp_path / "runs.sqlite")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "verdicts.json").read_text())
    assert rows[0]["verdict"] == "reproduced" and rows[0]["ci_low"] <= 2 * 10.01
    text = (out / "report.md").read_text()
    assert text.index("## Verdicts") < text.index("## Figures")
    assert (out / "steps_vs_batch.png").stat().st_size > 0 and (out / "stability_rows.json").exists()
