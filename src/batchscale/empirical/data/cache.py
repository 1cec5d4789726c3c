"""On-disk cache of generated arrays (.npz), keyed by the arguments that generated them.

The directory is ``$BATCHSCALE_CACHE_DIR`` when set (the tests set it), else
``platformdirs.user_cache_dir("batchscale")``. Files are written atomically (a temporary file in the same
directory, then ``os.replace``), so a crash or a concurrent writer never leaves a half-written entry; an
unreadable entry is regenerated and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

CACHE_VERSION = 1  # bump when a generator's output changes for the same arguments


def cache_dir() -> Path:
    """``$BATCHSCALE_CACHE_DIR`` if set, else the user cache directory of batchscale."""
    env = os.environ.get("BATCHSCALE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("batchscale"))


def cache_path(kind: str, key: Mapping[str, Any]) -> Path:
    """``<cache_dir>/<kind>-<sha256 of the JSON key, 16 hex>.npz``."""
    text = json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return cache_dir() / f"{kind}-{digest}.npz"


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file in the same directory + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays ``names`` from ``path``, or None if the file is missing, unreadable or incomplete."""
    try:  # we open the file ourselves: np.load(path) leaks its handle when the zip is truncated
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            return {name: data[name] for name in names}
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile):
        return None


class Cached(NamedTuple):
    """Arrays and whether they were read from the cache (False: generated now and stored)."""

    arrays: dict[str, np.ndarray]
    from_cache: bool
    path: Path


def cached_arrays(
    kind: str, key: Mapping[str, Any], names: tuple[str, ...], generate: Callable[[], dict[str, np.ndarray]]
) -> Cached:
    """Load ``names`` from the cache entry of (``kind``, ``key``), or ``generate()`` and store them."""
    path = cache_path(kind, key)
    arrays = load_arrays(path, names)
    if arrays is not None:
        return Cached(arrays, True, path)
    arrays = generate()
    save_arrays(path, {name: arrays[name] for name in names})
    return Cached(arrays, False, path)
