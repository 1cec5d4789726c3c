"""The divergence-boundary search: brackets from a known threshold, and a tiny real search in a store."""

from __future__ import annotations

import math

import pytest

from batchscale.empirical.sweep.boundary import BoundarySearch, boundary_chain, bracket
from batchscale.empirical.trials import TrialResult


def drive(chain, threshold: dict[int, float]) -> tuple[list, int]:
    """Run a chain with fake trials: seed s diverges iff its rate > threshold[s]."""
    n = 0
    try:
        round_ = next(chain)
        while True:
            results = {}
            for c in round_.configs:
                n += 1
                status = "diverged" if c.learning_rate > threshold[c.seed] else "complete"
                results[c.trial_id()] = TrialResult(c, status, None, None, None, None)
            round_ = chain.send(results)
    except StopIteration as stop:
        return stop.value, n


@pytest.mark.parametrize("guess", [0.01, 1.0, 30.0, 2000.0])
def test_the_bracket_holds_each_seeds_threshold(guess):
    search = BoundarySearch("digits-mlp", seeds=(0, 1), bisections=3)
    threshold = {0: 3.0, 1: 5.0}
    found, n = drive(boundary_chain(search, 8, guess), threshold)
    for b in found:  # the coarse grid and two extensions of 4 octaves reach each threshold
        assert b.low <= threshold[b.seed] < b.high
        assert b.high / b.low == pytest.approx(2 ** (1 / 8))
        assert b.boundary == pytest.approx(math.sqrt(b.low * b.high))
    assert n <= 2 * (8 + 2 * 4 + 3)


def test_bracket_reads_the_first_divergence():
    assert bracket({1.0: False, 2.0: True, 4.0: False}) == (1.0, 2.0)
    assert bracket({1.0: False, 2.0: False}) == (2.0, None)
    assert bracket({1.0: True}) == (None, 1.0)


def test_a_tiny_search_is_stored_and_reused(tmp_path):
    from batchscale.empirical.executors import ExecutorConfig
    from batchscale.empirical.sweep.boundary import run_boundary_search

    search = BoundarySearch("digits-mlp", (("hidden", 8),), batch_sizes=(64,), seeds=(0, 1), max_steps=10,
                            bisections=1)
    db = tmp_path / "runs.sqlite"
    first, stats = run_boundary_search(search, [1.0], store=db, executor=ExecutorConfig(name="inline"),
                                       n_train=1437)
    again, stats2 = run_boundary_search(search, [1.0], store=db, executor=ExecutorConfig(name="inline"),
                                        n_train=1437)
    assert stats.trained > 0 and stats2.trained == 0 and again == first
    assert all(b.low is not None and b.high is not None and b.low < b.high for b in first[64])


def test_a_threshold_beyond_the_extensions_stays_open():
    search = BoundarySearch("digits-mlp", seeds=(0,), bisections=2)
    found, _ = drive(boundary_chain(search, 8, 1.0), {0: 1e9})
    assert found[0].high is None and math.isnan(found[0].boundary)
