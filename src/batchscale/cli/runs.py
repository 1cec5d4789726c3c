"""``batchscale runs``: look into and export a sweep's results database (no torch needed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from batchscale.cli.common import FilePath, emit, format_option
from batchscale.empirical.trials import STATUSES
from batchscale.errors import InputError

DEFAULT_DB = str(Path("batchscale-out") / "runs.sqlite")
CONFIG_KEYS = (
    "workload", "optimizer", "batch_size", "learning_rate", "momentum", "seed", "max_steps", "target",
)
LIST_COLUMNS = [
    "trial_id", "status", "workload", "optimizer", "batch_size", "learning_rate", "momentum", "seed", "steps",
    "final_metric", "wall_time", "finished", "session",
]


def db_option(func: Callable) -> Callable:
    """``--db PATH`` of an existing results database."""
    return click.option(
        "--db",
        "db_path",
        type=FilePath(),
        default=DEFAULT_DB,
        show_default=True,
        help="Results database written by `batchscale sweep`.",
    )(func)


@click.group()
def runs() -> None:
    """Inspect and export a sweep's results database."""


def _records(db_path: str, status: str | None = None) -> list[Any]:
    from batchscale.empirical.store import open_existing_store

    store = open_existing_store(db_path)
    try:
        return store.records(status=status)
    finally:
        store.close()


def _timestamp(value: float | None) -> str | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def summary_row(record: Any) -> dict[str, Any]:
    """One flat line per trial: id, outcome and the config fields that tell trials apart."""
    config = record.config
    return {
        "trial_id": record.trial_id,
        "status": record.status,
        **{k: config.get(k) for k in CONFIG_KEYS},
        "steps": record.steps,
        "final_metric": record.final_metric,
        "best_metric": record.best_metric,
        "wall_time": record.wall_time,
        "finished": _timestamp(record.finished_at),
        "session": record.session,
    }


def export_row(record: Any) -> dict[str, Any]:
    """Every stored field, the config flattened into ``config.<key>`` columns."""
    row = record.to_dict()
    config = row.pop("config")
    return {**row, **{f"config.{k}": v for k, v in config.items()}}


@runs.command("list")
@db_option
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only trials with this status.")
@click.option("--limit", type=click.IntRange(min=0), default=0, show_default=True,
              help="Show only the last N trials (0: all).")
@format_option()
def list_runs(db_path: str, status: str | None, limit: int, fmt: str) -> None:
    """One line per stored trial, oldest first."""
    rows = [summary_row(r) for r in _records(db_path, status)]
    if limit > 0:
        rows = rows[-limit:]
    emit(rows, fmt, columns=LIST_COLUMNS if fmt == "table" else None)


@runs.command("show")
@click.argument("trial_id")
@db_option
@format_option(default="json")
def show(trial_id: str, db_path: str, fmt: str) -> None:
    """Everything stored about one trial.

    TRIAL_ID may be a unique prefix of the id."""
    matches = [r for r in _records(db_path) if r.trial_id.startswith(trial_id)]
    if len(matches) != 1:
        found = "no trial" if not matches else f"{len(matches)} trials"
        raise InputError(f"{found} with id starting {trial_id!r} in {db_path!r}")
    record = matches[0]
    if fmt == "table":
        row = export_row(record)
        row.update(started_at=_timestamp(row["started_at"]), finished_at=_timestamp(row["finished_at"]))
        emit([{"field": k, "value": _short(v)} for k, v in row.items()], fmt)
    else:
        emit([export_row(record)], fmt)


def _short(value: Any) -> Any:
    text = str(value) if isinstance(value, (list, dict, tuple)) else value
    if isinstance(text, str) and len(text) > 100:
        return text[:97] + "..."
    return text


@runs.command("export")
@db_option
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only trials with this status.")
@click.option("--output", "-o", type=FilePath(output=True), default=None,
              help="Write to this file instead of stdout.")
@format_option(choices=("csv", "json"), default="csv")
def export(db_path: str, status: str | None, output: str | None, fmt: str) -> None:
    """Export all trials as CSV or JSON.

    Every stored field: the full config (as config.<key> columns), metrics history and provenance."""
    from batchscale.report.tables import render

    text = render([export_row(r) for r in _records(db_path, status)], fmt)
    if output:
        _write_text(Path(output), text + "\n")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text)


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (its folder was made by ``FilePath(output=True)``); one error on failure."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
