r"""``noise-scale``: B_simple measured along training predicts the critical batch of a measured sweep.

Measured: the seeded sweep of :mod:`batchscale.verify.steps_sweep` (its SGD curve analysed by
:func:`batchscale.theory.regimes.analyze_steps_curve`), and, per seed, a plain-SGD run at a small batch
with that batch's best learning rate from the sweep, for the sweep's steps to the target;
:math:`B_{simple} = \mathrm{tr}\,\Sigma / |G|^2` (exact per-example gradients over the training set,
:func:`batchscale.empirical.measure.noise_scale_along_training`) at 4 checkpoints after step 0, averaged.
Rows:

- ``b_simple_over_b_crit``: B_simple (geometric mean over seeds) over the fitted critical batch of the
  SGD curve under McCandlish et al.'s definition :math:`B_{crit} = E_{min}/S_{min}` (the verdict uses
  that one; the ``examples_overhead`` and ``zhang2024`` values are reported beside it in the reason).
  Predicted 1 within the declared factor; the interval joins B_simple's seed range with B_crit's
  bootstrap interval: [Bs_low / Bc_high, Bs_high / Bc_low].
- ``tradeoff_product`` (per optimizer and batch size): :math:`(S/S_{min} - 1)(E/E_{min} - 1)` of the
  measured seed-median point against the fitted :math:`S_{min}, E_{min}`, predicted 1 (McCandlish et
  al. eq. 2.11); its standard error from a seed bootstrap (each point's seeds resampled, the curve
  refitted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, make_row

CLAIM = "noise-scale"
MEASURE_BATCH = {True: 16, False: 32}
CHECKPOINTS = 4  # after step 0
N_BOOTSTRAP = 400


def b_simple_of_run(rows: Sequence[Mapping[str, Any]]) -> float:
    """Mean B_simple over the checkpoints after step 0 with status ``ok`` (nan when there is none)."""
    values = [float(r["b_simple"]) for r in rows
              if r.get("step", 0) > 0 and r.get("status") == "ok" and r.get("b_simple") is not None]
    return float(np.mean(values)) if values else math.nan


def critical_text(analysis: Any) -> str:
    """Every definition's critical batch with its interval, side by side."""
    return "; ".join(f"{name} {est.text()}" for name, est in analysis.critical.items())


def ratio_row(
    b_simple: Sequence[float], analysis: Any, config: dict[str, Any], workload: str, *, scale: float = 1.0
) -> Row:
    """B_simple (times ``scale``: 1/20 plants a wrong prediction) over the fitted McCandlish B_crit."""
    bs = np.asarray([b * scale for b in b_simple if math.isfinite(b) and b > 0], dtype=float)
    est = analysis.critical["mccandlish"]
    seeds = ", ".join(f"{b:.4g}" for b in bs)
    note = f"verdict uses mccandlish; critical batch: {critical_text(analysis)}; B_simple per seed {seeds}"
    if bs.size == 0 or est.value is None:
        return make_row(CLAIM, "b_simple_over_b_crit", workload, 1.0, math.nan, n_seeds=int(bs.size),
                        config=config, note=note)
    geo = float(np.exp(np.mean(np.log(bs))))
    low = 0.0 if est.high is None else float(bs.min()) / est.high
    high = math.inf if est.low is None else float(bs.max()) / est.low
    return make_row(CLAIM, "b_simple_over_b_crit", workload, 1.0, geo / est.value, ci=(low, high),
                    n_seeds=int(bs.size), config=config, note=note)


def tradeoff_products(batch_sizes: np.ndarray, steps: np.ndarray, s_min: np.ndarray, e_min: np.ndarray,
                      exponent: float = 1.0) -> np.ndarray:
    r""":math:`(S/S_{min} - 1)(E/E_{min} - 1)^p` with :math:`E = B S`; ``exponent`` p = 1 is McCandlish
    et al.'s hyperbola (2 plants a wrong one). ``steps`` (..., n), ``s_min``/``e_min`` (...,)."""
    s_min, e_min = np.asarray(s_min)[..., None], np.asarray(e_min)[..., None]
    return (steps / s_min - 1.0) * np.sign(batch_sizes * steps / e_min - 1.0) * np.abs(
        batch_sizes * steps / e_min - 1.0) ** exponent


