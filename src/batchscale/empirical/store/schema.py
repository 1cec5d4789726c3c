"""The store's schema, derived from :class:`~batchscale.empirical.trials.TrialResult`: columns, the stored
record, conversions, and the SQL that creates a store or upgrades an older one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sqlite3
import time
import typing
from collections.abc import Iterable, Mapping
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


def json_default(value: Any) -> Any:
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
            return json.dumps(value, sort_keys=True, allow_nan=False, default=json_default)
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
            default = json.loads(json.dumps(default, default=json_default))
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
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=json_default)
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


def table_names(connection: sqlite3.Connection) -> set[str]:
    """Names of the tables in the database."""
    return {n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def schema_sql() -> list[str]:
    columns = ",\n    ".join(
        f"{c.name} {c.sql_type}{' PRIMARY KEY' if c.name == 'trial_id' else ''}" for c in COLUMNS
    )
    return [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS trials (\n    {columns}\n)",
        "CREATE TABLE IF NOT EXISTS claims (trial_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
        "expires REAL NOT NULL)",
    ]


def create_schema(connection: sqlite3.Connection) -> None:
    """Stamp the ids and create the tables (inside the caller's transaction)."""
    from batchscale import __version__

    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    for statement in schema_sql():
        connection.execute(statement)
    meta = {
        "format": "batchscale-results",
        "schema_version": str(SCHEMA_VERSION),
        "created_at": str(time.time()),
        "created_by": f"batchscale {__version__}",
    }
    connection.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", meta.items())


def upgrade_v1(connection: sqlite3.Connection, path: Path) -> None:
    """Version 1 -> 2: the ``claims`` table and a ``config_hash`` for every row (from its own config)."""
    connection.execute(schema_sql()[2])
    connection.execute("ALTER TABLE trials ADD COLUMN config_hash TEXT")
    hashes = []
    for trial_id, config in connection.execute("SELECT trial_id, config FROM trials").fetchall():
        try:
            hashes.append((config_hash(json.loads(config)), trial_id))
        except (TypeError, ValueError) as exc:
            raise unreadable_row(path, trial_id, "config", exc) from None
    connection.executemany("UPDATE trials SET config_hash = ? WHERE trial_id = ?", hashes)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def add_missing_columns(connection: sqlite3.Connection) -> None:
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


def unreadable_row(path: Path, trial_id: str, column: str, exc: Exception) -> InputError:
    return InputError(
        f"results database {str(path)!r}: the {column} of trial {trial_id!r} is unreadable ({exc}); the row "
        "was changed outside batchscale: delete that row (its trial is trained again) or restore the file"
    )

