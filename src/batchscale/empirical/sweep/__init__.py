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

Modules: :mod:`.configs` (the two frozen configs and their checks), :mod:`.space` (search points,
rate windows, Halton points, the best point over seeds), :mod:`.steps` (the steps-to-target search),
:mod:`.grid` (the grid), :mod:`.rounds` (what a chain yields), :mod:`.runner` (store, chunks, executor),
:mod:`.target` (``--target auto``: the target from a reference run).
Every public name is re-exported here.
"""


from __future__ import annotations

from batchscale.empirical.sweep.configs import (
    SEARCHES,
    STATUS_FOUND,
    STATUS_UNREACHABLE,
    GridSweepConfig,
    StepsSweepConfig,
)
from batchscale.empirical.sweep.grid import (
    grid_chain,
    grid_trial_configs,
    last_metric,
    run_grid_sweep,
)
from batchscale.empirical.sweep.rounds import (
    Chain,
    Round,
)
from batchscale.empirical.sweep.runner import (
    RunStats,
    chunks_of,
    package_versions,
    run_chains,
    train_chunk,
    with_sweep_config,
)
from batchscale.empirical.sweep.space import (
    Outcome,
    Point,
    best_outcome,
    edges_of,
    failure_edges,
    grid_window,
    halton_points,
    log_grid,
    point_outcomes,
    quasi_random_points,
    round_sig,
    steps_or_inf,
)
from batchscale.empirical.sweep.steps import (
    BatchSearch,
    optimizer_momentum,
    reference_trials,
    run_steps_sweep,
    steps_chain,
    steps_sweep_chains,
    trial_config,
)
from batchscale.empirical.sweep.target import (
    AutoTarget,
    choose_target,
    resolve_target,
    resolved_sweep_config,
)
from batchscale.vocabulary import steps_per_epoch

__all__ = [
    "AutoTarget",
    "BatchSearch",
    "Chain",
    "GridSweepConfig",
    "Outcome",
    "Point",
    "Round",
    "RunStats",
    "SEARCHES",
    "STATUS_FOUND",
    "STATUS_UNREACHABLE",
    "StepsSweepConfig",
    "best_outcome",
    "choose_target",
    "chunks_of",
    "edges_of",
    "failure_edges",
    "grid_chain",
    "grid_trial_configs",
    "grid_window",
    "halton_points",
    "last_metric",
    "log_grid",
    "optimizer_momentum",
    "package_versions",
    "point_outcomes",
    "quasi_random_points",
    "reference_trials",
    "resolve_target",
    "resolved_sweep_config",
    "round_sig",
    "run_chains",
    "run_grid_sweep",
    "run_steps_sweep",
    "steps_chain",
    "steps_or_inf",
    "steps_per_epoch",
    "steps_sweep_chains",
    "train_chunk",
    "trial_config",
    "with_sweep_config",
]
