"""The one definition of power-law eigenvalues, against a plain loop, and its input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchscale.errors import InputError
from batchscale.power_law import power_law_eigenvalues


@pytest.mark.parametrize(("dim", "alpha"), [(1, 1.0), (7, 0.0), (50, 1.5), (30, -0.5)])
def test_power_law_eigenvalues_match_a_loop(dim, alpha):
    expected = [math.pow(i, -alpha) for i in range(1, dim + 1)]
    np.testing.assert_allclose(power_law_eigenvalues(dim, alpha), expected, rtol=1e-15)


@pytest.mark.parametrize(
    ("dim", "alpha", "words"),
    [(0, 1.0, "positive integer"), (2.5, 1.0, "positive integer"), (True, 1.0, "positive integer"),
     (5, math.inf, "finite"), (5, math.nan, "finite")],
)
def test_power_law_eigenvalues_refuse_bad_input(dim, alpha, words):
    with pytest.raises(InputError, match=words):
        power_law_eigenvalues(dim, alpha)


def test_the_layers_share_one_definition():
    """theory's NQM spectrum and stability CLI and empirical's least-squares data use the same eigenvalues."""
    from batchscale.theory.spectra import power_law_spectrum

    np.testing.assert_array_equal(power_law_spectrum(40, 1.3).curvature, power_law_eigenvalues(40, 1.3))
