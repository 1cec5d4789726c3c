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


def plot_rows(path: str, rows: Sequence[Row]) -> None:
    """measured / predicted per row (1 = agreement), error bars the measurement's 95% interval."""
    from batchscale.errors import require
    from batchscale.report.plots import plot_series

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
