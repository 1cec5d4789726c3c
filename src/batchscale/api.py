"""The Python facade for notebooks and scripts (``batchscale.noise_scale``, ``predict_nqm``, ``sweep_steps``).

Each function returns plain data: a frozen dataclass with ``.rows()``, or a list of plain dicts whose keys
are the columns of the matching command's ``--format json`` output (``pd.DataFrame(rows)`` makes a table;
pandas is not a dependency). The commands call the same library functions, so a row from the API equals
the command's row:

- :func:`~batchscale.empirical.facade.noise_scale` (and its result :class:`~batchscale.empirical.facade.
  NoiseScale`) -- B_simple of a model on data (a workload name, a Workload or an (x, y) pair);
- :func:`~batchscale.theory.nqm_curve.predict_nqm` -- the rows of ``batchscale predict nqm`` (the command
  runs :func:`~batchscale.theory.nqm_curve.nqm_steps`);
- :func:`~batchscale.verify.sweeps.sweep_steps` -- the rows of ``batchscale sweep steps`` (the command adds
  the regime columns with :func:`~batchscale.verify.sweeps.with_regimes`);
- ``batchscale.verify.run(claim, ...)`` -- one claim's rows (:mod:`batchscale.verify`).

The facade holds no logic of its own: each name is imported from its layer on first access (the empirical
function from ``batchscale.empirical``, the theory from ``batchscale.theory``, the join of both from
``batchscale.verify``), so ``import batchscale`` and ``import batchscale.api`` import neither torch nor
sympy. See docs/api.md for a session end to end.
"""

from __future__ import annotations

import importlib
from typing import Any

WHERE = {
    "NoiseScale": "batchscale.empirical.facade",
    "noise_scale": "batchscale.empirical.facade",
    "NqmCurve": "batchscale.theory.nqm_curve",
    "nqm_steps": "batchscale.theory.nqm_curve",
    "predict_nqm": "batchscale.theory.nqm_curve",
    "sweep_steps": "batchscale.verify.sweeps",
    "with_regimes": "batchscale.verify.sweeps",
}


def __getattr__(name: str) -> Any:
    if name in WHERE:
        return getattr(importlib.import_module(WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(WHERE)


__all__ = sorted(WHERE)
