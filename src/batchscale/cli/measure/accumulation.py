"""``batchscale measure accumulation``: k micro-batches vs one batch, and memory per micro-batch."""

from __future__ import annotations

import click

from batchscale.cli.common import FINITE, IntList, emit, progress
from batchscale.cli.measure.options import (
    build,
    common_options,
    training,
    training_options,
    with_config,
    wrote,
)


@click.command("accumulation")
@click.option(
    "--batch-size", type=int, default=256, show_default=True, help="The batch size m of one update."
)
@click.option(
    "--micro-batches",
    type=IntList(),
    default=None,
    help="Micro-batch sizes dividing m, e.g. 1..256 or 4,12 [default: the powers of two dividing m, and m].",
)
@click.option(
    "--lr", type=FINITE, default=0.1, show_default=True, help="eta (mean form) or eta_base (sum form)."
)
@click.option(
    "--form",
    type=click.Choice(["mean", "sum", "both"]),
    default="both",
    show_default=True,
    help="Loss form of the update.",
)
@training_options(during=False)
@common_options
def accumulation(
    batch_size,
    micro_batches,
    lr,
    form,
    train_steps,
    train_lr,
    train_batch_size,
    workload,
    workload_option,
    seed,
    device,
    fmt,
    plot_path,
) -> None:
    """Gradient accumulation vs one batch, and memory.

    The update from k micro-batches vs one batch (max abs difference, both loss forms) and the bytes
    autograd saves for backward per micro-batch (CUDA: also peak allocated memory).
    """
    from batchscale.empirical.measure import accumulation_after_training

    sizes = list(micro_batches) if micro_batches else None
    train = training(train_steps, train_lr, train_batch_size, seed)
    setup = build(
        workload,
        workload_option,
        device,
        seed,
        None,
        command="accumulation",
        train=(train_steps, train_lr, train_batch_size),
        lr=lr,
    )
    results = accumulation_after_training(
        setup, train, batch_size=batch_size, micro_batches=sizes, lr=lr, form=form, progress=progress
    )
    rows = [r if isinstance(r, dict) else r.as_row() for r in results]
    emit(with_config(rows, setup, fmt), fmt)
    if plot_path and rows and "status" not in rows[0]:
        from batchscale.report.measure_plots import plot_accumulation

        plot_accumulation(plot_path, results)
        wrote(plot_path)
