r"""The curvature and gradient-noise spectra of a network at one point: what the noisy quadratic model takes.

H is the Hessian of the mean loss over the examples given, :math:`\Sigma = \frac1M \sum_e (g_e - G)(g_e -
G)^\top` their per-example gradient covariance (conventions of :mod:`batchscale.empirical.curvature` and
:mod:`batchscale.empirical.gradients`). Neither is formed: everything comes from Hessian-vector products
and per-example gradients.

- **Top**: the k largest eigenpairs :math:`(\lambda_i, v_i)` of H by Lanczos
  (:func:`batchscale.empirical.curvature.top_eigenpairs_lanczos`), and the noise variance along each,
  :math:`c_i = v_i^\top \Sigma v_i`.
- **Bulk**: the rest of the spectrum by stochastic Lanczos quadrature (SLQ; Ghorbani, Krishnan & Xiao
  2019, arXiv 1901.10159) on the deflated operator :math:`(I - VV^\top) H (I - VV^\top)` on the
  complement of the top eigenvectors V: per random probe, m Lanczos steps with full
  reorthogonalisation (:func:`lanczos_tridiagonal`) give nodes :math:`\theta_j` (the tridiagonal's
  eigenvalues) and weights :math:`\tau_j` (squared first components of its eigenvectors), and the bulk's
  density is :math:`(P - k)\,\overline{\sum_j \tau_j \delta(\theta_j)}`, the bar a mean over probes.
- **Noise total**: :math:`\mathrm{tr}\,\Sigma`; the bulk's share is :math:`\mathrm{tr}\,\Sigma -
  \sum_{i \le k} c_i` (how it is spread over the bulk is the model's assumption, not measured here).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import nn

from batchscale.empirical.curvature import MatVec, retained_hvp_operator, top_eigenpairs_lanczos
from batchscale.empirical.gradients import LossFn, iter_per_example_gradients, num_parameters
from batchscale.errors import require

BREAKDOWN = 1e-10  # relative: a Lanczos residual this small means the Krylov space is invariant


@dataclass(frozen=True)
class Tridiagonal:
    """Lanczos coefficients: diagonal ``alpha`` (m,) and off-diagonal ``beta`` (m - 1,) of :math:`T_m`."""

    alpha: np.ndarray
    beta: np.ndarray

    def quadrature(self) -> tuple[np.ndarray, np.ndarray]:
        r"""Gauss quadrature nodes :math:`\theta_j` (eigenvalues of T) and weights :math:`\tau_j = U_{0j}^2`.

        For the unit start vector q: :math:`q^\top f(A) q \approx \sum_j \tau_j f(\theta_j)`, exact for
        polynomials of degree < 2m (Golub & Meurant).
        """
        if self.alpha.size == 1:
            return self.alpha.copy(), np.ones(1)
        nodes, vectors = eigh_tridiagonal(self.alpha, self.beta)
        return nodes, vectors[0] ** 2


def _orthogonalise(w: np.ndarray, basis: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """w minus its projection on the orthonormal rows of ``basis``, twice (classical Gram-Schmidt,
    repeated: "twice is enough")."""
    if len(basis) == 0:
        return w
    rows = np.asarray(basis)  # (n, P)
    for _ in range(2):
        w = w - rows.T @ (rows @ w)
    return w


def lanczos_tridiagonal(
    matvec: MatVec, start: np.ndarray, steps: int, *, deflate: np.ndarray | None = None, dtype=torch.float32
) -> Tridiagonal:
    r"""m = ``steps`` Lanczos steps on :math:`A = (I - VV^\top) H (I - VV^\top)` from ``start`` (P,).

    V are the orthonormal rows of ``deflate`` (k, P) (none: A = H). :math:`q_1 = (I - VV^\top)s/|\cdot|`;
    :math:`w = A q_j - \beta_{j-1} q_{j-1}`, :math:`\alpha_j = q_j^\top w`, w reorthogonalised against
    every earlier :math:`q` and V (full reorthogonalisation, so Ritz values do not repeat),
    :math:`\beta_j = |w|`, :math:`q_{j+1} = w/\beta_j`. Stops early when :math:`\beta_j` falls below
    ``BREAKDOWN`` times the largest :math:`|\alpha|` (the Krylov space is invariant; T is then exact).
    Vectors and coefficients are float64; H is applied in ``dtype``.
    """
    require(steps >= 1, f"Lanczos steps must be >= 1, got {steps}")
    fixed = np.zeros((0, start.size)) if deflate is None else np.asarray(deflate, dtype=float)

    def apply(v: np.ndarray) -> np.ndarray:
        return matvec(torch.from_numpy(v).to(dtype)).double().cpu().numpy()

    q = _orthogonalise(np.asarray(start, dtype=float), fixed)
    q /= np.linalg.norm(q)
    room = start.size - len(fixed)  # dimension of the space the vectors live in
    basis, alpha, beta = [q], [], []
    for j in range(steps):
        w = _orthogonalise(apply(basis[j]), fixed)
        alpha.append(float(basis[j] @ w))
        if j == steps - 1 or len(basis) >= room:
            break
        w = w - alpha[j] * basis[j] - (beta[-1] * basis[j - 1] if j else 0.0)
        w = _orthogonalise(_orthogonalise(w, basis), fixed)
        b = float(np.linalg.norm(w))
        if b <= BREAKDOWN * max(abs(a) for a in alpha):
            break
        beta.append(b)
        basis.append(w / b)
    return Tridiagonal(np.asarray(alpha), np.asarray(beta))


def slq_density(
    matvec: MatVec,
    dim: int,
    *,
    probes: int = 4,
    steps: int = 30,
    seed: int = 0,
    deflate: np.ndarray | None = None,
    dtype=torch.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Spectral density of H on the complement of ``deflate``'s rows by stochastic Lanczos quadrature.

    Per probe (Rademacher, seeded), :func:`lanczos_tridiagonal` and its quadrature give nodes and weights
    summing to 1; the density is :math:`(P - k) \frac1n \sum_{probes} \sum_j \tau_j \delta(\theta_j)`.
    Returns (nodes, counts: coordinates per node, summing to P - k, per-probe Hutchinson estimates of the
    complement's trace :math:`(P - k)\,q^\top A q`: their spread is the trace's sampling error).
    """
    require(probes >= 1, f"SLQ probes must be >= 1, got {probes}")
    k = 0 if deflate is None else int(np.asarray(deflate).shape[0])
    rest = dim - k
    require(rest >= 1, f"nothing left to estimate: {k} deflated directions of {dim}")
    rng = np.random.default_rng(seed)
    nodes, counts, traces = [], [], []
    for _ in range(probes):
        z = rng.choice([-1.0, 1.0], size=dim)  # (P,)
        tri = lanczos_tridiagonal(matvec, z, min(steps, rest), deflate=deflate, dtype=dtype)
        theta, tau = tri.quadrature()
        nodes.append(theta)
        counts.append(rest * tau / probes)
        traces.append(rest * float(tri.alpha[0]))
    return np.concatenate(nodes), np.concatenate(counts), np.asarray(traces)


