r"""``shallue2018``: Shallue et al. 2018, "Measuring the Effects of Data Parallelism on Neural Network
Training" (arXiv 1811.03600), rerun at CPU scale, or recomputed from the authors' released data.

**Trained** (default): steps to a test-error target vs batch size with the learning rate re-tuned per
batch size and seed (the seeded ``batchscale sweep steps`` search, every trial through the store ``--db``
so a rerun resumes: :func:`batchscale.reproduce.trials.sweep_stored`), on an MLP
and a CNN (``digits-mlp``, ``digits-cnn``) x plain SGD, heavy-ball momentum and Nesterov momentum (0.9),
>= 3 seeds. Each curve is analysed by :func:`batchscale.theory.regimes.analyze_steps_curve` (fit of
:math:`S(B) = S_{min}(1 + B_{crit}/B)`, seed bootstrap, regime labels with intervals). Then the
dataset-size effect: the same sweep on 25 / 50 / 100 % of the training set (workload option
``train_fraction``, part of every trial id).

**Archive** (``--data DIR``): the paper's Figure 1 from the released measurements
(:mod:`batchscale.reproduce.batch_science`), one curve per workload, no training.

Statements are checked by the functions below (pure, tested on planted curves):
:func:`three_regimes_verdict`, :func:`critical_ratio_row` (momentum's critical batch over SGD's,
:func:`batchscale.verify.regimes.separation`), :func:`small_batch_row`, :func:`lr_rule_verdict`,
:func:`size_row`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchscale.reproduce.report import (
    Figure,
    Options,
    Reproduction,
    VerdictRow,
    markdown_table,
    write_csv,
    write_json,
)

PAPER = "shallue2018"
CITATION = "Shallue et al. 2018, arXiv 1811.03600"
OPTIMIZERS = ("sgd", "momentum", "nesterov")
MOMENTUM = 0.9
DEFINITION = "mccandlish"  # the critical batch compared: B_crit = E_min / S_min of the fitted curve
PERFECT, DIMINISHING, MAXIMAL = "perfect_scaling", "diminishing_returns", "maximal_parallelism"
OPEN = ("undecided", "unreachable")
# Tolerances, declared before any run:
MATCH_FACTOR = 1.5  # "matches plain SGD at small batch sizes": steps ratio within a factor 1.5 of 1
RULE_BAND = 0.25  # a learning-rate rule holds on a half of the grid when the slope interval is within +-0.25
SIZE_FACTOR = 2.0  # "a small effect": the critical batch changes by less than 2x while the data change 4x
LEVEL = 0.95
N_BOOTSTRAP = 1000
# a CNN 2.5x cheaper per step than digits-cnn's default (16, 32) channels at batch 512 (CPU time measured)
WORKLOAD_OPTIONS: dict[str, dict[str, Any]] = {"digits-cnn": {"channels": (8, 16)}}


@dataclass(frozen=True)
class Settings:
    """The grid of one run (``--quick`` or full)."""

    workloads: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    target: float
    max_steps: int
    n_learning_rates: int
    max_extensions: int
    refine_levels: int
    seeds: int
    size_workload: str
    size_optimizers: tuple[str, ...]
    size_fractions: tuple[float, ...]
    size_batch_sizes: tuple[int, ...]
    size_target: float

    def sweep_settings(self) -> dict[str, Any]:
        return {"max_steps": self.max_steps, "n_learning_rates": self.n_learning_rates,
                "max_extensions": self.max_extensions, "refine_levels": self.refine_levels,
                "momentum": MOMENTUM, "eval_subset": None}


FULL = Settings(workloads=("digits-mlp", "digits-cnn"), batch_sizes=(4, 8, 16, 32, 64, 128, 256, 512, 1024),
                target=0.05, max_steps=3000, n_learning_rates=5, max_extensions=2, refine_levels=0, seeds=3,
                size_workload="digits-mlp", size_optimizers=("sgd",), size_fractions=(0.25, 0.5, 1.0),
                size_batch_sizes=(4, 8, 16, 32, 64, 128, 256), size_target=0.08)
QUICK = Settings(workloads=("digits-mlp", "digits-cnn"), batch_sizes=(8, 32, 128, 512), target=0.1,
                 max_steps=600, n_learning_rates=4, max_extensions=1, refine_levels=0, seeds=3,
                 size_workload="digits-mlp", size_optimizers=("sgd",), size_fractions=(0.25, 0.5, 1.0),
                 size_batch_sizes=(8, 32, 128), size_target=0.12)

SOURCES = {
    "regimes": "Sec. 4.1 and Figure 1 (paraphrased)",
    "momentum": "Sec. 4.4 (paraphrased; the section on SGD, momentum and Nesterov momentum)",
    "lr": "Sec. 4.7 (paraphrased; the section on the best learning rate and momentum vs batch size)",
    "size": "Sec. 4.5 (paraphrased; MNIST and ImageNet subsets, the archive's mnist_subsets/ and "
            "imagenet_subsets/)",
}
STATEMENTS = {
    "regimes": "steps to result vs batch size shows three regimes: perfect scaling, then diminishing "
               "returns, then maximal data parallelism",
    "momentum": "momentum extends perfect scaling to larger batch sizes than plain SGD",
    "match": "... but momentum matches plain SGD at small batch sizes",
    "lr": "the best learning rate does not follow linear or square-root scaling across all batch sizes",
    "size": "training-set size has only a small effect on the batch-size scaling curve",
}


def word(verdict: str) -> str:
    """batchscale.verify's pass / fail / inconclusive in the report's words."""
    return {"pass": "reproduced", "fail": "not reproduced"}.get(verdict, "inconclusive")


def three_regimes_verdict(labels: Sequence[str], expect: str = "three") -> tuple[str, str]:
    """The regime labels of a fitted curve (ascending batch) against Shallue et al.'s shape.

    ``three`` (the claim): perfect scaling, then diminishing returns, then maximal parallelism: reproduced
    when all three appear in that order; partly when perfect scaling is followed by diminishing returns or
    maximal parallelism but not both (the grid did not reach or start in a regime); not reproduced when
    every label is decided and one regime covers the whole range; inconclusive otherwise.
    ``linear`` (a planted wrong statement: perfect scaling at every batch size): reproduced when every
    label is decided and perfect, not reproduced when a decided label is another regime.
    """
    shown = ", ".join(labels)
    decided = [x for x in labels if x not in OPEN]
    if expect == "linear":
        if any(x != PERFECT for x in decided):
            return "not reproduced", f"labels {shown}: not perfect scaling throughout"
        if decided and len(decided) == len(labels):
            return "reproduced", f"labels {shown}"
        return "inconclusive", f"labels {shown}: some undecided"
    first = next((i for i, x in enumerate(labels) if x == PERFECT), None)
    later = [] if first is None else list(labels[first + 1:])
    if DIMINISHING in later and MAXIMAL in later[later.index(DIMINISHING) + 1:]:
        return "reproduced", f"labels {shown}: all three regimes in order"
    if DIMINISHING in later or MAXIMAL in later:
        missing = "maximal parallelism" if DIMINISHING in later else "diminishing returns"
        return "partly", f"labels {shown}: the curve bends, but {missing} is not decided on this grid"
    if len(decided) == len(labels) and len(set(decided)) == 1:
        return "not reproduced", f"labels {shown}: one regime over the whole range"
    return "inconclusive", f"labels {shown}: the bend is not decided"


def regimes_row(where: str, analysis: Any, expect: str = "three") -> VerdictRow:
    """The three-regimes statement for one curve; ours: its fitted critical batch with interval."""
    verdict, reason = three_regimes_verdict(analysis.regimes, expect)
    est = analysis.critical[DEFINITION]
    statement = STATEMENTS["regimes"] if expect == "three" else "planted: perfect scaling at every batch size"
    return VerdictRow(PAPER, statement, SOURCES["regimes"],
                      f"{where}: regime labels of the fitted S(B) (ours: B_crit = E_min/S_min)",
                      est.value, est.low, est.high, verdict, f"{reason}; B_crit {est.text()}")


def critical_ratio_row(where: str, name: str, mom: Any, sgd: Any, direction: str = "above") -> VerdictRow:
    """Momentum's (``name``) critical batch over SGD's from two :class:`CurveAnalysis`, judged by the
    separation of their intervals (:func:`batchscale.verify.regimes.separation`): reproduced when the
    ratio's interval lies above 1 (``direction`` ``below``: the planted opposite statement)."""
    from batchscale.verify.regimes import separation

    m, s = mom.critical[DEFINITION], sgd.critical[DEFINITION]
    ratio, (low, high), verdict = separation(m, s, direction)
    statement = STATEMENTS["momentum"] if direction == "above" else \
        f"planted: {name}'s critical batch is {direction} SGD's"
    return VerdictRow(PAPER, statement, SOURCES["momentum"],
                      f"{where}: B_crit({name}) / B_crit(sgd)",
                      None if not math.isfinite(ratio) else ratio, low, None if math.isinf(high) else high,
                      word(verdict.verdict), f"{verdict.reason}; {name} {m.text()}, sgd {s.text()}")


