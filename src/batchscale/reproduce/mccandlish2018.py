r"""``mccandlish2018``: McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training"
(arXiv 1812.06162), rerun at CPU scale.

Measured, on one workload (``digits-mlp`` by default), plain SGD:

1. **One steps-to-target sweep** (:func:`batchscale.empirical.sweep.run_steps_sweep`'s chains, every trial
   in the results store) at the *hardest* target: per batch size and seed, learning rates searched and
   refined around the best. Every trial records its test metric at every evaluation (step 0, every step
   up to 10, then steps growing by 10%), so the same trials give the steps to every *easier* target
   (:func:`steps_to_reach`: the first evaluation at or below the target, interpolated linearly in the
   metric from the evaluation before it; resolution about 10% of the step, against the engine's 1% for
   the sweep's own target). Per target, batch size and seed the steps are the fewest over all learning
   rates the sweep tried there. This is the cheapest honest way to several targets: one sweep; its
   learning-rate windows are centred on the hardest target's optimum, so an easier target's best rate can
   sit on the window's edge (counted and reported per target).
2. **Per target**, the curve is analysed by :func:`batchscale.theory.regimes.analyze_steps_curve` (fit of
   :math:`S(B) = S_{min}(1 + B_{crit}/B)`, so :math:`E = E_{min}(1 + B/B_{crit})` and
   :math:`(S/S_{min} - 1)(E/E_{min} - 1) = 1`, McCandlish et al. eq. 2.11; seed bootstrap intervals); the
   hyperbola is judged by ``batchscale verify noise-scale``'s ``tradeoff_product`` rows (same code and
   declared tolerance).
3. **B_crit against the target**: a joint seed bootstrap (:func:`joint_log_b_crit`: the calibrated
   resampling of ``analyze_steps_curve``, its draws shared by every target, each target's curve
   refitted) gives the interval of
   :math:`\log B_{crit}(\text{hardest}) - \log B_{crit}(\text{easiest})`; rising is reproduced when it
   lies above 0.
4. **B_simple and B_noise along training** (:func:`noise_along_training`): per seed a plain-SGD run at the
   noise-scale claim's measuring batch with the sweep's best rate there for the hardest target; at
   log-spaced steps the exact :math:`B_{simple} = \mathrm{tr}\Sigma/|G|^2` over the training set,
   :math:`B_{noise} = \mathrm{tr}(H\Sigma)/G^\top H G` (Hessian-vector probes) and the test metric. Per
   target, B_simple is averaged over the checkpoints after step 0 up to where that run reaches the target
   and compared with the target's B_crit by ``verify noise-scale``'s ``b_simple_over_b_crit`` row (its
   declared factor).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchscale.reproduce.report import (
    Figure,
    Options,
    Reproduction,
    VerdictRow,
    markdown_table,
    save_log_log,
    sign_verdict,
    write_csv,
    write_json,
)

PAPER = "mccandlish2018"
CITATION = "McCandlish, Kaplan, Amodei et al. 2018, arXiv 1812.06162"
SOURCE_ABSTRACT = "arXiv 1812.06162, abstract"
SOURCE_TRADEOFF = "arXiv 1812.06162, Sec. 2.2, eq. 2.11 (the Pareto fronts of Sec. 3)"
SOURCE_CRIT = "arXiv 1812.06162, Sec. 3 (Pareto fronts at several targets; B_crit = E_min/S_min, Sec. 2.2)"
SOURCE_PREDICT = "arXiv 1812.06162, abstract and Sec. 3 (B_simple vs B_crit across tasks)"
WORKLOAD = "digits-mlp"
# per setting: batch sizes, targets (test error, easiest first; the last is the sweep's), seeds, sweep
SETTINGS: dict[bool, dict[str, Any]] = {
    True: {"batch_sizes": (4, 8, 16, 32, 64, 128, 256), "targets": (0.2, 0.1, 0.06), "seeds": 3,
           "n_learning_rates": 5, "max_steps": 4000, "max_extensions": 2, "refine_levels": 2,
           "checkpoints": 16, "probes": 16},
    False: {"batch_sizes": (2, 4, 8, 16, 32, 64, 128, 256, 512), "targets": (0.2, 0.12, 0.08, 0.05),
            "seeds": 5, "n_learning_rates": 6, "max_steps": 8000, "max_extensions": 3, "refine_levels": 3,
            "checkpoints": 24, "probes": 32},
}
MEASURE_BATCH = {True: 16, False: 32}  # the noise-scale claim's (batchscale.verify.noise_scale)
N_BOOTSTRAP = 1000
INTERP_RESOLUTION = 0.1  # the engine evaluates at steps growing by 10%


def steps_to_reach(history: Sequence[Sequence[Any]], target: float) -> float:
    """Steps until the metric first is <= ``target`` from a trial's ``history`` of ``(step, metric,
    loss)``: the first evaluation at or below it, interpolated linearly in the metric between it and the
    evaluation before (exact at an evaluation); inf when no evaluation reaches it."""
    previous = None
    for step, metric, _ in history:
        if metric is None:
            return math.inf  # diverged before reaching it
        if metric <= target:
            if previous is None or previous[1] <= metric:
                return float(step)
            s0, m0 = previous
            return s0 + (m0 - target) / (m0 - metric) * (step - s0)
        previous = (step, metric)
    return math.inf


def steps_of_trial(result: Any, target: float, sweep_target: float) -> float:
    """A trial's steps to ``target``: the engine's own (to 1%) for the sweep's target, else from its
    history (:func:`steps_to_reach`); inf when not reached; at least 1."""
    if target == sweep_target:
        steps = float(result.steps) if result.status == "complete" and result.steps is not None else math.inf
    else:
        steps = steps_to_reach(result.history, target)
    return max(steps, 1.0)


def best_per_point(results: Sequence[Any], targets: Sequence[float], sweep_target: float
                   ) -> dict[tuple[float, int, int], dict[str, Any]]:
    """Per (target, batch size, seed): the fewest steps over the learning rates tried, that rate, and
    whether it is the lowest or highest rate tried there (``at_edge``)."""
    groups: dict[tuple[int, int], list[Any]] = {}
    for r in results:
        groups.setdefault((r.config.batch_size, r.config.seed), []).append(r)
    out = {}
    for (batch, seed), trials in groups.items():
        rates = sorted({t.config.learning_rate for t in trials})
        for target in targets:
            steps = [(steps_of_trial(t, target, sweep_target), t.config.learning_rate) for t in trials]
            best, lr = min(steps)
            out[(target, batch, seed)] = {"steps": best, "learning_rate": lr if math.isfinite(best) else None,
                                          "at_edge": math.isfinite(best) and len(rates) > 1
                                          and lr in (rates[0], rates[-1])}
    return out


def seed_steps(best: Mapping[tuple[float, int, int], Mapping[str, Any]], target: float,
               batch_sizes: Sequence[int], seeds: Sequence[int]) -> list[list[float]]:
    """(n, K) steps of ``target`` per batch size and seed (inf = not reached or not run)."""
    return [[best.get((target, b, s), {"steps": math.inf})["steps"] for s in seeds] for b in batch_sizes]


def joint_log_b_crit(batch_sizes: Sequence[int], steps: np.ndarray, n_bootstrap: int = N_BOOTSTRAP,
                     seed: int = 0) -> np.ndarray:
    r"""(n_bootstrap, T) :math:`\log B_{crit}` of every target on joint seed-bootstrap resamples:
    ``steps`` (T, n, K) per target, batch size and seed (inf = missed). Each resample's seed-median curves
    come from :func:`batchscale.theory.regimes.seed_bootstrap_curves` (pooled within-point deviations,
    t-scaled to the 95% level of :func:`rising_row`), with the same draws at every target (a seed's
    deviations at two targets come from the same run); each target's curve is refitted to
    :math:`S = S_{min}(1 + B_{crit}/B)` (:func:`batchscale.theory.noise_scale.fit_log_curves`)."""
    from batchscale.theory.noise_scale import fit_log_curves
    from batchscale.theory.regimes import seed_bootstrap_curves

    steps = np.asarray(steps, dtype=float)  # (T, n, K)
    curves = seed_bootstrap_curves(steps, n_bootstrap, np.random.default_rng(seed), 0.95)  # (T, R, n)
    log_s = np.where(np.isfinite(curves), curves, np.nan)  # (T, R, n): a median that missed is no point
    log_b = np.log(np.asarray(batch_sizes, dtype=float))
    return np.stack([fit_log_curves(log_b, log_s[t])[:, 1] for t in range(steps.shape[0])], axis=1)


def rising_row(targets: Sequence[float], b_crit: Sequence[float | None], draws: np.ndarray,
               falling: bool = False) -> VerdictRow:
    r"""The verdict on "B_crit rises as the target gets harder": the 95% percentile interval of
    :math:`\log B_{crit}(\text{hardest}) - \log B_{crit}(\text{easiest})` over the joint bootstrap
    ``draws`` (R, T) must lie above 0 (``falling=True`` plants the opposite statement)."""
    sign = -1.0 if falling else 1.0
    diff = sign * (draws[:, -1] - draws[:, 0])
    diff = diff[np.isfinite(diff)]
    first, last = b_crit[0], b_crit[-1]
    measured = (None if first is None or last is None or first <= 0 or last <= 0
                else float(sign * math.log(last / first)))
    low, high = ((float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5)))
                 if diff.size >= 20 else (None, None))
    verdict, reason = sign_verdict(low, high, "log B_crit(hardest) - log B_crit(easiest)")
    steps_up = [sign * (draws[:, j + 1] - draws[:, j]) for j in range(draws.shape[1] - 1)]  # (R,) each
    steps_up = [d[np.isfinite(d)] for d in steps_up]
    above = sum(1 for d in steps_up if d.size >= 20 and np.percentile(d, 2.5) > 0)
    reason += (f"; {above} of {len(steps_up)} consecutive target pairs rise by their own 95% interval"
               if len(steps_up) > 1 else "")
    steps_text = ", ".join(f"{t:g}: {'-' if b is None else f'{b:.3g}'}" for t, b in
                           zip(targets, b_crit, strict=True))
    statement = ("B_crit falls as the target gets harder (planted)" if falling else
                 "the critical batch B_crit grows as the target loss gets lower (harder targets)")
    return VerdictRow(PAPER, statement, SOURCE_CRIT,
                      f"log(B_crit at target {targets[-1]:g} / B_crit at target {targets[0]:g}) (test error)",
                      measured, low, high, verdict, f"{reason}; B_crit per target {steps_text}")


def growth_row(runs: Sequence[Sequence[Mapping[str, Any]]], key: str = "b_simple") -> VerdictRow:
    r"""The verdict on "the noise scale increases as the loss decreases over a training run": per seed
    :math:`\log(B(\text{last checkpoint})/B(\text{first checkpoint after step 0}))`; their mean with a
    95% t interval must lie above 0."""
    from batchscale.theory.noise_scale import t_quantile

    logs = []
    for rows in runs:
        values = [(r["step"], r[key]) for r in rows if r["step"] > 0 and r.get(key) and r[key] > 0]
        if len(values) >= 2:
            logs.append(math.log(values[-1][1] / values[0][1]))
    if len(logs) >= 2:
        mean, sem = float(np.mean(logs)), float(np.std(logs, ddof=1) / math.sqrt(len(logs)))
        half = t_quantile(0.95, len(logs) - 1) * sem
        low, high = mean - half, mean + half
    else:
        mean, low, high = (logs[0] if logs else None), None, None
    verdict, reason = sign_verdict(low, high, f"the mean log growth of {key} over {len(logs)} seeds")
    return VerdictRow(PAPER, "the noise scale increases as the loss decreases over a training run",
                      SOURCE_ABSTRACT, f"log({key} at the last checkpoint / at the first after step 0), "
                      "mean over seeds", mean, low, high, verdict, reason)


VERIFY_WORDS = {"pass": "reproduced", "fail": "not reproduced", "inconclusive": "inconclusive"}


def hyperbola_row(target: float, rows: Sequence[Any]) -> VerdictRow:
    """One target's verdict on eq. 2.11 from ``verify noise-scale``'s ``tradeoff_product`` rows (one per
    batch size): reproduced when some pass and none fails, not reproduced when some fail and none passes,
    partly when both, else inconclusive."""
    verdicts = [r.verdict for r in rows]
    n_pass, n_fail = verdicts.count("pass"), verdicts.count("fail")
    verdict = ("partly" if n_pass and n_fail else "reproduced" if n_pass else "not reproduced" if n_fail
               else "inconclusive")
    values = [r.measured for r in rows if math.isfinite(r.measured)]
    median = float(np.median(values)) if values else None
    reason = (f"verify noise-scale tradeoff_product rows (declared z-score tolerance): {n_pass} pass, "
              f"{n_fail} fail, {verdicts.count('inconclusive')} inconclusive of {len(rows)} batch sizes"
              + ("; far from B_crit one factor is small and the product too noisy to decide" if
                 verdicts.count("inconclusive") else ""))
    return VerdictRow(PAPER, "steps and examples to a target trade off on the hyperbola "
                      "(S/S_min - 1)(E/E_min - 1) = 1", SOURCE_TRADEOFF,
                      f"(S/S_min - 1)(E/E_min - 1) per batch size at target {target:g}, median over B",
                      median, None, None, verdict, reason)


def prediction_row(target: float, row: Any) -> VerdictRow:
    """One target's verdict on "B_simple predicts B_crit": ``verify noise-scale``'s
    ``b_simple_over_b_crit`` row (its declared factor) in the reproduction's words."""
    return VerdictRow(PAPER, "B_simple predicts the critical batch B_crit within about an order of magnitude",
                      SOURCE_PREDICT, f"B_simple (mean until the run reaches {target:g}) / B_crit at target "
                      f"{target:g}", row.measured if math.isfinite(row.measured) else None, row.ci_low,
                      row.ci_high, VERIFY_WORDS[row.verdict], f"verify noise-scale b_simple_over_b_crit: "
                      f"{row.reason}")


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """Step 0 and ``n`` log-spaced steps up to ``steps`` (distinct, ascending)."""
    return sorted({0, *(int(round(s)) for s in np.geomspace(1, max(steps, 1), n))})


