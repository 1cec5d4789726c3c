r"""The base-learning-rate x batch-size grid that ``sharpness`` and ``reproduce masters2018`` stand on
(Masters & Luschi 2018, arXiv 1804.07612), and what is read off it.

Every cell trains SGD for a fixed number of epochs from each seed's initial point
(:func:`batchscale.empirical.sweep.seeded_grid.run_seeded_grid`, the trials of ``batchscale sweep grid``,
kept in the store: ``--db``, else ``batchscale-out/runs.sqlite``, so a second run reuses them and an
interrupted one resumes). In the sum form the grid's rates are base learning rates
:math:`\tilde\eta = \eta/m`; in the mean form plain rates :math:`\eta`.

Read off per seed (a diverged cell counts as no accuracy):

- the best test accuracy at each m over the grid's rates, and the **best batch size**: the m whose
  seed-mean best accuracy is highest, with an interval from resampling the seeds;
- the **good range** at each m: the rates whose accuracy is within :data:`GOOD_MARGIN` of that seed's
  best at m, as a width in log2 units (grid points x spacing), and its least-squares slope against
  log2 m;
- the **largest stable rate** at each m: the largest rate below the seed's smallest divergent one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

GOOD_MARGIN = 0.02  # a rate is "good" within 2 accuracy points of the seed's best at that batch size
DEFAULT_STORE = "batchscale-out/runs.sqlite"
BOOTSTRAP = 2000


@dataclass(frozen=True)
class GridSettings:
    """Batch sizes, rates (base rates for ``sum``, plain rates for ``mean``) and epochs of one grid."""

    batch_sizes: tuple[int, ...]
    rates: tuple[float, ...]
    epochs: float


def powers(lo: int, hi: int, step: int = 1) -> tuple[float, ...]:
    """2^lo, 2^(lo+step), ..., 2^hi."""
    return tuple(2.0**k for k in range(lo, hi + 1, step))


# quick: the same cells for every command (so `verify sharpness --quick` and `reproduce masters2018
# --quick` share their trials); full: a finer grid over 1..1024
QUICK = {
    "sum": GridSettings((2, 8, 32, 128, 512), powers(-12, -2, 2), 3.0),
    "mean": GridSettings((2, 8, 32, 128, 512), powers(-6, 4, 2), 3.0),
}
FULL = {
    "sum": GridSettings(tuple(2**k for k in range(11)), powers(-13, -1), 10.0),
    "mean": GridSettings(tuple(2**k for k in range(11)), powers(-7, 4), 10.0),
}


@dataclass(frozen=True)
class Grid:
    """The measured grid of one workload and loss form: ``accuracy[b, r, s]`` (nan where seed s
    diverged at batch ``batch_sizes[b]`` and rate ``rates[r]``) and ``diverged[b, r, s]``."""

    workload: str
    workload_options: Mapping[str, Any]
    loss_form: str
    batch_sizes: tuple[int, ...]
    rates: tuple[float, ...]
    seeds: tuple[int, ...]
    epochs: float
    accuracy: np.ndarray
    diverged: np.ndarray
    store: str
    trained: int = 0  # trials this call trained (the rest were reused from the store)
    reused: int = 0

    @property
    def base_rates(self) -> np.ndarray:
        """(B, R) base learning rates eta/m of every cell."""
        r = np.broadcast_to(np.asarray(self.rates, dtype=float), (len(self.batch_sizes), len(self.rates)))
        return r if self.loss_form == "sum" else r / np.asarray(self.batch_sizes, dtype=float)[:, None]


def store_path(db: str | None) -> str:
    """``db``, else the default store (its folder created)."""
    if db is not None:
        return db
    os.makedirs(os.path.dirname(DEFAULT_STORE), exist_ok=True)
    return DEFAULT_STORE


def run_grid(
    workload: str,
    workload_options: Mapping[str, Any],
    loss_form: str,
    settings: GridSettings,
    seeds: Sequence[int],
    *,
    db: str | None = None,
    device: str = "cpu",
    data_seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Grid:
    """Train (or reuse from the store) every cell of the grid on the inline executor."""
    from batchscale.empirical.executors import ExecutorConfig
    from batchscale.empirical.sweep import GridSweepConfig
    from batchscale.empirical.sweep.seeded_grid import run_seeded_grid
    from batchscale.empirical.workloads import get_workload, training_set_size

    options = dict(workload_options)
    config = GridSweepConfig(
        workload=workload, workload_options=tuple(options.items()), batch_sizes=settings.batch_sizes,
        learning_rates=settings.rates, loss_form=loss_form, epochs=settings.epochs, seeds=tuple(seeds),
        data_seed=data_seed, device=device,
    )
    n_train = training_set_size(workload, options)
    if n_train is None:
        n_train = get_workload(workload, device="cpu", seed=data_seed, **options).n_train
    store = store_path(db)
    if progress is not None:
        progress(f"grid ({workload}, {loss_form} form, {len(config.batch_sizes)} batch sizes x "
                 f"{len(config.learning_rates)} rates x {len(seeds)} seeds, {settings.epochs:g} epochs) "
                 f"in {store}")
    cells, stats = run_seeded_grid(config, store=store, executor=ExecutorConfig(name="inline"),
                                   n_train=n_train, progress=progress)
    grid = grid_of(cells, workload, options, loss_form, config.batch_sizes, config.learning_rates,
                   tuple(seeds), settings.epochs, store)
    return replace(grid, trained=stats.trained, reused=stats.reused)


def grid_of(cells: Sequence[Any], workload: str, options: Mapping[str, Any], loss_form: str,
            batch_sizes: Sequence[int], rates: Sequence[float], seeds: tuple[int, ...], epochs: float,
            store: str) -> Grid:
    """The arrays of a :class:`Grid` from :class:`SeededCell` s."""
    b_index = {b: i for i, b in enumerate(batch_sizes)}
    r_index = {r: i for i, r in enumerate(rates)}
    acc = np.full((len(batch_sizes), len(rates), len(seeds)), np.nan)
    bad = np.zeros(acc.shape, dtype=bool)
    for c in cells:
        i, j = b_index[c.batch_size], r_index[c.rate]
        for k, (metric, status) in enumerate(zip(c.metrics, c.statuses, strict=True)):
            bad[i, j, k] = status == "diverged"
            if metric is not None and not bad[i, j, k]:
                acc[i, j, k] = 1.0 - metric
    return Grid(workload, dict(options), loss_form, tuple(batch_sizes), tuple(rates), seeds, epochs, acc, bad,
                store)


def best_accuracy(accuracy: np.ndarray) -> np.ndarray:
    """(B, S): each seed's best accuracy over the rates at each batch size (nan if all diverged)."""
    filled = np.where(np.isnan(accuracy), -np.inf, accuracy)
    best = filled.max(axis=1)
    return np.where(np.isinf(best), np.nan, best)


