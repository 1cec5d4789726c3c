"""A claim's rows kept beside the results store, so a re-run with the same code, options and packages
returns them at once instead of measuring again.

The sweeps of ``regimes`` and ``noise-scale`` already reuse their trials from the store; the other claims
measure in seconds to a minute each, and ``verify all`` re-ran all of them every time. A claim's rows are
saved after it runs, as JSON in ``<folder of the store>/verify-rows/<claim>-<key>.json``, where the key
hashes everything the rows depend on:

- the claim's name and its resolved options (workload, ``-W``, seed, seeds, ``--quick``, device);
- the source of the whole ``batchscale`` package (every ``.py`` file's path and bytes): any change of
  code measures again;
- the versions of python, torch, numpy, scipy and sympy.

Every claim is deterministic given these (same seed, same numbers), so a reused row is the row a new
measurement would give on this machine. ``--rerun`` (or ``BATCHSCALE_VERIFY_REUSE=0`` in the
environment) measures again; an unreadable or foreign file is ignored (and replaced), never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from batchscale.verify.registry import Options, package_versions
from batchscale.verify.rows import Row

FOLDER = "verify-rows"
FORMAT = "batchscale-verify-rows"
VERSION = 1
DEFAULT_STORE = "batchscale-out/runs.sqlite"
ENVIRONMENT = "BATCHSCALE_VERIFY_REUSE"


@functools.cache
def source_digest() -> str:
    """SHA-256 over every ``.py`` file of the installed ``batchscale`` package (relative path and bytes)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def digest_key(what: dict[str, Any]) -> str:
    """24 hex digits of the sha256 of ``what`` together with the package's source digest and the package
    versions: the key of anything measured once and reused while code, settings and versions stay."""
    full = {**what, "source": source_digest(), "versions": package_versions()}
    return hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()[:24]


def key(claim: str, opts: Options) -> str:
    """The hash of what ``claim``'s rows depend on (its options, the package source, the versions)."""
    return digest_key({
        "claim": claim,
        "workload": opts.workload,
        "workload_options": sorted((str(k), repr(v)) for k, v in dict(opts.workload_options).items()),
        "seed": opts.seed,
        "seeds": opts.seeds,
        "quick": opts.quick,
        "device": opts.device,
    })


def path_of(claim: str, opts: Options) -> Path:
    """Where ``claim``'s rows for ``opts`` are kept: beside the store (``--db``, else the default one)."""
    return Path(opts.db or DEFAULT_STORE).parent / FOLDER / f"{claim}-{key(claim, opts)}.json"


def enabled() -> bool:
    """Reuse is on unless ``BATCHSCALE_VERIFY_REUSE`` is ``0``, ``no`` or ``false``."""
    return os.environ.get(ENVIRONMENT, "1").strip().lower() not in ("0", "no", "false")


def _scalar(value: Any) -> Any:
    """A numpy scalar as its Python value; anything else JSON cannot hold as its text."""
    return value.item() if hasattr(value, "item") else str(value)


def load(path: Path) -> list[Row] | None:
    """The rows saved at ``path``; None when the file is absent, unreadable or not ours."""
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            return None
        names = {f.name for f in fields(Row)}
        rows = []
        for item in data["rows"]:
            if set(item) != names:
                return None
            rows.append(Row(**item))
        return rows
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def write_atomically(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` through a temporary file and a rename (its folder created); False (and
    nothing written) when that is not possible."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(text)
        os.replace(partial, path)
        return True
    except OSError:
        return False


def save(path: Path, rows: list[Row]) -> bool:
    """Write ``rows`` to ``path`` atomically (Python's JSON, which keeps NaN and infinities); False (and
    nothing written) when the folder is not writable."""
    text = json.dumps({"format": FORMAT, "version": VERSION, "rows": [r.as_dict() for r in rows]},
                      indent=1, default=_scalar)
    return write_atomically(path, text)


def claim_rows(claim: str, opts: Options, *, rerun: bool = False) -> list[Row]:
    """``claim``'s rows: the saved ones when they exist for the same key (and reuse is on), else measured
    now and saved."""
    from batchscale.verify.registry import check_claim

    entry = check_claim(claim)
    if not enabled():
        return entry.function()(opts)
    path = path_of(claim, opts)
    if not rerun and (rows := load(path)) is not None:
        opts.say(f"{claim}: {len(rows)} rows reused from {path} (same code, options and versions; "
                 "--rerun measures again)")
        return rows
    rows = entry.function()(opts)
    save(path, rows)
    return rows