def noise_along(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    vectors: np.ndarray,
    *,
    chunk_size: int = 256,
) -> tuple[np.ndarray, float]:
    r"""(:math:`c_i = v_i^\top \Sigma v_i` for the rows :math:`v_i` of ``vectors`` (k, P),
    :math:`\mathrm{tr}\,\Sigma`).

    :math:`c_i = \frac1M\sum_e (v_i^\top g_e)^2 - (v_i^\top G)^2` and :math:`\mathrm{tr}\,\Sigma =
    \frac1M\sum_e |g_e|^2 - |G|^2`, accumulated in float64 over chunks of per-example gradients.
    """
    v = torch.from_numpy(np.asarray(vectors, dtype=float))  # (k, P) float64
    n = int(x.shape[0])
    total = torch.zeros(v.shape[1], dtype=torch.float64)
    proj_sq = torch.zeros(v.shape[0], dtype=torch.float64)
    sq = 0.0
    for chunk in iter_per_example_gradients(model, loss_fn, x, y, chunk_size=chunk_size):
        g = chunk.detach().double().cpu()  # (n_chunk, P)
        total += g.sum(0)
        proj_sq += ((g @ v.T) ** 2).sum(0)  # (k,)
        sq += float((g * g).sum())
    mean = total / n  # (P,) G
    c = proj_sq / n - (v @ mean) ** 2
    return c.numpy(), sq / n - float(mean @ mean)


