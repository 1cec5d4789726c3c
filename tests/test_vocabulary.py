"""The shared vocabulary against independent computations: a real loader loop and batch enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from batchscale.errors import InputError
from batchscale.vocabulary import (
    SAMPLINGS,
    check_choice,
    finite_population_factor,
    last_batch_size,
    steps_per_epoch,
)


@pytest.mark.parametrize(("M", "m", "drop_last"), [(1050, 100, False), (1050, 100, True), (7, 7, False),
                                                   (7, 3, True), (7, 1, False), (5, 8, False)])
def test_steps_and_last_batch_match_a_slicing_loop(M, m, drop_last):
    batches = [list(range(M))[i : i + m] for i in range(0, M, m)]
    if drop_last:
        batches = [b for b in batches if len(b) == m]
    assert steps_per_epoch(M, m, drop_last) == len(batches)
    assert last_batch_size(M, m, drop_last) == len(batches[-1])


def test_the_example_of_the_claims():
    assert (steps_per_epoch(1050, 100), last_batch_size(1050, 100)) == (11, 50)


@pytest.mark.parametrize(("M", "m"), [(6, 1), (6, 2), (6, 3), (6, 6), (5, 4)])
def test_finite_population_factor_is_the_variance_ratio_of_all_subsets(M, m):
    """Var of the mean of every m-subset (enumerated) / (Sigma / m), Sigma the population variance."""
    x = np.random.default_rng(M * 10 + m).normal(size=M)
    means = [x[list(s)].mean() for s in itertools.combinations(range(M), m)]
    ratio = np.var(means) / (np.var(x) / m)
    for sampling in ("without", "reshuffle"):
        assert finite_population_factor(M, m, sampling) == pytest.approx(ratio, rel=1e-12, abs=1e-15)
    with_replacement = [x[list(s)].mean() for s in itertools.product(range(M), repeat=m)]
    assert finite_population_factor(M, m, "with") == pytest.approx(np.var(with_replacement) / (np.var(x) / m))


def test_bad_choices_and_sizes_are_input_errors():
    assert check_choice("sampling", "with", SAMPLINGS) == "with"
    with pytest.raises(InputError, match="unknown sampling 'bogus'"):
        check_choice("sampling", "bogus", SAMPLINGS)
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        steps_per_epoch(10, 0)
    with pytest.raises(InputError, match="needs sampling with replacement"):
        finite_population_factor(4, 5, "without")
