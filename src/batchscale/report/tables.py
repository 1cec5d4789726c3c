"""Render result rows (a list of flat dicts) as an aligned text table, JSON or CSV.

Every command that prints results goes through :func:`render`, so ``--format table|json|csv`` means the
same thing everywhere. Values may be Python or numpy scalars, strings, None, lists or dataclasses.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

FORMATS = ("table", "json", "csv")


def to_jsonable(value: Any) -> Any:
    """Plain JSON types for ``value``: numpy scalars/arrays unwrapped, non-finite floats as None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return to_jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_cell(value: Any, digits: int = 4, scientific: bool = False) -> str:
    """A short human string: floats to ``digits`` significant digits, None as '-', booleans yes/no.

    ``scientific``: every non-zero float in exponent form (``1.234e+05``), so that one column never
    mixes plain and scientific notation (:func:`render_table` decides per column).
    """
    value = to_jsonable(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0.0:
            return "0"
        if scientific:
            return f"{value:.{digits - 1}e}"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return ",".join(format_cell(v, digits) for v in value)
    return str(value)


def needs_scientific(values: Sequence[Any], digits: int = 4) -> bool:
    """Whether some float of a column prints in exponent form at ``digits`` significant digits."""
    return any(
        isinstance(v, float) and not isinstance(v, bool) and v != 0.0 and "e" in format_cell(v, digits)
        for v in (to_jsonable(x) for x in values)
    )


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Column names in first-seen order over all rows."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Aligned plain-text table; numbers right-aligned, text left-aligned."""
    if not rows:
        return "(no rows)"
    columns = list(columns or columns_of(rows))
    scientific = [needs_scientific([row.get(c) for row in rows]) for c in columns]
    cells = [[format_cell(row.get(c), scientific=sci) for c, sci in zip(columns, scientific, strict=True)]
             for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(to_jsonable(row.get(c)), (int, float, type(None))) for row in rows)
        for c in columns
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    header = line(columns)
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([header, rule, *(line(r) for r in cells)])


def csv_cell(value: Any) -> Any:
    """One CSV field: None empty, booleans ``true``/``false`` (as in JSON), integral floats as integers
    (``716``, not ``716.0``), lists and dicts as JSON, other floats at full precision (``repr``)."""
    value = to_jsonable(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def render_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV with a header row; fields as :func:`csv_cell` writes them."""
    columns = list(columns or columns_of(rows))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
    return buffer.getvalue().rstrip("\n")


def render_json(rows: Any) -> str:
    """Indented JSON of ``rows`` (any jsonable structure)."""
    return json.dumps(to_jsonable(rows), indent=2)


def render(rows: Sequence[Mapping[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> str:
    """Render ``rows`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "json":
        return render_json(list(rows))
    if fmt == "csv":
        return render_csv(rows, columns)
    if fmt == "table":
        return render_table(rows, columns)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