def tradeoff_rows(curve: Any, config: dict[str, Any], workload: str, *, exponent: float = 1.0,
                  seed: int = 0, n_bootstrap: int = N_BOOTSTRAP) -> list[Row]:
    """One row per batch size that every seed reached: the product on the seed-median curve against the
    fit, and its bootstrap standard error (:func:`batchscale.verify.steps_sweep.seed_bootstrap`: the seeds'
    pooled deviations resampled, calibrated so that +-1.96 of it is the 95% interval; the curve refitted)."""
    from batchscale.verify.steps_sweep import seed_bootstrap

    fit = curve.analysis.fit
    if fit is None:
        return []
    keep = [i for i, s in enumerate(curve.seed_steps) if s and all(v is not None for v in s)]
    b = np.asarray([curve.batch_sizes[i] for i in keep], dtype=float)  # (n,)
    matrix = [np.asarray(curve.seed_steps[i], dtype=float) for i in keep]
    median = np.asarray([np.median(m) for m in matrix])  # (n,)
    measured = tradeoff_products(b, median, fit.s_min, fit.e_min, exponent)  # (n,)
    several = any(m.size > 1 for m in matrix)
    stderr = np.full(b.size, math.nan)
    if several and b.size >= 3:
        draws, params = seed_bootstrap(b, matrix, n_bootstrap, seed)  # (K, n), (K, 2): S_min, B_crit
        products = tradeoff_products(b, draws, params[:, 0], params[:, 0] * params[:, 1], exponent)
        stderr = np.nanstd(products, axis=0, ddof=1)  # (n,)
    rows = []
    for i in range(b.size):
        err = float(stderr[i]) if math.isfinite(stderr[i]) else None
        rows.append(make_row(
            CLAIM, "tradeoff_product", workload, 1.0, float(measured[i]), stderr=err,
            n_seeds=int(matrix[i].size), config=config,
            note=f"{curve.optimizer}, B={int(b[i])}, S={median[i]:.4g}; fit S_min={fit.s_min:.4g}, "
            f"E_min={fit.e_min:.4g}; exponent {exponent:g}"
            + ("" if err is not None else "; no seed spread: one value per point, no interval"),
        ))
    return rows


def measure_b_simple(opts: Options, sweep: Any) -> tuple[list[float], dict[str, Any]]:
    """Per seed, B_simple along a plain-SGD run at the measuring batch with the sweep's best rate there."""
    from batchscale.empirical.measure import (
        NoiseScaleOptions,
        Training,
        build_setup,
        noise_scale_along_training,
    )

    sgd = [r for r in sweep.rows if r["optimizer"] == "sgd" and r.get("steps") is not None]
    if not sgd:  # SGD reached the target at no batch size: nothing to train to
        return [], {"measure_batch": None, "b_simple": []}
    wanted = MEASURE_BATCH[opts.quick]
    row = min(sgd, key=lambda r: (abs(math.log(r["batch_size"] / wanted)), r["batch_size"]))
    batch, lr, steps = int(row["batch_size"]), float(row["learning_rate"]), int(math.ceil(row["steps"]))
    every = max(1, steps // CHECKPOINTS)
    values = []
    for seed in opts.seed_list(sweep.n_seeds):
        opts.say(f"noise-scale: seed {seed}: B_simple along {steps} SGD steps of batch {batch}, lr {lr:.4g}")
        setup = build_setup(sweep.config["workload"], dict(sweep.config["workload_options"]), opts.device,
                            seed, None)
        rows = noise_scale_along_training(setup, Training(steps, lr, batch, seed),
                                          NoiseScaleOptions(methods=("exact",), seed=seed), every=every)
        values.append(b_simple_of_run(rows))
    return values, {"measure_batch": batch, "measure_lr": lr, "measure_steps": steps, "every": every,
                    "b_simple": values}


def noise_scale_rows(b_simple: Sequence[float], curves: Mapping[str, Any], config: dict[str, Any],
                     workload: str, *, scale: float = 1.0, exponent: float = 1.0, seed: int = 0) -> list[Row]:
    """The claim's rows; ``scale`` and ``exponent`` plant wrong predictions (1/20, 2)."""
    rows = [ratio_row(b_simple, curves["sgd"].analysis, config, workload, scale=scale)]
    for curve in curves.values():
        rows += tradeoff_rows(curve, config, workload, exponent=exponent, seed=seed)
    return rows


def run(opts: Options) -> list[Row]:
    from batchscale.verify.steps_sweep import run_sweep

    sweep = run_sweep(opts)
    workload = str(sweep.config["workload"])
    b_simple, measured = measure_b_simple(opts, sweep)
    critical = {
        name: {d: asdict(e) for d, e in c.analysis.critical.items()} for name, c in sweep.curves.items()
    }
    config = opts.config(CLAIM, workload, sweep=sweep.config, store=sweep.store, critical_batch=critical,
                         **measured)
    return noise_scale_rows(b_simple, sweep.curves, config, workload, seed=opts.seed)
