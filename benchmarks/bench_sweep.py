"""Cost of the sweep's answer-preserving choices on the README's quick sweep (`sweep steps --quick`).

Variants, each run on a fresh store per seed (so nothing is reused) through the CLI as a user runs it:

- ``verify``: the default (pruning on, every pruned trial that could still win re-run without pruning
  within the best trial's steps);
- ``no-prune``: ``--no-prune`` (every trial trained to the target or its budget);
- ``prune-only``: ``--no-verify-pruned`` (the old default: the pruning rule's answer);
- ``3-seeds``: the default with ``--n-seeds 3`` against ``--n-seeds 1`` (stacked seeds).

Rounds alternate the order of the variants so that all see the same machine load. The table gives the
median wall time, trials trained, the ratio to the first variant, and how many (optimizer, batch size)
points report other steps or another learning rate than ``no-prune`` (the answer pruning must not
change).

    .venv/bin/python benchmarks/bench_sweep.py --seeds 0,1,2,3 --variants verify,no-prune,prune-only
    .venv/bin/python benchmarks/bench_sweep.py --seeds 0 --variants 1-seed,3-seeds
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0", help="comma list of seeds (one quick sweep each)")
    parser.add_argument("--variants", default="verify,no-prune,prune-only")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--executor", default="local", help="executor of every run (local: one per core)")
    parser.add_argument("--src", default=str(ROOT / "src"), help="the batchscale sources to time")
    args = parser.parse_args()
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
