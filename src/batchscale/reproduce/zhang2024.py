r"""``zhang2024``: Zhang et al. 2024, "How Does Critical Batch Size Scale in Pre-training?" (arXiv
2410.21676), recomputed from the authors' released steps-to-goal table (package data, see
``batchscale/data/SOURCE.md``).

Per model: fit :math:`S(B) = S_{min}(1 + B_{crit}/B)` and the critical batch under three definitions
(:func:`batchscale.theory.regimes.analyze_steps_curve`; one run per point, so the interval comes from a
bootstrap over the fit's residuals). Across models: the power law :math:`B^*(N) = a N^{\alpha}`, fitted by
least squares on :math:`(\log N, \log B^*)` with a t interval on :math:`\alpha` (:func:`power_law_fit`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from batchscale.errors import require
from batchscale.reproduce.report import (
    Figure,
    Options,
    Reproduction,
    VerdictRow,
    save_log_log,
    sign_verdict,
    write_csv,
    write_json,
)

PAPER = "zhang2024"
CITATION = "Zhang et al. 2024, arXiv 2410.21676"
DATA_FILE = "zhang2024_steps_to_goal.csv"
DEFINITIONS = ("zhang2024", "mccandlish", "examples_overhead")
CRITICAL_FRACTION = 0.2  # the paper's 20% overhead over linear scaling (see SOURCES)
N_BOOTSTRAP = {True: 300, False: 2000}
LEVEL = 0.95

# What the paper says, and where we read it (only what we could source; see docs/reproduce.md).
ABSTRACT = "arXiv 2410.21676, abstract (arxiv.org/html/2410.21676v4)"
SUMMARY = "empirical-findings section, as summarized at chatpaper.com/paper/113082 (not the paper's own text)"
STATEMENTS = {
    "grows": ("In the Chinchilla setting (model and data scaled together) the critical batch size increases "
              "with scale", SUMMARY),
    "data_not_model": ("CBS scales primarily with data size rather than model size", ABSTRACT),
    "definition": ("CBS: the batch size at which steps to the goal exceed ideal linear scaling by 20%",
                   SUMMARY),
    "law": ("the fitted scaling law of CBS in model size (its prefactor and exponent)", "could not source"),
}


@dataclass(frozen=True)
class StepsTable:
    """The released table: per model name, its size (millions of parameters), goal loss and curve."""

    models: tuple[str, ...]
    params_millions: tuple[float, ...]
    goal_loss: tuple[float, ...]
    batch_sizes: tuple[tuple[int, ...], ...]
    steps: tuple[tuple[float, ...], ...]


def parse_table(text: str) -> StepsTable:
    """Parse a CSV with columns model, params_millions, goal_loss, batch_size, steps (rows grouped by model,
    in any order)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    need = {"model", "params_millions", "goal_loss", "batch_size", "steps"}
    require(rows and need <= set(rows[0]), f"the table needs columns {', '.join(sorted(need))}")
    grouped: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        grouped.setdefault(r["model"], []).append(r)
    order = sorted(grouped, key=lambda m: float(grouped[m][0]["params_millions"]))
    return StepsTable(
        models=tuple(order),
        params_millions=tuple(float(grouped[m][0]["params_millions"]) for m in order),
        goal_loss=tuple(float(grouped[m][0]["goal_loss"]) for m in order),
        batch_sizes=tuple(tuple(int(r["batch_size"]) for r in grouped[m]) for m in order),
        steps=tuple(tuple(float(r["steps"]) for r in grouped[m]) for m in order),
    )


def load_table() -> StepsTable:
    """The authors' table shipped as package data."""
    return parse_table(resources.files("batchscale.data").joinpath(DATA_FILE).read_text())


@dataclass(frozen=True)
class PowerLaw:
    r""":math:`y = a x^{\alpha}` fitted by least squares on logs; ``low``/``high`` the t interval on alpha."""

    exponent: float
    low: float
    high: float
    prefactor: float
    n: int

    def predict(self, x: Any) -> np.ndarray:
        return self.prefactor * np.asarray(x, dtype=float) ** self.exponent


