"""``--plot``: every row's measurement against its prediction and declared tolerance, on one figure.

The rows of different claims measure different things in different units, so the figure puts each on one
common axis: the measurement's deviation from the prediction in units of the row's own declared
tolerance, :func:`deviation` (0: the prediction; within +-1: inside the accepted band). A forest plot
then shows every row, its 95% interval, and its verdict by colour; ``nqm-transfer`` alone draws its
steps curves instead."""

from __future__ import annotations

import math
from collections.abc import Sequence

from batchscale.verify.rows import Row

VERDICT_COLOURS = {"pass": "#2b8a3e", "fail": "#c92a2a", "inconclusive": "#868e96"}
LABEL_WIDTH = 72


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def deviation(row: Row, value: float) -> float:
    r"""``value`` of ``row``'s measurement as a deviation from the prediction p in units of the declared
    tolerance t: factor :math:`\log(v/p)/\log t`; relative :math:`(v - p)/(t|p|)`; absolute
    :math:`(v - p)/t`; z-score :math:`(v - p)/(t\,\sigma)` with the row's standard error (from its 95%
    interval when only that is given). NaN when the row gives no scale (a z-score row without an error);
    +-inf beyond any scale (a factor row at v <= 0, an exact count that differs)."""
    p, t = row.predicted, row.tolerance
    if not (math.isfinite(value) and math.isfinite(p)):
        return math.nan
    if row.tolerance_kind == "factor":
        if value <= 0 or p <= 0:
            return -math.inf
        return math.log(value / p) / math.log(t) if t > 1 else (0.0 if value == p else math.copysign(
            math.inf, value - p))
    if row.tolerance_kind == "z-score":
        sigma = row.stderr
        if not _finite(sigma) and _finite(row.ci_low) and _finite(row.ci_high):
            sigma = (row.ci_high - row.ci_low) / (2 * 1.959964)
        return (value - p) / (t * sigma) if _finite(sigma) and sigma > 0 else math.nan
    scale = t * abs(p) if row.tolerance_kind == "relative" else t
    if scale > 0:
        return (value - p) / scale
    return 0.0 if value == p else math.copysign(math.inf, value - p)


def forest_rows(rows: Sequence[Row]) -> list:
    """:class:`batchscale.report.plots.ForestRow` per row that has a measurement and a scale."""
    from batchscale.report.plots import ForestRow
    from batchscale.verify.rows import interval

    out = []
    for r in rows:
        value = deviation(r, r.measured)
        if math.isnan(value):
            continue
        ci = (r.ci_low, r.ci_high) if _finite(r.ci_low) and _finite(r.ci_high) else None
        bounds = interval(r.measured, r.stderr, ci) or (r.measured, r.measured)
        low, high = sorted(deviation(r, v) for v in bounds)
        note = r.reason.split("; ")[1] if r.reason.count("; ") >= 1 else ""
        label = f"{r.claim}: {r.quantity}" + (f" ({note})" if note else "")
        label = label if len(label) <= LABEL_WIDTH else label[: LABEL_WIDTH - 3] + "..."
        if r.by_construction:
            label += " [by construction]"
        out.append(ForestRow(label, value, low, high, VERDICT_COLOURS.get(r.verdict, "#000000"),
                             hollow=r.by_construction))
    return out


def plot_nqm_transfer(path: str, curves: dict) -> None:
    """``nqm-transfer``'s figure: per optimizer the measured steps (seed median, bars the seeds' range) and
    the noisy quadratic model's, log-log, with both curves' best learning rates beside them."""
    from batchscale.report.plots import plot_steps_vs_batch

    series = {}
    for name, c in curves.items():
        series[f"{name}: network (seed median, range)"] = {
            "batch_size": c["batch_size"], "steps": _nan(c["measured_steps"]),
            "steps_low": _nan(c["measured_low"]), "steps_high": _nan(c["measured_high"]),
            "learning_rate": _nan(c["measured_learning_rate"]),
        }
        series[f"{name}: NQM of its spectra (median, range over seeds)"] = {
            "batch_size": c["batch_size"], "steps": _nan(c["model_steps"]),
            "steps_low": _nan(c.get("model_low", c["model_steps"])),
            "steps_high": _nan(c.get("model_high", c["model_steps"])),
            "learning_rate": _nan(c["model_learning_rate"]),
        }
    title = "nqm-transfer: the network's steps vs the NQM built from its spectra"
    plot_steps_vs_batch(path, series, title=title,
                        lr_label="best (network) / tuned (NQM) learning rate")


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def plot_rows(path: str, rows: Sequence[Row]) -> None:
    """Every row as a forest plot on the common deviation axis (:func:`deviation`), coloured by verdict,
    hollow when it holds by construction; a run of ``nqm-transfer`` alone draws its steps curves instead
    (:func:`plot_nqm_transfer`)."""
    from batchscale.errors import require
    from batchscale.report.plots import plot_forest
    from batchscale.verify.rows import summary

    if rows and all(r.claim == "nqm-transfer" and "curves" in r.config for r in rows):
        plot_nqm_transfer(path, rows[0].config["curves"])
        return

    entries = forest_rows(rows)
    require(bool(entries), "--plot: no row has a measurement with a scale to draw")
    claims = sorted({r.claim for r in rows})
    verdicts = [(VERDICT_COLOURS[v], v) for v in ("pass", "fail", "inconclusive")]
    plot_forest(
        path, entries,
        xlabel="measured - predicted, in units of the declared tolerance (factor rows on a log scale); "
        "bars: 95% interval",
        title=f"batchscale verify {', '.join(claims) if len(claims) <= 3 else 'all'}: "
        f"{summary(list(rows)).split('; not passing')[0]}",
        legend=verdicts,
    )
