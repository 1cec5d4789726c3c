"""The tuned steps-to-target curve of the noisy quadratic model with its regimes: what ``batchscale predict
nqm`` computes (:func:`nqm_steps`) and ``batchscale.predict_nqm`` returns (:func:`predict_nqm`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from batchscale.errors import InputError, require
from batchscale.progress import REPORTER, counter

Progress = Callable[[str], None]


def quiet(message: str) -> None:
    """Progress reporter that says nothing."""


def reporter(progress: bool | Progress) -> Progress:
    """``True``: lines and counters on stderr (:data:`batchscale.progress.REPORTER`); ``False``: silent;
    a callable: called with each line."""
    if callable(progress):
        return progress
    return REPORTER if progress else quiet


def check_nqm_options(target, bins, dim, max_steps, precond_power, ema_decay, batches) -> None:
    """Range checks of ``predict nqm``'s own options (one-line :class:`InputError`)."""
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


def check_nqm_memory(need: float, limit_gb: float) -> None:
    """One line, before any work, when the estimated peak memory is above ``--max-memory``."""
    if need > limit_gb * 1e9:
        raise InputError(
            f"this problem needs about {need / 1e9:.3g} GB of memory, above the limit "
            f"--max-memory {limit_gb:g} (GB): use fewer coordinates or bins (--dim, or --bins 100 to group "
            "them), a smaller --lr-grid/--momentum-grid, "
            f"or raise the limit with --max-memory {math.ceil(need / 1e9)}"
        )


@dataclass(frozen=True)
class NqmCurve:
    """Rows of ``predict nqm`` (one per batch size, regime included) and the curve's analysis
    (:class:`batchscale.theory.regimes.CurveAnalysis`: critical and maximal useful batch sizes)."""

    rows: list[dict[str, Any]]
    analysis: Any


def nqm_steps(
    *,
    dim: int = 10_000,
    alpha: float = 1.0,
    bins: int = 100,
    spectrum_path: str | None = None,
    noise: float = 1.0,
    target: float = 0.01,
    batch_sizes: Sequence[int],
    optimizer: str = "sgd",
    lr_search: str = "continuous",
    lr_grid: tuple[float, float, int] = (-5.0, 0.5, 100),
    momentum_grid: tuple[float, float, int] = (-3.0, 0.0, 20),
    precond_power: float = 0.5,
    ema_decay: float = 0.9,
    max_steps: int = 10**7,
    max_memory: float = 4.0,
    binning: str = "geometric",
    schedule: str = "constant",
    progress: Progress = quiet,
) -> NqmCurve:
    """What ``batchscale predict nqm`` computes (its options, same names): the tuned steps to ``target``
    per batch size in the noisy quadratic model, each row with its Shallue et al. regime from
    :func:`batchscale.theory.regimes.analyze_steps_curve` (and, for momentum, the effective learning
    rate LR / (1 - momentum)).

    ``binning``: 'geometric' (bin means) or 'zhang2019' (eigenvalues rounded down to the bin values, as
    Zhang et al.'s notebook does; :func:`batchscale.theory.spectra.zhang2019_bins`). ``schedule``:
    'constant' or 'pwc:K', the fewest steps over K-piece piecewise-constant learning-rate schedules
    (:mod:`batchscale.theory.nqm.schedule`; sgd and precond only): ``steps`` is then the schedule's, with
    ``constant_steps`` the constant rate's, ``learning_rate``/``final_learning_rate`` its first and last
    rates and ``schedule`` its pieces."""
    import numpy as np

    from batchscale.theory import nqm as model
    from batchscale.theory.regimes import analyze_steps_curve
    from batchscale.theory.spectra import load_spectrum, power_law_spectrum

    batches = list(batch_sizes)
    require(len(batches) > 0, "batch_sizes is empty")
    lrs = model.decade_grid(*lr_grid)
    momenta = None
    if optimizer == "momentum":
        momenta = 1.0 - model.decade_grid(*momentum_grid)
    check_nqm_options(target, bins, dim, max_steps, precond_power, ema_decay, batches)
    pieces = _check_schedule_options(schedule, optimizer, binning, bins)
    settings = model.searched_settings(lrs.size, None if momenta is None else momenta.size, lr_search)
    if spectrum_path is not None:
        spectrum = load_spectrum(spectrum_path, noise_scale=noise, bins=bins, binning=binning)
        need = model.memory_estimate(spectrum.bins, settings, optimizer, lr_search)
        check_nqm_memory(need, max_memory)
    else:
        need = model.memory_estimate(min(bins, dim) if bins else dim, settings, optimizer, lr_search, dim)
        check_nqm_memory(need, max_memory)
        spectrum = power_law_spectrum(dim, alpha, noise_scale=noise, bins=bins, binning=binning)
    initial = spectrum.initial_loss()
    if not target < initial:
        raise InputError(
            f"target {target} is not below the initial loss {initial:.4g}: every batch needs 0 steps"
        )
    progress(
        f"nqm: {spectrum.dim} coordinates in {spectrum.bins} bins, initial loss {initial:.4g}, "
        f"target {target}, {optimizer}, {lr_search} search over {len(batches)} batch sizes"
    )
    runs = model.planned_runs(lr_search, momenta is not None)
    with counter(progress, runs, unit="run", desc="search") as bar:
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
            on_run=bar.update,
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
    rows = curve.rows()
    if pieces is not None:
        power = precond_power if optimizer == "precond" else 0.0
        rows = _schedule_rows(spectrum, curve, target, pieces, power, rows, progress)
    steps = [math.inf if r["steps"] is None else r["steps"] for r in rows]
    report = analyze_steps_curve(batches, steps)  # the sweeps' fitted-curve logic (regimes, max useful)
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
    fit = report.fit.rms_log_residual if report.fit else None
    progress(
        f"critical batch size (McCandlish B_crit) {report.b_crit.text()}, maximal useful batch size "
        f"{report.max_useful.text()} (fitted-curve rule); {report.level:.0%} intervals from a "
        f"{report.bootstrap} bootstrap of the steps' deviation from the fitted curve (rms log "
        f"{'-' if fit is None else f'{fit:.4g}'}: model misfit plus the search's error)"
    )
    return NqmCurve(rows, report)


