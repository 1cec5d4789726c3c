"""What a reproduction returns and how its report is written.

A :class:`Reproduction` holds verdict rows (one per statement of the paper: the statement quoted with its
source, our quantity, our measurement with its interval, a verdict and its reason), figures (PNG plus the
data behind each as CSV/JSON) and Markdown sections. :func:`write_report` writes ``DIR/report.md``: the
verdict table first, then the figures, then the sections, then commands, versions, seeds and wall time.
The paper's own numbers appear only in the ``statement``/``source`` columns, never as our measurement.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERDICTS: tuple[str, ...] = ("reproduced", "not reproduced", "partly", "inconclusive", "not testable")
# the store `batchscale sweep`, `batchscale verify` and `batchscale runs` default to
DEFAULT_STORE = "batchscale-out/runs.sqlite"


@dataclass(frozen=True)
class Options:
    """Resolved options of one reproduction."""

    out: Path = Path("reproduction")
    quick: bool = False
    seeds: int | None = None
    seed: int = 0
    db: str | None = None
    workload: str | None = None
    data: str | None = None  # a folder of released data, for the papers that read one (shallue2018)
    progress: Callable[[str], None] | None = field(default=None, compare=False)

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    @property
    def store(self) -> str:
        """The results store every trial of the reproduction goes to: ``db``, else :data:`DEFAULT_STORE`
        (the file ``batchscale sweep`` and ``batchscale verify`` use), so a re-run trains nothing new."""
        return self.db if self.db is not None else DEFAULT_STORE


@dataclass(frozen=True)
class VerdictRow:
    """One statement of the paper beside our measurement.

    ``statement`` and ``source`` quote the paper (section/figure/table, or where we read it);
    ``quantity`` names what we computed; ``measured`` with ``ci_low``/``ci_high`` (95%) is ours only.
    """

    paper: str
    statement: str
    source: str
    quantity: str
    measured: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str
    reason: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Figure:
    """A figure file ``png`` (relative to the report's directory), the ``data`` files behind it, a caption."""

    title: str
    png: str
    data: tuple[str, ...]
    caption: str


@dataclass(frozen=True)
class Reproduction:
    paper: str
    citation: str
    rows: tuple[VerdictRow, ...]
    figures: tuple[Figure, ...]
    sections: tuple[tuple[str, str], ...]  # (heading, Markdown body)
    config: Mapping[str, Any]


def sign_verdict(low: float | None, high: float | None, what: str) -> tuple[str, str]:
    """Verdict on "the quantity is > 0" from its 95% interval [low, high].

    reproduced when low > 0; not reproduced when high <= 0 (the opposite sign, or zero, is what the data
    say); inconclusive when the interval holds 0 or is missing.
    """
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive", f"no interval for {what}"
    if low > 0:
        return "reproduced", f"95% interval of {what} [{low:.3g}, {high:.3g}] lies above 0"
    if high <= 0:
        return "not reproduced", f"95% interval of {what} [{low:.3g}, {high:.3g}] lies at or below 0"
    return "inconclusive", f"95% interval of {what} [{low:.3g}, {high:.3g}] holds 0: too uncertain to decide"


def value_verdict(
    claimed: float, low: float | None, high: float | None, what: str
) -> tuple[str, str]:
    """Verdict on "the quantity equals ``claimed``" from its 95% interval: reproduced when the interval
    holds it, not reproduced when it does not; inconclusive without an interval."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive", f"no interval for {what}"
    if low <= claimed <= high:
        return "reproduced", f"{claimed:.3g} inside the 95% interval of {what} [{low:.3g}, {high:.3g}]"
    return "not reproduced", f"{claimed:.3g} outside the 95% interval of {what} [{low:.3g}, {high:.3g}]"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict_table(rows: Sequence[VerdictRow]) -> str:
    """The report's opening table."""
    columns = ("statement (paper)", "source", "our quantity", "ours", "95% interval", "verdict", "reason")
    body = [
        (r.statement, r.source, r.quantity, r.measured,
         "-" if r.ci_low is None else f"[{_cell(r.ci_low)}, {_cell(r.ci_high)}]", f"**{r.verdict}**",
         r.reason)
        for r in rows
    ]
    return markdown_table(columns, body)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` (dicts with the same keys) as CSV; None as an empty cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in r.items()} for r in rows])


def save_log_log(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    """Log-log axes with labels, legend and grid; save ``fig`` to ``path`` (PNG) and close it."""
    from batchscale.report.plots import _pyplot

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def render_report(result: Reproduction, command: str, wall: float) -> str:
    """The Markdown report: verdict table, figures, sections, then how it was made."""
    parts = [f"# Reproduction: {result.paper} ({result.citation})", "",
             "Generated by `batchscale reproduce`; the paper's statements are quoted with their source, and "
             "every number in the columns *ours* and *95% interval* is computed here.", "",
             "## Verdicts", "", verdict_table(result.rows), ""]
    if result.figures:
        parts += ["## Figures", ""]
        for fig in result.figures:
            data = ", ".join(f"[{d}]({d})" for d in fig.data)
            parts += [f"### {fig.title}", "", f"![{fig.title}]({fig.png})", "", fig.caption, "",
                      f"Data behind the figure: {data}.", ""]
    for heading, body in result.sections:
        parts += [f"## {heading}", "", body.strip(), ""]
    config = dict(result.config)
    versions = config.pop("versions", {})
    trials = config.get("trials")
    stored = ([f"Trials: {trials['trials_trained']} trained by this run, {trials['trials_reused']} reused "
               f"from the results store `{trials['store']}` (re-running the command reuses them all).", ""]
              if isinstance(trials, Mapping) else [])
    parts += ["## How this report was made", "", f"Command: `{command}`", "",
              f"Wall time: {wall:.1f} s.", "", *stored,
              "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", "",
              "Configuration (seeds included):", "", "```json", json.dumps(config, indent=2, default=str),
              "```", ""]
    return "\n".join(parts)


def write_report(out: Path, result: Reproduction, command: str, wall: float) -> Path:
    """Write ``out/report.md`` and ``out/verdicts.json``; the figures are already in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.md"
    path.write_text(render_report(result, command, wall))
    write_json(out / "verdicts.json", [r.as_dict() for r in result.rows])
    return path
