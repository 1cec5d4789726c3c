"""The resumable results store: one SQLite row per finished trial, shared safely by concurrent sweeps.

A sweep writes every trial to an SQLite database as soon as the trial's result reaches the parent
process, one transaction per trial. The row's key is the trial id, a hash of the trial's fully resolved
configuration, so re-running the same sweep finds the trials it already finished and skips them; killing
the process at any moment loses only the trials in flight.

Schema (version :data:`SCHEMA_VERSION`, stamped as ``PRAGMA user_version``; the file carries
``PRAGMA application_id`` = :data:`APPLICATION_ID`)::

    meta(key TEXT PRIMARY KEY, value TEXT)   -- 'format', 'schema_version', 'created_at', 'created_by'
    trials(trial_id TEXT PRIMARY KEY, <one column per TrialResult field>, <PROVENANCE columns>)
    claims(trial_id TEXT PRIMARY KEY, owner TEXT, expires REAL)   -- trials being trained right now

The ``trials`` columns are derived from :class:`batchscale.empirical.trials.TrialResult` (see
:func:`result_columns`): an ``int`` field is an INTEGER column, ``float`` REAL (non-finite values stored
as NULL: SQLite has no NaN), ``str`` TEXT, ``bool`` INTEGER, anything else (the config, the history,
notes) JSON text. Adding a field to ``TrialResult`` therefore adds a column: an existing store gains it
when a sweep opens it (older rows read the field's default). Schema version 1 (no ``config_hash``, no
``claims``) is upgraded in place, in one transaction, by the first sweep that opens it; ``batchscale runs``
reads it as it is.

A database written by another program (another application id, foreign tables, not SQLite at all), by a
newer batchscale (a larger schema version), damaged (``PRAGMA quick_check``), read-only or not a regular
file is refused with an :class:`InputError` naming the file and what to do, before any training, and is
never modified. Read-only access (:func:`open_existing_store`) never writes and leaves no ``-wal``/``-shm``
files behind.

Shared stores: before training a trial a sweep *claims* it (:meth:`Store.claim`: a ``claims`` row with the
owner's id and a lease that the owner renews while it trains). Another sweep on the same store skips
trials claimed under a live lease and waits for their rows; an expired lease (its owner was killed) is
reclaimed. Writing a trial's row releases its claim. Every row carries ``config_hash``, the sha256 of its
config: a row whose config or hash does not match the trial asked for is not reused.

This module needs only the standard library (no torch), so ``batchscale runs`` starts fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sqlite3
import time
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

from batchscale.empirical.trials import TrialResult
from batchscale.errors import InputError

APPLICATION_ID = 0x42534331  # 'BSC1'
SCHEMA_VERSION = 2
SQLITE_MAGIC = b"SQLite format 3\x00"
OUR_TABLES = frozenset({"meta", "trials", "claims"})
V1_TABLES = frozenset({"meta", "trials"})
# The columns of a version-1 store, in their order; rows are shown and exported in this order, with
# columns added since then after them.
V1_COLUMNS = (
    "trial_id", "config", "status", "steps", "final_metric", "final_loss", "best_metric", "history",
    "wall_time", "started_at", "finished_at", "device", "versions", "session", "stop_step", "notes",
)
SQL_TYPES = {"int": "INTEGER", "float": "REAL", "str": "TEXT", "bool": "INTEGER", "json": "TEXT"}
BUSY_TIMEOUT = 30.0  # seconds a connection waits for another process's write lock


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


@dataclass(frozen=True)
class Column:
    """One column of the ``trials`` table: its name, kind (``int|float|str|bool|json``) and default.

    ``default`` is the value of a row written before the column existed (and of a key missing when
    writing): the field's default."""

    name: str
    kind: str
    default: Any = None

    @property
    def sql_type(self) -> str:
        return SQL_TYPES[self.kind]

    def to_sql(self, value: Any) -> Any:
        """The value as stored: JSON text, a finite float or NULL, an int, a str."""
        if self.kind == "json":
            return json.dumps(value, sort_keys=True, allow_nan=False, default=_json_default)
        if value is None:
            return None
        if self.kind == "float":
            value = float(value)
            return value if math.isfinite(value) else None
        return {"int": int, "bool": int, "str": str}[self.kind](value)

    def from_sql(self, value: Any) -> Any:
        """The stored value as plain Python data (JSON parsed)."""
        if self.kind == "json":
            return None if value is None else json.loads(value)
        return bool(value) if self.kind == "bool" and value is not None else value


