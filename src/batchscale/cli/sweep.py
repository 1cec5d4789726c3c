"""``batchscale sweep``: many training runs in a resumable store; steps-to-target curves, LR x batch grids."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from batchscale.cli.common import (
    FINITE,
    FilePath,
    FiniteFloat,
    FloatList,
    FolderPath,
    IntList,
    Range,
    counted,
    device_option,
    emit,
    format_option,
    key_value_option,
    on_interrupt,
    plot_option,
    progress,
    quick_option,
    seed_option,
    workload_options,
)

DEFAULT_OUT = "batchscale-out"
HEADLINE_OPTIONS = {"mnist1d-mlp": {"n_samples": 20000}}

# The --quick variants (demos in well under a minute; see docs/sweep.md): parameter -> value.
QUICK_STEPS = {
    "workload": "digits-mlp",
    "workload_option": {},
    "batch_sizes": (4, 8, 16, 32, 64, 128, 256),
    "n_learning_rates": 6,
    "target": 0.1,
    "max_steps": 4000,
    "max_extensions": 2,
    "eval_subset": 0,
}
QUICK_GRID = {
    "workload": "digits-mlp", "workload_option": {}, "batch_sizes": (1, 4, 16, 64, 256), "epochs": 1.0,
}

STEPS_COLUMNS = [
    "optimizer", "batch_size", "steps", "examples", "learning_rate", "momentum", "regime", "status",
    "n_trials", "at_edge", "edge",
]
GRID_COLUMNS = [
    "batch_size", "base_learning_rate", "learning_rate", "effective_learning_rate", "test_accuracy",
    "test_metric", "diverged", "n_trials", "steps", "status",
]


class TargetType(click.ParamType):
    """A finite number, or ``auto``."""

    name = "number|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return FINITE.convert(value, param, ctx)


def store_options(func: Callable) -> Callable:
    """``--out``, ``--db``."""
    func = click.option(
        "--db",
        "db_path",
        type=FilePath(output=True),
        default=None,
        help="SQLite results database (default: OUT/runs.sqlite); re-running resumes from it.",
    )(func)
    return click.option(
        "--out",
        "out_dir",
        type=FolderPath(),
        default=DEFAULT_OUT,
        show_default=True,
        help="Output folder (results database, executor logs).",
    )(func)


def executor_options(func: Callable) -> Callable:
    """``--executor``, ``--workers``, ``--threads``, ``--executor-option``."""
    func = key_value_option(
        "--executor-option",
        "-X",
        "executor_option",
        help="Executor option, repeatable: submitit cluster=local|debug|slurm, slurm_partition=..., "
        "timeout_min=...; ray address=HOST:PORT.",
    )(func)
    func = click.option(
        "--threads", type=click.IntRange(min=1), default=1, show_default=True,
        help="torch threads per worker."
    )(func)
    func = click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Chunks run at once (default: one per core for local; 2 x cores for submitit/ray).",
    )(func)
    return click.option(
        "--executor",
        "executor_name",
        type=click.Choice(["local", "inline", "submitit", "ray"]),
        default="local",
        show_default=True,
        help="Where trials run: local process pool, inline (this process), submitit (Slurm; extra "
        "'slurm') or ray (extra 'ray').",
    )(func)


@click.group()
def sweep() -> None:
    """Train many runs: steps-to-target per batch size, LR x batch grids."""


def _resolved_workload(workload: str, workload_option: Mapping[str, Any]) -> dict[str, Any]:
    return {**HEADLINE_OPTIONS.get(workload, {}), **workload_option}


def _db_path(out_dir: str, db_path: str | None) -> Path:
    return Path(db_path) if db_path else Path(out_dir) / "runs.sqlite"


def _executor_config(name: str, workers: int | None, threads: int, out_dir: str, options: Mapping[str, Any]):
    from batchscale.empirical.executors import ExecutorConfig

    extra = tuple(sorted(options.items()))
    folder = str(Path(out_dir) / "executor")
    config = ExecutorConfig(name=name, workers=workers, threads=threads, folder=folder, options=extra)
    return config.validate()


def _n_train(workload: str, options: Mapping[str, Any], data_seed: int) -> int:
    """The training set's size: from the options for built-in workloads; a user factory (or a file
    dataset read whole) is built once, which also checks it before any trial trains."""
    from batchscale.empirical.workloads import get_workload, training_set_size

    n_train = training_set_size(workload, options)
    if n_train is None:
        n_train = get_workload(workload, device="cpu", seed=data_seed, **dict(options)).n_train
    return n_train


@sweep.command("steps")
@workload_options()
@click.option("--batch-sizes", type=IntList(), default="1..2048", show_default=True,
              help="Batch sizes: powers of two LO..HI and/or a comma list.")
@click.option("--optimizers", default="sgd,momentum", show_default=True,
              help="Comma list of optimizers (sgd, momentum, nesterov, adam); one search chain each.")
@click.option("--momentum", type=FINITE, default=0.9, show_default=True,
              help="Momentum of momentum/nesterov (Adam's beta1) when not tuned.")
@click.option("--tune-momentum", is_flag=True, help="Also search 1 - momentum, log-uniformly (quasi-random).")
@click.option("--momentum-range", type=Range(), default="0.01:0.5", show_default=True,
              help="LO:HI range of 1 - momentum searched with --tune-momentum.")
@click.option("--search", type=click.Choice(["auto", "grid", "quasi-random"]), default="auto",
              show_default=True, help="Rates factor --lr-factor apart (grid) or scrambled Halton points; "
              "auto = grid, or quasi-random with --tune-momentum.")
@click.option("--lrs", "n_learning_rates", type=click.IntRange(min=1), default=8, show_default=True,
              help="Learning rates per batch size (per window).")
@click.option("--later-lrs", "later_learning_rates", type=click.IntRange(min=2), default=None,
              help="Learning rates in the window of every batch size after the first [default: --lrs]. "
              "Fewer is cheaper; a window is still extended past an edge holding the best rate, so the "
              "answer changes only where steps vs rate has two minima (docs/sweep.md measures it).")
@click.option("--lr-factor", type=FiniteFloat(min=1, min_open=True, max=100), default=2.0, show_default=True,
              help="Ratio of neighbouring learning rates in a window.")
@click.option("--lr-range", type=Range(), default="0.002:0.25", show_default=True,
              help="LO:HI learning rates searched at the first batch size, times 1 - momentum for "
              "momentum/nesterov (later batch sizes: a window around a linear-scaling guess).")
@click.option("--max-extensions", type=click.IntRange(min=0), default=3, show_default=True,
              help="Times a batch size's window is extended past an edge holding the optimum.")
@click.option("--lr-refine", "refine_levels", type=click.IntRange(min=0), default=3, show_default=True,
              help="Refine the best rate between its neighbours at factors lr-factor^(1/2), ^(1/4), ... "
              "for at most this many levels (0: off).")
@click.option("--lr-refine-tolerance", "refine_tolerance", type=click.FloatRange(0, 1, min_open=True,
              max_open=True), default=0.05, show_default=True,
              help="Stop refining once one more level changes the best steps by less than this (relative).")
@click.option("--n-seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Seeds per point (seed, seed+1, ...), stacked in one model; a point's steps are the "
              "median, with the min..max over seeds and each seed's own best rate.")
@click.option("--target", type=TargetType(), default="0.2", show_default=True,
              help="Target test metric (error 0.2 = 80% accuracy), or auto: a reference run (first "
              "optimizer, smallest batch size, first rate window x seeds, each --max-steps updates without "
              "a target) finds the best final metric M* and the initial M0, and the target is "
              "M0 - f x (M0 - M*), f = --target-fraction (see docs/sweep.md).")
@click.option("--target-fraction", type=FiniteFloat(min=0, max=1, min_open=True, max_open=True), default=0.9,
              show_default=True, help="With --target auto: how far from the initial metric to the best "
              "reached the target sits (0.9: 10% of that range above the best).")
@click.option("--target-budget", type=click.IntRange(min=1), default=None,
              help="--target auto: steps of each reference trial [default: --max-steps / 10]; the best "
              "metric M* is the best reached within this budget.")
@click.option("--target-metric", type=click.Choice(["error", "loss"]), default="error", show_default=True,
              help="Metric the target applies to.")
@click.option("--max-steps", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="Step budget per trial.")
@click.option("--budget-factor", type=FiniteFloat(min=0), default=2.0, show_default=True,
              help="Later batch sizes stop trials at this x the previous best steps (0: no cap).")
@click.option("--no-prune", is_flag=True,
              help="Do not stop any trial early (every trial runs to the target or its budget).")
@click.option("--verify-pruned/--no-verify-pruned", default=True, show_default=True,
              help="Stop trials only once they can no longer change the answer (past their seed's limit "
              "max(k x best median, own best)), and re-run any trial a heuristic pruning left in the store "
              "that could still matter, so pruning never changes the answer (the default; docs/sweep.md). "
              "--no-verify-pruned uses the engine's heuristic pruning rule and keeps its answer.")
@click.option("--eval-subset", type=click.IntRange(min=0), default=800, show_default=True,
              help="Evaluate on the first N test examples (0: all).")
@click.option("--loss-form", type=click.Choice(["mean", "sum"]), default="mean", show_default=True,
              help="Mean or sum of the per-example losses of a batch.")
@click.option("--warmup-fraction", type=FINITE, default=0.0, show_default=True,
              help="Linear warm-up over round(F x max steps) updates of every trial, 0 <= F < 1. Any "
              "warm-up or decay needs --budget-factor 0, so the horizon is --max-steps for every trial.")
@click.option("--decay", type=click.Choice(["none", "linear", "cosine"]), default="none", show_default=True,
              help="After the warm-up: constant rate (none), or linear/cosine decay to 0 at --max-steps "
              "(the horizon; steps to target under decay depend on it). Needs --budget-factor 0.")
@click.option("--weight-decay", type=FINITE, default=0.0, show_default=True,
              help="L2 weight decay of every trial (torch.optim's weight_decay), >= 0.")
@click.option("--critical-fraction", type=FiniteFloat(min=0, min_open=True), default=0.2, show_default=True,
              help="Critical batch (examples_overhead, zhang2024): examples to target this fraction above "
              "their minimum (resp. the smallest batch's).")
@quick_option(QUICK_STEPS, "digits-mlp, batch 4..256, 6 rates, target 10% error, 4000 steps max")
@store_options
@executor_options
@device_option
@seed_option
@plot_option
@format_option()
def steps(workload, workload_option, batch_sizes, optimizers, momentum, tune_momentum, momentum_range, search,
          n_learning_rates, later_learning_rates, lr_factor, lr_range, max_extensions, refine_levels,
          refine_tolerance, n_seeds,
          target, target_fraction, target_budget, target_metric, max_steps,
          budget_factor, no_prune, verify_pruned, eval_subset, loss_form, warmup_fraction, decay,
          weight_decay, critical_fraction, out_dir,
          db_path,
          executor_name, workers, threads, executor_option, device, seed, plot_path, fmt):
    """Steps to target vs batch size, learning rate tuned.

    Shallue et al. (2018): the learning rate (and, with --tune-momentum, the momentum) is searched per
    batch size. Per optimizer, batch sizes run in ascending order; each searches a window of learning
    rates centred on a linear-scaling guess from the previous optimum, extended while the best rate sits
    on an edge. Every trial is stored in --db as it ends; re-running the same command skips finished
    trials.

    A training recipe (--warmup-fraction, --decay, --weight-decay) applies to every trial and is part of
    its stored id. A schedule is a function of its horizon: with a warm-up or decay every trial runs
    over the same horizon --max-steps (so --budget-factor 0 is required), and the steps to target
    under a decay depend on that horizon: choose --max-steps as the real run's length.
    """
    from dataclasses import replace

    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.sweep import StepsSweepConfig, resolved_sweep_config, run_steps_sweep

    for name in ("target_fraction", "target_budget"):
        if target != "auto" and _given(name):
            hint = "--" + name.replace("_", "-")
            raise click.BadParameter("applies to --target auto only", param_hint=hint)
    auto = target == "auto"
    config = StepsSweepConfig(
        workload=workload,
        workload_options=_resolved_workload(workload, workload_option),
        batch_sizes=tuple(batch_sizes),
        optimizers=tuple(o.strip() for o in optimizers.split(",") if o.strip()),
        momentum=momentum,
        tune_momentum=tune_momentum,
        one_minus_momentum_range=momentum_range,
        search=search,
        n_learning_rates=n_learning_rates,
        later_learning_rates=later_learning_rates,
        lr_factor=lr_factor,
        lr_range=lr_range,
        max_extensions=max_extensions,
        refine_levels=refine_levels,
        refine_tolerance=refine_tolerance,
        seeds=tuple(range(seed, seed + n_seeds)),
        data_seed=seed,
        target_metric=target_metric,
        target=StepsSweepConfig.target if auto else target,
        target_fraction=target_fraction if auto else None,
        target_budget=target_budget if auto else None,
        max_steps=max_steps,
        budget_factor=budget_factor or None,
        prune=not no_prune,
        verify_pruned=verify_pruned,
        eval_subset=eval_subset or None,
        loss_form=loss_form,
        device=str(resolve_device(device)),
        warmup_fraction=warmup_fraction,
        decay=decay,
        weight_decay=weight_decay,
    )
    executor_config = _executor_config(executor_name, workers, threads, out_dir, executor_option)
    db = _db_path(out_dir, db_path)
    what = f"{len(config.batch_sizes)} batch sizes x {', '.join(config.optimizers)}"
    rows = _execute(run_steps_sweep, "sweep steps", what, config, executor_config, db, threads)
    rows = _with_regimes(rows, config.optimizers, critical_fraction)
    _report_edges(rows)
    sweep_config = {**config.to_dict(), "executor": executor_config.to_dict(), "db": str(db),
                    "critical_fraction": critical_fraction}
    sweep_config = resolved_sweep_config(sweep_config, rows)
    config = replace(config, target=sweep_config["target"])
    out = [{**row, "sweep": sweep_config} for row in rows]
    if plot_path:
        _plot_steps(plot_path, rows, config)
    if fmt == "table":
        click.echo(regime_summary(rows, config.optimizers))
    emit(out, fmt, columns=STEPS_COLUMNS if fmt == "table" else None)


def _given(name: str) -> bool:
    """Whether the user gave parameter ``name`` (command line or environment), not its default."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _execute(run_sweep: Callable, label: str, what: str, config: Any, executor_config: Any, db: Path,
             threads: int) -> list[dict[str, Any]]:
    """Run the sweep with progress lines (it validates ``config`` before creating the store), return rows."""
    n_train = _n_train(config.workload, dict(config.workload_options), config.data_seed)
    started = time.monotonic()

    def say_start() -> None:
        progress(f"{label}: {config.workload} ({n_train} train), {what}; store {db}; "
                 f"executor {executor_config.name}")

    resume = (f"the trials finished so far are stored in {db}; run the same command again to resume "
              "(they are reused, not trained again)")
    with on_interrupt(resume):
        rows, stats = run_sweep(config, store=db, executor=executor_config, n_train=n_train, threads=threads,
                                progress=progress, on_start=say_start)
    progress(f"done in {time.monotonic() - started:.1f}s: {stats.trained} trials trained, "
             f"{stats.reused} reused from {db}")
    if stats.phases:
        parts = ", ".join(f"{name} {trials} ({steps})" for name, (trials, steps) in stats.phases.items())
        progress(f"trials (optimizer steps) trained per phase: {parts}")
    return rows


