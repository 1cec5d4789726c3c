"""The learning-rate x batch-size grid (Masters & Luschi): fixed epochs, accuracy per cell."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from batchscale.empirical.executors import Executor, ExecutorConfig
from batchscale.empirical.store import Store
from batchscale.empirical.sweep.configs import GridSweepConfig
from batchscale.empirical.sweep.rounds import Chain, Round
from batchscale.empirical.sweep.runner import RunStats, opened, run_chains
from batchscale.empirical.trials import TrainConfig, TrialResult
from batchscale.vocabulary import steps_per_epoch


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


def run_grid_sweep(
    config: GridSweepConfig,
    *,
    store: Store | str | os.PathLike,
    executor: Executor | ExecutorConfig,
    n_train: int,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> tuple[list[dict[str, Any]], RunStats]:
    """Run (or resume) a learning-rate x batch grid; one row per cell, batch size then rate ascending.

    Validated first; ``on_start`` is called, a ``store`` path opened and an executor config started only
    after that.
    """
    config.validate(n_train)
    if on_start is not None:
        on_start()
    with opened(store, executor) as (store, executor):
        rows, stats = run_chains(
            {"grid": grid_chain(config, n_train)}, store=store, executor=executor, threads=threads,
            progress=progress,
        )
    key = "base_learning_rate" if config.loss_form == "sum" else "learning_rate"
    return sorted(rows["grid"], key=lambda r: (r["batch_size"], r[key])), stats