def result_columns(result_type: type = TrialResult) -> tuple[Column, ...]:
    """One :class:`Column` per field of the dataclass ``result_type``, kinds from its type hints."""
    hints = typing.get_type_hints(result_type)
    columns = []
    for f in dataclasses.fields(result_type):
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hints[f.name]))
        base = args[0] if optional and len(args) == 1 else hints[f.name]
        kind = {int: "int", float: "float", str: "str", bool: "bool"}.get(base, "json")
        default = _field_default(f)
        if kind == "json":
            default = json.loads(json.dumps(default, default=_json_default))
        columns.append(Column(f.name, kind, default))
    return tuple(columns)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


RESULT_COLUMNS = result_columns()
PROVENANCE_COLUMNS = (
    Column("started_at", "float"),  # when the trial's chunk started (unix seconds)
    Column("finished_at", "float"),  # when its result reached the store
    Column("versions", "json", {}),  # package versions of the process that trained it
    Column("session", "str"),  # id of the sweep invocation that wrote it
    Column("config_hash", "str"),  # sha256 of the canonical JSON of its config (checked on reuse)
)


def _in_v1_order(columns: Iterable[Column]) -> tuple[Column, ...]:
    columns = list(columns)
    rank = {name: i for i, name in enumerate(V1_COLUMNS)}
    return tuple(sorted(columns, key=lambda c: (rank.get(c.name, len(rank)), columns.index(c))))


COLUMNS = _in_v1_order((Column("trial_id", "str"), *RESULT_COLUMNS, *PROVENANCE_COLUMNS))
COLUMN_NAMES = tuple(c.name for c in COLUMNS)


def _record_field(column: Column) -> tuple[str, Any, Any]:
    if column.name == "trial_id":
        return (column.name, str)
    default = column.default
    if isinstance(default, (dict, list)):
        return (column.name, Any, field(default_factory=lambda d=default: json.loads(json.dumps(d))))
    return (column.name, Any, field(default=default))


def _to_dict(self: Any) -> dict[str, Any]:
    """Plain dict of every column, in display order."""
    return {name: getattr(self, name) for name in COLUMN_NAMES}


def _result_dict(self: Any) -> dict[str, Any]:
    """The fields of a ``TrialResult.to_dict()`` (config, status, steps, metrics, history, ...).

    Non-finite metrics were stored as None (SQLite has no NaN)."""
    return {c.name: getattr(self, c.name) for c in RESULT_COLUMNS}


TrialRecord = make_dataclass(
    "TrialRecord",
    [_record_field(c) for c in COLUMNS],
    frozen=True,
    namespace={"to_dict": _to_dict, "result_dict": _result_dict, "__module__": __name__},
)
TrialRecord.__doc__ = """One stored trial: one attribute per column of :data:`COLUMNS`, as plain data.

    ``config`` is the trial's resolved configuration (``TrainConfig.to_dict()``), the result fields those of
    ``TrialResult.to_dict()``, ``versions`` the package versions of the process that trained it,
    ``session`` the id of the sweep invocation that wrote it and ``config_hash`` the hash of ``config``.
    """


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 (64 hex digits) of the canonical JSON of a ``TrainConfig.to_dict()``."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def record_from_result(
    trial_id: str,
    result: Mapping[str, Any],
    *,
    started_at: float | None = None,
    finished_at: float | None = None,
    versions: Mapping[str, str] | None = None,
    session: str | None = None,
) -> Any:
    """A :data:`TrialRecord` from a ``TrialResult.to_dict()``-shaped mapping (values as they read back)."""
    values = {c.name: result.get(c.name, c.default) for c in RESULT_COLUMNS}
    values.update(
        trial_id=trial_id,
        started_at=started_at,
        finished_at=time.time() if finished_at is None else finished_at,
        versions=dict(versions or {}),
        session=session,
        config_hash=config_hash(result["config"]),
    )
    return TrialRecord(**{c.name: c.from_sql(c.to_sql(values[c.name])) for c in COLUMNS})


def record_matches(record: Any, expected_hash: str) -> bool:
    """Whether a stored row is the trial whose config hashes to ``expected_hash`` and was not altered."""
    return record.config_hash == expected_hash and config_hash(record.config or {}) == expected_hash


@dataclass(frozen=True)
class ClaimOutcome:
    """What :meth:`Store.claim` found for each asked trial id.

    Attributes:
        reused: rows already stored that match (config hash) and were accepted, by id.
        ours: ids now claimed by the caller: train them.
        others: ids claimed by another owner under a live lease, with that owner: wait for their rows.
        mismatched: ids whose stored row did not match its config hash (tampered or stale): in ``ours``
            or ``others`` too, since they are trained again.
    """

    reused: dict[str, Any] = field(default_factory=dict)
    ours: tuple[str, ...] = ()
    others: dict[str, str] = field(default_factory=dict)
    mismatched: tuple[str, ...] = ()


