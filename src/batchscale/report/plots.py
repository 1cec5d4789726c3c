"""Figures shared by ``predict``, ``measure``, ``sweep`` and ``verify``.

matplotlib (Agg backend) is imported inside each function, never when this module is imported. Every
function writes one file whose format follows its extension (.png, .pdf, .svg), creates the parent
directory, and closes its figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from batchscale.errors import require

PLOT_SUFFIXES: tuple[str, ...] = (".png", ".pdf", ".svg")

# background colour of each regime label (see batchscale.theory.regimes.REGIMES)
REGIME_COLOURS: dict[str, str] = {
    "perfect_scaling": "#d9f0d3",
    "diminishing_returns": "#fee8c8",
    "maximal_parallelism": "#f4cccc",
    "unreachable": "#e0e0e0",
    "undecided": "#dfe7f2",
}
STRIP_HEIGHT = 0.06  # axes fraction of one optimizer's regime strip (several regime lists)


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _checked_path(path: str | Path) -> Path:
    path = Path(path)
    require(
        path.suffix.lower() in PLOT_SUFFIXES,
        f"plot file must end in {', '.join(PLOT_SUFFIXES)}, got {str(path)!r}",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(fig: Any, path: Path) -> None:
    plt = _pyplot()
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def _finite_xy(x: Sequence, y: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y) of the points with finite positive y, and the x of the others."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(y) & (y > 0)
    return x[ok], y[ok], x[~ok]


def _regime_spans(batch_sizes: Sequence, regimes: Sequence[str]) -> list[tuple[float, float, str]]:
    """(left, right, label) per batch size: its span between geometric midpoints to its neighbours."""
    b = np.asarray(batch_sizes, dtype=float)
    order = np.argsort(b)
    b = b[order]
    labels = [regimes[i] for i in order]
    edges = np.sqrt(b[1:] * b[:-1]) if b.size > 1 else np.array([])
    lo = np.concatenate([[b[0] / 1.5], edges])
    hi = np.concatenate([edges, [b[-1] * 1.5]])
    return list(zip(lo.tolist(), hi.tolist(), labels, strict=True))


def _shade_regimes(
    ax: Any,
    batch_sizes: Sequence,
    regimes: Sequence[str],
    seen: set[str],
    strip: tuple[float, float] = (0.0, 1.0),
) -> None:
    """Shade each batch size's span by its regime, over the axes' height fraction ``strip``."""
    for left, right, label in _regime_spans(batch_sizes, regimes):
        legend = label.replace("_", " ") if label not in seen else None
        seen.add(label)
        ax.axvspan(left, right, ymin=strip[0], ymax=strip[1], color=REGIME_COLOURS.get(label, "#ffffff"),
                   alpha=0.8, lw=0, label=legend)


def _shade_per_curve(
    ax: Any, curves: Mapping[str, Mapping[str, Sequence]], regimes: Mapping[str, Sequence[str]]
) -> None:
    """One strip of regime shading per curve along the bottom of the axes, edged in the curve's colour and
    named, so that each optimizer's regimes are shown as its own."""
    seen: set[str] = set()
    names = list(curves)
    for label, labels in regimes.items():
        require(label in curves, f"regimes given for {label!r}, which is not a curve")
        n = len(curves[label]["batch_size"])
        require(len(labels) == n, f"one regime label per batch size of {label!r}")
        i = names.index(label)
        strip = (i * STRIP_HEIGHT, (i + 1) * STRIP_HEIGHT)
        _shade_regimes(ax, curves[label]["batch_size"], labels, seen, strip)
        ax.text(0.005, strip[0] + STRIP_HEIGHT / 2, f"{label} regimes", transform=ax.transAxes, fontsize=6,
                va="center", ha="left", color=f"C{i}")


