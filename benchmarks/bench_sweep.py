"""Cost of the sweep's answer-preserving choices on the README's quick sweep (`sweep steps --quick`).

Variants, each run on a fresh store per seed (so nothing is reused) through the CLI as a user runs it:

- ``verify``: the default (pruning on, every pruned trial that could still win re-run without pruning
  within the best trial's steps);
- ``no-prune``: ``--no-prune`` (every trial trained to the target or its budget);
- ``prune-only``: ``--no-verify-pruned`` (the old default: the pruning rule's answer);
- ``3-seeds``: the default with ``--n-seeds 3`` against ``--n-seeds 1`` (stacked seeds);
- ``later-4``: 3 seeds with ``--later-lrs 4`` (4 rates in every window after the first), against
  ``3-seeds`` when listed after it (``--variants 3-seeds,later-4``: the first variant is the reference).

Rounds alternate the order of the variants so that all see the same machine load. The table gives the
median wall time, trials trained, the ratio to the first variant, and how many (optimizer, batch size)
points report other steps or another learning rate than ``no-prune`` (the answer pruning must not
change).

    .venv/bin/python benchmarks/bench_sweep.py --seeds 0,1,2,3 --variants verify,no-prune,prune-only
    .venv/bin/python benchmarks/bench_sweep.py --seeds 0 --variants 1-seed,3-seeds

``--headline``: where the time of the headline sweep (``sweep steps`` with every default: MNIST-1D, B =
1..2048, SGD and momentum) goes, with load-independent counts: for each ``--n-seeds`` in ``--n-seeds-list``
(default 1,3) one run on a fresh store, its wall time, the CPU time of the sweep and its workers
(``resource.getrusage`` of the children), the load average, the trials and optimizer steps trained per
phase (window search, extensions, refinement levels, verification re-runs, completion of the winner's
stopped seeds; the sweep's own count) and the steps per optimizer and batch size (from the store: the
trial's final row, so a trial trained twice counts once there). ``--batch-sizes`` restricts the sweep
(e.g. 1,2,4 for the expensive end); extra sweep options go after ``--``.

    .venv/bin/python benchmarks/bench_sweep.py --headline [--n-seeds-list 1,3] [--keep DIR]

``--keep DIR`` keeps each run's store as ``DIR/headline-<n>-seeds.sqlite`` (e.g. to print the run's table
again, reusing every trial, with ``batchscale sweep steps --db ...``).

``--replay DB``: the optimizer steps the exact stopping rule (3 seeds) would train at each (optimizer,
batch size) of a store filled by an earlier sweep, replayed over the recorded evaluation histories,
against the steps that sweep stored (its final rows: a trial trained twice counts once, so the stored
number is a lower bound of what it trained). Window trials are those whose rate is a power of 2 away
from a rate of the batch size's first round (to 0.05 in log2: the first window's factor is 125^(1/7) =
1.994), the others refinement trials; a window trial stops at its
first recorded evaluation at a step >= max(U, S_s) (U the best median and S_s its seed's fewest steps
among the trials finished by then), a refinement trial at the final limits. A trial whose record ends
before that (pruned by the old rule at or after its limit) counts its recorded stop. Approximate (the
crossing replays are not counted), load-independent.

    .venv/bin/python benchmarks/bench_sweep.py --replay OLD_RUNS.sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNER = "import sys; from batchscale.cli.main import main; sys.argv[0] = 'batchscale'; main()"

VARIANTS: dict[str, list[str]] = {
    "verify": ["--n-seeds", "1"],
    "no-prune": ["--n-seeds", "1", "--no-prune"],
    "prune-only": ["--n-seeds", "1", "--no-verify-pruned"],
    "1-seed": ["--n-seeds", "1"],
    "3-seeds": ["--n-seeds", "3"],
    "later-4": ["--n-seeds", "3", "--later-lrs", "4"],
}


def run(variant: str, seed: int, extra: list[str], folder: Path, src: Path) -> dict:
    """One quick sweep on a fresh store; wall time, trials trained and the rows."""
    db = folder / f"{variant}-{seed}-{time.monotonic_ns()}.sqlite"
    command = [sys.executable, "-c", RUNNER, "sweep", "steps", "--quick", "--seed", str(seed),
               "--db", str(db), "--format", "json", *VARIANTS[variant], *extra]
    env = dict(os.environ, PYTHONPATH=str(src))
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{variant} seed {seed} failed:\n{done.stderr}")
    trained = re.search(r"(\d+) trials trained", done.stderr)
    return {"wall": wall, "trained": int(trained.group(1)) if trained else -1,
            "rows": json.loads(done.stdout)}


def answer(rows: list[dict]) -> dict[tuple[str, int], tuple]:
    return {(r["optimizer"], r["batch_size"]): (r["steps"], r["learning_rate"]) for r in rows}


PHASES = re.compile(r"trained per phase: (.*)")


def children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def headline_run(n_seeds: int, extra: list[str], folder: Path, src: Path, keep: Path | None = None) -> dict:
    """One headline sweep on a fresh store: wall, CPU, load, phases, steps per (optimizer, batch size).
    ``keep``: a folder to write the store to (refused when the store already exists: it must be fresh)."""
    db = folder / f"headline-{n_seeds}-{time.monotonic_ns()}.sqlite"
    if keep is not None:
        db = keep / f"headline-{n_seeds}-seeds.sqlite"
        if db.exists():
            raise SystemExit(f"{db} exists: the headline must run on a fresh store")
    command = [sys.executable, "-c", RUNNER, "sweep", "steps", "--n-seeds", str(n_seeds), "--db", str(db),
               "--format", "json", *extra]
    env = dict(os.environ, PYTHONPATH=str(src))
    load, cpu, started = os.getloadavg()[0], children_cpu(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall, cpu = time.perf_counter() - started, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"headline with {n_seeds} seed(s) failed:\n{done.stderr}")
    phases = {}
    match = PHASES.search(done.stderr)
    for part in (match.group(1).split(", ") if match else []):
        name, trials, steps = re.fullmatch(r"(\S+) (\d+) \((\d+)\)", part).groups()
        phases[name] = (int(trials), int(steps))
    per_point: dict[tuple[str, int], int] = {}
    with sqlite3.connect(db) as connection:
        for config, stop_step in connection.execute("SELECT config, stop_step FROM trials"):
            c = json.loads(config)
            key = (c["optimizer"], c["batch_size"])
            per_point[key] = per_point.get(key, 0) + (stop_step or 0)
    return {"n_seeds": n_seeds, "wall": wall, "cpu": cpu, "load": (load + os.getloadavg()[0]) / 2,
            "phases": phases, "per_point": per_point, "rows": json.loads(done.stdout)}


def headline(args: argparse.Namespace, extra: list[str]) -> None:
    """The ``--headline`` breakdown (see the module docstring)."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in args.n_seeds_list.split(",")):
            options = [*extra, *(["--batch-sizes", args.batch_sizes] if args.batch_sizes else [])]
            keep = None if args.keep is None else Path(args.keep)
            runs.append(headline_run(n, options, Path(tmp), Path(args.src), keep))
            r = runs[-1]
            print(f"{n} seed(s): {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, load {r['load']:.1f}",
                  file=sys.stderr, flush=True)
    names = list(dict.fromkeys(name for r in runs for name in r["phases"]))
    print("| seeds | wall s | CPU s | load avg | trials | optimizer steps | "
          + " | ".join(f"{name}: trials (steps)" for name in names) + " |")
    print("|---" * (6 + len(names)) + "|")
    for r in runs:
        trials = sum(t for t, _ in r["phases"].values())
        steps = sum(s for _, s in r["phases"].values())
        cells = [f"{r['phases'][n][0]} ({r['phases'][n][1]})" if n in r["phases"] else "-" for n in names]
        print(f"| {r['n_seeds']} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['load']:.1f} | {trials} | {steps} | "
              + " | ".join(cells) + " |")
    if len(runs) > 1:
        a, b = runs[0], runs[-1]
        steps = [sum(s for _, s in r["phases"].values()) for r in (a, b)]
        print(f"\n{b['n_seeds']} seeds / {a['n_seeds']} seed(s): wall {b['wall'] / a['wall']:.2f}x, CPU "
              f"{b['cpu'] / a['cpu']:.2f}x, optimizer steps {steps[1] / steps[0]:.2f}x, "
              f"CPU per step {b['cpu'] / steps[1] * 1e6:.1f} vs {a['cpu'] / steps[0] * 1e6:.1f} us")
    keys = sorted({k for r in runs for k in r["per_point"]})
    print("\n| optimizer | batch size | " + " | ".join(f"steps, {r['n_seeds']} seed(s)" for r in runs)
          + " | " + " | ".join(f"answer, {r['n_seeds']} seed(s)" for r in runs) + " |")
    print("|---|---:|" + "---:|" * (2 * len(runs)))
    for key in keys:
        answers = []
        for r in runs:
            row = next((x for x in r["rows"] if (x["optimizer"], x["batch_size"]) == key), None)
            answers.append("-" if row is None else f"{row['steps']} @ {row['learning_rate']}")
        print(f"| {key[0]} | {key[1]} | " + " | ".join(str(r["per_point"].get(key, 0)) for r in runs)
              + " | " + " | ".join(answers) + " |")


