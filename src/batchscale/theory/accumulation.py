r"""Gradient accumulation: k micro-batches of m/k examples give the update of one batch of m.

docs/claims.md, "accumulation". With per-example gradients :math:`g_1,\dots,g_m` of one batch split
into k consecutive micro-batches :math:`B_j` of b = m/k examples,

* mean form: :math:`\frac1k\sum_{j=1}^k \frac1b\sum_{i\in B_j} g_i = \frac1m\sum_{i=1}^m g_i`
  (each micro-batch's mean loss scaled by 1/k before the backward pass);
* sum form:  :math:`\sum_{j=1}^k \sum_{i\in B_j} g_i = \sum_{i=1}^m g_i` (no scaling).

So the accumulated update equals the one-batch update exactly in real arithmetic, and up to float rounding
in practice (the order of summation differs). Forgetting the 1/k in the mean form multiplies the update by k,
i.e. silently uses the learning rate k*eta.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import sympy as sp

from batchscale.errors import require
from batchscale.theory.symbols import k, m
from batchscale.vocabulary import LOSS_FORMS, check_choice

MAX_WRITTEN_TERMS = 20_000  # the exact check writes every g_i out (about 1 ms per term and form)
g = sp.IndexedBase("g")  # per-example gradient g_i
i, j = sp.symbols("i j", integer=True, positive=True)
b = sp.Symbol("b", integer=True, positive=True)  # micro-batch size m/k


def micro_batch_size(batch_size: int, micro_batches: int) -> int:
    """b = m/k examples per micro-batch; k must divide m."""
    require(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    require(micro_batches >= 1, f"micro_batches must be >= 1, got {micro_batches}")
    require(
        batch_size % micro_batches == 0,
        f"micro_batches {micro_batches} does not divide batch_size {batch_size}",
    )
    return batch_size // micro_batches


def micro_batch_loss_scale(form: str, micro_batches: int) -> float:
    """Factor on each micro-batch's loss before backward: 1/k for the mean loss, 1 for the sum loss."""
    return 1.0 / micro_batches if check_choice("form", form, LOSS_FORMS) == "mean" else 1.0


def batch_gradient_symbolic(form: str, batch_size: sp.Expr = m) -> sp.Expr:
    r"""One batch's gradient: :math:`\frac1m\sum_{i=1}^m g_i` (mean) or :math:`\sum_{i=1}^m g_i` (sum)."""
    total = sp.Sum(g[i], (i, 1, batch_size))
    return total / batch_size if check_choice("form", form, LOSS_FORMS) == "mean" else total


def accumulated_gradient_symbolic(form: str, micro_size: sp.Expr = b, micro_batches: sp.Expr = k) -> sp.Expr:
    r"""k micro-batches of b accumulated: :math:`\frac1k\sum_j\frac1b\sum_{i\in B_j} g_i`, or the plain sum.

    :math:`B_j = \{(j-1)b+1, \dots, jb\}`; b is ``micro_size``, k is ``micro_batches`` (symbols or ints).
    """
    inner = sp.Sum(g[i], (i, (j - 1) * micro_size + 1, j * micro_size))
    if check_choice("form", form, LOSS_FORMS) == "mean":
        return sp.Sum(inner / micro_size, (j, 1, micro_batches)) / micro_batches
    return sp.Sum(inner, (j, 1, micro_batches))


class AccumulationIdentity(NamedTuple):
    """The identity accumulated == one batch, stated generally and verified for given sizes."""

    form: str
    statement: sp.Eq  # general k and b, with m = k*b (unevaluated sums)
    batch_size: int
    micro_batches: int
    accumulated: sp.Expr  # the sums written out for the given sizes
    full_batch: sp.Expr
    holds: bool  # accumulated - full_batch simplifies to 0


def check_written_sizes(batch_size: int, micro_batches: int) -> int:
    """:func:`micro_batch_size`, and m small enough to write every term out (else :class:`InputError`)."""
    size = micro_batch_size(batch_size, micro_batches)
    require(
        batch_size <= MAX_WRITTEN_TERMS,
        f"batch_size {batch_size} is too large to write the sums out (at most {MAX_WRITTEN_TERMS} terms); "
        "the general identity holds for every m = k*b",
    )
    return size


def accumulation_identity(form: str, batch_size: int = 8, micro_batches: int = 4) -> AccumulationIdentity:
    """State the accumulation identity for general k, b (m = k*b) and check it for the given sizes."""
    size = check_written_sizes(batch_size, micro_batches)
    statement = sp.Eq(accumulated_gradient_symbolic(form), batch_gradient_symbolic(form), evaluate=False)
    accumulated = write_out(accumulated_gradient_symbolic(form, sp.Integer(size), sp.Integer(micro_batches)))
    full = write_out(batch_gradient_symbolic(form, sp.Integer(batch_size)))
    return AccumulationIdentity(
        form=form,
        statement=statement,
        batch_size=batch_size,
        micro_batches=micro_batches,
        accumulated=accumulated,
        full_batch=full,
        holds=sp.expand(accumulated - full) == 0,
    )


def write_out(expr: sp.Expr) -> sp.Expr:
    """Every ``Sum`` with integer limits written out term by term (outermost index first).

    Linear in the number of terms; sympy's ``Sum.doit`` recurses once per term and overflows the stack
    for a few thousand terms.
    """
    if isinstance(expr, sp.Sum):
        var, low, high = expr.limits[-1]  # the outermost index; inner limits may depend on it
        body = sp.Sum(expr.function, *expr.limits[:-1]) if len(expr.limits) > 1 else expr.function
        return sp.Add(*(write_out(body.subs(var, v)) for v in range(int(low), int(high) + 1)))
    if expr.args:
        return expr.func(*(write_out(a) for a in expr.args))
    return expr


def batch_gradient(per_example_grads: np.ndarray, form: str = "mean") -> np.ndarray:
    """One batch's gradient from its per-example gradients (m, d): their mean or their sum, (d,)."""
    grads = np.asarray(per_example_grads)
    return grads.mean(axis=0) if check_choice("form", form, LOSS_FORMS) == "mean" else grads.sum(axis=0)


def accumulated_gradient(per_example_grads: np.ndarray, micro_batches: int, form: str = "mean") -> np.ndarray:
    r"""Gradient accumulated over k consecutive micro-batches, as a training loop would compute it.

    Each micro-batch gradient (its mean or sum over b = m/k examples, ``per_example_grads`` is (m, d)) is
    scaled by :func:`micro_batch_loss_scale` and added into the accumulator in order.
    """
    grads = np.asarray(per_example_grads)
    size = micro_batch_size(grads.shape[0], micro_batches)
    scale = micro_batch_loss_scale(form, micro_batches)
    total = np.zeros(grads.shape[1:], dtype=grads.dtype)
    for start in range(0, grads.shape[0], size):
        total += scale * batch_gradient(grads[start : start + size], form)  # (d,)
    return total
