"""``batchscale derive``: exact results, printed as pretty sympy, LaTeX or JSON.

Commands: ``accounting`` (integers of an epoch), ``moments`` (mean and covariance of one update for every
loss form, sampling scheme and normalisation), ``accumulation`` (micro-batches == one batch) and
``staleness`` (n small steps vs one big step). sympy is imported inside the commands that need it.
"""

from __future__ import annotations

import click

from batchscale.cli.derive.accounting import accounting
from batchscale.cli.derive.accumulation import accumulation
from batchscale.cli.derive.moments import moments
from batchscale.cli.derive.staleness import staleness


@click.group()
def derive() -> None:
    """Exact symbolic results: accounting, update moments, accumulation, staleness."""


for command in (accounting, moments, accumulation, staleness):
    derive.add_command(command)
