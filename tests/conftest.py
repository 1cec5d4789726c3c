"""Shared test set-up: a private cache directory so tests never touch the user's cache, and `verify`
measuring every claim (no rows reused from an earlier run: tests plant changes the saved rows' key cannot
see; tests/test_verify_reuse.py turns reuse back on in its own folders)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "batchscale-cache"
    monkeypatch.setenv("BATCHSCALE_CACHE_DIR", str(cache))
    monkeypatch.setenv("BATCHSCALE_VERIFY_REUSE", "0")