def power_law_fit(x: Sequence[float], y: Sequence[float], level: float = LEVEL) -> PowerLaw:
    r"""Least squares :math:`\log y = \log a + \alpha \log x`; interval :math:`\hat\alpha \pm
    t_{n-2}\,\mathrm{se}(\hat\alpha)`, :math:`\mathrm{se}^2 = \frac{\sum r_i^2/(n-2)}{\sum (\log x_i -
    \overline{\log x})^2}` (needs n >= 3 points with x, y > 0)."""
    from scipy.stats import t as student_t

    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))  # (n,), (n,)
    n = lx.size
    require(n >= 3, f"a power law with an interval needs >= 3 points, got {n}")
    sxx = float(np.sum((lx - lx.mean()) ** 2))
    require(sxx > 0, "all x are equal: no power law")
    alpha = float(np.sum((lx - lx.mean()) * (ly - ly.mean())) / sxx)
    intercept = float(ly.mean() - alpha * lx.mean())
    resid = ly - (intercept + alpha * lx)
    se = math.sqrt(float(np.sum(resid**2)) / (n - 2) / sxx)
    half = float(student_t.ppf(0.5 + level / 2, n - 2)) * se
    return PowerLaw(alpha, alpha - half, alpha + half, math.exp(intercept), n)


def analyze(table: StepsTable, n_bootstrap: int, seed: int = 0) -> list[Any]:
    """:func:`batchscale.theory.regimes.analyze_steps_curve` per model (single run: residual bootstrap)."""
    from batchscale.theory.regimes import analyze_steps_curve

    return [
        analyze_steps_curve(b, list(s), critical_fraction=CRITICAL_FRACTION, n_bootstrap=n_bootstrap,
                            seed=seed)
        for b, s in zip(table.batch_sizes, table.steps, strict=True)
    ]


def critical_laws(table: StepsTable, analyses: Sequence[Any]) -> dict[str, PowerLaw | None]:
    """Per definition: the power law of critical batch vs model size over the models where it has a value."""
    laws: dict[str, PowerLaw | None] = {}
    for name in DEFINITIONS:
        pts = [(n, a.critical[name].value) for n, a in zip(table.params_millions, analyses, strict=True)
               if a.critical[name].value is not None and a.critical[name].value > 0]
        laws[name] = power_law_fit(*zip(*pts, strict=True)) if len(pts) >= 3 else None
    return laws


def verdict_rows(laws: Mapping[str, PowerLaw | None]) -> list[VerdictRow]:
    """The verdict table from the fitted laws (the paper's definition decides; the others are shown)."""
    rows = []
    text, source = STATEMENTS["grows"]
    for name in DEFINITIONS:
        law = laws[name]
        what = f"the exponent alpha of B*_{name} ~ N^alpha"
        if law is None:
            verdict, reason = "inconclusive", f"fewer than 3 models with a critical batch under {name}"
        else:
            verdict, reason = sign_verdict(law.low, law.high, what)
        if name != "zhang2024":
            reason = f"{reason} (robustness: not the paper's definition)"
        rows.append(VerdictRow(PAPER, text, source, f"alpha, critical batch = {name}",
                               None if law is None else law.exponent, None if law is None else law.low,
                               None if law is None else law.high, verdict, reason))
    text, source = STATEMENTS["data_not_model"]
    law = laws["zhang2024"]
    rows.append(VerdictRow(
        PAPER, text, source, "alpha, critical batch = zhang2024", None if law is None else law.exponent,
        None if law is None else law.low, None if law is None else law.high, "not testable",
        "in this table data grow with model size, so the exponent in N mixes both effects; separating them "
        "needs the paper's fixed-model / fixed-data sweeps, which the released table does not hold"))
    text, source = STATEMENTS["law"]
    rows.append(VerdictRow(
        PAPER, text, source, "alpha, critical batch = zhang2024", None if law is None else law.exponent,
        None if law is None else law.low, None if law is None else law.high, "not testable",
        "we could not source the paper's fitted coefficients, so there is nothing to compare our law with"))
    return rows


