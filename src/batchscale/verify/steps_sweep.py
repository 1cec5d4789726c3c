"""The seeded steps-to-target sweep that ``regimes`` and ``noise-scale`` share, and its analysis.

The sweep runs through :func:`batchscale.empirical.sweep.run_steps_sweep` with a store (``--db``, else
``batchscale-out/runs.sqlite``, the same file ``batchscale sweep steps`` uses), so a second ``verify``
run reuses every trial and an interrupted one resumes. Each optimizer's curve is analysed by
:func:`batchscale.theory.regimes.analyze_steps_curve` (fit of S(B) = S_min (1 + B_crit/B), seed
bootstrap, critical batch under every named definition, regime labels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from batchscale.verify.registry import Options

DEFAULT_STORE = "batchscale-out/runs.sqlite"
SEEDS = 3
# --quick: the README's quick sweep (digits-mlp, batch 4..256, SGD and momentum 0.9, target 10 % error)
QUICK = {
    "workload": "digits-mlp",
    "workload_options": (),
    "batch_sizes": (4, 8, 16, 32, 64, 128, 256),
    "n_learning_rates": 6,
    "target": 0.1,
    "max_steps": 4000,
    "max_extensions": 2,
    "eval_subset": None,  # the whole test set
}
FULL = {"workload": "mnist1d-mlp", "workload_options": (("n_samples", 20000),), "target": 0.2}


@dataclass(frozen=True)
class Curve:
    """One optimizer's measured curve: per batch size (ascending) the steps and best rate of every seed
    (None = that seed missed the target), and its :class:`batchscale.theory.regimes.CurveAnalysis`."""

    optimizer: str
    batch_sizes: tuple[int, ...]
    seed_steps: tuple[tuple[float | None, ...], ...]
    seed_learning_rates: tuple[tuple[float | None, ...], ...]
    analysis: Any


@dataclass(frozen=True)
class SweepResult:
    """The sweep's rows, its curves per optimizer, the store it used and its config (a dict)."""

    rows: list[dict[str, Any]]
    curves: dict[str, Curve]
    store: str
    config: dict[str, Any]
    n_seeds: int


def sweep_config(opts: Options) -> Any:
    """The :class:`StepsSweepConfig` of ``opts``: the quick sweep under ``--quick``, else the headline one;
    ``--workload``/``-W`` replace the workload, ``--seed``/``--seeds`` the seeds. The device is resolved
    (``auto`` -> ``cpu`` or ``cuda``) as ``sweep steps`` does, so both store the same trial ids and share
    trials."""
    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.sweep import StepsSweepConfig

    settings: dict[str, Any] = dict(QUICK if opts.quick else FULL)
    if opts.workload is not None:
        settings["workload"] = opts.workload
        settings["workload_options"] = tuple(dict(opts.workload_options).items())
    elif opts.workload_options:
        settings["workload_options"] = tuple(dict(opts.workload_options).items())
    seeds = tuple(opts.seed_list(SEEDS))
    return StepsSweepConfig(
        optimizers=("sgd", "momentum"), momentum=0.9, seeds=seeds, device=str(resolve_device(opts.device)),
        **settings
    )


def _per_seed(row: dict[str, Any], key: str, fallback: str) -> tuple[float | None, ...]:
    values = row.get(key)
    if values is None:  # rows without per-seed values: the point's seed median only
        values = [row.get(fallback)]
    return tuple(None if v is None or not math.isfinite(float(v)) else float(v) for v in values)


def curves_of(rows: list[dict[str, Any]], optimizers: tuple[str, ...], seed: int = 0) -> dict[str, Curve]:
    """Each optimizer's per-seed steps and rates, analysed by ``analyze_steps_curve``."""
    from batchscale.theory.regimes import analyze_steps_curve

    out = {}
    for name in optimizers:
        mine = sorted((r for r in rows if r["optimizer"] == name), key=lambda r: r["batch_size"])
        batch = tuple(int(r["batch_size"]) for r in mine)
        steps = tuple(_per_seed(r, "seed_steps", "steps") for r in mine)
        rates = tuple(_per_seed(r, "seed_learning_rates", "learning_rate") for r in mine)
        analysis = analyze_steps_curve(batch, [list(s) for s in steps], seed=seed)
        out[name] = Curve(name, batch, steps, rates, analysis)
    return out


def seed_bootstrap(batch_sizes: Any, matrix: list[Any], n_bootstrap: int, seed: int,
                   level: float = 0.95) -> tuple[Any, Any]:
    """Per resample (``n_bootstrap``, generator ``seed``) of the seeds (``matrix[i]``: point i's per-seed
    steps, an array), calibrated to ``level``
    (:func:`batchscale.theory.regimes.seed_bootstrap_curves`: pooled within-point deviations, t-scaled):
    the seed-median steps (K, n) and the curve refitted to them, (S_min, B_crit) per resample (K, 2)
    (:func:`batchscale.theory.noise_scale.fit_log_curves`). A standard error from these draws is the one
    whose +-1.96 interval is the 95% one."""
    import numpy as np

    from batchscale.theory.noise_scale import fit_log_curves
    from batchscale.theory.regimes import padded_seed_matrix, seed_bootstrap_curves

    padded = padded_seed_matrix(matrix)  # (n, seeds)
    log_draws = seed_bootstrap_curves(padded, n_bootstrap, np.random.default_rng(seed), level)  # (K, n)
    params = np.exp(fit_log_curves(np.log(np.asarray(batch_sizes, dtype=float)), log_draws))  # (K, 2)
    return np.exp(log_draws), params


def run_sweep(opts: Options) -> SweepResult:
    """Run (or reuse from the store) the seeded sweep of ``opts`` on the inline executor."""
    from batchscale.empirical.executors import ExecutorConfig
    from batchscale.empirical.sweep import run_steps_sweep

    config = sweep_config(opts)
    store = opts.db or DEFAULT_STORE
    if opts.db is None:
        import os

        os.makedirs(os.path.dirname(store), exist_ok=True)
    opts.say(f"steps sweep ({config.workload}, batch {config.batch_sizes[0]}..{config.batch_sizes[-1]}, "
             f"{len(config.seeds)} seeds) in {store}")
    rows, _ = run_steps_sweep(config, store=store, executor=ExecutorConfig(name="inline"),
                              progress=opts.say)
    curves = curves_of(rows, config.optimizers, seed=opts.seed)
    return SweepResult(rows, curves, store, config.to_dict(), len(config.seeds))
