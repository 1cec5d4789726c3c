"""``batchscale advise``: which batch size for my model? A short measured run, B_crit and S(B), E(B)."""

from __future__ import annotations

from pathlib import Path

import click

from batchscale.cli.common import (
    FilePath,
    FiniteFloat,
    device_option,
    format_option,
    progress,
    seed_option,
    workload_options,
)


@click.command("advise")
@workload_options(default="digits-mlp")
@click.option("--budget-steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="SGD steps of the short run along which B_simple is measured.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=0.1, show_default=True,
              help="Learning rate of the short run (plain mean-loss SGD).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch size of the short run.")
@click.option("--checkpoints", type=click.IntRange(min=1), default=4, show_default=True,
              help="Measure B_simple at step 0 and this many more points of the run.")
@click.option("--max-examples", type=click.IntRange(min=16), default=4096, show_default=True,
              help="Measure on at most this many seeded training examples.")
@click.option("--report", "report_path", type=FilePath(output=True, suffixes=(".md",)), default=None,
              help="Also write the advice as a Markdown file.")
@device_option
@seed_option
@format_option(("table", "json"))
def advise(workload, workload_option, budget_steps, lr, batch_size, checkpoints, max_examples, report_path,
           device, seed, fmt) -> None:
    """Which batch size for this model: a short measured run, the critical batch and S(B), E(B).

    Trains the workload's model for --budget-steps SGD steps, measures B_simple = tr(Sigma)/|G|^2 along
    the run (fast per-example path, or two-batch where a layer has no fast path), takes the last
    measurement as the critical batch size B_crit, and prints recommended batch ranges and the predicted
    steps and examples relative to their minima at each power of two (McCandlish et al. 2018), with every
    assumption beside the answer. First version: no learning-rate probe, no memory per example, no check
    against a sweep.
    """
    from batchscale.report.tables import render_json, render_table
    from batchscale.verify.advise import AdviseOptions
    from batchscale.verify.advise import advise as run_advise

    opts = AdviseOptions(workload=workload, workload_options=dict(workload_option), budget_steps=budget_steps,
                         lr=lr, batch_size=batch_size, checkpoints=checkpoints, max_examples=max_examples,
                         seed=seed, device=device)
    advice = run_advise(opts, progress=progress)
    if fmt == "json":
        click.echo(render_json({**advice.summary(), "curve": advice.curve,
                                "measurements": advice.measurements, "assumptions": advice.assumptions}))
    else:
        click.echo(advice_text(advice, render_table))
    if report_path:
        text = advice_text(advice, render_table)
        Path(report_path).write_text(f"# batchscale advise: {workload}\n\n```\n{text}```\n")
        progress(f"wrote {report_path}")


def advice_text(advice, render_table) -> str:
    """The advice as plain text: headline, the two ranges, S(B)/E(B) per power of two, the assumptions."""
    low, high = advice.interval
    steps_lo, steps_hi = advice.fewest_steps_within_20pct_examples
    few_lo, few_hi = advice.fewest_examples
    lines = [
        f"critical batch size B_crit ~ {advice.critical_batch_size:.4g} [{low:.4g}, {high:.4g}] "
        f"({advice.method})",
        f"fewest steps within +20% examples: batch {_span(steps_lo, steps_hi)} (largest power of two "
        "<= 0.2 B_crit)",
        f"fewest examples (within +5%): batch <= {_span(few_lo, few_hi)} (B <= 0.05 B_crit)",
        "",
        render_table(advice.curve, ["batch_size", "steps_over_min", "examples_over_min"]),
        "assumptions:",
        *(f"  - {a}" for a in advice.assumptions),
    ]
    return "\n".join(lines) + "\n"


def _span(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}..{high}"
