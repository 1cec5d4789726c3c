r"""``regimes``: steps to target vs batch size with the learning rate re-tuned per batch size, >= 3 seeds.

Measured: the seeded sweep of :mod:`batchscale.verify.steps_sweep` (SGD and momentum 0.9), each curve
analysed by :func:`batchscale.theory.regimes.analyze_steps_curve`. Rows:

- ``critical_batch`` (per optimizer and definition: ``mccandlish``, ``examples_overhead``, ``zhang2024``):
  the fitted critical batch with its seed-bootstrap interval; passes when the interval lies within the
  declared factor of the value (the batch is located, not only estimated).
- ``momentum_over_sgd_critical_batch`` (per definition): momentum extends perfect scaling. The ratio's
  interval is [mom_low / sgd_high, mom_high / sgd_low]: pass when it lies above 1 (the two intervals
  separate, momentum's above), fail when below 1 (SGD's above), inconclusive when they overlap.
- ``regime_order`` (per optimizer): the labels of the fitted curve (each decided by its bootstrap
  interval) show perfect scaling at a small batch and diminishing returns (or no benefit) at a larger
  one. Pass when both are decided; fail when every batch is decided and only one regime appears.
- ``lr_slope`` (per optimizer, small-batch and large-batch half of the grid): the log-log slope of the
  best learning rate vs B, mean and standard error over seeds (each seed's own best rate), against
  McCandlish et al.'s optimal rate :math:`\epsilon_{opt} = \epsilon_{max}/(1 + B_{noise}/B)` with
  :math:`B_{noise}` taken as the fitted :math:`B_{crit}`: its least-squares log-log slope over the same
  batch sizes (near 1 below B_crit, near 0 above): neither linear (slope 1) nor square-root (0.5)
  scaling over the whole range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from batchscale.verify.common import log_log_slope, mean_and_stderr
from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, Verdict, judge, make_row

CLAIM = "regimes"
DEFINITIONS = ("mccandlish", "examples_overhead", "zhang2024")
PERFECT = "perfect_scaling"
LATER = ("diminishing_returns", "maximal_parallelism")
OPEN = ("undecided", "unreachable")


def separation(mom: Any, sgd: Any, direction: str = "above") -> tuple[float, tuple[float, float], Verdict]:
    """Momentum's critical batch over SGD's (two :class:`Estimate`): the ratio, its interval
    [mom_low / sgd_high, mom_high / sgd_low] (open ends 0 / inf), and the verdict on ``direction``:
    ``above`` (the claim), ``below`` or ``equal`` (planted wrong predictions)."""
    if mom.value is None or sgd.value is None:
        return math.nan, (0.0, math.inf), Verdict("inconclusive", "a critical batch was not fitted")
    ratio = mom.value / sgd.value
    low = 0.0 if mom.low is None or sgd.high is None else mom.low / sgd.high
    high = math.inf if mom.high is None or sgd.low is None or sgd.low <= 0 else mom.high / sgd.low
    span = f"ratio interval [{low:.3g}, {high:.3g}]"
    if direction == "equal":
        return ratio, (low, high), judge(1.0, ratio, 1.0, "factor", ci=(low, high))
    above, below = low > 1.0, high < 1.0
    if not (above or below):
        return ratio, (low, high), Verdict("inconclusive", f"{span}: the intervals overlap")
    claim_holds = above if direction == "above" else below
    side = "momentum's above SGD's" if above else "SGD's above momentum's"
    return ratio, (low, high), Verdict("pass" if claim_holds else "fail", f"{span}: {side}, separated")


def order_verdict(labels: Sequence[str], expect: str = "bend") -> tuple[float, Verdict]:
    """``bend`` (the claim): perfect scaling at a small batch, then diminishing returns or no benefit;
    ``linear`` (a planted wrong prediction): perfect scaling at every batch. Measured 1 when the decided
    labels show what is expected, 0 when they contradict it, nan when undecided labels leave it open."""
    shown = ", ".join(labels)
    decided = [x for x in labels if x not in OPEN]
    if expect == "linear":
        if any(x != PERFECT for x in decided):
            return 0.0, Verdict("fail", f"labels {shown}: not perfect scaling throughout")
        if len(decided) == len(labels):
            return 1.0, Verdict("pass", f"labels {shown}")
        return math.nan, Verdict("inconclusive", f"labels {shown}: some undecided")
    first = next((i for i, x in enumerate(labels) if x == PERFECT), None)
    if first is not None and any(x in LATER for x in labels[first + 1:]):
        return 1.0, Verdict("pass", f"labels {shown}")
    if len(decided) == len(labels) and len(set(decided)) == 1:
        return 0.0, Verdict("fail", f"labels {shown}: one regime over the whole range")
    return math.nan, Verdict("inconclusive", f"labels {shown}: the bend is not decided")


def model_lr_slope(batch_sizes: Sequence[float], b_noise: float) -> float:
    r"""Least-squares log-log slope of :math:`\epsilon_{opt}(B) \propto 1/(1 + B_{noise}/B)` over the batch
    sizes (McCandlish et al. 2018)."""
    return log_log_slope(batch_sizes, [1.0 / (1.0 + b_noise / b) for b in batch_sizes])


def halves(batch_sizes: Sequence[int]) -> dict[str, list[int]]:
    """Indices of the small-batch and large-batch halves of the grid (they share the middle point when
    the count is odd)."""
    n = len(batch_sizes)
    return {"small": list(range(0, (n + 1) // 2)), "large": list(range(n // 2, n))}


def seed_slopes(batch_sizes: Sequence[int], seed_rates: Sequence[Sequence[float | None]],
                idx: Sequence[int]) -> list[float]:
    """Per seed, the log-log slope of its best rate vs B over the batch sizes ``idx`` it reached (>= 2)."""
    width = max(len(r) for r in seed_rates)
    out = []
    for k in range(width):
        pts = [(batch_sizes[i], seed_rates[i][k]) for i in idx
               if k < len(seed_rates[i]) and seed_rates[i][k] is not None]
        if len(pts) >= 2:
            out.append(log_log_slope([b for b, _ in pts], [r for _, r in pts]))
    return out


def _row(quantity: str, workload: str, predicted: float, measured: float, ci: tuple[float, float],
         verdict: Verdict, n_seeds: int, config: dict[str, Any], note: str) -> Row:
    from batchscale.verify.tolerances import tolerance

    declared = tolerance(CLAIM, quantity)
    return Row(
        claim=CLAIM, quantity=quantity, workload=workload, predicted=predicted, measured=measured,
        ci_low=ci[0], ci_high=ci[1], stderr=None, tolerance=float(declared.value),
        tolerance_kind=declared.kind, verdict=verdict.verdict, reason=f"{verdict.reason}; {note}",
        n_seeds=n_seeds, config=config,
    )


def regimes_rows(
    curves: Mapping[str, Any],
    config: dict[str, Any],
    workload: str,
    n_seeds: int,
    *,
    direction: str = "above",
    expect: str = "bend",
    lr_rule: str = "model",
) -> list[Row]:
    """The claim's rows from the analysed curves (``curves[optimizer]``: a
    :class:`batchscale.verify.steps_sweep.Curve`). ``direction``, ``expect`` and ``lr_rule`` (``model``,
    or the planted ``linear`` / ``sqrt``) choose the prediction checked."""
    rows: list[Row] = []
    for name, curve in curves.items():
        for definition in DEFINITIONS:
            est = curve.analysis.critical[definition]
            value = math.nan if est.value is None else est.value
            ci = (0.0 if est.low is None else est.low, math.inf if est.high is None else est.high)
            rows.append(make_row(
                CLAIM, "critical_batch", workload, value, value, ci=ci, n_seeds=n_seeds, config=config,
                note=f"{name}, {definition} ({est.text()}): is the batch located within the factor",
            ))
    if "sgd" in curves and "momentum" in curves:
        for definition in DEFINITIONS:
            mom = curves["momentum"].analysis.critical[definition]
            sgd = curves["sgd"].analysis.critical[definition]
            ratio, ci, verdict = separation(mom, sgd, direction)
            sign = {"above": ">", "below": "<", "equal": "="}[direction]
            rows.append(_row("momentum_over_sgd_critical_batch", workload, 1.0, ratio, ci, verdict, n_seeds,
                             config, f"{definition}: predicted ratio {sign} 1; momentum {mom.text()}, "
                             f"SGD {sgd.text()}"))
    for name, curve in curves.items():
        measured, verdict = order_verdict(curve.analysis.regimes, expect)
        bc = curve.analysis.b_crit.text()
        rows.append(_row("regime_order", workload, 1.0, measured, (measured, measured), verdict, n_seeds,
                         config, f"{name}: fitted B_crit {bc}; expected {expect}"))
    for name, curve in curves.items():
        b_crit = curve.analysis.b_crit.value
        for half, idx in halves(curve.batch_sizes).items():
            sizes = [curve.batch_sizes[i] for i in idx]
            slopes = seed_slopes(curve.batch_sizes, curve.seed_learning_rates, idx)
            if lr_rule == "model":
                predicted = math.nan if b_crit is None else model_lr_slope(sizes, b_crit)
            else:
                predicted = {"linear": 1.0, "sqrt": 0.5}[lr_rule]
            mean, err = mean_and_stderr(slopes) if slopes else (math.nan, math.nan)
            rows.append(make_row(
                CLAIM, "lr_slope", workload, predicted, mean,
                stderr=None if not math.isfinite(err) else err, n_seeds=len(slopes), config=config,
                note=f"{name}, {half} half B={sizes[0]}..{sizes[-1]}, rule {lr_rule}; per-seed slopes "
                + ", ".join(f"{s:.3g}" for s in slopes),
            ))
    return rows


def run(opts: Options) -> list[Row]:
    from batchscale.verify.steps_sweep import run_sweep

    sweep = run_sweep(opts)
    workload = str(sweep.config["workload"])
    summaries = {name: c.analysis.summary() for name, c in sweep.curves.items()}
    config = opts.config(CLAIM, workload, sweep=sweep.config, store=sweep.store, analysis=summaries)
    return regimes_rows(sweep.curves, config, workload, sweep.n_seeds)
