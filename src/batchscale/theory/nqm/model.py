"""Whole-spectrum model for many configurations at once: per (configuration, bin) coefficients of the
closed forms (:func:`build_model`), the expected loss at any steps, its fast evaluation with rigorous error
bounds, and the lower bounds the exact search certifies with (:class:`_Model`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import NamedTuple

import numpy as np

from batchscale.errors import InputError, require
from batchscale.theory.nqm.closed_forms import (
    _ema_parts,
    _momentum_parts,
    _momentum_parts_fast,
    ema_stationary_moments,
    momentum_stationary_moments,
    sgd_stationary_variance,
)
from batchscale.theory.nqm.fast_trig import FAST_SINE_LIMIT
from batchscale.theory.nqm.power_sequences import PowerSequence, ema_power_sequence, heavy_ball_power_sequence
from batchscale.theory.spectra import Spectrum


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
    # extreme spectra (h or c near 1e+-300) can over- or underflow here, mostly on the divergent rows'
    # stand-in step 0.5 / h; stable rows must come out finite (checked below)
    with np.errstate(over="ignore", invalid="ignore"):
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
    coef = _finite_moments(coef, stable, configs)
    weight = 0.5 * spectrum.counts * h
    return _Model(family, weight, spectrum.init_sq, rate, coef, seq, param, stable, monotone, wave)


def _finite_moments(coef: tuple, stable: np.ndarray, configs: Configs) -> tuple:
    """``coef`` with the divergent rows' non-finite stand-ins set to 0 (they are never reported); one line
    instead of a silent inf/NaN when a stable setting's stationary moments leave float64's range (overflow,
    or underflow to 0/0 where eta h_i underflows)."""
    finite = np.ones_like(stable)
    for values in coef:
        finite &= np.isfinite(values).all(axis=1)
    if finite.all():
        return coef
    bad = np.flatnonzero(stable & ~finite)
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"the stationary second moments are beyond float64's range at learning rate "
            f"{configs.learning_rate[i]:.3g}: the spectrum's eigenvalues or noise variances are too extreme "
            "(the product of the learning rate and an eigenvalue over- or underflows); rescale them towards 1"
        )
    return tuple(np.where(np.isfinite(values), values, 0.0) for values in coef)


def largest_stable_learning_rate(spectrum: Spectrum, precond_power: float = 0.0) -> float:
    r"""Largest stable learning rate of SGD preconditioned by :math:`H^{-p}`: :math:`2 / \max_i h_i^{1-p}`.

    Coordinate i has step :math:`\eta h_i^{-p}` and is stable iff :math:`\eta h_i^{1-p} < 2`
    (:func:`build_model`); heavy-ball momentum beta widens this to :math:`2 (1 + \beta)`, EMA leaves it.
    p is ``precond_power``; 0 when the largest :math:`h_i^{1-p}` overflows.
    """
    with np.errstate(over="ignore"):
        top = float(np.max(spectrum.curvature ** (1.0 - precond_power)))
    return 2.0 / top


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
