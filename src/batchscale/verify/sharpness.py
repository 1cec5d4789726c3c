r"""``sharpness``: are large-batch solutions sharper, and at which batch size is test accuracy best?

Both rows stand on the base-learning-rate x batch-size grid of :mod:`batchscale.verify.lr_grid` (sum
form, fixed epochs, >= 3 seeds, stored trials).

- ``sharpness_ratio_large_over_small`` (Keskar et al. 2017, arXiv 1609.04836): at a small and a large
  batch, each with its tuned rate (the grid's best base rate at that m, by seed-mean test accuracy, times
  m), every seed trains mean-form SGD until the whole training set's mean loss is at or below one target
  (:func:`batchscale.empirical.solutions.train_to_loss`); the top Hessian eigenvalue of that loss
  (Lanczos) is measured there. Measured: the geometric mean over seeds of lambda_large / lambda_small
  (paired by seed) with a Student-t interval on the logs. Declared: large-batch solutions are sharper, by
  a factor between 1 and 100 (predicted 10, factor 10). Planted wrong prediction: flatter at large batch
  (predicted 0.1: the band [0.01, 1]).
- ``best_batch_size`` (Masters & Luschi 2018, arXiv 1804.07612: best results at m = 2..32): per seed the
  best test accuracy over the grid's base rates at each m; the best m maximises its seed mean; interval:
  the 2.5-97.5 percentiles of that argmax over seed resamples. Declared: inside [2, 32] (predicted 8,
  factor 4). Planted wrong prediction: best m >= 256 (predicted 1024: the band [256, 4096]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from batchscale.verify.common import workload_choice
from batchscale.verify.lr_grid import (
    FULL,
    QUICK,
    Grid,
    best_accuracy,
    best_batch,
    best_rate_index,
    t_interval,
)
from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, make_row

CLAIM = "sharpness"
WORKLOAD = "digits-mlp"
QUICK_OPTIONS = {"hidden": 64}
SEEDS = 3
SMALL, LARGE = 8, 512
TARGET = {True: 0.1, False: 0.02}  # mean training loss every solution is trained to
MAX_STEPS = {True: 4000, False: 40000}
KESKAR = {"sharper": 10.0, "flatter": 0.1}  # predicted ratio (factor-10 band): the claim, a planted one
MASTERS = {"small": 8.0, "large": 1024.0}  # predicted best m (factor-4 band): [2, 32], planted [256, 4096]


def tuned_rate(grid: Grid, batch_size: int) -> float:
    """The mean-form rate eta at ``batch_size``: the grid's best rate there (seed-mean accuracy), as eta."""
    i = grid.batch_sizes.index(batch_size)
    rate = grid.rates[int(best_rate_index(grid.accuracy)[i])]
    return rate * batch_size if grid.loss_form == "sum" else rate


def ratio_row(small: Sequence[Any], large: Sequence[Any], workload: str, config: dict[str, Any],
              direction: str = "sharper") -> Row:
    """The sharpness ratio row from the :class:`batchscale.empirical.solutions.Solution` s of each seed
    (same order) at the small and the large batch."""
    logs = [math.log(b.sharpness / a.sharpness) for a, b in zip(small, large, strict=True)
            if a.status == b.status == "reached" and a.sharpness > 0 and b.sharpness > 0]
    shown = "; ".join(f"seed {a.seed}: {a.sharpness:.4g} (m={a.batch_size}, {a.steps} steps, {a.status}) vs "
                      f"{b.sharpness:.4g} (m={b.batch_size}, {b.steps} steps, {b.status})"
                      for a, b in zip(small, large, strict=True))
    note = f"lambda_max small vs large per seed: {shown}"
    if len(logs) < 2:
        return make_row(CLAIM, "sharpness_ratio_large_over_small", workload, KESKAR[direction], math.nan,
                        n_seeds=len(logs), config=config,
                        note=note + "; fewer than 2 seeds reached the target")
    mean, low, high = t_interval(logs)
    return make_row(CLAIM, "sharpness_ratio_large_over_small", workload, KESKAR[direction], math.exp(mean),
                    ci=(math.exp(low), math.exp(high)), n_seeds=len(logs), config=config, note=note)


def best_batch_row(grid: Grid, config: dict[str, Any], expect: str = "small", seed: int = 0) -> Row:
    """The best-batch-size row of ``grid``; ``expect`` ``small`` (Masters & Luschi) or the planted
    ``large``."""
    best = best_accuracy(grid.accuracy)  # (B, S)
    found = best_batch(grid.batch_sizes, best, seed=seed)
    means = ", ".join(f"m={b}: {a:.4f}" for b, a in zip(grid.batch_sizes, found.mean_best, strict=True))
    note = (f"{grid.loss_form} form, {grid.epochs:g} epochs; seed-mean best test accuracy {means}; "
            f"interval: seed resamples")
    return make_row(CLAIM, "best_batch_size", grid.workload, MASTERS[expect], found.batch_size,
                    ci=(found.low, found.high), n_seeds=len(grid.seeds), config=config, note=note)


def run(opts: Options) -> list[Row]:
    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.solutions import train_to_loss
    from batchscale.verify.common import build_workload
    from batchscale.verify.lr_grid import run_grid

    name, options = workload_choice(opts, WORKLOAD, QUICK_OPTIONS)
    settings = (QUICK if opts.quick else FULL)["sum"]
    seeds = opts.seed_list(SEEDS)
    device = str(resolve_device(opts.device))
    grid = run_grid(name, options, "sum", settings, seeds, db=opts.db, device=device, data_seed=opts.seed,
                    progress=opts.say)
    config = opts.config(CLAIM, name, workload_options=dict(options), seeds=seeds, grid={
        "loss_form": "sum", "batch_sizes": list(settings.batch_sizes), "base_rates": list(settings.rates),
        "epochs": settings.epochs, "store": grid.store}, target_train_loss=TARGET[opts.quick],
        max_steps=MAX_STEPS[opts.quick], small=SMALL, large=LARGE)
    rows = [best_batch_row(grid, config, seed=opts.seed)]
    workload = build_workload(opts, name, options, data_seed=opts.seed)
    solutions = {}
    for m in (SMALL, LARGE):
        lr = tuned_rate(grid, m)
        opts.say(f"sharpness: m={m}, tuned lr {lr:.4g}: training {len(seeds)} seeds to train loss "
                 f"{TARGET[opts.quick]}")
        target, steps = TARGET[opts.quick], MAX_STEPS[opts.quick]
        solutions[m] = [train_to_loss(workload, m, lr, s, target, steps) for s in seeds]
    rows.insert(0, ratio_row(solutions[SMALL], solutions[LARGE], name, config))
    return rows


__all__ = ["best_batch_row", "ratio_row", "run", "tuned_rate"]
