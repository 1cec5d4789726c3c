"""``batchscale runs list|show|export`` on a store written directly (no training)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli
from batchscale.empirical.store import open_store, record_from_result
from batchscale.empirical.trials import TrainConfig, TrialResult


def make_db(path):
    configs = [
        TrainConfig(workload="digits-mlp", batch_size=b, learning_rate=lr)
        for b in (8, 16)
        for lr in (0.1, 1.0)
    ]
    with open_store(path) as store:
        for i, config in enumerate(configs):
            status = "diverged" if config.learning_rate == 1.0 else "complete"
            result = TrialResult(
                config, status, None if status == "diverged" else 100 // config.batch_size, 0.19, 0.6, 0.18,
                history=((0, 0.9, 2.3), (10, 0.19, 0.6)),
            )
            when = 1000.0 + i
            record = record_from_result(config.trial_id(), result.to_dict(), finished_at=when, session="s")
            store.put(record)
    return configs


def invoke(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_list_filters_and_formats(tmp_path):
    db = tmp_path / "runs.sqlite"
    configs = make_db(db)
    result = invoke(["runs", "list", "--db", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["trial_id"] for r in rows] == [c.trial_id() for c in configs]
    assert rows[0]["batch_size"] == 8 and rows[0]["steps"] == 12
    assert rows[0]["finished"] == "1970-01-01 00:16:40"
    args = ["runs", "list", "--db", str(db), "--status", "diverged", "--format", "json"]
    diverged = json.loads(invoke(args).stdout)
    assert {r["learning_rate"] for r in diverged} == {1.0}
    table = invoke(["runs", "list", "--db", str(db), "--limit", "1"])
    assert table.exit_code == 0 and len(table.stdout.strip().splitlines()) == 3


def test_show_by_prefix_and_errors(tmp_path):
    db = tmp_path / "runs.sqlite"
    configs = make_db(db)
    trial_id = configs[1].trial_id()
    result = invoke(["runs", "show", trial_id[:8], "--db", str(db)])
    assert result.exit_code == 0
    (row,) = json.loads(result.stdout)
    assert row["trial_id"] == trial_id and row["config.learning_rate"] == 1.0 and row["status"] == "diverged"
    assert row["history"] == [[0, 0.9, 2.3], [10, 0.19, 0.6]]
    missing = invoke(["runs", "show", "zzzz", "--db", str(db)])
    assert missing.exit_code == 2 and "no trial" in missing.stderr
    ambiguous = invoke(["runs", "show", "", "--db", str(db)])
    assert ambiguous.exit_code == 2 and "4 trials" in ambiguous.stderr


def test_export_csv_and_json(tmp_path):
    db = tmp_path / "runs.sqlite"
    make_db(db)
    text = invoke(["runs", "export", "--db", str(db)]).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 4 and rows[0]["config.workload"] == "digits-mlp"
    assert json.loads(rows[0]["history"]) == [[0, 0.9, 2.3], [10, 0.19, 0.6]]
    out = tmp_path / "runs.json"
    result = invoke(["runs", "export", "--db", str(db), "--format", "json", "-o", str(out)])
    assert result.exit_code == 0
    exported = json.loads(out.read_text())
    assert {r["config.batch_size"] for r in exported} == {8, 16} and "versions" in exported[0]


@pytest.mark.parametrize("command", [["list"], ["export"], ["show", "abc"]])
def test_missing_and_foreign_databases(tmp_path, command):
    result = invoke(["runs", *command, "--db", str(tmp_path / "absent.sqlite")])
    assert result.exit_code == 2 and "no results database" in result.stderr
    assert not (tmp_path / "absent.sqlite").exists()
    foreign = tmp_path / "foreign.sqlite"
    connection = sqlite3.connect(foreign)
    try:
        with connection:
            connection.execute("CREATE TABLE t (x)")
    finally:
        connection.close()
    before = foreign.read_bytes()
    result = invoke(["runs", *command, "--db", str(foreign)])
    assert result.exit_code == 2 and "another program" in result.stderr
    assert foreign.read_bytes() == before


BAD_STATUS = "'bogus' is not one of 'complete', 'incomplete', 'diverged', 'pruned'"


@pytest.mark.parametrize(
    "args, words",
    [
        (["list", "--status", "bogus"], BAD_STATUS),
        (["export", "--status", "bogus"], BAD_STATUS),
        (["list", "--limit", "-5"], "-5 is not in the range x>=0"),
        (["list", "--db", ""], "empty"),
        (["list", "--db", "/dev/null"], "not a regular file"),
    ],
    ids=["list-status", "export-status", "negative-limit", "empty-db", "dev-null"],
)
def test_bad_options_are_one_error_line(tmp_path, args, words):
    db = tmp_path / "runs.sqlite"
    make_db(db)
    full = ["runs", *args] if "--db" in args else ["runs", *args, "--db", str(db)]
    result = invoke(full)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error:") and words in lines[-1], result.stderr
    assert result.stdout == ""


def test_reading_commands_leave_the_store_as_it_was(tmp_path):
    db = tmp_path / "runs.sqlite"
    configs = make_db(db)
    before = db.read_bytes()
    for args in (["list"], ["export"], ["show", configs[0].trial_id()[:6]]):
        assert invoke(["runs", *args, "--db", str(db)]).exit_code == 0
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.sqlite"]


def test_export_creates_missing_parent_directories(tmp_path):
    db = tmp_path / "runs.sqlite"
    make_db(db)
    out = tmp_path / "missing" / "deeper" / "x.csv"
    result = invoke(["runs", "export", "--db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(io.StringIO(out.read_text())))) == 4
    (tmp_path / "file.txt").write_text("")
    blocked = invoke(["runs", "export", "--db", str(db), "-o", str(tmp_path / "file.txt" / "x.csv")])
    assert blocked.exit_code == 2 and blocked.stderr.strip().splitlines()[-1].startswith("Error:")
    assert "file.txt" in blocked.stderr and "Traceback" not in blocked.output
