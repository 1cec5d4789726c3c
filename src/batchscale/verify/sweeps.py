"""Steps-to-target sweeps of real training joined with the theory's curve analysis: the regime and
critical-batch columns of ``batchscale sweep steps`` (:func:`with_regimes`, called by the command) and
``batchscale.sweep_steps`` (:func:`sweep_steps`), which returns the command's rows."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def sweep_steps(
    workload: str = "digits-mlp",
    *,
    workload_options: Mapping[str, Any] | None = None,
    batch_sizes: Sequence[int] = (4, 8, 16, 32, 64, 128, 256),
    optimizers: Sequence[str] = ("sgd",),
    momentum: float = 0.9,
    tune_momentum: bool = False,
    momentum_range: tuple[float, float] = (0.01, 0.5),
    search: str = "auto",
    n_learning_rates: int = 8,
    lr_factor: float = 2.0,
    lr_range: tuple[float, float] = (0.002, 0.25),
    max_extensions: int = 3,
    n_seeds: int = 1,
    seed: int = 0,
    target: float = 0.2,
    target_metric: str = "error",
    max_steps: int = 200_000,
    budget_factor: float = 2.0,
    prune: bool = True,
    verify_pruned: bool = True,
    eval_subset: int = 800,
    loss_form: str = "mean",
    critical_fraction: float = 0.2,
    store: str | Path | None = None,
    executor: str = "auto",
    workers: int | None = None,
    threads: int = 1,
    device: str = "cpu",
    progress: bool | Progress = False,
) -> list[dict[str, Any]]:
    """The rows of ``batchscale sweep steps --format json`` for the same settings (same option names with
    underscores; ``prune=False`` is ``--no-prune``): per optimizer and batch size the fewest steps to the
    target with the learning rate tuned, the regime, the speed-up per doubling and the curve's critical
    batch sizes with intervals (:func:`with_regimes`), and the sweep's configuration under ``"sweep"``.

    ``store``: the SQLite results file (re-running resumes from it); None: a temporary file, deleted after.
    ``executor``: ``inline`` (this process), ``local`` (process pool), ``submitit``, ``ray`` or ``auto``
    (the local pool, or inline with a note when this is a script without an ``if __name__ ==
    "__main__":`` guard; a notebook or an interactive session can use the pool). Note the command sets
    ``n_samples=20000`` for ``mnist1d-mlp`` by default; here options are exactly ``workload_options``.
    """
    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.executors import ExecutorConfig
    from batchscale.empirical.sweep import StepsSweepConfig, run_steps_sweep
    from batchscale.empirical.workloads import get_workload, training_set_size

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
        momentum=momentum,
        tune_momentum=tune_momentum,
        one_minus_momentum_range=tuple(momentum_range),
        search=search,
        n_learning_rates=n_learning_rates,
        lr_factor=lr_factor,
        lr_range=tuple(lr_range),
        max_extensions=max_extensions,
        seeds=tuple(range(seed, seed + n_seeds)),
        data_seed=seed,
        target_metric=target_metric,
        target=target,
        max_steps=max_steps,
        budget_factor=budget_factor or None,
        prune=prune,
        verify_pruned=verify_pruned,
        eval_subset=eval_subset or None,
        loss_form=loss_form,
        device=str(resolve_device(device)),
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
    return [{**row, "sweep": sweep_config} for row in rows]


__all__ = ["choose_executor", "sweep_steps", "with_regimes"]
