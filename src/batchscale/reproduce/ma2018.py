r"""``ma2018``: Ma, Bassily & Belkin 2018, "The power of interpolation" (arXiv 1712.06559), on least squares.

Theory (:mod:`batchscale.theory.stability`, loss :math:`(w^\top x - y)^2/2`): MBB's step
:math:`\eta^*(m) = m/(\beta + (m-1)\lambda_1)` and critical batch :math:`m^* = \beta/\lambda_1`
(:math:`\beta = \max_i |x_i|^2`, :math:`\lambda_1` the top eigenvalue of :math:`X^\top X/n`); the exact
mean-square optimal and largest stable steps. The ``linreg`` workload's loss has no 1/2, so its learning
rate is half the theory's step.

Measured on the noiseless ``linreg`` workload (interpolation holds; ``--workload`` takes any least-squares
workload, :func:`least_squares_inputs`): plain SGD trained by batchscale's engine, every trial in the
results store (:mod:`batchscale.reproduce.trials`: a re-run trains nothing, an interrupted one resumes), at
each batch size m with the step set to MBB's :math:`\eta^*(m)` and to the exact optimum: the steps until
the test loss falls to ``TARGET`` of the way from its start to the least-squares solution's, per seed.
The engine draws batches without replacement within each epoch; the theory assumes draws with replacement
(a difference of order m/M). Steps vs m are fitted with :math:`S = S_{min}(1 + B_{crit}/B)`
(:func:`batchscale.theory.regimes.analyze_steps_curve`, seed bootstrap); MBB's steps are proportional to
:math:`1/\eta^*(m) \propto 1 + (m^* - 1)/m`, so the fit's :math:`B_{crit} + 1` measures :math:`m^*`.
The divergence boundary comes from :mod:`batchscale.verify.stability` (its claim rows and tolerance; its
with-replacement runs kept beside the store by :func:`batchscale.reproduce.trials.measured_beside_store`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
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

PAPER = "ma2018"
CITATION = "Ma, Bassily & Belkin 2018, arXiv 1712.06559"
WORKLOAD_OPTIONS = {True: {"dim": 10, "n_train": 256, "n_test": 1024, "noise_std": 0.0},
                    False: {"dim": 20, "n_train": 1024, "n_test": 2048, "noise_std": 0.0}}
BATCH_SIZES = {True: (1, 2, 4, 8, 16, 32, 64), False: (1, 2, 4, 8, 16, 32, 64, 128, 256)}
STABILITY_BATCHES = {True: (1, 8, 64), False: (1, 4, 16, 64, 256)}
SEEDS = {True: 3, False: 5}
STABILITY_STEPS = {True: 300, False: 2000}
TARGET = 1e-3  # reached: full training loss <= TARGET x the loss at w = 0
MAX_STEPS = 20000
M_STAR_FACTOR = 2.0  # declared before any run: m* is a bound-based rule of thumb, agreement within 2x
STEPS_FACTOR = 1.5  # declared: steps from the asymptotic mean-square rate ignore the transient
SOURCE = "arXiv 1712.06559, Sec. 3-4 (as summarized in batchscale.theory.stability)"


def least_squares_inputs(name: str, workload: Any, seed: int = 0) -> np.ndarray:
    """The (M, d) training inputs of a least-squares workload as the theory sees them (a column of ones
    appended when its linear layer has a bias); an InputError, before any training, unless ``workload`` is
    least squares: loss ``mse`` on one output and a model that is a single ``nn.Linear``."""
    from torch import nn

    from batchscale.errors import InputError

    def refuse(why: str) -> InputError:
        return InputError(f"ma2018 runs on least squares (loss mse, a linear model with one output); "
                          f"workload {name!r} {why}")

    if workload.loss != "mse":
        raise refuse(f"has loss {workload.loss}")
    if workload.x_train.dim() != 2 or workload.y_train.dim() != 2 or workload.y_train.shape[1] != 1:
        raise refuse(f"has inputs {tuple(workload.x_train.shape)} and targets {tuple(workload.y_train.shape)}"
                     "; expected (M, d) and (M, 1)")
    model = workload.model(seed)
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    n_params = sum(p.numel() for p in model.parameters())
    if len(linear) != 1 or n_params != sum(p.numel() for p in linear[0].parameters()):
        raise refuse(f"has a model that is not one nn.Linear ({type(model).__name__}, {n_params} parameters)")
    x = workload.x_train.double().cpu().numpy()  # (M, d)
    return np.hstack([x, np.ones((x.shape[0], 1))]) if linear[0].bias is not None else x


def start_and_floor(workload: Any, seed: int, bias: bool) -> tuple[float, float]:
    """Test loss of the model at its initial weights for ``seed``, and of the training set's least-squares
    solution (``bias``: with an intercept), the loss SGD converges to (0 on noiseless data)."""
    import torch

    with torch.no_grad():
        out = workload.model(seed)(workload.x_test)  # (N, 1)
        start = float(workload.per_example_loss(out, workload.y_test).mean())
    x, y = workload.x_train.double().cpu().numpy(), workload.y_train.double().cpu().numpy()  # (M, d), (M, 1)
    xt, yt = workload.x_test.double().cpu().numpy(), workload.y_test.double().cpu().numpy()
    if bias:
        x, xt = np.hstack([x, np.ones((len(x), 1))]), np.hstack([xt, np.ones((len(xt), 1))])
    w = np.linalg.lstsq(x, y, rcond=None)[0]  # (d, 1)
    return start, float(np.mean((xt @ w - yt) ** 2))


def trial_configs(name: str, options: dict[str, Any], batch_size: int, lrs: Sequence[float],
                  seeds: Sequence[int], targets: Sequence[float], data_seed: int) -> list[Any]:
    """The engine's trials at one batch size: plain SGD (mean loss, batches without replacement within an
    epoch), learning rate ``lrs[l]`` x seed ``seeds[k]`` (order l-major), complete when the test loss is
    <= ``targets[k]``, at most :data:`MAX_STEPS` steps."""
    from batchscale.empirical.trials import TrainConfig

    return [TrainConfig(workload=name, workload_options=options, batch_size=batch_size, learning_rate=lr,
                        optimizer="sgd", seed=seed, data_seed=data_seed, max_steps=MAX_STEPS,
                        target_metric="loss", target=target)
            for lr in lrs for seed, target in zip(seeds, targets, strict=True)]


def measured_steps(results: Sequence[Any], n_lrs: int) -> np.ndarray:
    """(L, K) steps to the target of the trials of :func:`trial_configs` (inf when not reached)."""
    steps = [float(r.steps) if r.status == "complete" and r.steps is not None else math.inf for r in results]
    return np.asarray(steps, dtype=float).reshape(n_lrs, -1)


def predicted_steps(rate: float) -> float:
    r"""Steps for E|e|^2 to shrink by TARGET at the per-step factor ``rate``: :math:`\ln T / \ln r`."""
    return math.log(TARGET) / math.log(rate) if 0 < rate < 1 else math.inf


def judge_factor(predicted: float, measured: float, low: float | None, high: float | None,
                 factor: float) -> tuple[str, str]:
    """batchscale.verify's factor rule, in the reproduction's words (pass = reproduced)."""
    from batchscale.verify.rows import judge

    ci = None if low is None or high is None else (low, high)
    v = judge(predicted, measured, factor, "factor", ci=ci)
    word = {"pass": "reproduced", "fail": "not reproduced", "inconclusive": "inconclusive"}[v.verdict]
    return word, f"{v.reason} (prediction {predicted:.4g}, factor {factor:g})"


def m_star_row(m_star: float, analysis: Any, at: str = "MBB's eta*(m)") -> VerdictRow:
    """The verdict on m* from a steps curve measured at the step ``at``: the fit's B_crit + 1 (with its
    interval) against ``m_star`` within :data:`M_STAR_FACTOR`."""
    bc = analysis.b_crit
    meas = None if bc.value is None else bc.value + 1
    lo = None if bc.low is None else bc.low + 1
    hi = None if bc.high is None else bc.high + 1
    verdict, reason = (judge_factor(m_star, meas, lo, hi, M_STAR_FACTOR) if meas is not None and
                       lo is not None and hi is not None else ("inconclusive", bc.note or "no fit"))
    statement = ("critical batch m* = beta/lambda_1: steps fall ~1/m up to m* and saturate beyond")
    quantity = f"B_crit + 1 of S(m) = S_min(1 + B_crit/m) fitted to steps measured at {at}"
    return VerdictRow(PAPER, statement, SOURCE, quantity, meas, lo, hi, verdict, reason)


def reproduce(options: Options) -> Reproduction:
    import torch

    from batchscale.reproduce.trials import Tally, measured_beside_store, prepare_store, train_stored
    from batchscale.theory.regimes import analyze_steps_curve
    from batchscale.theory.stability import stability_table
    from batchscale.verify import stability as vs
    from batchscale.verify.common import build_workload
    from batchscale.verify.registry import package_versions, resolve
    from batchscale.verify.rows import summary

    quick = options.quick
    name = options.workload or "linreg"
    wopts = dict(WORKLOAD_OPTIONS[quick]) if name == "linreg" else {}
    vopts = resolve(quick=quick, seed=options.seed, seeds=options.seeds, device="cpu",
                    progress=options.progress, workload=name, workload_options=wopts)
    workload = build_workload(vopts, name, wopts, data_seed=options.seed)
    inputs = least_squares_inputs(name, workload, options.seed)  # (M, d): InputError if not least squares
    bias = inputs.shape[1] > workload.x_train.shape[1]
    prepare_store(options)
    tally = Tally(options.store)
    seeds = vopts.seed_list(SEEDS[quick])
    batches = tuple(m for m in BATCH_SIZES[quick] if m <= len(inputs))
    table = {r.batch_size: r for r in stability_table(batches, inputs=inputs)}
    first = table[batches[0]]
    m_star, ms_star, lam1 = first.mbb_critical_batch, first.ms_critical_batch, first.lambda_max
    targets = []
    for seed in seeds:
        start, floor = start_and_floor(workload, seed, bias)
        targets.append(float(f"{floor + TARGET * (start - floor):.6g}"))
    options.say(f"ma2018: {name} {wopts}, m* = {m_star:.3g}, {len(seeds)} seeds; store {options.store}")
    mbb_steps, opt_steps = [], []
    for m in batches:
        r = table[m]
        options.say(f"ma2018: m={m}: steps to {TARGET:g} x the start loss at MBB's and the optimal step")
        configs = trial_configs(name, wopts, m, [r.mbb_step / 2, r.optimal_step / 2], seeds, targets,
                                options.seed)
        s = measured_steps(train_stored(options, configs, f"ma2018 m={m}", tally), 2)  # (2, K)
        mbb_steps.append(s[0].tolist())
        opt_steps.append(s[1].tolist())
    mbb = analyze_steps_curve(batches, mbb_steps, n_bootstrap=1000, seed=options.seed)
    opt = analyze_steps_curve(batches, opt_steps, n_bootstrap=1000, seed=options.seed)

    rows: list[VerdictRow] = [m_star_row(m_star, mbb), m_star_row(m_star, opt, "the exact optimal step")]
    # steps at the exact optimal step vs the mean-square rate's prediction, per batch size
    step_rows, verdicts = [], []
    for i, m in enumerate(batches):
        r = table[m]
        pred = predicted_steps(r.optimal_rate)
        med, s_lo, s_hi = opt.steps[i], opt.steps_low[i], opt.steps_high[i]
        v, why = judge_factor(pred, med, s_lo, s_hi, STEPS_FACTOR) if math.isfinite(med) else (
            "inconclusive", "target not reached")
        verdicts.append(v)
        step_rows.append({"batch_size": m, "optimal_lr": r.optimal_step / 2, "mbb_lr": r.mbb_step / 2,
                          "predicted_steps": pred, "measured_steps_median": med, "steps_min": s_lo,
                          "steps_max": s_hi, "mbb_steps_median": mbb.steps[i], "verdict": v, "reason": why})
    overall = ("reproduced" if all(v == "reproduced" for v in verdicts) else
               "not reproduced" if all(v == "not reproduced" for v in verdicts) else "partly")
    rows.append(VerdictRow(PAPER, "SGD at the optimal step converges at the predicted rate for every batch "
                           "size (exact mean-square analysis, our extension of Sec. 3-4)", SOURCE,
                           "steps to the target at the exact optimal step, per m",
                           None, None, None, overall,
                           f"{verdicts.count('reproduced')} of {len(verdicts)} batch sizes within a factor "
                           f"{STEPS_FACTOR:g} of ln(T)/ln(rate) (table below)"))
    # divergence boundary via batchscale.verify's stability claim
    stab_seeds = vopts.seed_list(SEEDS[quick])
    theory_workload = replace(workload, x_train=torch.as_tensor(inputs, dtype=workload.x_train.dtype))
    points = []
    for m in [b for b in STABILITY_BATCHES[quick] if b <= len(inputs)]:
        centre = vs.predicted_max_lr(inputs, m)
        lrs = [centre * f for f in vs.GRID]
        options.say(f"ma2018: m={m}: divergence boundary, {len(lrs)} lrs x {len(stab_seeds)} seeds")
        settings = {"workload": name, "workload_options": wopts, "data_seed": options.seed, "batch_size": m,
                    "lrs": lrs, "seeds": stab_seeds, "steps": STABILITY_STEPS[quick], "bias": bias}
        div = measured_beside_store(
            options, f"ma2018-divergence-m{m}", settings,
            lambda m=m, lrs=lrs: vs.diverges(theory_workload, m, lrs, stab_seeds,
                                             STABILITY_STEPS[quick]).tolist())
        points.append(vs.StabilityPoint(m, centre, vs.boundaries(lrs, np.asarray(div, dtype=bool))))
    config = vopts.config("stability", name, workload_options=workload.options, seeds=stab_seeds,
                          steps=STABILITY_STEPS[quick])
    srows = vs.stability_rows(inputs, points, config)
    passes = [r.verdict == "pass" for r in srows]
    sverdict = "reproduced" if all(passes) else ("not reproduced" if any(r.verdict == "fail" for r in srows)
                                                else "inconclusive")
    rows.append(VerdictRow(PAPER, "the largest stable step grows about linearly in m and saturates at "
                           "2/lambda_1 (mean-square bound)", SOURCE,
                           "divergence boundary measured by training vs predicted (verify claim `stability`)",
                           None, None, None, sverdict, "verify stability: " + summary(srows)))

    bias_note = "The model has a bias: the theory's inputs carry a column of ones." if bias else ""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "steps_vs_batch.csv", step_rows)
    stab_data = [{"batch_size": r.config["batch_size"], "predicted_max_lr": r.predicted,
                  "measured": r.measured,
                  "ci_low": r.ci_low, "ci_high": r.ci_high, "verdict": r.verdict} for r in srows]
    write_json(out / "stability_rows.json", [r.as_dict() for r in srows])
    theory_rows = [{"batch_size": m, "mbb_lr": table[m].mbb_step / 2, "optimal_lr": table[m].optimal_step / 2,
                    "max_stable_lr": table[m].max_stable_step / 2, "full_batch_lr_limit": 1.0 / lam1}
                   for m in batches]
    write_csv(out / "step_sizes_vs_batch.csv", theory_rows)
    figures = (_steps_figure(out, batches, mbb, opt, step_rows, m_star),
               _step_size_figure(out, theory_rows, stab_data, m_star, ms_star))
    sections = (
        ("Steps to the target per batch size (ours)", markdown_table(
            ("m", "lr optimal", "predicted steps", "measured (median)", "seeds' range", "at MBB's lr",
             "verdict"),
            [(r["batch_size"], r["optimal_lr"], r["predicted_steps"], r["measured_steps_median"],
              f"[{r['steps_min']:.4g}, {r['steps_max']:.4g}]", r["mbb_steps_median"], r["verdict"])
             for r in step_rows])),
        ("Divergence boundary (batchscale.verify `stability` rows)", markdown_table(
            ("m", "predicted max lr", "measured", "95% interval", "verdict"),
            [(d["batch_size"], d["predicted_max_lr"], d["measured"],
              "-" if d["ci_low"] is None else f"[{d['ci_low']:.4g}, {d['ci_high']:.4g}]",
              d["verdict"]) for d in stab_data])),
        ("Method and sources", f"""Workload `{name}` {wopts}, data seed {options.seed}. Steps to the target:
plain SGD trained by batchscale's engine (batches drawn without replacement within each epoch; the
theory assumes draws with replacement, a difference of order m/M), complete when the test loss falls to
the least-squares solution's plus {TARGET:g} x (start - that); every trial in the results store
`{options.store}` ({tally.text()}). The divergence boundary is batchscale.verify's `stability`
measurement (batches with replacement, as its theory: not the engine's trials), kept beside the store in
`reproduce-measurements/` and read back by a re-run. {bias_note}
beta = max_i |x_i|^2 = {first.beta:.4g}; lambda_1 = {lam1:.4g}, so m* = beta/lambda_1 =
{m_star:.4g} (exact mean-square analogue 2/(lambda_1 eta_max(1)) = {ms_star:.4g}). Tolerances declared before
the run: m* within a factor {M_STAR_FACTOR:g}; steps within a factor {STEPS_FACTOR:g}; the divergence boundary
uses batchscale.verify's declared tolerance for `stability`. The paper's statements are quoted as
summarized in batchscale.theory.stability (Sec. 3-4); we did not re-read the paper's text for this report,
and its figures' numbers are not quoted."""),
    )
    cfg = {"paper": PAPER, "workload": name, "workload_options": wopts, "seeds": seeds, "targets": targets,
           "batch_sizes": list(batches), "stability_batch_sizes": list(STABILITY_BATCHES[quick]),
           "stability_steps": STABILITY_STEPS[quick], "target": TARGET, "quick": quick,
           "trials": tally.as_dict(), "versions": package_versions()}
    return Reproduction(PAPER, CITATION, tuple(rows), figures, sections, cfg)


