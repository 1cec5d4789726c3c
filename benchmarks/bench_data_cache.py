"""MNIST-1D: generating the dataset vs loading it from the on-disk cache (and building the workload).

Runs in a private temporary cache directory, interleaves the repeats (generate, then the cached loads,
then generate again, ...) and prints a Markdown table of medians and the generation / load ratio.

    .venv/bin/python benchmarks/bench_data_cache.py --n-samples 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20000, help="MNIST-1D size (train + test)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BATCHSCALE_CACHE_DIR"] = tmp
        from batchscale.empirical.data.mnist1d import generate_mnist1d, load_mnist1d_cached
        from batchscale.empirical.workloads import get_workload

        times: dict[str, list[float]] = {"generate": [], "cached load": [], "get_workload (cached)": []}
        first = load_mnist1d_cached(args.n_samples)
        assert not first.from_cache
        for _ in range(args.repeats):
            times["generate"].append(timed(lambda: generate_mnist1d(args.n_samples)))
            for _ in range(3):
                times["cached load"].append(timed(lambda: load_mnist1d_cached(args.n_samples)))
                w = lambda: get_workload("mnist1d-mlp", n_samples=args.n_samples)  # noqa: E731
                times["get_workload (cached)"].append(timed(w))
        assert load_mnist1d_cached(args.n_samples).from_cache
    gen = statistics.median(times["generate"])
    print(f"MNIST-1D, n_samples={args.n_samples}, {args.repeats} interleaved repeats (loads 3x per repeat)\n")
    print("| step | median (s) | runs | generate / step |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.4f} | {len(values)} | {gen / median:.0f}x |")


if __name__ == "__main__":
    main()
