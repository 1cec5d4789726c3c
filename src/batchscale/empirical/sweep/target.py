"""``--target auto``: a target set from a reference run, a stated fraction of the way to the best reachable.

A target too easy (reached by every rate at once) or too close to the best metric the model reaches
(reached only by chance) gives a steps-to-target curve of noise. The reference run measures the range:
the first optimizer of the sweep at its smallest batch size trains the first window of learning rates
(the rates ``lr_range`` gives at the first batch size) for every seed, each trial for
``StepsSweepConfig.reference_budget()`` updates (``--target-budget``, by default max_steps // 10) without
a target. With M0 the initial metric (step 0, median over the trials) and M* the best
final metric (over the rates, of the median over seeds),

    target = M0 - fraction x (M0 - M*),

rounded to 4 significant digits, so the target sits (1 - fraction) of the range above the best. The
reference trials are ordinary stored trials (``target=None``): re-running reuses them, and the same
seeds give the same target.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from batchscale.empirical.executors import Executor
from batchscale.empirical.store import Store
from batchscale.empirical.sweep.configs import StepsSweepConfig
from batchscale.empirical.sweep.rounds import Chain, Round
from batchscale.empirical.sweep.runner import RunStats, run_chains
from batchscale.empirical.sweep.space import round_sig
from batchscale.empirical.trials import TrainConfig, TrialResult
from batchscale.errors import InputError


@dataclass(frozen=True)
class AutoTarget:
    """The target a reference run chose, and what it was chosen from.

    ``target`` = ``initial_metric`` - ``fraction`` x (``initial_metric`` - ``best_metric``) (4
    significant digits); ``gap`` = target - best_metric and ``relative_gap`` = gap / (initial - best),
    how close the target sits to the best reached (1 - fraction before rounding). ``max_steps``: the
    steps each reference trial trained (the budget M* is the best within: ``--target-budget``).
    """

    target: float
    fraction: float
    metric: str
    initial_metric: float
    best_metric: float
    best_learning_rate: float
    optimizer: str
    batch_size: int
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    max_steps: int

    @property
    def gap(self) -> float:
        """target - best metric reached."""
        return self.target - self.best_metric

    @property
    def relative_gap(self) -> float:
        """(target - best) / (initial - best): the share of the range left between target and best."""
        return self.gap / (self.initial_metric - self.best_metric)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form with ``gap`` and ``relative_gap``."""
        d = asdict(self)
        d.update(learning_rates=list(self.learning_rates), seeds=list(self.seeds), gap=self.gap,
                 relative_gap=self.relative_gap)
        return d

    def describe(self) -> str:
        """One line for stderr."""
        return (f"target auto: {self.metric} {self.target:.4g}, {self.fraction:g} of the way from the "
                f"initial {self.initial_metric:.4g} to the best {self.best_metric:.4g} reached by "
                f"{self.optimizer} at B={self.batch_size} (lr {self.best_learning_rate:.3g}, median of "
                f"{len(self.seeds)} seed(s), {self.max_steps} steps each: --target-budget); the target "
                f"sits {self.gap:.3g} "
                f"({self.relative_gap:.0%} of that range) above the best")


def choose_target(config: StepsSweepConfig, results: Sequence[TrialResult]) -> AutoTarget:
    """The :class:`AutoTarget` of ``config.target_fraction`` from the reference run's ``results``
    (see the module's docstring); :class:`InputError` when no rate improved on the initial metric."""
    initial = statistics.median(r.history[0][1] for r in results if r.history and r.history[0][1] is not None)
    by_rate: dict[float, list[float]] = {}
    for r in results:
        final = r.final_metric if r.status != "diverged" and r.final_metric is not None else math.inf
        by_rate.setdefault(r.config.learning_rate, []).append(final)
    medians = {lr: statistics.median(v) for lr, v in by_rate.items()}
    best_lr = min(medians, key=lambda lr: (medians[lr], lr))
    best = medians[best_lr]
    if not (math.isfinite(best) and best < initial):
        raise InputError(
            f"--target auto: no learning rate of the reference run improved on the initial "
            f"{config.target_metric} {initial:.4g} within {config.reference_budget()} steps; raise "
            "--target-budget or move --lr-range")
    fraction = float(config.target_fraction)
    return AutoTarget(
        target=round_sig(initial - fraction * (initial - best)), fraction=fraction,
        metric=config.target_metric, initial_metric=initial, best_metric=best, best_learning_rate=best_lr,
        optimizer=config.optimizers[0], batch_size=config.batch_sizes[0],
        learning_rates=tuple(sorted(by_rate)), seeds=tuple(config.seeds),
        max_steps=config.reference_budget())


def reference_chain(config: StepsSweepConfig, trials: Sequence[TrainConfig]) -> Chain:
    """One round, the reference ``trials`` (:func:`batchscale.empirical.sweep.steps.reference_trials`)
    trained to their budget (no pruning); returns one row, the choice."""
    results = yield Round(tuple(trials), prune=False, phase="reference")
    return [choose_target(config, [results[t.trial_id()] for t in trials]).to_dict()]


def resolve_target(
    config: StepsSweepConfig,
    trials: Sequence[TrainConfig],
    *,
    store: Store,
    executor: Executor,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> tuple[StepsSweepConfig, AutoTarget | None, RunStats | None]:
    """``config`` with its target chosen by the reference run (``trials``) when ``target_fraction`` is set
    (else as it is), the choice, and the reference run's stats."""
    if config.target_fraction is None:
        return config, None, None
    rows, stats = run_chains({"reference": reference_chain(config, trials)}, store=store, executor=executor,
                             threads=threads, prune=False, progress=progress)
    d = dict(rows["reference"][0])
    d.pop("gap"), d.pop("relative_gap")
    auto = AutoTarget(**{**d, "learning_rates": tuple(d["learning_rates"]), "seeds": tuple(d["seeds"])})
    if progress is not None:
        progress(auto.describe())
    return replace(config, target=auto.target), auto, stats


def resolved_sweep_config(sweep: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A row's ``sweep`` config with the chosen target and the ``auto_target`` record when the rows came
    from ``--target auto`` (their ``auto_target`` field), else ``sweep`` unchanged."""
    auto = rows[0].get("auto_target") if rows else None
    if not auto:
        return dict(sweep)
    return {**sweep, "target": auto["target"], "auto_target": dict(auto)}


__all__ = ["AutoTarget", "choose_target", "resolve_target", "resolved_sweep_config"]
