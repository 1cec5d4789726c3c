"""``batchscale measure compare-estimators``: five noise-scale estimators at the same checkpoints."""

from __future__ import annotations

import math

import click

from batchscale.cli.common import emit, progress
from batchscale.cli.measure.options import (
    build,
    columns_in,
    common_options,
    sample_option,
    training,
    training_options,
    with_config,
    wrote,
)

ESTIMATOR_NAMES = ("exact", "fast", "two-batch", "micro-batch", "consecutive")
COLUMNS = ["step", "estimator", "b_simple", "ci_low", "ci_high", "exact_b_simple", "ratio_to_exact",
           "covers_exact", "draws", "status"]


@click.command("compare-estimators")
@click.option("--batch-size", "batch_size", type=click.IntRange(min=2), default=64, show_default=True,
              help="B: the big batch of two-batch, the batch split into micro-batches, the training-step "
              "batch of the consecutive estimator.")
@click.option("--small", type=click.IntRange(min=1), default=8, show_default=True,
              help="The small batch of the two-batch estimator.")
@click.option("--micro-batches", type=click.IntRange(min=2), default=4, show_default=True,
              help="Accumulation micro-batches per batch (must divide --batch-size).")
@click.option("--window", type=click.IntRange(min=2), default=8, show_default=True,
              help="Consecutive estimator: training steps whose mean gradient is the 'big batch'.")
@click.option("--draws", type=click.IntRange(min=2), default=40, show_default=True,
              help="Independent draws per stochastic estimator (intervals bootstrap over them).")
@click.option("--estimators", type=click.Choice(ESTIMATOR_NAMES), multiple=True,
              help="Estimators to run, repeatable [default: all five].")
@sample_option("M: measure on this many training examples (seeded) [default: 1024 or all].", None)
@training_options(during=True)
@common_options
def compare_estimators(batch_size, small, micro_batches, window, draws, estimators, sample, train_steps,
                       train_lr, train_batch_size, during_training, every, workload, workload_option, seed,
                       device, fmt, plot_path) -> None:
    """Noise-scale estimators side by side, as ratios to the exact value.

    At the same checkpoints of one run: exact per-example gradients (the reference), the fast per-example
    norms, the two-batch estimator, the accumulation micro-batch estimator, and the consecutive-step
    estimator that some training frameworks log (small = this step's batch, big = the mean of the last
    --window steps; the parameters move between them, with --train-lr). Each stochastic estimator gives a
    bootstrap interval over --draws draws and whether it covers the exact value.
    """
    from batchscale.empirical.estimators import EstimatorOptions, estimators_along_training

    train = training(train_steps, train_lr, train_batch_size, seed)
    chosen = tuple(estimators or ESTIMATOR_NAMES)
    opts = EstimatorOptions(batch_size=batch_size, small=small, micro_batches=micro_batches, window=window,
                            lr=train_lr, draws=draws, seed=seed, estimators=chosen)
    setup = build(workload, workload_option, device, seed, sample, cap=1024, command="compare-estimators",
                  train=(train_steps, train_lr, train_batch_size), batch_size=batch_size, small=small,
                  micro_batches=micro_batches, window=window, draws=draws)
    opts.check(setup.population)
    rows = estimators_along_training(setup, train, opts, every=every if during_training else None,
                                     progress=progress)
    emit(with_config(rows, setup, fmt), fmt, columns=columns_in(rows, COLUMNS) if fmt == "table" else None)
    if plot_path:
        _plot(plot_path, rows, workload)
        wrote(plot_path)


def _plot(path: str, rows: list[dict], workload: str) -> None:
    """Each estimator's B_simple / exact along training, with its bootstrap interval as error bars."""
    from batchscale.report.plots import plot_series

    steps = sorted({r["step"] for r in rows if r.get("estimator")})
    ys, errs = {}, {}
    for name in dict.fromkeys(r["estimator"] for r in rows if r.get("estimator")):
        by_step = {r["step"]: r for r in rows if r.get("estimator") == name}
        ratio = [by_step[s]["ratio_to_exact"] if s in by_step else math.nan for s in steps]
        below = [by_step[s]["ratio_to_exact"] - by_step[s]["ci_low"] / by_step[s]["exact_b_simple"]
                 if s in by_step else math.nan for s in steps]
        above = [by_step[s]["ci_high"] / by_step[s]["exact_b_simple"] - by_step[s]["ratio_to_exact"]
                 if s in by_step else math.nan for s in steps]
        ys[name], errs[name] = ratio, [below, above]
    plot_series(path, steps, ys, xlabel="training step", ylabel="B_simple / exact B_simple", logy=True,
                title=f"{workload}: noise-scale estimators vs the exact value", yerr=errs)
