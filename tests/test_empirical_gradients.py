"""Per-example gradients and their statistics against independent computations.

- torch.func per-example gradients vs a plain loop of single-example backward passes (and BackPACK's
  BatchGrad when installed);
- the hook-based squared norms vs the torch.func gradients;
- on Gaussian least squares, G, tr(Sigma), B_simple vs hand-written numpy per-example gradients
  (float precision) and vs the closed-form population values (Monte Carlo tolerance);
- the finite-population estimators vs enumeration of many random subsets;
- the two-batch estimator vs the exact value (statistically).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from batchscale.empirical.gradients import (
    TwoBatchEMA,
    gradient_statistics,
    per_example_gradients,
    per_example_sq_norms,
    per_example_sq_norms_and_block_sums,
    population_moments,
    two_batch_estimates,
    two_batch_noise_scale,
    two_batch_step_estimates,
)
from batchscale.empirical.workloads import get_workload, per_example_loss
from batchscale.errors import InputError

FLOAT32_RTOL = 1e-5  # per-example gradients vs a loop, float32
Z = 4.0  # Monte Carlo checks: within Z standard errors


def cross_entropy(out, y):
    return per_example_loss("cross_entropy", out, y)


def mse(out, y):
    return per_example_loss("mse", out, y)


class SeqModel(nn.Module):
    """Linear layers applied to every position of a (N, T, D) input, then pooled."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 6)
        self.b = nn.Linear(6, 3, bias=False)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))).mean(1)


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))


def conv2d():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Conv2d(4, 3, 2, dilation=2, bias=False),
        nn.Flatten(),
        nn.LazyLinear(3),
    )


def conv1d():
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=2), nn.Tanh(), nn.Flatten(), nn.LazyLinear(3))


# (id, model factory, input shape, loss, targets)
PROBLEMS = [
    ("mlp-ce", mlp, (12,), cross_entropy, "class"),
    ("mlp-mse", mlp, (3, 4), mse, "regression"),
    ("seq-linear", SeqModel, (7, 5), cross_entropy, "class"),
    ("conv2d", conv2d, (1, 6, 6), cross_entropy, "class"),
    ("conv1d", conv1d, (2, 9), cross_entropy, "class"),
]
PARAMS, IDS = [p[1:] for p in PROBLEMS], [p[0] for p in PROBLEMS]


def make_problem(factory, shape, target, n=24, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, *shape)
    model = factory()
    model(x[:1])  # materialise lazy layers
    y = torch.randint(3, (n,)) if target == "class" else torch.randn(n, 3)
    return model, x, y


def loop_gradients(model, loss_fn, x, y):
    """The obviously correct twin: one backward pass per example."""
    rows = []
    for i in range(x.shape[0]):
        model.zero_grad()
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).sum().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    model.zero_grad()
    return torch.stack(rows)


@pytest.mark.parametrize(("factory", "shape", "loss_fn", "target"), PARAMS, ids=IDS)
def test_per_example_gradients_equal_a_loop(factory, shape, loss_fn, target):
    model, x, y = make_problem(factory, shape, target)
    expected = loop_gradients(model, loss_fn, x, y)
    got = per_example_gradients(model, loss_fn, x, y, chunk_size=7)
    torch.testing.assert_close(got, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * expected.abs().max())


@pytest.mark.parametrize(("factory", "shape", "loss_fn", "target"), PARAMS, ids=IDS)
def test_fast_squared_norms_equal_torch_func(factory, shape, loss_fn, target):
    model, x, y = make_problem(factory, shape, target)
    grads = per_example_gradients(model, loss_fn, x, y)
    sq, g_sum = per_example_sq_norms(model, loss_fn, x, y)
    torch.testing.assert_close(sq, grads.pow(2).sum(1), rtol=FLOAT32_RTOL, atol=0.0)
    torch.testing.assert_close(g_sum, grads.sum(0), rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * g_sum.abs().max())