def test_metric(setup: Any, metric: str) -> float:
    """The workload's test ``error`` (1 - accuracy) or mean test ``loss`` at the model's current point."""
    import torch

    w = setup.workload
    with torch.no_grad():
        out = setup.model(w.x_test)  # (N, K)
        if metric == "error":
            return float((out.argmax(dim=1) != w.y_test).float().mean())
        return float(w.per_example_loss(out, w.y_test).mean())


def noise_along_training(workload: str, options: Mapping[str, Any], batch: int, lr: float, steps: int,
                         seed: int, checkpoints: int, probes: int, metric: str, say: Any = None
                         ) -> list[dict[str, Any]]:
    """One row per checkpoint of a plain-SGD run (batch ``batch``, rate ``lr``, ``steps`` steps, seed
    ``seed``): step, training loss, test metric, exact B_simple over the training set and B_noise from
    ``probes`` Hessian-vector products (:mod:`batchscale.empirical.measure.noise_scale`)."""
    from batchscale.empirical.measure import NoiseScaleOptions, Training, build_setup
    from batchscale.empirical.measure.noise_scale import noise_scale_rows, noise_scale_status
    from batchscale.empirical.measure.training import measure_along_training, train_loss

    setup = build_setup(workload, dict(options), "cpu", seed, None)
    wanted = set(checkpoint_steps(steps, checkpoints))
    opts = NoiseScaleOptions(methods=("exact",), seed=seed, b_noise=True, probes=probes)

    def measure_at(point: Any) -> list[dict[str, Any]]:
        if point.step not in wanted:
            return []
        row: dict[str, Any] = {"seed": seed, "step": point.step, "train_loss": train_loss(setup),
                               "test_metric": test_metric(setup, metric)}
        for r in noise_scale_rows(setup, opts):
            ok = noise_scale_status(r, setup.population) == "ok"
            if r.get("b_noise") is not None:
                row["b_noise"] = r["b_noise"] if ok else None
            elif r.get("b_simple") is not None:
                row["b_simple"] = r["b_simple"] if ok else None
        return [row]

    if say is not None:
        say(f"mccandlish2018: seed {seed}: B_simple and B_noise along {steps} SGD steps of batch {batch}, "
            f"lr {lr:.4g}")
    measured = measure_along_training(setup, Training(steps, lr, batch, seed), measure_at, every=1)
    return [row for _, rows in measured for row in rows]


