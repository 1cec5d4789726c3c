"""Wall time of `batchscale predict nqm` commands: this tree against an earlier revision, same run.

Each round runs every command once with the baseline code (the revision's `src/`, exported with
`git archive` and put first on PYTHONPATH) and once with this tree's, alternating which goes first, so both
see the same machine load. Times include Python start-up and imports, as a user sees them. The JSON outputs
are compared: steps, status, learning rates and momenta must be identical, and the largest relative
difference of `loss_at_steps` is reported.

    .venv/bin/python benchmarks/bench_nqm_cli.py --baseline 1fb8a63 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMANDS: dict[str, list[str]] = {
    "momentum, continuous (default)": ["--optimizer", "momentum"],
    "momentum, grid 100 x 20 x 20 batch sizes": ["--optimizer", "momentum", "--lr-search", "grid"],
    "sgd, continuous": [],
    "sgd, grid": ["--lr-search", "grid"],
    "momentum, alpha 1.5, d 2000, 50 bins, target 0.02": [
        "--optimizer", "momentum", "--alpha", "1.5", "--dim", "2000", "--bins", "50", "--target", "0.02",
    ],
    "momentum grid, alpha 2, d 500, 30 bins, target 1e-3": [
        "--optimizer", "momentum", "--lr-search", "grid", "--alpha", "2", "--dim", "500", "--bins", "30",
        "--target", "0.001", "--batch-sizes", "1..65536",
    ],
}

RUNNER = "import sys; from batchscale.cli.main import main; sys.argv[0] = 'batchscale'; main()"


def export(revision: str, into: Path) -> Path:
    """The revision's `src/` directory, extracted from `git archive` into ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "src"],
        check=True,
        capture_output=True,
    ).stdout
    tar_path = into / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run(args: list[str], src: Path) -> tuple[float, list[dict]]:
    env = dict(os.environ, PYTHONPATH=str(src))
    command = [sys.executable, "-c", RUNNER, "predict", "nqm", *args, "--format", "json"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(done.stdout)


def compare(old: list[dict], new: list[dict]) -> str:
    exact = ("batch_size", "steps", "status", "learning_rate", "momentum", "regime", "steps_lower_bound")
    if len(old) != len(new):
        return "DIFFERENT row count"
    worst = 0.0
    for a, b in zip(old, new, strict=True):
        for key in exact:
            if a.get(key) != b.get(key):
                return f"DIFFERENT {key} at batch {a['batch_size']}: {a.get(key)} vs {b.get(key)}"
        x, y = a["loss_at_steps"], b["loss_at_steps"]
        worst = max(worst, abs(x - y) / abs(x) if x else abs(y))
    return "identical" if worst == 0 else f"identical steps/LR/momentum; loss within {worst:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="substrings of the command names to run")
    options = parser.parse_args()
    names = [n for n in COMMANDS if not options.only or any(s in n for s in options.only)]
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"baseline": export(options.baseline, Path(tmp)), "new": ROOT / "src"}
        times = {(name, which): [] for name in names for which in sources}
        outputs = {}
        for round_index in range(options.rounds):
            order = list(sources) if round_index % 2 == 0 else list(sources)[::-1]
            for name in names:
                for which in order:
                    seconds, rows = run(COMMANDS[name], sources[which])
                    times[name, which].append(seconds)
                    outputs[name, which] = rows
            print(f"round {round_index + 1}/{options.rounds} done", file=sys.stderr, flush=True)
    one, five, _ = os.getloadavg()
    print(f"baseline `{options.baseline}`, {options.rounds} rounds, load average {one:.2f} {five:.2f}\n")
    print("| command (`predict nqm ... --format json`) | baseline median (s) | new median (s) | speed-up "
          "| runs baseline / new (s) | outputs |")
    print("|---|---|---|---|---|---|")
    for name in names:
        old, new = times[name, "baseline"], times[name, "new"]
        runs = " ".join(f"{t:.2f}" for t in old) + " / " + " ".join(f"{t:.2f}" for t in new)
        ratio = statistics.median(old) / statistics.median(new)
        verdict = compare(outputs[name, "baseline"], outputs[name, "new"])
        print(f"| {name} | {statistics.median(old):.2f} | {statistics.median(new):.2f} | {ratio:.2f}x "
              f"| {runs} | {verdict} |")


if __name__ == "__main__":
    main()