def _with_regimes(rows: list[dict[str, Any]], optimizers: Sequence[str], critical_fraction: float):
    """Regime and critical-batch columns added to every row (:func:`batchscale.verify.sweeps.with_regimes`,
    which the Python API's ``sweep_steps`` calls too), the critical batch sizes said on stderr."""
    from batchscale.verify.sweeps import with_regimes

    return with_regimes(rows, optimizers, critical_fraction, progress=progress)


def regime_summary(rows: Sequence[Mapping[str, Any]], optimizers: Sequence[str]) -> str:
    """Per optimizer, one line per critical-batch definition (value [interval]) and the max useful batch."""
    from batchscale.theory.regimes import CRITICAL_DEFINITIONS, MAX_USEFUL_DEFINITION, Estimate

    lines = []
    for optimizer in optimizers:
        row = next((r for r in rows if r["optimizer"] == optimizer), None)
        if row is None:
            continue
        level = row.get("interval_level", 0.95)
        lines.append(f"{optimizer}: {level:.0%} intervals ({row.get('bootstrap')} bootstrap)")
        names = [(f"critical_batch_{n}", f"critical batch, {n}") for n in CRITICAL_DEFINITIONS]
        for key, title in [*names, ("max_useful_batch", "maximal useful batch")]:
            estimate = Estimate(row.get(key), row.get(f"{key}_low"), row.get(f"{key}_high"),
                                bool(row.get(f"{key}_identifiable")), row.get(f"{key}_note", ""))
            lines.append(f"  {title:35s} {estimate.text()}")
    lines += ["definitions:", *(f"  {name}: {text}" for name, text in CRITICAL_DEFINITIONS.items()),
              f"  maximal useful: {MAX_USEFUL_DEFINITION}"]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _report_edges(rows: Sequence[Mapping[str, Any]]) -> None:
    for row in rows:
        if row["at_edge"]:
            progress(f"warning: {row['optimizer']} B={row['batch_size']}: the best trial sits on the "
                     f"{row['edge']} edge of the searched range after {row['extensions']} extension(s); "
                     "widen --lr-range or raise --max-extensions")


