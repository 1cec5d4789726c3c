"""HVPs, sharpness and B_noise against finite differences and the full autograd Hessian (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from batchscale.empirical.curvature import (
    Sharpness,
    b_noise,
    hessian_vector_product,
    sharpness,
    top_eigenvalue_power,
    top_eigenvalues_lanczos,
)
from batchscale.empirical.gradients import (
    gradient_statistics,
    per_example_gradients,
    trainable_parameters,
    unflatten,
)
from batchscale.empirical.workloads import get_workload, per_example_loss
from batchscale.errors import InputError

FD_STEP = 1e-5  # central differences of float64 gradients: error O(h^2) + rounding O(eps/h)
FD_RTOL = 1e-6
EIG_RTOL = 1e-5  # eigensolvers run to tol 1e-8 (power) / 1e-10 (Lanczos) on float64 products


def cross_entropy(out, y):
    return per_example_loss("cross_entropy", out, y)


def mse(out, y):
    return per_example_loss("mse", out, y)


def tanh_mlp():
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def quadratic_model():
    return nn.Sequential(nn.Linear(4, 3)).double()


# (id, model factory, loss, targets)
PROBLEMS = [
    ("tanh-mlp-ce", tanh_mlp, cross_entropy, "class"),
    ("tanh-mlp-mse", tanh_mlp, mse, "regression"),
    ("linear-mse", quadratic_model, mse, "regression"),
]
IDS = [p[0] for p in PROBLEMS]


def make(factory, target, n=40, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, 4, dtype=torch.float64)
    y = torch.randint(3, (n,)) if target == "class" else torch.randn(n, 3, dtype=torch.float64)
    return factory(), x, y


def full_hessian(model, loss_fn, x, y):
    """The whole Hessian of the mean loss, by torch.autograd.functional.hessian (independent of HVPs)."""
    params = trainable_parameters(model)
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def loss(w):
        return loss_fn(functional_call(model, unflatten(w, params), (x,)), y).mean()

    return torch.autograd.functional.hessian(loss, flat)


def flat_gradient_at(model, loss_fn, x, y, w):
    params = trainable_parameters(model)
    w = w.clone().requires_grad_(True)
    loss = loss_fn(functional_call(model, unflatten(w, params), (x,)), y).mean()
    (g,) = torch.autograd.grad(loss, w)
    return g


@pytest.mark.parametrize(("factory", "loss_fn", "target"), [p[1:] for p in PROBLEMS], ids=IDS)
def test_hvp_equals_finite_differences_of_gradients(factory, loss_fn, target):
    model, x, y = make(factory, target)
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    v = torch.randn(w.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fd = (
        flat_gradient_at(model, loss_fn, x, y, w + FD_STEP * v)
        - flat_gradient_at(model, loss_fn, x, y, w - FD_STEP * v)
    ) / (2 * FD_STEP)
    hv = hessian_vector_product(model, loss_fn, x, y, v, chunk_size=13)
    torch.testing.assert_close(hv, fd, rtol=FD_RTOL, atol=FD_RTOL * fd.abs().max())


@pytest.mark.parametrize(("factory", "loss_fn", "target"), [p[1:] for p in PROBLEMS], ids=IDS)
def test_hvp_equals_full_hessian_times_vector(factory, loss_fn, target):
    model, x, y = make(factory, target)
    h = full_hessian(model, loss_fn, x, y)
    v = torch.randn(h.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(hessian_vector_product(model, loss_fn, x, y, v), h @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("factory", "loss_fn", "target"), [p[1:] for p in PROBLEMS], ids=IDS)
def test_lanczos_top_eigenvalues_equal_eigvalsh(factory, loss_fn, target):
    model, x, y = make(factory, target)
    expected = torch.linalg.eigvalsh(full_hessian(model, loss_fn, x, y)).flip(0)[:3]
    got = sharpness(model, loss_fn, x, y, k=3, method="lanczos", tol=1e-10)
    np.testing.assert_allclose(got.eigenvalues, expected.numpy(), rtol=EIG_RTOL)


def test_power_iteration_equals_eigvalsh():
    """Power iteration on a PSD Hessian (linear model, squared loss: H = 2 X^T X / (N K) per output)."""
    model, x, y = make(quadratic_model, "regression")
    expected = float(torch.linalg.eigvalsh(full_hessian(model, mse, x, y))[-1])
    got = sharpness(model, mse, x, y, method="power", iters=2000, tol=1e-12)
    assert got.top == pytest.approx(expected, rel=EIG_RTOL)
    assert got.stable_lr == pytest.approx(2 / expected, rel=EIG_RTOL)


def test_linreg_sharpness_equals_data_covariance():
    """linreg: per-example loss (w.x - y)^2, so H = 2 X^T X / N exactly (independent numpy)."""
    wl = get_workload("linreg", spectrum=(1.0, 0.5, 0.25), n_train=300, n_test=8)
    x = wl.x_train.double().numpy()
    expected = np.linalg.eigvalsh(2 * x.T @ x / x.shape[0])[::-1]
    got = sharpness(wl.model(0), wl.per_example_loss, wl.x_train, wl.y_train, k=2, tol=1e-8)
    np.testing.assert_allclose(got.eigenvalues, expected[:2], rtol=1e-4)  # float32 model


def test_b_noise_equals_brute_force():
    model, x, y = make(tanh_mlp, "class")
    h = full_hessian(model, cross_entropy, x, y)
    g = per_example_gradients(model, cross_entropy, x, y)
    big_g = g.mean(0)
    d = g - big_g
    expected_tr = float(torch.einsum("ip,pq,iq->", d, h, d) / x.shape[0])  # tr(H Sigma)
    expected_ghg = float(big_g @ h @ big_g)
    stats = gradient_statistics(model, cross_entropy, x, y)
    got = b_noise(model, cross_entropy, x, y, mean_gradient=stats.mean_gradient, probes=x.shape[0])
    assert got.trace_h_sigma == pytest.approx(expected_tr, rel=1e-9)
    assert got.g_h_g == pytest.approx(expected_ghg, rel=1e-9)
    assert got.b_noise == pytest.approx(expected_tr / expected_ghg, rel=1e-9)
    assert got.trace_h_sigma_stderr == 0.0  # every example probed: exact


def test_b_noise_probe_estimate_within_stderr():
    model, x, y = make(tanh_mlp, "class", n=200)
    stats = gradient_statistics(model, cross_entropy, x, y)
    exact = b_noise(model, cross_entropy, x, y, mean_gradient=stats.mean_gradient, probes=200)
    est = b_noise(model, cross_entropy, x, y, mean_gradient=stats.mean_gradient, probes=40, seed=3)
    assert abs(est.trace_h_sigma - exact.trace_h_sigma) <= 4 * est.trace_h_sigma_stderr


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "power", "k": 2}, "one eigenvalue"),
        ({"method": "qr"}, "unknown method"),
        ({"k": 99}, "k=99"),
    ],
    ids=["power-k2", "bad-method", "k-too-big"],
)
def test_sharpness_bad_input(kwargs, match):
    model, x, y = make(tanh_mlp, "class")
    with pytest.raises(InputError, match=match):
        sharpness(model, cross_entropy, x, y, **kwargs)


def close_pair_matvec(gap=1e-3, dim=40, seed=0):
    """A symmetric matrix Q diag(1, 1 - gap, 0.5, ...) Q^T (float64) as a matrix-vector product."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    values = np.concatenate([[1.0, 1.0 - gap], np.linspace(0.5, -0.3, dim - 2)])
    h = torch.from_numpy(q @ np.diag(values) @ q.T)
    return (lambda v: h @ v.double()), values