def b_simple_until(rows: Sequence[Mapping[str, Any]], target: float) -> float:
    """Mean B_simple over the checkpoints after step 0 up to the first one whose test metric is <=
    ``target`` (all of them when the run never reaches it); nan when there is none."""
    values = []
    for r in rows:
        if r["step"] > 0 and r.get("b_simple") is not None:
            values.append(r["b_simple"])
        if r["step"] > 0 and r["test_metric"] <= target:
            break
    return float(np.mean(values)) if values else math.nan


@dataclass(frozen=True)
class Measured:
    """What :func:`measure` trained: the sweep's trials (every :class:`TrialResult`, with histories), the
    noise-scale runs (rows of :func:`noise_along_training`, one list per seed) and how they were made."""

    workload: str
    targets: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    results: tuple[Any, ...]
    runs: tuple[tuple[dict[str, Any], ...], ...]
    measure_batch: int
    sweep: dict[str, Any]
    trials: dict[str, Any]


def sweep_config(options: Options) -> Any:
    """The :class:`StepsSweepConfig` of the reproduction (plain SGD at the hardest target)."""
    from batchscale.empirical.sweep import StepsSweepConfig

    s = SETTINGS[options.quick]
    seeds = tuple(options.seed + k for k in range(options.seeds or s["seeds"]))
    return StepsSweepConfig(
        workload=options.workload or WORKLOAD, workload_options=(), batch_sizes=s["batch_sizes"],
        optimizers=("sgd",), seeds=seeds, data_seed=options.seed, target_metric="error",
        target=s["targets"][-1], max_steps=s["max_steps"], n_learning_rates=s["n_learning_rates"],
        max_extensions=s["max_extensions"], refine_levels=s["refine_levels"], eval_subset=None, device="cpu")