class Store:
    """An open results database. Use :func:`open_store` or :func:`open_existing_store` to get one."""

    def __init__(self, path: Path, connection: sqlite3.Connection, *, readonly: bool = False):
        self.path = path
        self.readonly = readonly
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

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: waits for other writers, then holds the lock)."""
        if self.readonly:
            raise InputError(f"results database {str(self.path)!r} was opened read-only")
        with _transaction(self.connection) as connection:
            yield connection

    def put(self, record: Any) -> None:
        """Write (or replace) one trial's row and release its claim, in one transaction."""
        sql = (f"INSERT OR REPLACE INTO trials ({', '.join(COLUMN_NAMES)}) "
               f"VALUES ({', '.join('?' * len(COLUMNS))})")
        with self._write() as connection:
            connection.execute(sql, [c.to_sql(getattr(record, c.name)) for c in COLUMNS])
            connection.execute("DELETE FROM claims WHERE trial_id = ?", (record.trial_id,))

    def get(self, trial_id: str) -> Any | None:
        """The stored trial with this id, or None."""
        return self.get_many([trial_id]).get(trial_id)

    def get_many(self, trial_ids: Iterable[str]) -> dict[str, Any]:
        """Stored trials among ``trial_ids``, keyed by id."""
        out: dict[str, Any] = {}
        for chunk in _chunks(list(dict.fromkeys(trial_ids))):
            sql = f"SELECT * FROM trials WHERE trial_id IN ({', '.join('?' * len(chunk))})"
            out.update((r.trial_id, r) for r in self._query(sql, chunk))
        return out

    def records(self, status: str | None = None) -> list[Any]:
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

    def _query(self, sql: str, params: Sequence[Any]) -> Iterator[Any]:
        cursor = self.connection.execute(sql, list(params))
        names = [d[0] for d in cursor.description]
        for row in cursor.fetchall():
            yield self._record(dict(zip(names, row, strict=True)))

    def _record(self, values: Mapping[str, Any]) -> Any:
        record = {}
        for column in COLUMNS:
            try:
                stored = column.name in values
                record[column.name] = column.from_sql(values[column.name]) if stored else column.default
            except ValueError as exc:
                raise _unreadable_row(self.path, values["trial_id"], column.name, exc) from None
        if "config_hash" not in values:  # a version-1 store read as it is
            record["config_hash"] = config_hash(record["config"])
        return TrialRecord(**record)

    # -- claims: concurrent sweeps split the work ------------------------------------------------------

    def claim(
        self,
        wanted: Mapping[str, str],
        owner: str,
        *,
        lease: float,
        accept: Callable[[Any], bool] = lambda record: True,
    ) -> ClaimOutcome:
        """Sort ``wanted`` (``{trial_id: config_hash}``) into stored rows, our claims and others' claims.

        In one transaction: expired claims are dropped; a stored row that matches its config hash and
        that ``accept`` takes is reused; every other id is claimed for ``owner`` until now + ``lease``
        seconds unless another owner holds a live claim on it.
        """
        ids = list(wanted)
        with self._write() as connection:
            connection.execute("DELETE FROM claims WHERE expires < ?", (time.time(),))
            stored = self.get_many(ids)
            holders: dict[str, str] = {}
            for chunk in _chunks(ids):
                sql = f"SELECT trial_id, owner FROM claims WHERE trial_id IN ({', '.join('?' * len(chunk))})"
                holders.update(connection.execute(sql, chunk).fetchall())
            reused, ours, others, mismatched = {}, [], {}, []
            for trial_id in ids:
                record = stored.get(trial_id)
                if record is not None and not record_matches(record, wanted[trial_id]):
                    mismatched.append(trial_id)
                elif record is not None and accept(record):
                    reused[trial_id] = record
                    continue
                if holders.get(trial_id, owner) == owner:
                    ours.append(trial_id)
                else:
                    others[trial_id] = holders[trial_id]
            expires = time.time() + lease
            connection.executemany(
                "INSERT OR REPLACE INTO claims (trial_id, owner, expires) VALUES (?, ?, ?)",
                [(trial_id, owner, expires) for trial_id in ours],
            )
        return ClaimOutcome(reused, tuple(ours), others, tuple(mismatched))

    def renew(self, owner: str, lease: float) -> None:
        """Extend every claim of ``owner`` to now + ``lease`` seconds."""
        with self._write() as connection:
            connection.execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + lease, owner))

    def release(self, owner: str) -> None:
        """Drop every claim of ``owner`` (its sweep ends)."""
        with self._write() as connection:
            connection.execute("DELETE FROM claims WHERE owner = ?", (owner,))

    def claims(self) -> dict[str, tuple[str, float]]:
        """Current claims: ``{trial_id: (owner, expires)}``."""
        if "claims" not in _table_names(self.connection):
            return {}
        rows = self.connection.execute("SELECT trial_id, owner, expires FROM claims").fetchall()
        return {trial_id: (owner, expires) for trial_id, owner, expires in rows}


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception) on an autocommit connection."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