def median_ratio_interval(a: Sequence[float | None], b: Sequence[float | None], seed: int = 0,
                          n: int = N_BOOTSTRAP) -> tuple[float, float, float]:
    """median(a)/median(b) over the seeds that reached the target, with a percentile bootstrap interval at
    :data:`LEVEL`: the two sides as a two-point seed matrix resampled by
    :func:`batchscale.theory.regimes.seed_bootstrap_curves` (pooled log deviations, t-scaled; each side's
    own seeds resampled would make 2-seed intervals too narrow); nan when a side has none."""
    from batchscale.theory.regimes import padded_seed_matrix, seed_bootstrap_curves

    x = np.array([v for v in a if v is not None and math.isfinite(v)], dtype=float)
    y = np.array([v for v in b if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan, math.nan, math.nan
    matrix = padded_seed_matrix([x, y])  # (2, seeds)
    curves = seed_bootstrap_curves(matrix, n, np.random.default_rng(seed), LEVEL)  # (n, 2) log medians
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.exp(np.percentile(curves[:, 0] - curves[:, 1], [tail, 100 - tail]))
    return float(np.median(x) / np.median(y)), float(low), float(high)


def small_batch_row(where: str, name: str, mom: Any, sgd: Any, claimed: float = 1.0) -> VerdictRow:
    """Steps at the smallest batch size, momentum's over SGD's (``Curve`` objects of
    :mod:`batchscale.verify.steps_sweep`), against ``claimed`` (1: they match) within a factor
    :data:`MATCH_FACTOR` (:func:`batchscale.verify.rows.judge`)."""
    from batchscale.verify.rows import judge

    ratio, low, high = median_ratio_interval(mom.seed_steps[0], sgd.seed_steps[0])
    b = sgd.batch_sizes[0]
    statement = (STATEMENTS["match"] if claimed == 1.0 else
                 f"planted: momentum takes {claimed:g}x SGD's steps at small batch sizes")
    if not math.isfinite(ratio):
        return VerdictRow(PAPER, statement, SOURCES["momentum"], f"{where}: S_{name}/S_sgd at B={b}",
                          None, None, None, "inconclusive", "a curve missed the target at the smallest batch")
    v = judge(claimed, ratio, MATCH_FACTOR, "factor", ci=(low, high))
    return VerdictRow(PAPER, statement, SOURCES["momentum"],
                      f"{where}: S_{name}/S_sgd at B={b} (seed medians)",
                      ratio, low, high, word(v.verdict),
                      f"{v.reason} (prediction {claimed:g}, factor {MATCH_FACTOR:g}, seed bootstrap)")


def slope_interval(slopes: Sequence[float]) -> tuple[float, float, float]:
    """Mean of per-seed slopes and its 95% t interval (nan ends with fewer than 2 seeds)."""
    from scipy import stats

    from batchscale.verify.common import mean_and_stderr

    if not slopes:
        return math.nan, math.nan, math.nan
    mean, err = mean_and_stderr(list(slopes))
    if not math.isfinite(err):
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + LEVEL / 2, len(slopes) - 1)) * err
    return mean, mean - half, mean + half


