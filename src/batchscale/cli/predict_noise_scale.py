"""``batchscale predict noise-scale``: the McCandlish et al. model, from numbers or fitted to a curve."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import click

from batchscale.cli.common import (
    FINITE,
    IntList,
    emit,
    format_option,
    key_value_option,
    plot_option,
    progress,
)
from batchscale.errors import InputError, require
from batchscale.progress import counter

FIT_TABLE_COLUMNS = (
    "batch_size", "steps", "steps_fit", "ratio", "examples", "examples_fit", "speedup", "regime",
)
BOOTSTRAP_LIMIT = 200_000
PROGRESS_FROM = 20_000  # bootstraps at least this long report progress on stderr


@click.command("noise-scale")
@click.option("--b-noise", type=FINITE, default=None, help="Noise scale B_noise, used as B_crit (eq. 2.7).")
@click.option(
    "--b-simple", type=FINITE, default=None, help="Simple noise scale B_simple, used as B_crit (eq. 2.8)."
)
@click.option("--s-min", type=FINITE, default=None, help="Steps at infinite batch, S_min.")
@click.option("--e-min", type=FINITE, default=None, help="Examples at vanishing batch, E_min.")
@click.option(
    "--batch-sizes",
    type=IntList(),
    default="1..65536",
    show_default=True,
    help="Batch sizes to tabulate: comma list, or LOW..HIGH for the powers of two between.",
)
@click.option(
    "--curve",
    "curve_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Fit S_min, B_crit, E_min to a measured curve: a .json list of rows or a .csv with "
    "batch_size and steps columns (e.g. `predict nqm --format json` or `sweep steps --format json`).",
)
@key_value_option(
    "--where",
    help="With --curve: keep only rows with this value, repeatable (e.g. --where optimizer=sgd).",
)
@click.option(
    "--steps-column", default="steps", show_default=True, help="With --curve: the column holding the steps."
)
@click.option(
    "--bootstrap",
    type=int,
    default=0,
    show_default=True,
    help="With --curve: bootstrap resamples (0 = none).",
)
@click.option(
    "--bootstrap-limit",
    type=int,
    default=BOOTSTRAP_LIMIT,
    show_default=True,
    help="Refuse --bootstrap above this many resamples (each 1000 cost ~0.2 s and ~1 MB); raise to allow.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the bootstrap.")
@click.option(
    "--critical-fraction",
    type=FINITE,
    default=0.2,
    show_default=True,
    help="Critical batch (examples-overhead and Zhang et al. rules): examples to target exceed their "
    "minimum (resp. the smallest batch's) by this fraction.",
)
@format_option()
@plot_option
def noise_scale(
    b_noise,
    b_simple,
    s_min,
    e_min,
    batch_sizes,
    curve_path,
    where,
    steps_column,
    bootstrap,
    bootstrap_limit,
    seed,
    critical_fraction,
    fmt,
    plot_path,
) -> None:
    """Gradient-noise-scale model: S(B), E(B), critical batch; fit a measured curve.

    McCandlish et al. 2018 (arXiv 1812.06162): S(B) = S_min (1 + B_crit/B), E(B) = E_min (1 + B/B_crit),
    eps_opt(B)/eps_max = 1/(1 + B_noise/B). Give B_crit as --b-noise or --b-simple (with --s-min or
    --e-min for absolute numbers), or --s-min and --e-min; or fit a measured curve with --curve.
    """
    if curve_path is not None:
        require(bootstrap >= 0, f"--bootstrap must be >= 0, got {bootstrap}")
        require(
            bootstrap <= bootstrap_limit,
            f"--bootstrap {bootstrap} is above the limit of {bootstrap_limit} resamples (about "
            f"{bootstrap * 2e-4:.0f} s); raise --bootstrap-limit to run it",
        )
        _fit_command(curve_path, where, steps_column, bootstrap, seed, critical_fraction, fmt, plot_path)
        return
    _model_command(b_noise, b_simple, s_min, e_min, batch_sizes, critical_fraction, fmt, plot_path)


def _resolve_model(b_noise, b_simple, s_min, e_min) -> tuple[float, float | None, float | None, str]:
    """(B_crit, S_min or None, E_min or None, source of B_crit) from the given numbers."""
    for name, value in (
        ("--b-noise", b_noise),
        ("--b-simple", b_simple),
        ("--s-min", s_min),
        ("--e-min", e_min),
    ):
        require(value is None or (math.isfinite(value) and value > 0), f"{name} must be > 0, got {value}")
    require(b_noise is None or b_simple is None, "give --b-noise or --b-simple, not both")
    b_crit, source = (b_noise, "b_noise") if b_noise is not None else (b_simple, "b_simple")
    if b_crit is None:
        require(
            s_min is not None and e_min is not None,
            "give --b-noise or --b-simple, or both --s-min and --e-min",
        )
        return e_min / s_min, s_min, e_min, "e_min/s_min"
    require(s_min is None or e_min is None, "with a noise scale give at most one of --s-min and --e-min")
    if s_min is not None:
        e_min = s_min * b_crit
    elif e_min is not None:
        s_min = e_min / b_crit
    return b_crit, s_min, e_min, source


def _model_command(b_noise, b_simple, s_min, e_min, batch_sizes, critical_fraction, fmt, plot_path) -> None:
    from batchscale.theory import noise_scale as ns
    from batchscale.theory.regimes import fitted_speedup, model_regimes

    b_crit, s_min, e_min, source = _resolve_model(b_noise, b_simple, s_min, e_min)
    batches = batch_sizes
    require(batches[0] > 0, f"batch sizes must be > 0, got {batches[0]}")
    ratio_s = ns.steps_to_target(batches, 1.0, b_crit)
    ratio_e = ns.examples_to_target(batches, 1.0, b_crit)
    step_ratio = ns.optimal_step(batches, 1.0, b_crit)
    regimes = model_regimes(batches, b_crit)
    speedup = fitted_speedup(batches, b_crit)
    rows = []
    for i, b in enumerate(batches):
        rows.append(
            {
                "batch_size": b,
                "steps_ratio": float(ratio_s[i]),
                "examples_ratio": float(ratio_e[i]),
                "steps_model": None if s_min is None else s_min * float(ratio_s[i]),
                "examples_model": None if e_min is None else e_min * float(ratio_e[i]),
                "eps_opt_over_max": float(step_ratio[i]),
                "speedup": float(speedup[i]),
                "regime": regimes[i],
                "b_crit": b_crit,
                "b_crit_source": source,
                "s_min": s_min,
                "e_min": e_min,
            }
        )
    columns = ["batch_size", "steps_ratio", "examples_ratio", "eps_opt_over_max", "speedup", "regime"]
    if s_min is not None:
        columns[1:1] = ["steps_model", "examples_model"]
    emit(rows, fmt, columns if fmt == "table" else None)
    if plot_path:
        _plot(plot_path, batches, ratio_s if s_min is None else ratio_s * s_min, None, regimes, b_crit,
              units="(S_min = 1)" if s_min is None else "")
        progress(f"wrote {plot_path}")


def _fit_command(curve_path, where, steps_column, bootstrap, seed, critical_fraction, fmt, plot_path) -> None:
    from batchscale.theory import noise_scale as ns
    from batchscale.theory.regimes import analyze_steps_curve

    batches, steps, seeds = read_curve_seeds(curve_path, steps_column, where)
    shown = progress if bootstrap >= PROGRESS_FROM else None
    with counter(shown, bootstrap, unit="resample", desc="bootstrap") as bar:
        fit = ns.fit_steps_curve(batches, steps, n_bootstrap=bootstrap, seed=seed,
                                 progress=lambda done, total: bar.update(done - bar.n))
    analysis = analyze_steps_curve(batches, seeds, critical_fraction=critical_fraction, seed=seed)
    fitted = fit.predict_steps(batches)
    summary = analysis.summary()
    rows = []
    for b, s, s_fit, point in zip(batches, steps, fitted, analysis.rows(), strict=True):
        reached = math.isfinite(s)
        rows.append(
            {
                "batch_size": b,
                "steps": s if reached else None,
                "steps_fit": float(s_fit),
                "ratio": s / float(s_fit) if reached else None,
                "examples": b * s if reached else None,
                "examples_fit": b * float(s_fit),
                "speedup": point["speedup"],
                "speedup_low": point["speedup_low"],
                "speedup_high": point["speedup_high"],
                "regime": point["regime"],
                **_fit_columns(fit),
                **summary,
                "curve": str(curve_path),
                "critical_fraction": critical_fraction,
            }
        )
    if fmt == "table":
        click.echo(_fit_summary(fit, analysis))
    emit(rows, fmt, FIT_TABLE_COLUMNS if fmt == "table" else None)
    if plot_path:
        _plot(plot_path, batches, steps, fitted, analysis.regimes, fit.b_crit, source=Path(curve_path).name)
        progress(f"wrote {plot_path}")


def _fit_columns(fit: Any) -> dict[str, Any]:
    keys = ["rms_log_residual", "n_points", "level"]
    for name in ("s_min", "b_crit", "e_min"):
        keys += [name, f"{name}_err", f"{name}_low", f"{name}_high"]
    out = {k: getattr(fit, k) for k in keys}
    if fit.n_bootstrap:
        out["n_bootstrap"] = fit.n_bootstrap
        for name in ("s_min", "b_crit", "e_min"):
            for key in (f"{name}_boot", f"{name}_boot_low", f"{name}_boot_high"):
                out[key] = getattr(fit, key)
    return out


def _fit_summary(fit: Any, analysis: Any) -> str:
    from batchscale.theory.regimes import CRITICAL_DEFINITIONS, MAX_USEFUL_DEFINITION

    level = f"{fit.level:.0%}"

    def line(name: str) -> str:
        value, err = getattr(fit, name), getattr(fit, f"{name}_err")
        text = f"{value:.4g} +- {err:.2g} ({level}: {getattr(fit, name + '_low'):.4g} .. "
        text += f"{getattr(fit, name + '_high'):.4g})"
        if fit.n_bootstrap:
            text += (f", bootstrap {level}: {getattr(fit, name + '_boot_low'):.4g} .. "
                     f"{getattr(fit, name + '_boot_high'):.4g}")
        return text

    lines = [
        f"fit of S(B) = S_min (1 + B_crit/B) to {fit.n_points} points "
        f"(rms log residual {fit.rms_log_residual:.3g}; errors one sigma, t-based):",
        f"  S_min  = {line('s_min')}",
        f"  B_crit = {line('b_crit')}",
        f"  E_min  = {line('e_min')}",
        f"critical batch size, {level} intervals over a {analysis.bootstrap} bootstrap "
        f"(f = {analysis.critical_fraction:g}):",
    ]
    for name, estimate in analysis.critical.items():
        lines.append(f"  {name:17s} {estimate.text()}  [{CRITICAL_DEFINITIONS[name]}]")
    lines += [f"  {'max useful':17s} {analysis.max_useful.text()}  [{MAX_USEFUL_DEFINITION}]", ""]
    return "\n".join(lines)


def read_curve(
    path: str, steps_column: str = "steps", where: dict[str, Any] | None = None
) -> tuple[list, list]:
    """(batch sizes, steps) from a JSON list of rows or a CSV; unreachable (null/empty/inf) steps -> inf.

    Rows not matching ``where`` are dropped; several rows for one batch size keep the fewest steps (the
    best-tuned run).
    """
    rows = _read_rows(Path(path))
    where = where or {}
    rows = [r for r in rows if all(str(r.get(k)) == str(v) for k, v in where.items())]
    require(len(rows) > 0, f"{path}: no rows" + (f" match {where}" if where else ""))
    for column in ("batch_size", steps_column):
        require(column in rows[0], f"{path}: missing column {column!r} (has {', '.join(map(str, rows[0]))})")
    best: dict[int, float] = {}
    for row in rows:
        b, s = (
            _number(row.get("batch_size"), "batch_size", path),
            _number(row.get(steps_column), steps_column, path),
        )
        require(
            math.isfinite(b) and b > 0 and b == int(b),
            f"{path}: batch_size must be a positive integer, got {b}",
        )
        require(not (s <= 0), f"{path}: steps must be > 0, got {s}")
        best[int(b)] = min(best.get(int(b), math.inf), s if math.isfinite(s) else math.inf)
    batches = sorted(best)
    return batches, [best[b] for b in batches]


def read_curve_seeds(
    path: str, steps_column: str = "steps", where: dict[str, Any] | None = None
) -> tuple[list, list, list]:
    """:func:`read_curve` plus per-seed steps per batch size: a row's ``seed_steps`` list when the file
    has one (``sweep steps --format json``), else the one steps value. (batch sizes, steps, seed lists)."""
    batches, steps = read_curve(path, steps_column, where)
    seeds: dict[int, list] = {}
    for row in _read_rows(Path(path)):
        if all(str(row.get(k)) == str(v) for k, v in (where or {}).items()):
            values = row.get("seed_steps")
            b = int(_number(row.get("batch_size"), "batch_size", path))
            if isinstance(values, list) and values and b in batches and steps_column == "steps":
                row_steps = _number(row.get(steps_column), steps_column, path)
                if row_steps == steps[batches.index(b)]:  # the row read_curve kept
                    seeds[b] = [math.inf if v is None else _number(v, "seed_steps", path) for v in values]
    return batches, steps, [seeds.get(b, [s]) for b, s in zip(batches, steps, strict=True)]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read curve file {str(path)!r}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    require(
        isinstance(data, list) and all(isinstance(r, dict) for r in data), f"{path}: expected a list of rows"
    )
    return data


def _number(value: Any, column: str, path: str) -> float:
    """A cell as float: None/'' (unreachable) -> inf; NaN stays NaN only to be rejected by the caller."""
    if value is None or value == "":
        return math.inf
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: {column} value {value!r} is not a number") from None
    require(not math.isnan(number), f"{path}: {column} is NaN")
    return number


def _plot(path, batches, steps, fitted, regimes, b_crit, source=None, units="") -> None:
    """S(B) and E(B) side by side: the model alone, or the input curve (``source``) and its fit."""
    from batchscale.report.plots import plot_steps_and_examples

    model = "McCandlish et al. model S_min (1 + B_crit/B)"
    if fitted is None:
        curves = {model: {"steps": list(steps), "style": {"marker": ""}}}
    else:
        curves = {f"input curve ({source})": {"steps": list(steps)},
                  f"fit: {model}": {"steps": list(fitted), "style": {"marker": "", "lw": 1.5}}}
    plot_steps_and_examples(
        path,
        batches,
        curves,
        regimes=list(regimes),
        title="Gradient-noise-scale model (McCandlish et al. 2018)",
        vlines={f"B_crit = {b_crit:.3g}": b_crit},
        units=units,
    )
