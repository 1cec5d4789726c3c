r"""``masters2018``: Masters & Luschi 2018, "Revisiting Small Batch Training for Deep Neural Networks"
(arXiv 1804.07612), at CPU scale on built-in workloads.

Measured: test accuracy over a learning-rate x batch-size grid (:mod:`batchscale.verify.lr_grid`: a fixed
number of epochs per cell, >= 3 seeds, trials in the store, shared with ``batchscale sweep grid`` and
``batchscale verify sharpness``) for the sum form (rates are base learning rates eta/m, as in the paper)
and the mean form (plain rates eta), on two workloads (``digits-mlp`` and ``digits-cnn``). Read off, per
workload: the best batch size (through ``batchscale.verify``'s ``sharpness`` row ``best_batch_size``,
its declared band [2, 32]); the width of the range of base rates within 2 accuracy points of the best
at each m, and the largest stable base rate of the grid, each with its per-seed log-log slope in m (the
paper: the range narrows as m grows); and, on the first workload, the divergence boundary by bisection
against the local quadratic model (``batchscale.verify``'s ``stability`` rows on a network).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from batchscale.reproduce.report import (
    Figure,
    Options,
    Reproduction,
    VerdictRow,
    markdown_table,
    save_log_log,
    write_csv,
    write_json,
)

PAPER = "masters2018"
CITATION = "Masters & Luschi 2018, arXiv 1804.07612"
WORKLOADS = ("digits-mlp", "digits-cnn")
QUICK_OPTIONS: dict[str, dict[str, Any]] = {"digits-mlp": {"hidden": 64}, "digits-cnn": {"channels": 8}}
FORMS = ("sum", "mean")
SEEDS = 3
ABSTRACT = "arXiv 1804.07612, abstract"
RESULTS = "arXiv 1804.07612, Sec. 4 (figures of test performance vs base learning rate per batch size)"
STATEMENTS = {
    "best": (
        "the best results have been obtained with batch sizes m = 32 or smaller, often as small as "
        "m = 2 or m = 4 (abstract, paraphrased closely)",
        ABSTRACT,
    ),
    "range": (
        "the range of base learning rates that gives stable convergence and good test performance "
        "shrinks as the batch size grows (paraphrased)",
        RESULTS,
    ),
    "stable": ("larger batches become unstable at smaller base learning rates (paraphrased)", RESULTS),
    "boundary": (
        "small batches give the best training stability (paraphrased); here: the divergence "
        "boundary measured by bisection vs the local quadratic model",
        ABSTRACT,
    ),
}
VERDICT_WORDS = {"pass": "reproduced", "fail": "not reproduced", "inconclusive": "inconclusive"}


def _quiet(stat: Any, values: Any, axis: int | None = None) -> Any:
    """``stat`` (np.nanmean, np.nanmin, ...) of ``values`` with nan, not a warning, for all-nan slices."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return stat(values, axis=axis)