def rule_holds(interval: tuple[float, float], rule: float) -> str:
    """``holds`` when the slope interval lies within ``rule`` +- :data:`RULE_BAND`, ``excluded`` when it
    misses ``rule``, else ``open``."""
    low, high = interval
    if not (math.isfinite(low) and math.isfinite(high)):
        return "open"
    if rule - RULE_BAND <= low and high <= rule + RULE_BAND:
        return "holds"
    return "excluded" if rule < low or rule > high else "open"


RULES = {"linear": 1.0, "square-root": 0.5}


def lr_rule_verdict(halves: Mapping[str, tuple[float, float]], claim: str = "neither") -> tuple[str, str]:
    """Whether the best rate's log-log slope follows one rule over the whole grid, from the slope's 95%
    interval on the small- and large-batch halves (``halves``).

    A rule holds over the range when it holds on both halves (:func:`rule_holds`) and fails when some
    half excludes it. ``neither`` (the claim): reproduced when both rules fail, not reproduced when one
    holds, else inconclusive. ``linear`` / ``square-root`` (planted wrong statements): reproduced when
    that rule holds, not reproduced when it fails.
    """
    status = {}
    for name, rule in RULES.items():
        each = [rule_holds(iv, rule) for iv in halves.values()]
        status[name] = "holds" if all(e == "holds" for e in each) else (
            "fails" if "excluded" in each else "open")
    text = "; ".join(f"{n}: {s}" for n, s in status.items())
    if claim == "neither":
        if all(s == "fails" for s in status.values()):
            return "reproduced", f"{text} (slope intervals exclude each rule on some half)"
        if any(s == "holds" for s in status.values()):
            return "not reproduced", f"{text} (a rule holds on both halves)"
        return "inconclusive", f"{text} (slope intervals too wide)"
    s = status[claim]
    return {"holds": "reproduced", "fails": "not reproduced"}.get(s, "inconclusive"), text


def lr_slopes(curve: Any) -> dict[str, Any]:
    """Per half of the grid (:func:`batchscale.verify.regimes.halves`) and over the whole grid: the mean
    per-seed log-log slope of the best learning rate vs B with its 95% t interval."""
    from batchscale.verify.regimes import halves, seed_slopes

    parts = {**halves(curve.batch_sizes), "whole": list(range(len(curve.batch_sizes)))}
    out = {}
    for name, idx in parts.items():
        slopes = seed_slopes(curve.batch_sizes, curve.seed_learning_rates, idx)
        out[name] = (*slope_interval(slopes), [curve.batch_sizes[i] for i in idx], slopes)
    return out


