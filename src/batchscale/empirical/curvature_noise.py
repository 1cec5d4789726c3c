r"""Curvature noise seen from the sharpest direction: the per-example Hessian-vector products :math:`H_i v`.

v is the top eigenvector of the Hessian H of the mean loss (Lanczos on Hessian-vector products,
:func:`batchscale.empirical.curvature.top_eigenpairs_lanczos`), :math:`H_i` the Hessian of example i's
loss, so :math:`\frac1M\sum_i H_i v = Hv = \lambda_{max} v`. The spread of the :math:`H_i v` over the
examples is the noise of the batch Hessian that decides whether SGD is stable from v
(:func:`batchscale.theory.stability.curvature_noise_max_stable_step`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from batchscale.empirical.curvature import hvp_operator, top_eigenpairs_lanczos
from batchscale.empirical.gradients import LossFn, num_parameters, trainable_parameters
from batchscale.empirical.gradients.per_example import (
    check_examples_independent,
    flatten_per_example,
    unflatten,
)
from batchscale.errors import require


def per_example_hvps(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor,
    *, chunk_size: int = 256,
) -> Iterator[torch.Tensor]:
    r"""Chunks (n, P) of :math:`H_i v` for every example (v = ``direction``, (P,)).

    torch.func, reverse over reverse: ``vmap(grad(w -> grad(l_i)(w) . v))`` with ``functional_call``.
    """
    check_examples_independent(model)
    params = trainable_parameters(model)
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    first = next(iter(params.values()))
    v = unflatten(direction.to(dtype=first.dtype, device=x.device), params)

    def loss_of(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0)).sum()

    def along_v(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        g = grad(loss_of)(p, xi, yi)
        return sum((g[k] * v[k]).sum() for k in g)

    per_example = vmap(grad(along_v), in_dims=(None, 0, 0))
    for start in range(0, x.shape[0], chunk_size):
        chunk = per_example(params, x[start : start + chunk_size], y[start : start + chunk_size])
        yield flatten_per_example(chunk)  # (n, P)


@dataclass(frozen=True)
class CurvatureNoise:
    r"""Top eigenvalue of H and the spread of the per-example Hessians seen from its eigenvector v.

    ``eigenvalue``: Lanczos' :math:`\lambda_{max}` (relative residual ``residual``). Over the M examples:
    ``mean`` of :math:`q_i = v^\top H_i v` (equals :math:`\lambda_{max}`), ``along_variance`` the population
    variance of :math:`q_i`, and ``spread`` :math:`S^2 = \frac1M\sum_i |H_i v|^2 - \lambda^2`, the trace of
    the population covariance of :math:`H_i v` (its part along v is ``along_variance``).
    """

    eigenvalue: float
    mean: float
    along_variance: float
    spread: float
    n_examples: int
    hvps: int
    residual: float


def curvature_noise(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *, tol: float = 1e-4, seed: int = 0
) -> CurvatureNoise:
    """:class:`CurvatureNoise` of the mean loss over ``x``, ``y`` at the model's current weights."""
    dim = num_parameters(model)
    require(dim >= 2, "the model needs at least 2 parameters")
    dtype = next(iter(trainable_parameters(model).values())).dtype
    values, vectors, calls, residuals = top_eigenpairs_lanczos(
        hvp_operator(model, loss_fn, x, y), dim, k=1, tol=tol, seed=seed, dtype=dtype
    )
    v = torch.from_numpy(vectors[0].copy())  # (P,) float64, unit norm
    q, sq = [], []
    for hv in per_example_hvps(model, loss_fn, x, y, v):  # (n, P)
        hv = hv.double().cpu()
        q.append(hv @ v)  # (n,): v^T H_i v
        sq.append((hv * hv).sum(1))  # (n,): |H_i v|^2
    qs, norms = torch.cat(q), torch.cat(sq)
    mean = float(qs.mean())
    return CurvatureNoise(values[0], mean, float(qs.var(unbiased=False)), float(norms.mean()) - mean**2,
                          int(x.shape[0]), calls, residuals[0])
