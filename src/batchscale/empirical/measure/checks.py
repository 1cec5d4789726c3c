"""Update moments, cosine, accumulation and sharpness at checkpoints, each beside its prediction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from batchscale.empirical.gradients import (
    SAMPLINGS,
    gradient_statistics,
)
from batchscale.empirical.measure.training import (
    Checkpoint,
    Progress,
    Setup,
    Training,
    _quiet,
    check_sizes,
    choices,
    divisor_sizes,
    measure_along_training,
    powers_of_two_up_to,
    status_row,
    train_loss,
)
from batchscale.errors import require
from batchscale.vocabulary import LOSS_FORMS


def checks_along_training(
    setup: Setup,
    training: Training,
    every: int | None,
    measure_at: Callable[[int, Any], list],
    progress: Progress = _quiet,
) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
    """At each checkpoint: exact per-example statistics, then ``measure_at(step, stats)``.

    ``measure_at`` returns ``(check, row)`` pairs; the result is every ``(step, check)`` (for plots) and
    the rows, with a ``step`` column when measuring along training (``every`` given).
    """

    def at(point: Checkpoint) -> list[tuple[Any, dict[str, Any]]]:
        progress(f"step {point.step}: exact per-example statistics over M={setup.population} examples")
        stats = gradient_statistics(setup.model, setup.loss_fn, setup.x, setup.y, seed=training.seed)
        return measure_at(point.step, stats)

    measured: list[tuple[int, Any]] = []
    rows: list[dict[str, Any]] = []
    for point, pairs in measure_along_training(setup, training, at, every=every, progress=progress):
        if point.status != "ok":
            rows.append(status_row(point))
        for check, row in pairs:
            measured.append((point.step, check))
            rows.append({"step": point.step, **row} if every is not None else row)
    return measured, rows


def moments_along_training(
    setup: Setup,
    training: Training,
    *,
    batch_sizes: Sequence[int] | None,
    lr: float,
    form: str = "both",
    sampling: str = "both",
    draws: int = 100,
    z: float = 4.0,
    every: int | None = None,
    progress: Progress = _quiet,
) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
    """``measure moments``: :func:`~batchscale.empirical.update_stats.update_moments` at each checkpoint
    (batch sizes default to the powers of two up to M; ``form``/``sampling`` may be ``both``)."""
    from batchscale.empirical.update_stats import update_moments

    require(lr > 0, f"--lr must be positive, got {lr}")
    require(z > 0, f"--z must be positive, got {z}")
    ms = list(batch_sizes) if batch_sizes else powers_of_two_up_to(setup.population)
    check_sizes(ms, setup.population)

    def measure_at(step: int, stats: Any) -> list:
        progress(f"step {step}: drawing {draws} minibatches for each of {len(ms)} batch sizes")
        checks = update_moments(
            setup.model,
            setup.loss_fn,
            setup.x,
            setup.y,
            stats=stats,
            batch_sizes=ms,
            lr=lr,
            forms=choices(form, LOSS_FORMS),
            samplings=choices(sampling, SAMPLINGS),
            draws=draws,
            seed=training.seed,
            z=z,
            progress=progress,
        )
        return [(c, c.as_row()) for c in checks]

    return checks_along_training(setup, training, every, measure_at, progress)


def cosine_along_training(
    setup: Setup,
    training: Training,
    *,
    batch_sizes: Sequence[int] | None,
    sampling: str = "without",
    draws: int = 50,
    z: float = 4.0,
    every: int | None = None,
    progress: Progress = _quiet,
) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
    """``measure cosine``: :func:`~batchscale.empirical.update_stats.gradient_cosine` at each checkpoint."""
    from batchscale.empirical.update_stats import gradient_cosine, gram_statistics

    require(z > 0, f"--z must be positive, got {z}")
    ms = list(batch_sizes) if batch_sizes else powers_of_two_up_to(setup.population)
    check_sizes(ms, setup.population)

    def measure_at(step: int, stats: Any) -> list:
        pairs = []
        gram = gram_statistics(setup.model, setup.loss_fn, setup.x, setup.y)  # the prediction's statistics
        for s in choices(sampling, SAMPLINGS):
            progress(f"step {step}: {draws} minibatches ({s} replacement) for each of {len(ms)} sizes")
            checks = gradient_cosine(
                setup.model,
                setup.loss_fn,
                setup.x,
                setup.y,
                stats=stats,
                batch_sizes=ms,
                sampling=s,
                draws=draws,
                seed=training.seed,
                z=z,
                gram=gram,
                progress=progress,
            )
            for c in checks:
                row = {k: v for k, v in c.as_row().items() if k != "form"} | {"b_simple": stats.b_simple}
                pairs.append((c, row))
        return pairs

    return checks_along_training(setup, training, every, measure_at, progress)


def accumulation_after_training(
    setup: Setup,
    training: Training,
    *,
    batch_size: int,
    micro_batches: Sequence[int] | None,
    lr: float,
    form: str = "both",
    progress: Progress = _quiet,
) -> list[Any]:
    """``measure accumulation``: train, then :func:`~batchscale.empirical.update_stats.accumulation`
    (micro-batches default to :func:`divisor_sizes`). Returns AccumulationResults, or the one status
    row of a diverged training run."""
    from batchscale.empirical.update_stats import accumulation, check_micro_batches

    require(lr > 0, f"--lr must be positive, got {lr}")
    sizes = list(micro_batches) if micro_batches else divisor_sizes(batch_size)
    check_micro_batches(batch_size, sizes)
    check_sizes([batch_size], setup.population)

    def measure_at(point: Checkpoint) -> list[Any]:
        progress(f"accumulating micro-batches {sizes} into one batch of {batch_size}")
        return accumulation(
            setup.model,
            setup.loss_fn,
            setup.x,
            setup.y,
            batch_size=batch_size,
            micro_batches=sizes,
            lr=lr,
            forms=choices(form, LOSS_FORMS),
            seed=training.seed,
        )

    ((point, results),) = measure_along_training(setup, training, measure_at, progress=progress)[-1:]
    return results if point.status == "ok" else [status_row(point)]


def sharpness_along_training(
    setup: Setup,
    training: Training,
    *,
    method: str = "lanczos",
    k: int = 1,
    iters: int = 100,
    tol: float = 1e-4,
    every: int | None = None,
    on_hvp: Callable[[int], None] | None = None,
    progress: Progress = _quiet,
) -> list[dict[str, Any]]:
    """``measure sharpness``: rows (step, train_loss, one per eigenvalue) at each checkpoint."""
    from batchscale.empirical.curvature import sharpness

    require(tol > 0, f"--tol must be positive, got {tol}")

    def measure_at(point: Checkpoint) -> list[dict[str, Any]]:
        progress(f"sharpness at step {point.step} ({method})")
        result = sharpness(
            setup.model,
            setup.loss_fn,
            setup.x,
            setup.y,
            k=k,
            method=method,
            iters=iters,
            tol=tol,
            seed=training.seed,
            on_hvp=on_hvp,
        )
        loss = train_loss(setup)
        return [{"step": point.step, "train_loss": loss, **row} for row in result.as_rows()]

    measured = measure_along_training(setup, training, measure_at, every=every, progress=progress)
    return [row for point, rows in measured for row in (rows or [status_row(point)])]