# ---------------------------------------------------------------------------------------------------
# Opening: refuse what is not ours, check integrity and writability, create or upgrade atomically


def _read_header(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(100)


def check_store_file(path: str | Path) -> None:
    """Raise :class:`InputError` unless ``path`` is absent, empty, or a batchscale database we can read.

    Looks only at the path, the header bytes and, for a plain SQLite file, its table names through a
    read-only immutable connection: a refused file is never modified.
    """
    path = Path(path)
    if str(path) in ("", "."):
        raise InputError("the results database path is empty; pass a file name with --db")
    if path.is_dir():
        raise InputError(f"results database {str(path)!r} is a directory, not a file")
    if path.exists() and not path.is_file():
        raise InputError(f"results database {str(path)!r} is not a regular file; pass a file name with --db")
    if not path.exists() or path.stat().st_size == 0:
        return
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
        return _table_names(connection)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{str(path)!r} is not a readable SQLite database: {exc}") from None
    finally:
        connection.close()


def _table_names(connection: sqlite3.Connection) -> set[str]:
    return {n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _damaged(path: Path, what: str) -> InputError:
    return InputError(
        f"results database {str(path)!r} is damaged ({what}); move it aside and re-run (its trials are "
        f"trained again), or recover its rows first with `sqlite3 {path} .recover`"
    )


def _check_integrity(connection: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check``: every page and index readable and consistent."""
    try:
        problems = [row[0] for row in connection.execute("PRAGMA quick_check(3)").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise _damaged(path, str(exc)) from None
    if problems != ["ok"]:
        raise _damaged(path, "; ".join(problems))


def _check_tables(connection: sqlite3.Connection, path: Path, version: int) -> None:
    tables = _table_names(connection)
    needed = V1_TABLES if version == 1 else OUR_TABLES
    if tables - OUR_TABLES:
        raise InputError(
            f"{str(path)!r} holds foreign tables ({', '.join(sorted(tables - OUR_TABLES))}); "
            "refusing to use it"
        )
    if not needed <= tables:
        missing = ", ".join(sorted(needed - tables))
        raise _damaged(path, f"table(s) {missing} missing")
    columns = {row[1] for row in connection.execute("PRAGMA table_info(trials)")}
    if "trial_id" not in columns or "config" not in columns:
        raise _damaged(path, "its trials table lacks the trial_id or config column")


def _check_writable(path: Path) -> None:
    """Refuse a store (or the directory of a new one) this process may not write."""
    if path.exists():
        if not _may_write(path):
            raise _not_writable(path, f"the file {str(path)!r} is read-only")
        directory = path.parent
    else:
        directory = _existing_ancestor(path)
        if not directory.is_dir():
            raise InputError(
                f"cannot create results database {str(path)!r}: {str(directory)!r} is a file, not a directory"
            )
    if not _may_write(directory):
        raise _not_writable(path, f"the directory {str(directory)!r} is read-only")


def _not_writable(path: Path, why: str) -> InputError:
    return InputError(
        f"results database {str(path)!r} is not writable ({why}); make it writable or pass another --db "
        "(`batchscale runs` can still read it)"
    )


def _may_write(path: Path) -> bool:
    """Whether this process (its effective user) may write ``path``."""
    return os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def _existing_ancestor(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def _create_or_upgrade(connection: sqlite3.Connection, path: Path) -> None:
    """Create the schema, upgrade version 1, add new result columns: all in one transaction.

    The transaction also writes ``meta``, so a store the process may not write fails here, at once."""
    with _transaction(connection):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if not _table_names(connection):  # new, or its creation was interrupted before any table
            _create_schema(connection)
            version = SCHEMA_VERSION
        _check_tables(connection, path, version)
        if version == 1:
            _upgrade_v1(connection, path)
        _add_missing_columns(connection)
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


def _schema_sql() -> list[str]:
    columns = ",\n    ".join(
        f"{c.name} {c.sql_type}{' PRIMARY KEY' if c.name == 'trial_id' else ''}" for c in COLUMNS
    )
    return [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS trials (\n    {columns}\n)",
        "CREATE TABLE IF NOT EXISTS claims (trial_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
        "expires REAL NOT NULL)",
    ]


def _create_schema(connection: sqlite3.Connection) -> None:
    """Stamp the ids and create the tables (inside the caller's transaction)."""
    from batchscale import __version__

    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    for statement in _schema_sql():
        connection.execute(statement)
    meta = {
        "format": "batchscale-results",
        "schema_version": str(SCHEMA_VERSION),
        "created_at": str(time.time()),
        "created_by": f"batchscale {__version__}",
    }
    connection.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", meta.items())


def _upgrade_v1(connection: sqlite3.Connection, path: Path) -> None:
    """Version 1 -> 2: the ``claims`` table and a ``config_hash`` for every row (from its own config)."""
    connection.execute(_schema_sql()[2])
    connection.execute("ALTER TABLE trials ADD COLUMN config_hash TEXT")
    hashes = []
    for trial_id, config in connection.execute("SELECT trial_id, config FROM trials").fetchall():
        try:
            hashes.append((config_hash(json.loads(config)), trial_id))
        except (TypeError, ValueError) as exc:
            raise _unreadable_row(path, trial_id, "config", exc) from None
    connection.executemany("UPDATE trials SET config_hash = ? WHERE trial_id = ?", hashes)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    """Columns of fields added to ``TrialResult`` since the store was written (older rows: the default)."""
    present = {row[1] for row in connection.execute("PRAGMA table_info(trials)")}
    for column in COLUMNS:
        if column.name not in present:
            default = _sql_literal(column.to_sql(column.default))
            sql = f"ALTER TABLE trials ADD COLUMN {column.name} {column.sql_type} DEFAULT {default}"
            connection.execute(sql)


def _sql_literal(value: Any) -> str:
    """An SQL literal of a stored value (NULL, a number, or a quoted string)."""
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _unreadable_row(path: Path, trial_id: str, column: str, exc: Exception) -> InputError:
    return InputError(
        f"results database {str(path)!r}: the {column} of trial {trial_id!r} is unreadable ({exc}); the row "
        "was changed outside batchscale: delete that row (its trial is trained again) or restore the file"
    )


def _sql_error(path: Path, exc: sqlite3.Error) -> InputError:
    text = str(exc)
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return _not_writable(path, text)
    if "malformed" in text or "not a database" in text:
        return _damaged(path, text)
    return InputError(f"{str(path)!r} is not a usable results database: {text}")


def connect(path: str | Path) -> Store:
    """Open (creating if absent) the results database at ``path`` for a sweep; the caller closes it.

    Raises :class:`InputError`, before anything is trained and leaving the file untouched, for a path
    that is not a regular file, a foreign, newer-schema or damaged database, or one this process cannot
    write. A new store is created in one transaction; a version-1 store is upgraded in one transaction.
    """
    path = Path(path)
    check_store_file(path)
    _check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the directory of results database {str(path)!r}: {exc}") from None
    try:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    except sqlite3.Error as exc:
        raise _sql_error(path, exc) from None
    try:
        _check_integrity(connection, path)
        _create_or_upgrade(connection, path)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        connection.close()
        raise _sql_error(path, exc) from None
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
    """Open an existing database read-only (for ``batchscale runs``); the caller closes it.

    Nothing is written: a store we may write is opened read-write with ``PRAGMA query_only`` (so the last
    connection to close removes the ``-wal``/``-shm`` files as usual); a read-only one with ``mode=ro``,
    or ``immutable`` when no writer's ``-wal`` file exists (a read-only connection could not remove it).
    """
    path = Path(path)
    if str(path) not in ("", ".") and not path.exists():
        raise InputError(f"no results database at {str(path)!r} (run `batchscale sweep ... --db` first)")
    check_store_file(path)
    if path.stat().st_size == 0:
        raise InputError(f"{str(path)!r} is empty, not a batchscale results database")
    writable = _may_write(path) and _may_write(path.parent)
    wal = Path(f"{path}-wal")
    mode = "rw" if writable else "ro" if wal.exists() else "ro&immutable=1"
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=BUSY_TIMEOUT)
    except sqlite3.Error as exc:
        raise _sql_error(path, exc) from None
    try:
        connection.execute("PRAGMA query_only = ON")
        _check_integrity(connection, path)
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        _check_tables(connection, path, version)
    except sqlite3.Error as exc:
        connection.close()
        raise _sql_error(path, exc) from None
    except BaseException:
        connection.close()
        raise
    return Store(path, connection, readonly=True)
