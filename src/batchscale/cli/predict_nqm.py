"""``batchscale predict nqm``: steps to target vs batch size in the noisy quadratic model (Zhang et al.)."""

from __future__ import annotations

import math

import click

from batchscale.cli.common import (
    FINITE,
    FilePath,
    FiniteFloat,
    IntList,
    LogGrid,
    emit,
    format_option,
    plot_option,
    progress,
)
from batchscale.errors import InputError

OPTIMIZERS = ("sgd", "momentum", "precond", "ema")


@click.command("nqm")
@click.option(
    "--dim",
    type=int,
    default=10_000,
    show_default=True,
    help="Coordinates d of the power-law spectrum h_i = i^-alpha, i = 1..d.",
)
@click.option("--alpha", type=FINITE, default=1.0, show_default=True, help="Power-law exponent alpha.")
@click.option(
    "--bins",
    type=int,
    default=100,
    show_default=True,
    help="Group the eigenvalues into this many geometric bins (0 = no binning).",
)
@click.option(
    "--spectrum",
    "spectrum_path",
    type=FilePath(),
    default=None,
    help="A .npy/.csv file: column 1 eigenvalues h, optional column 2 noise variances c "
    "(default c = h); replaces --dim/--alpha.",
)
@click.option(
    "--noise",
    type=FINITE,
    default=1.0,
    show_default=True,
    help="Scale of the per-example gradient-noise variances c (c = noise * h by default).",
)
@click.option(
    "--target",
    type=FINITE,
    default=0.01,
    show_default=True,
    help="Absolute target expected loss (the default problem starts at 4.894).",
)
@click.option(
    "--batch-sizes",
    type=IntList(),
    default="4..2097152",
    show_default=True,
    help="Comma list, or LOW..HIGH for the powers of two between.",
)
@click.option(
    "--optimizer",
    type=click.Choice(OPTIMIZERS),
    default="sgd",
    show_default=True,
    help="sgd; heavy-ball momentum (tuned); precond: SGD preconditioned by H^-p; ema: SGD with "
    "an exponential moving average of the iterates.",
)
@click.option(
    "--lr-search",
    type=click.Choice(["continuous", "grid"]),
    default="continuous",
    show_default=True,
    help="grid: best point of --lr-grid (x --momentum-grid) exactly; continuous: golden-section search "
    "on log learning rate around the best grid point (momentum: around the best of a coarse 24 x 8 grid "
    "over the same bounds, alternating with log(1 - momentum) at fixed LR / (1 - momentum)).",
)
@click.option(
    "--lr-grid",
    type=LogGrid(),
    default="-5:0.5:100",
    show_default=True,
    help="Learning rates LO:HI:N: N values log-spaced from 10^LO to 10^HI (Zhang et al.).",
)
@click.option(
    "--momentum-grid",
    type=LogGrid(),
    default="-3:0:20",
    show_default=True,
    help="Momenta LO:HI:N as log10(1 - momentum): -3:0:20 spans momentum 0.999 down to 0.",
)
@click.option(
    "--precond-power",
    type=FINITE,
    default=0.5,
    show_default=True,
    help="Preconditioner H^-p for --optimizer precond (0 = SGD, 1 = Newton).",
)
@click.option(
    "--ema-decay",
    type=FINITE,
    default=0.9,
    show_default=True,
    help="EMA decay gamma for --optimizer ema (x~ <- gamma x~ + (1 - gamma) x).",
)
@click.option(
    "--max-steps",
    type=int,
    default=10**7,
    show_default=True,
    help="Give up after this many steps (the target is then 'unreachable' at that batch size).",
)
@click.option(
    "--max-memory",
    type=FiniteFloat(min=0.0, min_open=True, allow_inf=True),
    default=4.0,
    show_default=True,
    help="Refuse, before any work, a problem whose estimated peak memory exceeds this many GB "
    "(it grows with coordinates x bins x searched settings; inf: no limit).",
)
@format_option()
@plot_option
def nqm(
    dim,
    alpha,
    bins,
    spectrum_path,
    noise,
    target,
    batch_sizes,
    optimizer,
    lr_search,
    lr_grid,
    momentum_grid,
    precond_power,
    ema_decay,
    max_steps,
    max_memory,
    fmt,
    plot_path,
) -> None:
    """Noisy quadratic model: steps to target vs batch size with tuned learning rate.

    Loss 1/2 sum_i h_i x_i^2, gradient noise variance c_i / B, E[x_i^2] = 1 at the start; expected loss
    in closed form (Zhang et al. 2019, arXiv 1907.04164). For each batch size the learning rate (and the
    momentum) is tuned for the fewest steps to reach --target; each row carries the Shallue et al.
    regime and an information lower bound on the steps.
    """
    import numpy as np

    from batchscale.theory import nqm as model
    from batchscale.theory.regimes import analyze_steps_curve
    from batchscale.theory.spectra import load_spectrum, power_law_spectrum

    _check_optimizer_options(click.get_current_context(), optimizer)
    batches = batch_sizes
    lrs = model.decade_grid(*lr_grid)
    momenta = None
    if optimizer == "momentum":
        momenta = 1.0 - model.decade_grid(*momentum_grid)
    _check_options(target, bins, dim, max_steps, precond_power, ema_decay, batches)
    settings = model.searched_settings(lrs.size, None if momenta is None else momenta.size, lr_search)
    if spectrum_path is not None:
        spectrum = load_spectrum(spectrum_path, noise_scale=noise, bins=bins)
        need = model.memory_estimate(spectrum.bins, settings, optimizer, lr_search)
        _check_memory(need, max_memory)
    else:
        need = model.memory_estimate(min(bins, dim) if bins else dim, settings, optimizer, lr_search, dim)
        _check_memory(need, max_memory)
        spectrum = power_law_spectrum(dim, alpha, noise_scale=noise, bins=bins)
    initial = spectrum.initial_loss()
    if not target < initial:
        raise InputError(
            f"target {target} is not below the initial loss {initial:.4g}: every batch needs 0 steps"
        )
    progress(
        f"nqm: {spectrum.dim} coordinates in {spectrum.bins} bins, initial loss {initial:.4g}, "
        f"target {target}, {optimizer}, {lr_search} search over {len(batches)} batch sizes"
    )
    curve = model.tune_steps(
        spectrum,
        batches,
        target,
        lr_grid=lrs,
        momentum_grid=momenta,
        search=lr_search,
        precond_power=precond_power if optimizer == "precond" else 0.0,
        ema_decay=ema_decay if optimizer == "ema" else 0.0,
        max_steps=max_steps,
    )
    if not np.isfinite(curve.loss_at_steps).any():
        limit = model.largest_stable_learning_rate(spectrum, precond_power if optimizer == "precond" else 0.0)
        raise InputError(
            f"every learning rate of the grid diverges at every batch size: the smallest, {lrs.min():.3g}, "
            f"is not below {limit:.3g} = 2 / max_i h_i^(1-p), the stability limit without momentum; "
            "lower --lr-grid"
        )
    if not (curve.status == model.OK).any():
        raise InputError(
            f"target {target} is unreachable at every batch size: the lowest expected loss reached within "
            f"{max_steps} steps over the learning-rate grid is {float(curve.loss_at_steps.min()):.4g}"
        )
    steps = [s if s >= 0 else math.inf for s in curve.steps.tolist()]
    report = analyze_steps_curve(batches, steps)  # the sweeps' fitted-curve logic (regimes, max useful)
    rows = curve.rows()
    for row, regime in zip(rows, report.regimes, strict=True):
        row["regime"] = regime
        if momenta is not None:
            ok = row["momentum"] is not None
            row["effective_learning_rate"] = row["learning_rate"] / (1 - row["momentum"]) if ok else None
        if row["status"] != "ok":
            progress(
                f"batch size {row['batch_size']}: target {target} unreachable within {max_steps} steps "
                f"(lowest loss reached {row['loss_at_steps']:.4g})"
            )
    progress(
        f"critical batch size (McCandlish B_crit) {report.b_crit.text()}, maximal useful batch size "
        f"{report.max_useful.text()} (fitted-curve rule); {report.level:.0%} intervals from a "
        f"{report.bootstrap} bootstrap of the steps' deviation from the fitted curve (rms log "
        f"{_fmt(report.fit.rms_log_residual if report.fit else None)}: model misfit plus the search's error)"
    )
    columns = ["batch_size", "steps", "learning_rate"]
    columns += ["momentum", "effective_learning_rate"] if momenta is not None else []
    shown = _momentum_cells(rows) if fmt == "table" and momenta is not None else rows
    emit(shown, fmt, columns + ["regime", "loss_at_steps", "status", "steps_lower_bound"])
    if plot_path:
        _plot(plot_path, rows, report, optimizer, target)


