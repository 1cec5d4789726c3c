r"""Noisy quadratic model (NQM): closed-form expected loss, steps to target and tuned learning rates.

Zhang, Li, Nado, Martens, Sachdeva, Dahl, Shallue, Grosse, "Which Algorithmic Choices Matter at Which Batch
Sizes? Insights From a Noisy Quadratic Model", NeurIPS 2019, arXiv 1907.04164 (cited as "Zhang et al.").

Model (Zhang et al. Sec. 3.1): loss :math:`L(x) = \tfrac12 \sum_i h_i x_i^2`; the minibatch gradient of
coordinate i is :math:`h_i x_i + \xi_i` with :math:`E\xi_i = 0`, :math:`\operatorname{Var}\xi_i = c_i / B`,
independent across steps. Every optimizer here is linear in (x, xi), so the expected loss depends only on
second moments, and each coordinate follows a 1- or 2-dimensional linear system
:math:`y_{t+1} = T y_t + b\,\eta\xi_t` whose second moments have the closed form

.. math:: E[(e^\top y_t)^2] = \ell_t^\top P_0 \ell_t + S_{ee} - \ell_t^\top S \ell_t,
          \qquad \ell_t = (T^t)^\top e,

with S the stationary covariance (discrete Lyapunov equation) and P_0 the initial second moments. The first
term ("signal") is the deterministic decay of x_0, the rest ("noise") the accumulated gradient noise; the
noise term never decreases in t. No loop over steps is needed: T^t is written with Chebyshev-type sequences.

Divergent settings (spectral radius of T >= 1 for some coordinate) are flagged, never evaluated.

Definition of "steps to target": the first integer t with E[L(x_t)] <= target, exactly (no assumption of
monotonicity: momentum makes the loss oscillate). The search steps forward with doubling strides and accepts
a stride only when a rigorous lower bound of the loss over it is above the target (the noise part never
decreases; monotone signals are smallest at the end; oscillating heavy-ball signals are bounded lobe by
lobe), halving the stride otherwise; it starts at the information bound :func:`steps_lower_bound`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import NamedTuple

import numpy as np

from batchscale.errors import InputError, require
from batchscale.theory.spectra import Spectrum

OK = "ok"
UNREACHABLE = "unreachable"
DIVERGED = "diverged"

COMPACT_FRACTION = 0.7  # drop finished configurations once fewer than this fraction is still searching
CHUNK_ELEMENTS = 2**17  # search at most this many (configuration, bin) pairs at once (cache-sized arrays)
DEFAULT_MAX_STEPS = 10**7


# --------------------------------------------------------------------------------------------------------
# Closed forms per coordinate
# --------------------------------------------------------------------------------------------------------


def sgd_stationary_variance(curvature, noise, batch_size, learning_rate):
    r"""Stationary :math:`E[x_\infty^2] = s = \frac{\eta^2 c}{B (1 - a)} = \frac{\eta c}{B h (2 - \eta h)}`.

    h is ``curvature``, c is ``noise``, B is ``batch_size``, eta is ``learning_rate``; a = (1 - eta h)^2.
    Zhang et al. Eq. (4) (steady-state risk of SGD). Valid for 0 < eta h < 2.
    """
    eta_h = learning_rate * curvature
    # s = eta^2 c / (B (1 - a)),  1 - a = eta h (2 - eta h)
    return learning_rate * noise / (batch_size * curvature * (2.0 - eta_h))


def sgd_second_moment(curvature, noise, init_sq, batch_size, learning_rate, steps):
    r""":math:`E[x_t^2] = a^t (E[x_0^2] - s) + s`, :math:`a = (1 - \eta h)^2` (Zhang et al. Eq. (3)-(4)).

    h is ``curvature``, c is ``noise``, E[x_0^2] is ``init_sq``, B is ``batch_size``, eta is
    ``learning_rate``, t is ``steps``; s from :func:`sgd_stationary_variance`. Arrays broadcast.
    """
    a = (1.0 - learning_rate * curvature) ** 2
    s = sgd_stationary_variance(curvature, noise, batch_size, learning_rate)
    return np.power(a, steps) * (init_sq - s) + s


def momentum_stationary_moments(curvature, noise, batch_size, learning_rate, momentum):
    r"""Stationary :math:`(\gamma_0, \gamma_1) = (E[x^2], E[x_t x_{t-1}])` of heavy-ball momentum.

    Per coordinate :math:`x_{t+1} = A x_t - \beta x_{t-1} - \eta \xi_t` with :math:`A = 1 - \eta h + \beta`
    is an AR(2) process, so

    .. math:: \gamma_0 = \frac{(1+\beta)\,\sigma^2}{(1-\beta)\,\eta h\,(2 + 2\beta - \eta h)},\quad
              \gamma_1 = \frac{A\,\gamma_0}{1+\beta},\quad \sigma^2 = \eta^2 c / B.

    h is ``curvature``, c is ``noise``, B is ``batch_size``, eta is ``learning_rate``, beta is ``momentum``.
    Zhang et al. Sec. 3.2 / App. B (momentum dynamics). Valid for 0 <= beta < 1, 0 < eta h < 2 (1 + beta).
    """
    eta_h = learning_rate * curvature
    sigma2 = learning_rate**2 * noise / batch_size
    # (1+beta)^2 - A^2 = eta h (2 + 2 beta - eta h)
    gamma0 = (1.0 + momentum) * sigma2 / ((1.0 - momentum) * eta_h * (2.0 + 2.0 * momentum - eta_h))
    gamma1 = (1.0 - eta_h + momentum) * gamma0 / (1.0 + momentum)
    return gamma0, gamma1


def ema_stationary_moments(curvature, noise, batch_size, learning_rate, decay):
    r"""Stationary second moments of SGD with an exponential moving average of the iterates.

    :math:`x_{t+1} = r x_t - \eta\xi_t`, :math:`\tilde x_{t+1} = \gamma \tilde x_t + (1-\gamma) x_{t+1}`,
    :math:`r = 1 - \eta h`. Returns :math:`(S_{11}, S_{12}, S_{22}) = (E[x^2], E[x\tilde x], E[\tilde x^2])`:

    .. math:: S_{11} = \frac{\sigma^2}{1 - r^2},\quad S_{12} = \frac{(1-\gamma) S_{11}}{1 - r\gamma},\quad
              S_{22} = S_{11} \frac{(1-\gamma)(1 + r\gamma)}{(1+\gamma)(1 - r\gamma)}.

    h is ``curvature``, c is ``noise``, B is ``batch_size``, eta is ``learning_rate``, gamma is ``decay``;
    sigma^2 = eta^2 c / B. Zhang et al. Sec. 3.4 (exponential moving average).
    """
    eta_h = learning_rate * curvature
    r = 1.0 - eta_h
    s11 = learning_rate * noise / (batch_size * curvature * (2.0 - eta_h))
    one_minus_r_gamma = (1.0 - decay) + decay * eta_h
    s12 = (1.0 - decay) * s11 / one_minus_r_gamma
    s22 = s11 * (1.0 - decay) * (1.0 + r * decay) / ((1.0 + decay) * one_minus_r_gamma)
    return s11, s12, s22


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


SINE_ERROR = 1e-6  # |fast sin(x) - sin(x)|, |fast cos(x) - cos(x)| <= this (measured at most 1.6e-7)
FAST_SINE_LIMIT = 2.0**28  # fast_sin_cos's reduction is exact below this
FAST_AMPLITUDE = 1.0  # coordinates whose |a_t| bound |p|^{t-1} / |sin theta| exceeds this use np.sin
_TWO_PI = (6.2831854820251465, -1.748455600074497e-07, -1.0687562935444062e-23)  # sums to 2 pi, 24 bits first


def _fast_sine_ratio_pair(seq, t, out, out_next, deviation, power) -> None:
    """Fast R_t, R_{t+1} = sin(t theta)/sin(theta), sin((t+1) theta)/sin(theta) on the oscillating
    coordinates (dense arithmetic, no gathering), and in ``deviation`` a bound on the error of G_t.

    sin and cos of the reduced t theta (:func:`fast_sin_cos`, each within ``SINE_ERROR``), then
    sin((t+1) theta) = sin(t theta) cos(theta) + cos(t theta) sin(theta), within 2 ``SINE_ERROR``. So G_t
    = |p|^{t-1} R_t is off by at most |p|^{t-1} SINE_ERROR / |sin theta|, G_{t+1} by |p| times twice that.
    Where that bound exceeds ``FAST_AMPLITUDE`` * SINE_ERROR (transient growth), the exact sines are used.
    """
    osc, inverse = seq.oscillating, seq.inv_sin_theta  # 1 / sin(theta) there, 0 elsewhere
    sine, cosine = fast_sin_cos(np.multiply(t, seq.theta))
    sine_next = sine * seq.cos_theta
    sine_next += cosine * seq.sin_theta
    sine *= inverse
    sine_next *= inverse
    np.copyto(out, sine, where=osc)
    np.copyto(out_next, sine_next, where=osc)
    amplitude = power * inverse  # |p|^{t-1} / sin(theta) >= 0 (sin(theta) > 0 for theta in (0, pi))
    np.multiply(amplitude, SINE_ERROR, out=deviation)
    shape = out.shape
    rows = np.flatnonzero(amplitude > FAST_AMPLITUDE)
    if rows.size:  # the exact sines there, and no error
        t_rows, theta_rows, sin_rows = (_gather(v, rows, shape) for v in (t, seq.theta, seq.sin_theta))
        angle = np.concatenate([t_rows * theta_rows, (t_rows + 1.0) * theta_rows])
        np.sin(angle, out=angle)
        out.reshape(-1)[rows] = angle[: rows.size] / sin_rows
        out_next.reshape(-1)[rows] = angle[rows.size :] / sin_rows
        deviation.reshape(-1)[rows] = 0.0


def fast_sin_cos(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sin(x), cos(x)), each within ``SINE_ERROR`` for |x| < ``FAST_SINE_LIMIT``, ~5x faster than the
    float64 ``np.sin`` and ``np.cos``.

    The argument is reduced modulo 2 pi in float64 (Cody-Waite: 2 pi = hi + mid + lo with hi of 24 bits, so
    k * hi is exact and x - k * hi cancels exactly; k * lo < 5e-16 is left out), then numpy's float32 SIMD
    sine and cosine are taken: rounding r in [-pi, pi] to float32 moves it by at most 2e-7, and the float32
    functions add ~1.5 ulp (measured maximum error 1.6e-7 over 4e7 arguments up to 3e7).
    """
    hi, mid, _ = _TWO_PI  # k * lo < 5e-16 for |x| < 2^28: far below float32's rounding of r
    k = np.rint(x * (0.5 / math.pi))
    r = x - k * hi
    r -= k * mid
    r32 = r.astype(np.float32)
    return np.sin(r32).astype(np.float64), np.cos(r32).astype(np.float64)


