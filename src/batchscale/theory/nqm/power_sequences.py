r"""Chebyshev-type sequences that write powers of the per-coordinate 2 x 2 maps in closed form.

:math:`G_t(x, y) = (x^t - y^t)/(x - y)` for real roots and :math:`|p|^{t-1}\sin(t\theta)/\sin\theta` for a
complex pair, evaluated without cancellation (:class:`PowerSequence`), with the fast sines of
:mod:`batchscale.theory.nqm.fast_trig` where their error is bounded.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from batchscale.theory.nqm.fast_trig import _fast_sine_ratio_pair, _masked_sine_ratio, _masked_sine_ratio_pair


class PowerSequence(NamedTuple):
    r"""t-independent coefficients of :math:`G_t = p^{t-1} R_t` (see :func:`power_sequence`), same shapes.

    Real roots with z = q/p >= 0: :math:`R_t = \mathrm{expm1}(tL)/\mathrm{expm1}(L)`, L = log z (a double
    root, L = 0, is stored as L = -1e-300, which gives R_t = t to double precision); real with z < 0
    (``negative_z``): :math:`R_t = (1 - z^t)/(1 - z)`; a complex pair :math:`|p| e^{\pm i\theta}`
    (``oscillating``): :math:`R_t = \sin(t\theta)/\sin\theta`.
    """

    abs_base: np.ndarray
    negative_base: np.ndarray
    log_z: np.ndarray
    expm1_log_z: np.ndarray
    z: np.ndarray
    one_minus_z: np.ndarray
    theta: np.ndarray
    sin_theta: np.ndarray
    negative_z: np.ndarray
    oscillating: np.ndarray
    log_abs_base: np.ndarray
    cos_theta: np.ndarray | float = 0.0  # cos(theta) where oscillating (for the fast evaluation)
    inv_sin_theta: np.ndarray | float = 0.0  # 1 / sin(theta) where oscillating, else 0 (same)

    def take(self, rows: np.ndarray) -> PowerSequence:
        """The same coefficients for the configurations (first axis) ``rows``."""
        return PowerSequence(*(a[rows] if np.ndim(a) else a for a in self))


def divided_power_sequence(x, y, x_minus_y) -> PowerSequence:
    """Coefficients of :math:`G_t(x, y) = (x^t - y^t)/(x - y)`, real x, y; ``x_minus_y`` = x - y, exact."""
    x, y, d = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, y, x_minus_y)))
    swap = np.abs(y) > np.abs(x)
    p, q, d = np.where(swap, y, x), np.where(swap, x, y), np.where(swap, -d, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        nonzero = p != 0
        z = np.where(nonzero, q / np.where(nonzero, p, 1.0), 0.0)
        one_minus_z = np.where(nonzero, d / np.where(nonzero, p, 1.0), 1.0)
        log_z = np.log1p(-np.where(z >= 0, np.minimum(one_minus_z, 1.0), 0.0))
    log_z = np.where(log_z == 0, -1e-300, log_z)
    zeros = np.zeros_like(p)
    with np.errstate(divide="ignore"):
        log_abs = np.log(np.abs(p))
    return PowerSequence(
        np.abs(p),
        p < 0,
        log_z,
        np.expm1(log_z),
        z,
        one_minus_z,
        zeros,
        zeros,
        z < 0,
        zeros.astype(bool),
        log_abs,
    )


def heavy_ball_power_sequence(eta_h, momentum) -> PowerSequence:
    r"""Coefficients of :math:`a_t` in :func:`heavy_ball_sequence` (roots of :math:`r^2 - A r + \beta`)."""
    eta_h, beta = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (eta_h, momentum)))
    q = np.sqrt(beta)
    big_a = 1.0 - eta_h + beta
    # A^2 - 4 beta = ((1 - q)^2 - eta h) ((1 + q)^2 - eta h), without cancellation
    disc = ((1.0 - q) ** 2 - eta_h) * ((1.0 + q) ** 2 - eta_h)
    root = np.sqrt(np.abs(disc))
    real = disc >= 0
    sign = np.where(big_a < 0, -1.0, 1.0)
    r1 = sign * (np.abs(big_a) + np.where(real, root, 0.0)) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(r1 != 0, beta / np.where(r1 != 0, r1, 1.0), 0.0)
    seq = divided_power_sequence(r1, r2, sign * root)
    theta = np.where(real, 0.0, np.arctan2(root, big_a))
    with np.errstate(divide="ignore"):
        log_q = np.log(q)
    return seq._replace(
        log_abs_base=np.where(real, seq.log_abs_base, log_q),
        abs_base=np.where(real, seq.abs_base, q),
        negative_base=real & seq.negative_base,
        theta=theta,
        sin_theta=np.sin(theta),
        cos_theta=np.cos(theta),
        inv_sin_theta=np.where(real, 0.0, 1.0 / np.where(real, 1.0, np.sin(theta))),
        negative_z=real & seq.negative_z,
        oscillating=~real,
    )


def power_sequence(seq: PowerSequence, t) -> np.ndarray:
    """:math:`G_t = p^{t-1} R_t` for integer t >= 0 (``t`` broadcasts against ``seq``); G_0 = 0."""
    t = np.asarray(t, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = _base_power(seq, t - 1.0) * _ratio(seq, t)
    return np.where(t == 0, 0.0, out) if np.any(t == 0) else out


def power_sequence_pair(seq: PowerSequence, t, deviation: np.ndarray | None = None):
    """(G_t, G_{t+1}) sharing one power of the base: G_{t+1} = p^{t-1} p R_{t+1}.

    Real roots: R_{t+1} = 1 + z R_t (from R_t = (1 - z^t)/(1 - z)), so only the oscillating coordinates
    need a second transcendental evaluation.

    ``deviation`` (an array shaped like the result): evaluate the oscillating coordinates' sines fast
    (:func:`_fast_sine_ratio_pair`) and write there a bound on the error of G_t (that of G_{t+1} is at most
    2 |p| times it); it stays 0 on the coordinates evaluated exactly.
    """
    t = np.asarray(t, dtype=float)
    if np.any(t == 0):  # p^{-1} is undefined for p = 0: use the general form
        return power_sequence(seq, t), power_sequence(seq, t + 1.0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        power = _base_power(seq, t - 1.0)
        oscillating = seq.oscillating.any()
        ratio = _ratio(seq, t, sine=False)
        # R_{t+1} = 1 + z R_t  (real roots)
        ratio_next = seq.z * ratio
        ratio_next += 1.0
        if oscillating and deviation is not None:
            _fast_sine_ratio_pair(seq, t, ratio, ratio_next, deviation, power)
        elif oscillating:  # both sines (t and t + 1) in one call on the oscillating coordinates only
            _masked_sine_ratio_pair(seq, t, ratio, ratio_next)
        base = seq.abs_base
        if seq.negative_base.any():
            base = np.where(seq.negative_base, -base, base)
        ratio *= power
        power *= base
        power *= ratio_next
        return ratio, power


def _ratio(seq: PowerSequence, t: np.ndarray, sine: bool = True) -> np.ndarray:
    """R_t of :class:`PowerSequence` (inside an errstate that ignores invalid values).

    Each branch's transcendental is evaluated only on its own coordinates (``where=``), not on all.
    ``sine=False`` leaves the oscillating coordinates unset (the caller fills them).
    """
    osc = seq.oscillating.any()
    ratio = np.multiply(t, seq.log_z)
    if osc:
        real = ~seq.oscillating
        np.expm1(ratio, out=ratio, where=real)
        np.divide(ratio, seq.expm1_log_z, out=ratio, where=real)
        if sine:
            _masked_sine_ratio(seq, t, ratio)
    else:
        np.expm1(ratio, out=ratio)
        ratio /= seq.expm1_log_z
    if seq.negative_z.any():
        z_power = _signed_power(np.abs(seq.z), seq.z < 0, t)
        ratio = np.where(seq.negative_z, (1.0 - z_power) / seq.one_minus_z, ratio)
    return ratio


def _base_power(seq: PowerSequence, exponent: np.ndarray) -> np.ndarray:
    """sign(p)^n |p|^n = exp(n log|p|) with the sign of odd powers of negative bases; 0^0 = 1."""
    power = np.exp(exponent * seq.log_abs_base)
    if np.any(exponent == 0):
        power = np.where(exponent == 0, 1.0, power)
    if not seq.negative_base.any():
        return power
    odd = np.mod(exponent, 2.0) == 1.0
    return np.where(seq.negative_base & odd, -power, power)


def divided_power(x, y, x_minus_y, t):
    r""":math:`G_t(x, y) = \frac{x^t - y^t}{x - y} = \sum_{k=0}^{t-1} x^k y^{t-1-k}` for real x, y.

    ``x_minus_y`` must be x - y computed without cancellation; the result is accurate also for x ~ y
    (written as :math:`p^{t-1} \operatorname{expm1}(t \log z)/\operatorname{expm1}(\log z)`, z = q/p,
    |p| >= |q|). t is a non-negative integer array (``t``); G_0 = 0, G_t(x, x) = t x^{t-1}.
    """
    return power_sequence(divided_power_sequence(x, y, x_minus_y), t)


def _signed_power(magnitude, negative, exponent):
    """(-1 if ``negative``)^n |base|^n for integer-valued float exponents n (0 ** 0 = 1)."""
    power = np.power(magnitude, exponent)
    if not negative.any():
        return power
    odd = np.mod(exponent, 2.0) == 1.0
    return np.where(negative & odd, -power, power)


def heavy_ball_sequence(eta_h, momentum, t):
    r""":math:`a_0 = 0, a_1 = 1, a_{t+1} = A a_t - \beta a_{t-1}` with :math:`A = 1 - \eta h + \beta`.

    Then :math:`T^t = \begin{pmatrix} a_{t+1} & -\beta a_t \\ a_t & -\beta a_{t-1}\end{pmatrix}` for the
    heavy-ball map T. With roots :math:`r_{1,2}` of :math:`r^2 - A r + \beta`: :math:`a_t = G_t(r_1, r_2)`
    for real roots, :math:`a_t = \beta^{(t-1)/2} \sin(t\theta) / \sin\theta`,
    :math:`\cos\theta = A/(2\sqrt\beta)`
    for complex ones. eta h is ``eta_h``, beta is ``momentum``, t is ``t``.
    """
    return power_sequence(heavy_ball_power_sequence(eta_h, momentum), t)


def ema_power_sequence(eta_h, decay) -> PowerSequence:
    r"""Coefficients of :math:`G_t(r, \gamma)`, r = 1 - eta h (``eta_h``), gamma = ``decay``."""
    return divided_power_sequence(1.0 - eta_h, decay, (1.0 - decay) - eta_h)
