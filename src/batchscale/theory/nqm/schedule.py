r"""Optimal piecewise-constant learning-rate schedules in the noisy quadratic model (Zhang et al. 2019,
arXiv 1907.04164, Sec. 3: "optimal learning rate schedules").

A K-piece schedule runs :math:`k_j` steps at the learning rate :math:`\eta_j`, j = 1..K. Within a piece SGD
(preconditioned by :math:`H^{-p}`: coordinate i steps :math:`e_{ij} = \eta_j h_i^{-p}`) has the closed form
of :func:`batchscale.theory.nqm.sgd_second_moment`, and the end of one piece is the start of the next, so

.. math:: s_{i,j} = a_{ij}^{k_j} (s_{i,j-1} - s^*_{ij}) + s^*_{ij},\quad a_{ij} = (1 - e_{ij} h_i)^2,\quad
          s^*_{ij} = \frac{e_{ij} c_i}{B h_i (2 - e_{ij} h_i)},\qquad E[L] = \tfrac12 \sum_i n_i h_i s_{i,K}

exactly (:func:`schedule_loss`). :func:`optimal_schedule_steps` finds the fewest total steps :math:`T =
\sum_j k_j` at which some K-piece schedule reaches the target: for a fixed T it minimises the loss over the
rates and the piece boundaries (bounded truncated Newton, scipy's TNC, on :math:`\log\eta_j` and softmax
weights of the piece lengths, exact gradient by back-propagation through the pieces), rounds the boundaries
to whole steps and re-optimises the rates at those boundaries; T is bisected between the information bound
(:func:`batchscale.theory.nqm.steps_lower_bound`, which no schedule beats) and the tuned constant-rate
answer (a 1-piece schedule, feasible by construction), so K pieces never need more steps than a constant
rate. Zhang et al.'s notebook uses K equal-length pieces and optimises the rates only; letting the
boundaries move as well is a larger family, so it never needs more steps. The minimisation is local (several
starts); a bisection step that misses a feasible schedule makes the answer larger, never wrong: every
reported schedule is an integer schedule whose exact loss is at or below the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from batchscale.errors import require
from batchscale.theory.nqm.model import largest_stable_learning_rate
from batchscale.theory.spectra import Spectrum

STABILITY_MARGIN = 1e-6  # rates stay below (1 - margin) x the largest stable rate
LOG_RATE_FLOOR = math.log(1e-12)
LENGTH_LOGIT_BOUND = 30.0
MAX_EVALUATIONS = 300


@dataclass(frozen=True)
class PiecewiseSchedule:
    """A schedule of at most K pieces: ``steps[j]`` (>= 1) steps at ``learning_rate[j]``, and its exact
    expected loss (pieces the optimum leaves empty are dropped; the constant rate is one piece)."""

    steps: tuple[int, ...]
    learning_rate: tuple[float, ...]
    loss: float

    @property
    def total_steps(self) -> int:
        return int(sum(self.steps))

    def as_list(self) -> list[dict]:
        """``[{"steps": k_j, "learning_rate": eta_j}, ...]`` (JSON)."""
        return [{"steps": int(k), "learning_rate": float(lr)} for k, lr in zip(self.steps, self.learning_rate,
                                                                              strict=True)]


@dataclass(frozen=True)
class ScheduleResult:
    """Fewest steps to the target over K-piece schedules at one batch size (``steps`` None: not searched,
    the constant rate did not reach the target)."""

    batch_size: float
    pieces: int
    steps: int | None
    schedule: PiecewiseSchedule | None
    constant_steps: int | None
    lower_bound: int
    evaluations: int


def _step_sizes(spectrum: Spectrum, learning_rate, precond_power: float) -> np.ndarray:
    """(K, bins) per-coordinate steps e_ij = eta_j h_i^-p."""
    return np.asarray(learning_rate, dtype=float)[:, None] * spectrum.curvature[None, :] ** (-precond_power)


def schedule_second_moments(
    spectrum: Spectrum, batch_size: float, learning_rates, piece_steps, precond_power: float = 0.0
) -> np.ndarray:
    r"""(bins,) :math:`E[x_i^2]` after the pieces: :math:`s_j = a_j^{k_j}(s_{j-1} - s^*_j) + s^*_j` in turn.

    ``learning_rates`` (eta_j) and ``piece_steps`` (k_j) have one entry per piece; B is ``batch_size``,
    p is ``precond_power``. Every piece must be stable (e_ij h_i < 2).
    """
    h, c = spectrum.curvature, spectrum.noise
    s = spectrum.init_sq.astype(float)
    e = _step_sizes(spectrum, learning_rates, precond_power)
    require(bool(np.all(e * h < 2.0)), "every piece's learning rate must be below the stability limit")
    for e_j, k_j in zip(e, np.asarray(piece_steps, dtype=float), strict=True):
        a = (1.0 - e_j * h) ** 2
        star = e_j * c / (batch_size * h * (2.0 - e_j * h))
        s = np.power(a, k_j) * (s - star) + star
    return s


def schedule_loss(
    spectrum: Spectrum, batch_size: float, learning_rates, piece_steps, precond_power: float = 0.0
) -> float:
    r""":math:`E[L] = \tfrac12 \sum_i n_i h_i s_{i,K}` after the schedule
    (:func:`schedule_second_moments`)."""
    s = schedule_second_moments(spectrum, batch_size, learning_rates, piece_steps, precond_power)
    return float(0.5 * np.sum(spectrum.counts * spectrum.curvature * s))


class _Objective:
    """log E[L] after T steps as a function of (log eta_1..K[, length logits v_1..K]) with its gradient."""

    def __init__(self, spectrum: Spectrum, batch_size: float, precond_power: float, total: float,
                 lengths: np.ndarray | None):
        self.h, self.c = spectrum.curvature, spectrum.noise
        self.scale = spectrum.curvature ** (-precond_power)  # (bins,)
        self.weight = 0.5 * spectrum.counts * spectrum.curvature
        self.s0 = spectrum.init_sq.astype(float)
        self.batch, self.total, self.fixed = float(batch_size), float(total), lengths
        self.calls = 0

    def pieces(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(rates (K,), lengths (K,), softmax weights or None) of the variables ``z``."""
        if self.fixed is not None:
            return np.exp(z), self.fixed, None
        k = z.size // 2
        v = z[k:] - z[k:].max()
        w = np.exp(v) / np.exp(v).sum()
        return np.exp(z[:k]), self.total * w, w

    def __call__(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        self.calls += 1
        rates, lengths, w = self.pieces(z)
        h, c, b = self.h, self.c, self.batch
        e = rates[:, None] * self.scale[None, :]  # (K, bins)
        one_minus = 1.0 - e * h
        a = one_minus**2
        star = e * c / (b * h * (2.0 - e * h))
        power = np.power(a, lengths[:, None])  # (K, bins)
        starts = [self.s0]
        for j in range(len(rates)):  # forward: s_j = P_j (s_{j-1} - s*_j) + s*_j
            starts.append(power[j] * (starts[-1] - star[j]) + star[j])
        loss = float(self.weight @ starts[-1])
        g = self.weight.copy()  # dL/ds_j, back-propagated
        d_log_rate, d_length = np.zeros(len(rates)), np.zeros(len(rates))
        for j in reversed(range(len(rates))):
            d_power = g * (starts[j] - star[j])
            d_star = g * (1.0 - power[j])
            k, a_j, positive = lengths[j], a[j], a[j] > 0
            safe = np.where(positive, a_j, 1.0)
            # dP/de = k a^(k-1) da/de, da/de = -2 h (1 - e h); dP/dk = P ln a;
            # d s*/de = 2 c / (B h (2 - e h)^2)
            dp_de = np.where(positive, k * power[j] / safe, 0.0) * (-2.0 * h * one_minus[j])
            dp_dk = np.where(positive, power[j] * np.log(safe), 0.0)
            ds_de = 2.0 * c / (b * h * (2.0 - e[j] * h) ** 2)
            d_log_rate[j] = float(np.sum(e[j] * (d_power * dp_de + d_star * ds_de)))
            d_length[j] = float(np.sum(d_power * dp_dk))
            g = g * power[j]
        grad = d_log_rate
        if w is not None:
            # k_j = T w_j, w = softmax(v): dL/dv_i = T w_i (dL/dk_i - sum_j w_j dL/dk_j)
            d_v = self.total * w * (d_length - float(w @ d_length))
            grad = np.concatenate([d_log_rate, d_v])
        return math.log(loss), grad / loss


def _minimise(objective: _Objective, start: np.ndarray, bounds: list) -> tuple[np.ndarray, float]:
    from scipy.optimize import minimize

    result = minimize(objective, start, jac=True, method="TNC", bounds=bounds,
                      options={"maxfun": MAX_EVALUATIONS})
    return result.x, float(result.fun)


def _round_lengths(total: int, fractions: np.ndarray) -> np.ndarray:
    """Whole steps summing to ``total`` closest to ``total x fractions`` (largest remainders)."""
    raw = total * fractions
    whole = np.floor(raw).astype(np.int64)
    rest = total - int(whole.sum())
    whole[np.argsort(-(raw - whole), kind="stable")[:rest]] += 1
    return whole


def _best_at(
    spectrum, batch_size, precond_power, total: int, starts, log_max: float
) -> tuple[PiecewiseSchedule, int]:
    """The lowest-loss K-piece integer schedule of ``total`` steps found from ``starts`` (each a pair of
    (log rates, length fractions)), and the number of loss evaluations it took."""
    pieces = len(starts[0][0])
    rate_bounds = [(LOG_RATE_FLOOR, log_max)] * pieces
    best: PiecewiseSchedule | None = None
    calls = 0
    for log_rates, fractions in starts:
        log_rates = np.clip(log_rates, LOG_RATE_FLOOR, log_max)
        if pieces > 1:  # move boundaries and rates together, then fix whole-step boundaries
            free = _Objective(spectrum, batch_size, precond_power, total, None)
            logits = np.clip(np.log(np.maximum(fractions, 1e-12)), -LENGTH_LOGIT_BOUND, LENGTH_LOGIT_BOUND)
            z, _ = _minimise(free, np.concatenate([log_rates, logits - logits.max()]),
                             rate_bounds + [(-LENGTH_LOGIT_BOUND, LENGTH_LOGIT_BOUND)] * pieces)
            calls += free.calls
            log_rates, fractions = z[:pieces], free.pieces(z)[2]
        lengths = _round_lengths(total, fractions)
        fixed = _Objective(spectrum, batch_size, precond_power, total, lengths.astype(float))
        z, _ = _minimise(fixed, log_rates, rate_bounds)
        calls += fixed.calls
        rates = np.exp(z)
        loss = schedule_loss(spectrum, batch_size, rates, lengths, precond_power)
        if best is None or loss < best.loss:
            used = lengths > 0  # a piece of 0 steps changes nothing: dropped
            best = PiecewiseSchedule(tuple(int(k) for k in lengths[used]),
                                     tuple(float(r) for r in rates[used]), loss)
    return best, calls


def _merged(schedule: PiecewiseSchedule) -> PiecewiseSchedule:
    """``schedule`` with neighbouring pieces of the same rate joined (k1 steps then k2 steps at one rate are
    k1 + k2 steps at it: the same closed form)."""
    steps, rates = [schedule.steps[0]], [schedule.learning_rate[0]]
    for k, lr in zip(schedule.steps[1:], schedule.learning_rate[1:], strict=True):
        if lr == rates[-1]:
            steps[-1] += k
        else:
            steps.append(k)
            rates.append(lr)
    return PiecewiseSchedule(tuple(steps), tuple(rates), schedule.loss)


def _split(schedule: PiecewiseSchedule, pieces: int) -> tuple[np.ndarray, np.ndarray]:
    """(log rates, length fractions) of ``pieces`` pieces with the same rates over time as ``schedule``
    (each of its pieces split into equal parts; the same loss when the whole steps allow)."""
    have = len(schedule.steps)
    per = [pieces // have + (j < pieces % have) for j in range(have)]
    rates, fractions = [], []
    for k, lr, n in zip(schedule.steps, schedule.learning_rate, per, strict=True):
        rates += [math.log(lr)] * n
        fractions += [k / n / max(schedule.total_steps, 1)] * n
    return np.array(rates), np.array(fractions)


def optimal_schedule_steps(
    spectrum: Spectrum,
    batch_size: float,
    target: float,
    pieces: int,
    *,
    constant_steps: int | None,
    constant_learning_rate: float | None,
    precond_power: float = 0.0,
    lower_bound: int = 0,
) -> ScheduleResult:
    r"""Fewest steps T at which a ``pieces``-piece schedule reaches E[L] <= ``target`` (module docstring).

    ``constant_steps`` / ``constant_learning_rate``: the tuned constant-rate answer (a feasible 1-piece
    schedule; None when the constant rate does not reach the target, then nothing is searched).
    ``lower_bound``: steps no method can beat (the information bound). Rates are kept below
    (1 - ``STABILITY_MARGIN``) x :math:`2/\max_i h_i^{1-p}`.
    """
    require(isinstance(pieces, (int, np.integer)) and pieces >= 1, f"pieces must be >= 1, got {pieces}")
    if constant_steps is None or constant_learning_rate is None:
        return ScheduleResult(batch_size, pieces, None, None, None, int(lower_bound), 0)
    log_max = math.log(largest_stable_learning_rate(spectrum, precond_power) * (1.0 - STABILITY_MARGIN))
    constant = PiecewiseSchedule(
        (int(constant_steps),), (float(constant_learning_rate),),
        schedule_loss(spectrum, batch_size, [constant_learning_rate], [constant_steps], precond_power),
    )
    best = constant
    lo, hi = max(int(lower_bound) - 1, 0), int(constant_steps)  # lo: known infeasible (or 0 steps)
    evaluations = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        warm_rates, warm_fractions = _split(best, pieces)
        decay = np.linspace(log_max + math.log(0.9), math.log(constant_learning_rate / 10.0), pieces)
        starts = [(warm_rates, warm_fractions)]
        if pieces > 1:
            starts.append((decay, np.full(pieces, 1.0 / pieces)))
        found, calls = _best_at(spectrum, batch_size, precond_power, mid, starts, log_max)
        evaluations += calls
        if found.loss <= target:
            hi, best = mid, found
        else:
            lo = mid
    best = _merged(best)
    return ScheduleResult(batch_size, pieces, best.total_steps, best, int(constant_steps), int(lower_bound),
                          evaluations)


MAX_PIECES = 100


def parse_schedule(text: str) -> int | None:
    """``'constant'`` -> None; ``'pwc:K'`` -> K pieces (1 <= K <= ``MAX_PIECES``); anything else an
    InputError."""
    from batchscale.errors import InputError

    value = str(text).strip()
    if value == "constant":
        return None
    head, _, tail = value.partition(":")
    if head != "pwc" or not tail.strip().isdigit():
        raise InputError(f"schedule must be 'constant' or 'pwc:K' (K pieces, e.g. pwc:10), got {text!r}")
    pieces = int(tail)
    if not 1 <= pieces <= MAX_PIECES:
        raise InputError(f"a pwc schedule needs 1 to {MAX_PIECES} pieces, got {pieces}")
    return pieces


def schedule_curve(
    spectrum: Spectrum, tuned, target: float, pieces: int, precond_power: float = 0.0, progress=None
) -> list[ScheduleResult]:
    """:func:`optimal_schedule_steps` at every batch size of ``tuned`` (a
    :class:`batchscale.theory.nqm.TunedCurve` of the same problem: its constant-rate answers start the
    search; batch sizes where it is not 'ok' are not searched)."""
    from batchscale.theory.nqm.search import OK

    results = []
    for i, batch in enumerate(tuned.batch_sizes):
        ok = tuned.status[i] == OK
        results.append(optimal_schedule_steps(
            spectrum, float(batch), target, pieces,
            constant_steps=int(tuned.steps[i]) if ok else None,
            constant_learning_rate=float(tuned.learning_rate[i]) if ok else None,
            precond_power=precond_power, lower_bound=int(tuned.steps_lower_bound[i]),
        ))
        if progress is not None:
            r = results[-1]
            progress(f"pwc:{pieces} batch size {int(batch)}: {r.steps} steps "
                     f"(constant rate {r.constant_steps})")
    return results
