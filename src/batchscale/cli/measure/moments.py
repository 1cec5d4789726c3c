"""``batchscale measure moments``: update mean and covariance vs batch size, beside their predictions."""

from __future__ import annotations

import click

from batchscale.cli.common import FINITE, emit, progress
from batchscale.cli.measure.options import (
    build,
    common_options,
    minibatch_options,
    training,
    training_options,
    with_config,
    wrote,
)


@click.command("moments")
@click.option(
    "--lr", type=FINITE, default=0.1, show_default=True, help="eta (mean form) or eta_base (sum form)."
)
@click.option(
    "--form",
    type=click.Choice(["mean", "sum", "both"]),
    default="both",
    show_default=True,
    help="Loss form: mean (w -= lr * mean grad) or sum (w -= lr * sum of grads).",
)
@minibatch_options(
    sampling="both",
    draws=100,
    sample_help="M: draw minibatches from this many training examples (seeded subset) [default: 512 or all].",
)
@training_options(during=True)
@common_options
def moments(
    batch_sizes,
    lr,
    form,
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
    """Update mean and covariance vs batch size.

    Measured over many minibatches per m, beside the exact predictions E = -eta G and
    tr Cov = eta^2 tr(Sigma)/m (x (M-m)/(M-1) without replacement); sum form with eta_base m.
    """
    from batchscale.empirical.measure import moments_along_training

    ms = list(batch_sizes) if batch_sizes else None
    train = training(train_steps, train_lr, train_batch_size, seed)
    setup = build(
        workload,
        workload_option,
        device,
        seed,
        sample,
        cap=512,
        command="moments",
        train=(train_steps, train_lr, train_batch_size),
        lr=lr,
        draws=draws,
    )
    measured, rows = moments_along_training(
        setup,
        train,
        batch_sizes=ms,
        lr=lr,
        form=form,
        sampling=sampling,
        draws=draws,
        z=z,
        every=every if during_training else None,
        progress=progress,
    )
    emit(with_config(rows, setup, fmt), fmt)
    if plot_path and measured:
        from batchscale.report.measure_plots import plot_checks

        plot_checks(
            plot_path, measured, "trace_cov", "tr Cov[update]", "Update covariance vs batch size", True
        )
        wrote(plot_path)
