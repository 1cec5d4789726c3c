"""``batchscale predict``: analytical predictions, one lazily imported module per model."""

from __future__ import annotations

import click

from batchscale.cli.main import LazyGroup

PREDICTORS: dict[str, tuple[str, str]] = {
    "nqm": (
        "batchscale.cli.predict_nqm:nqm",
        "Noisy quadratic model: steps to target vs batch size with tuned learning rate.",
    ),
    "noise-scale": (
        "batchscale.cli.predict_noise_scale:noise_scale",
        "Gradient-noise-scale model: S(B), E(B), critical batch; fit a measured curve.",
    ),
    "stability": (
        "batchscale.cli.predict_stability:stability",
        "Least squares: critical batch m*, optimal and maximal stable step vs batch.",
    ),
}


@click.group(cls=LazyGroup, lazy=PREDICTORS)
def predict() -> None:
    """Analytical predictions: noisy quadratic model, noise scale, stability."""