def best_rate_index(accuracy: np.ndarray) -> np.ndarray:
    """(B,): index of the rate with the highest seed-mean accuracy at each batch size (a diverged seed
    counts as accuracy 0 there)."""
    return np.nan_to_num(accuracy, nan=0.0).mean(axis=2).argmax(axis=1)


@dataclass(frozen=True)
class BestBatch:
    """The best batch size (highest seed-mean best accuracy) and its 95% interval over seed resamples
    (percentiles of the resampled argmax, grid values), with the seed-mean best accuracy per m."""

    batch_size: int
    low: int
    high: int
    mean_best: tuple[float, ...]


def best_batch(batch_sizes: Sequence[int], best: np.ndarray, *, seed: int = 0) -> BestBatch:
    """The best batch size from ``best`` (B, S) (:func:`best_accuracy`); seeds resampled
    :data:`BOOTSTRAP` times with replacement (numpy generator ``seed``)."""
    values = np.nan_to_num(best, nan=0.0)
    mean = values.mean(axis=1)
    point = int(batch_sizes[int(mean.argmax())])
    n = values.shape[1]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(BOOTSTRAP, n))  # (R, S)
    winners = values[:, picks].mean(axis=2).argmax(axis=0)  # (R,)
    sizes = np.log2(np.asarray(batch_sizes, dtype=float))[winners]
    low, high = np.quantile(sizes, [0.025, 0.975], method="inverted_cdf")
    return BestBatch(point, int(round(2**low)), int(round(2**high)), tuple(float(x) for x in mean))


def good_width(accuracy: np.ndarray, rates: Sequence[float], margin: float = GOOD_MARGIN) -> np.ndarray:
    """(B, S): log2 width of the rates within ``margin`` of the seed's best at each batch size:
    (number of such grid rates) x (the grid's log2 spacing); nan where every rate diverged."""
    spacing = float(np.mean(np.diff(np.log2(np.asarray(rates, dtype=float))))) if len(rates) > 1 else 1.0
    best = best_accuracy(accuracy)  # (B, S)
    good = accuracy >= best[:, None, :] - margin - 1e-12  # (B, R, S); nan compares False
    return np.where(np.isnan(best), np.nan, good.sum(axis=1) * spacing)


def largest_stable(diverged: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """(B, S): the largest rate below the seed's smallest divergent rate at each batch size (``rates``
    (B, R), ascending along R); nan when the grid's smallest rate already diverged, inf when none did."""
    n_b, _, n_s = diverged.shape
    out = np.full((n_b, n_s), np.inf)
    for i in range(n_b):
        for k in range(n_s):
            bad = np.flatnonzero(diverged[i, :, k])
            if bad.size:
                out[i, k] = np.nan if bad[0] == 0 else rates[i, bad[0] - 1]
    return out


def seed_slopes(x: Sequence[float], y: np.ndarray) -> list[float]:
    """Per seed (columns of ``y``, (B, S)), the least-squares slope of y against x over its finite
    points (>= 2 needed)."""
    out = []
    xs = np.asarray(x, dtype=float)
    for k in range(y.shape[1]):
        ok = np.isfinite(y[:, k])
        if ok.sum() >= 2:
            out.append(float(np.polyfit(xs[ok], y[ok, k], 1)[0]))
    return out


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean (nan bounds for fewer than 2 values)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    if v.size < 2:
        mean = float(v.mean()) if v.size else math.nan
        return mean, math.nan, math.nan
    mean, sem = float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
    half = float(t.ppf(0.5 + level / 2, v.size - 1)) * sem
    return mean, mean - half, mean + half


def rounding_half_width(x: Sequence[float], spacing: float) -> float:
    r"""95% half-width a least-squares slope on ``x`` inherits from values rounded to a grid of
    ``spacing``: :math:`1.96\,\delta/\sqrt{12\sum_b (x_b - \bar x)^2}` (independent uniform rounding
    errors of width :math:`\delta`; not reduced by averaging seeds, which share the grid)."""
    xs = np.asarray(x, dtype=float)
    return 1.959963984540054 * spacing / math.sqrt(12 * float(np.sum((xs - xs.mean()) ** 2)))