def direction_verdict(low: float, high: float, what: str) -> tuple[str, str]:
    """ "``what`` < 0" from its 95% interval: reproduced below 0, not reproduced above, else inconclusive."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive", f"no interval for {what} (fewer than 2 seeds with 2 usable batch sizes)"
    span = f"95% interval of {what} [{low:.3g}, {high:.3g}]"
    if high < 0:
        return "reproduced", f"{span} lies below 0"
    if low > 0:
        return "not reproduced", f"{span} lies above 0"
    return "inconclusive", f"{span} holds 0: too uncertain to decide"


def slope_row(key: str, quantity: str, grid: Any, per_seed: np.ndarray, what: str) -> tuple[VerdictRow, list]:
    """A one-sided row: the per-seed least-squares slope of ``per_seed`` (B, S, values on the grid's log2
    spacing) on log2 m must be < 0; its interval joins the seeds' t interval and the grid's rounding
    (:func:`batchscale.verify.lr_grid.rounding_half_width`)."""
    from batchscale.verify.lr_grid import rounding_half_width, seed_slopes, t_interval

    x = np.log2(np.asarray(grid.batch_sizes, dtype=float))
    slopes = seed_slopes(x, per_seed)
    mean, low, high = t_interval(slopes)
    if math.isfinite(low):  # widen by the grid's rounding of every value to its log2 spacing
        spacing = float(np.mean(np.diff(np.log2(np.asarray(grid.rates, dtype=float)))))
        half = math.hypot(high - mean, rounding_half_width(x, spacing))
        low, high = mean - half, mean + half
    verdict, reason = direction_verdict(low, high, what)
    statement, source = STATEMENTS[key]
    shown = ", ".join(f"{s:.3g}" for s in slopes)
    row = VerdictRow(
        PAPER,
        statement,
        source,
        f"{grid.workload}: {quantity}",
        mean,
        None if not math.isfinite(low) else low,
        None if not math.isfinite(high) else high,
        verdict,
        f"{reason}; per-seed slopes {shown}",
    )
    return row, slopes


def best_row(grid: Any, seed: int) -> tuple[VerdictRow, Any]:
    """The best batch size of ``grid`` through verify's ``sharpness`` row ``best_batch_size``."""
    from batchscale.verify.sharpness import best_batch_row

    row = best_batch_row(grid, {}, seed=seed)
    statement, source = STATEMENTS["best"]
    quantity = (
        f"{grid.workload} ({grid.loss_form} form): the batch size with the highest seed-mean best "
        "test accuracy over the grid's rates (verify sharpness/best_batch_size, band [2, 32])"
    )
    return VerdictRow(
        PAPER,
        statement,
        source,
        quantity,
        row.measured,
        row.ci_low,
        row.ci_high,
        VERDICT_WORDS[row.verdict],
        row.reason,
    ), row


def log2_edges(grid: Any) -> np.ndarray:
    """(B, S) log2 of the largest stable base rate per batch size and seed (nan where none is bracketed:
    every rate diverged, or none did)."""
    from batchscale.verify.lr_grid import largest_stable

    edge = largest_stable(grid.diverged, grid.base_rates)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(edge), np.log2(edge), np.nan)


def reproduce(options: Options) -> Reproduction:
    from batchscale.reproduce.trials import Tally, prepare_store
    from batchscale.verify.lr_grid import FULL, QUICK, good_width, run_grid
    from batchscale.verify.registry import package_versions, resolve

    quick = options.quick
    store = prepare_store(options)  # checked before anything trains
    tally = Tally(store)
    workloads = (options.workload,) if options.workload else WORKLOADS
    seeds = [options.seed + k for k in range(options.seeds or SEEDS)]
    settings = QUICK if quick else FULL
    grids: dict[tuple[str, str], Any] = {}
    for name in workloads:
        extra = QUICK_OPTIONS.get(name, {}) if quick else {}
        for form in FORMS:
            grids[name, form] = run_grid(
                name,
                extra,
                form,
                settings[form],
                seeds,
                db=store,
                data_seed=options.seed,
                progress=options.progress,
            )
            tally.add(grids[name, form])
    rows: list[VerdictRow] = []
    slopes: dict[str, Any] = {}
    for name in workloads:
        for form in FORMS:
            rows.append(best_row(grids[name, form], options.seed)[0])
    for name in workloads:
        grid = grids[name, "sum"]
        row, slopes[f"{name} width"] = slope_row(
            "range",
            "slope of the log2 width of the good base-rate range (within 2 accuracy points of the "
            "best) on log2 m, per seed",
            grid,
            good_width(grid.accuracy, grid.rates),
            "the slope",
        )
        rows.append(row)
        row, slopes[f"{name} edge"] = slope_row(
            "stable",
            "slope of log2 (largest stable base rate of the grid) on log2 m, per seed",
            grid,
            log2_edges(grid),
            "the slope",
        )
        rows.append(row)
    first = workloads[0]
    vopts = resolve(
        workload=first,
        workload_options=QUICK_OPTIONS.get(first, {}) if quick else {},
        quick=quick,
        seed=options.seed,
        seeds=options.seeds,
        db=store,
        progress=options.progress,
    )
    from batchscale.verify import stability

    srows = stability.run(vopts)
    boundary = srows[0].config.get("trials", {})
    tally.trained += int(boundary.get("trained", 0))
    tally.reused += int(boundary.get("reused", 0))
    rows.append(_stability_row(srows))

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    cells = _cell_rows(grids)
    write_csv(out / "grid.csv", cells)
    write_json(out / "stability_rows.json", [r.as_dict() for r in srows])
    figures = [_heatmap(out, grid) for grid in grids.values()]
    figures.append(_best_figure(out, grids, workloads))
    figures.append(_range_figure(out, grids, workloads))
    figures.append(_stability_figure(out, srows))
    sections = [
        (f"Best test accuracy per batch size ({name}, ours)", _best_table(grids, name)) for name in workloads
    ]
    sections.append(
        ("Divergence boundary (batchscale.verify `stability` rows, ours)", _stability_table(srows))
    )
    sections.append(("Method and sources", _method(quick, workloads, settings, seeds)))
    cfg = {
        "paper": PAPER,
        "workloads": list(workloads),
        "quick": quick,
        "seeds": seeds,
        "workload_options": {n: (QUICK_OPTIONS.get(n, {}) if quick else {}) for n in workloads},
        "grids": {
            form: {
                "batch_sizes": list(settings[form].batch_sizes),
                "rates": list(settings[form].rates),
                "epochs": settings[form].epochs,
            }
            for form in FORMS
        },
        "trials": tally.as_dict(),
        "slopes": slopes,
        "stability_config": {k: v for k, v in srows[0].config.items() if k != "versions"},
        "versions": package_versions(),
    }
    return Reproduction(PAPER, CITATION, tuple(rows), tuple(figures), tuple(sections), cfg)


