"""``staleness``: n small steps vs one big step on a real network; planted wrong predictions fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batchscale.theory.staleness import leading_term as theory_leading_term
from batchscale.verify import registry, staleness
from batchscale.verify.common import build_workload

TINY = {"dim": 3, "student_hidden": 4, "n_train": 64, "n_test": 16}


@pytest.fixture(scope="module")
def workload():
    return build_workload(registry.resolve(device="cpu"), "teacher-student", TINY)


@pytest.fixture(scope="module")
def runs(workload):
    return [staleness.measure_seed(workload, seed, batch_size=8) for seed in (0, 1)]


def test_slope_two_and_the_predicted_term_pass(runs):
    rows = staleness.staleness_rows(runs, {}, "teacher-student")
    assert [r.verdict for r in rows] == ["pass", "pass"], [r.reason for r in rows]


def test_planted_slope_one_fails(runs):
    rows = staleness.staleness_rows(runs, {}, "teacher-student", predicted_slope=1.0)
    assert rows[0].verdict == "fail"


def test_planted_term_without_the_hessian_fails(runs):
    def without_h(run, lr):
        return lr**2 * run.without_h

    rows = staleness.staleness_rows(runs, {}, "teacher-student", predicted=without_h)
    assert rows[1].verdict == "fail"


def test_hvp_leading_term_equals_theory_on_explicit_hessians(workload):
    """The HVP evaluation is theory.staleness.leading_term on the batches' explicit Hessians."""
    model = workload.model(0).double()
    loss_fn = workload.per_example_loss
    x, y = workload.x_train.double(), workload.y_train.double()
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]
    hvp_term, _ = staleness.leading_term(model, loss_fn, batches)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()

    def hessian(xb, yb):
        def loss(vector):
            pieces = vector.split([s.numel() for s in shapes])
            parts = {n: c.view(s) for n, c, s in zip(names, pieces, shapes, strict=True)}
            return loss_fn(torch.func.functional_call(model, parts, (xb,)), yb).mean()

        return torch.autograd.functional.hessian(loss, flat).numpy()  # (P, P)

    from batchscale.empirical.gradients import batch_gradient

    grads = np.stack([batch_gradient(model, loss_fn, xb, yb).numpy() for xb, yb in batches])
    hessians = np.stack([hessian(xb, yb) for xb, yb in batches])
    expected = theory_leading_term(hessians, grads, lr=1.0)
    np.testing.assert_allclose(hvp_term.numpy(), expected, rtol=1e-9, atol=1e-12)
