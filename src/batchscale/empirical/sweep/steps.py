"""The steps-to-target search: one chain per optimizer, a :class:`BatchSearch` per batch size."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from batchscale.empirical.executors import Executor, ExecutorConfig
from batchscale.empirical.store import Store
from batchscale.empirical.sweep.configs import STATUS_FOUND, STATUS_UNREACHABLE, StepsSweepConfig
from batchscale.empirical.sweep.rounds import Chain, Round
from batchscale.empirical.sweep.runner import RunStats, opened, run_chains
from batchscale.empirical.sweep.space import (
    Outcome,
    Point,
    best_outcome,
    edges_of,
    failure_edges,
    log_grid,
    point_outcomes,
    quasi_random_points,
    round_sig,
    steps_or_inf,
)
from batchscale.empirical.sweep.target import resolve_target
from batchscale.empirical.trials import TrainConfig, TrialResult
from batchscale.errors import InputError

VERIFY_NOTE = "verify re-run"  # in the notes of a trial's result re-run by :meth:`BatchSearch.verify_round`


def optimizer_momentum(config: StepsSweepConfig, optimizer: str) -> float:
    """The fixed momentum of ``optimizer`` in this sweep (0 for plain SGD, Adam's default beta1 as 0)."""
    if optimizer == "sgd":
        return 0.0
    return config.momentum


def trial_config(config: StepsSweepConfig, optimizer: str, batch_size: int, point: Point, seed: int,
                 max_steps: int) -> TrainConfig:
    """The :class:`TrainConfig` of one trial of the steps sweep (its schedule: see
    :meth:`StepsSweepConfig.schedule_of`)."""
    schedule, warmup_steps = config.schedule_of(max_steps)
    return TrainConfig(
        workload=config.workload,
        workload_options=config.workload_options,
        batch_size=batch_size,
        learning_rate=point.learning_rate,
        optimizer=optimizer,
        momentum=point.momentum,
        loss_form=config.loss_form,
        schedule=schedule,
        warmup_steps=warmup_steps,
        weight_decay=config.weight_decay,
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
    completed: set[Point] = field(default_factory=set)  # best points whose stopped seeds were completed
    refine_levels: int = 0  # refinement levels run (see :func:`refine`)
    refine_change: float | None = None  # relative change of the best steps at the last level
    refine_factor: float | None = None  # rate factor of the last level

    @property
    def tune_momentum(self) -> bool:
        return self.config.tune_momentum and self.optimizer != "sgd"

    def initial_points(self) -> list[Point]:
        """The first window: ``lr_range`` at the first batch size, else centred on ``center``
        (:meth:`StepsSweepConfig.window_size` rates)."""
        c = self.config
        n = c.window_size(self.first)  # later windows: ``later_learning_rates`` when set
        if self.first:
            low, high = c.lr_range
            if self.optimizer in ("momentum", "nesterov"):  # same effective step lr / (1 - momentum)
                scale = 1.0 - (c.momentum if not self.tune_momentum else 0.9)
                low, high = low * scale, high * scale
        else:
            half = c.lr_factor ** ((n - 1) / 2)
            low, high = self.center / half, self.center * half
        if c.resolved_search() == "grid":
            momentum = optimizer_momentum(c, self.optimizer)
            return [Point(lr, momentum) for lr in log_grid(low, high, n)]
        mom_bounds = c.one_minus_momentum_range if self.tune_momentum else None
        points = quasi_random_points((low, high), mom_bounds, n, seed=self.batch_size)
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

    def round_for(self, points: Sequence[Point], phase: str = "window") -> Round:
        """Trial configs for ``points`` x seeds (points already tried are left out).

        How its trials stop early when the sweep prunes: with ``verify_pruned`` (the default) only where
        they can no longer matter (exact): once the batch size has a best point each trial gets its seed's
        :meth:`limits` as a step bound, and inside the round the engine applies the same rule to the
        round's own results (``median_seeds``), so nothing needs verifying; without ``verify_pruned``,
        the engine's pruning rule (``prune``; faster, may stop the eventual winner) and the bounds."""
        new = [p for p in dict.fromkeys(points) if p not in self.results]
        limits = self.limits()
        self.tried.extend(new)
        for p in new:
            self.results[p] = {}
        configs = [
            trial_config(self.config, self.optimizer, self.batch_size, p, seed, self.max_steps)
            for p in new
            for seed in self.config.seeds
        ]
        exact = self.config.prune and self.config.verify_pruned
        return Round(tuple(configs), prune=not exact, bounds=self.bounds_of(configs, limits), phase=phase,
                     median_seeds=len(self.config.seeds) if exact else None)

    def limits(self) -> dict[int, float] | None:
        """Per seed, the steps a trial of that seed must not exceed to change the answer (None before the
        batch size has a best point).

        limit_s = max(k S, S_s): S the best point's median steps, S_s seed s's own best steps (inf when it
        reached nothing), k = 1 for an odd number of seeds and 2 for an even one. A point whose median is
        at most S has its middle seed(s) at or below k S (even n: (b + c) / 2 <= S with b >= 0 gives
        c <= 2 S), and a seed's own best is at most S_s; so replacing any trial's steps above its limit by
        "did not reach" changes neither the batch size's winner nor any seed's own best rate. The limits
        only fall as results come in.
        """
        best, _, _ = self.summary()
        if best is None:
            return None
        scale = 1 if len(self.config.seeds) % 2 else 2
        own = self.seed_best_steps()
        return {seed: max(scale * best.steps, own[seed]) for seed in self.config.seeds}

    def bounds_of(self, configs: Sequence[TrainConfig], limits: Mapping[int, float] | None) -> dict[str, int]:
        """Step bounds of ``configs`` (trial id -> ceil(limit of its seed)); none without pruning."""
        if limits is None or not self.config.prune:
            return {}
        return {t.trial_id(): math.ceil(limits[t.seed]) for t in configs if math.isfinite(limits[t.seed])}

    def retry_round(self) -> Round:
        """The pruned trials again. When nothing reached the target, the trials they were pruned against
        failed later (typically a high rate that learned fast, then diverged), so the pruning was wrong.
        The first retry keeps pruning (the failed leaders are no longer in the stack); a second one, for
        pruning by early noise, turns it off."""
        self.retries += 1
        return Round(tuple(t.config for t in self.pruned()), prune=self.retries == 1, redo_pruned=True,
                     phase="retry")

    def pruned(self) -> list[TrialResult]:
        """The current results that are ``pruned``."""
        return [t for ts in self.results.values() for t in ts.values() if t.status == "pruned"]

    def verify_round(self) -> Round:
        """The pruned trials that could still win, trained again without the pruning rule.

        Pruning compares early, noisy metrics, so it can stop the trial that would have been fastest.
        A trial of seed s can still matter when it was pruned before its seed's limit (:meth:`limits`:
        max(k S, S_s)); later, it has already lost. The limits only fall as results come in, so a trial
        passed over once never needs a re-run later. It is re-run as it was (same trial, same budget)
        without the pruning rule, bounded by its limit (it stops once it cannot matter), so whenever its
        result can matter it is the one an unpruned sweep gets: neither the batch size's optimum nor any
        seed's own best rate depends on pruning. Its result's notes say ``verify re-run`` (counted as the
        row's ``n_verified``). (Same trial ids: a resumed sweep finds the re-runs and asks for nothing
        new.)
        """
        limits = self.limits() or {}
        configs = [
            t.config
            for t in self.pruned()
            if t.config.trial_id() not in self.verified
            and (t.stop_step is None or t.stop_step < limits.get(t.config.seed, math.inf))
        ]
        self.verified.update(t.config.trial_id() for t in self.pruned())
        return Round(tuple(configs), prune=False, redo_pruned=True, bounds=self.bounds_of(configs, limits),
                     phase="verify", notes=(VERIFY_NOTE,))

    def complete_round(self, best: Outcome) -> Round:
        """The best point's pruned seeds trained again without pruning, so that its per-seed steps are the
        ones an unpruned sweep reports. (The median cannot move: such a seed is slower than it.)"""
        stopped = [t.config for t in self.results[best.point].values() if t.status == "pruned"]
        return Round(tuple(stopped), prune=False, redo_pruned=True, phase="complete")

    def seed_best_steps(self) -> dict[int, float]:
        """Each seed's fewest steps to the target over the points tried (inf if it reached nothing)."""
        best = {seed: math.inf for seed in self.config.seeds}
        for trials in self.results.values():
            for seed, trial in trials.items():
                best[seed] = min(best.get(seed, math.inf), steps_or_inf(trial))
        return best

    def seed_winners(self) -> dict[int, tuple[Point, float] | None]:
        """Each seed's own best point and its steps (ties: the smaller rate); None if it reached nothing."""
        out: dict[int, tuple[Point, float] | None] = {}
        for seed in self.config.seeds:
            scored = [(steps_or_inf(trials[seed]), p.learning_rate, p.momentum, p)
                      for p, trials in self.results.items() if seed in trials]
            reached = [s for s in scored if math.isfinite(s[0])]
            out[seed] = None if not reached else (min(reached)[3], min(reached)[0])
        return out

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

    def count_noted(self, note: str) -> int:
        """Trials at this batch size whose result carries ``note``."""
        return sum(1 for trials in self.results.values() for t in trials.values() if note in t.notes)

    def count(self, status: str) -> int:
        """Trials with ``status`` at this batch size."""
        return sum(1 for trials in self.results.values() for t in trials.values() if t.status == status)


def steps_chain(config: StepsSweepConfig, optimizer: str) -> Chain:
    """The search over all batch sizes for one optimizer; yields rounds, returns one row per batch size."""
    rows: list[dict[str, Any]] = []
    previous: tuple[int, float, float] | None = None  # (batch size, best lr, best steps)
    for batch_size in config.batch_sizes:
        search = _new_batch_search(config, optimizer, batch_size, previous)
        best, edges = yield from settle(search, search.round_for(search.initial_points()))
        while edges and search.extensions < config.max_extensions:
            search.extensions += 1
            round_ = search.round_for(search.extension_points(edges), phase="extension")
            if not round_.configs:
                break
            best, edges = yield from settle(search, round_)
        if best is not None and not edges:
            best = yield from refine(search, best)
        rows.append(_steps_row(search))
        if best is not None:
            previous = (batch_size, best.point.learning_rate, best.steps)
        elif previous is not None:
            previous = (batch_size, previous[1] * batch_size / previous[0], math.inf)
    return rows


Settle = Generator[Round, dict[str, TrialResult], tuple[Outcome | None, tuple[str, ...]]]


def settle(search: BatchSearch, round_: Round) -> Settle:
    """Run ``round_`` and the rounds its results call for (retries when pruning left nothing reaching
    the target; verification and completion of pruned trials); return (best outcome, its edges)."""
    config = search.config
    while True:
        results = yield round_
        search.absorb(round_, results)
        best, edges, _ = search.summary()
        if best is None and search.retries < 2 and search.count("pruned"):
            round_ = search.retry_round()
            continue
        if (config.verify_pruned and best is not None
                and any(t.config.trial_id() not in search.verified for t in search.pruned())):
            round_ = search.verify_round()
            if round_.configs:
                continue
        if config.verify_pruned and best is not None and best.point not in search.completed:
            search.completed.add(best.point)
            round_ = search.complete_round(best)
            if round_.configs:
                continue
        return best, edges


def refine(search: BatchSearch, best: Outcome) -> Generator[Round, dict[str, TrialResult], Outcome]:
    """Refine the best learning rate between its factor-``lr_factor`` neighbours.

    Level k tries best_lr x f_k^(+-1), f_k = lr_factor^(1/2^k) (sqrt(2) then 2^(1/4) for the default
    factor 2), around the best point so far; it stops once one more level changes the best steps by less
    than ``refine_tolerance`` (relative: (S_before - S_after) / S_before) or after ``refine_levels``
    levels. The change of the last level is the row's ``lr_refine_change`` (the tolerance reached).
    Momentum is not refined (a tuned momentum keeps its quasi-random search)."""
    config = search.config
    if search.tune_momentum:
        return best
    while search.refine_levels < config.refine_levels:
        search.refine_levels += 1
        factor = config.lr_factor ** (0.5**search.refine_levels)
        lr, momentum = best.point.learning_rate, best.point.momentum
        points = [Point(round_sig(lr / factor), momentum), Point(round_sig(lr * factor), momentum)]
        before = best.steps
        round_ = search.round_for(points, phase=f"refine-{search.refine_levels}")
        if round_.configs:
            settled, _ = yield from settle(search, round_)
            best = settled if settled is not None else best
        search.refine_change = (before - best.steps) / before
        search.refine_factor = factor
        if search.refine_change < config.refine_tolerance:
            break
    return best


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
        "steps": None if best is None else count_or_float(best.steps),
        "examples": None if best is None else count_or_float(best.steps * search.batch_size),
        "learning_rate": None if best is None else best.point.learning_rate,
        "momentum": None if best is None else best.point.momentum,
        "status": STATUS_FOUND if best is not None else STATUS_UNREACHABLE,
        "n_trials": n_trials,
        "n_reached": search.count("complete"),
        "n_diverged": search.count("diverged"),
        "n_pruned": search.count("pruned"),
        "n_verified": search.count_noted(VERIFY_NOTE),
        "at_edge": bool(edges),
        "edge": ",".join(edges),
        "lr_min": min(p.learning_rate for p in search.tried),
        "lr_max": max(p.learning_rate for p in search.tried),
        "extensions": search.extensions,
        "max_steps": search.max_steps,
        "trial_id": None if best is None else best.trials[0].config.trial_id(),
        "config": None if best is None else best.trials[0].config.to_dict(),
        "lr_refine_levels": search.refine_levels,
        "lr_refine_factor": search.refine_factor,
        "lr_refine_change": search.refine_change,
        **seed_fields(search, best),
    }
    return row


def count_or_float(x: float) -> int | float:
    """``x`` as an int when it is a whole number (a count), else as it is (a median of an even number of
    seeds can end in .5)."""
    return int(x) if float(x).is_integer() else x


def seed_fields(search: BatchSearch, best: Outcome | None) -> dict[str, Any]:
    """What the seeds say about a batch size.

    ``seed_steps``: the winning point's steps per seed (in ``seeds`` order; None for a seed that missed
    the target); ``steps_low``/``steps_high``: their min..max (``steps_interval`` names it; high None
    when a seed missed); ``seed_learning_rates``: each seed's own best rate (None: reached nothing);
    ``lr_seed_spread``: the largest over the smallest of them.
    """
    seeds = search.config.seeds
    by_seed = {} if best is None else {t.config.seed: steps_or_inf(t) for t in best.trials}
    steps = [by_seed.get(seed, math.inf) for seed in seeds]
    finite = [s for s in steps if math.isfinite(s)]
    winners = search.seed_winners()
    rates = [None if winners[s] is None else winners[s][0].learning_rate for s in seeds]
    known = [r for r in rates if r is not None]
    return {
        "seeds": list(seeds),
        "seed_steps": [int(s) if math.isfinite(s) else None for s in steps],
        "steps_low": min(finite) if finite else None,
        "steps_high": max(finite) if finite and len(finite) == len(steps) else None,
        "steps_interval": "min..max over seeds",
        "seed_learning_rates": rates,
        "lr_seed_spread": max(known) / min(known) if known else None,
    }


def reference_trials(config: StepsSweepConfig) -> list[TrainConfig]:
    """The reference run's trials of ``--target auto`` (:mod:`.target`): first optimizer, smallest batch
    size, first window x seeds, :meth:`StepsSweepConfig.reference_budget` steps each, no target."""
    optimizer, batch_size, budget = config.optimizers[0], config.batch_sizes[0], config.reference_budget()
    search = BatchSearch(config, optimizer, batch_size, budget, center=0.0, first=True)
    return [replace(trial_config(config, optimizer, batch_size, point, seed, budget), target=None)
            for point in search.initial_points() for seed in config.seeds]


def probe_trials(config: StepsSweepConfig) -> list[TrainConfig]:
    """One trial per seed that only looks at step 0: first optimizer, smallest batch size, the first
    window's lowest rate, ``max_steps`` 1 (see :func:`probe_chain`)."""
    optimizer, batch_size = config.optimizers[0], config.batch_sizes[0]
    search = BatchSearch(config, optimizer, batch_size, 1, center=0.0, first=True)
    point = min(search.initial_points(), key=lambda p: p.learning_rate)
    return [trial_config(config, optimizer, batch_size, point, seed, 1) for seed in config.seeds]


def probe_chain(config: StepsSweepConfig, trials: Sequence[TrainConfig]) -> Chain:
    """Refuse a target the untrained model already meets: the metric at step 0 depends only on the seed
    (the initial weights), so every trial of that seed would report 0 steps at every batch size and rate.
    One round of :func:`probe_trials` (evaluated at step 0, at most one update each); :class:`InputError`
    naming the seed and its initial metric when one meets the target at step 0."""
    results = yield Round(tuple(trials), prune=False, phase="probe")
    for trial in trials:
        result = results[trial.trial_id()]
        if result.status == "complete" and result.steps == 0:
            initial = result.history[0][1] if result.history and result.history[0][1] is not None else None
            initial_text = "?" if initial is None else f"{initial:.4g}"
            raise InputError(
                f"the target ({config.target_metric} <= {config.target:g}) is met at step 0, before any "
                f"training (seed {trial.seed}: initial {config.target_metric} {initial_text}), so every "
                "batch size would need 0 steps; choose a harder target (a lower --target, or --target auto)")
    return []


def steps_sweep_chains(config: StepsSweepConfig) -> dict[str, Chain]:
    """One chain per optimizer."""
    return {optimizer: steps_chain(config, optimizer) for optimizer in config.optimizers}


def run_steps_sweep(
    config: StepsSweepConfig,
    *,
    store: Store | str | os.PathLike,
    executor: Executor | ExecutorConfig,
    n_train: int | None = None,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> tuple[list[dict[str, Any]], RunStats]:
    """Run (or resume) a steps-to-target sweep; rows per optimizer and batch size, ascending.

    The config is validated first (``n_train``: the training set's size, when known); only then is
    ``on_start`` called, a ``store`` given as a path opened (created) and an executor given as its config
    started. With ``target_fraction`` set (``--target auto``) a reference run chooses the target first
    (:mod:`batchscale.empirical.sweep.target`); every row then has the choice under ``auto_target``.
    """
    config.validate(n_train)
    if on_start is not None:
        on_start()
    with opened(store, executor) as (store, executor):
        config, auto, first = resolve_target(config, reference_trials(config), store=store,
                                             executor=executor, threads=threads, progress=progress)
        _, probed = run_chains({"probe": probe_chain(config, probe_trials(config))}, store=store,
                               executor=executor, threads=threads, progress=progress)
        first = probed if first is None else first.plus(probed)
        rows, stats = run_chains(
            steps_sweep_chains(config), store=store, executor=executor, threads=threads,
            prune=config.prune, progress=progress,
        )
    out = [row for name in config.optimizers for row in rows[name]]
    if auto is not None:
        out = [{**row, "auto_target": auto.to_dict()} for row in out]
    if first is not None:
        stats = stats.plus(first)
    return out, stats