def reproduce(options: Options) -> Reproduction:
    """Fit every model's curve, the power laws, the verdicts; write the figures and their data."""
    from batchscale.verify.registry import package_versions

    unused = [flag for flag, v in (("--seeds", options.seeds), ("--db", options.db),
                                   ("--workload", options.workload)) if v is not None]
    if unused:
        options.say(f"zhang2024 uses the authors' data only: {', '.join(unused)} ignored")
    table = load_table()
    n_boot = N_BOOTSTRAP[options.quick]
    options.say(f"zhang2024: {len(table.models)} models from the authors' table, {n_boot} resamples")
    analyses = analyze(table, n_boot, options.seed)
    laws = critical_laws(table, analyses)
    rows = verdict_rows(laws)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    per_model = []
    for m, n, loss, a in zip(table.models, table.params_millions, table.goal_loss, analyses, strict=True):
        entry = {"model": m, "params_millions": n, "goal_loss": loss,
                 "fit_s_min": a.s_min.value, "fit_rms_log_residual": a.fit.rms_log_residual}
        for name in DEFINITIONS:
            e = a.critical[name]
            entry.update({f"B_{name}": e.value, f"B_{name}_low": e.low, f"B_{name}_high": e.high})
        per_model.append(entry)
    figures = (_steps_figure(out, table, analyses), _law_figure(out, table, analyses, laws))
    write_csv(out / "critical_batch_per_model.csv", per_model)
    law_rows = [{"definition": k, "exponent": v.exponent, "low": v.low, "high": v.high,
                 "prefactor_per_million": v.prefactor, "n_models": v.n} if v else {"definition": k}
                for k, v in laws.items()]
    write_json(out / "power_laws.json", law_rows)
    sections = (
        ("Per model (ours, from the authors' steps)", _per_model_markdown(per_model)),
        ("Power law of critical batch vs model size (ours)", _laws_markdown(laws)),
        ("Method and sources", _method_markdown()),
    )
    config = {"paper": PAPER, "data": f"batchscale/data/{DATA_FILE}", "critical_fraction": CRITICAL_FRACTION,
              "n_bootstrap": n_boot, "bootstrap_seed": options.seed, "interval_level": LEVEL,
              "quick": options.quick, "versions": package_versions()}
    return Reproduction(PAPER, CITATION, tuple(rows), figures, sections, config)


def _per_model_markdown(per_model: list[dict[str, Any]]) -> str:
    from batchscale.reproduce.report import markdown_table

    def est(e: dict[str, Any], name: str) -> str:
        v, lo, hi = e[f"B_{name}"], e[f"B_{name}_low"], e[f"B_{name}_high"]
        if v is None:
            return "-"
        return f"{v:.4g} [{'-' if lo is None else f'{lo:.4g}'}, {'open' if hi is None else f'{hi:.4g}'}]"

    cols = ("model", "N (M)", "goal loss", "S_min", "rms log resid.", *(f"B* {n}" for n in DEFINITIONS))
    body = [(e["model"], e["params_millions"], e["goal_loss"], e["fit_s_min"], e["fit_rms_log_residual"],
             *(est(e, n) for n in DEFINITIONS)) for e in per_model]
    return (markdown_table(cols, body) + "\n\nCritical batches are in sequences of 512 tokens, with 95% "
            "residual-bootstrap intervals ('open': the interval's end runs beyond the measured batch range).")


def _laws_markdown(laws: Mapping[str, PowerLaw | None]) -> str:
    from batchscale.reproduce.report import markdown_table

    body = [(k, "-", "-", "-", "-") if v is None else
            (k, f"{v.exponent:.3f}", f"[{v.low:.3f}, {v.high:.3f}]", f"{v.prefactor:.4g}", v.n)
            for k, v in laws.items()]
    return (markdown_table(("definition", "alpha", "95% interval", "a (N in millions)", "models"), body)
            + "\n\nB*(N) = a N^alpha, least squares on logs, t interval with n - 2 degrees of freedom (it "
            "reflects the scatter of the points about the line, not each point's own bootstrap interval).")


def _method_markdown() -> str:
    from batchscale.theory.regimes import CRITICAL_DEFINITIONS

    defs = "\n".join(f"- `{k}`: {v}" for k, v in CRITICAL_DEFINITIONS.items())
    return f"""Data: the authors' table of the fewest steps to each model's goal loss at nine global batch
sizes (package data `batchscale/data/{DATA_FILE}`, source in `batchscale/data/SOURCE.md`).
Nothing here was trained by us. Each curve is fitted with S(B) = S_min (1 + B_crit / B); with one run per
point the intervals come from a bootstrap over the fit's residuals. Critical-batch definitions
(f = {CRITICAL_FRACTION}):

{defs}

What we could source of the paper's statements: the abstract (arXiv 2410.21676: "CBS scales primarily with
data size rather than model size"); the definition of CBS as a 20% overhead over linear scaling and the
Chinchilla-setting increase of CBS with scale only through a third-party summary (chatpaper.com/paper/113082).
We could not source the paper's fitted scaling-law coefficients, so no row compares numbers with them."""


