"""Exact theory (sympy) and fast analytical simulators (numpy/scipy).

Never imports torch. Modules are imported on demand (``from batchscale.theory import moments``), so
importing this package costs nothing.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


def _modules() -> list[str]:
    """The names of this package's modules (without importing them)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str) -> Any:
    if name in _modules():
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The package's modules (each imported on first access, e.g. ``batchscale.theory.regimes``)."""
    return _modules()
