"""``batchscale derive accounting``: the integers of an epoch (steps, last batch, budgets)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from batchscale.cli.common import IntList, emit
from batchscale.cli.derive.options import format_option


@click.command()
@click.option("--dataset-size", "-M", type=int, required=True, help="Number of examples M in the dataset.")
@click.option(
    "--batch-size",
    "-m",
    type=IntList(minimum=None),
    required=True,
    help="Batch size m, or a list: 1,10,100 or 4..64 (powers of two).",
)
@click.option("--drop-last", is_flag=True, help="Drop the last partial batch of every epoch.")
@click.option("--epochs", type=int, default=None, help="Also count the updates in this many epochs.")
@click.option("--examples", type=int, default=None, help="Also count the updates in this many examples seen.")
@format_option()
def accounting(
    dataset_size: int,
    batch_size: list[int],
    drop_last: bool,
    epochs: int | None,
    examples: int | None,
    fmt: str,
) -> None:
    """Epoch integers: steps, last batch, updates.

    Steps per epoch, the last batch and the updates for a budget of epochs or examples, as exact integers.

    Steps per epoch are ceil(M/m), or floor(M/m) with --drop-last; the last batch holds M mod m examples
    when m does not divide M. A budget of examples counts the updates completed within it.
    """
    from batchscale.theory.accounting import epoch_accounting

    sizes = batch_size
    rows = [
        vars(epoch_accounting(dataset_size, size, drop_last, epochs=epochs, examples=examples))
        for size in sizes
    ]
    if epochs is None and examples is None:
        rows = [{k: v for k, v in row.items() if k not in ("epochs", "examples", "updates")} for row in rows]
    if fmt == "json":
        emit(rows, "json")
    elif fmt == "latex":
        click.echo(_accounting_latex(rows))
    else:
        emit(rows, "table")


def _accounting_latex(rows: Sequence[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        big_m, small_m = row["dataset_size"], row["batch_size"]
        op = r"\lfloor %d/%d \rfloor" if row["drop_last"] else r"\lceil %d/%d \rceil"
        lines.append(
            f"{op % (big_m, small_m)} = {row['steps_per_epoch']}"
            + rf",\quad m_{{last}} = {row['last_batch_size']}"
        )
        if row.get("updates") is not None:
            lines[-1] += rf",\quad U = {row['updates']}"
    return "\n".join(lines)
