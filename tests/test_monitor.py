"""NoiseScaleMonitor against independent computations: per-example gradients by a plain loop, and
Monte Carlo over many random batches of a small population whose |G|^2 and tr(Sigma) are exact."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch import nn

from batchscale.errors import InputError
from batchscale.monitor import NoiseScaleMonitor

MC_DRAWS = 300
MC_Z = 4.5  # |mean estimate - truth| <= MC_Z standard errors


def mlp(seed: int = 0, norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 8), nn.Tanh()] + ([nn.LayerNorm(8)] if norm else []) + [nn.Linear(8, 3)]
    return nn.Sequential(*layers).double()


def population(n: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def exact_moments(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """|G|^2 and tr(Sigma) (divisor M) from per-example gradients taken one example at a time."""
    grads = []
    for i in range(x.shape[0]):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
    model.zero_grad()
    g = torch.stack(grads)  # (M, P)
    mean = g.mean(0)
    return float(mean.pow(2).sum()), float((g - mean).pow(2).sum(1).mean())


def step(model, monitor, x, y, micro: int = 1, reduction: str = "mean"):
    model.zero_grad()
    for xs, ys in zip(x.chunk(micro), y.chunk(micro), strict=True):
        losses = nn.functional.cross_entropy(model(xs), ys, reduction="none")
        (losses.sum() / x.shape[0] if reduction == "mean" else losses.sum()).backward()
    return monitor.update(batch_size=x.shape[0])


@pytest.mark.parametrize(("norm", "method", "micro", "sampling"), [
    (False, "per-example", 1, "with"),
    pytest.param(False, "per-example", 2, "without", marks=pytest.mark.slow),
    (True, "micro-batch", 4, "with"),
    pytest.param(False, "micro-batch", 4, "without", marks=pytest.mark.slow),
], ids=["per-example", "per-example-accumulated-finite", "micro-batch-layernorm", "micro-batch-finite"])
def test_step_estimates_are_unbiased(norm, method, micro, sampling):
    model = mlp(norm=norm)
    x, y = population()
    g2, tr = exact_moments(model, x, y)
    M, B = x.shape[0], 8
    monitor = NoiseScaleMonitor(model, method=method, population=M if sampling == "without" else None)
    assert monitor.method == method
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(MC_DRAWS):
        idx = rng.integers(0, M, B) if sampling == "with" else rng.permutation(M)[:B]
        est = step(model, monitor, x[idx], y[idx], micro=micro)
        rows.append((est.grad_norm_sq, est.trace_cov))
    rows = np.array(rows)
    se = rows.std(0, ddof=1) / math.sqrt(MC_DRAWS)
    assert abs(rows[:, 0].mean() - g2) <= MC_Z * se[0]
    assert abs(rows[:, 1].mean() - tr) <= MC_Z * se[1]
    # the nearest wrong estimator, |g_B|^2 taken as |G|^2, is biased by tr(Sigma)/B and must be caught
    naive = rows[:, 0] + rows[:, 1] / B
    assert abs(naive.mean() - g2) > MC_Z * se[0]


def test_sum_and_mean_losses_give_the_same_estimates():
    x, y = population()
    a, b = mlp(), mlp()
    est_mean = step(a, NoiseScaleMonitor(a), x[:10], y[:10], reduction="mean")
    est_sum = step(b, NoiseScaleMonitor(b, reduction="sum"), x[:10], y[:10], reduction="sum")
    assert est_sum.grad_norm_sq == pytest.approx(est_mean.grad_norm_sq, rel=1e-10)
    assert est_sum.trace_cov == pytest.approx(est_mean.trace_cov, rel=1e-10)


def test_b_simple_is_the_ratio_of_separate_bias_corrected_averages():
    model = mlp()
    x, y = population()
    monitor = NoiseScaleMonitor(model, decay=0.8)
    rng = np.random.default_rng(3)
    num = den = weight = 0.0
    for _ in range(12):
        idx = rng.integers(0, 24, 6)
        est = step(model, monitor, x[idx], y[idx])
        num, den = 0.8 * num + 0.2 * est.trace_cov, 0.8 * den + 0.2 * est.grad_norm_sq
        weight = 0.8 * weight + 0.2
    assert monitor.b_simple == pytest.approx(num / den, rel=1e-12)
    assert monitor.averages == pytest.approx((den / weight, num / weight), rel=1e-12)
    ratios = [h.trace_cov / h.grad_norm_sq for h in monitor.history]
    assert monitor.b_simple != pytest.approx(float(np.mean(ratios)), rel=1e-3)  # not the mean of ratios
    low, high = monitor.interval()
    assert low <= high


def test_evaluation_passes_between_steps_are_ignored():
    model = mlp()
    x, y = population()
    monitor = NoiseScaleMonitor(model)
    twin = mlp()
    expected = step(twin, NoiseScaleMonitor(twin), x[:8], y[:8])
    model(x)  # an evaluation with gradients enabled and no backward
    with torch.no_grad():
        model(x)
    got = step(model, monitor, x[:8], y[:8])
    assert got.trace_cov == pytest.approx(expected.trace_cov, rel=1e-12)


def test_logs_to_callback_csv_and_writer(tmp_path):
    class Writer:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

    seen, writer, path = [], Writer(), tmp_path / "noise.csv"
    model = mlp()
    monitor = NoiseScaleMonitor(model, log=seen.append, csv_path=path, writer=writer)
    x, y = population()
    for k in range(3):
        step(model, monitor, x[k * 8 : (k + 1) * 8], y[k * 8 : (k + 1) * 8])
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [0, 1, 2] and len(seen) == 3
    assert float(rows[-1]["b_simple"]) == pytest.approx(monitor.b_simple)
    assert ("noise_scale/b_simple", monitor.b_simple, 2) in writer.scalars


def test_suggested_batch_size_is_b_simple_rounded_to_a_power_of_two():
    model = mlp()
    monitor = NoiseScaleMonitor(model)
    assert monitor.suggested_batch_size is None
    x, y = population()
    step(model, monitor, x, y)
    value = monitor.b_simple
    assert monitor.suggested_batch_size == 2 ** max(0, round(math.log2(value)))


def test_misuse_is_a_clear_error():
    with pytest.raises(InputError, match="BatchNorm1d"):
        NoiseScaleMonitor(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    with pytest.raises(InputError, match="unknown method"):
        NoiseScaleMonitor(mlp(), method="bogus")
    model = mlp()
    monitor = NoiseScaleMonitor(model)
    with pytest.raises(InputError, match="needs gradients"):
        monitor.update()
    norm_model = mlp(norm=True)
    micro = NoiseScaleMonitor(norm_model)
    assert micro.method == "micro-batch"
    x, y = population()
    with pytest.raises(InputError, match=">= 2 micro-batches"):
        step(norm_model, micro, x[:8], y[:8], micro=1)
    monitor.close()
    micro.close()


def test_every_k_measures_the_same_steps_as_every_step():
    """every=3 measures steps 0, 3, 6, ... and gives there exactly what a monitor of every step gives on
    the same batches (training itself never depends on the monitor)."""
    x, y = population()
    a, b = mlp(), mlp()
    every_step, every_third = NoiseScaleMonitor(a), NoiseScaleMonitor(b, every=3)
    for k in range(7):
        idx = torch.arange(k, k + 8) % 24
        step(a, every_step, x[idx], y[idx])
        got = step(b, every_third, x[idx], y[idx])
        assert (got is None) == (k % 3 != 0)
    assert [h.step for h in every_third.history] == [0, 3, 6]
    for h in every_third.history:
        twin = every_step.history[h.step]
        assert (h.grad_norm_sq, h.trace_cov) == pytest.approx((twin.grad_norm_sq, twin.trace_cov), rel=1e-12)


class _SeqConv(nn.Module):
    """Conv1d, then a Linear that sees a sequence (per-position path), then a Linear without bias."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv1d(2, 3, kernel_size=2)
        self.seq = nn.Linear(3, 4)
        self.head = nn.Linear(4 * 3, 3, bias=False)

    def forward(self, x):  # x: (N, 2, 4)
        h = torch.tanh(self.conv(x)).transpose(1, 2)  # (N, 3, 3)
        return self.head(torch.tanh(self.seq(h)).flatten(1))  # (N, 3)


@pytest.mark.parametrize("kind", ["mlp", "conv-and-sequence"])
def test_one_step_matches_per_example_gradients_of_a_plain_loop(kind):
    """The per-example path's estimates of one step equal the unbiased formulas applied to per-example
    gradients taken one example at a time (the exact sum of |g_i|^2 and |g_B|^2, no sampling noise)."""
    model = mlp() if kind == "mlp" else _SeqConv().double()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 5, dtype=torch.float64, generator=g) if kind == "mlp" else torch.randn(
        7, 2, 4, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (7,), generator=g)
    grads = []
    for i in range(7):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
    per_example = torch.stack(grads)  # (B, P)
    B = 7
    mean_sq = float(per_example.pow(2).sum(1).mean())
    batch_sq = float(per_example.mean(0).pow(2).sum())
    trace = (mean_sq - batch_sq) * B / (B - 1)
    monitor = NoiseScaleMonitor(model, method="per-example")
    est = step(model, monitor, x, y)
    assert est.trace_cov == pytest.approx(trace, rel=1e-9)
    assert est.grad_norm_sq == pytest.approx(batch_sq - trace / B, rel=1e-9)