def measure(options: Options) -> Measured:
    """Run (or reuse from the store) the sweep, then the noise-scale runs at the measuring batch."""
    from batchscale.empirical.workloads import get_workload
    from batchscale.errors import InputError
    from batchscale.reproduce.trials import Tally, measured_beside_store, prepare_store, sweep_stored

    s = SETTINGS[options.quick]
    config = sweep_config(options)
    config.validate()
    loss = get_workload(config.workload, seed=options.seed).loss
    if loss != "cross_entropy":
        raise InputError(f"mccandlish2018's targets are test errors: it needs a classification workload "
                         f"(loss cross_entropy); {config.workload!r} has loss {loss}")
    prepare_store(options)
    tally = Tally(options.store)
    targets, seeds, batches = tuple(s["targets"]), tuple(config.seeds), tuple(config.batch_sizes)
    options.say(f"mccandlish2018: {config.workload}, SGD sweep at test error {targets[-1]:g} (targets "
                f"{', '.join(f'{t:g}' for t in targets)} from its histories), batch {batches[0]}.."
                f"{batches[-1]}, {len(seeds)} seeds; store {options.store}")
    _, results = sweep_stored(options, config, tally)
    best = best_per_point(list(results.values()), targets[-1:], targets[-1])
    measure_batch = min(batches, key=lambda b: (abs(math.log(b / MEASURE_BATCH[options.quick])), b))
    runs = []
    for seed in seeds:
        point = best[(targets[-1], measure_batch, seed)]
        if not math.isfinite(point["steps"]):
            options.say(f"mccandlish2018: seed {seed} missed {targets[-1]:g} at batch {measure_batch}: "
                        "no noise-scale run")
            continue
        settings = {"workload": config.workload, "batch": measure_batch,
                    "lr": point["learning_rate"], "steps": int(math.ceil(point["steps"])), "seed": seed,
                    "checkpoints": s["checkpoints"], "probes": s["probes"], "metric": "error"}
        rows = measured_beside_store(options, f"mccandlish2018-noise-scale-seed{seed}", settings,
                                     lambda st=settings: noise_along_training(**st, options={},
                                                                              say=options.say))
        runs.append(tuple(rows))
    return Measured(config.workload, targets, batches, seeds, tuple(results.values()), tuple(runs),
                    measure_batch, config.to_dict(), tally.as_dict())


