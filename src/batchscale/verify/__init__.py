"""Every claim of ``docs/claims.md`` predicted by theory and checked by measurement, with a verdict.

The only package that imports both :mod:`batchscale.theory` and :mod:`batchscale.empirical`. Each claim
lives in its own module with a ``run(options) -> list[Row]``; :func:`run` runs one by name::

    from batchscale import verify
    rows = verify.run("accounting", quick=True)
    [(r.quantity, r.predicted, r.measured, r.verdict) for r in rows]

This package's top level imports only the standard library; a claim's module is imported when it runs.
"""

from batchscale.verify.registry import (
    CLAIMS,
    Claim,
    Options,
    check_claim,
    package_versions,
    resolve,
    run,
    run_all,
)
from batchscale.verify.rows import KINDS, VERDICTS, Row, Verdict, all_pass, judge, summary
from batchscale.verify.tolerances import TOLERANCES, Tolerance, tolerance

__all__ = [
    "CLAIMS",
    "KINDS",
    "TOLERANCES",
    "VERDICTS",
    "Claim",
    "Options",
    "Row",
    "Tolerance",
    "Verdict",
    "all_pass",
    "check_claim",
    "judge",
    "package_versions",
    "resolve",
    "run",
    "run_all",
    "summary",
    "tolerance",
]
