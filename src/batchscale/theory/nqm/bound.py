"""Information bound: the smallest expected loss any method reaches from n noisy gradient samples, and the
fewest steps it implies at batch size B (:func:`steps_lower_bound`).
"""

from __future__ import annotations

import math

import numpy as np

from batchscale.errors import require
from batchscale.theory.spectra import Spectrum


def information_bound_loss(spectrum: Spectrum, examples) -> np.ndarray:
    r"""Smallest expected loss any method can reach from n = ``examples`` noisy gradient samples.

    Each example gives :math:`h_i(x_i - x_i^*) + \varepsilon_i`, :math:`\mathrm{Var}\,\varepsilon_i = c_i`:
    an unbiased look at :math:`x_i^*` with variance :math:`c_i / h_i^2`. With the prior variance
    :math:`E[x_{i,0}^2]` the Bayes (Gaussian, linear-optimal) posterior variance gives

    .. math:: L_{\rm info}(n) = \tfrac12 \sum_i \frac{h_i\, E[x_{i,0}^2]\, c_i}{c_i + n\, h_i^2 E[x_{i,0}^2]}.

    SGD, momentum, preconditioning and EMA all use n = t B samples after t steps of batch B, and their
    expected loss depends on second moments only, so :math:`E[L(x_t)] \ge L_{\rm info}(tB)`. For C = H and
    x_0^2 = 1 with every :math:`n h_i \gg 1` this reads :math:`t \ge d / (2 B\, L_{\rm target})`.
    """
    n = np.asarray(examples, dtype=float)[..., None]
    h, c, x0 = spectrum.curvature, spectrum.noise, spectrum.init_sq
    # posterior variance x0^2 c / (c + n h^2 x0^2); zero-noise coordinates are solved by one look
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # n h^2 x0 = inf: var 0
        var = np.where(c > 0, x0 * c / (c + n * h**2 * x0), np.where(n > 0, 0.0, x0))
    return 0.5 * var @ (spectrum.counts * h)


def information_bound_examples(spectrum: Spectrum, target: float) -> int:
    r"""Smallest n with :math:`L_{\rm info}(n) \le` ``target`` (see :func:`information_bound_loss`).

    Every method needs at least this many examples: steps >= ceil(n / B).
    """
    require(math.isfinite(target) and target > 0, f"target loss must be > 0, got {target}")
    key = (float(target),) + tuple(np.asarray(a).tobytes() for a in _spectrum_arrays(spectrum))
    if key not in _INFORMATION_CACHE:
        if len(_INFORMATION_CACHE) >= 64:
            _INFORMATION_CACHE.clear()
        _INFORMATION_CACHE[key] = _information_examples(spectrum, target)
    return _INFORMATION_CACHE[key]


_INFORMATION_CACHE: dict[tuple, int] = {}  # searches ask for the same bound once per call


def _spectrum_arrays(spectrum: Spectrum) -> tuple:
    """The spectrum's arrays (curvature, noise, counts, initial second moments)."""
    return spectrum.curvature, spectrum.noise, spectrum.counts, spectrum.init_sq


def _information_examples(spectrum: Spectrum, target: float) -> int:
    if information_bound_loss(spectrum, 0) <= target:
        return 0
    hi = 1
    while information_bound_loss(spectrum, hi) > target:
        hi *= 2
        require(hi < 2**62, f"target {target} is below what any finite number of examples reaches")
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if information_bound_loss(spectrum, mid) <= target else (mid, hi)
    return hi


def _information_start(spectrum: Spectrum, batch_size: np.ndarray, target: float) -> np.ndarray:
    """First step worth checking: one below the information bound (a margin for rounding), at least 0."""
    return np.maximum(steps_lower_bound(spectrum, batch_size, target) - 1, 0)


def steps_lower_bound(spectrum: Spectrum, batch_size, target: float) -> np.ndarray:
    r""":math:`\lceil n_{\rm info} / B \rceil` steps: no optimizer in this model reaches ``target`` sooner."""
    n_info = information_bound_examples(spectrum, target)
    return np.ceil(n_info / np.asarray(batch_size, dtype=float)).astype(np.int64)