def plot_steps_vs_batch(
    path: str | Path,
    curves: Mapping[str, Mapping[str, Sequence]],
    *,
    regimes: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    title: str = "",
    ylabel: str = "steps to target",
    lines: Mapping[str, Mapping[str, Sequence]] | None = None,
    vlines: Mapping[str, float] | None = None,
    lr_label: str = "best learning rate",
) -> None:
    """Steps to target vs batch size (log-log), with perfect-scaling lines and regimes shaded.

    ``curves`` maps a label to ``{"batch_size": [...], "steps": [...]}`` with optional
    ``"learning_rate"``, ``"fit_steps"`` (a fitted curve, dotted), ``"steps_err"`` (one-sigma error
    bars), ``"steps_low"``/``"steps_high"``
    (asymmetric bars, e.g. the range across seeds) and ``"lr_low"``/``"lr_high"`` (the same for the
    learning rate). Left panel: one line per curve and a dashed perfect-scaling line (steps proportional
    to 1/B) through each curve's smallest-batch point. ``regimes``: a list (one label per batch size of
    the FIRST curve) shades the whole background and the legend says whose regimes they are when there
    are several curves; a mapping curve label -> labels draws one named strip per curve along the bottom.
    Right panel, only when some curve has ``learning_rate``: the best learning rate vs batch size.
    Unreachable (inf/nan) points are skipped and marked with a 'x' on the bottom axis.

    Optional extras: ``lines`` maps a label to ``{"batch_size", "steps"}`` drawn as plain lines (e.g. a
    fitted model curve); ``vlines`` maps a label to a batch size marked by a dotted vertical line;
    ``lr_label`` names the right panel's y axis.
    """
    path = _checked_path(path)
    require(len(curves) > 0, "no curves to plot")
    plt = _pyplot()
    with_lr = any("learning_rate" in c for c in curves.values())
    fig, axes = plt.subplots(1, 2 if with_lr else 1, figsize=(11 if with_lr else 6.5, 4.5), squeeze=False)
    ax = axes[0, 0]
    first_label, first = next(iter(curves.items()))
    if isinstance(regimes, Mapping):
        _shade_per_curve(ax, curves, regimes)
    elif regimes is not None:
        require(
            len(regimes) == len(first["batch_size"]), "one regime label per batch size of the first curve"
        )
        _shade_regimes(ax, first["batch_size"], regimes, set())
        if len(curves) > 1:
            ax.plot([], [], " ", label=f"(shading: regimes of {first_label})")
    for i, (label, curve) in enumerate(curves.items()):
        _draw_steps_curve(ax, label, curve, colour=f"C{i}")
    _draw_extras(ax, lines or {}, vlines or {}, offset=len(curves))
    _log_axes(ax, "batch size", ylabel)
    ax.legend(fontsize=8, loc="best")
    if with_lr:
        _draw_learning_rates(axes[0, 1], curves, lr_label)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_steps_and_examples(
    path: str | Path,
    batch_sizes: Sequence[float],
    curves: Mapping[str, Mapping[str, Any]],
    *,
    regimes: Sequence[str] | None = None,
    vlines: Mapping[str, float] | None = None,
    title: str = "",
    units: str = "",
) -> None:
    """Steps S(B) and examples E(B) = B S(B) to the target side by side (log-log), one colour per curve.

    ``curves`` maps a label to ``{"steps": [...]}`` (one value per batch size; inf/nan: not reached, left
    out) and optional ``"style"`` (matplotlib keywords, e.g. ``{"marker": ""}`` for a model line). Each
    panel shades the regime of each batch size (``regimes``, e.g. of the fitted curve), marks ``vlines``
    (e.g. B_crit) and draws perfect scaling through the first curve's smallest batch: S proportional to 1/B
    on the left, E constant on the right. ``units`` is appended to both axis labels (e.g. "(x S_min)").
    """
    path = _checked_path(path)
    require(len(curves) > 0, "no curves to plot")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.6))
    b = np.asarray(batch_sizes, dtype=float)
    for k, ax in enumerate(axes):
        if regimes is not None:
            _shade_regimes(ax, batch_sizes, regimes, set())
        for i, (label, curve) in enumerate(curves.items()):
            steps = np.asarray(curve["steps"], dtype=float)
            x, y, _ = _finite_xy(b, steps if k == 0 else steps * b)
            style = {"marker": "o", "ms": 4, "ls": "-", "color": f"C{i}", **dict(curve.get("style", {}))}
            ax.plot(x, y, label=label, **style)
            if i == 0 and x.size:
                ideal = y[0] * x[0] / x if k == 0 else np.full_like(x, y[0])
                keep = ideal >= y.min() / 4  # down to a quarter of the lowest point
                ax.plot(x[keep], ideal[keep], "--", color="0.45", lw=1,
                        label="perfect scaling (S x B constant)")
        for j, (label, value) in enumerate((vlines or {}).items()):
            if np.isfinite(value) and value > 0:
                colour = "0.15" if j == 0 else f"C{len(curves) + j}"
                ax.axvline(value, ls=":", lw=1.5, color=colour, label=label)
        name = "steps to target S(B)" if k == 0 else "examples to target E(B) = B S(B)"
        _log_axes(ax, "batch size B", f"{name} {units}".strip())
        ax.set_title("fewer steps with bigger batches ..." if k == 0 else "... at the cost of more examples",
                     fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.1, 1, 0.95 if title else 1))
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _draw_steps_curve(ax: Any, label: str, curve: Mapping[str, Sequence], colour: str) -> None:
    x, y, missing = _finite_xy(curve["batch_size"], curve["steps"])
    err = _bars(curve, "steps_err", "steps_low", "steps_high", x, y)
    if err is not None:
        ax.errorbar(x, y, yerr=err, fmt="o-", color=colour, label=label, ms=4, capsize=2)
    elif x.size:
        ax.plot(x, y, "o-", color=colour, label=label, ms=4)
    if curve.get("fit_steps") is not None:
        fx, fy, _ = _finite_xy(curve["batch_size"], curve["fit_steps"])
        ax.plot(fx, fy, ":", color=colour, lw=1.5, label=f"{label}: fit S_min (1 + B_crit/B)")
    if x.size:
        # perfect scaling through the smallest-batch point, drawn down to a quarter of the lowest point
        i0 = int(np.argmin(x))
        ideal = y[i0] * x[i0] / x
        keep = ideal >= y.min() / 4
        ax.plot(x[keep], ideal[keep], "--", color=colour, lw=1, alpha=0.7)
    if missing.size:
        ax.plot(
            missing,
            np.zeros_like(missing),
            "x",
            color=colour,
            ms=8,
            mew=2,
            clip_on=False,
            transform=ax.get_xaxis_transform(),
            label=f"{label}: not reached",
        )


