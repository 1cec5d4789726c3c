r"""Power-law eigenvalues :math:`\lambda_i = i^{-\alpha}`, defined once for every layer.

numpy only (no torch, no sympy), so :mod:`batchscale.theory` (the noisy quadratic model's spectrum, the
least-squares stability analysis) and :mod:`batchscale.empirical` (the input covariance of the synthetic
least-squares data) both import it without importing each other.
"""

from __future__ import annotations

import math

import numpy as np

from batchscale.errors import require


def power_law_eigenvalues(dim: int, alpha: float) -> np.ndarray:
    r""":math:`\lambda_i = i^{-\alpha}`, :math:`i = 1..d`, float64, descending for alpha > 0.

    d is ``dim`` (a positive integer), alpha is ``alpha`` (finite).
    """
    require(
        isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim >= 1,
        f"dimension must be a positive integer, got {dim}",
    )
    require(math.isfinite(alpha), f"alpha must be finite, got {alpha}")
    return np.arange(1, dim + 1, dtype=np.float64) ** (-float(alpha))
