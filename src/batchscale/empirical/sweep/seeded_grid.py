"""The learning-rate x batch-size grid of :mod:`.grid` with every seed's own result kept (intervals over
seeds need them; ``sweep grid`` keeps only the seed median per cell).

The trials are exactly :func:`.grid.grid_trial_configs`, so they share their ids, and a store, with
``batchscale sweep grid``: an interrupted grid resumes, and a grid run by one command is reused by another.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from batchscale.empirical.executors import Executor, ExecutorConfig
from batchscale.empirical.store import Store
from batchscale.empirical.sweep.configs import GridSweepConfig
from batchscale.empirical.sweep.grid import grid_trial_configs, last_metric
from batchscale.empirical.sweep.rounds import Chain, Round
from batchscale.empirical.sweep.runner import RunStats, opened, run_chains
from batchscale.empirical.trials import TrialResult


@dataclass(frozen=True)
class SeededCell:
    """One (batch size, rate) cell: ``rate`` as the grid gives it (a base learning rate eta/m in the sum
    form, the learning rate eta in the mean form); per seed (in ``seeds`` order) the final test metric
    (median of the last evaluations; None when that seed diverged) and the trial's status."""

    batch_size: int
    rate: float
    loss_form: str
    seeds: tuple[int, ...]
    metrics: tuple[float | None, ...]
    statuses: tuple[str, ...]

    @property
    def base_learning_rate(self) -> float:
        """eta / m: the rate of the sum form."""
        return self.rate if self.loss_form == "sum" else self.rate / self.batch_size

    @property
    def learning_rate(self) -> float:
        """eta: the rate multiplying the batch-mean gradient."""
        return self.rate * self.batch_size if self.loss_form == "sum" else self.rate

    @property
    def diverged(self) -> tuple[bool, ...]:
        return tuple(s == "diverged" for s in self.statuses)


def seeded_grid_chain(config: GridSweepConfig, n_train: int) -> Chain:
    """One round with every cell of the grid; returns one :class:`SeededCell` per (batch size, rate)."""
    round_ = Round(tuple(grid_trial_configs(config, n_train)), prune=False)
    results = yield round_
    by_cell: dict[tuple[int, float], dict[int, TrialResult]] = {}
    for trial in round_.configs:
        cell = by_cell.setdefault((trial.batch_size, trial.learning_rate), {})
        cell[trial.seed] = results[trial.trial_id()]
    cells = []
    for (batch_size, rate), trials in by_cell.items():
        seeds = tuple(config.seeds)
        cells.append(SeededCell(
            batch_size, rate, config.loss_form, seeds,
            tuple(last_metric(trials[s], config.last_evals) for s in seeds),
            tuple(trials[s].status for s in seeds),
        ))
    return cells


def run_seeded_grid(
    config: GridSweepConfig,
    *,
    store: Store | str | os.PathLike,
    executor: Executor | ExecutorConfig,
    n_train: int,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[SeededCell], RunStats]:
    """Run (or resume from ``store``) the grid; cells sorted by batch size, then rate."""
    config.validate(n_train)
    with opened(store, executor) as (store, executor):
        rows, stats = run_chains({"grid": seeded_grid_chain(config, n_train)}, store=store, executor=executor,
                                 progress=progress)
    return sorted(rows["grid"], key=lambda c: (c.batch_size, c.rate)), stats
