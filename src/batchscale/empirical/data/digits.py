"""scikit-learn's bundled handwritten digits (1797 images of 8x8, offline), standardised and split."""

from __future__ import annotations

import numpy as np

from batchscale.empirical.data import Arrays

SPLIT_SEED = 0  # the split is fixed: the same for every run and workload seed


def standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (x - mean) / std with training statistics; constant features are only centred."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def load_digits_arrays(test_fraction: float = 0.2) -> Arrays:
    """Digits as (N, 1, 8, 8) float32 images (standardised per pixel) and int64 labels, with a stratified
    split of ``test_fraction`` of the examples into the test set (scikit-learn ``random_state=0``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.data.astype(np.float64)  # (1797, 64), values 0..16
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=SPLIT_SEED
    )
    x_tr, x_te = standardise(x_tr, x_te)
    return Arrays(x_tr.reshape(-1, 1, 8, 8), y_tr, x_te.reshape(-1, 1, 8, 8), y_te)
