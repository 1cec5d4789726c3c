"""``batchscale advise``: which batch size and learning rate for my model? A short measured run."""

from __future__ import annotations

import math
from pathlib import Path

import click

from batchscale.cli.common import (
    FilePath,
    FiniteFloat,
    device_option,
    format_option,
    plot_option,
    progress,
    seed_option,
    workload_options,
)


@click.command("advise")
@workload_options(default="digits-mlp")
@click.option("--budget-steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="SGD steps of the short run along which B_simple is measured.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=0.1, show_default=True,
              help="Learning rate of the short run (plain mean-loss SGD); the probe's grid is centred on it.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch size of the short run.")
@click.option("--checkpoints", type=click.IntRange(min=1), default=4, show_default=True,
              help="Measure B_simple at step 0 and this many more points of the run.")
@click.option("--max-examples", type=click.IntRange(min=16), default=4096, show_default=True,
              help="Measure on at most this many seeded training examples.")
@click.option("--lr-probe-steps", type=click.IntRange(min=0), default=100, show_default=True,
              help="Steps of each learning-rate probe trial at the smaller batch size (the larger one "
              "trains on the same examples); 0 skips the probe.")
@click.option("--lr-probe-seeds", type=click.IntRange(min=3), default=3, show_default=True,
              help="Seeds of the learning-rate probe (the exponent's interval is over seeds).")
@click.option("--device-memory", "device_memory", type=FiniteFloat(min=0, min_open=True), default=None,
              metavar="GB", help="Device memory in GB: say whether the recommended batch sizes need "
              "gradient accumulation, and with how many micro-batches.")
@click.option("--train-steps", type=click.IntRange(min=1), default=None,
              help="Length of your full training run (steps of this run's batch size and rate): extrapolate "
              "B_simple there when the trend along the run allows it.")
@click.option("--check", is_flag=True,
              help="Also run the seeded quick steps-to-target sweep of `verify regimes --quick` on this "
              "workload and compare its critical batch with the advised one (minutes; reuses --db).")
@click.option("--db", type=FilePath(output=True), default=None,
              help="Results store of the probe and --check [default: a temporary file for the probe, "
              "batchscale-out/runs.sqlite for --check]; re-runs reuse it.")
@click.option("--report", "report_path", type=FilePath(output=True, suffixes=(".md",)), default=None,
              help="Also write the advice as a Markdown file.")
@plot_option
@device_option
@seed_option
@format_option(("table", "json"))
def advise(workload, workload_option, budget_steps, lr, batch_size, checkpoints, max_examples, lr_probe_steps,
           lr_probe_seeds, device_memory, train_steps, check, db, report_path, plot_path, device, seed,
           fmt) -> None:
    """Which batch size and learning rate for this model: a short measured run, B_crit, S(B), E(B).

    Trains the workload's model for --budget-steps SGD steps, measures B_simple = tr(Sigma)/|G|^2 along
    the run (fast per-example path, or two-batch where a layer has no fast path), takes the last
    measurement as the critical batch size B_crit, and prints recommended batch ranges and the predicted
    steps and examples relative to their minima at each power of two (McCandlish et al. 2018), the trend
    of B_simple along the run, a learning-rate rule measured by a short probe at two batch sizes, and the
    memory per example, with every assumption beside the answer.
    """
    from batchscale.report.tables import render_json, render_table
    from batchscale.verify.advise import AdviseOptions
    from batchscale.verify.advise import advise as run_advise

    opts = AdviseOptions(workload=workload, workload_options=dict(workload_option), budget_steps=budget_steps,
                         lr=lr, batch_size=batch_size, checkpoints=checkpoints, max_examples=max_examples,
                         seed=seed, device=device, lr_probe_steps=lr_probe_steps,
                         lr_probe_seeds=lr_probe_seeds, device_memory_gb=device_memory,
                         train_steps=train_steps, db=db, check=check)
    advice = run_advise(opts, progress=progress)
    checked = None
    if check:
        from batchscale.verify.advise_check import check_advice

        checked = check_advice(advice, opts, progress=progress)
    text = advice_text(advice, render_table, checked)
    if fmt == "json":
        extra = {} if checked is None else {"check": {**checked["row"].as_dict(), "store": checked["store"]}}
        click.echo(render_json({**advice.summary(), "curve": advice.curve,
                                "measurements": advice.measurements, "assumptions": advice.assumptions,
                                **extra}))
    else:
        click.echo(text)
    if report_path:
        Path(report_path).write_text(f"# batchscale advise: {workload}\n\n```\n{text}```\n")
        progress(f"wrote {report_path}")
    if plot_path:
        from batchscale.report.advise_plot import plot_advice

        plot_advice(advice, plot_path, title=f"batchscale advise: {workload}")
        progress(f"wrote {plot_path}")


