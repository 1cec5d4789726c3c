"""Sweeps: steps-to-target per batch size with a tuned learning rate, and learning-rate x batch grids.

Two experiments, each described by one frozen config:

- :class:`StepsSweepConfig` (Shallue et al. 2018): for every optimizer and batch size, search the
  learning rate (and optionally the momentum) and keep the fewest steps to the target. The search is a
  *chain* per optimizer, batch sizes ascending: the first batch size searches ``lr_range``; each later
  one a window of ``n_learning_rates`` rates ``lr_factor`` apart, centred on a linear-scaling guess from
  the previous batch size's optimum. When the best trial sits on the edge of what was tried (lowest or
  highest rate, or momentum), the window is extended past that edge and searched again, up to
  ``max_extensions`` times; a batch size still optimal on an edge is reported with ``at_edge``.
  Trials far behind the best of their stacked group are pruned, and every batch size after the first
  gets a step budget of ``budget_factor`` times the previous batch size's best steps.
- :class:`GridSweepConfig` (Masters & Luschi 2018): every (base learning rate, batch size) cell trained
  for a fixed number of epochs; the cell's test accuracy is the median of its last evaluations.

Execution (:func:`run_chains`): every chain yields *rounds* of trial configs; trials already in the
store are reused, the rest are grouped into chunks (one stacked model each) and handed to an executor;
the parent writes each result to the store as its chunk returns and feeds the chain. Chains of different
optimizers run side by side, one 1-thread worker each.
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from batchscale.empirical.executors import Executor
from batchscale.empirical.store import Store, record_from_result
from batchscale.empirical.trials import OPTIMIZERS, TrainConfig, TrialResult, canonical_options
from batchscale.errors import require
from batchscale.vocabulary import steps_per_epoch

SEARCHES = ("auto", "grid", "quasi-random")
STATUS_FOUND = "complete"
STATUS_UNREACHABLE = "unreachable"



@dataclass(frozen=True)
class Round:
    """Trials a chain needs before it can decide its next step.

    ``prune``: let the engine stop trials far behind the best of their group (when the sweep allows it).
    ``redo_pruned``: stored rows with status ``pruned`` do not count as done (retried without pruning).
    """

    configs: tuple[TrainConfig, ...]
    prune: bool = True
    redo_pruned: bool = False


Chain = Generator[Round, dict[str, TrialResult], list[dict[str, Any]]]


# ---------------------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class StepsSweepConfig:
    """A steps-to-target sweep: batch sizes x searched learning rates (x momenta) x seeds, per optimizer.

    Attributes:
        workload, workload_options, data_seed, device, eval_subset, loss_form, drop_last: passed to
            every :class:`TrainConfig`.
        batch_sizes: ascending batch sizes.
        optimizers: one search chain each (``sgd``, ``momentum``, ``nesterov``, ``adam``).
        momentum: the momentum of ``momentum``/``nesterov`` (and Adam's beta1) when not tuned.
        tune_momentum: also search 1 - momentum log-uniformly in ``one_minus_momentum_range``.
        search: ``grid`` (rates ``lr_factor`` apart), ``quasi-random`` (scrambled Halton points in
            log space) or ``auto`` (grid, or quasi-random when the momentum is tuned).
        n_learning_rates: trials per batch size and seed in one window (>= 2).
        lr_factor: ratio of neighbouring rates in a grid window, and the unit of window widths.
        lr_range: (low, high) rates searched at the first batch size; for ``momentum``/``nesterov`` they
            are multiplied by 1 - momentum (the same effective step lr / (1 - momentum); 0.1 when tuned).
        max_extensions: edge extensions per batch size; ``n_extend`` new points each.
        seeds: one trial per seed at every point; the point's steps are the median over seeds.
        target_metric, target: the run is complete when the test metric first is <= target.
        max_steps: the step budget of every trial (before the ``budget_factor`` cap).
        budget_factor: later batch sizes stop trials at ``budget_factor`` x the previous best steps
            (None: no cap).
        prune: stop trials far behind the best of their stacked group (``run_trials(prune=True)``).
        verify_pruned: once a batch size has a best trial with S steps, re-run every trial pruned before
            step S without pruning and with a budget of S steps, so the optimum cannot depend on pruning
            (costly at small batch sizes: the slow rates train for S steps; see docs/sweep.md).
    """

    workload: str = "mnist1d-mlp"
    workload_options: tuple[tuple[str, Any], ...] = (("n_samples", 20000),)
    batch_sizes: tuple[int, ...] = tuple(2**k for k in range(12))
    optimizers: tuple[str, ...] = ("sgd", "momentum")
    momentum: float = 0.9
    tune_momentum: bool = False
    one_minus_momentum_range: tuple[float, float] = (0.01, 0.5)
    search: str = "auto"
    n_learning_rates: int = 8
    lr_factor: float = 2.0
    lr_range: tuple[float, float] = (0.002, 0.25)
    max_extensions: int = 3
    n_extend: int = 3
    seeds: tuple[int, ...] = (0,)
    data_seed: int = 0
    target_metric: str = "error"
    target: float = 0.2
    max_steps: int = 200_000
    budget_factor: float | None = 2.0
    prune: bool = True
    verify_pruned: bool = False
    eval_subset: int | None = 800
    loss_form: str = "mean"
    drop_last: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "workload_options", canonical_options(self.workload_options))
        object.__setattr__(self, "batch_sizes", tuple(sorted({int(b) for b in self.batch_sizes})))

    def resolved_search(self) -> str:
        """``grid`` or ``quasi-random`` (``auto`` resolved)."""
        if self.search == "auto":
            return "quasi-random" if self.tune_momentum else "grid"
        return self.search

    def validate(self, n_train: int | None = None) -> StepsSweepConfig:
        """Raise :class:`InputError` on a bad value; ``n_train`` checks the batch sizes against the data."""
        _check_common(self.batch_sizes, self.seeds, n_train)
        for name in self.optimizers:
            _require_optimizer(name)
        require(len(self.optimizers) > 0, "no optimizers to sweep")
        searches = ", ".join(SEARCHES)
        require(self.search in SEARCHES, f"unknown search {self.search!r}; expected one of {searches}")
        require(
            not (self.tune_momentum and self.resolved_search() == "grid"),
            "--tune-momentum needs the quasi-random search (use --search quasi-random or auto)",
        )
        _check_range("learning-rate range", self.lr_range)
        if self.tune_momentum:
            _check_range("1 - momentum range", self.one_minus_momentum_range, upper=1.0)
        require(self.n_learning_rates >= 2, f"need at least 2 learning rates, got {self.n_learning_rates}")
        require(self.lr_factor > 1, f"the learning-rate factor must be > 1, got {self.lr_factor}")
        require(self.max_extensions >= 0, f"max extensions must be >= 0, got {self.max_extensions}")
        require(self.n_extend >= 1, f"extension size must be >= 1, got {self.n_extend}")
        require(self.max_steps >= 1, f"max steps must be >= 1, got {self.max_steps}")
        require(
            self.budget_factor is None or self.budget_factor >= 1,
            f"budget factor must be >= 1 or None, got {self.budget_factor}",
        )
        require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        require(math.isfinite(self.target), f"the target must be a finite number, got {self.target}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``workload_options`` as a dict."""
        d = asdict(self)
        d["workload_options"] = dict(self.workload_options)
        return d


@dataclass(frozen=True)
class GridSweepConfig:
    """A base-learning-rate x batch-size grid trained for a fixed number of epochs (Masters & Luschi).

    With ``loss_form="sum"`` (default) the rates are base learning rates eta~ = eta / m, so the update
    is ``w -= eta~ * sum_i g_i``; with ``"mean"`` they are plain learning rates.
    ``last_evals``: the cell's accuracy is the median of the test metric over this many last evaluations.
    """

    workload: str = "mnist1d-mlp"
    workload_options: tuple[tuple[str, Any], ...] = (("n_samples", 20000),)
    batch_sizes: tuple[int, ...] = tuple(2**k for k in range(0, 11, 2))
    learning_rates: tuple[float, ...] = tuple(2.0**k for k in range(-14, -3, 2))
    optimizer: str = "sgd"
    momentum: float = 0.0
    loss_form: str = "sum"
    epochs: float = 5.0
    seeds: tuple[int, ...] = (0,)
    data_seed: int = 0
    target_metric: str = "error"
    last_evals: int = 3
    eval_subset: int | None = None
    drop_last: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "workload_options", canonical_options(self.workload_options))
        object.__setattr__(self, "batch_sizes", tuple(sorted({int(b) for b in self.batch_sizes})))
        object.__setattr__(self, "learning_rates", tuple(sorted({float(x) for x in self.learning_rates})))

    def validate(self, n_train: int | None = None) -> GridSweepConfig:
        """Raise :class:`InputError` on a bad value."""
        _check_common(self.batch_sizes, self.seeds, n_train)
        _require_optimizer(self.optimizer)
        require(len(self.learning_rates) > 0, "empty learning-rate list")
        bad = [x for x in self.learning_rates if not (math.isfinite(x) and x > 0)]
        require(not bad, f"learning rates must be positive numbers, got {bad[0] if bad else ''}")
        require(self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        require(self.last_evals >= 1, f"last evaluations must be >= 1, got {self.last_evals}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``workload_options`` as a dict."""
        d = asdict(self)
        d["workload_options"] = dict(self.workload_options)
        return d


def _check_common(batch_sizes: Sequence[int], seeds: Sequence[int], n_train: int | None) -> None:
    require(len(batch_sizes) > 0, "no batch sizes to sweep")
    require(min(batch_sizes) >= 1, f"batch sizes must be >= 1, got {min(batch_sizes)}")
    require(len(seeds) > 0, "no seeds")
    if n_train is not None:
        require(
            max(batch_sizes) <= n_train,
            f"batch size {max(batch_sizes)} is larger than the training set ({n_train} examples)",
        )


def _require_optimizer(name: str) -> None:
    require(name in OPTIMIZERS, f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def _check_range(what: str, bounds: tuple[float, float], upper: float = math.inf) -> None:
    low, high = bounds
    require(
        math.isfinite(low) and math.isfinite(high) and 0 < low <= high < upper,
        f"empty or invalid {what} {low:g}..{high:g} (need 0 < low <= high"
        + (f" < {upper:g})" if math.isfinite(upper) else ")"),
    )


# ---------------------------------------------------------------------------------------------------
# Search points and windows


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


# ---------------------------------------------------------------------------------------------------
# The steps-to-target search, one chain per optimizer


def optimizer_momentum(config: StepsSweepConfig, optimizer: str) -> float:
    """The fixed momentum of ``optimizer`` in this sweep (0 for plain SGD, Adam's default beta1 as 0)."""
    if optimizer == "sgd":
        return 0.0
    return config.momentum


def trial_config(config: StepsSweepConfig, optimizer: str, batch_size: int, point: Point, seed: int,
                 max_steps: int) -> TrainConfig:
    """The :class:`TrainConfig` of one trial of the steps sweep."""
    return TrainConfig(
        workload=config.workload,
        workload_options=config.workload_options,
        batch_size=batch_size,
        learning_rate=point.learning_rate,
        optimizer=optimizer,
        momentum=point.momentum,
        loss_form=config.loss_form,
        seed=seed,
        data_seed=config.data_seed,
        max_steps=max_steps,
        target_metric=config.target_metric,
        target=config.target,
        eval_subset=config.eval_subset,
        drop_last=config.drop_last,
        device=config.device,
    )


@dataclass
class BatchSearch:
    """The state of the search at one batch size of one chain (mutable, private to the chain)."""

    config: StepsSweepConfig
    optimizer: str
    batch_size: int
    max_steps: int
    center: float
    first: bool
    tried: list[Point] = field(default_factory=list)
    results: dict[Point, dict[int, TrialResult]] = field(default_factory=dict)  # point -> seed -> result
    extensions: int = 0
    retries: int = 0
    verified: set[str] = field(default_factory=set)

    @property
    def tune_momentum(self) -> bool:
        return self.config.tune_momentum and self.optimizer != "sgd"

    def initial_points(self) -> list[Point]:
        """The first window: ``lr_range`` at the first batch size, else centred on ``center``."""
        c = self.config
        if self.first:
            low, high = c.lr_range
            if self.optimizer in ("momentum", "nesterov"):  # same effective step lr / (1 - momentum)
                scale = 1.0 - (c.momentum if not self.tune_momentum else 0.9)
                low, high = low * scale, high * scale
        else:
            half = c.lr_factor ** ((c.n_learning_rates - 1) / 2)
            low, high = self.center / half, self.center * half
        if c.resolved_search() == "grid":
            momentum = optimizer_momentum(c, self.optimizer)
            return [Point(lr, momentum) for lr in log_grid(low, high, c.n_learning_rates)]
        mom_bounds = c.one_minus_momentum_range if self.tune_momentum else None
        points = quasi_random_points((low, high), mom_bounds, c.n_learning_rates, seed=self.batch_size)
        if not self.tune_momentum:
            points = [Point(p.learning_rate, optimizer_momentum(c, self.optimizer)) for p in points]
        return points

    def extension_points(self, edges: Sequence[str]) -> list[Point]:
        """New points past the edges the best point sits on."""
        c = self.config
        rates = [p.learning_rate for p in self.tried]
        gaps = [1 - p.momentum for p in self.tried]
        lr_bounds = (min(rates), max(rates))
        if "lr-low" in edges:
            lr_bounds = (min(rates) / c.lr_factor**c.n_extend, min(rates) / c.lr_factor)
        elif "lr-high" in edges:
            lr_bounds = (max(rates) * c.lr_factor, max(rates) * c.lr_factor**c.n_extend)
        if c.resolved_search() == "grid":
            momentum = optimizer_momentum(c, self.optimizer)
            return [Point(lr, momentum) for lr in log_grid(*lr_bounds, c.n_extend)]
        mom_bounds = None
        if self.tune_momentum:
            mom_bounds = (min(gaps), max(gaps))
            if "momentum-high" in edges:
                mom_bounds = (max(min(gaps) / 4, 1e-4), min(gaps))
            elif "momentum-low" in edges:
                mom_bounds = (max(gaps), min(4 * max(gaps), 0.99))
        seed = 1000 * (self.extensions + 1) + self.batch_size
        points = quasi_random_points(lr_bounds, mom_bounds, c.n_extend, seed=seed)
        if not self.tune_momentum:
            points = [Point(p.learning_rate, optimizer_momentum(c, self.optimizer)) for p in points]
        return points

    def round_for(self, points: Sequence[Point]) -> Round:
        """Trial configs for ``points`` x seeds (points already tried are left out)."""
        new = [p for p in dict.fromkeys(points) if p not in self.results]
        self.tried.extend(new)
        for p in new:
            self.results[p] = {}
        configs = [
            trial_config(self.config, self.optimizer, self.batch_size, p, seed, self.max_steps)
            for p in new
            for seed in self.config.seeds
        ]
        return Round(tuple(configs))

    def retry_round(self) -> Round:
        """The pruned trials again. When nothing reached the target, the trials they were pruned against
        failed later (typically a high rate that learned fast, then diverged), so the pruning was wrong.
        The first retry keeps pruning (the failed leaders are no longer in the stack); a second one, for
        pruning by early noise, turns it off."""
        self.retries += 1
        return Round(tuple(t.config for t in self.pruned()), prune=self.retries == 1, redo_pruned=True)

    def pruned(self) -> list[TrialResult]:
        """The current results that are ``pruned``."""
        return [t for ts in self.results.values() for t in ts.values() if t.status == "pruned"]

    def verify_round(self, best_steps: int) -> Round:
        """Pruned trials again, without pruning, with a budget of the best steps found.

        Pruning compares early, noisy metrics, so it can stop the trial that would have been fastest.
        Re-run with ``max_steps`` = the best steps so far, a pruned trial either beats (or ties) the best
        or stops at the budget, so the batch size's optimum no longer depends on pruning.
        """
        configs = [  # a trial pruned at or after step S has already lost: nothing to verify
            replace(t.config, max_steps=max(1, best_steps))
            for t in self.pruned()
            if t.config.trial_id() not in self.verified and (t.stop_step is None or t.stop_step < best_steps)
        ]
        self.verified.update(t.config.trial_id() for t in self.pruned())
        return Round(tuple(configs), prune=False)

    def absorb(self, round_: Round, results: Mapping[str, TrialResult]) -> None:
        """File a finished round's results under their points and seeds (a re-run replaces the old)."""
        for trial in round_.configs:
            point = Point(trial.learning_rate, trial.momentum)
            self.results[point][trial.seed] = results[trial.trial_id()]

    def summary(self) -> tuple[Outcome | None, tuple[str, ...], int]:
        """(best outcome, edges it sits on, number of trials).

        With no point reaching the target, the edges say where to look: ``lr-high`` when even the
        highest rate tried did not diverge (too slow), ``lr-low`` when even the lowest one diverged.
        """
        best = best_outcome(point_outcomes(self.tried, self._result_lists()))
        if best is not None:
            edges = edges_of(best.point, self.tried, self.tune_momentum)
        else:
            edges = failure_edges(self._result_lists())
        return best, edges, sum(len(v) for v in self.results.values())

    def _result_lists(self) -> dict[Point, list[TrialResult]]:
        return {p: list(trials.values()) for p, trials in self.results.items()}

    def count(self, status: str) -> int:
        """Trials with ``status`` at this batch size."""
        return sum(1 for trials in self.results.values() for t in trials.values() if t.status == status)


def steps_chain(config: StepsSweepConfig, optimizer: str) -> Chain:
    """The search over all batch sizes for one optimizer; yields rounds, returns one row per batch size."""
    rows: list[dict[str, Any]] = []
    previous: tuple[int, float, float] | None = None  # (batch size, best lr, best steps)
    for batch_size in config.batch_sizes:
        search = _new_batch_search(config, optimizer, batch_size, previous)
        round_ = search.round_for(search.initial_points())
        while True:
            results = yield round_
            search.absorb(round_, results)
            best, edges, _ = search.summary()
            if best is None and search.retries < 2 and search.count("pruned"):
                round_ = search.retry_round()
                continue
            if (config.verify_pruned and best is not None
                    and any(t.config.trial_id() not in search.verified for t in search.pruned())):
                round_ = search.verify_round(int(math.ceil(best.steps)))
                if round_.configs:
                    continue
            if not edges or search.extensions >= config.max_extensions:
                break
            search.extensions += 1
            round_ = search.round_for(search.extension_points(edges))
            if not round_.configs:
                break
        rows.append(_steps_row(search))
        if best is not None:
            previous = (batch_size, best.point.learning_rate, best.steps)
        elif previous is not None:
            previous = (batch_size, previous[1] * batch_size / previous[0], math.inf)
    return rows


def _new_batch_search(
    config: StepsSweepConfig, optimizer: str, batch_size: int, previous: tuple[int, float, float] | None
) -> BatchSearch:
    if previous is None:
        return BatchSearch(config, optimizer, batch_size, config.max_steps, center=0.0, first=True)
    prev_batch, prev_lr, prev_steps = previous
    max_steps = config.max_steps
    if config.budget_factor is not None and math.isfinite(prev_steps):
        max_steps = min(max_steps, math.ceil(config.budget_factor * prev_steps))
    center = prev_lr * batch_size / prev_batch  # linear-scaling guess
    return BatchSearch(config, optimizer, batch_size, max_steps, center=center, first=False)


def _steps_row(search: BatchSearch) -> dict[str, Any]:
    best, edges, n_trials = search.summary()
    row: dict[str, Any] = {
        "optimizer": search.optimizer,
        "batch_size": search.batch_size,
        "steps": None if best is None else int(best.steps) if best.steps.is_integer() else best.steps,
        "examples": None if best is None else best.steps * search.batch_size,
        "learning_rate": None if best is None else best.point.learning_rate,
        "momentum": None if best is None else best.point.momentum,
        "status": STATUS_FOUND if best is not None else STATUS_UNREACHABLE,
        "n_trials": n_trials,
        "n_reached": search.count("complete"),
        "n_diverged": search.count("diverged"),
        "n_pruned": search.count("pruned"),
        "n_verified": len(search.verified),
        "at_edge": bool(edges),
        "edge": ",".join(edges),
        "lr_min": min(p.learning_rate for p in search.tried),
        "lr_max": max(p.learning_rate for p in search.tried),
        "extensions": search.extensions,
        "max_steps": search.max_steps,
        "trial_id": None if best is None else best.trials[0].config.trial_id(),
        "config": None if best is None else best.trials[0].config.to_dict(),
    }
    return row


# ---------------------------------------------------------------------------------------------------
# The grid


def grid_trial_configs(config: GridSweepConfig, n_train: int) -> list[TrainConfig]:
    """Every (batch size, rate, seed) cell's :class:`TrainConfig` (fixed budget, no target)."""
    out = []
    for batch_size in config.batch_sizes:
        max_steps = max(1, math.ceil(config.epochs * steps_per_epoch(n_train, batch_size, config.drop_last)))
        for lr in config.learning_rates:
            for seed in config.seeds:
                out.append(
                    TrainConfig(
                        workload=config.workload,
                        workload_options=config.workload_options,
                        batch_size=batch_size,
                        learning_rate=lr,
                        optimizer=config.optimizer,
                        momentum=config.momentum,
                        loss_form=config.loss_form,
                        seed=seed,
                        data_seed=config.data_seed,
                        max_steps=max_steps,
                        target_metric=config.target_metric,
                        target=None,
                        eval_subset=config.eval_subset,
                        drop_last=config.drop_last,
                        device=config.device,
                    )
                )
    return out


def last_metric(result: TrialResult, last_evals: int) -> float | None:
    """Median of the test metric over the last ``last_evals`` evaluations (None if diverged/none)."""
    if result.status == "diverged":
        return None
    values = [m for _, m, _ in result.history if m is not None]
    if not values:
        return result.final_metric
    return float(np.median(values[-last_evals:]))


def grid_chain(config: GridSweepConfig, n_train: int) -> Chain:
    """One round with every cell; returns one row per (batch size, rate) cell."""
    round_ = Round(tuple(grid_trial_configs(config, n_train)), prune=False)
    results = yield round_
    cells: dict[tuple[int, float], list[TrialResult]] = {}
    for trial in round_.configs:
        cells.setdefault((trial.batch_size, trial.learning_rate), []).append(results[trial.trial_id()])
    return [_grid_row(config, key, trials) for key, trials in cells.items()]


def _grid_row(config: GridSweepConfig, key: tuple[int, float], trials: list[TrialResult]) -> dict[str, Any]:
    batch_size, lr = key
    metrics = [last_metric(t, config.last_evals) for t in trials]
    finite = [m for m in metrics if m is not None]
    n_diverged = sum(1 for t in trials if t.status == "diverged")
    metric = float(np.median(finite)) if finite else None
    accuracy = None if metric is None or config.target_metric != "error" else 1.0 - metric
    return {
        "batch_size": batch_size,
        "base_learning_rate" if config.loss_form == "sum" else "learning_rate": lr,
        "effective_learning_rate": lr * batch_size if config.loss_form == "sum" else lr,
        "test_accuracy": accuracy,
        "test_metric": metric,
        "diverged": n_diverged > len(trials) / 2,
        "n_diverged": n_diverged,
        "n_trials": len(trials),
        "steps": trials[0].config.max_steps,
        "status": "diverged" if n_diverged > len(trials) / 2 else "complete",
        "config": trials[0].config.to_dict(),
    }


# ---------------------------------------------------------------------------------------------------
# Running chains: store look-ups, chunks, executor


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a trial's numbers."""
    import torch

    from batchscale import __version__

    return {
        "batchscale": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def train_chunk(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Worker task: train one chunk of trials (one stacked group) and return JSON-able results.

    ``payload``: ``{"configs": [TrainConfig dicts], "threads": int, "prune": bool, "token": str}``.
    In a local pool worker each trial's result is also streamed to the parent the moment it ends
    (``{"token", "trial_id", "result", "started_at", "finished_at", "versions"}``), so the parent can
    store it before the whole chunk is done.
    """
    from batchscale.empirical.engine import run_trials
    from batchscale.empirical.executors import result_stream, set_threads

    set_threads(int(payload.get("threads", 1)))
    configs = [TrainConfig.from_dict(d) for d in payload["configs"]]
    started, versions, stream = time.time(), package_versions(), result_stream()

    def on_result(result: TrialResult) -> None:
        if stream is not None and payload.get("token") is not None:
            stream.put({"token": payload["token"], "trial_id": result.config.trial_id(),
                        "result": result.to_dict(), "started_at": started, "finished_at": time.time(),
                        "versions": versions})

    results = run_trials(configs, prune=bool(payload.get("prune", False)), on_result=on_result)
    return {
        "results": [r.to_dict() for r in results],
        "started_at": started,
        "finished_at": time.time(),
        "versions": versions,
        "pid": os.getpid(),
    }


def chunks_of(configs: Sequence[TrainConfig]) -> list[list[TrainConfig]]:
    """Split trials into stackable chunks: same :meth:`TrainConfig.group_key` and seed."""
    groups: dict[tuple, list[TrainConfig]] = {}
    for trial in configs:
        groups.setdefault((trial.group_key(), trial.seed), []).append(trial)
    return list(groups.values())


@dataclass
class _ChainState:
    name: str
    chain: Chain
    round_: Round = field(default_factory=lambda: Round(()))
    results: dict[str, TrialResult] = field(default_factory=dict)
    waiting: int = 0
    rows: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class RunStats:
    """What a :func:`run_chains` call did: trials trained, trials reused from the store, wall time."""

    trained: int
    reused: int
    wall_time: float
    session: str


def run_chains(
    chains: Mapping[str, Chain],
    *,
    store: Store,
    executor: Executor,
    threads: int = 1,
    prune: bool = False,
    progress: Callable[[str], None] | None = None,
    session: str | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], RunStats]:
    """Drive every chain to its end; return ``({name: rows}, stats)``.

    Each round's trials are looked up in ``store`` first; the missing ones go to ``executor`` in chunks
    (one stacked group each), and every result is written to the store (one transaction per trial) as
    soon as the parent has it: when the trial ends (streamed by the local pool) or its chunk returns.
    """
    runner = _Runner(store, executor, threads, prune, progress, session or uuid.uuid4().hex[:12])
    states = [_ChainState(name, chain) for name, chain in chains.items()]
    for state in states:
        runner.advance(state)
    while runner.queue or runner.running:
        runner.submit_ready()
        runner.collect()
    return {s.name: s.rows or [] for s in states}, runner.stats()


@dataclass
class _Job:
    """One chunk of one chain's round on its way through the executor."""

    state: _ChainState
    chunk: list[TrainConfig]
    prune: bool
    token: str = ""
    stored: set[str] = field(default_factory=set)  # trial ids already stored from the stream


class _Runner:
    """The parent's loop: advances chains, keeps the executor busy, stores every result it receives."""

    def __init__(self, store: Store, executor: Executor, threads: int, prune: bool,
                 progress: Callable[[str], None] | None, session: str):
        self.store, self.executor, self.threads, self.prune = store, executor, threads, prune
        self.say = progress or (lambda message: None)
        self.session = session
        self.queue: list[_Job] = []
        self.running: dict[Any, _Job] = {}
        self.trained = self.reused = 0
        self.started = time.monotonic()
        self._serial = itertools.count()

    def advance(self, state: _ChainState, results: dict[str, TrialResult] | None = None) -> None:
        """Feed ``results`` to the chain and queue the missing trials of its next round(s)."""
        while True:
            try:
                state.round_ = next(state.chain) if results is None else state.chain.send(results)
            except StopIteration as stop:
                state.rows = stop.value
                return
            configs = state.round_.configs
            stored = self.store.get_many(t.trial_id() for t in configs)
            if state.round_.redo_pruned:
                stored = {k: r for k, r in stored.items() if r.status != "pruned"}
            state.results = {k: TrialResult.from_dict(r.result_dict()) for k, r in stored.items()}
            self.reused += len(state.results)
            missing = [t for t in configs if t.trial_id() not in state.results]
            if missing:
                chunks = chunks_of(missing)
                state.waiting = len(chunks)
                self.queue.extend(_Job(state, chunk, self.prune and state.round_.prune) for chunk in chunks)
                return
            results = state.results

    def submit_ready(self) -> None:
        """Hand queued chunks to the executor up to its capacity."""
        free = max(0, self.executor.capacity - len(self.running))
        jobs, self.queue = self.queue[:free], self.queue[free:]
        for job in jobs:
            job.token = f"{self.session}-{next(self._serial)}"
        payloads = [_payload(job.chunk, job.prune, self.threads, job.token) for job in jobs]
        self.running.update(zip(self.executor.submit_many(train_chunk, payloads), jobs, strict=True))

    def collect(self) -> None:
        """Store streamed trials, then finish the chunks that ended (waiting up to a second for one)."""
        done = self.executor.wait(list(self.running), timeout=1.0)
        self.store_streamed(self.executor.drain())
        for handle in done:
            self.finish(self.running.pop(handle), self.executor.result(handle))

    def store_streamed(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Store trials streamed by running chunks (messages of finished chunks are left to the chunk)."""
        jobs = {job.token: job for job in self.running.values()}
        for message in messages:
            job = jobs.get(message["token"])
            if job is None or message["trial_id"] in job.stored:
                continue
            self.store.put(record_from_result(
                message["trial_id"], message["result"], started_at=message["started_at"],
                finished_at=message["finished_at"], versions=message["versions"], session=self.session,
            ))
            job.stored.add(message["trial_id"])

    def finish(self, job: _Job, out: Mapping[str, Any]) -> None:
        """Store the chunk's remaining results; advance its chain when its round is complete."""
        _store_chunk(self.store, job.chunk, out, self.session, job.state.results, skip=job.stored)
        self.trained += len(job.chunk)
        self.say(_chunk_message(job.state.name, job.chunk, out, time.monotonic() - self.started))
        job.state.waiting -= 1
        if job.state.waiting == 0:
            self.advance(job.state, job.state.results)

    def stats(self) -> RunStats:
        return RunStats(self.trained, self.reused, time.monotonic() - self.started, self.session)


def _payload(chunk: Sequence[TrainConfig], prune: bool, threads: int, token: str) -> dict[str, Any]:
    """The picklable task of one chunk (see :func:`train_chunk`)."""
    return {"configs": [t.to_dict() for t in chunk], "threads": threads, "prune": prune, "token": token}


def _store_chunk(store: Store, chunk: list[TrainConfig], out: Mapping[str, Any], session: str,
                 into: dict[str, TrialResult], skip: set[str] = frozenset()) -> None:
    for trial, result in zip(chunk, out["results"], strict=True):
        trial_id = trial.trial_id()
        into[trial_id] = TrialResult.from_dict(result)
        if trial_id in skip:
            continue
        record = record_from_result(
            trial_id,
            result,
            started_at=out.get("started_at"),
            finished_at=out.get("finished_at"),
            versions=out.get("versions"),
            session=session,
        )
        store.put(record)


def _chunk_message(name: str, chunk: list[TrainConfig], out: Mapping[str, Any], elapsed: float) -> str:
    results = out["results"]
    reached = [r["steps"] for r in results if r["status"] == "complete" and r["steps"] is not None]
    best = f"best {min(reached)} steps" if reached else "target not reached"
    if chunk[0].target is None:
        finals = [r["final_metric"] for r in results if r["final_metric"] is not None]
        best = f"best final {chunk[0].target_metric} {min(finals):.4g}" if finals else "all diverged"
    rates = [t.learning_rate for t in chunk]
    return (
        f"[{elapsed:7.1f}s] {name}: B={chunk[0].batch_size} {len(chunk)} trials "
        f"lr {min(rates):.3g}..{max(rates):.3g}: {best}"
    )


def steps_sweep_chains(config: StepsSweepConfig) -> dict[str, Chain]:
    """One chain per optimizer."""
    return {optimizer: steps_chain(config, optimizer) for optimizer in config.optimizers}


def run_steps_sweep(
    config: StepsSweepConfig,
    *,
    store: Store,
    executor: Executor,
    n_train: int | None = None,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], RunStats]:
    """Run (or resume) a steps-to-target sweep; rows per optimizer and batch size, ascending."""
    config.validate(n_train)
    rows, stats = run_chains(
        steps_sweep_chains(config), store=store, executor=executor, threads=threads, prune=config.prune,
        progress=progress,
    )
    return [row for name in config.optimizers for row in rows[name]], stats


def run_grid_sweep(
    config: GridSweepConfig,
    *,
    store: Store,
    executor: Executor,
    n_train: int,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], RunStats]:
    """Run (or resume) a learning-rate x batch grid; one row per cell, batch size then rate ascending."""
    config.validate(n_train)
    rows, stats = run_chains(
        {"grid": grid_chain(config, n_train)}, store=store, executor=executor, threads=threads,
        progress=progress,
    )
    key = "base_learning_rate" if config.loss_form == "sum" else "learning_rate"
    return sorted(rows["grid"], key=lambda r: (r["batch_size"], r[key])), stats


def with_sweep_config(rows: Sequence[Mapping[str, Any]], sweep: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows with the sweep's resolved config attached under ``sweep``."""
    return [{**row, "sweep": dict(sweep)} for row in rows]


__all__ = [
    "GridSweepConfig",
    "Point",
    "RunStats",
    "StepsSweepConfig",
    "run_chains",
    "run_grid_sweep",
    "run_steps_sweep",
    "steps_chain",
    "grid_chain",
    "train_chunk",
]