OPTIMIZER_OPTIONS = {"momentum_grid": "momentum", "precond_power": "precond", "ema_decay": "ema"}


def _check_optimizer_options(ctx: click.Context, optimizer: str) -> None:
    """Say so on stderr when an option of one optimizer is given for another (it is then ignored)."""
    for name, owner in OPTIMIZER_OPTIONS.items():
        given = ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        if given and optimizer != owner:
            flag = "--" + name.replace("_", "-")
            progress(f"note: {flag} is ignored: it applies to --optimizer {owner} only, not {optimizer}")


def _check_options(target, bins, dim, max_steps, precond_power, ema_decay, batches) -> None:
    """Range checks that belong to the command's own options."""
    if not (math.isfinite(target) and target > 0):
        raise InputError(f"target loss must be > 0, got {target}")
    if bins < 0:
        raise InputError(f"--bins must be >= 0, got {bins}")
    if dim < 1:
        raise InputError(f"--dim must be >= 1, got {dim}")
    if max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {max_steps}")
    if not math.isfinite(precond_power):
        raise InputError(f"--precond-power must be finite, got {precond_power}")
    if not 0.0 <= ema_decay < 1.0:
        raise InputError(f"--ema-decay must be in [0, 1), got {ema_decay}")
    if min(batches) <= 0:
        raise InputError(f"batch size must be > 0, got {min(batches)}")


