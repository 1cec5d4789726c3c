"""``batchscale derive accumulation``: k micro-batches of m/k give the update of one batch of m."""

from __future__ import annotations

from typing import Any

import click

from batchscale.cli.common import emit, seed_option
from batchscale.cli.derive.options import FORM_TEXT, form_option, format_option
from batchscale.vocabulary import LOSS_FORMS


@click.command()
@form_option
@click.option("--batch-size", "-m", type=int, default=8, show_default=True, help="Batch size m.")
@click.option(
    "--micro-batches",
    "-k",
    type=int,
    default=4,
    show_default=True,
    help="Number k of micro-batches (divides m).",
)
@click.option(
    "--dim", type=int, default=1000, show_default=True, help="Gradient dimension of the numeric check."
)
@seed_option
@format_option()
def accumulation(forms: tuple[str, ...], batch_size: int, micro_batches: int, dim: int, seed: int, fmt: str):
    """k micro-batches of m/k equal one batch of m.

    States the identity for general k and b = m/k, checks it exactly for the given m and k, and measures
    the float rounding difference on random per-example gradients (numpy, float64 and float32).
    """
    import numpy as np
    import sympy as sp

    from batchscale.errors import require
    from batchscale.theory import accumulation as ac

    ac.check_written_sizes(batch_size, micro_batches)  # bad sizes: one-line error before any work
    require(dim >= 1, f"--dim must be >= 1, got {dim}")
    require(
        batch_size * dim <= MAX_CHECK_NUMBERS,
        f"--batch-size x --dim = {batch_size * dim} random numbers: "
        f"at most {MAX_CHECK_NUMBERS} for the float check",
    )
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(batch_size, dim))  # (m, d)
    rows = []
    for form in forms or LOSS_FORMS:
        identity = ac.accumulation_identity(form, batch_size, micro_batches)
        diffs = {}
        for dtype in (np.float64, np.float32):
            full = ac.batch_gradient(grads.astype(dtype), form)
            accumulated = ac.accumulated_gradient(grads.astype(dtype), micro_batches, form)
            diffs[np.dtype(dtype).name] = float(np.max(np.abs(accumulated - full)) / np.max(np.abs(full)))
        rows.append({"identity": identity, "diffs": diffs})
    if fmt == "json":
        emit([_accumulation_row(r["identity"], r["diffs"]) for r in rows], "json")
        return
    for r in rows:
        identity, diffs = r["identity"], r["diffs"]
        if fmt == "latex":
            click.echo(
                f"% {FORM_TEXT[identity.form]}; holds for m={batch_size}, k={micro_batches}: {identity.holds}"
            )
            click.echo(sp.latex(identity.statement))
            continue
        click.echo(f"== {FORM_TEXT[identity.form]}: k micro-batches of b = m/k (m = k*b) ==")
        click.echo(sp.pretty(identity.statement, use_unicode=True, wrap_line=False))
        scale = ac.micro_batch_loss_scale(identity.form, micro_batches)
        click.echo(
            f"exact for m={batch_size}, k={micro_batches}: {'holds' if identity.holds else 'FAILS'}"
            f"  (micro-batch loss scaled by {scale:g} before backward)"
        )
        click.echo(
            "float check, max |accumulated - one batch| / max |one batch| on random gradients "
            f"(d={dim}): float64 {diffs['float64']:.2e}, float32 {diffs['float32']:.2e}\n"
        )


MAX_CHECK_NUMBERS = 20_000_000  # m x d float64 numbers of the float check (160 MB)


def _accumulation_row(identity, diffs: dict[str, float]) -> dict[str, Any]:
    from batchscale.theory.accumulation import micro_batch_loss_scale

    return {
        "form": identity.form,
        "batch_size": identity.batch_size,
        "micro_batches": identity.micro_batches,
        "micro_batch_size": identity.batch_size // identity.micro_batches,
        "micro_batch_loss_scale": micro_batch_loss_scale(identity.form, identity.micro_batches),
        "statement": str(identity.statement),
        "holds": identity.holds,
        "relative_diff_float64": diffs["float64"],
        "relative_diff_float32": diffs["float32"],
    }