def _stability_row(srows: Sequence[Any]) -> VerdictRow:
    from batchscale.verify.rows import summary

    narrowing = next(r for r in srows if r.quantity == "base_lr_range_narrows")
    others = [r for r in srows if r.quantity != "base_lr_range_narrows"]
    verdict = VERDICT_WORDS[narrowing.verdict]
    if verdict == "reproduced" and any(r.verdict != "pass" for r in others):
        verdict = "partly"
    statement, source = STATEMENTS["boundary"]
    return VerdictRow(
        PAPER,
        statement,
        source,
        f"{narrowing.workload}: slope of log(largest stable base rate) on log m from the bisected "
        "divergence boundary (verify stability)",
        narrowing.measured,
        narrowing.ci_low,
        narrowing.ci_high,
        verdict,
        f"{narrowing.reason}; the model's rows: {summary(list(others))}",
    )


def _cell_rows(grids: Mapping[tuple[str, str], Any]) -> list[dict[str, Any]]:
    out = []
    for (name, form), g in grids.items():
        for i, m in enumerate(g.batch_sizes):
            for j, rate in enumerate(g.rates):
                acc = g.accuracy[i, j]
                out.append(
                    {
                        "workload": name,
                        "loss_form": form,
                        "batch_size": m,
                        "rate": rate,
                        "base_learning_rate": float(g.base_rates[i, j]),
                        "mean_test_accuracy": float(_quiet(np.nanmean, acc)) if np.isfinite(acc).any()
                        else None,
                        "seed_accuracies": ";".join("diverged" if np.isnan(a) else f"{a:.4f}" for a in acc),
                        "n_diverged": int(g.diverged[i, j].sum()),
                    }
                )
    return out


def _heatmap(out: Any, grid: Any) -> Figure:
    from batchscale.report.plots import plot_heatmap

    finite = np.isfinite(grid.accuracy)  # (B, R, S)
    count = finite.sum(axis=2)
    total = np.where(finite, grid.accuracy, 0.0).sum(axis=2)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)  # (B, R): mean over non-diverged seeds
    majority = grid.diverged.sum(axis=2) > grid.diverged.shape[2] / 2
    stem = f"heatmap_{grid.workload}_{grid.loss_form}"
    xlabel = (
        "base learning rate eta/m (sum form)" if grid.loss_form == "sum" else "learning rate eta (mean form)"
    )
    plot_heatmap(
        out / f"{stem}.png",
        grid.rates,
        grid.batch_sizes,
        mean,
        diverged=majority,
        xlabel=xlabel,
        ylabel="batch size m",
        title=f"{grid.workload}: test accuracy after {grid.epochs:g} epochs",
        value_label="test accuracy (mean over seeds)",
    )
    return Figure(
        f"Test accuracy heatmap: {grid.workload}, {grid.loss_form} form",
        f"{stem}.png",
        ("grid.csv",),
        f"Mean test accuracy over {len(grid.seeds)} seeds after {grid.epochs:g} epochs "
        "per cell; hatched with x: most seeds diverged. Ours, not the paper's.",
    )


