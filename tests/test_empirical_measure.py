"""Measuring along training (:mod:`batchscale.empirical.measure`) against independent computations.

- the engine's SGD loop as driven by the measurements vs a step-by-step torch.optim.SGD loop;
- the per-step two-batch EMA hook vs a numpy twin (and the update it leaves unchanged);
- divergence ends the measurements with a status row.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from batchscale.empirical.measure import (
    Setup,
    Training,
    measure_along_training,
    sgd_checkpoints,
)
from batchscale.empirical.workloads import get_workload


def linreg(n_train=64):
    return get_workload("linreg", spectrum=(1.0, 0.5, 0.25), n_train=n_train, n_test=8, noise_std=0.5)


def setup_of(wl) -> Setup:
    return Setup(wl, wl.model(0), wl.x_train, wl.y_train, {"workload": "linreg"})


def reference_sgd(wl, steps, lr, batch_size, seed):
    """A plain torch.optim.SGD loop over seeded per-epoch permutations (last partial batch dropped)."""
    model = wl.model(0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    per_epoch = wl.n_train // batch_size
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(wl.n_train, generator=generator)
        idx = order[(step % per_epoch) * batch_size : (step % per_epoch + 1) * batch_size]
        opt.zero_grad()
        wl.per_example_loss(model(wl.x_train[idx]), wl.y_train[idx]).mean().backward()
        opt.step()
    return model


def test_sgd_loop_equals_torch_optim_sgd():
    wl = linreg(64)
    setup = setup_of(wl)
    points = list(sgd_checkpoints(setup, Training(steps=10, lr=0.1, batch_size=16, seed=5), every=4))
    assert [p.step for p in points] == [0, 4, 8, 10]
    reference = reference_sgd(wl, 10, 0.1, 16, 5)
    torch.testing.assert_close(setup.model.weight, reference.weight, rtol=0, atol=0)


def test_sgd_loop_two_batch_ema_equals_a_numpy_twin():
    """Per-step two-batch EMA: big = the training batch of 16, small = its first 4, both without
    replacement from M = 64; numerator and denominator averaged separately, by hand in float64."""
    wl = linreg(64)
    setup = setup_of(wl)
    training = Training(steps=10, lr=0.1, batch_size=16, seed=5)
    points = list(sgd_checkpoints(setup, training, every=5, ema_small=4, ema_decay=0.7))
    assert points[0].ema.weight == 0  # nothing observed before the first step
    x, y = wl.x_train.double().numpy(), wl.y_train.double().numpy()[:, 0]
    w = wl.model(0).weight.detach().double().numpy()[0]
    c_small, c_big = (64 - 4) / (4 * 63), (64 - 16) / (16 * 63)  # c(m) = (M - m) / (m (M - 1))
    g2_ema = tr_ema = weight = 0.0
    expected = {}
    generator = torch.Generator().manual_seed(5)
    for step in range(10):
        if step % 4 == 0:
            order = torch.randperm(64, generator=generator).numpy()
        idx = order[(step % 4) * 16 : (step % 4 + 1) * 16]
        g = 2 * (x[idx] @ w - y[idx])[:, None] * x[idx]  # (16, D) per-example gradients
        sq_big, sq_small = np.sum(g.mean(0) ** 2), np.sum(g[:4].mean(0) ** 2)
        trace = (sq_small - sq_big) / (c_small - c_big)
        g2 = sq_big - c_big * trace
        g2_ema, tr_ema, weight = 0.7 * g2_ema + 0.3 * g2, 0.7 * tr_ema + 0.3 * trace, 0.7 * weight + 0.3
        expected[step + 1] = (g2_ema / weight, tr_ema / weight)
        w = w - 0.1 * g.mean(0)
    for point in points[1:]:
        np.testing.assert_allclose(point.ema.corrected, expected[point.step], rtol=1e-4)
    np.testing.assert_allclose(setup.model.weight.detach().double().numpy()[0], w, rtol=1e-5)
    # the hook's extra backward pass leaves the update alone: same weights as without it
    torch.testing.assert_close(setup.model.weight, reference_sgd(wl, 10, 0.1, 16, 5).weight, rtol=0, atol=0)


def test_divergence_ends_the_measurements():
    wl = linreg(64)
    calls = []
    out = measure_along_training(
        setup_of(wl), Training(steps=500, lr=50.0, batch_size=16), lambda p: calls.append(p.step) or [p.step],
        every=100,
    )
    point, measured = out[-1]
    assert point.status == "diverged" and not math.isfinite(point.batch_loss) and measured == []
    assert calls == [p.step for p, _ in out[:-1]] and calls[0] == 0
