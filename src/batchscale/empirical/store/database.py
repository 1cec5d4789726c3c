"""An open store: rows in and out, and claims that let concurrent sweeps split the work."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchscale.empirical.store.schema import (
    COLUMN_NAMES,
    COLUMNS,
    TrialRecord,
    config_hash,
    record_matches,
    table_names,
    unreadable_row,
)
from batchscale.errors import InputError

BUSY_TIMEOUT = 30.0  # seconds a connection waits for another process's write lock


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
        with transaction(self.connection) as connection:
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
                raise unreadable_row(self.path, values["trial_id"], column.name, exc) from None
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

        In one transaction: expired claims and claims of dead owners (:func:`owner_is_dead`) are dropped;
        a stored row that matches its config hash and that ``accept`` takes is reused; every other id is
        claimed for ``owner`` until now + ``lease`` seconds unless another owner holds a live claim on it.
        """
        ids = list(wanted)
        with self._write() as connection:
            connection.execute("DELETE FROM claims WHERE expires < ?", (time.time(),))
            stored = self.get_many(ids)
            holders: dict[str, str] = {}
            for chunk in _chunks(ids):
                sql = f"SELECT trial_id, owner FROM claims WHERE trial_id IN ({', '.join('?' * len(chunk))})"
                holders.update(connection.execute(sql, chunk).fetchall())
            dead = {holder for holder in set(holders.values()) if owner_is_dead(holder)}
            connection.executemany("DELETE FROM claims WHERE owner = ?", [(holder,) for holder in dead])
            holders = {k: holder for k, holder in holders.items() if holder not in dead}
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
        if "claims" not in table_names(self.connection):
            return {}
        rows = self.connection.execute("SELECT trial_id, owner, expires FROM claims").fetchall()
        return {trial_id: (owner, expires) for trial_id, owner, expires in rows}


def owner_id(session: str) -> str:
    """This process as the owner of claims: ``host:pid:session``."""
    return f"{socket.gethostname()}:{os.getpid()}:{session}"


def owner_is_dead(owner: str) -> bool:
    """Whether ``owner`` (an :func:`owner_id`) is a process of this host that no longer runs.

    A sweep killed by SIGKILL cannot release its claims; re-running it at once on the same machine must
    not wait for its leases to run out."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception) on an autocommit connection."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")

