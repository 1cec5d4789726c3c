"""MNIST-1D generation and the on-disk array cache.

Independent computation: the ``mnist1d`` package's own ``make_dataset`` called directly.
"""

from __future__ import annotations

import io
import random

import numpy as np
import pytest

from batchscale.empirical.data import cache, mnist1d

N_SAMPLES = 500  # small: generation takes well under a second


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHSCALE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_follows_the_environment(cache_dir):
    assert cache.cache_dir() == cache_dir
    assert cache.cache_path("mnist1d", {"n": 1}).parent == cache_dir


def test_cache_key_separates_arguments(cache_dir):
    paths = {cache.cache_path("mnist1d", {"n_samples": n, "seed": s}) for n in (500, 600) for s in (1, 2)}
    assert len(paths) == 4
    assert cache.cache_path("a", {"x": 1, "y": 2}) == cache.cache_path("a", {"y": 2, "x": 1})


def test_mnist1d_matches_the_package_generator(cache_dir):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = N_SAMPLES
    reference = make_dataset(args)
    ours = mnist1d.load_mnist1d(N_SAMPLES)
    np.testing.assert_array_equal(ours.x_train, reference["x"].astype(np.float32))
    np.testing.assert_array_equal(ours.y_test, reference["y_test"])
    assert ours.x_train.shape == (400, 40) and ours.x_test.shape == (100, 40)
    assert ours.x_train.dtype == np.float32 and ours.y_train.dtype == np.int64


def test_second_load_is_served_from_the_cache(cache_dir):
    first = mnist1d.load_mnist1d_cached(N_SAMPLES)
    second = mnist1d.load_mnist1d_cached(N_SAMPLES)
    assert not first.from_cache and second.from_cache
    assert first.path == second.path and first.path.parent == cache_dir
    for name in mnist1d.NAMES:
        np.testing.assert_array_equal(first.arrays[name], second.arrays[name])
    assert [p.name for p in cache_dir.iterdir()] == [first.path.name]  # no temporary file left behind


def test_cached_load_of_the_default_size_never_runs_the_generator(monkeypatch):
    """The default 5000-example set (4000 / 1000): generated once per test session (the shared private
    cache of conftest.py), then served from the cache without calling the generator (its speed is
    measured in benchmarks/bench_data_cache.py, not here)."""
    import importlib

    generator = importlib.import_module("mnist1d.data")  # the package's, not our module of that name
    first = mnist1d.load_mnist1d()
    assert (len(first.x_train), len(first.x_test)) == (4000, 1000)

    def refuse(*args, **kwargs):
        raise AssertionError("the generator ran although the arrays are cached")

    monkeypatch.setattr(generator, "make_dataset", refuse)
    again = mnist1d.load_mnist1d_cached()
    assert again.from_cache
    np.testing.assert_array_equal(again.arrays["x_train"], first.x_train)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b"not a zip file", id="garbage"),
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"\x93NUMPY" + b[6:40], id="npy-header"),
        pytest.param(lambda b: npy_bytes(np.arange(4)), id="npy-not-npz"),
    ],
)
def test_corrupt_cache_entry_is_regenerated(cache_dir, damage):
    good = mnist1d.load_mnist1d_cached(N_SAMPLES)
    good.path.write_bytes(damage(good.path.read_bytes()))
    again = mnist1d.load_mnist1d_cached(N_SAMPLES)
    assert not again.from_cache
    np.testing.assert_array_equal(again.arrays["x_train"], good.arrays["x_train"])
    assert mnist1d.load_mnist1d_cached(N_SAMPLES).from_cache


def test_entry_missing_an_array_is_regenerated(cache_dir):
    path = cache.cache_path("mnist1d", {"n_samples": N_SAMPLES, "seed": 42, "train_split": 0.8})
    cache.save_arrays(path, {"x_train": np.zeros(3)})
    assert not mnist1d.load_mnist1d_cached(N_SAMPLES).from_cache


def test_failed_write_leaves_no_file(cache_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    target = cache_dir / "x.npz"
    with pytest.raises(OSError, match="disk full"):
        cache.save_arrays(target, {"a": np.arange(3)})
    assert list(cache_dir.iterdir()) == []


def test_generation_restores_global_rngs(cache_dir):
    np.random.seed(123)
    random.seed(7)
    expected_np, expected_py = np.random.random(3), random.random()
    np.random.seed(123)
    random.seed(7)
    mnist1d.generate_mnist1d(N_SAMPLES)  # reseeds both globals internally (seed 42)
    np.testing.assert_array_equal(np.random.random(3), expected_np)
    assert random.random() == expected_py


def test_generator_seed_changes_the_data(cache_dir):
    a = mnist1d.load_mnist1d(N_SAMPLES, seed=42)
    b = mnist1d.load_mnist1d(N_SAMPLES, seed=1)
    assert not np.array_equal(a.x_train, b.x_train)


def test_cache_benchmark_script_runs():
    """Smoke test of benchmarks/bench_data_cache.py at a tiny size (it uses its own temporary cache)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_data_cache.py"
    args = [sys.executable, str(script), "--n-samples", "200", "--repeats", "1"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    assert "| cached load |" in out and "n_samples=200" in out
