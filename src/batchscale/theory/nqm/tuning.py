"""Tuned learning rate (and momentum) per batch size: the fewest steps to target over a grid (exactly) or by
golden-section refinement around the best grid point (:func:`tune_steps`, Zhang et al. Sec. 3).

One algorithm: the grid race, its screening of provably slower settings (:func:`_screen_pairs`) and the
golden-section refinement seeded by neighbouring settings' certified steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from batchscale.errors import require
from batchscale.theory.nqm.bound import _information_start, steps_lower_bound
from batchscale.theory.nqm.model import _configs, _Model, _require_finite_all, _weighted, build_model
from batchscale.theory.nqm.search import (
    COMPACT_FRACTION,
    DEFAULT_MAX_STEPS,
    DIVERGED,
    OK,
    UNREACHABLE,
    _widen,
    steps_to_target,
)
from batchscale.theory.spectra import Spectrum

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


def decade_grid(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` values 10^u, u evenly spaced from ``lo`` to ``hi`` (Zhang et al. tune on such grids).

    The bounds are decades (exponents of 10), unlike ``empirical.sweep.log_grid``, whose bounds are the
    values themselves and whose values are rounded: hence the different name.
    """
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
    on_run: Callable[[], None] | None = None,
) -> TunedCurve:
    """Fewest steps to ``target`` per batch size over the learning rate (and momentum), Zhang et al. Sec. 3.

    ``search='grid'``: the best of every (learning rate, momentum) pair of ``lr_grid`` x ``momentum_grid``
    (ties: the earlier crossing within the last step). ``search='continuous'``: start from the best point
    of ``lr_grid`` (for momentum, of a coarse log-grid of ``COARSE_LR_POINTS`` x ``COARSE_MOMENTUM_POINTS``
    over the same bounds), then golden-section search on log eta within one grid spacing (inside the grid
    bounds); for momentum alternate ``MOMENTUM_ROUNDS`` times with log(1 - beta) at fixed effective
    learning rate eta/(1 - beta) (inside the momentum bounds; eta may then leave the lr bounds). The
    objective is the interpolated crossing time (:class:`StepsResult`); the best point seen is kept, so
    without momentum the result is never worse than grid search. ``on_run()`` (progress) is called after
    each vectorised evaluation, of which there are at most :func:`planned_runs`.
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
        result = steps_to_target(spectrum, b, lr, target, momentum=beta, **hints, **fixed)
        if on_run is not None:
            on_run()
        return result

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


def planned_runs(search: str, momentum: bool) -> int:
    """Vectorised evaluations :func:`tune_steps` makes at most: the grid, the golden-section steps of each
    axis of each round (``search='continuous'``), the final evaluation."""
    axes = (2 * MOMENTUM_ROUNDS if momentum else 1) if search == "continuous" else 0
    return 2 + axes * (1 + GOLDEN_ITERATIONS)


# Peak bytes of tune_steps per (searched setting, bin) (screening every setting at once) and per bin (the
# race's rounds; momentum's continuous refinement, which probes many steps per batch size), measured with
# tracemalloc at 20-3000 bins and 20-2000 settings and rounded up (tests/test_theory_nqm.py checks that the
# estimate bounds the measured peak).
BYTES_PER_SETTING_BIN = {
    "sgd": 80,
    "precond": 96,
    "ema": 300,
    "momentum-grid": 400,
    "momentum-continuous": 400,
}
BYTES_PER_BIN = {
    "sgd": 2000,
    "precond": 2000,
    "ema": 4000,
    "momentum-grid": 8000,
    "momentum-continuous": 100_000,
}
BASE_BYTES = 2_000_000
BYTES_PER_POWER_LAW_COORDINATE = 64  # power_law_spectrum + geometric_bins: a few float64 arrays of length d
MIN_SETTINGS = 16  # the exact search evaluates up to SCAN_WIDTH points of one setting at once


def searched_settings(lr_points: int, momentum_points: int | None, search: str) -> int:
    """Settings :func:`tune_steps` screens at once: the grid, or the coarse grid for continuous momentum."""
    if momentum_points is None:
        return lr_points
    if search == "continuous":
        return min(lr_points, COARSE_LR_POINTS) * min(momentum_points, COARSE_MOMENTUM_POINTS)
    return lr_points * momentum_points


def memory_estimate(
    bins: int, settings: int, optimizer: str, search: str = "continuous", dim: int = 0
) -> float:
    r"""Peak bytes of :func:`tune_steps` (and of building a power-law spectrum of ``dim`` coordinates).

    :math:`(\max(P, 16)\,b + e)\,K + 64\,d + 2\,\mathrm{MB}`: P is ``settings``
    (:func:`searched_settings`), K is ``bins``, b and e the measured bytes per (setting, bin) and per bin of
    the optimizer (``BYTES_PER_SETTING_BIN``, ``BYTES_PER_BIN``), d is ``dim`` (0 for a spectrum read from a
    file). An upper estimate: 1.2-5x the measured peak.
    """
    key = f"momentum-{search}" if optimizer == "momentum" else optimizer
    require(key in BYTES_PER_SETTING_BIN, f"unknown optimizer {optimizer!r}")
    per_bin = max(settings, MIN_SETTINGS) * BYTES_PER_SETTING_BIN[key] + BYTES_PER_BIN[key]
    return float(per_bin) * bins + float(BYTES_PER_POWER_LAW_COORDINATE) * dim + BASE_BYTES


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
    return decade_grid(math.log10(grid[0]), math.log10(grid[-1]), points) if grid[0] > 0 else grid


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
