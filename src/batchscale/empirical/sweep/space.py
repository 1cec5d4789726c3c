"""The search space: points, rate windows, Halton points, and choosing the best point over seeds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from batchscale.empirical.trials import TrialResult


@dataclass(frozen=True)
class Point:
    """One point of the search: a learning rate and a momentum (0 for plain SGD)."""

    learning_rate: float
    momentum: float = 0.0


def round_sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (stable, readable trial ids)."""
    return float(f"{x:.{digits}g}")


def grid_window(center: float, n: int, factor: float) -> list[float]:
    """``n`` rates ``factor`` apart, geometrically centred on ``center``."""
    return [round_sig(center * factor ** (k - (n - 1) / 2)) for k in range(n)]


def log_grid(low: float, high: float, n: int) -> list[float]:
    """``n`` log-uniformly spaced values from ``low`` to ``high`` inclusive."""
    if n == 1 or low == high:
        return [round_sig(math.sqrt(low * high))]
    return [round_sig(x) for x in np.geomspace(low, high, n)]


def halton_points(n: int, dims: int, seed: int) -> np.ndarray:
    """``n`` scrambled Halton points in [0, 1)^dims (deterministic in ``seed``)."""
    from scipy.stats import qmc

    return qmc.Halton(d=dims, scramble=True, seed=seed).random(n)


def quasi_random_points(
    lr_bounds: tuple[float, float], mom_bounds: tuple[float, float] | None, n: int, seed: int
) -> list[Point]:
    """``n`` points log-uniform in the rate box and, when given, in 1 - momentum (Shallue et al.)."""
    unit = halton_points(n, 1 if mom_bounds is None else 2, seed)
    points = []
    for row in unit:
        lr = _log_interp(lr_bounds, row[0])
        momentum = 0.0 if mom_bounds is None else 1.0 - _log_interp(mom_bounds, row[1])
        points.append(Point(round_sig(lr), round_sig(momentum)))
    return points


def _log_interp(bounds: tuple[float, float], u: float) -> float:
    low, high = bounds
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


@dataclass(frozen=True)
class Outcome:
    """A point's result over seeds: median steps (inf if not reached) and the trials behind it."""

    point: Point
    steps: float
    trials: tuple[TrialResult, ...]


def point_outcomes(points: Iterable[Point], results: Mapping[Point, list[TrialResult]]) -> list[Outcome]:
    """Median steps over seeds per point; a seed that missed the target counts as infinitely slow."""
    out = []
    for point in points:
        trials = results.get(point, [])
        steps = [steps_or_inf(t) for t in trials]
        median = float(np.median(steps)) if steps else math.inf
        out.append(Outcome(point, median, tuple(trials)))
    return out


def steps_or_inf(trial: TrialResult) -> float:
    """The trial's steps to target, or inf when it did not reach the target."""
    return float(trial.steps) if trial.status == "complete" and trial.steps is not None else math.inf


def best_outcome(outcomes: Sequence[Outcome]) -> Outcome | None:
    """The reachable outcome with the fewest steps (ties: the smaller learning rate), or None."""
    reachable = [o for o in outcomes if math.isfinite(o.steps)]
    if not reachable:
        return None
    return min(reachable, key=lambda o: (o.steps, o.point.learning_rate, o.point.momentum))


def edges_of(best: Point, tried: Sequence[Point], tune_momentum: bool) -> tuple[str, ...]:
    """Which edges of the tried set the best point sits on: ``lr-low``, ``lr-high``, ``momentum-low``, ..."""
    edges = []
    rates = [p.learning_rate for p in tried]
    if len(set(rates)) > 1 and best.learning_rate <= min(rates):
        edges.append("lr-low")
    if len(set(rates)) > 1 and best.learning_rate >= max(rates):
        edges.append("lr-high")
    if tune_momentum:
        gaps = [1 - p.momentum for p in tried]
        if len(set(gaps)) > 1 and 1 - best.momentum <= min(gaps):
            edges.append("momentum-high")
        if len(set(gaps)) > 1 and 1 - best.momentum >= max(gaps):
            edges.append("momentum-low")
    return tuple(edges)


def failure_edges(results: Mapping[Point, Sequence[TrialResult]]) -> tuple[str, ...]:
    """Where to extend when no point reached the target (see :meth:`BatchSearch.summary`)."""
    if not results:
        return ()
    by_rate = sorted(results, key=lambda p: p.learning_rate)
    edges = []
    if all(t.status == "diverged" for t in results[by_rate[0]]):
        edges.append("lr-low")
    if not any(t.status == "diverged" for t in results[by_rate[-1]]):
        edges.append("lr-high")
    return tuple(edges) if len(edges) == 1 else ()