def _bars(
    curve: Mapping[str, Sequence], sym: str | None, low: str, high: str, x: np.ndarray, y: np.ndarray
) -> np.ndarray | None:
    """(2, k) error bars of the plotted points (x, y) from ``curve[sym]`` (one sigma) or the range
    ``curve[low]``..``curve[high]``; None when the curve has neither. Missing values draw no bar; a bar
    reaching zero is cut just above it (log axis)."""
    if not x.size:
        return None
    keep = np.isin(np.asarray(curve["batch_size"], dtype=float), x)
    if sym is not None and curve.get(sym) is not None:
        e = np.nan_to_num(np.asarray(curve[sym], dtype=float)[keep], nan=0.0, posinf=0.0)
        bars = np.stack([e, e])
    elif curve.get(low) is not None and curve.get(high) is not None:
        lo = np.asarray(curve[low], dtype=float)[keep]
        hi = np.asarray(curve[high], dtype=float)[keep]
        bars = np.nan_to_num(np.stack([y - lo, hi - y]), nan=0.0, posinf=0.0, neginf=0.0)
        bars = np.maximum(bars, 0.0)
    else:
        return None
    bars[0] = np.minimum(bars[0], 0.999 * y)
    return bars


def _draw_extras(
    ax: Any, lines: Mapping[str, Mapping[str, Sequence]], vlines: Mapping[str, float], offset: int
) -> None:
    for i, (label, line) in enumerate(lines.items()):
        x, y, _ = _finite_xy(line["batch_size"], line["steps"])
        ax.plot(x, y, "-", color=f"C{offset + i}", lw=1.5, label=label)
    for i, (label, value) in enumerate(vlines.items()):
        if np.isfinite(value) and value > 0:
            ax.axvline(value, ls=":", lw=1.5, color=f"C{offset + len(lines) + i}", label=label)


def _draw_learning_rates(
    ax: Any, curves: Mapping[str, Mapping[str, Sequence]], lr_label: str = "best learning rate"
) -> None:
    for i, (label, curve) in enumerate(curves.items()):
        if "learning_rate" in curve:
            x, y, _ = _finite_xy(curve["batch_size"], curve["learning_rate"])
            err = _bars(curve, None, "lr_low", "lr_high", x, y)
            if err is not None:
                ax.errorbar(x, y, yerr=err, fmt="s-", color=f"C{i}", label=label, ms=4, capsize=2)
            elif x.size:
                ax.plot(x, y, "s-", color=f"C{i}", label=label, ms=4)
    _log_axes(ax, "batch size", lr_label)
    ax.legend(fontsize=8, loc="best")