def _gather(values: np.ndarray, rows: np.ndarray, shape: tuple) -> np.ndarray:
    """``np.broadcast_to(values, shape).reshape(-1)[rows]`` without materialising the broadcast."""
    values = np.asarray(values)
    if values.shape == shape:
        return values.reshape(-1)[rows]
    if values.shape == shape[:-1] + (1,):  # one value per row of coordinates
        return values.reshape(-1)[rows // shape[-1]]
    if len(shape) == 3 and values.shape == (shape[0], 1, shape[2]):  # per (configuration, coordinate)
        per_config = shape[1] * shape[2]
        return values.reshape(-1)[rows // per_config * shape[2] + rows % shape[2]]
    index = np.unravel_index(rows, shape)
    padded = (1,) * (len(shape) - values.ndim) + values.shape
    values = values.reshape(padded)
    return values[tuple(i if n > 1 else 0 for i, n in zip(index, padded, strict=True))]


def _masked_sine_ratio(seq: PowerSequence, t: np.ndarray, out: np.ndarray) -> None:
    """Overwrite ``out`` (C-contiguous) with sin(t theta)/sin(theta) on the oscillating coordinates only.

    The sine is the most expensive operation of an evaluation: gathering its coordinates first is about
    2.5x faster than evaluating it everywhere (or through a ``where=`` mask).
    """
    osc, sin_theta = seq.oscillating, seq.sin_theta
    if osc.shape != out.shape:
        osc, sin_theta = np.broadcast_to(osc, out.shape), np.broadcast_to(sin_theta, out.shape)
    rows = np.flatnonzero(osc)
    angle = np.multiply(t, seq.theta).reshape(-1)[rows]
    out.reshape(-1)[rows] = np.sin(angle) / sin_theta.reshape(-1)[rows]


def _masked_sine_ratio_pair(seq: PowerSequence, t: np.ndarray, out: np.ndarray, out_next: np.ndarray) -> None:
    """:func:`_masked_sine_ratio` at t into ``out`` and at t + 1 into ``out_next``, with one sine call.

    The same products t theta and (t + 1) theta as there, gathered before multiplying (a (N, 1) ``t`` is
    indexed per row instead of broadcast to (N, K)), so the values are identical.
    """
    shape = out.shape
    rows = np.flatnonzero(np.broadcast_to(seq.oscillating, shape))
    t_rows, theta_rows, sin_rows = (_gather(v, rows, shape) for v in (t, seq.theta, seq.sin_theta))
    angle = np.empty(2 * rows.size)
    np.multiply(t_rows, theta_rows, out=angle[: rows.size])
    t_rows = t_rows + 1.0
    np.multiply(t_rows, theta_rows, out=angle[rows.size :])
    np.sin(angle, out=angle)
    out.reshape(-1)[rows] = angle[: rows.size] / sin_rows
    out_next.reshape(-1)[rows] = angle[rows.size :] / sin_rows


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


def momentum_second_moment(curvature, noise, init_sq, batch_size, learning_rate, momentum, steps):
    r""":math:`E[x_t^2]` for heavy-ball momentum started at rest (x_{-1} = x_0), in closed form.

    :math:`E[x_t^2] = E[x_0^2](a_{t+1} - \beta a_t)^2 + \gamma_0 (1 - a_{t+1}^2 - \beta^2 a_t^2)
    + 2 \beta \gamma_1 a_{t+1} a_t` with a_t from :func:`heavy_ball_sequence` and (gamma_0, gamma_1) from
    :func:`momentum_stationary_moments`. Arguments as there; t is ``steps``. Zhang et al. Sec. 3.2.
    """
    seq = heavy_ball_power_sequence(learning_rate * curvature, momentum)
    moments = momentum_stationary_moments(curvature, noise, batch_size, learning_rate, momentum)
    signal, noise_part = _momentum_parts(seq, momentum, init_sq, *moments, steps)
    return signal + noise_part


def _momentum_parts(seq, beta, init_sq, gamma0, gamma1, t):
    now, after = power_sequence_pair(seq, np.asarray(t, dtype=float))
    l1, l2 = after, -beta * now
    signal = init_sq * (l1 + l2) ** 2
    noise = gamma0 * (1.0 - l1**2 - l2**2) - 2.0 * gamma1 * l1 * l2
    return signal, noise


def _momentum_parts_fast(seq, beta, init_sq, gamma0, gamma1, t):
    r""":func:`_momentum_parts` with fast sines (:func:`_fast_sine_ratio_pair`), plus error bounds of both.

    With l = (a_{t+1}, -beta a_t) off by at most (2 |p| d, beta d) (d from :func:`power_sequence_pair`) and
    D = (2 |p| + beta) d: signal = x0^2 (l1 + l2)^2 and noise = gamma0 (1 - |l|^2) - 2 gamma1 l1 l2 are
    quadratic in l, so each is off by at most (its coefficient) * D (2 (|l1| + |l2|) + D), with the
    coefficients x0^2 and gamma0 + |gamma1|.
    """
    t = np.asarray(t, dtype=float)
    deviation = np.zeros(np.broadcast_shapes(t.shape, seq.z.shape))
    now, after = power_sequence_pair(seq, t, deviation)
    l1, l2 = after, -beta * now
    signal = init_sq * (l1 + l2) ** 2
    noise = gamma0 * (1.0 - l1**2 - l2**2) - 2.0 * gamma1 * l1 * l2
    deviation *= 2.0 * seq.abs_base + beta  # G_{t+1} is off by up to 2 |p| deviation
    spread = np.abs(l1)
    spread += np.abs(l2)
    spread *= 2.0
    spread += deviation
    spread *= deviation
    return signal, noise, init_sq * spread, (gamma0 + np.abs(gamma1)) * spread


def ema_second_moment(curvature, noise, init_sq, batch_size, learning_rate, decay, steps):
    r""":math:`E[\tilde x_t^2]` of the EMA iterate (:math:`\tilde x_0 = x_0`) of SGD, in closed form.

    With :math:`\ell_1 = (1-\gamma) r G_t(r, \gamma)`, :math:`\ell_2 = \gamma^t` (row 2 of T^t):
    :math:`E[\tilde x_t^2] = E[x_0^2](\ell_1 + \ell_2)^2 + S_{22} - (S_{11}\ell_1^2 + 2 S_{12}\ell_1\ell_2
    + S_{22}\ell_2^2)`; S from :func:`ema_stationary_moments`, G from :func:`divided_power`. Arguments as
    there; t is ``steps``. Zhang et al. Sec. 3.4.
    """
    eta_h = learning_rate * curvature
    seq = ema_power_sequence(eta_h, decay)
    moments = ema_stationary_moments(curvature, noise, batch_size, learning_rate, decay)
    signal, noise_part = _ema_parts(seq, 1.0 - eta_h, decay, init_sq, *moments, steps)
    return signal + noise_part


def ema_power_sequence(eta_h, decay) -> PowerSequence:
    r"""Coefficients of :math:`G_t(r, \gamma)`, r = 1 - eta h (``eta_h``), gamma = ``decay``."""
    return divided_power_sequence(1.0 - eta_h, decay, (1.0 - decay) - eta_h)


def _ema_parts(seq, r, decay, init_sq, s11, s12, s22, t):
    t = np.asarray(t, dtype=float)
    l1 = (1.0 - decay) * r * power_sequence(seq, t)
    l2 = np.power(decay, t)
    signal = init_sq * (l1 + l2) ** 2
    noise = s22 * (1.0 - l2**2) - s11 * l1**2 - 2.0 * s12 * l1 * l2
    return signal, noise


# --------------------------------------------------------------------------------------------------------
# Whole-spectrum model for many configurations at once
# --------------------------------------------------------------------------------------------------------


def _weighted(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Sum over the last axis of ``values * weight``, the same for a row wherever it sits in the batch.

    (A BLAS matrix-vector product rounds a row differently depending on its position and on the number of
    rows, so the same setting could get a different last bit in a different batch.)
    """
    return np.einsum("...k,k->...", values, weight)


class Configs(NamedTuple):
    """Flat arrays (N,) of optimizer settings, one entry per configuration."""

    batch_size: np.ndarray
    learning_rate: np.ndarray
    momentum: np.ndarray
    ema_decay: np.ndarray


@dataclass(frozen=True, eq=False)
class _Model:
    """Per (configuration, bin) coefficients, shape (N, K); ``family`` is 'sgd', 'momentum' or 'ema'."""

    family: str
    weight: np.ndarray  # (K,) n_k h_k / 2
    init_sq: np.ndarray  # (K,)
    rate: np.ndarray  # (N, K): a = (1 - eta h)^2 (sgd), r = 1 - eta h (ema), unused (momentum)
    coef: tuple  # stationary moments, each (N, K)
    seq: PowerSequence | None  # (N, K) power-sequence coefficients (momentum, ema)
    param: np.ndarray  # (N, 1) momentum or EMA decay
    stable: np.ndarray  # (N,)
    monotone: np.ndarray  # (N, K) the coordinate's signal part never increases in t
    wave: tuple = ()  # momentum: (amplitude, theta, phase) of the oscillating signals, each (N, K)

    def take(self, rows: np.ndarray) -> _Model:
        """The model restricted to configurations ``rows``."""
        seq = None if self.seq is None else self.seq.take(rows)
        coef = tuple(c[rows] for c in self.coef)
        return replace(
            self,
            rate=self.rate[rows],
            coef=coef,
            seq=seq,
            param=self.param[rows],
            stable=self.stable[rows],
            monotone=self.monotone[rows],
            wave=tuple(w[rows] for w in self.wave),
        )

    def parts(self, t) -> tuple[np.ndarray, np.ndarray]:
        """(signal, noise) parts of the expected loss of every configuration at its step ``t`` (both (N,))."""
        signal, noise = self.elements(t)
        return _weighted(signal, self.weight), _weighted(noise, self.weight)

    def evaluate(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(loss, noise part, monotone signal, per-coordinate signal) at steps ``t`` ((N,), signal (N, K);
        (N, M) steps give (N, M) and (N, M, K))."""
        signal, noise = self.elements(t)
        monotone_mask = self.monotone if signal.ndim == 2 else self.monotone[:, None, :]
        monotone = _weighted(np.where(monotone_mask, signal, 0.0), self.weight)
        noise = _weighted(noise, self.weight)
        return _weighted(signal, self.weight) + noise, noise, monotone, signal

    def evaluate_bounds(self, t) -> tuple[np.ndarray, ...]:
        """Like :meth:`evaluate` but faster for oscillating heavy ball, with rigorous error bounds.

        Returns (loss, error, noise part lower bound, monotone signal, per-coordinate signal lower bound):
        the exact loss is within ``error`` of ``loss``; the monotone signal is exact.
        """
        t = np.asarray(t, dtype=float)
        fast = self.family == "momentum" and self.seq.oscillating.any()
        if fast and t.size and float(t.max() + 1.0) * float(self.seq.theta.max()) >= FAST_SINE_LIMIT:
            fast = False
        if not fast:
            loss, noise, monotone, signal = self.evaluate(t)
            return loss, np.zeros_like(loss), noise, monotone, signal
        model = self._expanded_model if t.ndim == 2 else self
        tt = t[..., None] if t.ndim == 2 else np.broadcast_to(t, self.stable.shape)[:, None]
        signal, noise, signal_error, noise_error = _momentum_parts_fast(
            model.seq, model.param, self.init_sq, *model.coef, tt
        )
        monotone = _weighted(np.where(model.monotone, signal, 0.0), self.weight)
        noise_error_sum = _weighted(noise_error, self.weight)
        noise = _weighted(noise, self.weight)
        loss = _weighted(signal, self.weight) + noise
        error = _weighted(signal_error, self.weight) + noise_error_sum
        signal -= signal_error
        np.maximum(signal, 0.0, out=signal)
        return loss, error, noise - noise_error_sum, monotone, signal

    def link_bound(self, a, b, signal_a, signal_b, rows: np.ndarray | None = None) -> np.ndarray:
        r"""Lower bound on the oscillating coordinates' signal over a <= t <= b, from the signals at a and b.

        Underdamped heavy ball: signal :math:`= C \beta^t \sin^2(t\theta + \phi)`; between two zeros of
        the sine ("a lobe") its smallest value is at an end, so when a and b share a lobe it is at least
        :math:`C \beta^b \min(\sin^2(a\theta+\phi), \sin^2(b\theta+\phi)) = \min(s_b, s_a \beta^{b-a})`, with
        :math:`s_t` the coordinate's signal at t (no sine to evaluate); else 0. ``a`` <= ``b``: (n,) steps;
        ``signal_a``, ``signal_b``: (n, K) from :meth:`evaluate`; ``rows``: the configurations (default all).
        """
        n = np.size(a)
        if not self.wave:
            return np.zeros(n)
        _, theta, phase = self.wave
        osc, param = self.seq.oscillating, self.param
        if rows is not None:
            theta, phase, osc, param = theta[rows], phase[rows], osc[rows], param[rows]
        a, b = np.asarray(a, dtype=float)[:, None], np.asarray(b, dtype=float)[:, None]
        same_lobe = np.floor((a * theta + phase) / np.pi) == np.floor((b * theta + phase) / np.pi)
        low = np.minimum(signal_b, signal_a * np.power(param, b - a))
        return _weighted(np.where(osc & same_lobe, low, 0.0), self.weight)

    def wave_bound(self, a, b) -> np.ndarray:
        """:meth:`link_bound` over [a, b] for every configuration (``a``, ``b``: (N,) steps); (N,)."""
        return self.link_bound(a, b, self.evaluate(a)[3], self.evaluate(b)[3])

    def monotone_signal(self, t) -> np.ndarray:
        """The signal part of the coordinates whose signal never increases, at step ``t`` ((N,)).

        A lower bound on the loss at every step up to ``t``: if it exceeds the target at t = max_steps, the
        target is unreachable within max_steps.
        """
        signal, _ = self.elements(t)
        return _weighted(np.where(self.monotone, signal, 0.0), self.weight)

    def elements(self, t) -> tuple[np.ndarray, np.ndarray]:
        """(signal, noise) per configuration and coordinate at step ``t``.

        ``t``: one step per configuration ((N,) or a scalar) gives (N, K) arrays; (N, M) steps, M per
        configuration, give (N, M, K) arrays (the coefficients broadcast, nothing is copied).
        """
        t = np.asarray(t, dtype=float)
        if t.ndim == 2:
            return self._expanded_model._elements(t[:, :, None])
        return self._elements(np.broadcast_to(t, self.stable.shape)[:, None])

    @cached_property
    def _expanded_model(self) -> _Model:
        """The same model with a points axis: per-(configuration, bin) arrays (N, 1, K), param (N, 1, 1)."""
        seq = self.seq
        if seq is not None:
            seq = PowerSequence(*(a[:, None, :] if np.ndim(a) else a for a in seq))
        return replace(
            self,
            rate=self.rate[:, None, :],
            coef=tuple(c[:, None, :] for c in self.coef),
            seq=seq,
            param=self.param[:, :, None],
            monotone=self.monotone[:, None, :],
        )

    def _elements(self, tt) -> tuple[np.ndarray, np.ndarray]:
        if self.family == "sgd":
            # E[x_t^2] = a^t x0^2 + s (1 - a^t),  a = (1 - eta h)^2
            decay = np.power(self.rate, tt)
            signal, noise = self.init_sq * decay, self.coef[0] * (1.0 - decay)
        elif self.family == "momentum":
            signal, noise = _momentum_parts(self.seq, self.param, self.init_sq, *self.coef, tt)
        else:
            signal, noise = _ema_parts(self.seq, self.rate, self.param, self.init_sq, *self.coef, tt)
        return signal, noise

    def loss(self, t) -> np.ndarray:
        """Expected loss of every configuration at its step ``t``."""
        signal, noise = self.parts(t)
        return signal + noise

    def floor(self) -> np.ndarray:
        """Stationary expected loss (t -> infinity) per configuration; inf where divergent."""
        value = _weighted(self.coef[2 if self.family == "ema" else 0], self.weight)
        return np.where(self.stable, value, np.inf)


def _configs(batch_size, learning_rate, momentum, ema_decay) -> Configs:
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype=float) for v in (batch_size, learning_rate, momentum, ema_decay))
    )
    b, lr, beta, gamma = (a.ravel() for a in arrays)
    _require_finite_all(b, b > 0, "batch size must be > 0")
    _require_finite_all(lr, lr > 0, "learning rate must be > 0")
    _require_finite_all(beta, (beta >= 0) & (beta < 1), "momentum must be in [0, 1)")
    _require_finite_all(gamma, (gamma >= 0) & (gamma < 1), "EMA decay must be in [0, 1)")
    return Configs(b, lr, beta, gamma)


