"""Curvature of the training loss: Hessian-vector products, sharpness (top eigenvalues) and B_noise.

H is the Hessian of the *mean* per-example loss L(w) = (1/M) sum_i l_i(w) over the examples given
(conventions as in :mod:`batchscale.empirical.gradients`). Nothing here forms H: every quantity is built
from Hessian-vector products (reverse-over-reverse with torch.func), chunked over the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn

from batchscale.empirical.gradients import (
    LossFn,
    iter_per_example_gradients,
    num_parameters,
    trainable_parameters,
)
from batchscale.errors import require

SharpnessMethod = Literal["lanczos", "power"]
MatVec = Callable[[torch.Tensor], torch.Tensor]


def hessian_vector_products(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    vectors: torch.Tensor,
    *,
    chunk_size: int = 2048,
) -> torch.Tensor:
    r""":math:`H v_k` for each row of ``vectors`` (K, P), :math:`H = \nabla^2_w \frac{1}{M}\sum_i l_i(w)`.

    Reverse-over-reverse (Pearlmutter 1994): :math:`Hv = \nabla_w (v^\top \nabla_w L)`. Per chunk of
    ``chunk_size`` examples, one backward pass builds :math:`\nabla_w L` with its graph and each vector
    then costs one more backward through it. (Forward-over-reverse ``torch.func.jvp`` would avoid the
    retained graph, but torch 2.13's forward AD emits a ``torch.jit.script`` DeprecationWarning.)
    """
    params = [p for p in model.parameters() if p.requires_grad]
    dtype = params[0].dtype
    vectors = vectors.to(dtype)
    total = torch.zeros(vectors.shape, dtype=dtype, device=vectors.device)
    for start in range(0, x.shape[0], chunk_size):
        loss = loss_fn(model(x[start : start + chunk_size]), y[start : start + chunk_size]).sum()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        flat = torch.cat([g.reshape(-1) for g in grads])  # (P,), differentiable
        for k in range(vectors.shape[0]):
            hv = torch.autograd.grad(flat @ vectors[k], params, retain_graph=k < vectors.shape[0] - 1)
            total[k] += torch.cat([h.reshape(-1) for h in hv]).detach()
    return total / x.shape[0]


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    vector: torch.Tensor,
    *,
    chunk_size: int = 2048,
) -> torch.Tensor:
    r""":math:`Hv` with :math:`H = \nabla^2_w \frac{1}{M}\sum_i l_i(w)` over the M examples ``x``, ``y``.

    ``vector`` is v, shape (P,); see :func:`hessian_vector_products`.
    """
    return hessian_vector_products(model, loss_fn, x, y, vector[None], chunk_size=chunk_size)[0]


def hvp_operator(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> MatVec:
    """``v -> H v`` over the given examples (see :func:`hessian_vector_product`)."""
    return lambda v: hessian_vector_product(model, loss_fn, x, y, v.to(x.device))


def retained_hvp_operator(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> MatVec:
    """``v -> H v`` as :func:`hvp_operator`, but the mean gradient's graph over all of ``x`` is built once and
    kept, so each product is one backward pass (about 3x faster for many products at one point; memory:
    the activations of every example at once)."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(model(x), y).mean()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])  # (P,), differentiable

    def apply(v: torch.Tensor) -> torch.Tensor:
        hv = torch.autograd.grad(flat @ v.to(flat.dtype).to(flat.device), params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).detach()

    return apply


@dataclass(frozen=True)
class Sharpness:
    r"""Top Hessian eigenvalues :math:`\lambda_1 \ge \lambda_2 \ge \dots` and what it took to find them.

    ``stable_lr`` is :math:`2/\lambda_1`, the largest stable step of full-batch gradient descent on the
    local quadratic model (Cohen et al. 2021, "edge of stability").
    """

    method: str
    eigenvalues: tuple[float, ...]
    n_examples: int
    matvecs: int
    residuals: tuple[float, ...] = ()
    tol: float = math.inf

    @property
    def converged(self) -> bool:
        """Every relative residual |Hv - lambda v| / |lambda| is within ``tol``."""
        return all(r <= self.tol for r in self.residuals)

    @property
    def top(self) -> float:
        return self.eigenvalues[0]

    @property
    def stable_lr(self) -> float:
        return 2.0 / self.top if self.top > 0 else math.inf

    def as_rows(self) -> list[dict[str, object]]:
        """One row per eigenvalue, with its relative residual and status (``ok`` or ``not converged``)."""
        residuals = self.residuals or (math.nan,) * len(self.eigenvalues)
        return [
            {
                "method": self.method,
                "rank": i + 1,
                "eigenvalue": lam,
                "stable_lr": 2.0 / lam if lam > 0 else math.inf,
                "examples": self.n_examples,
                "hvps": self.matvecs,
                "residual": res,
                "status": "ok" if res <= self.tol else "not converged",
            }
            for i, (lam, res) in enumerate(zip(self.eigenvalues, residuals, strict=True))
        ]


def relative_residual(hv: torch.Tensor, v: torch.Tensor, value: float) -> float:
    r""":math:`|Hv - \lambda v| / |\lambda|` for a unit vector v (inf when :math:`\lambda = 0`).

    For symmetric H some eigenvalue lies within :math:`|Hv - \lambda v|` of the Rayleigh quotient
    :math:`\lambda = v^\top Hv` (and within its square over the spectral gap), so a small residual is
    convergence, not stagnation.
    """
    norm = float((hv.double() - value * v.double()).norm())
    return norm / abs(value) if value != 0 else (0.0 if norm == 0 else math.inf)


def top_eigenvalue_power(
    matvec: MatVec, dim: int, *, iters: int = 100, tol: float = 1e-4, seed: int = 0, dtype=torch.float32
) -> tuple[float, int, float]:
    r"""Eigenvalue of largest magnitude by power iteration.

    :math:`v \leftarrow Hv/|Hv|`, :math:`\lambda = v^\top Hv` (Rayleigh quotient).

    Stops when the relative residual :math:`|Hv - \lambda v|/|\lambda|` (:func:`relative_residual`) is at
    most ``tol``, or after ``iters`` products. Returns (eigenvalue, number of products, residual): a
    residual above ``tol`` means not converged. If the most negative eigenvalue is larger in magnitude
    than the most positive, this returns the negative one (use Lanczos for the top).
    """
    require(iters >= 1, f"iterations must be >= 1, got {iters}")
    v = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    v /= v.norm()
    value, residual = 0.0, math.inf
    for i in range(1, iters + 1):
        hv = matvec(v.to(dtype)).to(dtype).cpu()
        value = float(v @ hv)
        residual = relative_residual(hv, v, value)
        norm = hv.norm()
        if residual <= tol or norm == 0:
            return value, i, residual
        v = hv / norm
    return value, iters, residual


def top_eigenpairs_lanczos(
    matvec: MatVec, dim: int, *, k: int = 1, tol: float = 1e-4, seed: int = 0, dtype=torch.float32
) -> tuple[tuple[float, ...], np.ndarray, int, tuple[float, ...]]:
    """The k algebraically largest eigenpairs by implicitly restarted Lanczos (scipy ``eigsh``, which='LA').

    Returns (eigenvalues in decreasing order, their unit eigenvectors as rows (k, dim) float64, number
    of Hessian-vector products, relative residuals |Hv - lambda v| / |lambda| of the returned Ritz
    vectors, each checked with one more product).
    """
    require(1 <= k < dim, f"need 1 <= k < {dim} eigenvalues, got k={k}")
    calls = [0]

    def apply(v: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return matvec(torch.from_numpy(np.ascontiguousarray(v).ravel()).to(dtype)).double().cpu().numpy()

    op = LinearOperator((dim, dim), matvec=apply, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(dim)
    values, vectors = eigsh(op, k=k, which="LA", tol=tol, v0=v0)
    order = np.argsort(values)[::-1]
    calls_solve = calls[0]
    residuals = []
    for j in order:
        v = torch.from_numpy(np.ascontiguousarray(vectors[:, j]))  # (P,) float64, unit norm
        hv = torch.from_numpy(apply(vectors[:, j]))
        residuals.append(relative_residual(hv, v, float(values[j])))
    top = np.ascontiguousarray(vectors[:, order].T)  # (k, P)
    return tuple(float(values[j]) for j in order), top, calls_solve, tuple(residuals)


def top_eigenvalues_lanczos(
    matvec: MatVec, dim: int, *, k: int = 1, tol: float = 1e-4, seed: int = 0, dtype=torch.float32
) -> tuple[tuple[float, ...], int, tuple[float, ...]]:
    """The k algebraically largest eigenvalues (:func:`top_eigenpairs_lanczos` without the vectors).

    Returns (eigenvalues in decreasing order, number of Hessian-vector products, relative residuals).
    """
    values, _, calls, residuals = top_eigenpairs_lanczos(matvec, dim, k=k, tol=tol, seed=seed, dtype=dtype)
    return values, calls, residuals


def sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    k: int = 1,
    method: SharpnessMethod = "lanczos",
    iters: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    on_hvp: Callable[[int], None] | None = None,
) -> Sharpness:
    """Top Hessian eigenvalue(s) of the mean loss over ``x``, ``y`` (power iteration gives only the top).

    ``on_hvp(n)`` is called after the n-th Hessian-vector product (e.g. to report progress).
    """
    require(method in ("lanczos", "power"), f"unknown method {method!r}; expected lanczos or power")
    dim = num_parameters(model)
    dtype = next(iter(trainable_parameters(model).values())).dtype
    op = hvp_operator(model, loss_fn, x, y)
    if on_hvp is not None:
        op = _counted(op, on_hvp)
    if method == "power":
        require(k == 1, f"power iteration finds one eigenvalue; got k={k} (use lanczos)")
        value, calls, residual = top_eigenvalue_power(op, dim, iters=iters, tol=tol, seed=seed, dtype=dtype)
        return Sharpness("power", (value,), int(x.shape[0]), calls, (residual,), tol)
    values, calls, residuals = top_eigenvalues_lanczos(op, dim, k=k, tol=tol, seed=seed, dtype=dtype)
    return Sharpness("lanczos", values, int(x.shape[0]), calls, residuals, residual_tolerance(tol, dtype))


def residual_tolerance(tol: float, dtype: torch.dtype) -> float:
    """The residual a converged Ritz pair may show: ``tol`` (eigsh's relative accuracy), but never below
    what Hessian-vector products in ``dtype`` can resolve (float32 sums: ~1e-4 relative; float64: 1e-10)."""
    return max(tol, 1e-4 if dtype == torch.float32 else 1e-10)


def _counted(op: MatVec, on_call: Callable[[int], None]) -> MatVec:
    """``op`` that calls ``on_call(n)`` after its n-th application."""
    calls = [0]

    def apply(v: torch.Tensor) -> torch.Tensor:
        out = op(v)
        calls[0] += 1
        on_call(calls[0])
        return out

    return apply


@dataclass(frozen=True)
class NoiseScaleCurvature:
    r""":math:`B_\mathrm{noise} = \mathrm{tr}(H\Sigma) / (G^\top H G)` and its parts.

    ``trace_h_sigma`` is :math:`\mathrm{tr}(H\Sigma)` estimated from ``probes`` per-example gradients
    with standard error ``trace_h_sigma_stderr``; ``g_h_g`` is :math:`G^\top H G` (exact over the examples).
    """

    trace_h_sigma: float
    trace_h_sigma_stderr: float
    g_h_g: float
    probes: int
    n_examples: int

    @property
    def b_noise(self) -> float:
        return self.trace_h_sigma / self.g_h_g if self.g_h_g > 0 else math.inf

    def as_row(self) -> dict[str, object]:
        rel = self.trace_h_sigma_stderr / abs(self.trace_h_sigma) if self.trace_h_sigma else math.inf
        return {
            "b_noise": self.b_noise,
            "b_noise_stderr": abs(self.b_noise) * rel,
            "trace_h_sigma": self.trace_h_sigma,
            "g_h_g": self.g_h_g,
            "probes": self.probes,
        }


def b_noise(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mean_gradient: torch.Tensor,
    probes: int = 32,
    seed: int = 0,
) -> NoiseScaleCurvature:
    r""":math:`B_\mathrm{noise} = \mathrm{tr}(H\Sigma)/(G^\top H G)` (McCandlish et al. 2018, eq. 2.7).

    :math:`\mathrm{tr}(H\Sigma) = \frac{1}{M}\sum_i (g_i - G)^\top H (g_i - G)` is estimated without bias
    by its average over ``probes`` examples drawn uniformly without replacement; H and G are over all of
    ``x``, ``y`` (G is ``mean_gradient``, e.g. ``GradientStatistics.mean_gradient``). Costs probes + 1 HVPs.
    """
    n = int(x.shape[0])
    require(1 <= probes <= n, f"probes must be in 1..{n}, got {probes}")
    op = hvp_operator(model, loss_fn, x, y)
    g = mean_gradient.to(next(iter(trainable_parameters(model).values())).dtype)
    g_h_g = float(g.double() @ op(g).double())
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:probes].to(x.device)
    (grads,) = iter_per_example_gradients(model, loss_fn, x[idx], y[idx], chunk_size=probes)
    d = grads - g  # (probes, P): g_i - G
    h_d = hessian_vector_products(model, loss_fn, x, y, d)
    values = (d.double() * h_d.double()).sum(1).cpu().numpy()  # (g_i - G)^T H (g_i - G)
    stderr = float(values.std(ddof=1) / math.sqrt(probes) * math.sqrt(1 - (probes - 1) / max(n - 1, 1)))
    return NoiseScaleCurvature(float(values.mean()), stderr if probes > 1 else math.inf, g_h_g, probes, n)
