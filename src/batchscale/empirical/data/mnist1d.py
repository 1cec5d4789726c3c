"""MNIST-1D (Greydanus 2020), generated locally with the ``mnist1d`` package and cached.

Only the package's generator is used (``mnist1d.data.make_dataset`` with ``get_dataset_args()``), never
``get_dataset`` (which downloads). Generation reseeds numpy's and Python's global RNGs; we save and
restore both, so loading MNIST-1D leaves the caller's random state as it was.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from batchscale.empirical.data import Arrays
from batchscale.empirical.data.cache import Cached, cached_arrays

DEFAULT_SEED = 42  # the package's (and the original dataset's) generator seed
NAMES = ("x_train", "y_train", "x_test", "y_test")


@contextmanager
def preserved_global_rngs() -> Iterator[None]:
    """Restore numpy's legacy global RNG and Python's ``random`` state on exit."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def generate_mnist1d(
    n_samples: int, seed: int = DEFAULT_SEED, train_split: float = 0.8
) -> dict[str, np.ndarray]:
    """Run the ``mnist1d`` generator: ``n_samples`` examples (``n_samples // 10`` per class), the first
    ``train_split`` of them for training; inputs (N, 40) float32, labels int64."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(n_samples)
    args.seed = int(seed)
    args.train_split = float(train_split)
    with preserved_global_rngs():
        data = make_dataset(args)
    return {
        "x_train": np.asarray(data["x"], dtype=np.float32),
        "y_train": np.asarray(data["y"], dtype=np.int64),
        "x_test": np.asarray(data["x_test"], dtype=np.float32),
        "y_test": np.asarray(data["y_test"], dtype=np.int64),
    }


def load_mnist1d_cached(n_samples: int = 5000, seed: int = DEFAULT_SEED, train_split: float = 0.8) -> Cached:
    """MNIST-1D from the cache, generated and stored on the first call for these arguments."""
    key = {"n_samples": int(n_samples), "seed": int(seed), "train_split": float(train_split)}
    return cached_arrays("mnist1d", key, NAMES, lambda: generate_mnist1d(n_samples, seed, train_split))


def load_mnist1d(n_samples: int = 5000, seed: int = DEFAULT_SEED, train_split: float = 0.8) -> Arrays:
    """MNIST-1D arrays (cached); defaults give the original 4000 train / 1000 test examples."""
    a = load_mnist1d_cached(n_samples, seed, train_split).arrays
    return Arrays(a["x_train"], a["y_train"], a["x_test"], a["y_test"])