@pytest.mark.parametrize(("factory", "shape", "loss_fn", "target"), PARAMS, ids=IDS)
def test_fast_block_sums_equal_torch_func(factory, shape, loss_fn, target):
    model, x, y = make_problem(factory, shape, target)  # 24 examples in 5 blocks: 5, 5, 5, 5, 4
    grads = per_example_gradients(model, loss_fn, x, y)
    expected = torch.stack([grads[k * 5 : (k + 1) * 5].sum(0) for k in range(5)])
    sq, blocks = per_example_sq_norms_and_block_sums(model, loss_fn, x, y, n_groups=5)
    torch.testing.assert_close(sq, grads.pow(2).sum(1), rtol=FLOAT32_RTOL, atol=0.0)
    torch.testing.assert_close(blocks, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * expected.abs().max())


def test_exact_and_fast_statistics_agree():
    model, x, y = make_problem(mlp, (12,), "class", n=100)
    exact = gradient_statistics(model, cross_entropy, x, y, method="exact", chunk_size=16)
    fast = gradient_statistics(model, cross_entropy, x, y, method="fast", chunk_size=16)
    for name in ("grad_norm_sq", "trace_cov", "b_simple"):
        assert getattr(fast, name) == pytest.approx(getattr(exact, name), rel=FLOAT32_RTOL)


def test_fast_path_rejects_unsupported_layers():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with pytest.raises(InputError, match="LayerNorm"):
        per_example_sq_norms(model, cross_entropy, torch.randn(3, 4), torch.tensor([0, 1, 0]))


def test_batch_norm_in_training_mode_is_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x, y = torch.randn(6, 4), torch.randint(2, (6,))
    for method in ("exact", "fast"):
        with pytest.raises(InputError, match="BatchNorm1d in training mode"):
            gradient_statistics(model, cross_entropy, x, y, method=method)
    with pytest.raises(InputError, match="mixes the examples"):
        two_batch_noise_scale(model, cross_entropy, x, y, small=2, big=4, draws=2)
    model.eval()  # running statistics: examples independent again
    stats = gradient_statistics(model, cross_entropy, x, y, method="exact")
    assert stats.n_examples == 6


def test_backpack_batch_grad_agrees():
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import BatchGrad

    model, x, y = make_problem(mlp, (12,), "class")
    model = backpack.extend(model)
    loss = backpack.extend(nn.CrossEntropyLoss(reduction="sum"))(model(x), y)
    with backpack.backpack(BatchGrad()):
        loss.backward()
    expected = torch.cat([p.grad_batch.reshape(x.shape[0], -1) for p in model.parameters()], 1)
    got = per_example_gradients(model, cross_entropy, x, y)
    torch.testing.assert_close(got, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * expected.abs().max())


# --------------------------------------------------------------------------------------------------
# Gaussian least squares: x ~ N(0, diag(lam)), y = w*.x + eps, eps ~ N(0, s^2), loss (w.x - y)^2


SPECTRUM = (1.0, 0.5, 0.25, 0.125)
NOISE = 0.5


def linreg(n_train, seed=0):
    return get_workload("linreg", seed=seed, spectrum=SPECTRUM, n_train=n_train, n_test=8, noise_std=NOISE)


def population_values(lam, e, s):
    """Closed forms with e = w - w*: G = 2 L e, Cov[g] = 4[(e'Le + s^2) L + L e e' L] (Isserlis)."""
    lam_e = lam * e
    g2 = 4 * lam_e @ lam_e
    trace = 4 * ((e @ lam_e + s**2) * lam.sum() + lam_e @ lam_e)
    return g2, trace


def numpy_per_example_gradients(wl, w):
    """Hand-written g_i = 2 (w.x_i - y_i) x_i in float64."""
    x, y = wl.x_train.double().numpy(), wl.y_train.double().numpy()[:, 0]
    return 2 * (x @ w - y)[:, None] * x


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_linreg_statistics_equal_numpy_per_example_gradients(method):
    wl = linreg(400)
    model = wl.model(0)
    w = model.weight.detach().double().numpy()[0]
    g = numpy_per_example_gradients(wl, w)
    mean = g.mean(0)
    stats = gradient_statistics(model, wl.per_example_loss, wl.x_train, wl.y_train, method=method)
    assert stats.grad_norm_sq == pytest.approx(mean @ mean, rel=FLOAT32_RTOL)
    assert stats.trace_cov == pytest.approx(((g - mean) ** 2).sum(1).mean(), rel=FLOAT32_RTOL)
    assert stats.b_simple_ci == (stats.b_simple, stats.b_simple)  # all M examples: exact, zero width