def lr_row(where: str, curve: Any, claim: str = "neither") -> VerdictRow:
    s = lr_slopes(curve)
    verdict, reason = lr_rule_verdict({h: (s[h][1], s[h][2]) for h in ("small", "large")}, claim)
    detail = "; ".join(f"{h} half B={s[h][3][0]}..{s[h][3][-1]}: {s[h][0]:.3g} [{s[h][1]:.3g}, {s[h][2]:.3g}]"
                       for h in ("small", "large"))
    mean, low, high = s["whole"][:3]
    statement = (STATEMENTS["lr"] if claim == "neither" else
                 f"planted: the best learning rate follows {claim} scaling at all batch sizes")
    return VerdictRow(PAPER, statement, SOURCES["lr"],
                      f"{where}: log-log slope of the best learning rate vs B (whole grid; per-seed mean, t "
                      "interval)", _finite(mean), _finite(low), _finite(high), verdict, f"{reason}; {detail}")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def size_row(fraction: float, part: Any, whole: Any, claimed: float = 1.0) -> VerdictRow:
    """B_crit on ``fraction`` of the training set over B_crit on all of it (two :class:`CurveAnalysis`),
    interval [part_low / whole_high, part_high / whole_low], against ``claimed`` (1: a small effect)
    within a factor :data:`SIZE_FACTOR`."""
    from batchscale.verify.rows import judge

    p, w = part.critical[DEFINITION], whole.critical[DEFINITION]
    statement = STATEMENTS["size"] if claimed == 1.0 else \
        f"planted: B_crit scales {claimed:g}x with the training set cut to {fraction:.0%}"
    quantity = f"B_crit({fraction:.0%} of the training set) / B_crit(100%)"
    if p.value is None or w.value is None:
        return VerdictRow(PAPER, statement, SOURCES["size"], quantity, None, None, None, "inconclusive",
                          f"a critical batch was not fitted: {fraction:.0%} {p.text()}, 100% {w.text()}")
    ratio = p.value / w.value
    low = 0.0 if p.low is None or w.high is None else p.low / w.high
    high = math.inf if p.high is None or w.low is None or w.low <= 0 else p.high / w.low
    v = judge(claimed, ratio, SIZE_FACTOR, "factor", ci=(low, high))
    return VerdictRow(PAPER, statement, SOURCES["size"], quantity, ratio, low, _finite(high), word(v.verdict),
                      f"{v.reason} (prediction {claimed:g}, factor {SIZE_FACTOR:g}); {fraction:.0%}: "
                      f"{p.text()}, 100%: {w.text()}")


# --------------------------------------------------------------------------------------------------- runs


def run_curves(workload: str, workload_options: Mapping[str, Any], batch_sizes: Sequence[int],
               optimizers: Sequence[str], target: float, settings: Settings, n_seeds: int, options: Options,
               tally: Any) -> dict[str, Any]:
    """One seeded steps sweep (the ``batchscale sweep steps`` search, in this process, every trial through
    the store: :func:`batchscale.reproduce.trials.sweep_stored`) and each optimizer's
    :class:`batchscale.verify.steps_sweep.Curve` (:func:`batchscale.verify.steps_sweep.curves_of`)."""
    from batchscale.empirical.sweep import StepsSweepConfig
    from batchscale.reproduce.trials import sweep_stored
    from batchscale.verify.steps_sweep import curves_of

    config = StepsSweepConfig(workload=workload, workload_options=tuple(dict(workload_options).items()),
                              batch_sizes=tuple(batch_sizes), optimizers=tuple(optimizers),
                              seeds=tuple(range(options.seed, options.seed + n_seeds)),
                              data_seed=options.seed, target=target, device="cpu",
                              **settings.sweep_settings())
    rows, _ = sweep_stored(options, config, tally)
    return curves_of(rows, tuple(optimizers), seed=options.seed)


def reproduce(options: Options) -> Reproduction:
    """The trained reproduction, or with ``options.data`` the paper's Figure 1 from its released data."""
    if options.data is not None:
        return reproduce_archive(options, Path(options.data))
    return reproduce_trained(options)


def chosen_workloads(options: Options, settings: Settings) -> tuple[str, ...]:
    """``--workload`` (one name or a comma list of built-in workloads), else the settings' two."""
    from batchscale.empirical.workloads import training_set_size
    from batchscale.errors import require

    if options.workload is None:
        return settings.workloads
    names = tuple(n.strip() for n in options.workload.split(",") if n.strip())
    require(bool(names), "--workload: give at least one workload name")
    for name in names:
        training_set_size(name, {})  # an unknown name is one Error line, before any training
    return names


