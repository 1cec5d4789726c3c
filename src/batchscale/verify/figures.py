"""``--plot``: every row's measurement over its prediction, with the 95% interval, on one figure."""

from __future__ import annotations

import math
from collections.abc import Sequence

from batchscale.verify.rows import Row


def ratio_series(rows: Sequence[Row]) -> tuple[list[str], list[float], list[list[float]]]:
    """Labels, measured/predicted and the interval's distances below/above it, for rows with p != 0."""
    labels, ratios, low, high = [], [], [], []
    for r in rows:
        if not (math.isfinite(r.predicted) and math.isfinite(r.measured)) or r.predicted == 0:
            continue
        ratio = r.measured / r.predicted
        labels.append(f"{r.claim}/{r.quantity}")
        ratios.append(ratio)
        lo = r.ci_low / r.predicted if r.ci_low is not None else ratio
        hi = r.ci_high / r.predicted if r.ci_high is not None else ratio
        lo, hi = min(lo, hi), max(lo, hi)
        low.append(ratio - lo)
        high.append(hi - ratio)
    return labels, ratios, [low, high]


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
    """measured / predicted per row (1 = agreement), error bars the measurement's 95% interval; a run of
    ``nqm-transfer`` alone draws its steps curves instead (:func:`plot_nqm_transfer`)."""
    from batchscale.errors import require
    from batchscale.report.plots import plot_series

    if rows and all(r.claim == "nqm-transfer" and "curves" in r.config for r in rows):
        plot_nqm_transfer(path, rows[0].config["curves"])
        return

    labels, ratios, err = ratio_series(rows)
    require(bool(ratios), "--plot: no row has a finite, non-zero prediction to compare with")
    x = list(range(1, len(ratios) + 1))
    title = "; ".join(sorted({label.split("/")[0] for label in labels}))
    plot_series(
        path,
        x,
        {"measured / predicted": ratios, "agreement": [1.0] * len(x)},
        xlabel="row with a finite, non-zero prediction (table order)",
        ylabel="measured / predicted",
        title=f"verify {title}",
        yerr={"measured / predicted": err},
    )