def _log_axes(ax: Any, xlabel: str, ylabel: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


def plot_heatmap(
    path: str | Path,
    x_values: Sequence[float],
    y_values: Sequence[float],
    values: Sequence[Sequence[float]],
    *,
    diverged: Sequence[Sequence[bool]] | None = None,
    xlabel: str,
    ylabel: str,
    title: str = "",
    value_label: str = "",
) -> None:
    """A grid of values, e.g. test accuracy over (batch size x base learning rate) (Masters & Luschi 2018).

    ``values[i][j]`` belongs to ``y_values[i]`` and ``x_values[j]``. Cells are coloured by value (non-finite
    cells are left blank); cells where ``diverged`` is true are hatched and marked with a black 'x'. The
    axes are categorical, one tick per value, labelled with the values (so log-spaced grids read evenly).
    """
    path = _checked_path(path)
    z = np.asarray(values, dtype=float)
    require(
        z.shape == (len(y_values), len(x_values)),
        f"values must have shape ({len(y_values)}, {len(x_values)})",
    )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(x_values) + 1.5, 1.0 + 0.45 * len(y_values) + 1.0))
    masked = np.ma.masked_invalid(z)
    image = ax.imshow(masked, origin="lower", aspect="auto", cmap="viridis")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(value_label)
    if diverged is not None:
        _mark_diverged(ax, np.asarray(diverged, dtype=bool), z.shape)
    ax.set_xticks(range(len(x_values)), _ticks(x_values), rotation=45, ha="right")
    ax.set_yticks(range(len(y_values)), _ticks(y_values))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    _save(fig, path)


def _mark_diverged(ax: Any, diverged: np.ndarray, shape: tuple[int, ...]) -> None:
    from matplotlib.patches import Rectangle

    require(diverged.shape == shape, f"diverged must have shape {shape}")
    for i, j in zip(*np.nonzero(diverged), strict=True):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", lw=0, color="0.4"))
        ax.plot(j, i, "x", color="black", ms=8, mew=2)


def _ticks(values: Sequence[float]) -> list[str]:
    """Tick labels in one format for the whole axis: integers; else powers of two as 2^k (a log-spaced
    grid of rates); else 3 significant digits when every value lies in [0.001, 10^4) (or is 0); else
    scientific notation with 2 significant digits."""
    v = [float(x) for x in values]
    if all(x.is_integer() and abs(x) < 1e6 for x in v):
        return [str(int(x)) for x in v]
    if all(_is_power_of_two(np.asarray(v))):
        return [f"$2^{{{round(math.log2(x))}}}$" for x in v]
    if all(x == 0 or 1e-3 <= abs(x) < 1e4 for x in v):
        return [f"{x:.3g}" for x in v]
    return [f"{x:.1e}" for x in v]


class Marks(NamedTuple):
    """Points of a series that a figure cannot draw as values, shown anyway: ``x`` positions marked along
    the bottom edge of the axes in the series' colour, named in the legend by ``label`` (e.g. a value
    predicted to be exactly 0 on a log axis, or an estimate that is undefined there)."""

    x: Sequence[float]
    label: str