def reproduce(options: Options) -> Reproduction:
    return assemble(options, measure(options))


def assemble(options: Options, m: Measured, *, n_bootstrap: int = N_BOOTSTRAP,
             figures: bool = True) -> Reproduction:
    """The verdicts, figures (PNG unless ``figures`` is False; their data always) and sections from what
    :func:`measure` trained."""
    from batchscale.theory.regimes import analyze_steps_curve
    from batchscale.verify import noise_scale as vns
    from batchscale.verify.registry import package_versions, resolve
    from batchscale.verify.steps_sweep import Curve

    s = SETTINGS[options.quick]
    targets, batches, seeds, workload = m.targets, m.batch_sizes, m.seeds, m.workload
    runs = m.runs
    best = best_per_point(m.results, targets, targets[-1])
    matrices = {t: seed_steps(best, t, batches, seeds) for t in targets}
    analyses = {t: analyze_steps_curve(batches, matrices[t], n_bootstrap=n_bootstrap, seed=options.seed)
                for t in targets}
    draws = joint_log_b_crit(batches, np.asarray([matrices[t] for t in targets]), n_bootstrap,
                             seed=options.seed)
    b_crit = [analyses[t].critical["mccandlish"].value for t in targets]

    vopts = resolve(quick=options.quick, seed=options.seed, seeds=options.seeds, workload=workload)
    vconfig = vopts.config("noise-scale", workload, sweep=m.sweep, store=options.store,
                           measure_batch=m.measure_batch)
    verdicts: list[VerdictRow] = [growth_row(runs, "b_simple")]
    tradeoff: dict[float, list[Any]] = {}
    ratio: dict[float, Any] = {}
    for t in targets:
        curve = Curve("sgd", batches, tuple(tuple(None if not math.isfinite(v) else v for v in row)
                                            for row in matrices[t]), (), analyses[t])
        tradeoff[t] = vns.tradeoff_rows(curve, {**vconfig, "target": t}, workload, seed=options.seed,
                                        n_bootstrap=min(n_bootstrap, vns.N_BOOTSTRAP))
        verdicts.append(hyperbola_row(t, tradeoff[t]))
    verdicts.append(rising_row(targets, b_crit, draws))
    for t in targets:
        ratio[t] = vns.ratio_row([b_simple_until(r, t) for r in runs], analyses[t], {**vconfig, "target": t},
                                 workload)
        verdicts.append(prediction_row(t, ratio[t]))

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "pareto.csv", _pareto_rows(targets, batches, analyses, best, seeds))
    crit_rows = _crit_rows(targets, analyses, draws, ratio, runs)
    write_csv(out / "b_crit_vs_target.csv", crit_rows)
    noise_rows = [r for run in runs for r in run]
    if noise_rows:
        write_csv(out / "noise_scale_along_training.csv", [_noise_csv_row(r) for r in noise_rows])
    write_json(out / "verify_rows.json", [r.as_dict() for t in targets for r in (*tradeoff[t], ratio[t])])
    made = [_pareto_figure(out, targets, analyses), _crit_figure(out, targets, crit_rows)] if figures else []
    if noise_rows and figures:
        made.append(_noise_figure(out, runs, targets))
    edges = {t: sum(1 for b in batches for sd in seeds if best.get((t, b, sd), {}).get("at_edge"))
             for t in targets}
    sections = _sections(workload, targets, batches, seeds, analyses, crit_rows, edges, m.trials,
                         m.measure_batch, s, options, n_bootstrap)
    cfg = {"paper": PAPER, "workload": workload, "seeds": list(seeds), "targets": list(targets),
           "target_metric": "error", "sweep": m.sweep, "measure_batch": m.measure_batch,
           "checkpoints": s["checkpoints"], "probes": s["probes"], "n_bootstrap": n_bootstrap,
           "quick": options.quick, "trials": m.trials, "versions": package_versions()}
    return Reproduction(PAPER, CITATION, tuple(verdicts), tuple(made), sections, cfg)


