r"""``cosine``: mean cosine between the minibatch and the full gradient vs batch size, from B_simple.

Prediction: :math:`E[\cos(g_B, G)] \approx 1/\sqrt{1 + c(m) B_{simple}/m}` with
:math:`B_{simple} = \mathrm{tr}\,\Sigma/|G|^2` (McCandlish et al. 2018) and the finite-population factor
:math:`c(m) = (M-m)/(M-1)` for batches drawn without replacement (:func:`batchscale.vocabulary.
finite_population_factor`). It is exact for :math:`E[g_B\cdot G]/(|G|\sqrt{E|g_B|^2})`; the mean cosine
differs from it where :math:`|g_B|` does not concentrate (small m). Measured
(:func:`batchscale.empirical.update_stats.gradient_cosine`): the mean cosine over many minibatches of a
real network, with its standard error; the verdict uses that standard error only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from batchscale.verify.common import build_workload, workload_choice
from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, make_row

CLAIM = "cosine"
DEFAULT_WORKLOAD = "digits-mlp"
QUICK_OPTIONS = {"hidden": 32}
POPULATION = {True: 512, False: 1024}
DRAWS = {True: 100, False: 400}


def predicted_cosine(b_simple: float, batch_size: int, population: int) -> float:
    r""":math:`1/\sqrt{1 + c(m) B_{simple}/m}`, c(m) = (M-m)/(M-1) (without replacement)."""
    from batchscale.vocabulary import finite_population_factor

    c = finite_population_factor(population, batch_size, "without")
    return 1.0 / math.sqrt(1.0 + c * b_simple / batch_size)


def cosine_rows(
    checks: list[Any],
    b_simple: float,
    population: int,
    config: dict[str, Any],
    workload: str,
    predict: Callable[[float, int, int], float] = predicted_cosine,
) -> list[Row]:
    return [
        make_row(
            CLAIM,
            "mean_cosine",
            workload,
            predict(b_simple, c.batch_size, population),
            c.measured,
            stderr=c.stderr,
            n_seeds=1,
            config={**config, "batch_size": c.batch_size, "draws": c.draws, "b_simple": b_simple},
            note=f"m={c.batch_size} of M={population}, B_simple={b_simple:.4g}",
        )
        for c in checks
    ]


def run(opts: Options) -> list[Row]:
    from batchscale.empirical.gradients import gradient_statistics, sample_indices
    from batchscale.empirical.update_stats import gradient_cosine

    name, options = workload_choice(opts, DEFAULT_WORKLOAD, QUICK_OPTIONS)
    workload = build_workload(opts, name, options)
    population = min(POPULATION[opts.quick], workload.n_train)
    idx = sample_indices(workload.n_train, population, opts.seed, workload.device)
    x, y = workload.x_train[idx], workload.y_train[idx]
    model = workload.model(opts.seed)
    stats = gradient_statistics(model, workload.per_example_loss, x, y, seed=opts.seed)
    batch_sizes = [m for m in ((1, 16, 256) if opts.quick else (1, 4, 16, 64, 256)) if m < population]
    draws = DRAWS[opts.quick]
    opts.say(f"cosine: {draws} minibatches per m in {batch_sizes}, M={population}")
    checks = gradient_cosine(
        model,
        workload.per_example_loss,
        x,
        y,
        stats=stats,
        batch_sizes=batch_sizes,
        sampling="without",
        draws=draws,
        seed=opts.seed,
    )
    config = opts.config(CLAIM, name, workload_options=workload.options, population=population)
    return cosine_rows(checks, stats.b_simple, population, config, name)