def _steps_figure(out, batches, mbb, opt, step_rows, m_star) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    b = np.asarray(batches, dtype=float)
    curves = ((mbb, "measured at MBB's eta*(m)", "C0"), (opt, "measured at the exact optimum", "C1"))
    for a, label, colour in curves:
        s = np.asarray(a.steps)
        ax.errorbar(b, s, yerr=[s - np.asarray(a.steps_low), np.asarray(a.steps_high) - s], fmt="o",
                    color=colour, capsize=3, label=label)
        if a.fit is not None:
            grid = np.geomspace(b.min(), b.max(), 100)
            ax.plot(grid, a.fit.predict_steps(grid), "-", color=colour, lw=1)
    ax.plot(b, [r["predicted_steps"] for r in step_rows], "k--", label="predicted (mean-square rate)")
    ax.axvline(m_star, color="grey", ls=":", label=f"m* = {m_star:.3g}")
    save_log_log(fig, ax, out / "steps_vs_batch.png", "batch size m", f"steps to {TARGET:g} x the start loss",
                 "Least squares: steps vs batch at the predicted step size")
    return Figure("Steps vs batch size", "steps_vs_batch.png", ("steps_vs_batch.csv",),
                  "Median over seeds with the seeds' range; lines: S = S_min(1 + B_crit/m) fitted; dashed: "
                  "predicted from the exact mean-square rate; dotted: MBB's m*.")


