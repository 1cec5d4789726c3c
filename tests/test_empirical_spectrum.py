"""Network spectra (Lanczos top eigenpairs, SLQ bulk, noise along the eigenvectors) against a dense Hessian
(torch.autograd.functional.hessian) and a dense per-example gradient covariance, on a tiny float64 model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_empirical_curvature import cross_entropy, full_hessian, make, tanh_mlp

from batchscale.empirical.gradients import per_example_gradients
from batchscale.empirical.spectrum import lanczos_tridiagonal, network_spectrum, noise_along, slq_density


@pytest.fixture(scope="module")
def problem():
    model, x, y = make(tanh_mlp, "class", n=40)
    h = full_hessian(model, cross_entropy, x, y).numpy()  # (51, 51)
    return model, x, y, h


@pytest.fixture(scope="module")
def spectrum(problem):
    model, x, y, _ = problem
    return network_spectrum(model, cross_entropy, x, y, k=4, probes=2, steps=5, tol=1e-8)


def dense_matvec(a: np.ndarray):
    m = torch.from_numpy(a)
    return lambda v: m @ v.double()


def test_lanczos_quadrature_is_exact_for_low_degree_polynomials():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    a = q @ np.diag(np.linspace(-1.0, 3.0, 30)) @ q.T
    z = rng.standard_normal(30)
    theta, tau = lanczos_tridiagonal(dense_matvec(a), z, 6, dtype=torch.float64).quadrature()
    u = z / np.linalg.norm(z)
    for p in range(12):  # Gauss quadrature with 6 nodes: exact up to degree 11
        exact = u @ np.linalg.matrix_power(a, p) @ u
        assert np.sum(tau * theta**p) == pytest.approx(exact, rel=1e-8, abs=1e-10)
    assert np.sum(tau * theta**14) != pytest.approx(u @ np.linalg.matrix_power(a, 14) @ u, rel=1e-8)


def test_full_lanczos_on_the_complement_finds_the_remaining_eigenvalues():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    eig = np.linspace(0.1, 5.0, 20)
    a = q @ np.diag(eig) @ q.T
    top = q[:, -3:].T  # eigenvectors of the 3 largest
    tri = lanczos_tridiagonal(dense_matvec(a), rng.standard_normal(20), 50, deflate=top, dtype=torch.float64)
    assert tri.alpha.size == 17  # stops once the complement is spanned
    np.testing.assert_allclose(np.sort(tri.quadrature()[0]), eig[:17], rtol=1e-8)


def test_top_eigenpairs_match_the_dense_hessian(problem, spectrum):
    h, spec = problem[3], spectrum
    dense = np.linalg.eigvalsh(h)[::-1]
    np.testing.assert_allclose(spec.top_curvature, dense[:4], rtol=1e-7)
    assert max(spec.residuals) < 1e-6


def test_slq_density_matches_the_dense_trace_and_moments(problem):
    model, x, y, h = problem
    w, u = np.linalg.eigh(h)
    top = u[:, -4:].T
    nodes, counts, traces = slq_density(dense_matvec(h), 51, probes=8, steps=47, seed=3, deflate=top,
                                        dtype=torch.float64)
    assert counts.sum() == pytest.approx(47.0)
    rest = w[:-4]
    assert nodes.max() <= rest.max() + 1e-8 and nodes.min() >= rest.min() - 1e-8
    # the trace: Hutchinson over the probes, within 4 of its standard errors of the dense value
    err = traces.std(ddof=1) / np.sqrt(traces.size)
    assert abs(np.dot(counts, nodes) - rest.sum()) <= 4 * err + 1e-9
    assert abs(traces.mean() - rest.sum()) <= 4 * err + 1e-9
    # a wrong operator (no deflation) is told apart: its trace includes the top four
    _, wrong, wrong_traces = slq_density(dense_matvec(h), 51, probes=8, steps=47, seed=3, dtype=torch.float64)
    assert wrong.sum() == pytest.approx(51.0)
    assert abs(wrong_traces.mean() - rest.sum()) > 4 * err


def test_noise_along_the_eigenvectors_matches_the_dense_covariance(problem, spectrum):
    model, x, y, h = problem
    g = per_example_gradients(model, cross_entropy, x, y).numpy()  # (40, 51)
    sigma = np.cov(g.T, bias=True)  # (1/M) sum (g - G)(g - G)^T
    _, u = np.linalg.eigh(h)
    v = u[:, -4:].T
    c, trace = noise_along(model, cross_entropy, x, y, v, chunk_size=7)
    np.testing.assert_allclose(c, np.einsum("ip,pq,iq->i", v, sigma, v), rtol=1e-9)
    assert trace == pytest.approx(np.trace(sigma), rel=1e-9)
    dense_c = np.einsum("ip,pq,iq->i", v, sigma, v)[::-1]  # along the eigenvectors, largest first
    np.testing.assert_allclose(spectrum.top_noise, dense_c, rtol=1e-5)
    outside = np.trace(sigma) - np.einsum("ip,pq,iq->", v, sigma, v)
    assert spectrum.bulk_noise == pytest.approx(outside, rel=1e-6)
