"""``batchscale measure sharpness``: top Hessian eigenvalues, at a point or along training."""

from __future__ import annotations

import click

from batchscale.cli.common import FINITE, emit, progress
from batchscale.cli.measure.options import (
    build,
    common_options,
    sample_option,
    training,
    training_options,
    with_config,
    wrote,
)
from batchscale.errors import require
from batchscale.progress import counter


@click.command("sharpness")
@click.option(
    "--method",
    type=click.Choice(["lanczos", "power"]),
    default="lanczos",
    show_default=True,
    help="Lanczos (scipy eigsh on HVPs) or power iteration (top eigenvalue only).",
)
@click.option("--k", "k", type=int, default=1, show_default=True, help="How many top eigenvalues (lanczos).")
@click.option(
    "--iters", type=int, default=100, show_default=True, help="Power iteration: at most this many HVPs."
)
@click.option(
    "--tol", type=FINITE, default=1e-4, show_default=True, help="Relative tolerance of the eigenvalues."
)
@sample_option("Hessian of the mean loss over this many training examples (seeded); default all.", None)
@training_options(during=True)
@common_options
def sharpness(
    method,
    k,
    iters,
    tol,
    sample,
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
    """Top Hessian eigenvalues (sharpness).

    Lanczos or power iteration on Hessian-vector products of the mean training loss.
    """
    from batchscale.empirical.measure import sharpness_along_training

    train = training(train_steps, train_lr, train_batch_size, seed)
    require(tol > 0, f"--tol must be positive, got {tol}")
    require(
        plot_path is None or during_training, "--plot draws sharpness along training: add --during-training"
    )
    setup = build(
        workload,
        workload_option,
        device,
        seed,
        sample,
        command="sharpness",
        train=(train_steps, train_lr, train_batch_size),
        method=method,
    )
    # the eigensolver stops when it converges: a count and rate of its products, no total
    with counter(progress, None, unit="HVP", desc="Hessian-vector products") as products:
        rows = sharpness_along_training(
            setup,
            train,
            method=method,
            k=k,
            iters=iters,
            tol=tol,
            every=every if during_training else None,
            on_hvp=lambda n: products.update(),
            progress=progress,
        )
    emit(with_config(rows, setup, fmt), fmt)
    if plot_path:
        from batchscale.report.measure_plots import plot_sharpness

        plot_sharpness(plot_path, rows, train_lr)
        wrote(plot_path)
