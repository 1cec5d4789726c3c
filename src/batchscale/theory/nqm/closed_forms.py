r"""Closed forms per coordinate: stationary second moments and E[x_t^2] of SGD, heavy-ball momentum
and SGD with an exponential moving average of the iterates (Zhang et al. 2019, arXiv 1907.04164).

Each coordinate follows a 1- or 2-dimensional linear system; T^t is written with the sequences of
:mod:`batchscale.theory.nqm.power_sequences`, so no loop over steps is needed.
"""

from __future__ import annotations

import numpy as np

from batchscale.theory.nqm.power_sequences import (
    ema_power_sequence,
    heavy_ball_power_sequence,
    power_sequence,
    power_sequence_pair,
)


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


def _ema_parts(seq, r, decay, init_sq, s11, s12, s22, t):
    t = np.asarray(t, dtype=float)
    l1 = (1.0 - decay) * r * power_sequence(seq, t)
    l2 = np.power(decay, t)
    signal = init_sq * (l1 + l2) ** 2
    noise = s22 * (1.0 - l2**2) - s11 * l1**2 - 2.0 * s12 * l1 * l2
    return signal, noise
