"""The resumable results store: one SQLite row per finished trial.

A sweep writes every trial to an SQLite database as soon as the trial's result reaches the parent
process, one transaction per trial. The row's key is the trial id, a hash of the trial's fully resolved
configuration, so re-running the same sweep finds the trials it already finished and skips them; killing
the process at any moment loses only the trials in flight.

Schema (version :data:`SCHEMA_VERSION`, stamped as ``PRAGMA user_version``; the file carries
``PRAGMA application_id`` = :data:`APPLICATION_ID`)::

    meta(key TEXT PRIMARY KEY, value TEXT)        -- 'format', 'schema_version', 'created_at', 'created_by'
    trials(trial_id TEXT PRIMARY KEY, config TEXT /* JSON */, status TEXT, steps INTEGER,
           final_metric REAL, final_loss REAL, best_metric REAL, history TEXT /* JSON */,
           wall_time REAL, started_at REAL, finished_at REAL, device TEXT,
           versions TEXT /* JSON */, session TEXT, stop_step INTEGER, notes TEXT /* JSON */)

A database written by another program (another application id, foreign tables, not SQLite at all) or by a
newer batchscale (a larger schema version) is refused with an :class:`InputError` and never modified: it
is inspected through its header bytes and, when needed, a read-only immutable connection.

This module needs only the standard library (no torch), so ``batchscale runs`` starts fast.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from batchscale.errors import InputError

APPLICATION_ID = 0x42534331  # 'BSC1'
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
OUR_TABLES = frozenset({"meta", "trials"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    trial_id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    steps INTEGER,
    final_metric REAL,
    final_loss REAL,
    best_metric REAL,
    history TEXT,
    wall_time REAL,
    started_at REAL,
    finished_at REAL,
    device TEXT,
    versions TEXT,
    session TEXT,
    stop_step INTEGER,
    notes TEXT
);
"""

JSON_COLUMNS = ("config", "history", "versions", "notes")


@dataclass(frozen=True)
class TrialRecord:
    """One stored trial: its resolved config, outcome and provenance.

    ``config`` is the trial's resolved configuration (``TrainConfig.to_dict()``), ``history`` its metric
    history as JSON-able data, ``versions`` the package versions of the process that trained it and
    ``session`` the id of the sweep invocation that wrote it (so a resumed run can tell reused rows).
    """

    trial_id: str
    config: dict[str, Any]
    status: str
    steps: int | None = None
    final_metric: float | None = None
    final_loss: float | None = None
    best_metric: float | None = None
    history: Any = None
    wall_time: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    device: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    session: str | None = None
    stop_step: int | None = None
    notes: tuple[str, ...] | list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return asdict(self)

    def result_dict(self) -> dict[str, Any]:
        """The fields of a ``TrialResult.to_dict()`` (config, status, steps, metrics, history, ...).

        Non-finite metrics were stored as None (SQLite has no NaN)."""
        keys = ("config", "status", "steps", "final_metric", "final_loss", "best_metric", "history",
                "wall_time", "device", "stop_step")
        return {**{k: getattr(self, k) for k in keys}, "notes": list(self.notes or [])}


def record_from_result(
    trial_id: str,
    result: Mapping[str, Any],
    *,
    started_at: float | None = None,
    finished_at: float | None = None,
    versions: Mapping[str, str] | None = None,
    session: str | None = None,
) -> TrialRecord:
    """A :class:`TrialRecord` from a ``TrialResult.to_dict()``-shaped mapping."""
    steps = result.get("steps")
    return TrialRecord(
        trial_id=trial_id,
        config=dict(result["config"]),
        status=str(result["status"]),
        steps=None if steps is None else int(steps),
        final_metric=_finite_or_none(result.get("final_metric")),
        final_loss=_finite_or_none(result.get("final_loss")),
        best_metric=_finite_or_none(result.get("best_metric")),
        history=result.get("history"),
        wall_time=_finite_or_none(result.get("wall_time")),
        started_at=started_at,
        finished_at=time.time() if finished_at is None else finished_at,
        device=None if result.get("device") is None else str(result.get("device")),
        versions=dict(versions or {}),
        session=session,
        stop_step=None if result.get("stop_step") is None else int(result["stop_step"]),
        notes=list(result.get("notes") or []),
    )


