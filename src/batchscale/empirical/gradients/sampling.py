"""Minibatch sampling shared by the measurements."""

from __future__ import annotations

import torch

from batchscale.empirical.gradients.per_example import SAMPLINGS
from batchscale.errors import InputError, require


def check_batch_size(batch_size: int, population: int, sampling: str = "without") -> None:
    """InputError unless 1 <= batch_size <= population and ``sampling`` is known."""
    require(sampling in SAMPLINGS, f"unknown sampling {sampling!r}; expected with or without")
    require(batch_size >= 1, f"batch size must be >= 1, got {batch_size}")
    require(
        batch_size <= population,
        f"batch size {batch_size} exceeds the {population} examples it is drawn from",
    )


def draw_batch(population: int, batch_size: int, sampling: str, generator: torch.Generator) -> torch.Tensor:
    """Indices of one minibatch: uniform with replacement, or a uniform subset without replacement."""
    if sampling == "with":
        return torch.randint(population, (batch_size,), generator=generator)
    if sampling == "without":
        return torch.randperm(population, generator=generator)[:batch_size]
    raise InputError(f"unknown sampling {sampling!r}; expected with or without")