def _pareto_rows(targets, batches, analyses, best, seeds) -> list[dict[str, Any]]:
    out = []
    for t in targets:
        a = analyses[t]
        fit = a.fit
        for i, b in enumerate(batches):
            steps = a.steps[i]
            lrs = [best.get((t, b, sd), {}).get("learning_rate") for sd in seeds]
            out.append({"target": t, "batch_size": b, "steps_median": steps if math.isfinite(steps) else None,
                        "examples_median": b * steps if math.isfinite(steps) else None,
                        "steps_min": a.steps_low[i] if math.isfinite(a.steps_low[i]) else None,
                        "steps_max": a.steps_high[i] if math.isfinite(a.steps_high[i]) else None,
                        "best_lrs": " ".join("-" if v is None else f"{v:.4g}" for v in lrs),
                        "fit_s_min": None if fit is None else fit.s_min,
                        "fit_e_min": None if fit is None else fit.e_min,
                        "fit_b_crit": None if fit is None else fit.b_crit})
    return out


def _crit_rows(targets, analyses, draws, ratio, runs) -> list[dict[str, Any]]:
    out = []
    for j, t in enumerate(targets):
        est = analyses[t].critical["mccandlish"]
        col = draws[:, j]
        col = col[np.isfinite(col)]
        bs = [b_simple_until(r, t) for r in runs]
        bs = [b for b in bs if math.isfinite(b)]
        out.append({"target": t, "b_crit": est.value, "b_crit_low": est.low, "b_crit_high": est.high,
                    "b_crit_joint_low": float(np.exp(np.percentile(col, 2.5))) if col.size else None,
                    "b_crit_joint_high": float(np.exp(np.percentile(col, 97.5))) if col.size else None,
                    "b_simple_mean": float(np.exp(np.mean(np.log(bs)))) if bs else None,
                    "b_simple_min": min(bs) if bs else None, "b_simple_max": max(bs) if bs else None,
                    "ratio": ratio[t].measured if math.isfinite(ratio[t].measured) else None,
                    "ratio_verdict": ratio[t].verdict, "note": est.note})
    return out


