"""The SQLite results store: round trips, resumption keys, and refusal of foreign files."""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from batchscale.empirical.store import (
    APPLICATION_ID,
    COLUMN_NAMES,
    RESULT_COLUMNS,
    SCHEMA_VERSION,
    TrialRecord,
    check_store_file,
    config_hash,
    connect,
    open_existing_store,
    open_store,
    opening,
    record_from_result,
    result_columns,
)
from batchscale.empirical.trials import TrainConfig, TrialResult
from batchscale.errors import InputError

NOBODY = 65534

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


# --- one schema, derived from TrialResult ----------------------------------------------------------


def full_result() -> TrialResult:
    """A result with a non-default value in every field, so a field the store forgets shows up."""
    config = TrainConfig(workload="digits-mlp", workload_options={"n": [1, 2]}, batch_size=8, target=None)
    values = {
        "config": config, "status": "incomplete", "steps": 17, "final_metric": 0.25, "final_loss": 0.5,
        "best_metric": 0.125, "history": ((0, 0.9, 2.5), (10, None, 0.75)), "wall_time": 1.5,
        "device": "cuda:1", "stop_step": 33, "notes": ("a note",),
    }
    defaults = {f.name: getattr(TrialResult(config, "complete", None, None, None, None), f.name)
                for f in fields(TrialResult)}
    missing = {f.name for f in fields(TrialResult)} - set(values)
    assert not missing, f"give the new TrialResult field(s) {missing} a non-default value here"
    assert all(values[k] != defaults[k] for k in values if k != "config")
    return TrialResult(**values)


def test_every_trial_result_field_is_a_column_and_round_trips(tmp_path):
    result = full_result()
    assert [c.name for c in RESULT_COLUMNS] == [f.name for f in fields(TrialResult)]
    assert set(COLUMN_NAMES) == {"trial_id", *(f.name for f in fields(TrialResult)), "started_at",
                                 "finished_at", "versions", "session", "config_hash"}
    with open_store(tmp_path / "r.sqlite") as store:
        store.put(record_from_result("t", result.to_dict(), session="s"))
        got = store.get("t")
        sql_types = {row[1]: row[2] for row in store.connection.execute("PRAGMA table_info(trials)")}
    assert TrialResult.from_dict(got.result_dict()) == result
    assert sql_types["steps"] == "INTEGER" and sql_types["wall_time"] == "REAL"
    assert sql_types["device"] == "TEXT" and sql_types["history"] == "TEXT"


def test_a_new_result_field_becomes_a_column_by_its_type():
    @dataclass(frozen=True)
    class Extended:
        count: int
        ratio: float | None
        label: str | None = None
        flag: bool = False
        pairs: tuple[tuple[int, int], ...] = ((1, 2),)

    columns = {c.name: c for c in result_columns(Extended)}
    assert {n: c.sql_type for n, c in columns.items()} == {
        "count": "INTEGER", "ratio": "REAL", "label": "TEXT", "flag": "INTEGER", "pairs": "TEXT"
    }
    assert columns["pairs"].default == [[1, 2]] and columns["flag"].from_sql(1) is True
    assert columns["ratio"].to_sql(float("inf")) is None
    assert columns["pairs"].from_sql(columns["pairs"].to_sql(((3, 4),))) == [[3, 4]]