def reproduce_trained(options: Options) -> Reproduction:
    from batchscale.reproduce.trials import Tally, prepare_store
    from batchscale.verify.registry import package_versions

    settings = QUICK if options.quick else FULL
    n_seeds = options.seeds or settings.seeds
    workloads = chosen_workloads(options, settings)
    store = prepare_store(options)
    tally = Tally(store)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, dict[str, Any]] = {}
    for w in workloads:
        options.say(f"shallue2018: {w}, {', '.join(OPTIMIZERS)}, batch {settings.batch_sizes[0]}.."
                    f"{settings.batch_sizes[-1]}, target error {settings.target:g}, {n_seeds} seeds "
                    f"({store})")
        curves[w] = run_curves(w, WORKLOAD_OPTIONS.get(w, {}), settings.batch_sizes, OPTIMIZERS,
                               settings.target, settings, n_seeds, options, tally)
    size_curves: dict[float, Any] = {}
    for f in settings.size_fractions:
        options.say(f"shallue2018: {settings.size_workload} on {f:.0%} of the training set, target error "
                    f"{settings.size_target:g}")
        wopts = {} if f == 1.0 else {"train_fraction": f}
        c = run_curves(settings.size_workload, wopts, settings.size_batch_sizes, settings.size_optimizers,
                       settings.size_target, settings, n_seeds, options, tally)
        size_curves[f] = c[settings.size_optimizers[0]]

    rows: list[VerdictRow] = []
    for w, cs in curves.items():
        rows += [regimes_row(f"{w}, {name}", c.analysis) for name, c in cs.items()]
    for w, cs in curves.items():
        rows += [critical_ratio_row(w, name, cs[name].analysis, cs["sgd"].analysis)
                 for name in OPTIMIZERS[1:]]
    for w, cs in curves.items():
        rows += [small_batch_row(w, name, cs[name], cs["sgd"]) for name in OPTIMIZERS[1:]]
    for w, cs in curves.items():
        rows += [lr_row(f"{w}, {name}", c) for name, c in cs.items()]
    whole = size_curves.get(1.0)
    if whole is not None:
        rows += [size_row(f, c.analysis, whole.analysis) for f, c in size_curves.items() if f != 1.0]

    data = curve_table(curves)
    write_csv(out / "steps_vs_batch.csv", data)
    size_data = [{**r, "train_fraction": f} for f, c in size_curves.items()
                 for r in curve_table({settings.size_workload: {c.optimizer: c}})]
    write_csv(out / "dataset_size.csv", size_data)
    write_json(out / "analyses.json", {w: {n: c.analysis.summary() for n, c in cs.items()}
                                       for w, cs in curves.items()})
    figures = (steps_figure(out, curves, settings.target), optimizers_figure(out, curves, settings.target),
               lr_figure(out, curves), size_figure(out, size_curves, settings))
    sections = (("Steps to the target per batch size (ours)", steps_section(data)),
                ("Method, settings and sources",
                 method_section(settings, n_seeds, workloads, tally.text(), options.quick)))
    cfg = {"paper": PAPER, "mode": "trained", "quick": options.quick, "workloads": list(workloads),
           "optimizers": list(OPTIMIZERS), "momentum": MOMENTUM,
           "seeds": list(range(options.seed, options.seed + n_seeds)),
           "settings": settings.__dict__, "trials": tally.as_dict(),
           "tolerances": {"match_factor": MATCH_FACTOR, "rule_band": RULE_BAND, "size_factor": SIZE_FACTOR},
           "versions": package_versions()}
    citation = CITATION + ("; `--quick` settings, reduced: see Method" if options.quick else "")
    return Reproduction(PAPER, citation, tuple(rows), figures, sections, cfg)


