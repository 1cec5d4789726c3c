"""Options and helpers shared by the ``measure`` subcommands (parsing and formatting only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from batchscale.cli.common import (
    FINITE,
    IntList,
    device_option,
    format_option,
    plot_option,
    progress,
    seed_option,
    workload_options,
)

DEFAULT_WORKLOAD = "digits-mlp"


def common_options(func: Callable) -> Callable:
    """--workload/-W, --seed, --device, --format, --plot."""
    for decorate in (
        plot_option,
        format_option(),
        device_option,
        seed_option,
        workload_options(DEFAULT_WORKLOAD),
    ):
        func = decorate(func)
    return func


def training_options(during: bool) -> Callable:
    """--train-steps, --train-lr, --train-batch-size (and --every, --during-training when ``during``)."""

    def decorate(func: Callable) -> Callable:
        options = [
            click.option(
                "--train-steps",
                type=int,
                default=0,
                show_default=True,
                help="Plain SGD steps (mean loss) from the seeded initial point before measuring"
                + (" (or during which to measure, with --during-training)." if during else "."),
            ),
            click.option(
                "--train-lr",
                type=FINITE,
                default=0.1,
                show_default=True,
                help="Learning rate of those SGD steps.",
            ),
            click.option(
                "--train-batch-size",
                type=int,
                default=32,
                show_default=True,
                help="Batch size of those SGD steps (reshuffled each epoch, last partial batch dropped).",
            ),
        ]
        if during:
            options += [
                click.option(
                    "--during-training",
                    is_flag=True,
                    help="Measure at step 0, every --every steps and at the end of --train-steps.",
                ),
                click.option(
                    "--every", type=int, default=100, show_default=True, help="Steps between measurements."
                ),
            ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def sample_option(help_text: str, default: int | None) -> Callable:
    return click.option("--sample", type=int, default=default, show_default=True, help=help_text)


def minibatch_options(sampling: str, draws: int, sample_help: str) -> Callable:
    """--batch-sizes, --sampling, --draws, --sample and --z for the commands that draw many minibatches."""
    options = [
        click.option(
            "--batch-sizes",
            type=IntList(),
            default=None,
            help="Batch sizes, e.g. 1..512 or 1,4,16 [default: 1..M].",
        ),
        click.option(
            "--sampling",
            type=click.Choice(["with", "without", "both"]),
            default=sampling,
            show_default=True,
            help="Minibatches drawn with or without replacement.",
        ),
        click.option(
            "--draws", type=int, default=draws, show_default=True, help="Minibatches drawn per batch size."
        ),
        sample_option(sample_help, None),
        click.option(
            "--z", "z", type=FINITE, default=4.0, show_default=True, help="Tolerance in standard errors."
        ),
    ]

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def training(train_steps: int, train_lr: float, train_batch_size: int, seed: int) -> Any:
    """The :class:`~batchscale.empirical.measure.Training` of the --train-* options."""
    from batchscale.empirical.measure import Training

    return Training(steps=train_steps, lr=train_lr, batch_size=train_batch_size, seed=seed)


def build(
    workload: str,
    workload_option: Sequence[str],
    device: str,
    seed: int,
    sample: int | None,
    *,
    cap: int | None = None,
    **extra: Any,
) -> Any:
    """:func:`~batchscale.empirical.measure.build_setup` with the -W options."""
    from batchscale.empirical.measure import build_setup

    return build_setup(workload, dict(workload_option), device, seed, sample, cap=cap, **extra)


def with_config(rows: list[dict[str, Any]], setup: Any, fmt: str) -> list[dict[str, Any]]:
    """Attach the resolved configuration to every row for json/csv (tables stay readable)."""
    return rows if fmt == "table" else [{**row, "config": setup.config} for row in rows]


def columns_in(rows: Sequence[dict[str, Any]], order: Sequence[str]) -> list[str]:
    """``order`` restricted to the columns present, then any others (e.g. config)."""
    present = {k for row in rows for k in row}
    return [c for c in order if c in present] + sorted(present - set(order))


def wrote(path: str) -> None:
    progress(f"wrote {path}")
