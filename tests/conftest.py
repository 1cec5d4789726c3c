"""Shared test set-up: a private cache directory so tests never touch the user's cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "batchscale-cache"
    monkeypatch.setenv("BATCHSCALE_CACHE_DIR", str(cache))