def replayed_limits(done: dict[tuple[float, int], int], seeds: int) -> dict[int, float]:
    """max(U, S_s) per seed from finished (rate, seed) -> steps (3 seeds: U the 2nd smallest)."""
    points: dict[float, list[int]] = {}
    own: dict[int, float] = {}
    for (lr, seed), steps in done.items():
        points.setdefault(lr, []).append(steps)
        own[seed] = min(own.get(seed, float("inf")), steps)
    hi = seeds // 2
    best = min((sorted(v)[hi] for v in points.values() if len(v) > hi), default=float("inf"))
    return {s: max(best, own.get(s, float("inf"))) for s in range(seeds)}


def replay(db: str, target: float = 0.2, seeds: int = 3) -> None:
    """The ``--replay`` table (see the module docstring)."""
    import math

    by_point: dict[tuple[str, int], list] = {}
    with sqlite3.connect(db) as connection:
        query = "SELECT config, status, steps, stop_step, history, started_at FROM trials"
        for config, status, steps, stop, history, started in connection.execute(query):
            c = json.loads(config)
            by_point.setdefault((c["optimizer"], c["batch_size"]), []).append(
                (c["learning_rate"], c["seed"], status, steps, stop or 0, json.loads(history), started))
    print("| optimizer | batch size | stored steps (old sweep) | exact rule: window | refinement | total | "
          "new / old |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key in sorted(by_point):
        trials = by_point[key]
        start = min(t[6] for t in trials)
        first = {t[0] for t in trials if abs(t[6] - start) < 1}

        def on_grid(lr: float, first: set[float] = first) -> bool:
            return any(abs(math.log2(lr / f) - round(math.log2(lr / f))) < 0.05 for f in first)

        window = [t for t in trials if on_grid(t[0])]
        if len({t[1] for t in trials}) != seeds or len(window) < len(first):
            continue
        done: dict[tuple[float, int], int] = {}
        running = {(t[0], t[1]): t for t in window}
        cost = 0
        for step in sorted({h[0] for t in window for h in t[5]}):
            limits = replayed_limits(done, seeds)
            for k, (_, seed, status, steps, stop, history, _) in list(running.items()):
                if status == "complete" and steps <= step:
                    done[k], cost = steps, cost + steps
                elif history and step > history[-1][0]:
                    cost += stop  # the record ends (stopped by the old rule at or after its limit)
                elif step >= limits[seed] and any(h[0] == step for h in history):
                    cost += step
                else:
                    continue
                del running[k]
        cost += sum(t[4] for t in running.values())
        limits = replayed_limits(done, seeds)
        refine = 0
        for _, seed, status, steps, stop, history, _ in (t for t in trials if not on_grid(t[0])):
            if status == "complete" and steps <= limits[seed]:
                refine += steps
            else:
                refine += next((h[0] for h in history if h[0] >= limits[seed]), stop)
        old = sum(t[4] for t in trials)
        print(f"| {key[0]} | {key[1]} | {old} | {cost} | {refine} | {cost + refine} | "
              f"{(cost + refine) / old:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--headline", action="store_true", help="the headline sweep's breakdown")
    parser.add_argument("--replay", default=None, help="a store: replay the exact stopping rule over it")
    parser.add_argument("--n-seeds-list", default="1,3", help="--headline: seed counts to run")
    parser.add_argument("--batch-sizes", default=None, help="--headline: restrict the batch sizes")
    parser.add_argument("--keep", default=None, help="--headline: a folder to keep each run's store in")
    parser.add_argument("--seeds", default="0", help="comma list of seeds (one quick sweep each)")
    parser.add_argument("--variants", default="verify,no-prune,prune-only")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--executor", default="local", help="executor of every run (local: one per core)")
    parser.add_argument("--src", default=str(ROOT / "src"), help="the batchscale sources to time")
    argv = sys.argv[1:]
    extra_sweep = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.replay:
        replay(args.replay)
        return
    if args.headline:
        headline(args, ["--executor", args.executor, *extra_sweep])
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    extra = ["--executor", args.executor]
    results: dict[str, dict[int, list[dict]]] = {v: {s: [] for s in seeds} for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            order = variants if k % 2 == 0 else variants[::-1]
            for seed in seeds:
                for variant in order:
                    out = run(variant, seed, extra, Path(tmp), Path(args.src))
                    results[variant][seed].append(out)
                    print(f"round {k} seed {seed} {variant}: {out['wall']:.1f} s, {out['trained']} trials",
                          file=sys.stderr)
    reference = "no-prune" if "no-prune" in variants else variants[0]
    base_wall = sum(statistics.median(o["wall"] for o in results[variants[0]][s]) for s in seeds)
    print(f"| variant | seeds | wall s (sum of medians) | x {variants[0]} | trials trained | "
          f"points differing from {reference} (steps or lr) |")
    print("|---|---|---|---|---|---|")
    for variant in variants:
        wall = sum(statistics.median(o["wall"] for o in results[variant][s]) for s in seeds)
        trained = sum(results[variant][s][0]["trained"] for s in seeds)
        differ, points = 0, 0
        for s in seeds:
            mine, ref = answer(results[variant][s][0]["rows"]), answer(results[reference][s][0]["rows"])
            points += len(ref)
            differ += sum(1 for key in ref if mine.get(key) != ref[key])
        print(f"| {variant} | {args.seeds} | {wall:.1f} | {wall / base_wall:.2f} | {trained} | "
              f"{differ} of {points} |")


if __name__ == "__main__":
    main()
