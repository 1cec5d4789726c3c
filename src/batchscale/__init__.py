"""batchscale: how the minibatch size changes SGD training, in exact theory and real measurement.

Sub-packages:

- :mod:`batchscale.theory` -- sympy derivations and numpy/scipy simulators (never imports torch).
- :mod:`batchscale.empirical` -- PyTorch training and measurement (never imports sympy).
- :mod:`batchscale.verify` -- every claim of docs/claims.md predicted and measured, with a verdict.
- :mod:`batchscale.report` -- tables and plots shared by the commands.
- :mod:`batchscale.cli` -- the ``batchscale`` command; parses, calls, formats.

For notebooks and scripts (docs/api.md; loaded on first use from :mod:`batchscale.api`):

- ``batchscale.noise_scale(model, data, ...)`` -- B_simple with its interval, |G|^2 and tr Sigma
  (a frozen :class:`~batchscale.api.NoiseScale`; ``.rows()`` for a table);
- ``batchscale.predict_nqm(batch_sizes, ...)`` -- the rows of ``batchscale predict nqm``;
- ``batchscale.sweep_steps(workload, ...)`` -- the rows of ``batchscale sweep steps``;
- ``batchscale.verify.run(claim, ...)`` -- one claim's prediction-vs-measurement rows;
- ``batchscale.NoiseScaleMonitor`` -- B_simple inside your own training loop (:mod:`batchscale.monitor`).

Rows are lists of plain dicts: ``pandas.DataFrame(rows)`` is a table (pandas is not a dependency).
Importing this package imports none of the heavy libraries (torch, sympy, numpy).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = ("NoiseScale", "noise_scale", "predict_nqm", "sweep_steps")
_SUBPACKAGES = ("api", "empirical", "monitor", "report", "theory", "verify")
_ELSEWHERE = {"NoiseScaleMonitor": "batchscale.monitor"}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("batchscale.api"), name)  # each from its own layer
    if name in _ELSEWHERE:
        return getattr(importlib.import_module(_ELSEWHERE[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"batchscale.{name}")
    raise AttributeError(f"module 'batchscale' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names: the facade, the monitor, the sub-packages and ``__version__``."""
    return sorted({*_API, *_SUBPACKAGES, *_ELSEWHERE, "__version__"})


__all__ = [*_API, *_ELSEWHERE, "__version__"]
