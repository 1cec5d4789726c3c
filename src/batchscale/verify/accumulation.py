r"""``accumulation``: k micro-batches of m/k equal one batch of m; memory grows with the micro-batch.

Theory (:mod:`batchscale.theory.accumulation`): summing the gradients of k micro-batches, each loss
divided by m (mean form) or not (sum form), gives the one-batch gradient exactly, so the update is the
same up to float rounding. Measured (:func:`batchscale.empirical.update_stats.accumulation`): the largest
difference between the accumulated and the one-pass update of a real network, relative to the update's
largest component. For a model without batch-dependent layers this is an identity of the code (the
rows say so and are not counted as evidence); with batch normalisation it is a real test (and fails).

Memory: the activation memory of one micro-batch's forward and backward (torch profiler's allocation
peak) is predicted to grow linearly with the micro-batch size: a fixed part plus a part per example,
fitted on the two smallest micro-batches and extrapolated to each larger one.
"""

from __future__ import annotations

from typing import Any

from batchscale.verify.common import build_workload, workload_choice
from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, make_row

CLAIM = "accumulation"
DEFAULT_WORKLOAD = "digits-mlp"
BATCH_SIZE = 256
MICRO_BATCHES = (16, 32, 64, 128, 256)
LR = 0.1


def difference_rows(results: list[Any], config: dict[str, Any], workload: str) -> list[Row]:
    """max |accumulated - one-pass| / max |one-pass update| per form and micro-batch (predicted 0)."""
    rows = []
    for r in results:
        if r.micro_batch == r.batch_size:
            continue  # the reference itself
        cfg = {**config, "form": r.form, "batch_size": r.batch_size, "micro_batch": r.micro_batch}
        rows.append(
            make_row(
                CLAIM,
                "relative_difference",
                workload,
                0.0,
                r.max_abs_diff / r.update_max_abs,
                n_seeds=1,
                config=cfg,
                by_construction=r.by_construction,
                note=f"{r.form} form, k={r.batch_size // r.micro_batch} micro-batches of {r.micro_batch}",
            )
        )
    return rows


def linear_memory(sizes: list[int], peaks: list[float], size: int) -> float:
    """The affine model a + b * micro-batch through the two smallest sizes, evaluated at ``size``."""
    (s0, p0), (s1, p1) = sorted(zip(sizes, peaks, strict=True))[:2]
    slope = (p1 - p0) / (s1 - s0)
    return p0 + slope * (size - s0)


def memory_rows(
    results: list[Any], config: dict[str, Any], workload: str, predict=linear_memory
) -> list[Row]:
    """Measured allocation peak per micro-batch vs the linear model (one form; beyond the two fitted)."""
    mine = [r for r in results if r.form == results[0].form and r.peak_bytes is not None]
    sizes, peaks = [r.micro_batch for r in mine], [float(r.peak_bytes) for r in mine]
    fitted = sorted(sizes)[:2]
    return [
        make_row(
            CLAIM,
            "peak_bytes",
            workload,
            predict(sizes, peaks, r.micro_batch),
            float(r.peak_bytes),
            n_seeds=1,
            config={**config, "micro_batch": r.micro_batch, "fitted_on": fitted},
            note=f"allocation peak of one micro-batch of {r.micro_batch} (profiler), linear model "
            f"through micro-batches {fitted[0]} and {fitted[1]}",
        )
        for r in mine
        if r.micro_batch not in fitted
    ]


def run(opts: Options) -> list[Row]:
    from batchscale.empirical.update_stats import accumulation

    name, options = workload_choice(opts, DEFAULT_WORKLOAD)
    workload = build_workload(opts, name, options)
    batch_size = min(BATCH_SIZE, workload.n_train)
    micro = [b for b in MICRO_BATCHES if batch_size % b == 0] if batch_size == BATCH_SIZE else [batch_size]
    opts.say(f"accumulation: micro-batches {micro} into one batch of {batch_size}")
    model = workload.model(opts.seed)
    results = accumulation(
        model,
        workload.per_example_loss,
        workload.x_train,
        workload.y_train,
        batch_size=batch_size,
        micro_batches=micro,
        lr=LR,
        seed=opts.seed,
    )
    config = opts.config(CLAIM, name, workload_options=workload.options, lr=LR)
    return difference_rows(results, config, name) + memory_rows(results, config, name)
