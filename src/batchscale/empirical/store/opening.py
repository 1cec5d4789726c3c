"""Opening a store: refuse what is not ours, check integrity and writability, create or upgrade atomically."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batchscale.empirical.store.database import BUSY_TIMEOUT, Store, transaction
from batchscale.empirical.store.schema import (
    APPLICATION_ID,
    OUR_TABLES,
    SCHEMA_VERSION,
    SQLITE_MAGIC,
    V1_TABLES,
    add_missing_columns,
    create_schema,
    table_names,
    upgrade_v1,
)
from batchscale.errors import InputError


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
        return table_names(connection)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{str(path)!r} is not a readable SQLite database: {exc}") from None
    finally:
        connection.close()



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
    tables = table_names(connection)
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
    with transaction(connection):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if not table_names(connection):  # new, or its creation was interrupted before any table
            create_schema(connection)
            version = SCHEMA_VERSION
        _check_tables(connection, path, version)
        if version == 1:
            upgrade_v1(connection, path)
        add_missing_columns(connection)
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))



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