def test_linreg_statistics_equal_population_closed_form():
    n = 20_000  # Monte Carlo sample: the training set; tolerance Z standard errors of the sample means
    wl = linreg(n)
    lam, w_star = np.array(wl.info["spectrum"]), np.array(wl.info["w_star"])
    model = wl.model(0)
    w = model.weight.detach().double().numpy()[0]
    g2_pop, tr_pop = population_values(lam, w - w_star, NOISE)
    g = numpy_per_example_gradients(wl, w)
    mean_se = np.sqrt((g.var(0) / n).sum())  # stderr of |G_hat| (componentwise, summed in quadrature)
    sq_se = (g**2).sum(1).std() / math.sqrt(n)  # stderr of mean |g_i|^2
    stats = gradient_statistics(model, wl.per_example_loss, wl.x_train, wl.y_train, method="fast")
    g_norm = math.sqrt(g2_pop)
    assert abs(math.sqrt(stats.grad_norm_sq) - g_norm) <= Z * mean_se
    assert abs(stats.trace_cov - tr_pop) <= Z * (sq_se + 2 * g_norm * mean_se)
    b_pop = tr_pop / g2_pop
    assert stats.b_simple == pytest.approx(b_pop, rel=0.05)  # 5%: the two stderr bounds above combined


def test_population_moments_unbiased_over_random_subsets():
    """Average the estimators over many random subsets of a small population of vectors."""
    rng = np.random.default_rng(1)
    population = rng.normal(size=(40, 3)) + np.array([0.3, -0.2, 0.1])  # M = 40 vectors g_i
    big_g = population.mean(0)
    exact = (big_g @ big_g, ((population - big_g) ** 2).sum(1).mean())
    n, trials = 6, 40_000
    est = np.empty((trials, 2))
    for t in range(trials):
        sample = population[rng.choice(40, n, replace=False)]
        mean = sample.mean(0)
        est[t] = population_moments(mean @ mean, (sample**2).sum(1).mean(), n, 40)
    se = est.std(0) / math.sqrt(trials)
    assert np.all(np.abs(est.mean(0) - np.array(exact)) <= Z * se)
    full = population_moments(big_g @ big_g, (population**2).sum(1).mean(), 40, 40)
    assert full == pytest.approx(exact, rel=1e-12)


def test_two_batch_formula_matches_mccandlish_form():
    # with replacement, c = 1/B: |G|^2 = (B_b |G_b|^2 - B_s |G_s|^2)/(B_b - B_s),
    # S = (|G_s|^2 - |G_b|^2)/(1/B_s - 1/B_b)   (McCandlish et al. 2018, eqs. A.2-A.3)
    sq_s, sq_b, b_s, b_b = 3.0, 1.2, 8, 64
    g2, trace = two_batch_estimates(sq_s, sq_b, 1 / b_s, 1 / b_b)
    assert g2 == pytest.approx((b_b * sq_b - b_s * sq_s) / (b_b - b_s), rel=1e-12)
    assert trace == pytest.approx((sq_s - sq_b) / (1 / b_s - 1 / b_b), rel=1e-12)


@pytest.mark.parametrize("sampling", ["with", "without"])
def test_two_batch_estimator_agrees_with_exact(sampling):
    wl = linreg(512)
    model = wl.model(0)
    exact = gradient_statistics(model, wl.per_example_loss, wl.x_train, wl.y_train)
    est = two_batch_noise_scale(
        model, wl.per_example_loss, wl.x_train, wl.y_train, small=4, big=128, draws=300, sampling=sampling
    )
    assert abs(est.grad_norm_sq - exact.grad_norm_sq) <= Z * est.grad_norm_sq_stderr
    assert abs(est.trace_cov - exact.trace_cov) <= Z * est.trace_cov_stderr
    assert est.b_simple_ci[0] <= exact.b_simple <= est.b_simple_ci[1]


