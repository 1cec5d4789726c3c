"""Per-example curvature noise from the top eigenvector: torch.func H_i v against an independent triple
backward and the full Hessian-vector product; the stability model's bound against batch enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from batchscale.empirical.curvature import hessian_vector_product
from batchscale.empirical.curvature_noise import curvature_noise, per_example_hvps
from batchscale.errors import InputError
from batchscale.theory.stability import curvature_noise_max_stable_step


def tiny_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    loss_fn = lambda out, t: nn.functional.cross_entropy(out, t, reduction="none")  # noqa: E731
    return model, loss_fn, x, y


def triple_backward_curvatures(model, loss_fn, x, y, v):
    """v^T H_i v, one example at a time, by differentiating d/dt l_i(w + t v) twice with autograd."""
    params = [p for p in model.parameters()]
    parts = list(v.split([p.numel() for p in params]))
    out = []
    for i in range(x.shape[0]):
        loss = loss_fn(model(x[i : i + 1]), y[i : i + 1]).sum()
        g = torch.autograd.grad(loss, params, create_graph=True)
        d = sum((gi.reshape(-1) * pv).sum() for gi, pv in zip(g, parts, strict=True))
        h = torch.autograd.grad(d, params)
        out.append(float(sum((hi.reshape(-1) * pv).sum() for hi, pv in zip(h, parts, strict=True))))
    return torch.tensor(out, dtype=torch.float64)


def test_per_example_hvps_agree_with_a_triple_backward_and_average_to_hv():
    model, loss_fn, x, y = tiny_problem()
    n_params = sum(p.numel() for p in model.parameters())
    v = torch.randn(n_params, dtype=torch.float64)
    hv = torch.cat(list(per_example_hvps(model, loss_fn, x, y, v, chunk_size=3)))  # (10, P)
    assert torch.allclose(hv @ v, triple_backward_curvatures(model, loss_fn, x, y, v), atol=1e-10)
    assert torch.allclose(hv.mean(0), hessian_vector_product(model, loss_fn, x, y, v), atol=1e-10)


def test_curvature_noise_mean_is_the_top_eigenvalue_and_its_parts_are_ordered():
    model, loss_fn, x, y = tiny_problem()
    found = curvature_noise(model, loss_fn, x, y, tol=1e-10)
    params = [p.detach() for p in model.parameters()]
    flat = torch.cat([p.reshape(-1) for p in params])

    def total(w):
        chunks, start = [], 0
        for p in params:
            chunks.append(w[start : start + p.numel()].view_as(p))
            start += p.numel()
        h = torch.tanh(x @ chunks[0].T + chunks[1])
        return loss_fn(h @ chunks[2].T + chunks[3], y).mean()

    top = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(total, flat))[-1])
    assert found.eigenvalue == pytest.approx(top, rel=1e-8)
    assert found.mean == pytest.approx(top, rel=1e-6)
    assert 0 <= found.along_variance <= found.spread  # the along-v part of the covariance's trace


def enumerate_growth(h: np.ndarray, v: np.ndarray, step: float, m: int, replacement: bool) -> float:
    """E|(I - step H_B) v|^2 over every batch of m of the matrices h (n, d, d), by enumeration."""
    n = h.shape[0]
    batches = itertools.product(range(n), repeat=m) if replacement else itertools.combinations(range(n), m)
    values = [float(np.sum((v - step * h[list(b)].mean(0) @ v) ** 2)) for b in batches]
    return float(np.mean(values))


@pytest.mark.parametrize("m,replacement", [(1, False), (2, False), (3, False), (5, False), (2, True)])
def test_the_bound_is_where_the_enumerated_growth_from_v_crosses_one(m, replacement):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 3, 3))
    h = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(3)  # (5, 3, 3) per-example Hessians, PSD
    mean = h.mean(0)
    lam, vecs = np.linalg.eigh(mean)
    v = vecs[:, -1]
    spread = float(np.mean(np.sum((h @ v) ** 2, axis=1)) - lam[-1] ** 2)
    step = curvature_noise_max_stable_step(lam[-1], spread, m, None if replacement else 5)
    assert enumerate_growth(h, v, step, m, replacement) == pytest.approx(1.0, abs=1e-10)
    assert enumerate_growth(h, v, 0.9 * step, m, replacement) < 1 < enumerate_growth(h, v, 1.1 * step, m,
                                                                                      replacement)


def test_the_bound_saturates_at_two_over_lambda():
    assert curvature_noise_max_stable_step(2.0, 5.0, 10, 10) == pytest.approx(1.0)  # m = M: gradient descent
    assert curvature_noise_max_stable_step(2.0, 0.0, 1) == pytest.approx(1.0)
    small = curvature_noise_max_stable_step(2.0, 400.0, 1)
    assert curvature_noise_max_stable_step(2.0, 400.0, 2) == pytest.approx(2 * small, rel=0.02)  # ~linear
    with pytest.raises(InputError):
        curvature_noise_max_stable_step(0.0, 1.0, 1)
    with pytest.raises(InputError):
        curvature_noise_max_stable_step(1.0, -1.0, 1)
    assert math.isfinite(curvature_noise_max_stable_step(1.0, 1.0, 3, 3))
