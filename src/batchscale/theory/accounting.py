"""Epoch accounting in exact integers: steps per epoch, the last batch, updates for a budget.

Plain Python ints, no sympy, so fast code can call it. Vocabulary (docs/claims.md, "accounting"): an
epoch is one pass over all M examples, a step (iteration) is one update from one batch of m examples.
Without ``drop_last`` an epoch has ceil(M/m) steps and the last batch holds M - m*floor(M/m) examples when
m does not divide M; with ``drop_last`` the partial batch is skipped and an epoch has floor(M/m) steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchscale.errors import require
from batchscale.vocabulary import last_batch_size, steps_per_epoch


def epoch_batch_sizes(dataset_size: int, batch_size: int, drop_last: bool = False) -> list[int]:
    """The batch size of every step of one epoch, in order (all m except possibly the last).

    A list of :func:`steps_per_epoch` entries: for huge M/m use :func:`epoch_batch_counts`.
    """
    steps = steps_per_epoch(dataset_size, batch_size, drop_last)
    return [batch_size] * (steps - 1) + [last_batch_size(dataset_size, batch_size, drop_last)]


def epoch_batch_counts(dataset_size: int, batch_size: int, drop_last: bool = False) -> dict[int, int]:
    """``{batch size: number of steps with it}`` for one epoch, in O(1) (same batches as
    :func:`epoch_batch_sizes`)."""
    steps = steps_per_epoch(dataset_size, batch_size, drop_last)
    last = last_batch_size(dataset_size, batch_size, drop_last)
    counts = {batch_size: steps - 1} if steps > 1 else {}
    counts[last] = counts.get(last, 0) + 1
    return counts


def examples_per_epoch(dataset_size: int, batch_size: int, drop_last: bool = False) -> int:
    r"""Examples used in one epoch: M, or :math:`m \lfloor M/m \rfloor` with drop_last."""
    return sum(
        size * count for size, count in epoch_batch_counts(dataset_size, batch_size, drop_last).items()
    )


def updates_for_epochs(dataset_size: int, batch_size: int, epochs: int, drop_last: bool = False) -> int:
    r"""Updates in ``epochs`` whole epochs: :math:`E \cdot` :func:`steps_per_epoch`."""
    require(isinstance(epochs, int) and epochs >= 0, f"epochs must be a non-negative integer, got {epochs!r}")
    return epochs * steps_per_epoch(dataset_size, batch_size, drop_last)


def updates_for_examples(dataset_size: int, batch_size: int, examples: int, drop_last: bool = False) -> int:
    r"""Completed updates within a budget of N examples seen, epoch after epoch.

    :math:`U = \lfloor N/P \rfloor s + \lfloor (N \bmod P)/m \rfloor` with P = :func:`examples_per_epoch`
    and s = :func:`steps_per_epoch`: whole epochs, then the full batches of the unfinished epoch (a
    partial epoch never reaches its last, possibly short, batch). N is ``examples``.
    """
    require(
        isinstance(examples, int) and examples >= 0,
        f"examples must be a non-negative integer, got {examples!r}",
    )
    per_epoch = examples_per_epoch(dataset_size, batch_size, drop_last)
    epochs, rest = divmod(examples, per_epoch)
    return epochs * steps_per_epoch(dataset_size, batch_size, drop_last) + rest // batch_size


@dataclass(frozen=True)
class EpochAccounting:
    """The integers of one (dataset size, batch size, drop_last) choice, and a budget if given."""

    dataset_size: int
    batch_size: int
    drop_last: bool
    steps_per_epoch: int
    last_batch_size: int
    examples_per_epoch: int
    examples_dropped_per_epoch: int
    epochs: int | None = None
    examples: int | None = None
    updates: int | None = None


def epoch_accounting(
    dataset_size: int,
    batch_size: int,
    drop_last: bool = False,
    epochs: int | None = None,
    examples: int | None = None,
) -> EpochAccounting:
    """Every accounting integer at once; ``updates`` counts the budget of ``epochs`` or ``examples``."""
    require(epochs is None or examples is None, "give a budget in epochs or in examples, not both")
    steps = steps_per_epoch(dataset_size, batch_size, drop_last)
    used = examples_per_epoch(dataset_size, batch_size, drop_last)
    updates = None
    if epochs is not None:
        updates = updates_for_epochs(dataset_size, batch_size, epochs, drop_last)
    elif examples is not None:
        updates = updates_for_examples(dataset_size, batch_size, examples, drop_last)
    return EpochAccounting(
        dataset_size=dataset_size,
        batch_size=batch_size,
        drop_last=drop_last,
        steps_per_epoch=steps,
        last_batch_size=last_batch_size(dataset_size, batch_size, drop_last),
        examples_per_epoch=used,
        examples_dropped_per_epoch=dataset_size - used,
        epochs=epochs,
        examples=examples,
        updates=updates,
    )