def _require_finite_all(values: np.ndarray, ok: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(~(ok & np.isfinite(values)))
    if bad.size:
        raise InputError(f"{what}, got {float(values[bad[0]])}")


def build_model(
    spectrum: Spectrum, configs: Configs, precond_power: float = 0.0, family: str | None = None
) -> _Model:
    r"""Coefficients of the closed forms for every configuration x bin; divergent configs flagged.

    Preconditioning by :math:`H^{-p}` (p is ``precond_power``) gives coordinate i the step size
    :math:`\eta h_i^{-p}` for both its gradient and its noise (Zhang et al. Sec. 3.3).
    """
    require(math.isfinite(precond_power), f"preconditioning power must be finite, got {precond_power}")
    family = family or _family(configs)
    h, c = spectrum.curvature, spectrum.noise
    with np.errstate(over="ignore"):  # an infinite step is simply divergent
        eta = configs.learning_rate[:, None] * h ** (-precond_power)  # (N, K) per-coordinate step size
        batch = configs.batch_size[:, None]
        param = (configs.momentum if family == "momentum" else configs.ema_decay)[:, None]
        limit = 2.0 * (1.0 + param) if family == "momentum" else 2.0
        stable = np.all(eta * h < limit, axis=1)
    eta = np.where(stable[:, None], eta, 0.5 / h)  # keeps divergent rows finite (never reported)
    eta_h = eta * h
    wave = ()
    if family == "sgd":
        coef, seq, rate = (sgd_stationary_variance(h, c, batch, eta),), None, (1.0 - eta_h) ** 2
        monotone = np.ones_like(eta_h, dtype=bool)  # a^t x0^2 with 0 <= a < 1
    elif family == "momentum":
        coef, seq = (
            momentum_stationary_moments(h, c, batch, eta, param),
            heavy_ball_power_sequence(eta_h, param),
        )
        # real roots 0 <= r2 <= r1 < 1: x0^2 (a_{t+1} - beta a_t)^2 decreases (see the tests)
        rate, monotone = eta_h, ~(seq.oscillating | seq.negative_base)
        wave = _momentum_wave(seq, eta_h, param, spectrum.init_sq)
    else:
        coef, seq = ema_stationary_moments(h, c, batch, eta, param), ema_power_sequence(eta_h, param)
        rate, monotone = 1.0 - eta_h, eta_h <= 1.0  # r >= 0: the EMA signal decays
    weight = 0.5 * spectrum.counts * h
    return _Model(family, weight, spectrum.init_sq, rate, coef, seq, param, stable, monotone, wave)


def _family(configs: Configs) -> str:
    """'momentum', 'ema' or 'sgd': the closed form that covers every configuration."""
    has_momentum, has_ema = bool(np.any(configs.momentum > 0)), bool(np.any(configs.ema_decay > 0))
    require(not (has_momentum and has_ema), "momentum together with EMA is not supported; use one of them")
    return "momentum" if has_momentum else "ema" if has_ema else "sgd"


def _momentum_wave(seq: PowerSequence, eta_h, beta, init_sq) -> tuple:
    r"""(C, theta, phi) with signal :math:`= C \beta^t \sin^2(t\theta+\phi)` for complex roots (C = 0 else).

    :math:`a_{t+1} - \beta a_t = \beta^{t/2} \sqrt{\eta h} \sin(t\theta + \phi)/\sin\theta`,
    :math:`\phi = \arg(e^{i\theta} - \sqrt\beta)`, so :math:`C = x_0^2 \eta h / \sin^2\theta`.
    """
    osc = seq.oscillating
    sin_theta = np.where(osc, seq.sin_theta, 1.0)
    amplitude = np.where(osc, init_sq * eta_h / sin_theta**2, 0.0)
    phase = np.arctan2(np.sin(seq.theta), np.cos(seq.theta) - np.sqrt(beta))
    return amplitude, seq.theta, phase


def expected_loss(
    spectrum: Spectrum,
    batch_size,
    learning_rate,
    steps,
    *,
    momentum=0.0,
    ema_decay=0.0,
    precond_power: float = 0.0,
) -> np.ndarray:
    r""":math:`E[L(x_t)] = \tfrac12 \sum_k n_k h_k E[x_{k,t}^2]` in closed form, inf where divergent.

    ``batch_size`` (B), ``learning_rate`` (eta), ``momentum`` (beta), ``ema_decay`` (gamma) and ``steps``
    (t) broadcast together; the result has their broadcast shape. Per-coordinate moments from
    :func:`sgd_second_moment`, :func:`momentum_second_moment` or :func:`ema_second_moment`.
    """
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype=float) for v in (batch_size, learning_rate, momentum, ema_decay, steps))
    )
    shape, t = arrays[0].shape, arrays[4].ravel()
    require(bool(np.all((t >= 0) & (t == np.round(t)))), "steps must be non-negative integers")
    configs = _configs(*arrays[:4])
    model = build_model(spectrum, configs, precond_power)
    return np.where(model.stable, model.loss(t), np.inf).reshape(shape)