def advice_text(advice, render_table, checked=None) -> str:
    """The advice as plain text: headline, the two ranges, the trend, the learning-rate rule, memory,
    S(B)/E(B) per power of two, the check (when run) and the assumptions."""
    from batchscale.verify.advise_lr import probe_text

    low, high = advice.interval
    steps_lo, steps_hi = advice.fewest_steps_within_20pct_examples
    few_lo, few_hi = advice.fewest_examples
    lines = [
        f"critical batch size B_crit ~ {advice.critical_batch_size:.4g} [{low:.4g}, {high:.4g}] "
        f"({advice.method})",
        f"fewest steps within +20% examples: batch {_span(steps_lo, steps_hi)} (largest power of two "
        "<= 0.2 B_crit)",
        f"fewest examples (within +5%): batch <= {_span(few_lo, few_hi)} (B <= 0.05 B_crit)",
        *_trend_lines(advice.trend),
        *_lr_lines(advice.lr_probe, (steps_lo, steps_hi), probe_text),
        *_memory_lines(advice.memory, advice.accumulation),
        "",
        render_table(advice.curve, ["batch_size", "steps_over_min", "examples_over_min"]),
    ]
    if checked is not None:
        from batchscale.verify.advise_check import check_text

        lines += [check_text(checked), ""]
    lines += ["assumptions:", *(f"  - {a}" for a in advice.assumptions)]
    return "\n".join(lines) + "\n"


def _trend_lines(trend) -> list[str]:
    if trend is None:
        return []
    if not math.isfinite(trend.exponent):
        return [f"trend of B_simple along the run: undetermined ({trend.reason})"]
    lo, hi = trend.exponent_interval
    lines = [f"trend of B_simple along the run: ~ step^{trend.exponent:.3g} [{lo:.3g}, {hi:.3g}] "
             f"(power law over {trend.n_points} checkpoints)"]
    if trend.horizon is not None and trend.defensible:
        vlo, vhi = trend.interval
        lines.append(f"extrapolated to step {trend.horizon}: B_simple ~ {trend.value:.4g} [{vlo:.4g}, "
                     f"{vhi:.4g}] ({trend.reason})")
    else:
        lines.append(f"extrapolation: {trend.reason}")
    return lines


def _lr_lines(probe, steps_range, probe_text) -> list[str]:
    if probe is None:
        return ["learning-rate rule: not measured (--lr-probe-steps 0)"]
    lines = [probe_text(probe)]
    base = probe.base_rate()
    rates = [(b, probe.lr_at(b)) for b in sorted(set(steps_range))]
    if probe.rule != "undecided" and all(r is not None for _, r in rates):
        lines.append("  learning rate at the recommended sizes: "
                     + ", ".join(f"batch {b}: {r:.3g}" for b, r in rates)
                     + f" (best rate at batch {probe.batch_sizes[0]} x (B/{probe.batch_sizes[0]})^alpha)")
    elif base is not None:
        lines.append(f"  best rate at batch {probe.batch_sizes[0]}: {base:.3g}; how it scales with the batch "
                     "size is not decided by this probe (raise --lr-probe-seeds or --lr-probe-steps)")
    return lines


def _memory_lines(memory, plans) -> list[str]:
    if memory is None:
        return []
    sizes = ", ".join(str(b) for b in memory.batch_sizes)
    lines = [f"memory per example: {_bytes(memory.bytes_per_example)} (+ {_bytes(memory.intercept_bytes)} "
             f"per pass, {_bytes(memory.state_bytes)} parameters and gradients; profiler allocation peak at "
             f"batch {sizes})"]
    for plan in plans:
        need = f"{plan['step_bytes'] / 1e9:.3g} GB"
        if plan["fits"]:
            lines.append(f"  batch {plan['batch_size']}: fits ({need}), no gradient accumulation needed")
        elif plan["micro_batches"] is None:
            lines.append(f"  batch {plan['batch_size']}: needs {need}; not even one example fits")
        else:
            lines.append(f"  batch {plan['batch_size']}: needs {need}: accumulate {plan['micro_batches']} "
                         f"micro-batches of {plan['micro_batch']}")
    return lines


def _bytes(n: float) -> str:
    """``1446`` -> ``'1.41 KiB'``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.3g} B"


def _span(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}..{high}"
