"""``accounting``: loaders vs theory, the last batch's variance, and planted wrong predictions."""

from __future__ import annotations

import pytest

from batchscale import verify
from batchscale.verify import accounting


@pytest.fixture(scope="module")
def rows():
    return verify.run("accounting", quick=True, workload_options={"hidden": 8}, device="cpu")


def test_quick_run_passes_with_real_loaders(rows):
    assert {r.verdict for r in rows} == {"pass"}, verify.summary(rows)
    loaders = {r.config["loader"] for r in rows if r.quantity == "steps_per_epoch"}
    assert loaders == {"DataLoader", "BatchOrder"}
    last = next(r for r in rows if r.quantity == "last_batch_trace_cov")
    first = next(r for r in rows if r.quantity == "full_batch_trace_cov")
    assert last.config["batch_size"] == 37 and first.config["batch_size"] == 100
    assert last.measured > 2 * first.measured  # the small last batch is the noisier step
    assert all(r.config["versions"]["torch"] for r in rows)


def test_planted_ceil_with_drop_last_fails():
    def ceil_always(dataset_size, batch_size, drop_last):
        return accounting.predicted_counts(dataset_size, batch_size, False)

    planted = accounting.count_rows([(1050, 100)], 0, {}, "w", predict=ceil_always)
    assert {r.verdict for r in planted if not r.config["drop_last"]} == {"pass"}
    assert {r.verdict for r in planted if r.config["drop_last"]} == {"fail"}


def test_planted_last_batch_as_a_full_batch_fails(rows):
    measured = [
        accounting.BatchVariance(
            r.config["batch"], r.config["batch_size"], r.measured, r.stderr, r.config["draws"]
        )
        for r in rows
        if r.quantity.endswith("trace_cov")
    ]
    trace_cov = next(r for r in rows if r.quantity == "last_batch_trace_cov").predicted / (
        accounting.predicted_trace_cov(1437, 37, 1.0)
    )

    def full_size(population, batch_size, trace):  # the nearest wrong prediction: every batch has m = 100
        return accounting.predicted_trace_cov(population, 100, trace)

    planted = accounting.variance_rows(measured, trace_cov, 1437, {}, "w", predict=full_size)
    verdicts = {r.quantity: r.verdict for r in planted}
    assert verdicts == {"full_batch_trace_cov": "pass", "last_batch_trace_cov": "fail"}