def _plot_steps(path: str, rows: Sequence[Mapping[str, Any]], config: Any) -> None:
    from batchscale.report.plots import plot_steps_vs_batch

    curves, regimes = {}, {}
    for optimizer in config.optimizers:
        curve = [r for r in rows if r["optimizer"] == optimizer]
        label = optimizer if optimizer == "sgd" else f"{optimizer} {config.momentum:g}"
        if config.tune_momentum and optimizer != "sgd":
            label = f"{optimizer} (tuned)"
        curves[label] = {
            "batch_size": [r["batch_size"] for r in curve],
            "steps": [math.nan if r["steps"] is None else r["steps"] for r in curve],
            "learning_rate": [math.nan if r["learning_rate"] is None else r["learning_rate"] for r in curve],
            **_seed_ranges(curve),
            **_fitted(curve),
        }
        regimes[label] = [r["regime"] for r in curve]
    target = f"loss {config.target}"
    if config.target_metric == "error":
        target = f"{1 - config.target:.0%} accuracy"
    bars = any("steps_low" in c for c in curves.values())
    plot_steps_vs_batch(path, curves, regimes=regimes, title=f"{config.workload}: steps to {target}",
                        ylabel="steps to target" + (" (bars: range over seeds)" if bars else ""))
    progress(f"wrote {path}")


