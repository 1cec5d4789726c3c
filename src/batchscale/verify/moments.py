r"""``moments``: mean and covariance of one SGD update on a real network, measured vs the exact formulas.

Theory (:func:`batchscale.theory.moments.update_moments_at`, per step): :math:`E[\Delta w] = -\eta G`
(mean form) or :math:`-\tilde\eta m G` (sum form), and :math:`\mathrm{Cov}[\Delta w] = \eta^2 c(m)
\Sigma/m` (mean form; :math:`\tilde\eta^2 m\, c(m)\Sigma` sum form) with :math:`c(m) = 1` with
replacement and :math:`(M-m)/(M-1)` without. G and :math:`\mathrm{tr}\,\Sigma` are the exact
per-example statistics of the M examples the batches are drawn from. Measured
(:func:`batchscale.empirical.update_stats.update_moments`): the update of a real backward pass of the
mean or sum loss, over many drawn minibatches per m: its mean component along -G and the trace of its
covariance, with standard errors. Per example and per epoch the same moments follow by dividing by m
or summing steps: no separate measurement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchscale.verify.common import build_workload, workload_choice
from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, make_row

CLAIM = "moments"
DEFAULT_WORKLOAD = "digits-mlp"
QUICK_OPTIONS = {"hidden": 32}
POPULATION = {True: 256, False: 512}  # M: a seeded subset of the training examples
DRAWS = {True: 100, False: 400}
LR = 0.1
Z = 4.0  # the empirical layer's own tolerance, only used to recover its float floor


def coefficients(form: str, sampling: str, population: int, batch_size: int) -> tuple[float, float]:
    """(a, b): E[dw] = a * lr * G and Cov[dw] = b * lr^2 * Sigma, from theory.moments (exact rationals)."""
    from batchscale.theory.moments import update_moments_at

    moments = update_moments_at(form, sampling, "step", population, batch_size)
    ones = {s: 1 for s in moments.mean.free_symbols | moments.covariance.free_symbols}
    return float(moments.mean.subs(ones)), float(moments.covariance.subs(ones))


def all_directions_deviate(check: Any, n_params: int) -> float:
    """The Hotelling T^2 of the all-directions mean check as its equivalent normal deviate |z|: the z whose
    two-sided normal tail equals the F test's p-value (R = min(16, D - 2, P) directions, D draws), so the
    declared z-score tolerance means the same level as the measurement's own critical value."""
    from scipy import stats as scipy_stats

    from batchscale.empirical.update_stats import N_DIRECTIONS

    draws = check.draws
    r = max(1, min(N_DIRECTIONS, draws - 2, n_params))
    p_value = float(scipy_stats.f.sf(check.measured * (draws - r) / (r * (draws - 1)), r, draws - r))
    return float(scipy_stats.norm.isf(max(p_value, 1e-300) / 2))


def predicted_values(check: Any, grad_norm: float, trace_cov: float, population: int) -> float:
    """The theory's value of a measured quantity (mean along -G, or tr Cov) at the check's setting."""
    a, b = coefficients(check.form, check.sampling, population, check.batch_size)
    if check.quantity == "mean_along_-G":
        return -a * LR * grad_norm
    return b * LR**2 * trace_cov


def moment_rows(
    checks: list[Any],
    grad_norm: float,
    trace_cov: float,
    population: int,
    config: dict[str, Any],
    workload: str,
    predict: Callable[[Any, float, float, int], float] = predicted_values,
    n_params: int = 10**6,
) -> list[Row]:
    rows = []
    for c in checks:
        cfg = {**config, "form": c.form, "sampling": c.sampling, "batch_size": c.batch_size, "draws": c.draws}
        if c.quantity == "mean_all_directions":  # deviation from the predicted mean along random directions
            rows.append(make_row(
                CLAIM, c.quantity, workload, 0.0, all_directions_deviate(c, n_params), stderr=1.0, n_seeds=1,
                config=cfg, by_construction=c.by_construction,
                note=f"Hotelling T^2 = {c.measured:.4g} as a normal deviate; {c.form} form, {c.sampling} "
                f"replacement, m={c.batch_size} of M={population}",
            ))
            continue
        floor = max(0.0, c.tolerance - Z * c.stderr) / Z  # the float-rounding part of the empirical tolerance
        rows.append(
            make_row(
                CLAIM,
                c.quantity,
                workload,
                predict(c, grad_norm, trace_cov, population),
                c.measured,
                stderr=c.stderr,
                floor=floor,
                n_seeds=1,
                config=cfg,
                note=f"{c.form} form, {c.sampling} replacement, m={c.batch_size} of M={population}",
            )
        )
    return rows


def measure(workload: Any, seed: int, population: int, batch_sizes: list[int], draws: int) -> tuple:
    """(checks, |G|, tr Sigma, M) on ``population`` seeded training examples at the seeded initial point."""
    from batchscale.empirical.gradients import gradient_statistics, sample_indices
    from batchscale.empirical.update_stats import update_moments

    idx = sample_indices(workload.n_train, min(population, workload.n_train), seed, workload.device)
    x, y = workload.x_train[idx], workload.y_train[idx]
    model = workload.model(seed)
    stats = gradient_statistics(model, workload.per_example_loss, x, y, seed=seed)
    checks = update_moments(
        model,
        workload.per_example_loss,
        x,
        y,
        stats=stats,
        batch_sizes=batch_sizes,
        lr=LR,
        samplings=("with", "without"),
        draws=draws,
        seed=seed,
        z=Z,
    )
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return checks, stats.grad_norm_sq**0.5, stats.trace_cov, int(x.shape[0]), n_params


def run(opts: Options) -> list[Row]:
    name, options = workload_choice(opts, DEFAULT_WORKLOAD, QUICK_OPTIONS)
    workload = build_workload(opts, name, options)
    population = min(POPULATION[opts.quick], workload.n_train)
    batch_sizes = [4, 3 * population // 4] + ([] if opts.quick else [population // 4])  # c(m) bites at 3M/4
    draws = DRAWS[opts.quick]
    config = opts.config(CLAIM, name, workload_options=workload.options, population=population, lr=LR)
    opts.say(f"moments: {draws} minibatches per m in {batch_sizes}, M={population}, both forms and samplings")
    checks, grad_norm, trace_cov, population, n_params = measure(
        workload, opts.seed, population, batch_sizes, draws)
    return moment_rows(checks, grad_norm, trace_cov, population, config, name, n_params=n_params)
