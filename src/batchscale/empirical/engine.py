"""The training engine's entry point: run many trials, grouped and stacked where that is faster.

:func:`run_trials` validates the configs, then groups trials that share
:meth:`~batchscale.empirical.trials.TrainConfig.group_key` and runs each group either as stacked models
(:class:`~batchscale.empirical.batched.StackedRun`) or one trial at a time
(:class:`~batchscale.empirical.train.SingleRun`), both under the same protocol
(:class:`~batchscale.empirical.train.Driver`). The decisions (:func:`use_stack`, :func:`stack_size`) are
measured in ``docs/perf-training.md``.

Import order (no cycle): ``trials`` (data) <- ``train`` (plain loop, protocol) <- ``batched`` (stacked
model) <- ``engine`` (this module). Nothing below imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from batchscale.empirical.batched import StackedRun, stackable
from batchscale.empirical.train import Driver, SingleRun, Track, load_workload
from batchscale.empirical.trials import TrainConfig, TrialResult
from batchscale.empirical.workloads import Workload
from batchscale.errors import require
from batchscale.progress import counter

BATCHED_MAX_BATCH = 4096  # "auto" stacks a group when its batch size is at most this (docs/perf-training.md)
MAX_COPIES = 32  # larger groups are split into stacks of at most this many copies ...
STACK_MAX_ROWS = 24_576  # ... and of at most this many examples per step (copies x batch size): cache
STRATEGIES: tuple[str, ...] = ("auto", "batched", "sequential")


def use_stack(config: TrainConfig, workload: Workload, strategy: str) -> bool:
    """Stacked or one at a time: ``auto`` stacks batch sizes below :data:`BATCHED_MAX_BATCH`."""
    if strategy == "sequential" or not stackable(workload.model(config.seed)):
        return False
    return strategy == "batched" or config.batch_size <= BATCHED_MAX_BATCH


def stack_size(batch_size: int) -> int:
    """Copies per stack: at most MAX_COPIES and at most STACK_MAX_ROWS examples per step."""
    return max(1, min(MAX_COPIES, STACK_MAX_ROWS // batch_size))


@contextmanager
def torch_threads(n: int | None):
    """Use ``n`` intra-op threads inside the block (None: leave as is)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def group_trials(configs: Sequence[TrainConfig]) -> list[list[int]]:
    """Indices of ``configs`` grouped by group key, groups in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(config.group_key(), []).append(i)
    return list(groups.values())


def workload_key(config: TrainConfig) -> tuple:
    return config.workload, config.workload_options, config.data_seed, config.device


def run_trials(
    configs: Sequence[TrainConfig],
    *,
    on_result: Callable[[TrialResult], None] | None = None,
    progress: Callable[[str], None] | None = None,
    prune: bool = False,
    strategy: str = "auto",
    num_threads: int | None = None,
    workloads: Mapping[tuple, Any] | None = None,
    bounds: Sequence[int | None] | None = None,
    notes: Sequence[str] = (),
    median_seeds: int | None = None,
) -> list[TrialResult]:
    """Run every config; return the results in input order.

    Trials that share :meth:`TrainConfig.group_key` form a group. A group runs as stacked models
    (``strategy="batched"``), one trial at a time (``"sequential"``), or by batch size (``"auto"``:
    stacked up to :data:`BATCHED_MAX_BATCH`, in stacks of :func:`stack_size` copies; measured in
    ``docs/perf-training.md``). Models with buffers or dropout always run one at a time. With ``prune``,
    the order of the configs matters for trials run one at a time (each is compared with those of its
    group that ran before).

    Args:
        configs: the trials; each is validated first (:class:`InputError` on a bad value).
        on_result: called with each result as soon as its trial ends (store it there).
        progress: called with a one-line message as trials end; a counter of the trials with an ETA
            (:func:`batchscale.progress.counter`).
        prune: stop trials far behind the best of their group as ``pruned`` (see ``docs/training.md``).
        strategy: ``auto`` | ``batched`` | ``sequential``.
        num_threads: torch intra-op threads for the duration of the call (None: leave as is).
        workloads: ``{(workload, workload_options, data_seed, device): Workload}`` to use instead of
            loading by name (tests, user objects).
        bounds: per config (None: none), a step bound: the trial ends as ``pruned`` at its first
            evaluation at a step >= bound that misses the target, since its steps then exceed the bound
            (a sweep passes the steps a trial must beat to matter; independent of ``prune``).
        notes: added to every result's ``notes``.
        median_seeds: stop a trial (``pruned``) once it can no longer change the answer of a search that
            ranks each point by its median steps over this many seeds, the group holding every seed of
            each of its points (:func:`~batchscale.empirical.train.group_limits`; exact, unlike
            ``prune``'s rule; independent of it).
    """
    configs = list(configs)
    for config in configs:
        config.validate()
    require(strategy in STRATEGIES, f"unknown strategy {strategy!r}")
    loaded: dict[tuple, Workload] = dict(workloads or {})
    bounds = [None] * len(configs) if bounds is None else list(bounds)
    require(len(bounds) == len(configs), "one bound per config")
    tracks = [Track(c, bound=b, notes=tuple(notes)) for c, b in zip(configs, bounds, strict=True)]

    def report(result: TrialResult) -> None:
        if progress is not None:
            c = result.config
            progress(f"batch {c.batch_size} lr {c.learning_rate:g} seed {c.seed}: {result.status}"
                     f" at step {result.stop_step}")
        bar.update()
        if on_result is not None:
            on_result(result)

    with torch_threads(num_threads), counter(progress, len(configs), unit="trial", desc="trials") as bar:
        for group in group_trials(configs):
            first = configs[group[0]]
            if workload_key(first) not in loaded:
                loaded[workload_key(first)] = load_workload(first)
            workload = loaded[workload_key(first)]
            group_tracks = [tracks[i] for i in group]
            driver = Driver(group_tracks, prune=prune, on_result=report, device=str(workload.device),
                            median_seeds=median_seeds)
            local = list(range(len(group)))
            if use_stack(first, workload, strategy):
                size = stack_size(first.batch_size)
                for start in range(0, len(group), size):
                    chunk = local[start : start + size]
                    driver.drive(StackedRun(workload, [configs[group[i]] for i in chunk], chunk))
            else:
                for i in local:
                    driver.drive(SingleRun(workload, configs[group[i]], i))
    return [t.result for t in tracks]


__all__ = [
    "BATCHED_MAX_BATCH",
    "MAX_COPIES",
    "STACK_MAX_ROWS",
    "STRATEGIES",
    "run_trials",
    "stack_size",
    "use_stack",
]