def _fitted(curve: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """The fitted S_min (1 + B_crit/B) at the curve's batch sizes as ``fit_steps`` (none without a fit)."""
    s_min, b_crit = curve[0].get("fit_s_min"), curve[0].get("fit_b_crit")
    if s_min is None or b_crit is None:
        return {}
    return {"fit_steps": [s_min * (1 + b_crit / r["batch_size"]) for r in curve]}


def _seed_ranges(curve: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Smallest and largest steps and best learning rate across seeds per point (``seed_steps``,
    ``seed_learning_rates``; missed seeds left out), as ``steps_low``/... for plot_steps_vs_batch."""
    out: dict[str, list[float]] = {}
    for key, low, high in (("seed_steps", "steps_low", "steps_high"),
                           ("seed_learning_rates", "lr_low", "lr_high")):
        if any(r.get(key) for r in curve):
            values = [[v for v in (r.get(key) or []) if v is not None] for r in curve]
            out[low] = [min(v) if v else math.nan for v in values]
            out[high] = [max(v) if v else math.nan for v in values]
    return out


@sweep.command("grid")
@workload_options()
@click.option("--batch-sizes", type=IntList(), default="1..1024", show_default=True,
              help="Batch sizes: powers of two LO..HI and/or a comma list.")
@click.option("--lrs", "learning_rates", type=FloatList(), default=None,
              help="Comma list of (base) learning rates; default 2^-14 .. 2^-4 (sum form) or "
              "2^-8 .. 2^1 (mean form), factor 4 apart.")
@click.option("--optimizer", default="sgd", show_default=True, help="sgd, momentum, nesterov or adam.")
@click.option("--momentum", type=FINITE, default=0.0, show_default=True,
              help="Momentum (needed > 0 for momentum/nesterov).")
@click.option("--loss-form", type=click.Choice(["sum", "mean"]), default="sum", show_default=True,
              help="sum: --lrs are base learning rates eta/m (Masters & Luschi); mean: plain rates.")
@click.option("--epochs", type=FiniteFloat(min=0, min_open=True), default=5.0, show_default=True,
              help="Training budget in epochs.")
@click.option("--last-evals", type=click.IntRange(min=1), default=3, show_default=True,
              help="A cell's accuracy is the median over this many last evaluations.")
@click.option("--n-seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeds per cell (median).")
@click.option("--eval-subset", type=click.IntRange(min=0), default=0, show_default=True,
              help="Evaluate on the first N test examples (0: all).")
@quick_option(QUICK_GRID, "digits-mlp, batch 1..256 (factor 4), 1 epoch")
@store_options
@executor_options
@device_option
@seed_option
@plot_option
@format_option()
def grid(workload, workload_option, batch_sizes, learning_rates, optimizer, momentum, loss_form, epochs,
         last_evals, n_seeds, eval_subset, out_dir, db_path, executor_name, workers, threads,
         executor_option, device, seed, plot_path, fmt):
    """Test accuracy over base learning rate x batch size.

    Masters & Luschi (2018): every cell trains for --epochs epochs without a target; its accuracy is the
    median of the last evaluations, and a cell counts as diverged when most of its seeds diverged.
    """
    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.sweep import GridSweepConfig, run_grid_sweep

    if learning_rates:
        rates = tuple(learning_rates)
    else:
        rates = tuple(2.0**k for k in (range(-14, -3, 2) if loss_form == "sum" else range(-8, 2, 2)))
    options = _resolved_workload(workload, workload_option)
    sizes = tuple(batch_sizes)
    config = GridSweepConfig(
        workload=workload, workload_options=options, batch_sizes=sizes, learning_rates=rates,
        optimizer=optimizer, momentum=momentum, loss_form=loss_form, epochs=epochs,
        seeds=tuple(range(seed, seed + n_seeds)), data_seed=seed, last_evals=last_evals,
        eval_subset=eval_subset or None, device=str(resolve_device(device)),
    )
    executor_config = _executor_config(executor_name, workers, threads, out_dir, executor_option)
    db = _db_path(out_dir, db_path)
    what = f"{len(sizes)} batch sizes x {len(rates)} rates, {counted(epochs, 'epoch')}"
    rows = _execute(run_grid_sweep, "sweep grid", what, config, executor_config, db, threads)
    sweep_config = {**config.to_dict(), "executor": executor_config.to_dict(), "db": str(db)}
    if plot_path:
        _plot_grid(plot_path, rows, config)
    columns = [c for c in GRID_COLUMNS if any(c in r for r in rows)] if fmt == "table" else None
    emit([{**row, "sweep": sweep_config} for row in rows], fmt, columns=columns)


def _plot_grid(path: str, rows: Sequence[Mapping[str, Any]], config: Any) -> None:
    from batchscale.report.plots import plot_heatmap

    key = "base_learning_rate" if config.loss_form == "sum" else "learning_rate"
    cells = {(r["batch_size"], r[key]): r for r in rows}
    values = [[_nan_if_none(cells[(b, lr)]["test_accuracy"]) for b in config.batch_sizes]
              for lr in config.learning_rates]
    diverged = [[bool(cells[(b, lr)]["diverged"]) for b in config.batch_sizes]
                for lr in config.learning_rates]
    ylabel = "base learning rate (sum form)" if config.loss_form == "sum" else "learning rate"
    plot_heatmap(path, list(config.batch_sizes), list(config.learning_rates), values, diverged=diverged,
                 xlabel="batch size", ylabel=ylabel, value_label="test accuracy",
                 title=f"{config.workload}: test accuracy after {counted(config.epochs, 'epoch')}")
    progress(f"wrote {path}")


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)
