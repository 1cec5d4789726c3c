"""The SQLite results store: round trips, resumption keys, and refusal of foreign files."""

from __future__ import annotations

import math
import sqlite3

import pytest

from batchscale.empirical.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    TrialRecord,
    check_store_file,
    open_existing_store,
    open_store,
    record_from_result,
)
from batchscale.errors import InputError

RESULT = {
    "config": {"batch_size": 8, "learning_rate": 0.1, "optimizer": "sgd"},
    "status": "complete",
    "steps": 120,
    "final_metric": 0.19,
    "final_loss": float("nan"),
    "best_metric": 0.18,
    "history": [[10, 0.5, 1.2], [120, 0.19, 0.6]],
    "wall_time": 1.5,
    "device": "cpu",
}


def test_round_trip_and_nan_becomes_none(tmp_path):
    path = tmp_path / "runs.sqlite"
    with open_store(path) as store:
        store.put(record_from_result("abc", RESULT, versions={"torch": "x"}, session="s1"))
        assert store.count() == 1
        got = store.get("abc")
        assert store.get("missing") is None
    assert got.config == RESULT["config"]
    assert got.history == RESULT["history"]
    assert got.final_loss is None and got.steps == 120 and got.session == "s1"
    assert got.versions == {"torch": "x"}
    assert math.isclose(got.result_dict()["final_metric"], 0.19)


def test_header_stamps_and_wal(tmp_path):
    path = tmp_path / "runs.sqlite"
    with open_store(path) as store:
        store.put(record_from_result("a", RESULT))
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION)
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        connection.close()
    header = path.read_bytes()[:100]
    assert int.from_bytes(header[68:72], "big") == APPLICATION_ID


def test_reopen_keeps_rows_and_replace_is_idempotent(tmp_path):
    path = tmp_path / "runs.sqlite"
    with open_store(path) as store:
        store.put(record_from_result("a", RESULT))
        store.put(record_from_result("b", {**RESULT, "status": "diverged", "steps": None}))
    with open_store(path) as store:
        store.put(record_from_result("a", RESULT))
        assert store.count() == 2
        assert [r.trial_id for r in store.records(status="diverged")] == ["b"]
        assert set(store.get_many(["a", "b", "c"])) == {"a", "b"}


def _foreign_sqlite(path):
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
            connection.execute("INSERT INTO customers VALUES (1, 'x')")
    finally:
        connection.close()


def _newer_schema(path):
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
            connection.execute("CREATE TABLE trials (trial_id TEXT)")
    finally:
        connection.close()


def _other_application(path):
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.execute("PRAGMA application_id = 1234")
    finally:
        connection.close()


def _not_sqlite(path):
    path.write_bytes(b"hello, this is not a database\n" * 10)


def _truncated_sqlite(path):
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 10)


@pytest.mark.parametrize(
    "make, words",
    [
        (_foreign_sqlite, "another program"),
        (_newer_schema, "newer"),
        (_other_application, "application_id"),
        (_not_sqlite, "not an SQLite"),
        (_truncated_sqlite, "not an SQLite"),
    ],
    ids=["foreign-tables", "newer-schema", "other-app-id", "not-sqlite", "truncated"],
)
def test_foreign_files_are_refused_and_untouched(tmp_path, make, words):
    path = tmp_path / "their.db"
    make(path)
    before = path.read_bytes()
    with pytest.raises(InputError, match=words) as info:
        with open_store(path):
            pass
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["their.db"]


def test_missing_file_for_runs_commands(tmp_path):
    with pytest.raises(InputError, match="no results database"):
        open_existing_store(tmp_path / "nope.sqlite")
    check_store_file(tmp_path / "nope.sqlite")  # absent is fine for a sweep: it will be created


def test_record_fields_are_json_safe(tmp_path):
    record = TrialRecord(trial_id="x", config={"a": (1, 2)}, status="pruned", history={"steps": [1]})
    with open_store(tmp_path / "r.sqlite") as store:
        store.put(record)
        assert store.get("x").config == {"a": [1, 2]}