def _noise_csv_row(r: Mapping[str, Any]) -> dict[str, Any]:
    return {k: r.get(k) for k in ("seed", "step", "train_loss", "test_metric", "b_simple", "b_noise")}


def _pareto_figure(out, targets, analyses) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for j, t in enumerate(targets):
        a, colour = analyses[t], f"C{j}"
        b = np.asarray(a.batch_sizes, dtype=float)
        s = np.asarray(a.steps, dtype=float)
        ok = np.isfinite(s)
        ax.plot(s[ok], b[ok] * s[ok], "o", color=colour, label=f"test error {t:g} (seed median)")
        for bi, si in zip(b[ok], s[ok], strict=True):
            ax.annotate(f"{int(bi)}", (si, bi * si), fontsize=6, color=colour, xytext=(3, 2),
                        textcoords="offset points")
        if a.fit is not None:
            grid = np.geomspace(b.min() / 4, b.max() * 4, 200)
            steps = a.fit.predict_steps(grid)
            ax.plot(steps, grid * steps, "-", color=colour, lw=1,
                    label=f"(S/S_min - 1)(E/E_min - 1) = 1, B_crit = {a.fit.b_crit:.3g}")
            ax.plot([a.fit.s_min], [a.fit.e_min], "+", color=colour, ms=10)
    save_log_log(fig, ax, out / "pareto.png", "optimizer steps S to the target",
                 "training examples E = B S to the target", "Steps-examples Pareto fronts, one per target")
    return Figure("Steps-examples Pareto fronts", "pareto.png", ("pareto.csv",),
                  "Each point is one batch size (labelled), at the seed median of the fewest steps over the "
                  "learning rates tried; lines: the hyperbola fitted per target (S = S_min(1 + B_crit/B)); "
                  "crosses: (S_min, E_min).")


def _crit_figure(out, targets, crit_rows) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    x = np.asarray(targets, dtype=float)
    for key, label, fmt, colour in (("b_crit", "B_crit = E_min/S_min (fit, 95% seed bootstrap)", "o", "C0"),
                                    ("b_simple_mean", "B_simple until the target (seeds' geometric mean, "
                                     "range)", "s", "C3")):
        lo_key, hi_key = (("b_crit_low", "b_crit_high") if key == "b_crit" else
                          ("b_simple_min", "b_simple_max"))
        pts = [(t, r[key], r[lo_key], r[hi_key]) for t, r in zip(x, crit_rows, strict=True)
               if r[key] is not None]
        if not pts:
            continue
        t, v, lo, hi = (np.asarray([p[i] if p[i] is not None else np.nan for p in pts], dtype=float)
                        for i in range(4))
        lo = np.where(np.isfinite(lo), lo, v)
        hi = np.where(np.isfinite(hi), hi, v)
        ax.errorbar(t, v, yerr=[v - lo, hi - v], fmt=fmt, color=colour, capsize=3, label=label)
    ax.invert_xaxis()
    save_log_log(fig, ax, out / "b_crit_vs_target.png", "target test error (harder to the right)",
                 "batch size", "Critical batch vs target, and B_simple's prediction")
    return Figure("B_crit vs target", "b_crit_vs_target.png", ("b_crit_vs_target.csv",),
                  "Circles: the fitted critical batch per target with its seed-bootstrap 95% interval; "
                  "squares: B_simple averaged along the measuring runs until they reach the target.")


def _noise_figure(out, runs, targets) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for k, rows in enumerate(runs):
        pts = [r for r in rows if r["step"] > 0]
        label = k == 0
        ax.plot([r["step"] for r in pts], [r.get("b_simple") or np.nan for r in pts], "o-", color="C0", ms=3,
                alpha=0.8, label="B_simple (exact)" if label else None)
        ax.plot([r["step"] for r in pts], [r.get("b_noise") or np.nan for r in pts], "s--", color="C1", ms=3,
                alpha=0.8, label="B_noise (Hessian probes)" if label else None)
    for j, t in enumerate(targets):
        reached = [next((r["step"] for r in rows if r["step"] > 0 and r["test_metric"] <= t), None)
                   for rows in runs]
        reached = [s for s in reached if s is not None]
        if reached:
            ax.axvline(float(np.median(reached)), color=f"C{j + 2}", ls=":",
                       label=f"test error {t:g} reached (median)")
    save_log_log(fig, ax, out / "noise_scale_along_training.png", "SGD step", "noise scale (examples)",
                 "B_simple and B_noise along training")
    return Figure("B_simple and B_noise along training", "noise_scale_along_training.png",
                  ("noise_scale_along_training.csv",),
                  "One line per seed: the plain-SGD measuring run at the claim's measuring batch with the "
                  "sweep's best rate there for the hardest target; dotted: where the runs reach each target.")


