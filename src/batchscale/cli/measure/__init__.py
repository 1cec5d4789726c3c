"""``batchscale measure``: gradient statistics, update moments, accumulation, cosine and sharpness.

One module per subcommand; each parses its options, calls :mod:`batchscale.empirical.measure` (which
builds the workload, trains with the engine's loop and measures) and formats the rows. Rows that compare
a measurement with a prediction carry predicted, measured, stderr, tolerance and pass. Torch is imported
inside the commands.
"""

from __future__ import annotations

import click

from batchscale.cli.measure.accumulation import accumulation
from batchscale.cli.measure.cosine import cosine
from batchscale.cli.measure.estimators import compare_estimators
from batchscale.cli.measure.moments import moments
from batchscale.cli.measure.noise_scale import noise_scale
from batchscale.cli.measure.sharpness import sharpness


@click.group("measure")
def measure() -> None:
    """Measure gradient statistics and update moments on a real network."""


for command in (accumulation, compare_estimators, cosine, moments, noise_scale, sharpness):
    measure.add_command(command)
