"""The divergence boundary of training: per batch size and seed, the learning rate where runs start to
diverge, located by a coarse grid around a guess and then geometric bisection, on stored trials (so a
search resumes, and its trials are shared with every other sweep of the same store).

A trial diverges by the engine's rule (:mod:`batchscale.empirical.train`): a non-finite training loss,
or a test loss above ``DIVERGENCE_FACTOR`` (10) times its initial value at an evaluation, within
``max_steps`` updates of mean-form SGD. Per seed the boundary is bracketed by ``low`` (the largest rate
tried below the seed's smallest divergent rate, which did not diverge) and ``high`` (that divergent rate).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from batchscale.empirical.executors import Executor, ExecutorConfig
from batchscale.empirical.store import Store
from batchscale.empirical.sweep.rounds import Chain, Round
from batchscale.empirical.sweep.runner import RunStats, opened, run_chains
from batchscale.empirical.trials import TrainConfig, canonical_options
from batchscale.errors import require

COARSE = tuple(range(-2, 6))  # first round: guess x 2^k
EXTEND = 4  # an unbracketed seed's next round: 2^1 .. 2^EXTEND beyond its last rate
MAX_EXTENSIONS = 2


@dataclass(frozen=True)
class BoundarySearch:
    """The runs of a boundary search: mean-form SGD from each seed's initial point for ``max_steps``
    updates; ``bisections`` halvings of each seed's bracket (in log) after the coarse round."""

    workload: str
    workload_options: tuple[tuple[str, Any], ...] = ()
    batch_sizes: tuple[int, ...] = (8, 64, 512)
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int = 200
    bisections: int = 3
    data_seed: int = 0
    eval_subset: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "workload_options", canonical_options(self.workload_options))

    def trial(self, batch_size: int, lr: float, seed: int) -> TrainConfig:
        return TrainConfig(
            workload=self.workload, workload_options=self.workload_options, batch_size=batch_size,
            learning_rate=float(lr), optimizer="sgd", loss_form="mean", seed=seed, data_seed=self.data_seed,
            max_steps=self.max_steps, target=None, target_metric="error", eval_subset=self.eval_subset,
            device=self.device,
        )


@dataclass(frozen=True)
class SeedBoundary:
    """One seed's bracket at one batch size: ``low`` stable, ``high`` diverged (None: not found), and the
    rates tried with their outcome (True = diverged)."""

    batch_size: int
    seed: int
    low: float | None
    high: float | None
    tried: tuple[tuple[float, bool], ...]

    @property
    def boundary(self) -> float:
        """sqrt(low * high), nan when either side is missing."""
        if self.low is None or self.high is None:
            return math.nan
        return math.sqrt(self.low * self.high)

    @property
    def half_width(self) -> float:
        """Half the bracket's width in natural log: the resolution of ``boundary``."""
        return math.nan if self.low is None or self.high is None else math.log(self.high / self.low) / 2


def bracket(tried: dict[float, bool]) -> tuple[float | None, float | None]:
    """(largest stable rate below the smallest divergent one, that divergent rate) from {rate: diverged}."""
    bad = [lr for lr, d in tried.items() if d]
    high = min(bad) if bad else None
    below = [lr for lr, d in tried.items() if not d and (high is None or lr < high)]
    return (max(below) if below else None), high


def boundary_chain(search: BoundarySearch, batch_size: int, guess: float) -> Chain:
    """Coarse grid guess x 2^k (k in :data:`COARSE`), up to :data:`MAX_EXTENSIONS` rounds past an open end,
    then ``search.bisections`` geometric bisections per seed; returns one :class:`SeedBoundary` per seed."""
    tried: dict[int, dict[float, bool]] = {s: {} for s in search.seeds}

    def play(wanted: dict[int, list[float]]) -> Chain:
        configs = tuple(search.trial(batch_size, lr, s) for s, lrs in wanted.items() for lr in lrs)
        if not configs:
            return []
        results = yield Round(configs, prune=False)
        for c in configs:
            tried[c.seed][c.learning_rate] = results[c.trial_id()].status == "diverged"
        return []

    yield from play({s: [guess * 2.0**k for k in COARSE] for s in search.seeds})
    for _ in range(MAX_EXTENSIONS):
        wanted = {}
        for s in search.seeds:
            low, high = bracket(tried[s])
            if high is None:
                top = max(tried[s])
                wanted[s] = [top * 2.0**k for k in range(1, EXTEND + 1)]
            elif low is None:
                bottom = min(tried[s])
                wanted[s] = [bottom * 2.0**-k for k in range(1, EXTEND + 1)]
        if not wanted:
            break
        yield from play(wanted)
    for _ in range(search.bisections):
        wanted = {}
        for s in search.seeds:
            low, high = bracket(tried[s])
            if low is not None and high is not None:
                wanted[s] = [math.sqrt(low * high)]
        yield from play(wanted)
    out = []
    for s in search.seeds:
        low, high = bracket(tried[s])
        out.append(SeedBoundary(batch_size, s, low, high, tuple(sorted(tried[s].items()))))
    return out


def run_boundary_search(
    search: BoundarySearch,
    guesses: Sequence[float],
    *,
    store: Store | str | os.PathLike,
    executor: Executor | ExecutorConfig,
    n_train: int,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[int, list[SeedBoundary]], RunStats]:
    """Every batch size's search (``guesses[i]``: the rate around which batch ``search.batch_sizes[i]``
    starts); {batch size: one :class:`SeedBoundary` per seed}."""
    require(len(guesses) == len(search.batch_sizes), "one guess per batch size")
    for b in search.batch_sizes:
        require(1 <= b <= n_train, f"batch size {b} outside 1..{n_train}")
    require(search.max_steps >= 1 and search.bisections >= 0, "max_steps >= 1 and bisections >= 0")
    require(all(math.isfinite(g) and g > 0 for g in guesses), f"guesses must be positive, got {guesses}")
    chains = {f"boundary m={b}": boundary_chain(search, b, g)
              for b, g in zip(search.batch_sizes, guesses, strict=True)}
    with opened(store, executor) as (store, executor):
        rows, stats = run_chains(chains, store=store, executor=executor, progress=progress)
    return {b: rows[f"boundary m={b}"] for b in search.batch_sizes}, stats