# --------------------------------------------------------------------------------------------------------
# Steps to target
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class StepsResult:
    """Steps to target per configuration (all arrays (N,)).

    ``steps`` is -1 unless ``status`` is 'ok'; ``steps_continuous`` interpolates log-loss linearly between
    steps - 1 and steps (inf unless ok), a smooth objective for learning-rate search; ``loss_at_steps`` is
    the expected loss at ``steps`` (at ``max_steps`` when unreachable, inf when diverged).
    """

    configs: Configs
    steps: np.ndarray
    status: np.ndarray
    loss_at_steps: np.ndarray
    steps_continuous: np.ndarray
    floor: np.ndarray
    certified: np.ndarray | None = None  # (N, L) steps shown above the target on the way, padded per row


def steps_to_target(
    spectrum: Spectrum,
    batch_size,
    learning_rate,
    target: float,
    *,
    momentum=0.0,
    ema_decay=0.0,
    precond_power: float = 0.0,
    max_steps: int = DEFAULT_MAX_STEPS,
    race=None,
    guess=None,
    probes=None,
    above=None,
) -> StepsResult:
    """First t <= ``max_steps`` with E[L(x_t)] <= ``target`` for every broadcast configuration at once.

    Absolute target (same units as the loss). Exact first crossing by certified stepping (:func:`_search`,
    module docstring).
    ``race``: optional group id per configuration; only each group's fastest members are resolved, the
    rest are reported 'unreachable' (used to find the best setting per batch size quickly).
    ``guess``: optional expected crossing step per configuration (e.g. a neighbouring setting's); it only
    sets the first stride of the search (half the distance to the guess), never the result.
    ``probes``: optional (N, L) steps per configuration to look at first (e.g. a neighbouring setting's
    ``certified`` steps, which usually certify this one's too); like ``guess`` they never change the result.
    ``above``: optional step per configuration up to which the loss is already known to be above the target
    (e.g. from :func:`_screen_pairs`); the search starts after it.
    Zhang et al. Sec. 3 ("steps required to reach a target loss").
    """
    require(math.isfinite(target) and target > 0, f"target loss must be > 0, got {target}")
    require(
        int(max_steps) == max_steps and max_steps >= 1,
        f"max steps must be a positive integer, got {max_steps}",
    )
    configs = _configs(batch_size, learning_rate, momentum, ema_decay)
    family = _family(configs)
    n = configs.batch_size.size
    race = None if race is None else np.broadcast_to(np.asarray(race, dtype=np.int64), (n,))
    best = None if race is None else np.full(int(race.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
    start = _information_start(spectrum, configs.batch_size, target)
    if above is not None:
        start = np.maximum(start, np.broadcast_to(np.asarray(above, dtype=np.int64), (n,)) + 1)
    start = np.minimum(start, int(max_steps))
    stride = np.ones(n, dtype=np.int64)
    if guess is not None:
        guess = np.broadcast_to(np.asarray(guess, dtype=float), (n,))
        ahead = np.where(np.isfinite(guess), np.minimum(guess, max_steps) - start, 0.0)
        stride = np.maximum(ahead // 2, 1).astype(np.int64)
    if probes is not None:
        probes = np.asarray(probes, dtype=np.int64)
        probes = probes.reshape(n, -1) if probes.ndim == 2 else np.broadcast_to(probes, (n, probes.size))
    # chunks of configurations keep the (configurations, bins) arrays cache-sized; a race carries each
    # group's best over to later chunks, so the group's fastest members are resolved exactly as in one pass
    chunk = max(1, CHUNK_ELEMENTS // spectrum.curvature.size)
    pieces = []
    for lo in range(0, max(n, 1), chunk):
        rows = slice(lo, lo + chunk)
        sub = Configs(*(a[rows] for a in configs))
        model = build_model(spectrum, sub, precond_power, family)
        sub_race = None if race is None else race[rows]
        sub_probes = None if probes is None else probes[rows]
        steps, chains = _search(
            model, target, int(max_steps), start[rows], sub_race, best, stride[rows], sub_probes
        )
        at = np.where(steps >= 0, steps, int(max_steps))
        loss = np.where(model.stable, model.loss(at), np.inf)
        status = np.where(~model.stable, DIVERGED, np.where(steps >= 0, OK, UNREACHABLE))
        continuous = _continuous(model, target, steps, loss)
        pieces.append((steps, status, loss, continuous, model.floor(), chains.padded(steps.size)))
    steps, status, loss, continuous, floor = (np.concatenate(p) for p in list(zip(*pieces, strict=True))[:5])
    certified = _stack_padded([p[5] for p in pieces])
    return StepsResult(configs, steps, status, loss, continuous, floor, certified)


def _stack_padded(blocks: list[np.ndarray]) -> np.ndarray:
    """Row-stack (n_i, L_i) arrays, widening each to the largest L by repeating its last column."""
    return np.concatenate(_widen(*blocks))


def _widen(*blocks: np.ndarray) -> list[np.ndarray]:
    """(n_i, L_i) arrays widened to the largest L by repeating each one's last column."""
    width = max(b.shape[1] for b in blocks)
    return [np.pad(b, ((0, 0), (0, width - b.shape[1])), mode="edge") for b in blocks]


class _Chains(NamedTuple):
    """Certified steps found by :func:`_search`: ``config[i]`` was shown above the target at ``step[i]``."""

    config: np.ndarray
    step: np.ndarray

    def padded(self, n: int) -> np.ndarray:
        """(n, L) steps per configuration, increasing, each row padded with its last value (-1 if none)."""
        order = np.lexsort((self.step, self.config))
        config, step = self.config[order], self.step[order]
        counts = np.bincount(config, minlength=n)
        out = np.full((n, max(int(counts.max(initial=0)), 1)), -1, dtype=np.int64)
        column = np.arange(config.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out[config, column] = step
        last = np.maximum(counts - 1, 0)
        fill = out[np.arange(n), last]
        pad = np.arange(out.shape[1])[None, :] >= counts[:, None]
        return np.where(pad, fill[:, None], out)


SCAN_WIDTH = 16  # at most this many points per configuration and round (scans: consecutive steps)
ROUND_POINTS = 128  # points per round over all configurations still searching (a round has a fixed cost)


def _search(
    model: _Model,
    target: float,
    max_steps: int,
    start: np.ndarray,
    race: np.ndarray | None = None,
    best: np.ndarray | None = None,
    stride: np.ndarray | None = None,
    probes: np.ndarray | None = None,
) -> tuple[np.ndarray, _Chains]:
    """First t <= max_steps with loss(t) <= target per configuration (-1 if none), exactly.

    Certified stepping: every step up to ``a`` is known to be above the target. Each round looks at points
    ``b_1 < b_2 < ... < b_M`` above ``a`` and walks along them while each link (b_{j-1}, b_j] (b_0 = a) is
    shown free of crossings: the loss at b_j is above the target and either b_j - b_{j-1} = 1 or a rigorous
    lower bound of the loss on the link (noise part at b_{j-1}, which never decreases, plus the signal of
    the monotone coordinates at b_j, plus :meth:`_Model.link_bound`) is above the target. A point at or
    below the target right after a certified unit link is the answer.

    Points: M = ``ROUND_POINTS`` / (configurations still searching), at most ``SCAN_WIDTH``, ``step`` apart.
    The step doubles after a last link certified by the bound, stays after a unit link, halves the first
    link that failed, and the points never pass the smallest step seen at or below the target (they split
    that gap evenly: bisection). Where the bound failed on a short link (oscillating losses near the target)
    the points are consecutive steps, which need no bound. Steps before ``start`` (the information bound)
    are known to be above the target. Values come from the fast evaluation where its error bound decides
    the side of the target and from the exact one otherwise (:func:`_evaluate_decided`).

    ``race`` (group ids sharing ``start``): once a member of a group is at or below the target at step s,
    members whose search has passed s stop (they cannot beat it) and report -1. ``best`` (per group, updated
    in place) carries the groups' best steps between calls. ``stride``: first step size per configuration
    (default 1). ``probes``: (N, L) steps per configuration for the first round (negative entries unused;
    e.g. a neighbouring setting's certified steps). Strides and probes only change the path, never the
    answer. Returns the steps and every step certified above the target on the way (:class:`_Chains`).
    """
    n = model.stable.size
    steps = np.full(n, -1, dtype=np.int64)
    active = np.flatnonzero(model.stable)
    # a never-increasing signal that is still above the target at max_steps never lets the loss reach it
    active = active[model.take(active).monotone_signal(max_steps) <= target]
    sub = model.take(active)
    chain_config, chain_step = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    # the virtual point start - 1: noise 0 and signal 0 are lower bounds there
    a = start[active] - 1
    noise_a = np.zeros(active.size)
    signal_a = np.zeros((active.size, sub.weight.size))
    step = np.ones(active.size, dtype=np.int64) if stride is None else stride[active].copy()
    pending = None if probes is None else probes[active]
    alive = np.ones(active.size, dtype=bool)
    stalled = np.zeros(active.size, dtype=bool)  # the bound failed on a short link: scan instead
    upper = np.full(active.size, np.iinfo(np.int64).max, dtype=np.int64)  # smallest step seen at or below
    if race is not None and best is None:
        best = np.full(int(race.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
    while True:
        if best is not None:
            alive &= a < best[race[active]]
        alive &= a < max_steps
        if not alive.any():
            break
        width = int(np.clip(ROUND_POINTS // alive.sum(), 1, SCAN_WIDTH))
        if alive.sum() < (COMPACT_FRACTION if width == 1 else 0.95) * alive.size:  # dead rows cost points
            keep = np.flatnonzero(alive)
            active, sub, a, step, noise_a = active[keep], sub.take(keep), a[keep], step[keep], noise_a[keep]
            signal_a, upper, stalled = signal_a[keep], upper[keep], stalled[keep]
            pending = None if pending is None else pending[keep]
            alive = np.ones(keep.size, dtype=bool)
        points, valid = _round_points(a, step, upper, max_steps, stalled, pending, width)
        pending = None
        m = points.shape[1]
        loss, noise, monotone, signal = _evaluate_decided(sub, points, target)
        before = np.concatenate([a[:, None], points[:, :-1]], axis=1)
        noise_before = np.concatenate([noise_a[:, None], noise[:, :-1]], axis=1)
        gap = points - before
        below = valid & alive[:, None] & (loss <= target)
        by_bound = ~below & (noise_before + monotone > target)
        unsure = valid & ~below & ~by_bound & alive[:, None]
        if unsure.any() and sub.wave:  # oscillating signals: bound them lobe by lobe
            r, c = np.nonzero(unsure)
            start_signal = np.where((c == 0)[:, None], signal_a[r], signal[r, np.maximum(c - 1, 0)])
            bound = sub.link_bound(before[r, c], points[r, c], start_signal, signal[r, c], r)
            by_bound[r, c] = noise_before[r, c] + monotone[r, c] + bound > target
        certified = ~valid | (~below & ((gap == 1) | by_bound))
        # walk along each row's certified links up to its first failing one
        failed = ~certified
        k = np.where(failed.any(axis=1), failed.argmax(axis=1), m)
        row = np.arange(a.size)
        walked = alive & (k > 0)
        last = np.maximum(k - 1, 0)
        ok = valid & alive[:, None] & (np.arange(m) < k[:, None])
        chain_config.append(active[np.nonzero(ok)[0]])
        chain_step.append(points[ok])
        stop = np.minimum(k, m - 1)  # the first failing point, else the last one
        stopped = k < m
        found = alive & stopped & below[row, stop] & (gap[row, stop] == 1)
        steps[active[found]] = points[row, stop][found]
        has_below = below.any(axis=1)
        first_below = np.where(has_below, points[row, below.argmax(axis=1)], np.iinfo(np.int64).max)
        if best is not None:  # a member at or below the target: the group's best is at most that step
            np.minimum.at(best, race[active[has_below]], first_below[has_below])
        upper = np.minimum(upper, first_below)
        a = np.where(walked, points[row, last], a)
        noise_a = np.where(walked, noise[row, last], noise_a)
        signal_a = np.where(walked[:, None], signal[row, last], signal_a)
        # next step: halve the failed link; after walking all, double the last link if the bound
        # certified it, else keep it
        last_valid = m - 1 - valid[:, ::-1].argmax(axis=1)
        link = np.where(stopped, gap[row, stop], gap[row, last_valid])
        end_by_bound = by_bound[row, np.where(stopped, stop, last_valid)]
        growth = 2 if m == 1 else m  # all m links certified: stride m times further next round
        step = np.maximum(np.where(stopped, link // 2, np.where(end_by_bound, growth * link, link)), 1)
        stalled = np.where(stopped, ~below[row, stop], stalled & ~end_by_bound)
        # the noise part never decreases: once it is above the target, the loss stays above it
        alive &= ~found & ~(walked & (noise_a > target))
    chains = _Chains(np.concatenate(chain_config), np.concatenate(chain_step))
    return steps, chains


FAST_MARGIN = 1e-12  # relative: fast values this close to the target (beyond their error bound) are redone


def _evaluate_decided(model: _Model, t: np.ndarray, target: float) -> tuple[np.ndarray, ...]:
    """(loss, noise lower bound, monotone signal, per-coordinate signal lower bound) at (N, M) steps ``t``.

    Fast evaluation (:meth:`_Model.evaluate_bounds`); where its error bound leaves the side of the target
    in doubt, the exact evaluation, so ``loss <= target`` always agrees with :meth:`_Model.evaluate`.
    """
    loss, error, noise, monotone, signal = model.evaluate_bounds(t)
    doubt = (error > 0) & (np.abs(loss - target) <= error + FAST_MARGIN * (target + loss))
    if doubt.any():
        r, c = np.nonzero(doubt)
        exact = model.take(r).evaluate(t[r, c])
        loss[r, c], noise[r, c], monotone[r, c], signal[r, c] = exact
    return loss, noise, monotone, signal


def _round_points(a, step, upper, max_steps, stalled, probes, width) -> tuple[np.ndarray, np.ndarray]:
    """(points, valid): the steps each row looks at this round, (n, M), non-decreasing along each row;
    ``valid`` marks the first occurrence of each step (repeats are padding).

    ``probes`` (n, L) when given (negative entries unused); else ``width`` points ``step`` apart, split
    evenly up to the smallest step known at or below the target, or consecutive where the bound stalled.
    """
    if probes is not None:
        points = np.where(probes < 0, -1, np.minimum(probes, max_steps))
    else:
        near = np.minimum(upper, max_steps)
        split = np.minimum(step, np.maximum((near - a) // (width + 1), 1))
        spacing = np.where(stalled & (step <= 2), 1, split)
        points = np.minimum(a[:, None] + spacing[:, None] * np.arange(1, width + 1), near[:, None])
    points = np.maximum.accumulate(np.concatenate([a[:, None], points], axis=1), axis=1)
    # padding repeats the previous step; it is evaluated but ignored, so keep it a real step (a may be -1)
    return np.maximum(points[:, 1:], 0), points[:, 1:] > points[:, :-1]


def _continuous(model: _Model, target: float, steps: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """steps - 1 + fraction of the last step at which log-loss (linear in t) hits log target."""
    out = np.full(steps.size, np.inf)
    out[steps == 0] = 0.0
    rows = np.flatnonzero(steps > 0)
    if rows.size:
        before = model.take(rows).loss(steps[rows] - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = np.log(before / target) / np.log(before / loss[rows])
        out[rows] = steps[rows] - 1 + np.clip(np.nan_to_num(fraction, nan=1.0), 0.0, 1.0)
    return out


# --------------------------------------------------------------------------------------------------------
# Information bound and deterministic limit
# --------------------------------------------------------------------------------------------------------


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
    with np.errstate(divide="ignore", invalid="ignore"):
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


# --------------------------------------------------------------------------------------------------------
# Tuned learning rate (and momentum) per batch size
# --------------------------------------------------------------------------------------------------------

SEARCHES = ("continuous", "grid")
COARSE_LR_POINTS = 24  # continuous search: coarse log-grid points before golden-section refinement
COARSE_MOMENTUM_POINTS = 8
GOLDEN_ITERATIONS = 16
MOMENTUM_ROUNDS = 3  # alternating (log eta, log(1 - beta)) golden-section rounds


@dataclass(frozen=True)
class TunedCurve:
    """Steps to target per batch size with the learning rate (and momentum) tuned for each.

    ``steps`` is -1 where no searched setting reaches the target within ``max_steps`` (``status``
    'unreachable'); ``learning_rate`` / ``momentum`` are then NaN and ``loss_at_steps`` is the lowest loss
    any searched setting reaches at ``max_steps``. ``steps_lower_bound`` is :func:`steps_lower_bound`.
    """

    batch_sizes: np.ndarray
    steps: np.ndarray
    learning_rate: np.ndarray
    momentum: np.ndarray
    loss_at_steps: np.ndarray
    status: np.ndarray
    steps_lower_bound: np.ndarray
    target: float
    optimizer: str
    search: str
    max_steps: int

    def rows(self, with_momentum: bool | None = None) -> list[dict]:
        """One flat dict per batch size (``momentum`` only when the optimizer uses it)."""
        with_momentum = self.optimizer == "momentum" if with_momentum is None else with_momentum
        out = []
        for i, b in enumerate(self.batch_sizes):
            ok = self.status[i] == OK
            row = {
                "batch_size": int(b),
                "steps": int(self.steps[i]) if ok else None,
                "learning_rate": float(self.learning_rate[i]) if ok else None,
            }
            if with_momentum:
                row["momentum"] = float(self.momentum[i]) if ok else None
            row |= {
                "loss_at_steps": float(self.loss_at_steps[i]),
                "status": str(self.status[i]),
                "steps_lower_bound": int(self.steps_lower_bound[i]),
            }
            out.append(row)
        return out


def log_grid(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` values 10^u, u evenly spaced from ``lo`` to ``hi`` (Zhang et al. tune on such grids)."""
    require(math.isfinite(lo) and math.isfinite(hi) and hi >= lo and n >= 1, f"bad log grid {lo}:{hi}:{n}")
    return np.logspace(lo, hi, n) if n > 1 else np.array([10.0**lo])


def tune_steps(
    spectrum: Spectrum,
    batch_sizes,
    target: float,
    *,
    lr_grid,
    momentum_grid=None,
    search: str = "continuous",
    precond_power: float = 0.0,
    ema_decay: float = 0.0,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> TunedCurve:
    """Fewest steps to ``target`` per batch size over the learning rate (and momentum), Zhang et al. Sec. 3.

    ``search='grid'``: the best of every (learning rate, momentum) pair of ``lr_grid`` x ``momentum_grid``
    (ties: the earlier crossing within the last step). ``search='continuous'``: start from the best point
    of ``lr_grid`` (for momentum, of a coarse log-grid of ``COARSE_LR_POINTS`` x ``COARSE_MOMENTUM_POINTS``
    over the same bounds), then golden-section search on log eta within one grid spacing (inside the grid
    bounds); for momentum alternate ``MOMENTUM_ROUNDS`` times with log(1 - beta) at fixed effective
    learning rate eta/(1 - beta) (inside the momentum bounds; eta may then leave the lr bounds). The
    objective is the interpolated crossing time (:class:`StepsResult`); the best point seen is kept, so
    without momentum the result is never worse than grid search.
    """
    require(search in SEARCHES, f"unknown search {search!r}; expected one of {', '.join(SEARCHES)}")
    batch = np.asarray(batch_sizes, dtype=float).ravel()
    require(batch.size > 0, "no batch sizes given")
    _require_finite_all(batch, batch > 0, "batch size must be > 0")
    lrs = _checked_grid(lr_grid, "learning-rate grid", lambda g: g > 0)
    momenta = (
        None
        if momentum_grid is None
        else _checked_grid(momentum_grid, "momentum grid", lambda g: (g >= 0) & (g < 1))
    )
    fixed = {"ema_decay": ema_decay, "precond_power": precond_power, "max_steps": max_steps}

    def run(b, lr, beta, race=None, guess=None, probes=None, above=None):
        hints = {"race": race, "guess": guess, "probes": probes, "above": above}
        return steps_to_target(spectrum, b, lr, target, momentum=beta, **hints, **fixed)

    if search == "continuous" and momenta is not None:  # 1-D: the full grid is cheap, start from it
        lrs, momenta = _coarse(lrs, COARSE_LR_POINTS), _coarse(momenta, COARSE_MOMENTUM_POINTS)
    def screen(lr, beta):
        return _screen_pairs(spectrum, batch, lr, beta, target, int(max_steps), precond_power, ema_decay)

    best = _grid_best(run, batch, lrs, momenta, screen)
    if search == "continuous":
        best = _refine(run, batch, best, lrs, momenta)
    final = run(batch, best.learning_rate, best.momentum)
    ok = final.status == OK
    lowest = np.where(ok, final.loss_at_steps, best.lowest_loss)
    optimizer = (
        "momentum" if momenta is not None else "ema" if ema_decay else "precond" if precond_power else "sgd"
    )
    return TunedCurve(
        batch_sizes=batch.astype(np.int64),
        steps=np.where(ok, final.steps, -1),
        learning_rate=np.where(ok, best.learning_rate, np.nan),
        momentum=np.where(ok, best.momentum, np.nan),
        loss_at_steps=lowest,
        status=np.where(ok, OK, UNREACHABLE),
        steps_lower_bound=steps_lower_bound(spectrum, batch, target),
        target=float(target),
        optimizer=optimizer,
        search=search,
        max_steps=int(max_steps),
    )


class _Best(NamedTuple):
    learning_rate: np.ndarray  # (n,)
    momentum: np.ndarray  # (n,)
    objective: np.ndarray  # (n,) interpolated steps, inf if not reached
    lowest_loss: np.ndarray  # (n,) lowest loss at max_steps among unreachable settings
    certified: np.ndarray  # (n, L) steps the best setting was shown above the target at (search probes)


def _checked_grid(values, name: str, ok) -> np.ndarray:
    grid = np.sort(np.asarray(values, dtype=float).ravel())
    require(grid.size > 0, f"{name} is empty")
    _require_finite_all(grid, ok(grid), f"{name} has a bad value")
    return grid


def _coarse(grid: np.ndarray, points: int) -> np.ndarray:
    """``points`` log-spaced values over the bounds of ``grid`` (the grid itself if it is smaller)."""
    if grid.size <= points:
        return grid
    return log_grid(math.log10(grid[0]), math.log10(grid[-1]), points) if grid[0] > 0 else grid


def _grid_best(run, batch: np.ndarray, lrs: np.ndarray, momenta: np.ndarray | None, screen=None) -> _Best:
    """Best (fewest steps, then earliest crossing) of the full grid, per batch size.

    ``screen(lr, beta)`` (optional, see :func:`_screen_pairs`) gives, per batch size and (lr, beta) pair,
    whether the pair may be the best and a step up to which its loss is known to be above the target; only
    those pairs are raced, the rest are provably slower, so the result is the same.
    """
    betas = np.zeros(1) if momenta is None else momenta
    b, lr, beta = np.meshgrid(batch, lrs, betas, indexing="ij")  # (n, L, M)
    n, pairs = batch.size, lrs.size * betas.size
    group = np.repeat(np.arange(n), pairs)
    if screen is None:
        result = run(b.ravel(), lr.ravel(), beta.ravel(), group)
        steps, objective, loss = result.steps, result.steps_continuous, result.loss_at_steps
        status, certified = result.status, result.certified
    else:
        keep, above = screen(lr[0].ravel(), beta[0].ravel())
        rows = np.flatnonzero(keep.ravel())
        pick = (a.ravel()[rows] for a in (b, lr, beta))
        result = run(*pick, group[rows], above=above.ravel()[rows])
        steps = np.full(n * pairs, -1, dtype=np.int64)
        objective, loss = np.full(n * pairs, np.inf), np.full(n * pairs, np.inf)
        status = np.full(n * pairs, UNREACHABLE, dtype=result.status.dtype)
        certified = np.full((n * pairs, result.certified.shape[1]), -1, dtype=np.int64)
        steps[rows], objective[rows], loss[rows] = result.steps, result.steps_continuous, result.loss_at_steps
        status[rows], certified[rows] = result.status, result.certified
    steps = np.where(steps >= 0, steps, np.iinfo(np.int64).max).reshape(n, -1).astype(float)
    objective = objective.reshape(n, -1)
    order = _argmin_pair(steps, objective)
    pick = np.arange(n), order
    lowest = np.where(status == DIVERGED, np.inf, loss).reshape(n, -1).min(axis=1)
    certified = certified.reshape(n, pairs, -1)[pick]
    return _Best(lr.reshape(n, -1)[pick], beta.reshape(n, -1)[pick], objective[pick], lowest, certified)


SCREEN_RATIO = 1.5  # screening evaluates every pair at steps about this factor apart
SCREEN_MARGIN = 1e-9  # relative: decisions closer than this to the target are left to the exact search


def _screen_pairs(
    spectrum: Spectrum,
    batch: np.ndarray,
    learning_rate: np.ndarray,
    momentum: np.ndarray,
    target: float,
    max_steps: int,
    precond_power: float = 0.0,
    ema_decay: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Which (batch size, setting) pairs can be the fastest setting of their batch size: (n, P) each.

    Every optimizer's expected loss is signal(t) + noise_1(t) / B, where neither part depends on the batch
    size B (noise_1 is the noise part at B = 1). So each setting is evaluated once per step for all batch
    sizes, on a ladder of steps ``SCREEN_RATIO`` apart, and certified links (as in :func:`_search`) give
    per batch size a step ``above`` up to which its loss stays above the target, and the first ladder step
    at or below the target. A pair whose ``above`` reaches the smallest such step of its batch size is
    slower than the best and is dropped (``keep`` False); batch sizes where no setting reaches the target
    on the ladder keep every pair. ``above`` is -1 where nothing is known.
    """
    n, p = batch.size, learning_rate.size
    start = _information_start(spectrum, batch, target)
    never = np.iinfo(np.int64).max
    first_below = np.full((p, n), never, dtype=np.int64)
    intact = np.ones((p, n), dtype=bool)  # every step up to ``above`` is certified contiguously
    ones = np.ones(p)
    model = build_model(spectrum, _configs(ones, learning_rate, momentum, ema_decay * ones), precond_power)
    above = np.maximum(start[None, :] - 1, _decay_bound(model, target)[:, None])
    floor = np.where(model.stable, model.floor(), np.inf)
    margin = SCREEN_MARGIN * np.maximum(target, floor[:, None] / batch)  # (p, n)
    live = np.flatnonzero(model.stable & (above.min(axis=1) < max_steps))
    live = live[model.take(live).monotone_signal(max_steps) <= target]
    intact[np.setdiff1d(np.arange(p), live)] = False
    # settings enter the ladder once it passes the steps already known to be above the target, so order
    # them by that: the settings looked at are always a leading slice (a view, no copy)
    live = live[np.argsort(above[live].min(axis=1), kind="stable")]
    enter = above[live].min(axis=1)
    best = np.full(n, never, dtype=np.int64)
    sub = model.take(live)
    t_prev = np.full(live.size, -1, dtype=np.int64)
    noise_prev, signal_prev = np.zeros(live.size), np.zeros((live.size, model.weight.size))
    t = max(int(enter.min(initial=0)) + 1, 0)
    while live.size and t <= max_steps:
        count = int(np.searchsorted(enter, t, side="left"))  # entered: enter < t
        if count == 0:
            t = max(t + 1, int(t * SCREEN_RATIO), int(enter[0]) + 1)
            continue
        rows = slice(0, count)
        view = sub.take(rows)
        _, noise1, monotone, signal = view.evaluate(np.full(count, float(t)))
        loss = _weighted(signal, view.weight)[:, None] + noise1[:, None] / batch
        ids = live[rows]
        m = margin[ids]
        is_below = loss <= target - m
        is_above = loss > target + m
        known = above[ids]
        todo = known < t
        unit = (t - np.maximum(known, t_prev[rows, None])) == 1
        wave = view.link_bound(np.maximum(t_prev[rows], 0), np.full(count, t), signal_prev[rows], signal)
        wave = np.where(t_prev[rows] >= 0, wave, 0.0)  # new entrants: noise 0 and signal 0 bound the link
        bound = noise_prev[rows, None] / batch + (monotone + wave)[:, None]
        certified = is_above & (unit | (bound > target + m))
        step_ok = todo & intact[ids] & certified
        fb = first_below[ids]
        first_below[ids] = np.where(todo & is_below & (fb == never), t, fb)
        new_above = np.where(step_ok, t, known)
        # the noise part never decreases: above the target there, the loss stays above it for good
        dead = step_ok & (noise1[:, None] / batch > target + m)
        above[ids] = np.where(dead, never - 1, new_above)
        intact[ids] &= ~todo | step_ok
        best = np.minimum(best, first_below[ids].min(axis=0))
        noise_prev[rows], signal_prev[rows], t_prev[rows] = noise1, signal, t
        # a (setting, batch) pair still teaches something while it is certified up to here, not yet at or
        # below the target, and not yet past the best batch's first step at or below the target
        useful = intact[live] & (first_below[live] == never) & (above[live] < best) & (t < best)
        keep = useful.any(axis=1)
        if not keep.any():
            break
        if keep.sum() < COMPACT_FRACTION * keep.size:  # the others still learn true facts meanwhile
            live, sub, enter, t_prev = live[keep], sub.take(np.flatnonzero(keep)), enter[keep], t_prev[keep]
            noise_prev, signal_prev = noise_prev[keep], signal_prev[keep]
        t = max(t + 1, int(t * SCREEN_RATIO))
    reached = best < never
    keep = (above < best) | ~reached
    keep &= model.stable[:, None]
    above = np.where(keep & reached, np.minimum(above, never - 1), -1)
    return keep.T, above.T


def _decay_bound(model: _Model, target: float) -> np.ndarray:
    r"""Per configuration, a step up to which the loss is above ``target`` whatever the batch size.

    A non-oscillating coordinate's signal is at least :math:`x_0^2 r^{2t}` (r the larger root of
    :math:`r^2 - A r + \beta`; plain SGD: r = 1 - eta h), so the loss exceeds the target while
    :math:`\tfrac12 n_k h_k x_0^2 r^{2t} >` target. -1 where no coordinate gives a bound (EMA: none).
    """
    n = model.stable.size
    if model.family == "ema":
        return np.full(n, -1, dtype=np.int64)
    amplitude = model.weight * model.init_sq  # (K,)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_r = 0.5 * np.log(model.rate) if model.family == "sgd" else model.seq.log_abs_base
        usable = model.monotone & (amplitude > target) & (log_r < 0) & np.isfinite(log_r)
        steps = np.where(usable, np.log(target / amplitude) / (2.0 * log_r), 0.0)
    # every integer t < steps is above the target; a relative margin covers rounding
    bound = np.floor(steps.max(axis=1, initial=0.0) * (1.0 - 1e-9)) - 1.0
    return np.where(model.stable, np.maximum(bound, -1.0), -1.0).astype(np.int64)


def _argmin_pair(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Per row, the column with the smallest ``primary``, ties broken by the smallest ``secondary``."""
    best_primary = primary.min(axis=1, keepdims=True)
    masked = np.where(primary == best_primary, secondary, np.inf)
    return np.argmin(masked, axis=1)


def _refine(run, batch: np.ndarray, best: _Best, lrs: np.ndarray, momenta: np.ndarray | None) -> _Best:
    """Golden-section refinement around the coarse optimum.

    Axis 1: log10 eta at fixed momentum. Axis 2 (momentum): log10(1 - beta) at fixed effective learning
    rate eta / (1 - beta), which follows the valley of the (eta, beta) landscape instead of cutting across it.
    """
    lr_grid = np.log10(lrs)
    for _ in range(1 if momenta is None else MOMENTUM_ROUNDS):
        beta = best.momentum
        centre = np.log10(best.learning_rate)
        best = _golden_axis(run, batch, best, lr_grid, centre, lambda u, m=beta: (10.0**u, m))
        if momenta is not None and momenta[0] < momenta[-1]:
            effective = best.learning_rate / (1.0 - best.momentum)
            grid = np.log10(1.0 - momenta[::-1])

            def point(u, e=effective):
                return e * 10.0**u, 1.0 - 10.0**u

            best = _golden_axis(run, batch, best, grid, np.log10(1.0 - best.momentum), point)
    return best


def _golden_axis(run, batch, best: _Best, grid: np.ndarray, centre: np.ndarray, point) -> _Best:
    """Vectorised golden-section search over u in [centre -+ one grid spacing] (within the grid), per batch.

    ``point(u)`` maps the coordinate to (learning rate, momentum); the best point ever seen is kept.
    """
    if grid.size < 2 or not np.any(np.isfinite(best.objective)):
        return best
    spacing = float(np.max(np.diff(grid)))
    lo, hi = np.clip(centre - spacing, grid[0], grid[-1]), np.clip(centre + spacing, grid[0], grid[-1])
    inv = (math.sqrt(5.0) - 1.0) / 2.0

    def evaluate(u, best):
        lr, beta = point(u)
        # the best setting so far is a near neighbour: its crossing step is a good first stride
        result = run(batch, lr, beta, guess=best.objective, probes=_probes(best))
        objective = result.steps_continuous
        return objective, _keep_better(best, lr, beta, objective, result.certified)

    c, d = hi - inv * (hi - lo), lo + inv * (hi - lo)
    # both first points in one run (configurations are independent; the guess only sets a stride)
    (lr_c, beta_c), (lr_d, beta_d) = point(c), point(d)
    lr_cd = np.concatenate([np.broadcast_to(lr_c, c.shape), np.broadcast_to(lr_d, d.shape)])
    beta_cd = np.concatenate([np.broadcast_to(beta_c, c.shape), np.broadcast_to(beta_d, d.shape)])
    guess = np.concatenate([best.objective, best.objective])
    probes = _probes(best)
    both = np.concatenate([probes, probes])
    result = run(np.concatenate([batch, batch]), lr_cd, beta_cd, guess=guess, probes=both)
    fc, fd = result.steps_continuous[: c.size], result.steps_continuous[c.size :]
    best = _keep_better(best, lr_c, beta_c, fc, result.certified[: c.size])
    best = _keep_better(best, lr_d, beta_d, fd, result.certified[c.size :])
    for _ in range(GOLDEN_ITERATIONS):
        left = fc <= fd  # the minimum lies in [lo, d]
        lo, hi = np.where(left, lo, c), np.where(left, d, hi)
        fresh = np.where(left, hi - inv * (hi - lo), lo + inv * (hi - lo))
        f_fresh, best = evaluate(fresh, best)
        c, d = np.where(left, fresh, d), np.where(left, c, fresh)
        fc, fd = np.where(left, f_fresh, fd), np.where(left, fc, f_fresh)
    return best


def _keep_better(best: _Best, lr: np.ndarray, beta: np.ndarray, objective: np.ndarray, certified) -> _Best:
    better = objective < best.objective
    old, new = _widen(best.certified, certified)
    return best._replace(
        learning_rate=np.where(better, lr, best.learning_rate),
        momentum=np.where(better, beta, best.momentum),
        objective=np.where(better, objective, best.objective),
        certified=np.where(better[:, None], new, old),
    )


PROBE_DENSITY = 1  # probes kept per doubling of the distance to the crossing
PROBE_WINDOW = 2  # consecutive steps each side of the neighbour's crossing (half the crossings are within 4)
PROBE_OFFSETS = np.array([16])  # then 16 steps past it
PROBE_FACTORS = np.array([1.02, 1.2])  # and these multiples of it


def _probes(best: _Best) -> np.ndarray:
    """Steps to look at first for a neighbour of ``best`` (crossing g): the steps that certified ``best``,
    thinned to about one per doubling of the distance to g, every step within ``PROBE_WINDOW`` of g, and
    a few further past g."""
    chain = best.certified
    crossing = chain[:, -1:] + 1
    distance = np.maximum(crossing - chain, 1).astype(float)
    bucket = np.floor(PROBE_DENSITY * np.log2(distance))
    keep = np.concatenate([bucket[:, 1:] != bucket[:, :-1], np.ones_like(crossing, dtype=bool)], axis=1)
    keep &= (distance > PROBE_WINDOW) & (chain > 0)
    window = crossing + np.arange(-PROBE_WINDOW, PROBE_WINDOW + 1)
    multiples = np.ceil(crossing * PROBE_FACTORS).astype(np.int64)
    further = np.concatenate([crossing + PROBE_OFFSETS, multiples], axis=1)
    probes = np.concatenate([np.where(keep, chain, -1), window, np.sort(further, axis=1)], axis=1)
    return _left_pack(probes)


def _left_pack(values: np.ndarray) -> np.ndarray:
    """Each row's distinct positive entries in increasing order, padded with its last one (-1 if none)."""
    values = np.sort(values, axis=1)
    fresh = (values > 0) & (values != np.concatenate([values[:, :1] - 1, values[:, :-1]], axis=1))
    counts = fresh.sum(axis=1)
    out = np.full((values.shape[0], max(int(counts.max(initial=0)), 1)), -1, dtype=np.int64)
    r, c = np.nonzero(fresh)
    out[r, np.cumsum(fresh, axis=1)[r, c] - 1] = values[r, c]
    return np.maximum.accumulate(out, axis=1)
