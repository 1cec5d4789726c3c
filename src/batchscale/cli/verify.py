"""``batchscale verify``: every claim predicted by theory and checked by measurement, with a verdict.

Parses options, calls :func:`batchscale.verify.run`, prints the rows. Exit 0 when every row passes, 1 when
any fails or is inconclusive (the summary line on stderr says which), 2 for bad input.
"""

from __future__ import annotations

import time
from typing import Any

import click

from batchscale.cli.common import (
    FilePath,
    device_option,
    emit,
    format_option,
    plot_option,
    progress,
    seed_option,
    workload_options,
)
from batchscale.progress import counter

TABLE_COLUMNS = (
    "claim",
    "quantity",
    "workload",
    "predicted",
    "measured",
    "ci_low",
    "ci_high",
    "tolerance",
    "tolerance_kind",
    "verdict",
    "n_seeds",
    "reason",
)


def list_claims() -> None:
    from batchscale.verify import CLAIMS

    width = max(len(n) for n in CLAIMS)
    for name, claim in CLAIMS.items():
        status = "" if claim.real else " [not built yet: reports inconclusive]"
        click.echo(f"{name.ljust(width)}  {claim.description}{status}")


@click.command("verify")
@click.argument("claim", metavar="CLAIM|all|list")
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=None,
    help="Seeds per noisy measurement [default: each claim's own, >= 3 where it decides].",
)
@click.option("--quick", is_flag=True, help="Small settings: each claim in seconds to a minute.")
@click.option(
    "--rerun",
    is_flag=True,
    help="Measure again even when rows for the same code, options and package versions are saved "
    "beside the store (they are reused otherwise; sweeps always reuse their stored trials).",
)
@click.option(
    "--db",
    type=FilePath(output=True),
    default=None,
    help="Results store for the claims that run sweeps (regimes, noise-scale) [default: "
    "batchscale-out/runs.sqlite]; re-runs reuse it, interrupted runs resume. Every claim's rows are "
    "also saved beside it (verify-rows/) and reused by a re-run with the same code and options.",
)
@click.option(
    "--report",
    "report_path",
    type=FilePath(output=True, suffixes=(".md",)),
    default=None,
    help="Also write a Markdown report (claim text, tolerances, rows) to this file.",
)
@plot_option
@format_option()
@device_option
@seed_option
@workload_options(default=None)
def verify(
    claim, seeds, quick, rerun, db, report_path, plot_path, fmt, device, seed, workload, workload_option
) -> None:
    """Check claims: theory's prediction vs a measurement, with a verdict.

    CLAIM is a claim name (see `batchscale verify list`), `all`, or `list`. Each row gives the prediction,
    the measurement with its 95% interval, the tolerance declared in docs/claims.md and a verdict
    (pass | fail | inconclusive). Without --workload each claim runs on its own default workload.
    """
    from batchscale.verify import CLAIMS, all_pass, check_claim, resolve, summary
    from batchscale.verify.reuse import claim_rows

    if claim == "list":
        list_claims()
        return
    if claim != "all":
        check_claim(claim)
    options = resolve(
        workload=workload,
        workload_options=workload_option,
        seed=seed,
        seeds=seeds,
        quick=quick,
        db=db,
        device=device,
        progress=progress,
    )
    names = list(CLAIMS) if claim == "all" else [claim]
    start = time.monotonic()
    rows = []
    with counter(progress, len(names), unit="claim", desc="verify") as bar:
        for name in names:
            progress(f"verify {name}")
            began = time.monotonic()
            rows += claim_rows(name, options, rerun=rerun)
            progress(f"verify {name}: {time.monotonic() - began:.1f} s")
            bar.update()
    wall = time.monotonic() - start
    emit(as_output(rows, fmt), fmt, TABLE_COLUMNS if fmt == "table" else None)
    if plot_path:
        from batchscale.verify.figures import plot_rows

        plot_rows(plot_path, rows)
        progress(f"wrote {plot_path}")
    if report_path:
        from batchscale.verify.markdown import write_report

        write_report(report_path, rows, command=command_line(claim, quick, seed, seeds, workload), wall=wall)
        progress(f"wrote {report_path}")
    progress(f"{claim}: {summary(rows)} ({wall:.1f} s)")
    if not all_pass(rows):
        raise SystemExit(1)


def as_output(rows: list, fmt: str) -> list[dict[str, Any]]:
    return [r.as_dict() for r in rows]


def command_line(claim: str, quick: bool, seed: int, seeds: int | None, workload: str | None) -> str:
    parts = ["batchscale verify", claim]
    parts += ["--quick"] if quick else []
    parts += [f"--seed {seed}"] if seed else []
    parts += [f"--seeds {seeds}"] if seeds else []
    parts += [f"--workload {workload}"] if workload else []
    return " ".join(parts)