def test_power_iteration_with_two_close_top_eigenvalues_stops_on_the_residual():
    """Gap 1e-3 between the top two: successive Rayleigh quotients change by < 1e-4 long before the
    iterate leaves the second eigenvector's direction; the residual rule keeps going until
    |Hv - lambda v| / |lambda| <= tol, which bounds the eigenvalue error by residual^2 / gap
    (the old rule stopped 32x tol low)."""
    matvec, values = close_pair_matvec()
    value, calls, residual = top_eigenvalue_power(matvec, 40, iters=20000, tol=1e-4, dtype=torch.float64)
    assert residual <= 1e-4
    assert values[1] < value <= values[0]
    # Kato-Temple: lambda_1 - rho <= |r|^2 / (rho - lambda_2) for the Rayleigh quotient rho
    assert values[0] - value <= (residual * value) ** 2 / (value - values[1]) * (1 + 1e-9)
    assert values[0] - value <= 2e-5


def test_power_iteration_says_when_it_did_not_converge():
    matvec, _ = close_pair_matvec()
    value, calls, residual = top_eigenvalue_power(matvec, 40, iters=5, tol=1e-4, dtype=torch.float64)
    assert calls == 5 and residual > 1e-4
    rows = Sharpness("power", (value,), 1, calls, (residual,), 1e-4).as_rows()
    assert rows[0]["status"] == "not converged" and rows[0]["residual"] == residual


def test_lanczos_with_two_close_top_eigenvalues_reports_small_residuals():
    matvec, values = close_pair_matvec()
    found, _, residuals = top_eigenvalues_lanczos(matvec, 40, k=2, tol=1e-8, dtype=torch.float64)
    np.testing.assert_allclose(found, values[:2], rtol=1e-7)
    assert max(residuals) <= 1e-6
