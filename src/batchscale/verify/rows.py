"""The row every claim returns, and the one verdict function every claim uses.

A row holds a prediction (from :mod:`batchscale.theory`), a measurement (from :mod:`batchscale.empirical`),
the measurement's uncertainty, a tolerance declared beforehand in :mod:`batchscale.verify.tolerances`, and
a verdict: ``pass``, ``fail``, or ``inconclusive`` when the measurement is too uncertain to decide.
Standard library only, so ``batchscale verify list`` and the CLI's help stay light.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from batchscale.errors import require

KINDS: tuple[str, ...] = ("absolute", "relative", "factor", "z-score")
VERDICTS: tuple[str, ...] = ("pass", "fail", "inconclusive")
Z_95 = 1.959963984540054  # two-sided 95% normal quantile: ci = measured +- Z_95 * stderr


class Verdict(NamedTuple):
    """``verdict`` is pass | fail | inconclusive; ``reason`` says why in one line."""

    verdict: str
    reason: str


@dataclass(frozen=True)
class Row:
    """One prediction beside its measurement (the schema of ``batchscale verify``'s output).

    ``ci_low``/``ci_high`` is the measurement's 95% interval (None when it has no uncertainty, e.g. an
    exact count); ``stderr`` its standard error when it has one. ``by_construction`` marks a row whose
    agreement follows from how it is computed: it is shown, never counted as evidence. ``config`` is the
    resolved configuration, package versions included, that reproduces the row.
    """

    claim: str
    quantity: str
    workload: str
    predicted: float
    measured: float
    ci_low: float | None
    ci_high: float | None
    stderr: float | None
    tolerance: float
    tolerance_kind: str
    verdict: str
    reason: str
    n_seeds: int
    by_construction: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_evidence(self) -> bool:
        return not self.by_construction


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def interval(
    measured: float, stderr: float | None, ci: tuple[float, float] | None
) -> tuple[float, float] | None:
    """The measurement's 95% interval: ``ci`` if given, else measured +- 1.96 stderr, else None."""
    if ci is not None:
        return (float(ci[0]), float(ci[1]))
    if stderr is not None and stderr > 0:
        return (measured - Z_95 * stderr, measured + Z_95 * stderr)
    return None


def band(predicted: float, tolerance: float, kind: str) -> tuple[float, float]:
    """The values of the measurement that agree with ``predicted`` under ``tolerance`` of ``kind``.

    absolute: p +- t; relative: p +- t|p|; factor: [p/t, p*t] (p > 0, t >= 1).
    """
    if kind == "absolute":
        return predicted - tolerance, predicted + tolerance
    if kind == "relative":
        return predicted - tolerance * abs(predicted), predicted + tolerance * abs(predicted)
    if kind == "factor":
        return predicted / tolerance, predicted * tolerance
    raise ValueError(f"no band for tolerance kind {kind!r}")


def judge(
    predicted: float,
    measured: float,
    tolerance: float,
    kind: str,
    *,
    stderr: float | None = None,
    ci: tuple[float, float] | None = None,
    floor: float = 0.0,
) -> Verdict:
    r"""The verdict on ``measured`` against ``predicted`` under ``tolerance`` of ``kind``.

    - ``z-score``: pass when :math:`|x - p| \le t\sqrt{s^2 + f^2}` (s = ``stderr``, f = ``floor``, a
      float-precision floor), else fail; inconclusive without a standard error, or when :math:`t s \ge |p|`
      for p != 0 (the measurement could not tell the prediction from zero).
    - ``absolute`` / ``relative`` / ``factor``: the acceptance band of :func:`band` (widened by ``floor``)
      against the measurement's 95% interval (``ci``, else :math:`x \pm 1.96 s`, else the point x): pass
      when the interval lies inside the band, fail when it lies wholly outside, inconclusive when it
      straddles an edge (too noisy to decide).

    A non-finite measurement is inconclusive unless the prediction is the same infinity.
    """
    require(kind in KINDS, f"unknown tolerance kind {kind!r}; expected one of {', '.join(KINDS)}")
    require(tolerance >= 0 and not math.isnan(tolerance), f"tolerance must be >= 0, got {tolerance}")
    if math.isnan(predicted):
        return Verdict("inconclusive", "no prediction")
    if not math.isfinite(measured) or not math.isfinite(predicted):
        if measured == predicted:
            return Verdict("pass", f"both {measured}")
        if math.isnan(measured):
            return Verdict("inconclusive", "no measurement")
        return Verdict("fail", f"measured {measured:.4g} vs predicted {predicted:.4g}")
    if kind == "z-score":
        return _judge_z(predicted, measured, tolerance, stderr, floor)
    if kind == "factor":
        require(tolerance >= 1, f"a factor tolerance must be >= 1, got {tolerance}")
        if predicted <= 0:
            return Verdict("inconclusive", f"a factor needs a positive prediction, got {predicted:.4g}")
        if measured <= 0 and (ci is None or ci[1] <= 0):
            return Verdict("fail", f"measured {measured:.4g} is not positive (predicted {predicted:.4g})")
    lo, hi = band(predicted, tolerance, kind)
    lo, hi = lo - floor, hi + floor
    span = interval(measured, stderr, ci)
    where = f"band [{lo:.4g}, {hi:.4g}]"
    if span is None:
        if lo <= measured <= hi:
            return Verdict("pass", f"{measured:.4g} inside {where}")
        return Verdict("fail", f"{measured:.4g} outside {where}")
    a, b = span
    if lo <= a and b <= hi:
        return Verdict("pass", f"95% interval [{a:.4g}, {b:.4g}] inside {where}")
    if b < lo or a > hi:
        return Verdict("fail", f"95% interval [{a:.4g}, {b:.4g}] outside {where}")
    return Verdict("inconclusive", f"95% interval [{a:.4g}, {b:.4g}] straddles {where}: too noisy to decide")


