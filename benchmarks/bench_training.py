"""Training engine vs a plain per-config PyTorch loop, on a learning-rate x batch-size sweep.

Workload: random data shaped like MNIST-1D (4000 train / 1000 test, 40 features, 10 classes) and the
MLP 40-256-256-10 of ``mnist1d-mlp``. Every trial trains for a fixed number of steps (``target=None``)
with plain SGD and evaluates on the test set at the engine's evaluation steps, so both sides do the
same arithmetic.

Two tables (interleaved repeats; medians of seconds; ratio = baseline / new in the same run):

1. ``sweep``: the whole sweep (batch sizes x learning rates). Baseline: one trial after another, each a
   textbook loop with ``torch.utils.data.DataLoader(shuffle=True)`` and ``torch.optim.SGD``. New:
   :func:`batchscale.empirical.engine.run_trials` (strategy ``auto``).
2. ``strategy``: per batch size, the engine stacked (``batched``) vs one trial at a time
   (``sequential``), which is the measurement behind ``BATCHED_MAX_BATCH``.
3. ``--paths-only``: the stacked engine's hand-written bmm MLP path vs the general
   ``torch.func.vmap(functional_call)`` path.

Run: ``.venv/bin/python benchmarks/bench_training.py [--steps 100] [--repeats 3] [--lrs 8]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import batchscale.empirical.batched as batched
from batchscale.empirical.engine import run_trials
from batchscale.empirical.models import make_mlp
from batchscale.empirical.train import next_eval_step
from batchscale.empirical.trials import TrainConfig
from batchscale.empirical.workloads import Workload


def mnist1d_like() -> Workload:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5000, 40, generator=g)  # (N, 40)
    y = (x[:, :10].argmax(dim=1) + (x[:, 10] > 1).long()) % 10  # (N,), learnable
    factory = lambda seed: make_mlp(seed, in_dim=40, hidden=(256, 256), out_dim=10)  # noqa: E731
    return Workload("mnist1d-like", factory, x[:4000], y[:4000], x[4000:], y[4000:])


WORKLOAD = mnist1d_like()
KEY = {("mnist1d-like", (), 0, "cpu"): WORKLOAD}


def configs(batch_sizes: list[int], lrs: list[float], steps: int) -> list[TrainConfig]:
    return [
        TrainConfig(workload="mnist1d-like", batch_size=b, learning_rate=lr, seed=i, target=None,
                    max_steps=steps)
        for b in batch_sizes
        for i, lr in enumerate(lrs)
    ]


def eval_steps(steps: int) -> set[int]:
    out, s = {0}, 0
    while s < steps:
        s = min(next_eval_step(s), steps)
        out.add(s)
    return out


def baseline_trial(config: TrainConfig) -> None:
    """The textbook loop: DataLoader(shuffle=True), torch.optim.SGD, evaluation at the same steps."""
    model = WORKLOAD.model(config.seed)
    opt = torch.optim.SGD(model.parameters(), lr=config.learning_rate)
    data = TensorDataset(WORKLOAD.x_train, WORKLOAD.y_train)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(config.seed))
    evals, step = eval_steps(config.max_steps), 0

    def evaluate() -> None:
        with torch.no_grad():
            out = model(WORKLOAD.x_test)
            F.cross_entropy(out, WORKLOAD.y_test).item()
            (out.argmax(1) != WORKLOAD.y_test).float().mean().item()

    evaluate()
    while step < config.max_steps:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step in evals:
                evaluate()
            if step == config.max_steps:
                break


def baseline(cs: list[TrainConfig]) -> None:
    for c in cs:
        baseline_trial(c)


def engine(strategy: str) -> Callable[[list[TrainConfig]], None]:
    def run(cs: list[TrainConfig]) -> None:
        results = run_trials(cs, strategy=strategy, workloads=KEY)
        bad = [r for r in results if r.status != "complete"]
        assert not bad, f"{len(bad)} trials did not run to max_steps (e.g. {bad[0].status})"

    return run


def vmap_path(cs: list[TrainConfig]) -> None:
    """The engine stacked, with the bmm MLP path switched off (torch.func.vmap(functional_call))."""
    plan = batched.mlp_plan
    batched.mlp_plan = lambda model: None
    try:
        engine("batched")(cs)
    finally:
        batched.mlp_plan = plan


def timed(variants: dict[str, Callable], cs: list[TrainConfig], repeats: int) -> dict[str, float]:
    """Median seconds of each variant, repeats interleaved (the order alternates every repeat)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            start = time.perf_counter()
            variants[name](cs)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lrs", type=int, default=8)
    parser.add_argument("--batch-sizes", default="1,4,16,64,256,1024,2048")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--paths-only", action="store_true", help="only the bmm vs vmap table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    lrs = [1e-3 * 30 ** (i / max(1, args.lrs - 1)) for i in range(args.lrs)]  # 0.001 .. 0.03
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps per trial, "
          f"{args.lrs} learning rates, {args.repeats} repeats (median seconds)\n")
    if args.paths_only:
        print("| batch size | stacked, vmap path (s) | stacked, bmm path (s) | bmm vs vmap |")
        print("|---:|---:|---:|---:|")
        for b in batch_sizes:
            paths = {"vmap": vmap_path, "bmm": engine("batched")}
            t = timed(paths, configs([b], lrs, args.steps), args.repeats)
            print(f"| {b} | {t['vmap']:.2f} | {t['bmm']:.2f} | {t['vmap'] / t['bmm']:.2f}x |", flush=True)
        return
    if not args.skip_sweep:
        cs = configs(batch_sizes, lrs, args.steps)
        t = timed({"baseline": baseline, "engine": engine("auto")}, cs, args.repeats)
        print("| sweep | trials | baseline DataLoader loop (s) | engine auto (s) | speed-up |")
        print("|---|---:|---:|---:|---:|")
        print(f"| batch {args.batch_sizes} x {args.lrs} lrs | {len(cs)} | {t['baseline']:.2f} | "
              f"{t['engine']:.2f} | {t['baseline'] / t['engine']:.2f}x |\n")
    print("| batch size | baseline loop (s) | engine sequential (s) | engine stacked (s) | "
          "stacked vs sequential | best engine vs baseline |")
    print("|---:|---:|---:|---:|---:|---:|")
    for b in batch_sizes:
        variants = {"baseline": baseline, "sequential": engine("sequential"), "batched": engine("batched")}
        t = timed(variants, configs([b], lrs, args.steps), args.repeats)
        best = min(t["sequential"], t["batched"])
        print(f"| {b} | {t['baseline']:.2f} | {t['sequential']:.2f} | {t['batched']:.2f} | "
              f"{t['sequential'] / t['batched']:.2f}x | {t['baseline'] / best:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
