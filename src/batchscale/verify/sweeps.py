"""Steps-to-target sweeps of real training joined with the theory's curve analysis: the regime and
critical-batch columns of ``batchscale sweep steps`` (:func:`with_regimes`, called by the command) and
``batchscale.sweep_steps`` (:func:`sweep_steps`), which returns the command's rows."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from batchscale.errors import require
from batchscale.theory.nqm_curve import Progress, quiet, reporter


def with_regimes(rows: list[dict[str, Any]], optimizers: Sequence[str], critical_fraction: float,
                 progress: Progress = quiet) -> list[dict[str, Any]]:
    """Each optimizer's curve analysed (batchscale.theory.regimes.analyze_steps_curve, bootstrap over the
    per-seed steps ``seed_steps`` when the rows carry them): regime, speed-up per doubling, and the
    curve's critical batch sizes under every named definition with intervals, added to every row."""
    from batchscale.theory.regimes import analyze_steps_curve

    out = []
    for optimizer in optimizers:
        curve = [r for r in rows if r["optimizer"] == optimizer]
        seeds = [r.get("seed_steps") or [r["steps"]] for r in curve]
        analysis = analyze_steps_curve([r["batch_size"] for r in curve], seeds,
                                       critical_fraction=critical_fraction)
        points = dict(zip(analysis.batch_sizes, analysis.rows(), strict=True))
        summary = analysis.summary()
        critical = ", ".join(f"{name} {e.text()}" for name, e in analysis.critical.items())
        progress(f"{optimizer}: critical batch size {critical}; maximal useful batch size "
                 f"{analysis.max_useful.text()} ({analysis.level:.0%} intervals, {analysis.bootstrap} "
                 "bootstrap)")
        for row in curve:
            point = points[row["batch_size"]]
            out.append({**row, "regime": point["regime"], "speedup": point["speedup"],
                        "speedup_low": point["speedup_low"], "speedup_high": point["speedup_high"],
                        "critical_batch_size": analysis.critical["mccandlish"].value,
                        "critical_batch_definition": "mccandlish",
                        "max_useful_batch_size": analysis.max_useful.value, **summary})
    return out


def choose_executor(executor: str) -> tuple[str, str | None]:
    """``auto``: the local process pool, or ``inline`` (this process) with the reason when spawning
    workers is unsafe (a script whose top level is not under ``if __name__ == "__main__":``: spawn would
    run it again in every worker). Any other name is returned as given."""
    from batchscale.empirical.executors import main_reimports_unguarded

    if executor != "auto":
        return executor, None
    if main_reimports_unguarded():
        return "inline", ("running the sweep in this process (inline): this script has no "
                          "`if __name__ == \"__main__\":` guard, and the local process pool would run it "
                          "again in every worker; put the script's code under that guard to use the pool")
    return "local", None


COMMAND_ONLY = ("workload", "workload_options", "batch_sizes", "optimizers", "seeds", "data_seed", "device")


def sweep_steps(
    workload: str = "digits-mlp",
    *,
    workload_options: Mapping[str, Any] | None = None,
    batch_sizes: Sequence[int] = tuple(2**k for k in range(12)),
    optimizers: Sequence[str] = ("sgd", "momentum"),
    n_seeds: int = 3,
    seed: int = 0,
    critical_fraction: float = 0.2,
    store: str | Path | None = None,
    executor: str = "auto",
    workers: int | None = None,
    threads: int = 1,
    device: str = "cpu",
    progress: bool | Progress = False,
    **settings: Any,
) -> list[dict[str, Any]]:
    """The rows of ``batchscale sweep steps --format json`` for the same settings: per optimizer and batch
    size the fewest steps to the target with the learning rate tuned (median over seeds ``seed``,
    ``seed + 1``, ...), the regime, the speed-up per doubling and the curve's critical batch sizes with
    intervals (:func:`with_regimes`), and the sweep's configuration under ``"sweep"``.

    ``settings`` are any other fields of :class:`batchscale.empirical.sweep.StepsSweepConfig` with its
    defaults, which are the command's: ``target``, ``target_metric``, ``max_steps``, ``n_learning_rates``
    (``--lrs``), ``lr_range``, ``lr_factor``, ``max_extensions``, ``refine_levels``, ``eval_subset`` (None:
    all), ``prune`` (False: ``--no-prune``), ``budget_factor``, ``loss_form``, ``momentum``, ...
    ``store``: the SQLite results file (re-running resumes from it); None: a temporary file, deleted after.
    ``executor``: ``inline`` (this process), ``local`` (process pool), ``submitit``, ``ray`` or ``auto``
    (the local pool, or inline with a note when this is a script without an ``if __name__ ==
    "__main__":`` guard; a notebook or an interactive session can use the pool). The command sets
    ``n_samples=20000`` for ``mnist1d-mlp`` by default; here the options are exactly ``workload_options``.
    """
    from dataclasses import fields

    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.executors import ExecutorConfig
    from batchscale.empirical.sweep import StepsSweepConfig, resolved_sweep_config, run_steps_sweep
    from batchscale.empirical.workloads import get_workload, training_set_size

    known = sorted(f.name for f in fields(StepsSweepConfig) if f.name not in COMMAND_ONLY)
    unknown = sorted(set(settings) - set(known))
    require(not unknown, f"unknown sweep setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    require(n_seeds >= 1, f"n_seeds must be >= 1, got {n_seeds}")
    say = reporter(progress)
    name, why = choose_executor(executor)
    if why:
        (say if progress else reporter(True))(why)
    options = dict(workload_options or {})
    config = StepsSweepConfig(
        workload=workload,
        workload_options=options,
        batch_sizes=tuple(batch_sizes),
        optimizers=tuple(optimizers),
        seeds=tuple(range(seed, seed + n_seeds)),
        data_seed=seed,
        device=str(resolve_device(device)),
        **settings,
    )
    with tempfile.TemporaryDirectory(prefix="batchscale-") as tmp:
        db = Path(store) if store is not None else Path(tmp) / "runs.sqlite"
        executor_config = ExecutorConfig(name=name, workers=workers, threads=threads,
                                         folder=str(Path(tmp) / "executor")).validate()
        n_train = training_set_size(workload, options)
        if n_train is None:
            n_train = get_workload(workload, device="cpu", seed=seed, **options).n_train
        rows, _ = run_steps_sweep(config, store=db, executor=executor_config, n_train=n_train,
                                  threads=threads, progress=say)
    rows = with_regimes(rows, config.optimizers, critical_fraction, progress=say)
    sweep_config = {**config.to_dict(), "executor": executor_config.to_dict(), "db": str(db),
                    "critical_fraction": critical_fraction}
    sweep_config = resolved_sweep_config(sweep_config, rows)  # target_fraction: the chosen target
    return [{**row, "sweep": sweep_config} for row in rows]


__all__ = ["choose_executor", "sweep_steps", "with_regimes"]