def _check_memory(need: float, limit_gb: float) -> None:
    """One line, before any work, when the estimated peak memory is above ``--max-memory``."""
    if need > limit_gb * 1e9:
        raise InputError(
            f"this problem needs about {need / 1e9:.3g} GB of memory, above the limit "
            f"--max-memory {limit_gb:g} (GB): use fewer coordinates or bins (--dim, or --bins 100 to group "
            "them), a smaller --lr-grid/--momentum-grid, "
            f"or raise the limit with --max-memory {math.ceil(need / 1e9)}"
        )


def momentum_text(momentum: float) -> str:
    """A momentum with 3 significant digits of 1 - momentum (0.99997 is not shown as 1), at least 4 in all."""
    gap = 1.0 - momentum
    digits = 4 if gap >= 0.1 or gap <= 0 else max(4, math.ceil(-math.log10(gap)) + 3)
    return f"{momentum:.{digits}g}"


def _momentum_cells(rows: list[dict]) -> list[dict]:
    """Table rows with the momentum as right-aligned text from :func:`momentum_text` ('-' when absent)."""
    cells = ["-" if r["momentum"] is None else momentum_text(r["momentum"]) for r in rows]
    width = max(len("momentum"), *(len(c) for c in cells))
    return [r | {"momentum": c.rjust(width)} for r, c in zip(rows, cells, strict=True)]


def _fmt(value) -> str:
    return "-" if value is None else str(value) if isinstance(value, int) else f"{value:.4g}"


def _plot(path, rows, report, optimizer, target) -> None:
    from batchscale.report.plots import plot_steps_vs_batch

    def column(name):
        return [math.inf if r[name] is None else r[name] for r in rows]

    lr = "effective_learning_rate" if optimizer == "momentum" else "learning_rate"
    curves = {
        optimizer: {"batch_size": column("batch_size"), "steps": column("steps"), "learning_rate": column(lr)}
    }
    lines = {"information bound": {"batch_size": column("batch_size"), "steps": column("steps_lower_bound")}}
    plot_steps_vs_batch(
        path,
        curves,
        regimes=list(report.regimes),
        lines=lines,
        title=f"Noisy quadratic model, {optimizer}, target loss {target}",
        lr_label="best LR / (1 - momentum)" if optimizer == "momentum" else "best learning rate",
    )
    progress(f"wrote {path}")
