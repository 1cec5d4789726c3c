"""Per-step time of one stacked training step: the current engine vs an earlier commit's, same run.

Workload: random data shaped like MNIST-1D (16000 train, 40 features, 10 classes) and the MLP
40-256-256-10 of ``mnist1d-mlp``; K copies (learning rates 1e-4 x 2^k, none diverges in the measured
steps) trained by ``StackedRun.advance`` with ``torch.set_num_threads(1)`` (the sweep's workers use one
thread each). "before" is ``batchscale/empirical/batched.py`` as of ``--before`` (a git commit), loaded
from ``git show`` as a separate module next to the current one; both use the current ``train.py``.
Repeats are interleaved (the order alternates); the table gives medians of ms per step and the ratio
before / after from the same run.

``--case seeds`` instead times 3 seeds of one learning-rate sweep (``--copies`` rates each, the current
engine): one stack of 3 x copies (how seeds run: extra copies of one StackedRun) against 3 separate stacks
of ``copies`` run one after the other (their ms per step summed), interleaved the same way.

``--case stack-size`` gives the per-step cost against the number of copies K in one stack (``--copies``,
e.g. 1,3,8,24) as **process CPU time** (``time.process_time``, one thread: insensitive to other jobs
on the machine, unlike wall time), per step and per copy-step, with the ratio to K = the first value;
repeats interleaved, medians.

Run: ``.venv/bin/python benchmarks/bench_stacked_step.py [--before bccefd6] [--steps 2000] [--repeats 5]``
or ``... --case seeds --copies 8 --batch-sizes 1,16,128``
or ``... --case stack-size --copies 1,3,8,24 --batch-sizes 1,16,128``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import batchscale.empirical.batched as after
from batchscale.empirical.models import make_mlp
from batchscale.empirical.trials import TrainConfig
from batchscale.empirical.workloads import Workload

ROOT = Path(__file__).resolve().parents[1]


def load_before(commit: str):
    """The module ``batchscale.empirical.batched`` as of ``commit``."""
    source = subprocess.run(["git", "show", f"{commit}:src/batchscale/empirical/batched.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    # names an older batched.py imports that moved to empirical/optimizers.py (same values)
    from batchscale.empirical import optimizers, train, trials

    beta1 = optimizers.ADAM_DEFAULT_BETA1
    train.__dict__.setdefault("adam_beta1", lambda momentum: momentum if momentum > 0 else beta1)
    trials.__dict__.setdefault("ADAM_BETA2", optimizers.ADAM_DEFAULT_BETA2)
    trials.__dict__.setdefault("ADAM_EPS", optimizers.ADAM_DEFAULT_EPS)
    path = Path(tempfile.mkdtemp()) / "batched_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("batched_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["batched_before"] = module
    spec.loader.exec_module(module)
    return module


def mnist1d_like() -> Workload:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 40, generator=g)  # (N, 40)
    y = (x[:, :10].argmax(dim=1) + (x[:, 10] > 1).long()) % 10  # (N,), learnable
    factory = lambda seed: make_mlp(seed, in_dim=40, hidden=(256, 256), out_dim=10)  # noqa: E731
    return Workload("mnist1d-like", factory, x[:16000], y[:16000], x[16000:], y[16000:])


def ms_per_step(module, workload: Workload, configs: list[TrainConfig], steps: int) -> float:
    run = module.StackedRun(workload, configs, list(range(len(configs))))
    run.advance(20)  # warm-up
    start = time.perf_counter()
    bad = run.advance(20 + steps)
    assert not bad, "a copy diverged: lower the learning rates"
    return (time.perf_counter() - start) / steps * 1e3


def cpu_ms_per_step(workload: Workload, configs: list[TrainConfig], steps: int) -> float:
    """Process CPU milliseconds per step of one stack of ``configs``."""
    run = after.StackedRun(workload, configs, list(range(len(configs))))
    run.advance(20)  # warm-up
    start = time.process_time()
    bad = run.advance(20 + steps)
    assert not bad, "a copy diverged: lower the learning rates"
    return (time.process_time() - start) / steps * 1e3


def stack_size_case(workload: Workload, args: argparse.Namespace) -> None:
    """CPU time per step and per copy-step against the copies K of one stack."""
    sizes = [int(v) for v in args.copies.split(",")]
    print("| optimizer | batch size | copies K | CPU ms / step | CPU us / copy-step | step cost / "
          f"K = {sizes[0]}'s |")
    print("|---|---:|---:|---:|---:|---:|")
    for optimizer in args.optimizers.split(","):
        for b in (int(v) for v in args.batch_sizes.split(",")):
            base = TrainConfig(workload="mnist1d-like", batch_size=b, optimizer=optimizer,
                               momentum=0.9 if optimizer != "sgd" else 0.0, target=None, max_steps=10**6)
            steps = max(50, args.steps // max(1, b // 8))
            times: dict[int, list[float]] = {k: [] for k in sizes}
            for r in range(args.repeats):
                for k in sizes if r % 2 == 0 else sizes[::-1]:
                    configs = [replace(base, seed=i // 8, learning_rate=1e-4 * 2 ** (i % 8))
                               for i in range(k)]  # 8 rates per seed
                    times[k].append(cpu_ms_per_step(workload, configs, steps))
            first = statistics.median(times[sizes[0]])
            for k in sizes:
                t = statistics.median(times[k])
                print(f"| {optimizer} | {b} | {k} | {t:.3f} | {t / k * 1e3:.1f} | {t / first:.2f} |",
                      flush=True)


def seeds_case(workload: Workload, args: argparse.Namespace) -> None:
    """3 seeds x ``copies`` rates: one stack of all of them vs one stack per seed."""
    print("| optimizer | batch size | rates per seed | 3 seeds, one stack (ms/step) "
          "| 3 stacks, summed (ms/step) | separate / stacked |")
    print("|---|---:|---:|---:|---:|---:|")
    for optimizer in args.optimizers.split(","):
        for b in (int(v) for v in args.batch_sizes.split(",")):
            for k in (int(v) for v in args.copies.split(",")):
                base = TrainConfig(workload="mnist1d-like", batch_size=b, optimizer=optimizer,
                                   momentum=0.9 if optimizer != "sgd" else 0.0, target=None, max_steps=10**6)
                per_seed = [[replace(base, seed=s, learning_rate=1e-4 * 2**i) for i in range(k)]
                            for s in range(3)]
                steps = max(50, args.steps // max(1, b // 8))
                times: dict[str, list[float]] = {"stacked": [], "separate": []}
                for r in range(args.repeats):
                    for name in ("stacked", "separate") if r % 2 == 0 else ("separate", "stacked"):
                        stacks = [sum(per_seed, [])] if name == "stacked" else per_seed
                        times[name].append(sum(ms_per_step(after, workload, c, steps) for c in stacks))
                t0, t1 = statistics.median(times["stacked"]), statistics.median(times["separate"])
                print(f"| {optimizer} | {b} | {k} | {t0:.3f} | {t1:.3f} | {t1 / t0:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="bccefd6", help="git commit of the 'before' batched.py")
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per measurement at B = 1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--copies", default="1,8")
    parser.add_argument("--batch-sizes", default="1,16,128,1024")
    parser.add_argument("--optimizers", default="sgd,momentum")
    parser.add_argument("--case", choices=["before-after", "seeds", "stack-size"], default="before-after")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.case == "stack-size":
        print(f"torch {torch.__version__}, 1 thread; process CPU time, medians of {args.repeats} interleaved "
              f"repeats; load average {os.getloadavg()[0]:.1f}")
        stack_size_case(mnist1d_like(), args)
        return
    if args.case == "seeds":
        print(f"torch {torch.__version__}, 1 thread; medians of {args.repeats} interleaved repeats")
        seeds_case(mnist1d_like(), args)
        return
    before = load_before(args.before)
    workload = mnist1d_like()
    print(f"torch {torch.__version__}, 1 thread; before = {args.before}; medians of {args.repeats} "
          f"interleaved repeats")
    print("| optimizer | batch size | copies | before (ms/step) | after (ms/step) | before / after |")
    print("|---|---:|---:|---:|---:|---:|")
    for optimizer in args.optimizers.split(","):
        for b in (int(v) for v in args.batch_sizes.split(",")):
            for k in (int(v) for v in args.copies.split(",")):
                base = TrainConfig(workload="mnist1d-like", batch_size=b, optimizer=optimizer,
                                   momentum=0.9 if optimizer != "sgd" else 0.0, target=None, max_steps=10**6)
                configs = [replace(base, seed=i, learning_rate=1e-4 * 2**i) for i in range(k)]
                steps = max(50, args.steps // max(1, b // 8))
                times: dict[str, list[float]] = {"before": [], "after": []}
                for r in range(args.repeats):
                    order = [("before", before), ("after", after)]
                    for name, module in order if r % 2 == 0 else order[::-1]:
                        times[name].append(ms_per_step(module, workload, configs, steps))
                t0, t1 = statistics.median(times["before"]), statistics.median(times["after"])
                print(f"| {optimizer} | {b} | {k} | {t0:.3f} | {t1:.3f} | {t0 / t1:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