def _check_schedule_options(schedule: str, optimizer: str, binning: str, bins: int) -> int | None:
    """Pieces of ``schedule`` (None: constant); one-line errors for what it cannot be combined with."""
    from batchscale.theory.nqm.schedule import parse_schedule
    from batchscale.theory.spectra import BINNINGS

    if binning not in BINNINGS:
        raise InputError(f"unknown binning {binning!r}; expected one of {', '.join(BINNINGS)}")
    if binning != "geometric" and bins == 0:
        raise InputError(f"--binning {binning} groups eigenvalues into --bins bins; --bins 0 keeps them all")
    pieces = parse_schedule(schedule)
    if pieces is not None and optimizer not in ("sgd", "precond"):
        raise InputError(
            f"--schedule {schedule} is modelled for --optimizer sgd and precond only, not {optimizer}"
        )
    return pieces


def _schedule_rows(spectrum, curve, target, pieces, precond_power, rows, progress) -> list[dict]:
    """``rows`` with the fewest steps over ``pieces``-piece schedules (:func:`schedule_curve`)."""
    from batchscale.theory.nqm.schedule import schedule_curve

    out = []
    for row, found in zip(rows, schedule_curve(spectrum, curve, target, pieces, precond_power, progress),
                          strict=True):
        sched = found.schedule
        out.append({
            "batch_size": row["batch_size"],
            "steps": found.steps,
            "constant_steps": found.constant_steps,
            "learning_rate": None if sched is None else sched.learning_rate[0],
            "final_learning_rate": None if sched is None else sched.learning_rate[-1],
            "loss_at_steps": row["loss_at_steps"] if sched is None else sched.loss,
            "status": row["status"],
            "steps_lower_bound": row["steps_lower_bound"],
            "schedule": None if sched is None else sched.as_list(),
        })
    return out


def predict_nqm(
    batch_sizes: Sequence[int] = tuple(2**k for k in range(2, 22)),
    *,
    progress: bool | Progress = False,
    **options: Any,
) -> list[dict[str, Any]]:
    """The rows of ``batchscale predict nqm --format json`` (same defaults; ``options`` are its options
    with underscores: ``dim``, ``alpha``, ``bins``, ``spectrum_path``, ``noise``, ``target``, ``optimizer``,
    ``lr_search``, ``lr_grid=(lo, hi, n)``, ``momentum_grid``, ``precond_power``, ``ema_decay``,
    ``max_steps``, ``max_memory``, ``binning``, ``schedule``): per batch size the tuned steps to the target
    loss, the learning rate, the regime, the loss reached, the status and the information lower bound on
    the steps."""
    return nqm_steps(batch_sizes=batch_sizes, progress=reporter(progress), **options).rows


__all__ = [
    "NqmCurve", "check_nqm_memory", "check_nqm_options", "nqm_steps", "predict_nqm", "quiet", "reporter",
]
