"""``batchscale measure cosine``: minibatch vs full gradient cosine, beside its prediction."""

from __future__ import annotations

import click

from batchscale.cli.common import emit, progress
from batchscale.cli.measure.options import (
    build,
    common_options,
    minibatch_options,
    training,
    training_options,
    with_config,
    wrote,
)


@click.command("cosine")
@minibatch_options(
    sampling="without",
    draws=50,
    sample_help="M: the training examples (seeded subset) for G and the minibatches [default: 1024 or all].",
)
@training_options(during=True)
@common_options
def cosine(
    batch_sizes,
    sampling,
    draws,
    sample,
    z,
    train_steps,
    train_lr,
    train_batch_size,
    during_training,
    every,
    workload,
    workload_option,
    seed,
    device,
    fmt,
    plot_path,
) -> None:
    """Minibatch vs full gradient cosine.

    Mean cos(g_B, G) over many minibatches per m, beside the approximation 1/sqrt(1 + B_simple/m)
    (x (M-m)/(M-1) inside without replacement).
    """
    from batchscale.empirical.measure import cosine_along_training

    ms = list(batch_sizes) if batch_sizes else None
    train = training(train_steps, train_lr, train_batch_size, seed)
    setup = build(
        workload,
        workload_option,
        device,
        seed,
        sample,
        cap=1024,
        command="cosine",
        train=(train_steps, train_lr, train_batch_size),
        draws=draws,
    )
    measured, rows = cosine_along_training(
        setup,
        train,
        batch_sizes=ms,
        sampling=sampling,
        draws=draws,
        z=z,
        every=every if during_training else None,
        progress=progress,
    )
    emit(with_config(rows, setup, fmt), fmt)
    if plot_path and measured:
        from batchscale.report.measure_plots import plot_checks

        plot_checks(plot_path, measured, "cosine", "cos(g_B, G)", "Minibatch vs full gradient", False)
        wrote(plot_path)
