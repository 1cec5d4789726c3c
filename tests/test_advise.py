"""``batchscale advise`` (first version): S(B), E(B) and the recommended ranges against their definitions,
and the command end to end on a tiny run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli
from batchscale.verify.advise import batch_range, steps_and_examples


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
            "--report", str(report)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    low, high = out["interval"]
    assert low <= out["critical_batch_size"] <= high
    assert [row["batch_size"] for row in out["curve"]][:4] == [1, 2, 4, 8]
    assert out["method"] == "fast" and out["n_train"] == 1437
    assert any("not built yet" in a for a in out["assumptions"])
    assert {row["step"] for row in out["measurements"]} == {0, 3, 6}
    assert "critical batch size B_crit" in report.read_text()


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


def test_advise_on_a_user_model_without_fast_path_uses_two_batch(tmp_path, monkeypatch):
    (tmp_path / "advise_user_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["advise", "--workload", "advise_user_models:make", "-W", "n_train=600", "--budget-steps", "4",
            "--checkpoints", "1", "--format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["method"] == "two-batch" and out["n_train"] == 600
    low, high = out["interval"]
    assert low < out["critical_batch_size"] < high  # two-batch: a real bootstrap interval, not a point
    assert [row["method"] for row in out["measurements"]] == ["two-batch", "two-batch"]
