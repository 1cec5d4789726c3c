"""Figures of ``batchscale measure``: which series each command draws, from its result rows.

Each function takes the rows (or checks) a measurement returned and writes one figure with
:func:`batchscale.report.plots.plot_series`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchscale.report.plots import plot_series

NAN = float("nan")


def plot_noise_scale(path: str, rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> None:
    """B_simple per method with its 95% interval drawn as two lines of bounds (the interval is skewed,
    so no symmetric error bar), the per-step two-batch EMA, and B_noise (bars: one stderr), against the
    SGD step."""
    ys, err = {}, {}
    steps = sorted({r["step"] for r in rows if r.get("status") == "ok"})

    def series(method: str, key: str) -> list[float]:
        mine = {r["step"]: r for r in rows if r.get("method") == method}
        return [NAN if mine.get(s, {}).get(key) is None else mine[s][key] for s in steps]

    for method in methods:
        ys[f"B_simple ({method})"] = series(method, "b_simple")
        low, high = series(method, "ci_low"), series(method, "ci_high")
        if any(hi > lo for lo, hi in zip(low, high, strict=True)):  # zero width: exact over all examples
            ys[f"  95% CI low ({method})"], ys[f"  95% CI high ({method})"] = low, high
        if method == "two-batch" and any(r.get("b_simple_ema") is not None for r in rows):
            ys["B_simple (two-batch, per-step EMA)"] = series(method, "b_simple_ema")
    if any("b_noise" in r for r in rows):
        ys["B_noise (HVP; bars: 1 stderr)"] = series("b-noise (HVP)", "b_noise")
        err["B_noise (HVP; bars: 1 stderr)"] = series("b-noise (HVP)", "b_noise_stderr")
    plot_series(
        path,
        steps,
        ys,
        xlabel="SGD step",
        ylabel="batch size",
        title="Gradient noise scale along training",
        logy=True,
        yerr=err,
    )


def plot_checks(
    path: str, measured: Sequence[tuple[int, Any]], quantity: str, ylabel: str, title: str, logy: bool
) -> None:
    """Predicted and measured ``quantity`` vs m, one pair of lines per (form, sampling) and, along
    training, per step. ``measured`` holds (step, Check) pairs.

    On a log axis, points predicted to be exactly 0 (m = M without replacement) are left out: their
    measurement is float rounding.
    """
    groups: dict[tuple[int, str, str], dict[int, Any]] = {}
    for step, c in measured:
        if c.quantity == quantity and not (logy and c.predicted == 0):
            groups.setdefault((step, c.form, c.sampling), {})[c.batch_size] = c
    ms = sorted({c.batch_size for _, c in measured})
    several_steps = len({step for step, _ in measured}) > 1
    ys, err = {}, {}
    for (step, form, sampling), by_m in groups.items():
        label = f"{form} form, {sampling} repl." if quantity != "cosine" else f"{sampling} replacement"
        label = f"step {step}, {label}" if several_steps else label
        ys[f"predicted, {label}"] = [by_m[m].predicted if m in by_m else NAN for m in ms]
        ys[f"measured, {label}"] = [by_m[m].measured if m in by_m else NAN for m in ms]
        err[f"measured, {label}"] = [by_m[m].stderr if m in by_m else NAN for m in ms]
    plot_series(
        path, ms, ys, xlabel="batch size m", ylabel=ylabel, title=title, logx=True, logy=logy, yerr=err
    )


def plot_accumulation_memory(path: str, results: Sequence[Any]) -> None:
    """Memory per micro-batch: the profiler's allocation peak and autograd's saved bytes (first form)."""
    first = [r for r in results if r.form == results[0].form]
    plot_series(
        path,
        [r.micro_batch for r in first],
        {
            "allocation peak MiB (profiler)": [
                NAN if r.peak_bytes is None else r.peak_bytes / 2**20 for r in first
            ],
            "autograd-saved MiB": [r.saved_bytes / 2**20 for r in first],
        },
        xlabel="micro-batch size",
        ylabel="MiB per micro-batch",
        title="Memory per micro-batch",
        logx=True,
        logy=True,
    )


def plot_sharpness(path: str, rows: Sequence[dict[str, Any]], train_lr: float) -> None:
    """The top eigenvalue along training beside the full-batch stability limit 2 / lr."""
    top = [r for r in rows if r.get("rank") == 1]
    plot_series(
        path,
        [r["step"] for r in top],
        {"lambda_max": [r["eigenvalue"] for r in top], "2 / train lr": [2 / train_lr] * len(top)},
        xlabel="SGD step",
        ylabel="top Hessian eigenvalue",
        title="Sharpness along training",
        logy=True,
    )
