"""Datasets for the built-in workloads: generated (MNIST-1D, synthetic), bundled (scikit-learn digits) or
read from standard files on disk (MNIST, Fashion-MNIST, CIFAR-10), returned as numpy arrays.

Every loader returns a :class:`Arrays` (train/test inputs and targets); the workloads turn them into
tensors. Generated sets are cached on disk (:mod:`batchscale.empirical.data.cache`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Arrays(NamedTuple):
    """Train and test split as numpy arrays: float32 inputs, int64 class labels or float32 targets."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
