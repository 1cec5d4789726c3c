"""The figure of ``batchscale advise --plot``: the measurement and the prediction side by side.

Left: B_simple at each checkpoint of the short run with its 95% interval as a band (checkpoints
without a defined value are marked on the axis, not dropped silently), the adopted B_crit interval as a
horizontal band, and, when it was asked and defensible, the extrapolated trend with its interval.
Right: the predicted S(B)/S_min and E(B)/E_min against B (log-log) at the advised B_crit, with the
curves at the ends of its interval as bands and the two recommended batch ranges shaded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from batchscale.report.plots import _checked_path, _pyplot, _save

RANGE_COLOURS = {"fewest steps within +20% examples": "#fee8c8", "fewest examples (within +5%)": "#d9f0d3"}


def _run_panel(ax: Any, advice: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    rows = [r for r in advice.measurements if r.get("step") is not None]
    good = [r for r in rows if r.get("b_simple") is not None and r["b_simple"] > 0]
    steps = np.asarray([r["step"] for r in good], dtype=float)  # (n,)
    value = np.asarray([r["b_simple"] for r in good], dtype=float)  # (n,)
    low = np.asarray([r["b_simple"] if r.get("ci_low") is None else r["ci_low"] for r in good], float)
    high = np.asarray([r["b_simple"] if r.get("ci_high") is None else r["ci_high"] for r in good], float)
    low = np.where(low > 0, low, value)
    width = "95% interval" if np.any(high > low) else "95% interval (a point: every example measured)"
    ax.fill_between(steps, low, high, color="C0", alpha=0.25, lw=0, label=width)
    ax.plot(steps, value, "o-", color="C0", ms=4, label="B_simple (measured)")
    missing = [r["step"] for r in rows if r not in good]
    if missing:
        ax.plot(missing, [np.nanmin(value) if value.size else 1.0] * len(missing), "x", color="0.4",
                label="undefined here")
    b_low, b_high = advice.interval
    ax.axhspan(b_low, b_high, color="C1", alpha=0.15, lw=0, label="adopted B_crit interval")
    ax.axhline(advice.critical_batch_size, color="C1", lw=1)
    trend = advice.trend
    if trend is not None and trend.horizon is not None and trend.defensible:
        t_last = float(steps.max())
        ts = np.geomspace(t_last, trend.horizon, 20)
        ax.plot(ts, trend.value * (ts / trend.horizon) ** trend.exponent, "--", color="C2",
                label="extrapolated trend")
        ax.errorbar([trend.horizon], [trend.value], yerr=[[trend.value - trend.interval[0]],
                    [trend.interval[1] - trend.value]], fmt="s", color="C2", capsize=3)
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("SGD step of the short run")
    ax.set_ylabel("B_simple = tr(Sigma) / |G|^2")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


def _prediction_panel(ax: Any, advice: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    b_crit = advice.critical_batch_size
    b_low, b_high = advice.interval
    sizes = np.asarray([r["batch_size"] for r in advice.curve], dtype=float)  # (n,)
    grid = np.geomspace(sizes.min(), sizes.max(), 200)  # (200,)
    for label, (lo, hi) in (("fewest steps within +20% examples", advice.fewest_steps_within_20pct_examples),
                            ("fewest examples (within +5%)", advice.fewest_examples)):
        left = 1 if label.startswith("fewest examples") else lo
        ax.axvspan(left / 2**0.25, hi * 2**0.25, color=RANGE_COLOURS[label], alpha=0.8, lw=0, label=label)
    for name, colour, form in (("S(B) / S_min", "C0", lambda b, c: 1 + c / b),
                               ("E(B) / E_min", "C3", lambda b, c: 1 + b / c)):
        ax.fill_between(grid, form(grid, b_high) if name.startswith("S") else form(grid, b_low),
                        form(grid, b_low) if name.startswith("S") else form(grid, b_high),
                        color=colour, alpha=0.2, lw=0)
        ax.plot(grid, form(grid, b_crit), color=colour, label=f"{name} (predicted)")
        ax.plot(sizes, form(sizes, b_crit), "o", color=colour, ms=3)
    ax.axvline(b_crit, color="0.3", ls=":", lw=1, label=f"B_crit ~ {b_crit:.3g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ticks = [b for b in sizes if math.log2(b) % 2 == 0] or list(sizes)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(int(b)) for b in ticks])
    ax.set_xlabel("batch size B")
    ax.set_ylabel("steps or examples over their minimum")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


def plot_advice(advice: Any, path: str | Path, title: str = "") -> Path:
    """Write the two-panel figure (see the module docstring) to ``path`` (.png, .pdf or .svg)."""
    path = _checked_path(path)
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
    _run_panel(left, advice)
    _prediction_panel(right, advice)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    _save(fig, path)
    return path


__all__ = ["plot_advice"]