def _sections(workload, targets, batches, seeds, analyses, crit_rows, edges, trials, measure_batch, s,
              options, n_bootstrap) -> tuple[tuple[str, str], ...]:
    table = markdown_table(
        ("target (test error)", "S_min", "E_min", "B_crit [95%]", "joint bootstrap [95%]", "B_simple (range)",
         "B_simple / B_crit", "best rate on a window edge"),
        [(t, a.s_min.value, a.e_min.value, a.critical["mccandlish"].text(),
          "-" if r["b_crit_joint_low"] is None else
          f"[{r['b_crit_joint_low']:.4g}, {r['b_crit_joint_high']:.4g}]",
          "-" if r["b_simple_mean"] is None else f"{r['b_simple_mean']:.4g} [{r['b_simple_min']:.4g}, "
          f"{r['b_simple_max']:.4g}]", r["ratio"], f"{edges[t]} of {len(batches) * len(seeds)}")
         for t, a, r in zip(targets, (analyses[t] for t in targets), crit_rows, strict=True)])
    steps = markdown_table(
        ("batch size", *(f"steps to {t:g}" for t in targets)),
        [(b, *(analyses[t].steps[i] for t in targets)) for i, b in enumerate(batches)])
    method = f"""Workload `{workload}`, plain SGD (mean loss, constant rate), data seed {options.seed}, seeds
{', '.join(str(x) for x in seeds)}; targets: test error {', '.join(f'{t:g}' for t in targets)}.
**One sweep** (`batchscale sweep steps` chains: {s['n_learning_rates']} rates per window, up to
{s['max_extensions']} extensions, {s['refine_levels']} refinement levels, at most {s['max_steps']} steps,
every trial in the results store `{trials['store']}`: {trials['trials_trained']} trained by this run,
{trials['trials_reused']} reused) at the hardest target,
{targets[-1]:g}. Its trials record the test error at every evaluation (step 0, each step to 10, then
steps growing by 10%), so the steps to each easier target are read from the same trials: the first
evaluation at or below the target, interpolated linearly in the error from the evaluation before
(resolution about {INTERP_RESOLUTION:.0%} of the step, where the sweep's own target is resolved to 1%). Per
target, batch size and seed the steps are the fewest over every rate the sweep tried there; the rate windows
are centred on the hardest target's optimum, so an easier target's best rate may sit on a window's edge
(counted in the table: then its steps are an upper bound). A sweep per target would cost one sweep each
and tune each target's rate exactly; this one costs one.

Per target the seed-median curve is fitted with S = S_min(1 + B_crit/B), so E = E_min(1 + B/B_crit) and
B_crit = E_min/S_min (`batchscale.theory.regimes.analyze_steps_curve`, {n_bootstrap} seed-bootstrap
resamples); the hyperbola (eq. 2.11) is judged by `batchscale verify noise-scale`'s `tradeoff_product`
rows (declared z-score tolerance, docs/claims.md, noise-scale). B_crit's rise: the joint bootstrap
resamples the same seeds for all targets. B_simple: per seed a plain-SGD run at batch {measure_batch}
(the noise-scale claim's measuring batch) with that seed's best rate for {targets[-1]:g}, for its steps to
{targets[-1]:g}; exact B_simple = tr(Sigma)/|G|^2 over the training set and B_noise = tr(H Sigma)/(G^T H G)
({s['probes']} Hessian-vector probes) at {s['checkpoints']} log-spaced steps; B_simple for a target is
its mean over the checkpoints after step 0 until that run reaches the target, judged against B_crit by
`verify noise-scale`'s `b_simple_over_b_crit` row (declared factor 10). The paper's statements are
quoted from its abstract and from its Sec. 2.2/eq. 2.11 as `batchscale verify noise-scale` cites them;
we did not re-read the paper's text for this report, its figure numbers are not cited and its numbers
are not quoted."""
    return (("Critical batch per target (ours)", table), ("Steps to each target (seed medians, ours)", steps),
            ("Method and sources", method))