def plot_series(
    path: str | Path,
    x: Sequence[float],
    ys: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    yerr: Mapping[str, Sequence[float] | Sequence[Sequence[float]]] | None = None,
    vlines: Mapping[str, float] | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float], str]] | None = None,
    marks: Mapping[str, Marks] | None = None,
    hlines: Mapping[str, float] | None = None,
    legend_outside: bool = False,
) -> None:
    """Lines ``ys[label]`` against ``x`` (e.g. predicted and measured quantities vs batch size).

    Non-finite points are skipped (and non-positive ones on a log axis); the line joins the points on
    either side of a skipped one. ``yerr[label]`` gives optional error bars for a line: n symmetric errors
    (one sigma), or a (2, n) array of distances below and above each point (asymmetric, e.g. a bootstrap
    interval); a missing (None/NaN) error draws no bar, and on a log axis a bar reaching zero is cut just
    above it. ``vlines`` / ``hlines`` map a label to an x / y marked by a dotted line.

    For figures a paper would print: ``styles[label]`` overrides the matplotlib style of a line (e.g.
    ``{"color": "C0", "ls": "--", "marker": ""}``, so a prediction and its measurement share a colour);
    ``bands[label] = (low, high, band_label)`` shades an interval around line ``label`` in its colour
    where both bounds are known (an infinite upper bound reaches the top of the axes); ``marks[label]``
    (:class:`Marks`) shows points that cannot be drawn; ``legend_outside`` puts the legend right of the
    axes, off the data.
    """
    path = _checked_path(path)
    require(len(ys) > 0, "no series to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5 if legend_outside else 6.5, 4.5))
    draw_series(ax, x, ys, logx=logx, logy=logy, yerr=yerr, vlines=vlines, styles=styles, bands=bands,
                marks=marks, hlines=hlines)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _legend(ax, legend_outside)
    if title:
        ax.set_title(title)
    _save(fig, path)


def plot_panels(path: str | Path, panels: Sequence[Mapping[str, Any]], *, title: str = "") -> None:
    """Panels side by side, each drawn by :func:`draw_series`: a panel maps ``x``, ``ys``, ``xlabel``,
    ``ylabel`` and optionally ``title`` and any keyword of :func:`draw_series`; legends sit below the
    panels, off the data."""
    path = _checked_path(path)
    require(len(panels) > 0, "no panels to plot")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        spec = dict(panel)
        xlabel, ylabel, panel_title = spec.pop("xlabel"), spec.pop("ylabel"), spec.pop("title", "")
        draw_series(ax, spec.pop("x"), spec.pop("ys"), **spec)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if panel_title:
            ax.set_title(panel_title, fontsize=10)
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, ncol=1)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _legend(ax: Any, outside: bool) -> None:
    if outside:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    else:
        ax.legend(fontsize=8)


def draw_series(
    ax: Any,
    x: Sequence[float],
    ys: Mapping[str, Sequence[float]],
    *,
    logx: bool = False,
    logy: bool = False,
    yerr: Mapping[str, Any] | None = None,
    vlines: Mapping[str, float] | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float], str]] | None = None,
    marks: Mapping[str, Marks] | None = None,
    hlines: Mapping[str, float] | None = None,
) -> None:
    """The lines, bands, marks and reference lines of :func:`plot_series` on the axes ``ax``."""
    xa = np.asarray(x, dtype=float)
    colours: dict[str, Any] = {}
    for label, y in ys.items():
        ya = np.asarray(y, dtype=float)
        require(ya.shape == xa.shape, f"series {label!r} has {ya.size} values for {xa.size} x values")
        ok = _plottable(xa, logx) & _plottable(ya, logy)
        err = None if yerr is None or label not in yerr else _error_bars(yerr[label], ya, ok, logy, label)
        style = {"marker": "o", "ls": "-", "ms": 4, "capsize": 2, **dict((styles or {}).get(label, {}))}
        drawn = ax.errorbar(xa[ok], ya[ok], yerr=err, label=label, **style)
        colours[label] = drawn.lines[0].get_color()
    extra = len(ys)
    for i, (label, value) in enumerate((hlines or {}).items()):
        if np.isfinite(value) and (value > 0 or not logy):
            ax.axhline(value, ls=":", lw=1.2, color="0.35" if i == 0 else f"C{extra + i}", label=label)
    extra += len(hlines or {})
    for i, (label, value) in enumerate((vlines or {}).items()):
        if np.isfinite(value) and (value > 0 or not logx):
            ax.axvline(value, ls=":", lw=1.5, color=f"C{extra + i}", label=label)
    if logx:
        ax.set_xscale("log", base=2 if np.all(_is_power_of_two(xa)) else 10)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    for label, (low, high, band_label) in (bands or {}).items():
        _band(ax, xa, low, high, colours[label], band_label, logy)
    for label, mark in (marks or {}).items():
        if len(mark.x):
            at = np.asarray(mark.x, dtype=float)
            ax.plot(at, np.zeros(at.size), "x", color=colours.get(label, "k"), ms=7, mew=1.8, clip_on=False,
                    transform=ax.get_xaxis_transform(), label=mark.label)