def _step_size_figure(out, theory_rows, stab_data, m_star, ms_star) -> Figure:
    from batchscale.report.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    b = [r["batch_size"] for r in theory_rows]
    ax.plot(b, [r["mbb_lr"] for r in theory_rows], "-", label="MBB eta*(m)/2")
    ax.plot(b, [r["optimal_lr"] for r in theory_rows], "-", label="exact optimal lr")
    ax.plot(b, [r["max_stable_lr"] for r in theory_rows], "-", label="exact largest stable lr")
    ax.axhline(theory_rows[0]["full_batch_lr_limit"], color="k", ls="--", lw=1,
               label="full-batch limit 1/lambda_1")
    ok = [d for d in stab_data if d["ci_low"] is not None and math.isfinite(d["measured"])]
    if ok:
        y = np.array([d["measured"] for d in ok])
        ax.errorbar([d["batch_size"] for d in ok], y,
                    yerr=[y - np.array([d["ci_low"] for d in ok]), np.array([d["ci_high"] for d in ok]) - y],
                    fmt="s", color="C3", capsize=3, label="divergence boundary (measured)")
    ax.axvline(m_star, color="grey", ls=":", label=f"m* = {m_star:.3g}")
    ax.axvline(ms_star, color="grey", ls="-.", label=f"mean-square m* = {ms_star:.3g}")
    save_log_log(fig, ax, out / "step_sizes_vs_batch.png", "batch size m", "learning rate (loss (w.x - y)^2)",
                 "Least squares: predicted step sizes vs batch, measured divergence boundary")
    return Figure("Step sizes vs batch size", "step_sizes_vs_batch.png",
                  ("step_sizes_vs_batch.csv", "stability_rows.json"),
                  "Lines: predicted (theory.stability), as learning rates of the workload's loss. "
                  "Squares: the "
                  "divergence boundary measured by training with its 95% interval.")
