"""Speed of `batchscale verify` (--quick): each claim from an empty store, then re-run from the full one,
and `verify all --quick` cold and re-run.

Every run is the CLI as a user runs it, in a fresh working folder (so the default store and outputs start
empty), through a subprocess: the table gives wall time, the process's CPU time (user + system, with its
children: less sensitive than wall time to other load on a shared machine), the load average when the
run started, and the verdict counts. The goals (2 CPU cores): each claim's --quick under 2 minutes cold;
`verify all --quick` under 10 minutes cold and under 30 s re-run from a full store.

    .venv/bin/python benchmarks/bench_verify.py                 # every claim, then all
    .venv/bin/python benchmarks/bench_verify.py --claims regimes,noise-scale --no-all
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNER = "import sys; from batchscale.cli.main import main; sys.argv[0] = 'batchscale'; main()"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(claim: str, folder: Path, src: Path, extra: list[str]) -> dict:
    """One `verify CLAIM --quick --format json` in ``folder``; wall, CPU, load, verdict counts."""
    command = [sys.executable, "-c", RUNNER, "verify", claim, "--quick", "--format", "json", *extra]
    env = dict(os.environ, PYTHONPATH=str(src))
    load = os.getloadavg()[0]
    cpu0, started = children_cpu(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder, check=False)
    wall, cpu = time.perf_counter() - started, children_cpu() - cpu0
    if done.returncode not in (0, 1):
        raise SystemExit(f"verify {claim} exited {done.returncode}:\n{done.stderr}")
    rows = json.loads(done.stdout)
    verdicts = Counter(r["verdict"] for r in rows if not r.get("by_construction"))
    return {"claim": claim, "wall": wall, "cpu": cpu, "load": load, "verdicts": dict(verdicts)}


def counts(verdicts: dict) -> str:
    return ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--claims", default="", help="comma list (default: every registered claim)")
    parser.add_argument("--no-all", action="store_true", help="skip `verify all --quick`")
    parser.add_argument("--src", default=str(ROOT / "src"), help="the batchscale sources to time")
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    from batchscale.verify.registry import CLAIMS

    claims = args.claims.split(",") if args.claims else list(CLAIMS)
    src = Path(args.src)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for claim in claims + ([] if args.no_all else ["all"]):
            folder = Path(tmp) / claim
            folder.mkdir()
            cold = run(claim, folder, src, [])
            warm = run(claim, folder, src, [])
            table.append((cold, warm))
            print(f"{claim}: cold {cold['wall']:.1f} s, re-run {warm['wall']:.1f} s", file=sys.stderr)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| claim | cold wall s | cold CPU s | load | re-run wall s | re-run CPU s | verdicts (cold) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for cold, warm in table:
        print(f"| {cold['claim']} | {cold['wall']:.1f} | {cold['cpu']:.1f} | {cold['load']:.1f} | "
              f"{warm['wall']:.1f} | {warm['cpu']:.1f} | {counts(cold['verdicts'])} |")


if __name__ == "__main__":
    main()
