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

OPTIMIZERS = ("sgd", "momentum", "precond", "ema")


class ScheduleParam(click.ParamType):
    """``constant`` or ``pwc:K`` (checked by :func:`batchscale.theory.nqm.schedule.parse_schedule`)."""

    name = "constant|pwc:K"

    def convert(self, value, param, ctx):
        from batchscale.errors import InputError
        from batchscale.theory.nqm.schedule import parse_schedule

        try:
            parse_schedule(value)
        except InputError as exc:
            self.fail(str(exc), param, ctx)
        return str(value).strip()


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
    "--binning",
    type=click.Choice(["geometric", "zhang2019"]),
    default="geometric",
    show_default=True,
    help="geometric: bins equally spaced in log h, each at its mean curvature; zhang2019: each h_i "
    "rounded down to the nearest of --bins geometric bin values, as Zhang et al.'s public notebook does.",
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
@click.option(
    "--schedule",
    type=ScheduleParam(),
    default="constant",
    show_default=True,
    help="constant: one tuned learning rate; pwc:K: the fewest steps over K-piece piecewise-constant "
    "schedules (rates and piece boundaries optimised; --optimizer sgd or precond).",
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
    binning,
    schedule,
    fmt,
    plot_path,
) -> None:
    """Noisy quadratic model: steps to target vs batch size with tuned learning rate.

    Loss 1/2 sum_i h_i x_i^2, gradient noise variance c_i / B, E[x_i^2] = 1 at the start; expected loss
    in closed form (Zhang et al. 2019, arXiv 1907.04164). For each batch size the learning rate (and the
    momentum) is tuned for the fewest steps to reach --target; each row carries the Shallue et al.
    regime and an information lower bound on the steps.
    """
    from batchscale.theory.nqm_curve import nqm_steps

    _check_optimizer_options(click.get_current_context(), optimizer)
    result = nqm_steps(
        dim=dim, alpha=alpha, bins=bins, spectrum_path=spectrum_path, noise=noise, target=target,
        batch_sizes=batch_sizes, optimizer=optimizer, lr_search=lr_search, lr_grid=lr_grid,
        momentum_grid=momentum_grid, precond_power=precond_power, ema_decay=ema_decay, max_steps=max_steps,
        max_memory=max_memory, binning=binning, schedule=schedule, progress=progress,
    )
    rows, report = result.rows, result.analysis
    momentum = optimizer == "momentum"
    if schedule != "constant":
        columns = ["batch_size", "steps", "constant_steps", "learning_rate", "final_learning_rate", "regime",
                   "loss_at_steps", "status", "steps_lower_bound"]
        emit(rows, fmt, columns + ([] if fmt == "table" else ["schedule"]))
        if plot_path:
            _plot(plot_path, rows, report, f"{optimizer}, {schedule} schedule", target)
        return
    columns = ["batch_size", "steps", "learning_rate"]
    columns += ["momentum", "effective_learning_rate"] if momentum else []
    shown = _momentum_cells(rows) if fmt == "table" and momentum else rows
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