def _finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or None when missing or not finite (SQLite has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _read_header(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(100)


def check_store_file(path: str | Path) -> None:
    """Raise :class:`InputError` unless ``path`` is absent, empty, or a batchscale database we can read.

    Looks only at the header bytes and, for a plain SQLite file, its table names through a read-only
    immutable connection: a refused file is never modified.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    if path.is_dir():
        raise InputError(f"results database {str(path)!r} is a directory, not a file")
    header = _read_header(path)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise InputError(f"{str(path)!r} is not an SQLite database; refusing to use it as a results store")
    application_id = int.from_bytes(header[68:72], "big")
    user_version = int.from_bytes(header[60:64], "big")
    if application_id == APPLICATION_ID:
        if user_version > SCHEMA_VERSION:
            raise InputError(
                f"{str(path)!r} has batchscale store schema version {user_version}, newer than this "
                f"batchscale supports ({SCHEMA_VERSION}); upgrade batchscale or use another --db"
            )
        return
    if application_id != 0:
        raise InputError(
            f"{str(path)!r} belongs to another program (SQLite application_id {application_id:#x}); "
            "refusing to modify it"
        )
    tables = _table_names_readonly(path)
    if tables:
        raise InputError(
            f"{str(path)!r} is an SQLite database of another program (tables: {', '.join(sorted(tables))}); "
            "refusing to modify it"
        )


def _table_names_readonly(path: Path) -> set[str]:
    uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
    try:
        connection = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise InputError(f"cannot read {str(path)!r} as SQLite: {exc}") from None
    try:
        rows = connection.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{str(path)!r} is not a readable SQLite database: {exc}") from None
    finally:
        connection.close()
    return {name for (name,) in rows}


class Store:
    """An open results database. Use :func:`open_store` (a context manager) to get one."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self._connection = connection

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise InputError(f"results database {str(self.path)!r} is closed")
        return self._connection

    def put(self, record: TrialRecord) -> None:
        """Write (or replace) one trial's row in its own transaction."""
        values = record.to_dict()
        for key in JSON_COLUMNS:
            values[key] = json.dumps(values[key], sort_keys=True, allow_nan=False, default=_json_default)
        names = [f.name for f in fields(TrialRecord)]
        sql = f"INSERT OR REPLACE INTO trials ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        with self.connection:
            self.connection.execute(sql, [values[n] for n in names])

    def get(self, trial_id: str) -> TrialRecord | None:
        """The stored trial with this id, or None."""
        found = self.get_many([trial_id])
        return found.get(trial_id)

    def get_many(self, trial_ids: Iterable[str]) -> dict[str, TrialRecord]:
        """Stored trials among ``trial_ids``, keyed by id."""
        ids = list(dict.fromkeys(trial_ids))
        out: dict[str, TrialRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            sql = f"SELECT * FROM trials WHERE trial_id IN ({', '.join('?' * len(chunk))})"
            for record in self._query(sql, chunk):
                out[record.trial_id] = record
        return out

    def records(self, status: str | None = None) -> list[TrialRecord]:
        """All stored trials (optionally only those with ``status``), oldest first."""
        if status is None:
            return list(self._query("SELECT * FROM trials ORDER BY finished_at, trial_id", []))
        sql = "SELECT * FROM trials WHERE status = ? ORDER BY finished_at, trial_id"
        return list(self._query(sql, [status]))

    def count(self) -> int:
        """Number of stored trials."""
        return int(self.connection.execute("SELECT COUNT(*) FROM trials").fetchone()[0])

    def meta(self) -> dict[str, str]:
        """The ``meta`` table as a dict."""
        return dict(self.connection.execute("SELECT key, value FROM meta").fetchall())

    def _query(self, sql: str, params: list[Any]) -> Iterator[TrialRecord]:
        cursor = self.connection.execute(sql, params)
        names = [d[0] for d in cursor.description]
        for row in cursor.fetchall():
            values = dict(zip(names, row, strict=True))
            for key in JSON_COLUMNS:
                values[key] = None if values[key] is None else json.loads(values[key])
            values["versions"] = values["versions"] or {}
            yield TrialRecord(**values)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def _create_schema(connection: sqlite3.Connection) -> None:
    """Stamp ids and create tables (rollback journal, so the header is in the main file), then WAL."""
    with connection:
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.executescript(SCHEMA)
        from batchscale import __version__

        meta = {
            "format": "batchscale-results",
            "schema_version": str(SCHEMA_VERSION),
            "created_at": str(time.time()),
            "created_by": f"batchscale {__version__}",
        }
        connection.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", meta.items())


def _check_own_schema(connection: sqlite3.Connection, path: Path) -> None:
    tables = {n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not OUR_TABLES <= tables:
        raise InputError(f"{str(path)!r} is a batchscale database with missing tables; it looks damaged")
    if tables - OUR_TABLES:
        raise InputError(
            f"{str(path)!r} holds foreign tables ({', '.join(sorted(tables - OUR_TABLES))}); "
            "refusing to use it"
        )


def connect(path: str | Path) -> Store:
    """Open (creating if absent) the results database at ``path``; the caller must ``close()`` it.

    Raises :class:`InputError` for a foreign, corrupt or newer-schema file, leaving it untouched.
    """
    path = Path(path)
    check_store_file(path)
    fresh = not path.exists() or path.stat().st_size == 0
    if fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30.0)
    try:
        if fresh:
            _create_schema(connection)
        _check_own_schema(connection, path)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise InputError(f"{str(path)!r} is not a usable results database: {exc}") from None
    except BaseException:
        connection.close()
        raise
    return Store(path, connection)


@contextmanager
def open_store(path: str | Path) -> Iterator[Store]:
    """``with open_store(path) as store:`` opens, validates and always closes the database."""
    store = connect(path)
    try:
        yield store
    finally:
        store.close()


def open_existing_store(path: str | Path) -> Store:
    """Open a database that must already exist (for ``batchscale runs``); the caller closes it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no results database at {str(path)!r} (run `batchscale sweep ... --db` first)")
    if path.stat().st_size == 0:
        raise InputError(f"{str(path)!r} is empty, not a batchscale results database")
    return connect(path)
