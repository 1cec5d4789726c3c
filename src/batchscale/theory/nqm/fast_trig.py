"""Fast sines and cosines with a stated error bound, for the oscillating heavy-ball coordinates.

:func:`fast_sin_cos` reduces in float64 and evaluates numpy's float32 SIMD sine and cosine (each within
``SINE_ERROR``); the ``_masked_*`` helpers evaluate the exact sines on the oscillating coordinates only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from batchscale.theory.nqm.power_sequences import PowerSequence


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