def test_two_batch_step_estimator_on_a_slice_is_unbiased():
    """Small batch = the first 8 of a training batch of 96 (a correlated pair, both drawn without
    replacement from M = 128, where c(96) is 4x below 1/96): the average over 400 batches equals the
    exact values within Z standard errors."""
    wl = linreg(128)
    model = wl.model(0)
    exact = gradient_statistics(model, wl.per_example_loss, wl.x_train, wl.y_train)
    # independent big-batch gradients: hand-written numpy per-example gradients, not the model's backward
    g = torch.from_numpy(numpy_per_example_gradients(wl, model.weight.detach().double().numpy()[0]))
    generator = torch.Generator().manual_seed(7)
    est = []
    for _ in range(400):
        idx = torch.randperm(128, generator=generator)[:96]
        xb, yb = wl.x_train[idx], wl.y_train[idx]
        est.append(
            two_batch_step_estimates(
                model, wl.per_example_loss, xb, yb, g[idx].mean(0), small=8, population=128
            )
        )
    est = np.array(est)
    mean, se = est.mean(0), est.std(0, ddof=1) / math.sqrt(len(est))
    assert abs(mean[0] - exact.grad_norm_sq) <= Z * se[0]
    assert abs(mean[1] - exact.trace_cov) <= Z * se[1]
    with pytest.raises(InputError, match="small"):
        two_batch_step_estimates(model, wl.per_example_loss, xb, yb, g[idx].mean(0), small=96, population=128)


def test_two_batch_interval_is_infinite_not_nan_when_many_replicates_have_no_signal():
    """At w = w* the gradient is label noise only: |G|^2 is tiny, and with 3 draws many bootstrap
    replicates have |G|^2 <= 0. The upper bound is then +inf (it was nan, with a RuntimeWarning)."""
    wl = linreg(256)
    model = wl.model(0)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(wl.info["w_star"], dtype=model.weight.dtype)[None])
    est = two_batch_noise_scale(model, wl.per_example_loss, wl.x_train, wl.y_train, small=2, big=8, draws=3)
    assert est.b_simple_ci[1] == math.inf


def test_ema_averages_numerator_and_denominator_separately():
    pairs = [(1.0, 10.0), (3.0, 2.0), (0.5, 4.0)]
    state = TwoBatchEMA(decay=0.5)
    num = den = 0.0
    for g2, tr in pairs:
        state = state.update(g2, tr)
        num, den = 0.5 * num + 0.5 * tr, 0.5 * den + 0.5 * g2
    assert state.b_simple == pytest.approx(num / den, rel=1e-12)
    assert state.corrected == pytest.approx((den / (1 - 0.5**3), num / (1 - 0.5**3)), rel=1e-12)
    ratio_ema = 0.0
    for g2, tr in pairs:
        ratio_ema = 0.5 * ratio_ema + 0.5 * tr / g2
    assert state.b_simple != pytest.approx(ratio_ema / (1 - 0.5**3), rel=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample": 1}, "at least 2"),
        ({"sample": 10_000}, "exceeds"),
        ({"method": "nope"}, "unknown method"),
    ],
    ids=["sample-too-small", "sample-too-big", "bad-method"],
)
def test_statistics_bad_input(kwargs, match):
    model, x, y = make_problem(mlp, (12,), "class")
    with pytest.raises(InputError, match=match):
        gradient_statistics(model, cross_entropy, x, y, **kwargs)


def test_sample_estimate_and_interval_cover_the_full_value():
    """A sample of 256 of 2000 examples: the 95% interval (bootstrap, 32 groups) holds the exact value."""
    wl = linreg(2000)
    model = wl.model(0)
    full = gradient_statistics(model, wl.per_example_loss, wl.x_train, wl.y_train, method="fast")
    part = gradient_statistics(model, wl.per_example_loss, wl.x_train, wl.y_train, method="fast", sample=256)
    assert part.n_examples == 256 and part.population == 2000
    assert part.b_simple_ci[0] < full.b_simple < part.b_simple_ci[1]
    assert part.b_simple_ci[0] < part.b_simple < part.b_simple_ci[1]


def test_benchmark_script_runs():
    """Smoke test of benchmarks/bench_per_example.py at batch 16 (it cross-checks the methods first)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_per_example.py"
    args = [sys.executable, str(script), "--repeats", "1", "--loop-repeats", "1", "--batch", "16"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=300).stdout
    assert "batch 16" in out and "| fast path: hook squared norms | 1 |" in out
