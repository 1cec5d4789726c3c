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

from batchscale.empirical.store.database import BUSY_TIMEOUT, ClaimOutcome, Store, owner_id, owner_is_dead
from batchscale.empirical.store.opening import (
    check_store_file,
    connect,
    open_existing_store,
    open_store,
)
from batchscale.empirical.store.schema import (
    APPLICATION_ID,
    COLUMN_NAMES,
    COLUMNS,
    PROVENANCE_COLUMNS,
    RESULT_COLUMNS,
    SCHEMA_VERSION,
    V1_COLUMNS,
    Column,
    TrialRecord,
    config_hash,
    record_from_result,
    record_matches,
    result_columns,
)

__all__ = [
    "APPLICATION_ID",
    "BUSY_TIMEOUT",
    "COLUMNS",
    "COLUMN_NAMES",
    "PROVENANCE_COLUMNS",
    "RESULT_COLUMNS",
    "SCHEMA_VERSION",
    "V1_COLUMNS",
    "ClaimOutcome",
    "Column",
    "Store",
    "TrialRecord",
    "check_store_file",
    "config_hash",
    "connect",
    "open_existing_store",
    "open_store",
    "owner_id",
    "owner_is_dead",
    "record_from_result",
    "record_matches",
    "result_columns",
]