# The schema of version 1, as batchscale 0.1 wrote it (kept here to test the upgrade).
V1_SQL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trials (
    trial_id TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL, steps INTEGER,
    final_metric REAL, final_loss REAL, best_metric REAL, history TEXT, wall_time REAL, started_at REAL,
    finished_at REAL, device TEXT, versions TEXT, session TEXT, stop_step INTEGER, notes TEXT
);
"""
V1_ROWS = [
    ("a1", '{"batch_size": 8, "learning_rate": 0.1}', "complete", 120, 0.19, None, 0.18,
     "[[10, 0.5, 1.2], [120, 0.19, 0.6]]", 1.5, 100.0, 101.0, "cpu", '{"torch": "2.0"}', "s1", 120, "[]"),
    ("b2", '{"batch_size": 16, "learning_rate": 1.0}', "diverged", None, None, None, 2.0,
     "[[0, 0.9, 2.3]]", 0.5, 100.0, 102.0, "cpu", "{}", "s1", 5, '["diverged at step 5"]'),
]


def make_v1_store(path):
    connection = sqlite3.connect(path)
    try:
        connection.executescript(V1_SQL)
        with connection:
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute("PRAGMA user_version = 1")
            connection.execute("INSERT INTO meta VALUES ('format', 'batchscale-results')")
            connection.execute("INSERT INTO meta VALUES ('schema_version', '1')")
            connection.executemany(f"INSERT INTO trials VALUES ({', '.join('?' * 16)})", V1_ROWS)
        connection.execute("PRAGMA journal_mode = WAL")
    finally:
        connection.close()


def check_v1_rows(store):
    a, b = store.get("a1"), store.get("b2")
    assert a.config == {"batch_size": 8, "learning_rate": 0.1} and a.status == "complete" and a.steps == 120
    assert a.final_metric == 0.19 and a.final_loss is None and a.history == [[10, 0.5, 1.2], [120, 0.19, 0.6]]
    assert a.versions == {"torch": "2.0"} and a.session == "s1" and a.finished_at == 101.0 and a.notes == []
    assert b.status == "diverged" and b.steps is None and b.stop_step == 5
    assert b.notes == ["diverged at step 5"]
    assert a.config_hash == config_hash(a.config) and b.config_hash == config_hash(b.config)
    assert [r.trial_id for r in store.records()] == ["a1", "b2"]


def test_version_1_store_is_read_as_is_and_upgraded_in_place(tmp_path):
    path = tmp_path / "v1.sqlite"
    make_v1_store(path)
    before = path.read_bytes()
    store = open_existing_store(path)  # `batchscale runs`: reads it, never upgrades it
    try:
        check_v1_rows(store)
    finally:
        store.close()
    assert path.read_bytes() == before
    with open_store(path) as store:  # a sweep upgrades it
        check_v1_rows(store)
        assert store.meta()["schema_version"] == "2"
        assert store.claims() == {}
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 2
        hashes = dict(connection.execute("SELECT trial_id, config_hash FROM trials"))
    finally:
        connection.close()
    assert hashes["a1"] == config_hash({"learning_rate": 0.1, "batch_size": 8})


def test_failed_upgrade_leaves_the_version_1_store_as_it_was(tmp_path):
    path = tmp_path / "v1.sqlite"
    make_v1_store(path)
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE trials SET config = 'not json' WHERE trial_id = 'b2'")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(InputError, match="b2"):
        with open_store(path):
            pass
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1.sqlite"]


def test_columns_missing_from_an_older_store_are_added(tmp_path):
    path = tmp_path / "old.sqlite"
    with open_store(path) as store:
        store.put(record_from_result("x", RESULT))
        with store.connection:
            store.connection.execute("ALTER TABLE trials DROP COLUMN notes")
            store.connection.execute("ALTER TABLE trials DROP COLUMN stop_step")
    with open_store(path) as store:
        got = store.get("x")
        assert got.notes == [] and got.stop_step is None and got.steps == 120
        store.put(record_from_result("y", {**RESULT, "notes": ["n"], "stop_step": 3}))
        assert store.get("y").notes == ["n"] and store.get("y").stop_step == 3


# --- refused at open, before any training ----------------------------------------------------------


@contextmanager
def unprivileged():
    """Run as user nobody when we are root (root may write read-only files), else as we are."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def shared_dir():
    """A directory user nobody may enter (pytest's tmp_path sits in a root-only directory)."""
    path = Path(tempfile.mkdtemp(prefix="batchscale-store-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        for child in path.iterdir():
            child.chmod(0o666)
        path.chmod(0o755)
        shutil.rmtree(path)


def written_store(path):
    with open_store(path) as store:
        store.put(record_from_result("a", RESULT))
    path.chmod(0o666)


def test_read_only_store_file_is_refused_at_open_and_still_readable(shared_dir):
    path = shared_dir / "runs.sqlite"
    written_store(path)
    path.chmod(0o444)
    before = path.read_bytes()
    with unprivileged():
        with pytest.raises(InputError, match=r"not writable \(the file .*runs.sqlite' is read-only\)"):
            connect(path)
        store = open_existing_store(path)
        try:
            assert store.get("a").steps == 120
        finally:
            store.close()
    assert path.read_bytes() == before
    assert sorted(p.name for p in shared_dir.iterdir()) == ["runs.sqlite"]


def test_store_in_read_only_directory_is_refused_at_open(shared_dir):
    written_store(shared_dir / "old.sqlite")
    shared_dir.chmod(0o555)
    with unprivileged():
        with pytest.raises(InputError, match="directory .* is read-only"):
            connect(shared_dir / "new.sqlite")
        with pytest.raises(InputError, match="directory .* is read-only"):
            connect(shared_dir / "old.sqlite")  # WAL needs its -wal and -shm files beside it
        store = open_existing_store(shared_dir / "old.sqlite")
        try:
            assert store.count() == 1
        finally:
            store.close()
    assert sorted(p.name for p in shared_dir.iterdir()) == ["old.sqlite"]


def test_db_under_a_regular_file_is_refused(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    for path in (tmp_path / "file.txt" / "runs.sqlite", tmp_path / "file.txt" / "sub" / "runs.sqlite"):
        with pytest.raises(InputError, match="file.txt' is a file, not a directory"):
            connect(path)
    assert (tmp_path / "file.txt").read_text() == "x"


@pytest.mark.parametrize("make", ["dev-null", "fifo", "empty", "dot"])
def test_non_regular_files_and_empty_paths_are_refused(tmp_path, make):
    paths = {"dev-null": Path("/dev/null"), "fifo": tmp_path / "pipe", "empty": Path(""), "dot": Path(".")}
    path = paths[make]
    if make == "fifo":
        os.mkfifo(path)
    journal_existed = Path("/dev/null-journal").exists()
    with pytest.raises(InputError, match="not a regular file|path is empty|is a directory"):
        connect(path)
    with pytest.raises(InputError, match="not a regular file|path is empty|is a directory"):
        open_existing_store(path)
    assert Path("/dev/null-journal").exists() == journal_existed


def damage_one_page(path):
    """Overwrite the middle of the trials table's last leaf page with garbage (header untouched)."""
    connection = sqlite3.connect(path)
    try:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        page_count = connection.execute("PRAGMA page_count").fetchone()[0]
    finally:
        connection.close()
    data = bytearray(path.read_bytes())
    start = (page_count - 1) * page_size
    data[start : start + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))


def test_damaged_page_is_refused_at_open_naming_the_file_and_what_to_do(tmp_path):
    path = tmp_path / "runs.sqlite"
    with open_store(path) as store:
        for i in range(300):
            store.put(record_from_result(f"t{i:03d}", {**RESULT, "notes": ["x" * 200]}))
    damage_one_page(path)
    before = path.read_bytes()
    for opener in (connect, open_existing_store):
        with pytest.raises(InputError, match=r"runs.sqlite' is damaged .*move it aside.*\.recover") as info:
            opener(path).close()
        assert "\n" not in str(info.value)
    assert path.read_bytes() == before


def test_creation_is_one_transaction(tmp_path, monkeypatch):
    path = tmp_path / "runs.sqlite"

    def crash(*args):
        raise RuntimeError("crash while creating")

    monkeypatch.setattr(opening, "add_missing_columns", crash)
    with pytest.raises(RuntimeError):
        connect(path)
    header = path.read_bytes()[:100]
    assert len(header) == 0 or int.from_bytes(header[68:72], "big") == 0, "application id committed alone"
    monkeypatch.undo()
    with open_store(path) as store:
        store.put(record_from_result("a", RESULT))
        assert store.count() == 1


def test_half_created_store_from_an_interrupted_creation_is_completed(tmp_path):
    path = tmp_path / "runs.sqlite"
    connection = sqlite3.connect(path)  # what batchscale 0.1 left when killed after stamping the id
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute("PRAGMA user_version = 1")
    connection.close()
    with open_store(path) as store:
        store.put(record_from_result("a", RESULT))
        assert store.count() == 1 and store.meta()["schema_version"] == str(SCHEMA_VERSION)


def test_store_with_a_missing_table_says_how_to_recover(tmp_path):
    path = tmp_path / "runs.sqlite"
    written_store(path)
    connection = sqlite3.connect(path)
    connection.execute("DROP TABLE meta")
    connection.close()
    with pytest.raises(InputError, match="table.* meta missing.*move it aside"):
        connect(path)


def test_read_only_access_writes_nothing_and_leaves_no_wal_files(tmp_path):
    path = tmp_path / "runs.sqlite"
    written_store(path)
    before = path.read_bytes()
    store = open_existing_store(path)
    try:
        assert store.count() == 1
        with pytest.raises(InputError, match="read-only"):
            store.put(record_from_result("b", RESULT))
        with pytest.raises(sqlite3.OperationalError):
            store.connection.execute("DELETE FROM trials")
    finally:
        store.close()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.sqlite"]


def test_unreadable_row_is_an_input_error(tmp_path):
    path = tmp_path / "runs.sqlite"
    written_store(path)
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE trials SET history = '[1, 2' WHERE trial_id = 'a'")
    connection.close()
    store = open_existing_store(path)
    try:
        with pytest.raises(InputError, match="history of trial 'a' is unreadable"):
            store.records()
    finally:
        store.close()
