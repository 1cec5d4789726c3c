"""The sympy symbols shared by the exact derivations (moments, accumulation, staleness).

Names match the JSON output of ``batchscale derive``: ``sympy.sympify`` of any printed expression gives
back plain symbols with these names. G (mean gradient) and Sigma (per-example gradient covariance) are
commutative scalars here, i.e. one coordinate's mean and variance; since every moment is a scalar
coefficient times G or Sigma, the same coefficient multiplies the vector G and the matrix Sigma.
"""

from __future__ import annotations

import sympy as sp

M = sp.Symbol("M", positive=True, integer=True)  # dataset size
m = sp.Symbol("m", positive=True, integer=True)  # batch size
n = sp.Symbol("n", positive=True, integer=True)  # number of small steps
k = sp.Symbol("k", positive=True, integer=True)  # number of micro-batches
eta = sp.Symbol("eta", positive=True)  # learning rate of the mean-loss form
eta_base = sp.Symbol("eta_base", positive=True)  # base learning rate of the sum-loss form, eta / m
G = sp.Symbol("G")  # mean per-example gradient (one coordinate)
Sigma = sp.Symbol("Sigma", nonnegative=True)  # population variance of per-example gradients
H = sp.Symbol("H")  # mean per-example Hessian (one coordinate)
C = sp.Symbol("C")  # population covariance of per-example Hessian and gradient, (1/M) sum (h_i-H)(g_i-G)

BY_NAME: dict[str, sp.Symbol] = {s.name: s for s in (M, m, n, k, eta, eta_base, G, Sigma, H, C)}
