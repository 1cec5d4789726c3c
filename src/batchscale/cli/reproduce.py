"""``batchscale reproduce``: a paper's central results rerun, with a report and a verdict per statement.

Parses options, calls :func:`batchscale.reproduce.run`, writes ``DIR/report.md`` and prints the verdict
table. Exit 0 when the report is written (a statement not reproduced is a result, not an error), 2 for bad
input or a paper that is not built yet. Trained trials go to the store (``--db``); Ctrl-C ends with exit
130 and says how to resume.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from batchscale.cli.common import FilePath, emit, format_option, on_interrupt, progress, seed_option

TABLE_COLUMNS = ("statement", "source", "quantity", "measured", "ci_low", "ci_high", "verdict")


def list_papers() -> None:
    from batchscale.reproduce import PAPERS

    width = max(len(n) for n in PAPERS)
    for name, paper in PAPERS.items():
        status = "" if paper.built else " [not built yet]"
        click.echo(f"{name.ljust(width)}  {paper.citation}: {paper.reproduces}{status}")


@click.command("reproduce")
@click.argument("paper", metavar="PAPER|list")
@click.option("--quick", is_flag=True, help="Small settings (each paper in under 3 minutes on 2 cores).")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Folder for report.md, figures and their data [default: reproduction-PAPER].")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Seeds per measured point [default: the paper's own, >= 3 where it decides].")
@click.option("--db", type=FilePath(output=True), default=None,
              help="Results store every trained trial goes to [default: batchscale-out/runs.sqlite, the "
              "store of `sweep` and `verify`]; a re-run trains nothing new, an interrupted one resumes.")
@click.option("--workload", default=None,
              help="Workload for papers that train (built-in name or module:function).")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help="shallue2018: the authors' released archive (unpacked batch_science/): Figure 1 from it.")
@format_option()
@seed_option
def reproduce(paper, quick, out, seeds, db, workload, data, fmt, seed) -> None:
    """Rerun a paper's central result and write a report with a verdict per statement.

    PAPER is one of the names of `batchscale reproduce list`. The report (DIR/report.md) opens with the
    verdict table: each statement of the paper with its source, our quantity and measurement with a 95%
    interval, and a verdict (reproduced / not reproduced / partly / inconclusive / not testable).
    """
    from batchscale.reproduce import check_paper, run
    from batchscale.reproduce.report import Options, write_report

    if paper == "list":
        list_papers()
        return
    check_paper(paper)
    folder = Path(out) if out else Path(f"reproduction-{paper}")
    if data is not None and paper != "shallue2018":
        progress(f"{paper}: --data ignored (only shallue2018 reads released data)")
        data = None
    options = Options(out=folder, quick=quick, seeds=seeds, seed=seed, db=db, workload=workload, data=data,
                      progress=progress)
    start = time.monotonic()
    resume = (f"the trials finished so far are stored in {options.store}; run the same command again to "
              "resume")
    with on_interrupt(resume):
        result = run(paper, options)
    wall = time.monotonic() - start
    if sys.argv[1:2] == ["reproduce"]:
        command = "batchscale " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    else:
        command = f"batchscale reproduce {paper}" + (" --quick" if quick else "")
    path = write_report(folder, result, command=command, wall=wall)
    emit([r.as_dict() for r in result.rows], fmt, TABLE_COLUMNS if fmt == "table" else None)
    verdicts = [r.verdict for r in result.rows]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts))
    trials = result.config.get("trials")
    stored = (f"; {trials['trials_trained']} trials trained, {trials['trials_reused']} reused from "
              f"{trials['store']}" if isinstance(trials, dict) else "")
    progress(f"{paper}: {counts} ({wall:.1f} s){stored}; wrote {path}")
