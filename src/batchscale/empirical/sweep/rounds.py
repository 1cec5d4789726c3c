"""What a sweep chain yields: a :class:`Round` of trials, and the :data:`Chain` generator type."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchscale.empirical.trials import TrainConfig, TrialResult


@dataclass(frozen=True)
class Round:
    """Trials a chain needs before it can decide its next step.

    ``prune``: let the engine stop trials far behind the best of their group (when the sweep allows it).
    ``redo_pruned``: stored rows with status ``pruned`` do not count as done (retried without pruning).
    ``bounds``: trial id -> step bound: the trial stops as ``pruned`` once an evaluation at a step >= its
    bound misses the target (``run_trials(bounds=...)``; only when the sweep prunes).
    ``phase``: what the round is for (counted in :class:`~batchscale.empirical.sweep.runner.RunStats`).
    ``notes``: added to the ``notes`` of every result the round trains.
    ``median_seeds``: stop trials that can no longer change a median-over-this-many-seeds answer
    (``run_trials(median_seeds=...)``, exact; every seed of each point must be in the round).
    """

    configs: tuple[TrainConfig, ...]
    prune: bool = True
    redo_pruned: bool = False
    bounds: Mapping[str, int] = field(default_factory=dict)
    phase: str = "search"
    notes: tuple[str, ...] = ()
    median_seeds: int | None = None


Chain = Generator[Round, dict[str, TrialResult], list[dict[str, Any]]]