def curve_table(curves: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per workload, optimizer and batch size: steps (median and seeds' range), per-seed steps and
    best rates, regime and speed-up interval."""
    out = []
    for w, cs in curves.items():
        for name, c in cs.items():
            a = c.analysis
            for i, point in enumerate(a.rows()):
                rates = [r for r in c.seed_learning_rates[i] if r is not None]
                out.append({"workload": w, "optimizer": name, "batch_size": point["batch_size"],
                            "steps_median": point["steps"], "steps_min": point["steps_low"],
                            "steps_max": point["steps_high"],
                            "seed_steps": " ".join("-" if s is None else f"{s:g}" for s in c.seed_steps[i]),
                            "best_lr_median": float(np.median(rates)) if rates else None,
                            "best_lr_min": min(rates) if rates else None,
                            "best_lr_max": max(rates) if rates else None,
                            "seed_learning_rates": " ".join("-" if r is None else f"{r:.4g}"
                                                            for r in c.seed_learning_rates[i]),
                            "regime": point["regime"], "speedup": point["speedup"],
                            "speedup_low": point["speedup_low"], "speedup_high": point["speedup_high"],
                            "b_crit": a.b_crit.value, "b_crit_low": a.b_crit.low,
                            "b_crit_high": a.b_crit.high})
    return out


def steps_section(data: Sequence[Mapping[str, Any]]) -> str:
    return markdown_table(
        ("workload", "optimizer", "B", "steps (median)", "seeds' range", "best lr (median)", "regime"),
        [(r["workload"], r["optimizer"], r["batch_size"], r["steps_median"],
          "-" if r["steps_min"] is None else f"[{r['steps_min']:.4g}, {r['steps_max']:.4g}]",
          r["best_lr_median"], r["regime"]) for r in data])


def method_section(settings: Settings, n_seeds: int, workloads: Sequence[str], stored: str,
                   quick: bool) -> str:
    reduction = ""
    if quick:
        reduction = (f"**This is the `--quick` run**, reduced from the full settings: batch sizes "
                     f"{list(QUICK.batch_sizes)} instead of {list(FULL.batch_sizes)}, target error "
                     f"{QUICK.target:g} instead of {FULL.target:g}, at most {QUICK.max_steps} steps per "
                     f"trial instead of {FULL.max_steps}, {QUICK.n_learning_rates} rates per window with "
                     f"{QUICK.max_extensions} extension (full: {FULL.n_learning_rates} rates, "
                     f"{FULL.max_extensions} extensions), and the dataset-size curves at batch "
                     f"sizes {list(QUICK.size_batch_sizes)} to error {QUICK.size_target:g} (full: "
                     f"{list(FULL.size_batch_sizes)} to {FULL.size_target:g}). Its verdicts are weaker "
                     "evidence than the full run's.\n\n")
    names = ", ".join(f"`{w}`" + (f" (options {WORKLOAD_OPTIONS[w]})" if w in WORKLOAD_OPTIONS else "")
                      for w in workloads)
    return reduction + f"""Scale: CPU, the bundled 8x8 digits (1437 training, 360 test images) instead of the
paper's datasets; workloads {names}. Per batch size the learning rate is searched (the search of
`batchscale sweep steps`: a window of {settings.n_learning_rates} rates a factor 2 apart, extended
{settings.max_extensions}x at an edge, {settings.refine_levels} refinement level(s)) for the fewest steps to
test error <= {settings.target:g}, separately for each of {n_seeds} seeds (the point's steps are the median
over seeds); plain SGD, heavy-ball momentum and Nesterov momentum with momentum {MOMENTUM:g} fixed (the
paper also tuned the momentum); constant learning rate, at most {settings.max_steps} steps per trial. Every
trial goes to the results store ({stored}): rerunning the command reuses them, an interrupted run resumes.

Each curve is fitted by S(B) = S_min (1 + B_crit/B) (McCandlish et al. 2018, arXiv 1812.06162), with a
bootstrap over seeds ({N_BOOTSTRAP} resamples, 95% percentile intervals); a batch size's regime comes from
the fitted speed-up per doubling and its interval (perfect scaling: examples grow by at most 20% per
doubling; maximal parallelism: a doubling cuts steps by at most 10%; undecided when the interval spans two
regimes). Tolerances, declared before the run: momentum "matches" SGD at the smallest batch when the steps
ratio's interval lies within a factor {MATCH_FACTOR:g} of 1; a learning-rate rule (slope 1 linear, 0.5
square root) "holds" on a half of the grid when the slope's 95% t interval lies within +-{RULE_BAND:g} of
it; the dataset-size effect is "small" when the critical batch changes by less than a factor
{SIZE_FACTOR:g} while the training set shrinks 2-4x. Dataset size: `{settings.size_workload}` with the
workload option `train_fraction` in {list(settings.size_fractions)} (the first part of the shuffled,
stratified training set; the test set is unchanged), {', '.join(settings.size_optimizers)}, target error
{settings.size_target:g} (reachable on 25% of the data).

The paper's statements are paraphrased from our reading of arXiv 1811.03600 (section numbers of the JMLR
version as we read them, not re-checked against its text here; the archive's README confirms Sec. 4.5 for
the data-set subsets); none of the paper's own numbers is quoted as ours. The paper's Figure 1 from its
released data: `--data DIR` (docs/reproduce.md)."""


# ------------------------------------------------------------------------------------------------ figures

REGIME_COLOURS = {PERFECT: "#2ca02c", DIMINISHING: "#ff7f0e", MAXIMAL: "#d62728"}
OPT_COLOURS = {"sgd": "C0", "momentum": "C1", "nesterov": "C2"}


def shade_regimes(ax: Any, batch_sizes: Sequence[int], labels: Sequence[str]) -> None:
    """Shade each batch size's span (between geometric midpoints) by its regime label."""
    b = np.asarray(batch_sizes, dtype=float)
    edges = np.concatenate([[b[0] / math.sqrt(2)], np.sqrt(b[:-1] * b[1:]), [b[-1] * math.sqrt(2)]])
    for i, label in enumerate(labels):
        if label in REGIME_COLOURS:
            ax.axvspan(edges[i], edges[i + 1], color=REGIME_COLOURS[label], alpha=0.12, lw=0)


def errorbar_curve(ax: Any, analysis: Any, colour: str, label: str, fit: bool = True) -> None:
    b = np.asarray(analysis.batch_sizes, dtype=float)
    s = np.asarray(analysis.steps, dtype=float)
    ok = np.isfinite(s)
    if ok.any():
        lo, hi = np.asarray(analysis.steps_low)[ok], np.asarray(analysis.steps_high)[ok]
        ax.errorbar(b[ok], s[ok], yerr=[s[ok] - lo, hi - s[ok]], fmt="o", color=colour, capsize=3,
                    label=label)
    if fit and analysis.fit is not None:
        grid = np.geomspace(b.min(), b.max(), 100)
        ax.plot(grid, analysis.fit.predict_steps(grid), "-", color=colour, lw=1)


def regime_legend(ax: Any) -> None:
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    handles += [Patch(color=c, alpha=0.3) for c in REGIME_COLOURS.values()]
    labels += ["perfect scaling", "diminishing returns", "maximal parallelism"]
    ax.legend(handles, labels, fontsize=7)