def _judge_z(
    predicted: float, measured: float, tolerance: float, stderr: float | None, floor: float
) -> Verdict:
    if not _finite(stderr) or stderr < 0:
        return Verdict("inconclusive", "no standard error for a z-score tolerance")
    if predicted != 0 and tolerance * stderr >= abs(predicted):
        return Verdict(
            "inconclusive",
            f"{tolerance:g} stderr = {tolerance * stderr:.3g} >= |predicted| = {abs(predicted):.3g}: "
            "too noisy",
        )
    scale = math.sqrt(stderr**2 + floor**2)
    gap = abs(measured - predicted)
    if scale == 0:
        ok = gap == 0
        return Verdict("pass" if ok else "fail", f"exact: |measured - predicted| = {gap:.3g}")
    z = gap / scale
    return Verdict("pass" if z <= tolerance else "fail", f"|z| = {z:.2f} (tolerance {tolerance:g})")


def summary(rows: list[Row]) -> str:
    """One line: counts of pass/fail/inconclusive among evidence rows, and which rows did not pass."""
    evidence = [r for r in rows if r.is_evidence]
    counts = {v: sum(r.verdict == v for r in evidence) for v in VERDICTS}
    text = ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    built = len(rows) - len(evidence)
    if built:
        text += f" ({built} by construction, not counted)"
    bad: dict[tuple[str, str], int] = {}  # (claim/quantity, verdict) -> rows, in first-seen order
    for r in rows:
        if r.verdict != "pass":
            key = (f"{r.claim}/{r.quantity}", r.verdict)
            bad[key] = bad.get(key, 0) + 1
    listed = [f"{name}: {verdict}" + (f" (x{n})" if n > 1 else "") for (name, verdict), n in bad.items()]
    return text + ("; not passing: " + "; ".join(listed) if listed else "; every row passes")


def all_pass(rows: list[Row]) -> bool:
    """True when there is at least one row and every row passes."""
    return bool(rows) and all(r.verdict == "pass" for r in rows)


def make_row(
    claim: str,
    quantity: str,
    workload: str,
    predicted: float,
    measured: float,
    *,
    n_seeds: int,
    config: dict[str, Any],
    stderr: float | None = None,
    ci: tuple[float, float] | None = None,
    floor: float = 0.0,
    by_construction: bool = False,
    note: str = "",
) -> Row:
    """A row judged by :func:`judge` under the declared tolerance of (``claim``, ``quantity``)."""
    from batchscale.verify.tolerances import tolerance

    declared = tolerance(claim, quantity)
    predicted, measured = float(predicted), float(measured)
    stderr = None if stderr is None else float(stderr)
    decided = judge(predicted, measured, declared.value, declared.kind, stderr=stderr, ci=ci, floor=floor)
    span = interval(measured, stderr, ci)
    reason = decided.reason
    if by_construction:
        reason = "holds by construction, not evidence: " + reason
    if note:
        reason = f"{reason}; {note}"
    return Row(
        claim=claim,
        quantity=quantity,
        workload=workload,
        predicted=predicted,
        measured=measured,
        ci_low=None if span is None else span[0],
        ci_high=None if span is None else span[1],
        stderr=stderr,
        tolerance=float(declared.value),
        tolerance_kind=declared.kind,
        verdict=decided.verdict,
        reason=reason,
        n_seeds=n_seeds,
        by_construction=by_construction,
        config=config,
    )


def not_built(claim: str, quantity: str, workload: str, needs: str, config: dict[str, Any]) -> Row:
    """The ``inconclusive`` row of a claim that cannot be checked yet: never a pass."""
    from batchscale.verify.tolerances import tolerance

    declared = tolerance(claim, quantity)
    nan = float("nan")
    return Row(
        claim=claim,
        quantity=quantity,
        workload=workload,
        predicted=nan,
        measured=nan,
        ci_low=None,
        ci_high=None,
        stderr=None,
        tolerance=float(declared.value),
        tolerance_kind=declared.kind,
        verdict="inconclusive",
        reason=f"needs {needs} (not built yet)",
        n_seeds=0,
        config=config,
    )
