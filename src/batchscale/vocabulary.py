"""The words every layer shares, defined once: loss forms, sampling schemes, optimizers, epoch accounting.

Dependency-free (standard library only), so :mod:`batchscale.theory` (never torch) and
:mod:`batchscale.empirical` (never sympy) both import it. Claim 1 of ``docs/claims.md`` (vocabulary and
accounting) and claim 3 (moments of the update) are stated in these terms:

- an *epoch* is one pass over all M examples; a *step* is one update from one batch of m examples;
  ``steps_per_epoch(M, m) = ceil(M/m)``, or ``floor(M/m)`` when the last partial batch is dropped;
- the *loss form* is the ``mean`` or the ``sum`` of the per-example losses of a batch;
- the *sampling scheme* draws a batch ``with`` replacement, ``without`` replacement (independently each
  step), or as one batch of a random partition of the data that is redrawn every epoch (``reshuffle``).
"""

from __future__ import annotations

from collections.abc import Sequence

from batchscale.errors import InputError, require

LOSS_FORMS: tuple[str, ...] = ("mean", "sum")
SAMPLINGS: tuple[str, ...] = ("with", "without", "reshuffle")
PERS: tuple[str, ...] = ("step", "example", "epoch")
TRAIN_OPTIMIZERS: tuple[str, ...] = ("sgd", "momentum", "nesterov", "adam", "adamw")  # = empirical.optimizers


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a one-line :class:`InputError`."""
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def _check_sizes(dataset_size: int, batch_size: int, drop_last: bool) -> None:
    for name, value in (("dataset_size", dataset_size), ("batch_size", batch_size)):
        require(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"{name} must be a positive integer, got {value!r}",
        )
    require(
        not (drop_last and batch_size > dataset_size),
        f"batch_size {batch_size} > dataset_size {dataset_size} with drop_last leaves no batch",
    )


def steps_per_epoch(dataset_size: int, batch_size: int, drop_last: bool = False) -> int:
    r"""Updates in one epoch: :math:`\lceil M/m \rceil`, or :math:`\lfloor M/m \rfloor` with drop_last.

    M is ``dataset_size``, m is ``batch_size`` (1050 examples at m=100 give 11 steps, the last of 50).
    """
    _check_sizes(dataset_size, batch_size, drop_last)
    # ceil(M/m) = -(-M // m)
    return dataset_size // batch_size if drop_last else -(-dataset_size // batch_size)


def last_batch_size(dataset_size: int, batch_size: int, drop_last: bool = False) -> int:
    r"""Examples in an epoch's last batch: :math:`M - m(\lceil M/m \rceil - 1)`; m with drop_last.

    M is ``dataset_size``, m is ``batch_size``. 1050 examples at m=100 end with a batch of 50.
    """
    _check_sizes(dataset_size, batch_size, drop_last)
    remainder = dataset_size % batch_size
    return batch_size if (drop_last or remainder == 0) else remainder


def finite_population_factor(dataset_size: int, batch_size: int, sampling: str) -> float:
    r"""c(m) in :math:`\mathrm{Cov}[g_B] = c(m)\,\Sigma/m`: 1 with replacement, :math:`\frac{M-m}{M-1}` else.

    M is ``dataset_size``, m is ``batch_size``; Sigma is the population covariance of the per-example
    gradients. Without replacement (and for one batch of a random partition, ``reshuffle``, which is a
    uniform m-subset too) the batch is a simple random sample (Cochran 1977, *Sampling Techniques*, ch. 2).
    M = 1 leaves nothing to vary: the factor is 0.
    """
    check_choice("sampling", sampling, SAMPLINGS)
    _check_sizes(dataset_size, batch_size, False)
    require(batch_size <= dataset_size or sampling == "with",
            f"batch size {batch_size} > dataset size {dataset_size} needs sampling with replacement")
    if sampling == "with":
        return 1.0
    if dataset_size == 1:
        return 0.0
    return (dataset_size - batch_size) / (dataset_size - 1)


__all__ = [
    "InputError",
    "LOSS_FORMS",
    "PERS",
    "SAMPLINGS",
    "TRAIN_OPTIMIZERS",
    "check_choice",
    "finite_population_factor",
    "last_batch_size",
    "steps_per_epoch",
]