def finish(ax: Any, xlabel: str, ylabel: str, title: str, legend: bool = True) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.1g}"[0] in "25" else ""))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if legend:
        ax.legend(fontsize=7)


def save(fig: Any, path: Path) -> None:
    from batchscale.report.plots import _pyplot

    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def steps_figure(out: Path, curves: Mapping[str, Mapping[str, Any]], target: float) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    rows, cols = len(curves), len(OPTIMIZERS)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.3 * rows), squeeze=False)
    for i, (w, cs) in enumerate(curves.items()):
        for j, name in enumerate(OPTIMIZERS):
            ax, a = axes[i][j], cs[name].analysis
            shade_regimes(ax, a.batch_sizes, a.regimes)
            errorbar_curve(ax, a, OPT_COLOURS[name], f"{name} (median, seeds' range)")
            finish(ax, "batch size", f"steps to error {target:g}", f"{w}, {name}: B_crit "
                   f"{a.critical[DEFINITION].text()}", legend=False)
            regime_legend(ax)
    save(fig, out / "steps_vs_batch.png")
    return Figure("Steps to result vs batch size, per optimizer", "steps_vs_batch.png", ("steps_vs_batch.csv",
                  "analyses.json"),
                  "Log-log, as the paper's Figure 1: per workload and optimizer the fewest steps to the "
                  "target with the learning rate tuned per batch size (median over seeds, bars: seeds' "
                  "range), the fitted S(B) = S_min(1 + B_crit/B) (line), and each batch size shaded by its "
                  "regime (green perfect scaling, orange diminishing returns, red maximal parallelism; "
                  "unshaded: undecided).")


def optimizers_figure(out: Path, curves: Mapping[str, Mapping[str, Any]], target: float) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, (w, cs) in zip(axes[0], curves.items(), strict=True):
        for name in OPTIMIZERS:
            a = cs[name].analysis
            errorbar_curve(ax, a, OPT_COLOURS[name], name)
            bc = a.critical[DEFINITION].value
            if bc is not None:
                ax.axvline(bc, color=OPT_COLOURS[name], ls=":", lw=1)
        finish(ax, "batch size", f"steps to error {target:g}", f"{w}: optimizers compared")
    save(fig, out / "optimizers.png")
    return Figure("SGD, momentum and Nesterov momentum", "optimizers.png", ("steps_vs_batch.csv",),
                  "As the paper's optimizer comparison: the three curves per workload on one log-log plot, "
                  "median over seeds with the seeds' range; dotted lines: each optimizer's fitted B_crit.")


def lr_figure(out: Path, curves: Mapping[str, Mapping[str, Any]]) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    lr_rows = []
    for ax, (w, cs) in zip(axes[0], curves.items(), strict=True):
        for name in OPTIMIZERS:
            c = cs[name]
            pts = [(b, [r for r in rates if r is not None]) for b, rates in zip(c.batch_sizes,
                                                                                 c.seed_learning_rates,
                                                                                 strict=True)]
            pts = [(b, r) for b, r in pts if r]
            if not pts:
                continue
            b = np.array([p[0] for p in pts], dtype=float)
            med = np.array([np.median(p[1]) for p in pts])
            lo, hi = np.array([min(p[1]) for p in pts]), np.array([max(p[1]) for p in pts])
            ax.errorbar(b, med, yerr=[med - lo, hi - med], fmt="o-", color=OPT_COLOURS[name], capsize=3,
                        label=name)
            ax.plot(b, med[0] * b / b[0], "--", color=OPT_COLOURS[name], lw=0.8, alpha=0.6)
            ax.plot(b, med[0] * np.sqrt(b / b[0]), ":", color=OPT_COLOURS[name], lw=0.8, alpha=0.6)
            lr_rows += [{"workload": w, "optimizer": name, "batch_size": int(x), "best_lr_median": float(m),
                         "best_lr_min": float(l_), "best_lr_max": float(h),
                         "linear_rule": float(med[0] * x / b[0]),
                         "sqrt_rule": float(med[0] * math.sqrt(x / b[0]))}
                        for x, m, l_, h in zip(b, med, lo, hi, strict=True)]
        ax.plot([], [], "k--", lw=0.8, label="linear rule (from the smallest B)")
        ax.plot([], [], "k:", lw=0.8, label="square-root rule")
        finish(ax, "batch size", "best learning rate", f"{w}: best learning rate vs batch size")
    save(fig, out / "best_lr.png")
    if lr_rows:
        write_csv(out / "best_lr.csv", lr_rows)
    return Figure("Best learning rate vs batch size", "best_lr.png", ("best_lr.csv",),
                  "Each seed's own best learning rate per batch size (median over seeds, bars: range), with "
                  "the linear (dashed) and square-root (dotted) rules drawn from the smallest batch's rate.")


