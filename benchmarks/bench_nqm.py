"""Benchmark: closed-form NQM sweeps vs a faithful step-by-step, one-configuration-at-a-time baseline.

Run:  .venv/bin/python benchmarks/bench_nqm.py [--quick]

Prints a Markdown table. The baseline is written here from the formulas, independent of
batchscale.theory.nqm: for one (batch size, learning rate[, momentum]) it iterates the expected
second-moment recursion step by step (vectorised over the spectrum's bins only) and stops at the first
step with loss <= target, at a blow-up (loss > 1e6 x initial: diverged), or at the step cap.

Running the baseline over every configuration would take hours (configurations with too small a learning
rate run to the cap of 10^7 steps), so the baseline is run on a verified subset (per batch size the best
grid point and its grid neighbours, plus a random sample of configurations), its time per step is measured
there, and its full-grid time is extrapolated as (median time per step) x (sum over all configurations of
the steps the baseline would run), where that sum uses the crossing steps of the fast code, verified equal
to the baseline's on the subset. Fast timings are medians of interleaved repeats in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from batchscale.theory import nqm
from batchscale.theory.spectra import power_law_spectrum

TARGET = 0.01
MAX_STEPS = 10**7
BLOW_UP = 1e6


def baseline_steps(spectrum, batch: float, lr: float, beta: float = 0.0, cap: int = MAX_STEPS):
    """(steps or None, steps run): first t with E[loss] <= TARGET by the plain recursion."""
    h, c, n, x0 = spectrum.curvature, spectrum.noise, spectrum.counts, spectrum.init_sq
    w = 0.5 * n * h
    a = 1.0 - lr * h + beta
    kick = lr * lr * c / batch
    now, cross, before = x0.copy(), x0.copy(), x0.copy()  # E[x_t^2], E[x_t x_{t-1}], E[x_{t-1}^2]
    limit = BLOW_UP * float(w @ x0)
    for t in range(cap + 1):
        loss = float(w @ now)
        if loss <= TARGET:
            return t, t
        if not loss < limit:
            return None, t
        # x_{t+1} = a x_t - beta x_{t-1} - lr xi_t
        now, cross, before = (
            a * a * now - 2 * a * beta * cross + beta * beta * before + kick,
            a * now - beta * cross,
            now,
        )
    return None, cap


def baseline_grid_best(spectrum, batch: float, lrs: np.ndarray, betas: np.ndarray, cap: int = MAX_STEPS):
    """Fewest steps over all (lr, beta) pairs: one step-by-step loop vectorised over the pairs, stopped at
    the first step where any pair reaches the target (every other pair needs more steps)."""
    h, c, n, x0 = spectrum.curvature, spectrum.noise, spectrum.counts, spectrum.init_sq
    w = 0.5 * n * h
    lr, beta = (v.ravel()[:, None] for v in np.meshgrid(lrs, betas, indexing="ij"))  # (P, 1)
    a = 1.0 - lr * h + beta  # (P, K)
    kick = lr * lr * c / batch
    now = np.broadcast_to(x0, a.shape).copy()
    cross, before = now.copy(), now.copy()
    live = np.ones(a.shape[0], dtype=bool)
    limit = BLOW_UP * float(w @ x0)
    for t in range(cap + 1):
        loss = now @ w
        if np.any(live & (loss <= TARGET)):
            return t
        live &= loss < limit  # blown-up pairs are dropped
        with np.errstate(over="ignore", invalid="ignore"):
            now, cross, before = (
                a * a * now - 2 * a * beta * cross + beta * beta * before + kick,
                a * now - beta * cross,
                now,
            )
    return None


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    value = func(*args, **kwargs)
    return value, time.perf_counter() - start


def steps_run(result) -> np.ndarray:
    """Steps the baseline runs per configuration: the crossing, the cap, or ~the blow-up (diverged)."""
    return np.where(result.status == "ok", result.steps, np.where(result.status == "diverged", 0, MAX_STEPS))


def verify(spectrum, table: dict, fast_steps):
    """Baseline on ``table`` {flat index: (B, lr, beta)}: (per-step seconds, mismatches, steps run)."""
    per_step, mismatches, total = [], 0, 0
    for i, (batch, lr, beta) in table.items():
        (steps, ran), seconds = timed(baseline_steps, spectrum, batch, lr, beta)
        expected = int(fast_steps[i])
        mismatches += (steps if steps is not None else -1) != expected
        total += ran
        if ran > 1000:
            per_step.append(seconds / ran)
    return statistics.median(per_step), mismatches, total


def sgd_benchmark(spectrum, repeats: int, quick: bool, rng) -> dict:
    batches = 2 ** np.arange(2, 22)
    lrs = nqm.decade_grid(-5, 0.5, 100)
    fast_times, curve = [], None
    for _ in range(repeats):
        curve, seconds = timed(nqm.tune_steps, spectrum, batches, TARGET, lr_grid=lrs, search="grid")
        fast_times.append(seconds)
    every = nqm.steps_to_target(spectrum, batches[:, None], lrs[None, :], TARGET, max_steps=MAX_STEPS)
    steps = every.steps.reshape(batches.size, lrs.size)
    subset = []
    for i, b in enumerate(batches):
        if quick and b < 64:
            continue
        best = int(np.flatnonzero(lrs == curve.learning_rate[i])[0])
        near = range(max(best - 1, 0), min(best + 2, lrs.size))
        subset += [(i, j) for j in near if every.status[i * lrs.size + j] != "unreachable"]
    cheap = [(i, j) for i in range(batches.size) for j in range(lrs.size) if 0 <= steps[i, j] <= 20_000]
    subset += [cheap[k] for k in rng.choice(len(cheap), size=min(40, len(cheap)), replace=False)]
    table = {(i * lrs.size + j): (float(batches[i]), float(lrs[j]), 0.0) for i, j in subset}
    per_step, mismatches, ran = verify(spectrum, table, every.steps)
    total_steps = float(steps_run(every).sum())
    reached_steps = float(every.steps[every.status == "ok"].sum())
    return {
        "reached_s": per_step * reached_steps,
        "case": "SGD curve: 20 batch sizes x 100 learning rates, d=1e4 in 100 bins",
        "fast_s": statistics.median(fast_times),
        "baseline_s": per_step * total_steps,
        "verified": f"{len(table)} configs (best LR +-1 per batch + 40 random), {mismatches} mismatches",
        "baseline_measured_s": per_step * ran,
        "per_step_us": per_step * 1e6,
        "total_steps": total_steps,
        "curve": curve,
    }


def momentum_benchmark(spectrum, repeats: int, rng, batch: int = 1024) -> dict:
    lrs = nqm.decade_grid(-5, 0.5, 100)
    momenta = 1.0 - nqm.decade_grid(-3, 0, 20)
    fast_times, curve = [], None
    for _ in range(repeats):
        curve, seconds = timed(
            nqm.tune_steps, spectrum, [batch], TARGET, lr_grid=lrs, momentum_grid=momenta, search="grid"
        )
        fast_times.append(seconds)
    every = nqm.steps_to_target(spectrum, batch, lrs[:, None], TARGET, momentum=momenta[None, :])
    steps = every.steps.reshape(lrs.size, momenta.size)
    best_i = int(np.flatnonzero(lrs == curve.learning_rate[0])[0])
    best_j = int(np.flatnonzero(momenta == curve.momentum[0])[0])
    subset = [
        (i, j)
        for i in range(max(best_i - 1, 0), min(best_i + 2, lrs.size))
        for j in range(max(best_j - 1, 0), min(best_j + 2, momenta.size))
        if every.status[i * momenta.size + j] != "unreachable"
    ]
    cheap = [(i, j) for i in range(lrs.size) for j in range(momenta.size) if 0 <= steps[i, j] <= 30_000]
    subset += [cheap[k] for k in rng.choice(len(cheap), size=min(40, len(cheap)), replace=False)]
    table = {(i * momenta.size + j): (float(batch), float(lrs[i]), float(momenta[j])) for i, j in subset}
    per_step, mismatches, ran = verify(spectrum, table, every.steps)
    total_steps = float(steps_run(every).sum())
    reached_steps = float(every.steps[every.status == "ok"].sum())
    return {
        "reached_s": per_step * reached_steps,
        "case": f"momentum: 100 learning rates x 20 momenta at B={batch}, d=1e4 in 100 bins",
        "fast_s": statistics.median(fast_times),
        "baseline_s": per_step * total_steps,
        "verified": f"{len(table)} configs (best +-1 grid step + 40 random), {mismatches} mismatches",
        "baseline_measured_s": per_step * ran,
        "per_step_us": per_step * 1e6,
        "total_steps": total_steps,
        "curve": curve,
    }


def race_benchmark(spectrum, repeats: int) -> list[dict]:
    """Whole tuned curves against the race-stopped baseline (measured, not extrapolated)."""
    lrs, momenta = nqm.decade_grid(-5, 0.5, 100), 1.0 - nqm.decade_grid(-3, 0, 20)
    batches = 2 ** np.arange(2, 22)
    out = []
    for name, bs, betas in [
        ("SGD curve, 20 batch sizes x 100 LRs", batches, None),
        ("momentum, 100 LRs x 20 momenta at B=1024", np.array([1024]), momenta),
    ]:
        fast_times = []
        for _ in range(repeats):
            curve, seconds = timed(
                nqm.tune_steps, spectrum, bs, TARGET, lr_grid=lrs, momentum_grid=betas, search="grid"
            )
            fast_times.append(seconds)
        grid = np.zeros(1) if betas is None else betas
        start = time.perf_counter()
        loop = [baseline_grid_best(spectrum, float(b), lrs, grid) for b in bs]
        baseline_s = time.perf_counter() - start
        same = sum(int(x == int(y)) for x, y in zip(loop, curve.steps, strict=True))
        out.append((name, statistics.median(fast_times), baseline_s, f"{same}/{len(bs)} batch sizes"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip baseline runs for batch sizes < 64")
    parser.add_argument("--repeats", type=int, default=3, help="fast-code repeats (median)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    spectrum = power_law_spectrum(10_000, 1.0, bins=100)
    rows = [
        sgd_benchmark(spectrum, args.repeats, args.quick, rng),
        momentum_benchmark(spectrum, args.repeats, rng),
    ]
    print(
        "| case | fast (median) | baseline, all configs (extrapolated) | speed-up "
        "| baseline, reachable configs "
        "only | speed-up | baseline us/step | identical steps |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        full, reached, fast = r["baseline_s"], r["reached_s"], r["fast_s"]
        print(
            f"| {r['case']} | {fast:.2f} s | {full:.3g} s | {full / fast:.3g}x | {reached:.3g} s "
            f"| {reached / fast:.3g}x | {r['per_step_us']:.1f} | {r['verified']} |"
        )
    print()
    print(
        "| whole tuned curve | fast (median) | baseline: loop vectorised over the grid, stopped at the "
        "first crossing (measured) | speed-up | identical best steps |"
    )
    print("|---|---|---|---|---|")
    for name, fast, slow, same in race_benchmark(spectrum, args.repeats):
        print(f"| {name} | {fast:.2f} s | {slow:.1f} s | {slow / fast:.0f}x | {same} |")
    print()
    print("tuned SGD curve (grid):", [int(s) for s in rows[0]["curve"].steps])
    print("tuned momentum (grid):", rows[1]["curve"].rows()[0])


if __name__ == "__main__":
    main()