def _best_figure(out: Any, grids: Mapping[tuple[str, str], Any], workloads: Sequence[str]) -> Figure:
    from batchscale.report.plots import _pyplot
    from batchscale.verify.lr_grid import best_accuracy

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for k, name in enumerate(workloads):
        for form, style in (("sum", "o-"), ("mean", "s--")):
            g = grids[name, form]
            best = best_accuracy(g.accuracy)  # (B, S)
            mean = _quiet(np.nanmean, best, axis=1)
            ax.errorbar(
                g.batch_sizes,
                1 - mean,
                # error = 1 - accuracy: the best seed is the bar's lower end
                yerr=[_quiet(np.nanmax, best, axis=1) - mean, mean - _quiet(np.nanmin, best, axis=1)],
                fmt=style,
                color=f"C{k}",
                capsize=3,
                label=f"{name}, {form} form",
            )
    ax.axvspan(2, 32, color="0.85", alpha=0.5, label="m = 2..32 (the paper's best range)")
    save_log_log(
        fig,
        ax,
        out / "best_error_vs_batch.png",
        "batch size m",
        "test error at the best rate (mean over seeds)",
        "Best test error per batch size",
    )
    return Figure(
        "Best test error vs batch size",
        "best_error_vs_batch.png",
        ("grid.csv",),
        "Per batch size, 1 - the best test accuracy over the grid's rates (mean over seeds; bars: "
        "the seeds' range). Shaded: the range the paper reports as best (their statement, not our "
        "data).",
    )