def size_figure(out: Path, size_curves: Mapping[float, Any], settings: Settings) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for k, (f, c) in enumerate(size_curves.items()):
        errorbar_curve(ax, c.analysis, f"C{k}", f"{f:.0%} of the training set: B_crit "
                       f"{c.analysis.critical[DEFINITION].text()}")
    finish(ax, "batch size", f"steps to error {settings.size_target:g}",
           f"{settings.size_workload}, {', '.join(settings.size_optimizers)}: training-set size")
    save(fig, out / "dataset_size.png")
    return Figure("Training-set size", "dataset_size.png", ("dataset_size.csv",),
                  "As the paper's data-set-size figure: the same steps-to-target curve on 25, 50 and 100% of "
                  "the training set (same test set and target), median over seeds with their range and the "
                  "fit.")


# ------------------------------------------------------------------------------------------------ archive


def reproduce_archive(options: Options, data: Path) -> Reproduction:
    """The paper's Figure 1 from the released archive under ``data`` (no training)."""
    from batchscale.reproduce.batch_science import figure1
    from batchscale.theory.regimes import analyze_steps_curve
    from batchscale.verify.registry import package_versions

    panels = figure1(data)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    rows, table, analyses = [], [], []
    for goal, studies, results in panels:
        options.say(f"shallue2018: {goal.folder}: {len(studies)} batch sizes, {goal.text()}")
        ok = [r for r in results if r.steps is not None]
        a = analyze_steps_curve([r.batch_size for r in ok], [float(r.steps) for r in ok], seed=options.seed) \
            if ok else None
        analyses.append((goal, a))
        if a is None:
            rows.append(VerdictRow(PAPER, STATEMENTS["regimes"], SOURCES["regimes"],
                                   f"{goal.title} (archive)",
                                   None, None, None, "inconclusive", "no batch size reached the target"))
        else:
            row = regimes_row(f"{goal.title} (archive, {goal.text()})", a)
            rows.append(VerdictRow(**{**row.as_dict(), "reason": row.reason + "; one value per batch size: "
                                      "residual bootstrap"}))
        for s, r in zip(studies, results, strict=True):
            table.append({"workload": goal.folder, "title": goal.title, "goal": goal.text(),
                          "batch_size": r.batch_size, "steps": r.steps, "trial_id": r.trial_id,
                          "learning_rate": r.learning_rate, "trials_read": r.trials_read,
                          **{f"n_{k.lower()}": v for k, v in s.status_counts.items()},
                          "train_steps": s.train_steps})
    write_csv(out / "figure1_archive.csv", table)
    goals = "; ".join(f"{g.title}: {g.text()}" for g, _, _ in panels)
    figure = archive_figure(out, analyses)
    sections = (("Steps to the goal per batch size, from the archive", markdown_table(
        ("workload", "goal", "B", "steps", "first trial", "its learning rate", "trials read", "COMPLETE",
         "INCOMPLETE", "INFEASIBLE"),
        [(t["title"], t["goal"], t["batch_size"], t["steps"], t["trial_id"], t["learning_rate"],
          t["trials_read"], t["n_complete"], t["n_incomplete"], t["n_infeasible"]) for t in table])),
        ("Method and sources", f"""Read from `{data}` in the archive's published layout
(`dataset/model/optimizer/batch_size/study.json`,
`.../trial_id/metadata.json`, `.../trial_id/measurements.csv`, documented in the README of `batch_science/`
in github.com/google-research/google-research). Per batch size, as the authors' notebook
(`reproduce_paper_plots.ipynb`, Figure 1 cell): the first 100 (50 for the Common Crawl Transformer and the
LSTM) COMPLETE trials in trial-folder order; INCOMPLETE and INFEASIBLE (diverged) trials are counted but not
used; steps to the goal = the first evaluation step (as recorded: evaluation steps are irregular) at which
any of those trials has the validation metric strictly below the target (strictly above for Open Images'
average precision). Goals: {goals}. The curve is then fitted and labelled as in the trained reproduction
(one value per batch size: the interval comes from a bootstrap over the fit's residuals). The authors note
that some MNIST curves differ slightly from the paper's because of which 100 trials were selected."""))
    cfg = {"paper": PAPER, "mode": "archive", "data": str(data),
           "workloads": [g.folder for g, _, _ in panels],
           "versions": package_versions()}
    return Reproduction(PAPER, CITATION, tuple(rows), (figure,), sections, cfg)


def archive_figure(out: Path, analyses: Sequence[tuple[Any, Any]]) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    n = len(analyses)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.3 * rows), squeeze=False)
    for k, (goal, a) in enumerate(analyses):
        ax = axes[k // cols][k % cols]
        if a is not None:
            shade_regimes(ax, a.batch_sizes, a.regimes)
            errorbar_curve(ax, a, "C0", "steps to the goal")
        finish(ax, "batch size", "steps", f"{goal.title} ({goal.text()})", legend=False)
        regime_legend(ax)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    save(fig, out / "figure1_archive.png")
    return Figure("Figure 1 from the released data", "figure1_archive.png", ("figure1_archive.csv",),
                  "The paper's Figure 1 recomputed from the archive: per workload the fewest steps to the "
                  "goal over the first 100 (or 50) COMPLETE trials at each batch size, log-log, with the "
                  "fitted S(B) and the regimes shaded.")
