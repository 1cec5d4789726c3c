"""Fault tests of a sweep's store with real processes (slow): two sweeps sharing one store, Ctrl-C, SIGKILL,
a read-only store and a damaged one.

Trainings are counted from each process's own summary line ("N trials trained, M reused") and from the
store's rows (one per trial); tables are compared with an uninterrupted, unshared reference run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from batchscale.empirical.store import open_store, record_from_result

pytestmark = pytest.mark.slow

SWEEP = [
    "sweep", "steps", "--workload", "digits-mlp", "--batch-sizes", "16,32", "--optimizers", "sgd,momentum",
    "--lrs", "4", "--lr-range", "0.02:0.8", "--target", "0.15", "--max-steps", "1500", "--eval-subset", "0",
    "--max-extensions", "1", "--threads", "1", "--format", "json",
]
KEYS = ("optimizer", "batch_size", "steps", "learning_rate", "momentum", "status", "n_trials", "at_edge")
SUMMARY = re.compile(r"done in [\d.]+s: (\d+) trials trained, (\d+) reused")


def start(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "batchscale.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    trained, reused = map(int, SUMMARY.search(err).groups())
    return [tuple(r[k] for k in KEYS) for r in json.loads(out)], trained, reused, err


def rows_and_claims(db: Path) -> tuple[dict[str, str], dict[str, str]]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = dict(connection.execute("SELECT trial_id, session FROM trials"))
        claims = dict(connection.execute("SELECT trial_id, owner FROM claims"))
    finally:
        connection.close()
    return rows, claims


def count_rows(db: Path) -> int:
    try:
        return len(rows_and_claims(db)[0])
    except sqlite3.Error:
        return 0


def holds_claims_and_rows(db: Path) -> bool:
    try:
        rows, claims = rows_and_claims(db)
    except sqlite3.Error:
        return False
    return bool(rows) and bool(claims)


def test_two_concurrent_sweeps_split_the_work_and_agree(tmp_path):
    reference, shared = tmp_path / "reference.sqlite", tmp_path / "shared.sqlite"
    first = start([*SWEEP, "--executor", "inline", "--db", str(shared)])
    second = start([*SWEEP, "--executor", "inline", "--db", str(shared)])
    table_1, trained_1, reused_1, err_1 = finish(first)
    table_2, trained_2, reused_2, err_2 = finish(second)
    ref_table, ref_trained, _, _ = finish(start([*SWEEP, "--executor", "inline", "--db", str(reference)]))
    rows, claims = rows_and_claims(shared)
    print(f"trainings: {trained_1} + {trained_2} = {trained_1 + trained_2} for {len(rows)} trials "
          f"(one sweep alone: {ref_trained})")
    assert trained_1 + trained_2 == len(rows) == ref_trained, "a trial was trained twice"
    assert trained_1 + reused_1 == trained_2 + reused_2 == ref_trained
    assert len(set(rows.values())) == 2 and claims == {}
    assert table_1 == table_2 == ref_table


def test_sigint_ends_without_traceback_says_how_to_resume_and_resumes(tmp_path):
    db = tmp_path / "runs.sqlite"
    args = [*SWEEP, "--executor", "local", "--workers", "1", "--no-prune", "--db", str(db)]
    victim = start(args, start_new_session=True)
    deadline = time.monotonic() + 300
    while count_rows(db) < 2 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the sweep ended before it could be interrupted"
    os.killpg(victim.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    out, err = victim.communicate(timeout=120)
    assert victim.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert f"stored in {db}; run the same command again to resume" in err
    kept, claims = rows_and_claims(db)
    assert kept and claims == {}
    _, trained, reused, err = finish(start(args))
    assert reused >= len(kept) and "another sweep" not in err
    assert len(rows_and_claims(db)[0]) == len(kept) + trained


def test_sigkill_then_immediate_resume_takes_over_the_killed_sweeps_claims(tmp_path):
    db = tmp_path / "runs.sqlite"
    args = [*SWEEP, "--executor", "local", "--workers", "1", "--db", str(db)]
    victim = start(args)
    deadline = time.monotonic() + 300
    while not holds_claims_and_rows(db) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    kept, claims = rows_and_claims(db)
    assert claims, "the killed sweep held no claims: nothing is tested"
    _, trained, reused, err = finish(start(args))
    assert "another sweep" not in err, "the resumed sweep waited for the dead sweep's claims"
    rows, claims = rows_and_claims(db)
    assert claims == {} and all(rows[k] == v for k, v in kept.items()) and reused >= len(kept)


PRELOAD_THEN_RUN_AS = """
import os, sys
from click.testing import CliRunner
import batchscale.empirical.executors, batchscale.empirical.store, batchscale.empirical.sweep
from batchscale.cli.main import cli
from batchscale.empirical.workloads import get_workload
get_workload("digits-mlp", device="cpu", seed=0)  # as root: imports and data cache
if os.geteuid() == 0:
    os.setegid(65534)
    os.seteuid(65534)
result = CliRunner().invoke(cli, sys.argv[1:])
print(result.exit_code)
print(result.output)
"""


def test_read_only_store_is_refused_before_training(tmp_path):
    """As user nobody when we are root (root writes read-only files): the CLI in a process that imported
    everything first, since nobody may not read root's Python installation."""
    folder = Path(tempfile.mkdtemp(prefix="batchscale-ro-"))
    try:
        folder.chmod(0o777)
        db = folder / "runs.sqlite"
        with open_store(db) as store:
            store.put(record_from_result("x", {"config": {"batch_size": 1}, "status": "complete"}))
        db.chmod(0o444)
        before = db.read_bytes()
        args = [*SWEEP, "--executor", "inline", "--db", str(db)]
        done = subprocess.run([sys.executable, "-c", PRELOAD_THEN_RUN_AS, *args], capture_output=True,
                              text=True, timeout=300)
        code, *output = [line for line in done.stdout.splitlines() if line.strip()]
        assert code == "2", done.stdout + done.stderr
        assert output[-1].startswith("Error: results database") and "is read-only" in output[-1]
        assert not any("trials trained" in line or "B=" in line for line in output), output
        assert db.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["runs.sqlite"]
    finally:
        for path in folder.iterdir():
            path.chmod(0o644)
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def test_damaged_store_is_refused_before_training(tmp_path):
    db = tmp_path / "runs.sqlite"
    with open_store(db) as store:
        for i in range(300):
            result = {"config": {"i": i}, "status": "complete", "notes": ["x" * 200]}
            store.put(record_from_result(f"t{i}", result))
    data = bytearray(db.read_bytes())
    page = 4096
    data[len(data) - page : len(data) - page + 64] = b"\xa5" * 64  # the last page's header
    db.write_bytes(bytes(data))
    process = start([*SWEEP, "--executor", "inline", "--db", str(db)])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert err.strip().splitlines()[-1].startswith(f"Error: results database '{db}' is damaged")
    assert "trials trained" not in err and "B=" not in err and bytes(data) == db.read_bytes()