def _steps_figure(out, table: StepsTable, analyses: Sequence[Any]) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    points, curves = [], []
    for i, (m, a) in enumerate(zip(table.models, analyses, strict=True)):
        colour = f"C{i}"
        b = np.asarray(a.batch_sizes, dtype=float)
        s = np.asarray(a.steps, dtype=float)
        ax.loglog(b, s, "o", color=colour, label=f"{m} (authors' steps)")
        grid = np.geomspace(b.min(), b.max(), 100)
        fit = a.fit.predict_steps(grid)
        ax.loglog(grid, fit, "-", color=colour, lw=1)
        crit = a.critical["zhang2024"].value
        if crit is not None:
            ax.plot([crit], [float(a.fit.predict_steps(crit))], "v", color=colour, ms=10, mec="k")
        points += [{"model": m, "batch_size": int(x), "steps": float(y)} for x, y in zip(b, s, strict=True)]
        curves += [{"model": m, "batch_size": float(x), "fitted_steps": float(y)}
                   for x, y in zip(grid, fit, strict=True)]
    save_log_log(fig, ax, out / "steps_vs_batch.png", "global batch size (sequences of 512 tokens)",
                 "steps to the goal loss",
                 "Steps vs batch (authors' data); lines: our fits; triangles: B* (zhang2024 rule)")
    write_csv(out / "steps_vs_batch_points.csv", points)
    write_csv(out / "steps_vs_batch_fits.csv", curves)
    return Figure("Steps to the goal vs batch size, per model", "steps_vs_batch.png",
                  ("steps_vs_batch_points.csv", "steps_vs_batch_fits.csv"),
                  "Points: the authors' measured steps (log-log). Lines: S(B) = S_min(1 + B_crit/B) fitted "
                  "here. "
                  "Triangles: the critical batch under the paper's 20% rule, computed here.")


def _law_figure(
    out, table: StepsTable, analyses: Sequence[Any], laws: Mapping[str, PowerLaw | None]
) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    n = np.asarray(table.params_millions, dtype=float)
    rows = []
    for i, name in enumerate(DEFINITIONS):
        colour = f"C{i}"
        est = [a.critical[name] for a in analyses]
        ok = [e.value is not None for e in est]
        x = n[ok]
        y = np.array([e.value for e in est if e.value is not None])
        lo = np.array([e.low if e.low is not None else e.value for e in est if e.value is not None])
        hi = np.array([e.high if e.high is not None else e.value for e in est if e.value is not None])
        law = laws[name]
        label = name if law is None else f"{name}: alpha = {law.exponent:.2f} [{law.low:.2f}, {law.high:.2f}]"
        ax.errorbar(x * (1 + 0.03 * i), y, yerr=[y - lo, hi - y], fmt="o", color=colour, capsize=3,
                    label=label)
        if law is not None:
            grid = np.geomspace(n.min(), n.max(), 50)
            ax.loglog(grid, law.predict(grid), "--", color=colour)
        known = [e for e in est if e.value is not None]
        rows += [{"definition": name, "params_millions": float(a), "critical_batch": float(b),
                  "low": e.low, "high": e.high} for a, b, e in zip(x, y, known, strict=True)]
    save_log_log(fig, ax, out / "critical_batch_vs_model_size.png", "model size N (millions of parameters)",
                 "critical batch size (sequences)",
                 "Critical batch vs model size (ours, from the authors' steps)")
    write_csv(out / "critical_batch_vs_model_size.csv", rows)
    return Figure("Critical batch vs model size", "critical_batch_vs_model_size.png",
                  ("critical_batch_vs_model_size.csv", "power_laws.json"),
                  "Points: critical batch per model under each definition with 95% bootstrap intervals "
                  "(slightly offset in N for legibility). Dashed: the fitted power law B* = a N^alpha.")
