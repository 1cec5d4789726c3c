"""Real PyTorch training and measurement on real data.

Never imports sympy. Modules are imported on demand, so importing this package does not import torch;
``batchscale.empirical.Workload`` (and ``get_workload``, ``list_workloads``, ``register_workload``) are
loaded from :mod:`batchscale.empirical.workloads` on first access.
"""

from __future__ import annotations

from typing import Any

_LAZY = ("Workload", "get_workload", "list_workloads", "register_workload")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from batchscale.empirical import workloads

        return getattr(workloads, name)
    raise AttributeError(f"module 'batchscale.empirical' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