@dataclass(frozen=True)
class NetworkSpectrum:
    """The measured spectra of one point (see the module's docstring): top eigenvalues with their noise
    variances, the bulk's SLQ nodes and coordinate counts, :math:`\\mathrm{tr}\\,\\Sigma`, and the cost."""

    top_curvature: tuple[float, ...]
    top_noise: tuple[float, ...]
    bulk_curvature: tuple[float, ...]
    bulk_counts: tuple[float, ...]
    trace_sigma: float
    dim: int
    n_examples: int
    hvps: int
    residuals: tuple[float, ...]
    bulk_trace_probes: tuple[float, ...]

    @property
    def bulk_noise(self) -> float:
        r""":math:`\mathrm{tr}\,\Sigma - \sum_{i \le k} c_i`, the noise outside the top directions."""
        return self.trace_sigma - float(sum(self.top_noise))

    def trace_h(self) -> float:
        r""":math:`\mathrm{tr}\,H \approx \sum_{i\le k}\lambda_i + \sum_j n_j \theta_j`."""
        return float(sum(self.top_curvature)) + float(np.dot(self.bulk_counts, self.bulk_curvature))

    def as_dict(self) -> dict:
        return asdict(self)


def network_spectrum(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    k: int = 20,
    probes: int = 4,
    steps: int = 30,
    tol: float = 1e-3,
    seed: int = 0,
    chunk_size: int = 256,
) -> NetworkSpectrum:
    """Top-``k`` eigenpairs (Lanczos), the bulk (SLQ: ``probes`` probes of ``steps`` steps on the deflated
    operator) and the noise along and outside the top directions, for the mean loss over ``x``, ``y``."""
    dim = num_parameters(model)
    require(1 <= k < dim, f"need 1 <= k < {dim} top eigenpairs, got k={k}")
    require(steps >= 1 and probes >= 1, f"SLQ needs steps >= 1 and probes >= 1, got {steps}, {probes}")
    dtype = next(p for p in model.parameters() if p.requires_grad).dtype
    calls = [0]
    op = retained_hvp_operator(model, loss_fn, x, y)

    def counted(v: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return op(v)

    values, vectors, _, residuals = top_eigenpairs_lanczos(counted, dim, k=k, tol=tol, seed=seed, dtype=dtype)
    nodes, counts, traces = slq_density(
        counted, dim, probes=probes, steps=steps, seed=seed + 1, deflate=vectors, dtype=dtype
    )
    c, trace_sigma = noise_along(model, loss_fn, x, y, vectors, chunk_size=chunk_size)
    finite = [r if math.isfinite(r) else math.inf for r in residuals]
    return NetworkSpectrum(
        top_curvature=tuple(values),
        top_noise=tuple(float(v) for v in c),
        bulk_curvature=tuple(float(v) for v in nodes),
        bulk_counts=tuple(float(v) for v in counts),
        trace_sigma=float(trace_sigma),
        dim=dim,
        n_examples=int(x.shape[0]),
        hvps=calls[0],
        residuals=tuple(finite),
        bulk_trace_probes=tuple(float(t) for t in traces),
    )


__all__ = [
    "NetworkSpectrum",
    "Tridiagonal",
    "lanczos_tridiagonal",
    "network_spectrum",
    "noise_along",
    "slq_density",
]
