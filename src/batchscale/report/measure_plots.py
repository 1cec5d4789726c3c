"""Figures of ``batchscale measure``: which series each command draws, from its result rows.

Each function takes the rows (or checks) a measurement returned and writes one figure with
:func:`batchscale.report.plots.plot_series`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from batchscale.report.plots import Marks, plot_panels, plot_series

NAN = float("nan")


def plot_noise_scale(path: str, rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> None:
    """B_simple per method against the SGD step, its 95% interval a shaded band (skewed, so no symmetric
    error bar), the per-step two-batch EMA, and B_noise (bars: one stderr); the training-set size M as a
    dotted line. Steps where an estimate is undefined (its |G|^2 estimate <= 0) are marked with an x on
    the step axis, and there no interval is drawn either; a line joins the defined points on either side.
    """
    ys, err, bands, marks, styles = {}, {}, {}, {}, {}
    measured = [r for r in rows if r.get("method") is not None]
    steps = sorted({r["step"] for r in measured})

    def series(method: str, key: str) -> list[float]:
        mine = {r["step"]: r for r in measured if r.get("method") == method}
        return [NAN if mine.get(s, {}).get(key) is None else mine[s][key] for s in steps]

    def undefined(method: str, values: list[float]) -> list[int]:
        """Steps where ``method`` has a row but no positive finite value."""
        have = {r["step"] for r in measured if r.get("method") == method}
        return [s for s, v in zip(steps, values, strict=True) if s in have and not (0 < v < math.inf)]

    for i, method in enumerate(methods):
        label = f"B_simple ({method})"
        ys[label] = values = series(method, "b_simple")
        styles[label] = {"color": f"C{i}"}
        low, high = series(method, "ci_low"), series(method, "ci_high")
        defined = [0 < v < math.inf for v in values]
        low = [lo if ok else NAN for lo, ok in zip(low, defined, strict=True)]
        high = [hi if ok else NAN for hi, ok in zip(high, defined, strict=True)]
        if any(hi > lo for lo, hi in zip(low, high, strict=True)):  # zero width: exact over all examples
            bands[label] = (low, high, f"95% interval ({method})")
        gone = undefined(method, values)
        if gone:
            marks[label] = Marks(gone, f"B_simple ({method}) undefined: |G|^2 estimate <= 0")
        if method == "two-batch" and any(r.get("b_simple_ema") is not None for r in measured):
            ema = "B_simple (two-batch, per-step EMA)"
            ys[ema] = series(method, "b_simple_ema")
            styles[ema] = {"color": f"C{i}", "ls": "--", "marker": "s", "mfc": "white"}
            gone = [s for s in undefined(method, ys[ema]) if s > 0]  # step 0: before any step, no average
            if gone:
                marks[ema] = Marks(gone, "per-step EMA undefined: averaged |G|^2 <= 0")
    if any("b_noise" in r for r in measured):
        noise = "B_noise (HVP; bars: 1 stderr)"
        ys[noise] = series("b-noise (HVP)", "b_noise")
        err[noise] = series("b-noise (HVP)", "b_noise_stderr")
        styles[noise] = {"color": f"C{len(methods)}", "marker": "D"}
    sizes = sorted({r["population"] for r in measured if r.get("population")})
    hlines = {f"training examples M = {sizes[0]}": float(sizes[0])} if len(sizes) == 1 else {}
    plot_series(
        path,
        steps,
        ys,
        xlabel="SGD step",
        ylabel="batch size",
        title="Gradient noise scale along training",
        logy=True,
        yerr=err,
        styles=styles,
        bands=bands,
        marks=marks,
        hlines=hlines,
        legend_outside=True,
    )


def plot_checks(
    path: str, measured: Sequence[tuple[int, Any]], quantity: str, ylabel: str, title: str, logy: bool
) -> None:
    """Predicted (line) and measured (points with one-stderr bars) ``quantity`` vs m, in one colour per
    (form, sampling) and, along training, per step. ``measured`` holds (step, Check) pairs.

    On a log axis a point predicted to be exactly 0 (m = M without replacement: the update is the full
    gradient step) cannot be drawn, and its measurement is float rounding: it is marked with an x on the
    m axis instead, named in the legend.
    """
    groups: dict[tuple[int, str, str], dict[int, Any]] = {}
    for step, c in measured:
        if c.quantity == quantity:
            groups.setdefault((step, c.form, c.sampling), {})[c.batch_size] = c
    ms = sorted({c.batch_size for _, c in measured})
    several_steps = len({step for step, _ in measured}) > 1
    hues = list(dict.fromkeys((step, form) for step, form, _ in groups))  # a colour per (step, form)
    ys, err, styles, zero = {}, {}, {}, set()
    for (step, form, sampling), by_m in groups.items():
        label = f"{form} form, {sampling} repl." if quantity != "cosine" else f"{sampling} replacement"
        label = f"step {step}, {label}" if several_steps else label
        zero |= {m for m, c in by_m.items() if logy and c.predicted == 0}
        shown = {m: c for m, c in by_m.items() if not (logy and c.predicted == 0)}
        predicted, got = f"{label}: predicted", f"{label}: measured"
        ys[predicted] = [shown[m].predicted if m in shown else NAN for m in ms]
        ys[got] = [shown[m].measured if m in shown else NAN for m in ms]
        err[got] = [shown[m].stderr if m in shown else NAN for m in ms]
        colour, without = f"C{hues.index((step, form))}", sampling == "without"
        styles[predicted] = {"color": colour, "marker": "", "lw": 1.5, "ls": "--" if without else "-"}
        styles[got] = {"color": colour, "ls": "none", "marker": "s" if without else "o", "ms": 5,
                       "mfc": "white" if without else colour}
    marks = {"zero": Marks(sorted(zero), "predicted 0 (m = M without repl.; measured: float rounding)")}
    plot_series(
        path, ms, ys, xlabel="batch size m", ylabel=ylabel, title=title, logx=True, logy=logy, yerr=err,
        styles=styles, marks=marks, legend_outside=True,
    )


def plot_accumulation(path: str, results: Sequence[Any]) -> None:
    """The identity the command checks beside the memory it saves, per micro-batch size b.

    Left: max |accumulated update - one-batch update| over k = m/b micro-batches (points, a colour per
    loss form) against the float-rounding tolerance it is checked with (dashed) and the size of the
    update itself, max |update| (dotted); b = m (k = 1, the same computation: a difference of exactly 0)
    is marked on the axis. Right: memory of one micro-batch (profiler peak, autograd-saved bytes; first
    form: the memory does not depend on it).
    """
    forms = list(dict.fromkeys(r.form for r in results))
    sizes = sorted({r.micro_batch for r in results})
    ys, styles, zero = {}, {}, set()
    for i, form in enumerate(forms):
        by_b = {r.micro_batch: r for r in results if r.form == form}
        colour = f"C{i}"
        diff = f"{form} form: max |accumulated - one batch|"
        ys[diff] = [by_b[b].max_abs_diff if b in by_b and by_b[b].max_abs_diff > 0 else NAN for b in sizes]
        zero |= {b for b in by_b if by_b[b].max_abs_diff == 0}
        bound, size = f"{form} form: tolerance (float rounding)", f"{form} form: max |update|"
        ys[bound] = [by_b[b].tolerance if b in by_b else NAN for b in sizes]
        ys[size] = [by_b[b].update_max_abs if b in by_b else NAN for b in sizes]
        styles[diff] = {"color": colour, "ls": "none", "marker": "o", "ms": 5}
        styles[bound] = {"color": colour, "ls": "--", "marker": ""}
        styles[size] = {"color": colour, "ls": ":", "marker": ""}
    batch = results[0].batch_size
    first = {r.micro_batch: r for r in results if r.form == forms[0]}
    memory = {
        "allocation peak (profiler)": [
            NAN if first.get(b) is None or first[b].peak_bytes is None else first[b].peak_bytes / 2**20
            for b in sizes
        ],
        "autograd-saved bytes": [first[b].saved_bytes / 2**20 if b in first else NAN for b in sizes],
    }
    plot_panels(
        path,
        [
            {"x": sizes, "ys": ys, "styles": styles, "logx": True, "logy": True,
             "marks": {"zero": Marks(sorted(zero), "difference exactly 0 (k = 1: the same computation)")},
             "xlabel": f"micro-batch size b (k = {batch}/b micro-batches)",
             "ylabel": "max |difference| per weight",
             "title": f"k micro-batches vs one batch of {batch}"},
            {"x": sizes, "ys": memory, "logx": True, "logy": True, "xlabel": "micro-batch size b",
             "styles": {"allocation peak (profiler)": {"color": "C2", "marker": "s"},
                        "autograd-saved bytes": {"color": "C4", "marker": "^"}},
             "ylabel": "MiB per micro-batch", "title": "Memory of one micro-batch"},
        ],
        title="Gradient accumulation: the same update, less memory",
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