def _band(ax: Any, x: np.ndarray, low: Sequence, high: Sequence, colour: Any, label: str, log: bool) -> None:
    """Shade low..high where both are known; an infinite high reaches the top of the axes."""
    lo = np.array([np.nan if v is None else v for v in low], dtype=float)
    hi = np.array([np.nan if v is None else v for v in high], dtype=float)
    bottom, top = ax.get_ylim()
    finite = hi[np.isfinite(hi)]
    if finite.size:  # the whole band in view
        top = max(top, float(finite.max()) * (1.15 if log else 1.0))
    hi = np.where(np.isposinf(hi), top, hi)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(lo) & np.isfinite(hi) & (hi >= lo) & ((lo > 0) if log else True)
    if ok.any():
        ax.fill_between(x, lo, hi, where=ok, color=colour, alpha=0.18, lw=0, label=label)
    ax.set_ylim(bottom, top)


def _error_bars(err, y: np.ndarray, ok: np.ndarray, log: bool, label: str) -> np.ndarray:
    """(2, k) distances below/above the plotted points ``y[ok]`` from symmetric (n,) or (2, n) errors."""
    e = np.asarray(err, dtype=float)
    if e.shape == y.shape:
        e = np.stack([e, e])
    require(
        e.shape == (2,) + y.shape,
        f"error bars of {label!r} must have shape ({y.size},) or (2, {y.size}), got {e.shape}",
    )
    e = np.nan_to_num(e[:, ok], nan=0.0, posinf=0.0)
    require(bool(np.all(e >= 0)), f"error bars of {label!r} must be >= 0")
    if log:  # a bar down to zero or below has no place on a log axis: cut it just above zero
        e[0] = np.minimum(e[0], 0.999 * y[ok])
    return e


def _plottable(values: np.ndarray, log: bool) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values > 0) if log else np.isfinite(values)


def _is_power_of_two(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log2(np.where(values > 0, values, np.nan))
    return np.isfinite(logs) & (logs == np.round(logs))


class ForestRow(NamedTuple):
    """One row of :func:`plot_forest`: a label, the value and its interval on the common axis, a colour
    and whether the marker is hollow (a row that is not evidence)."""

    label: str
    value: float
    low: float
    high: float
    colour: str
    hollow: bool = False


def plot_forest(
    path: str | Path, rows: Sequence[ForestRow], *, xlabel: str, title: str = "", limit: float = 4.0,
    band: tuple[float, float] = (-1.0, 1.0), legend: Sequence[tuple[str, str]] = (),
) -> None:
    """A forest plot: one line per row (top to bottom in the given order), its value as a marker and its
    interval as a bar, the shared acceptance ``band`` shaded. Values beyond +-``limit`` are drawn at the
    edge as a triangle pointing outwards (their bar cut there); ``legend`` gives (colour, text) pairs."""
    path = _checked_path(path)
    require(len(rows) > 0, "no rows to plot")
    plt = _pyplot()
    height = 1.2 + 0.24 * len(rows)
    fig, ax = plt.subplots(figsize=(9.0, height))
    ax.axvspan(*band, color="#e3efe3", zorder=0, label="accepted (declared tolerance)")
    ax.axvline(0.0, color="#7a7a7a", lw=0.8, zorder=1)
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        low, high = (max(-limit, min(limit, v)) for v in (row.low, row.high))
        if not (math.isnan(row.low) or math.isnan(row.high)) and row.low != row.high:
            ax.plot([low, high], [y, y], color=row.colour, lw=1.6, zorder=2)
        value = max(-limit, min(limit, row.value))
        marker = ">" if row.value > limit else "<" if row.value < -limit else "o"
        face = "white" if row.hollow else row.colour
        ax.plot([value], [y], marker=marker, ms=6, mfc=face, mec=row.colour, ls="", zorder=3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.label for r in reversed(rows)], fontsize=7.5)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(-limit - 0.3, limit + 0.3)
    ax.set_xlabel(xlabel)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=t) for c, t in legend]
    handles.append(plt.Rectangle((0, 0), 1, 1, color="#e3efe3", label="accepted (declared tolerance)"))
    below = 0.62 / max(height - 1.2, 0.3)  # the legend ~0.6 inch under the axes, below the x label
    ax.legend(handles=handles, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -below),
              ncol=len(handles), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