def _range_figure(out: Any, grids: Mapping[tuple[str, str], Any], workloads: Sequence[str]) -> Figure:
    from batchscale.report.plots import _pyplot
    from batchscale.verify.lr_grid import good_width

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for k, name in enumerate(workloads):
        g = grids[name, "sum"]
        width, edge = good_width(g.accuracy, g.rates), log2_edges(g)
        for ax, values in ((left, width), (right, edge)):
            mean = _quiet(np.nanmean, np.where(np.isfinite(values), values, np.nan), axis=1)
            ax.plot(g.batch_sizes, mean, "o-", color=f"C{k}", label=name)
    for ax, label in (
        (left, "log2 width of the good base-rate range"),
        (right, "log2 largest stable base rate (grid)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size m")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    left.set_title("Rates within 2 accuracy points of the best")
    right.set_title("Stable base rates (sum form)")
    fig.savefig(out / "base_rate_range_vs_batch.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Figure(
        "Range of base learning rates vs batch size",
        "base_rate_range_vs_batch.png",
        ("grid.csv",),
        "Mean over seeds. Left: the width (in factors of 2) of the base rates within 2 accuracy "
        "points of the seed's best at that m. Right: the largest base rate below the first divergent "
        "one (seeds where every or no rate diverged are left out).",
    )


def _stability_figure(out: Any, srows: Sequence[Any]) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    net = [r for r in srows if r.quantity == "max_stable_lr_network"]
    m = np.array([r.config["batch_size"] for r in net], dtype=float)
    pred = np.array([r.predicted for r in net])
    meas = np.array([r.measured for r in net])
    low = np.array([r.ci_low if r.ci_low is not None else np.nan for r in net])
    high = np.array([r.ci_high if r.ci_high is not None else np.nan for r in net])
    cfg = net[0].config
    if cfg.get("per_seed") and cfg.get("n_train"):  # the model's curve between the measured batch sizes
        from batchscale.theory.stability import curvature_noise_max_stable_step

        lam = float(np.mean([p["mean_vHv"] for p in cfg["per_seed"]]))
        spread = float(np.mean([p["spread_S2"] for p in cfg["per_seed"]]))
        dense = np.unique(np.geomspace(m.min(), m.max(), 60).round())
        curve = [curvature_noise_max_stable_step(lam, spread, b, int(cfg["n_train"])) / b for b in dense]
        ax.plot(dense, curve, "-", color="C0", label="local quadratic model eta_max(m)/m")
    else:
        ax.plot(m, pred / m, "-", color="C0", label="local quadratic model eta_max(m)/m")
    ax.errorbar(
        m,
        meas / m,
        yerr=[(meas - low) / m, (high - meas) / m],
        fmt="s",
        color="C3",
        capsize=3,
        label="divergence boundary / m (measured)",
    )
    save_log_log(
        fig,
        ax,
        out / "stable_base_rate_vs_batch.png",
        "batch size m",
        "largest stable base rate eta/m",
        f"{net[0].workload}: largest stable base learning rate",
    )
    return Figure(
        "Largest stable base learning rate vs batch size",
        "stable_base_rate_vs_batch.png",
        ("stability_rows.json",),
        "Squares: the divergence boundary of mean-form SGD by bisection "
        "(95% interval), divided by m; line: the local quadratic model with the measured sharpness and "
        "curvature noise (batchscale.verify `stability`).",
    )


def _best_table(grids: Mapping[tuple[str, str], Any], name: str) -> str:
    from batchscale.verify.lr_grid import best_accuracy, best_rate_index

    body = []
    for form in FORMS:
        g = grids[name, form]
        best = best_accuracy(g.accuracy)
        idx = best_rate_index(g.accuracy)
        for i, m in enumerate(g.batch_sizes):
            body.append(
                (
                    form,
                    m,
                    g.rates[int(idx[i])],
                    float(_quiet(np.nanmean, best[i])),
                    float(_quiet(np.nanmin, best[i])),
                    float(_quiet(np.nanmax, best[i])),
                )
            )
    return markdown_table(
        ("form", "m", "best rate (seed mean)", "best accuracy (mean over seeds)", "min", "max"), body
    )


def _stability_table(srows: Sequence[Any]) -> str:
    return markdown_table(
        ("quantity", "m", "predicted", "measured", "95% interval", "verdict"),
        [
            (
                r.quantity,
                r.config.get("batch_size", "-"),
                r.predicted,
                r.measured,
                "-" if r.ci_low is None else f"[{r.ci_low:.4g}, {r.ci_high:.4g}]",
                r.verdict,
            )
            for r in srows
        ],
    )


def _method(quick: bool, workloads: Sequence[str], settings: Mapping[str, Any], seeds: Sequence[int]) -> str:
    grids = "; ".join(
        f"{form} form: m = {', '.join(map(str, s.batch_sizes))}, rates 2^{round(math.log2(s.rates[0]))}.."
        f"2^{round(math.log2(s.rates[-1]))} ({len(s.rates)} values), {s.epochs:g} epochs"
        for form, s in settings.items()
    )
    options = {n: QUICK_OPTIONS.get(n, {}) if quick else {} for n in workloads}
    which = "--quick" if quick else "full"
    names = ", ".join(f"`{n}` {options[n]}" for n in workloads)
    return f"""Workloads {names}; plain SGD without momentum, weight
decay or schedules, batches reshuffled every epoch; seeds {list(seeds)}. Grids ({which}): {grids}. A
cell's accuracy is the median of its last 3 evaluations on the test set; a seed that diverged
(non-finite training loss, or test loss above 10x its start) has none. The sum form's rate is the base
learning rate eta/m of the paper (its update equals mean-form SGD at eta = m x base rate); the mean
form's is eta. Best batch size: per seed the best accuracy over rates at each m; the m with the highest
seed mean, its interval from 2000 seed resamples (verify `sharpness`, declared band [2, 32] before any
run). Range: per seed, the number of grid rates within 2 accuracy points of that seed's best at m, times
the grid's log2 spacing; its least-squares slope on log2 m per seed, with a Student-t interval
(narrowing: the interval below 0). The grid's largest stable base rate is coarse (a factor of 2 or 4);
the bisected boundary of verify `stability` resolves it to 19% (quick) or 9% (full). The paper trains
CIFAR-10/100 and ImageNet networks with batch normalization for many epochs; our CPU-scale digits
networks are far smaller and easier, so agreement or disagreement here is evidence about these workloads
only. The paper's statements are paraphrased from its abstract and Sec. 4 and its figures' numbers are
not quoted."""
