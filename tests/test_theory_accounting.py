"""Epoch accounting: the example of docs/claims.md (accounting: 1050 examples at m=100), a brute-force batch
loop, and hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchscale.errors import InputError
from batchscale.theory import accounting as acc


def batches_by_loop(dataset_size: int, batch_size: int, drop_last: bool) -> list[int]:
    """What a plain data loader yields: walk the indices, cut every batch_size."""
    sizes, start = [], 0
    while start < dataset_size:
        size = min(batch_size, dataset_size - start)
        if size == batch_size or not drop_last:
            sizes.append(size)
        start += batch_size
    return sizes


@pytest.mark.parametrize(
    "dataset_size, batch_size, drop_last, steps, last",
    [
        (1050, 100, False, 11, 50),
        (1050, 100, True, 10, 100),
        (1000, 100, False, 10, 100),
        (1000, 100, True, 10, 100),
        (7, 1, False, 7, 1),
        (7, 7, False, 1, 7),
        (7, 10, False, 1, 7),
    ],
    ids=["claims-1050-100", "claims-drop-last", "divides", "divides-drop", "online", "full-batch", "m>M"],
)
def test_steps_and_last_batch(dataset_size, batch_size, drop_last, steps, last):
    assert acc.steps_per_epoch(dataset_size, batch_size, drop_last) == steps
    assert acc.last_batch_size(dataset_size, batch_size, drop_last) == last


def test_budgets():
    # 1050 at m=100: 11 updates per epoch; 2500 examples = 2 epochs (2100) + 4 full batches of 100
    assert acc.updates_for_epochs(1050, 100, 3) == 33
    assert acc.updates_for_examples(1050, 100, 2500) == 26
    # drop_last: 1000 examples per epoch, 10 updates each
    assert acc.updates_for_examples(1050, 100, 2500, drop_last=True) == 25
    summary = acc.epoch_accounting(1050, 100, examples=2500)
    assert (summary.steps_per_epoch, summary.last_batch_size, summary.updates) == (11, 50, 26)


sizes = st.integers(min_value=1, max_value=5000)


@settings(max_examples=300, deadline=None)
@given(dataset_size=sizes, batch_size=sizes, drop_last=st.booleans())
def test_epoch_matches_a_plain_loader_loop(dataset_size, batch_size, drop_last):
    if drop_last and batch_size > dataset_size:
        with pytest.raises(InputError):
            acc.steps_per_epoch(dataset_size, batch_size, drop_last)
        return
    loop = batches_by_loop(dataset_size, batch_size, drop_last)
    assert acc.epoch_batch_sizes(dataset_size, batch_size, drop_last) == loop
    assert acc.steps_per_epoch(dataset_size, batch_size, drop_last) == len(loop)
    assert acc.examples_per_epoch(dataset_size, batch_size, drop_last) == sum(loop)
    counts = acc.epoch_batch_counts(dataset_size, batch_size, drop_last)
    assert counts == {size: loop.count(size) for size in set(loop)}
    if not drop_last:
        assert sum(loop) == dataset_size
        assert len(loop) == math.ceil(dataset_size / batch_size)
    else:
        assert len(loop) == dataset_size // batch_size
        assert dataset_size - sum(loop) < batch_size


@settings(max_examples=200, deadline=None)
@given(
    dataset_size=st.integers(1, 300),
    batch_size=st.integers(1, 300),
    examples=st.integers(0, 3000),
    drop_last=st.booleans(),
)
def test_updates_for_examples_matches_a_step_loop(dataset_size, batch_size, examples, drop_last):
    if drop_last and batch_size > dataset_size:
        return
    epoch = batches_by_loop(dataset_size, batch_size, drop_last)
    updates, seen, i = 0, 0, 0
    while seen + epoch[i % len(epoch)] <= examples:  # take a step only if its batch fits the budget
        seen += epoch[i % len(epoch)]
        updates += 1
        i += 1
    assert acc.updates_for_examples(dataset_size, batch_size, examples, drop_last) == updates


def test_huge_datasets_are_counted_not_listed():
    """M/m = 10^29 steps: the integers come out exactly without building a list of batches."""
    big = 10**30 + 1
    summary = acc.epoch_accounting(big, 7, examples=10**26)
    assert summary.steps_per_epoch == big // 7 + 1 and summary.last_batch_size == big % 7
    assert summary.examples_per_epoch == big and summary.updates == 10**26 // 7
    assert acc.epoch_batch_counts(big, 7, drop_last=True) == {7: big // 7}


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: acc.steps_per_epoch(0, 1), "dataset_size must be a positive integer, got 0"),
        (lambda: acc.steps_per_epoch(10, 0), "batch_size must be a positive integer, got 0"),
        (lambda: acc.steps_per_epoch(10, -3), "got -3"),
        (lambda: acc.steps_per_epoch(10, 2.5), "got 2.5"),
        (lambda: acc.last_batch_size(10, 20, drop_last=True), "leaves no batch"),
        (lambda: acc.updates_for_examples(10, 2, -1), "examples must be"),
        (lambda: acc.epoch_accounting(10, 2, epochs=1, examples=3), "not both"),
    ],
    ids=["M=0", "m=0", "m<0", "m-float", "drop-all", "negative-budget", "two-budgets"],
)
def test_bad_input(call, fragment):
    with pytest.raises(InputError, match=fragment):
        call()
