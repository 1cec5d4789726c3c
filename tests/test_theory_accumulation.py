"""Gradient accumulation: k micro-batches equal one batch, symbolically and in floating point."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from batchscale.errors import InputError
from batchscale.theory import accumulation as ac

FLOAT64_RTOL = 1e-13  # a few ulps of the summed gradient: only the order of summation differs
FLOAT32_RTOL = 1e-5

SPLITS = [(12, 1), (12, 2), (12, 3), (12, 4), (12, 6), (12, 12), (7, 7), (5, 1)]
CASES = [pytest.param(m, k, form, id=f"m{m}-k{k}-{form}") for m, k in SPLITS for form in ("mean", "sum")]


def grads(m: int, dim: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(m, dim)) + 1.0  # (m, d)


@pytest.mark.parametrize("m, k, form", CASES)
def test_accumulated_equals_one_batch_numerically(m, k, form):
    g = grads(m)
    one_batch = g.mean(axis=0) if form == "mean" else g.sum(axis=0)  # written out, not the library's
    np.testing.assert_allclose(ac.accumulated_gradient(g, k, form), one_batch, rtol=FLOAT64_RTOL)
    g32 = g.astype(np.float32)
    accumulated32 = ac.accumulated_gradient(g32, k, form)
    assert accumulated32.dtype == np.float32
    np.testing.assert_allclose(accumulated32, one_batch, rtol=FLOAT32_RTOL)


@pytest.mark.parametrize("m, k, form", CASES)
def test_identity_holds_symbolically_and_matches_numbers(m, k, form):
    identity = ac.accumulation_identity(form, m, k)
    assert identity.holds
    g = grads(m, dim=1)[:, 0]
    values = {ac.g[i + 1]: float(g[i]) for i in range(m)}
    assert float(identity.accumulated.subs(values)) == pytest.approx(
        g.mean() if form == "mean" else g.sum(), rel=1e-12
    )


def test_general_statement_reduces_for_concrete_sizes():
    for form in ("mean", "sum"):
        statement = ac.accumulation_identity(form).statement
        b, k = ac.b, ac.k
        lhs = statement.lhs.subs({b: 3, k: 2}).doit()
        rhs = statement.rhs.subs({ac.m: 6}).doit()
        assert sp.simplify(lhs - rhs) == 0


def test_forgetting_the_micro_batch_scale_multiplies_the_update_by_k():
    g, k = grads(8), 4
    unscaled = sum(g[j : j + 2].mean(axis=0) for j in range(0, 8, 2))  # sum of micro-batch means
    np.testing.assert_allclose(unscaled, k * ac.accumulated_gradient(g, k, "mean"), rtol=FLOAT64_RTOL)
    assert ac.micro_batch_loss_scale("mean", k) == 1 / k
    assert ac.micro_batch_loss_scale("sum", k) == 1


@pytest.mark.parametrize(
    "m, k, fragment",
    [(8, 3, "does not divide"), (0, 1, "batch_size must be >= 1"), (8, 0, "micro_batches must be >= 1")],
    ids=["k-not-dividing", "m=0", "k=0"],
)
def test_bad_sizes(m, k, fragment):
    with pytest.raises(InputError, match=fragment):
        ac.micro_batch_size(m, k)


def test_write_out_matches_sympy_doit_and_scales_to_thousands_of_terms():
    small = ac.accumulated_gradient_symbolic("mean", sp.Integer(3), sp.Integer(2))
    assert sp.expand(ac.write_out(small) - small.doit()) == 0
    # sympy's Sum.doit recursed once per term and overflowed the stack near m = 4096
    identity = ac.accumulation_identity("mean", 4096, 4)
    assert identity.holds and len(identity.full_batch.args) == 4096
    # the check can fail: without the 1/k the accumulated mean-form gradient is k times too large
    b, k = sp.Integer(1024), sp.Integer(4)
    forgot = ac.write_out(ac.accumulated_gradient_symbolic("mean", b, k)) * k
    assert sp.expand(forgot - identity.full_batch) != 0
