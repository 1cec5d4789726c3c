"""Curves with seeds: fitted S(B) = S_min (1 + B_crit/B), bootstrap over seeds, local regimes per doubling
and every critical-batch definition, named (:func:`analyze_steps_curve`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchscale.errors import require
from batchscale.theory.regimes.curve import (
    DEFAULT_CRITICAL_FRACTION,
    DEFAULT_FLAT_FRACTION,
    UNREACHABLE,
    _checked_curve,
    critical_batch_from_curve,
)

UNDECIDED = "undecided"


DEFAULT_PERFECT_TOLERANCE = 0.2


DEFAULT_LEVEL = 0.95


DEFAULT_BOOTSTRAP = 1000


EXTRAPOLATION = 2.0  # interval ends beyond this factor outside the measured batch range: not identified


CRITICAL_DEFINITIONS: dict[str, str] = {
    "mccandlish": "B_crit = E_min/S_min of the fit S(B) = S_min (1 + B_crit/B) (McCandlish et al. 2018)",
    "examples_overhead": "batch where the fitted examples-to-target B*S(B) exceed their minimum E_min by "
    "the fraction f (= f B_crit on the fit)",
    "zhang2024": "batch where the seed-median steps exceed perfect linear scaling from the smallest "
    "reachable batch by the fraction f (Zhang et al. 2024); depends on where the grid starts",
}


MAX_USEFUL_DEFINITION = (
    "smallest batch beyond which doubling the batch cuts the fitted steps by at most the flat fraction"
)


@dataclass(frozen=True)
class Estimate:
    """A derived number with its percentile interval over the bootstrap, or the reason it has none.

    ``identifiable`` is False when the data cannot pin the number down (e.g. the critical batch lies
    beyond the largest batch measured); the interval end that runs off the measured range is then
    ``None`` (an open bound) instead of an absurd number, and ``note`` says why.
    """

    value: float | None
    low: float | None
    high: float | None
    identifiable: bool
    note: str = ""

    def fields(self, name: str) -> dict[str, Any]:
        """``{name, name_low, name_high, name_identifiable[, name_note]}`` for a JSON row."""
        out = {name: self.value, f"{name}_low": self.low, f"{name}_high": self.high,
               f"{name}_identifiable": self.identifiable}
        if self.note:
            out[f"{name}_note"] = self.note
        return out

    def text(self) -> str:
        """``'12.3 [10.1, 15.2]'``, with open bounds as ``-``/``inf`` and the note in parentheses."""
        if self.value is None:
            return "- (" + (self.note or "no value") + ")"
        low = "-" if self.low is None else f"{self.low:.4g}"
        high = "inf" if self.high is None else f"{self.high:.4g}"
        return f"{self.value:.4g} [{low}, {high}]" + (f" ({self.note})" if self.note else "")


NO_ESTIMATE = Estimate(None, None, None, False, "no fit")


@dataclass(frozen=True)
class CurveAnalysis:
    """What a steps-to-target curve measured with several seeds says, with intervals (see
    :func:`analyze_steps_curve`).

    Per batch size (ascending): ``steps`` (seed median; inf = most seeds missed the target),
    ``steps_low``/``steps_high`` (smallest and largest steps among the seeds that reached it),
    ``n_seeds``, ``speedup`` (local speed-up per doubling of the fitted curve, with ``speedup_low``/
    ``speedup_high``) and ``regimes``. Curve-wide: the fit, ``s_min``/``b_crit``/``e_min``, ``critical``
    (one :class:`Estimate` per name in :data:`CRITICAL_DEFINITIONS`) and ``max_useful``.
    """

    batch_sizes: tuple[int, ...]
    steps: tuple[float, ...]
    steps_low: tuple[float, ...]
    steps_high: tuple[float, ...]
    n_seeds: tuple[int, ...]
    speedup: tuple[float, ...]
    speedup_low: tuple[float, ...]
    speedup_high: tuple[float, ...]
    regimes: tuple[str, ...]
    fit: Any
    s_min: Estimate
    b_crit: Estimate
    e_min: Estimate
    critical: Mapping[str, Estimate]
    max_useful: Estimate
    level: float
    n_bootstrap: int
    bootstrap: str
    critical_fraction: float
    perfect_tolerance: float
    flat_fraction: float
    note: str = ""

    def summary(self) -> dict[str, Any]:
        """The curve-wide numbers as one flat dict (each estimate with ``_low``/``_high``/...)."""
        out: dict[str, Any] = {}
        for name in ("s_min", "b_crit", "e_min"):
            out.update(getattr(self, name).fields(f"fit_{name}"))
        for name, estimate in self.critical.items():
            out.update(estimate.fields(f"critical_batch_{name}"))
        out.update(self.max_useful.fields("max_useful_batch"))
        out.update(interval_level=self.level, n_bootstrap=self.n_bootstrap, bootstrap=self.bootstrap,
                   critical_fraction=self.critical_fraction, perfect_tolerance=self.perfect_tolerance,
                   flat_fraction=self.flat_fraction)
        if self.fit is not None:
            out["fit_rms_log_residual"] = self.fit.rms_log_residual
        if self.note:
            out["analysis_note"] = self.note
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One dict per batch size: steps (median, low, high), seeds, speed-up interval and regime."""
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return [
            {"batch_size": b, "steps": finite(s), "steps_low": finite(lo), "steps_high": finite(hi),
             "n_seeds": n, "speedup": finite(g), "speedup_low": finite(g_lo), "speedup_high": finite(g_hi),
             "regime": r}
            for b, s, lo, hi, n, g, g_lo, g_hi, r in zip(
                self.batch_sizes, self.steps, self.steps_low, self.steps_high, self.n_seeds, self.speedup,
                self.speedup_low, self.speedup_high, self.regimes, strict=True)
        ]


def fitted_speedup(batch_size: np.ndarray | float, b_crit: np.ndarray | float) -> np.ndarray:
    r"""Local speed-up per doubling of :math:`S(B) = S_{min}(1 + B_c/B)`, centred on B.

    :math:`g(B) = S(B/\sqrt2) / S(\sqrt2 B) = (1 + \sqrt2 x)/(1 + x/\sqrt2)`, :math:`x = B_c/B`; g = 2 is
    perfect scaling (steps halve per doubling), g = 1 no speed-up. Independent of :math:`S_{min}` and of
    any other batch size measured.
    """
    x = np.asarray(b_crit, dtype=float) / np.asarray(batch_size, dtype=float)
    return (1.0 + math.sqrt(2.0) * x) / (1.0 + x / math.sqrt(2.0))


def batch_at_speedup(speedup: float, b_crit: np.ndarray | float) -> np.ndarray:
    r"""The batch where :func:`fitted_speedup` equals ``speedup`` (in (1, 2)): :math:`B = B_c / x`,
    :math:`x = (g - 1)/(\sqrt2 - g/\sqrt2)`."""
    x = (speedup - 1.0) / (math.sqrt(2.0) - speedup / math.sqrt(2.0))
    return np.asarray(b_crit, dtype=float) / x


def speedup_thresholds(perfect_tolerance: float, flat_fraction: float) -> tuple[float, float]:
    r"""(perfect, flat) speed-up per doubling: :math:`2/(1+\tau)` and :math:`1/(1 - f_{flat})`.

    Perfect scaling: doubling B multiplies the examples to target by at most :math:`1+\tau`
    (``perfect_tolerance``), i.e. the steps fall by a factor :math:`g \ge 2/(1+\tau)`. No speed-up
    (maximal data parallelism): doubling cuts the steps by at most ``flat_fraction``,
    :math:`g \le 1/(1-f_{flat})`.
    """
    return 2.0 / (1.0 + perfect_tolerance), 1.0 / (1.0 - flat_fraction)


def label_speedup(low: float, high: float, perfect: float, flat: float) -> str:
    """Shallue et al.'s regime of a speed-up per doubling known to lie in [low, high]; ``undecided`` when
    the interval spans two regimes."""
    def one(g: float) -> str:
        if g >= perfect:
            return "perfect_scaling"
        return "maximal_parallelism" if g <= flat else "diminishing_returns"

    if not (math.isfinite(low) and math.isfinite(high)):
        return UNDECIDED
    a, b = one(low), one(high)
    return a if a == b else UNDECIDED


def model_regimes(
    batch_sizes: Sequence[float],
    b_crit: float,
    perfect_tolerance: float = DEFAULT_PERFECT_TOLERANCE,
    flat_fraction: float = DEFAULT_FLAT_FRACTION,
) -> tuple[str, ...]:
    """Regime of each batch size on the exact model curve with critical batch ``b_crit`` (no uncertainty):
    :func:`label_speedup` of :func:`fitted_speedup`."""
    perfect, flat = speedup_thresholds(perfect_tolerance, flat_fraction)
    g = fitted_speedup(np.asarray(batch_sizes, dtype=float), b_crit)
    return tuple(label_speedup(float(x), float(x), perfect, flat) for x in g)


def padded_seed_matrix(rows: Sequence) -> np.ndarray:
    """(points, most seeds) float matrix of per-point seed values of ragged lengths, nan where a point
    has fewer seeds (the "no such seed" of :func:`seed_bootstrap_curves`)."""
    matrix = np.full((len(rows), max(np.size(r) for r in rows)), np.nan)
    for i, row in enumerate(rows):
        matrix[i, : np.size(row)] = row
    return matrix


def _seed_matrix(batch_sizes: Sequence, seed_steps: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Sorted batch sizes (n,) and per-seed steps (n, max seeds): inf = missed, nan = no such seed."""
    require(len(batch_sizes) == len(seed_steps), f"{len(batch_sizes)} batch sizes but {len(seed_steps)} "
            "lists of per-seed steps")
    lists = []
    for entry in seed_steps:
        values = list(entry) if isinstance(entry, Sequence | np.ndarray) else [entry]
        values = [math.inf if v is None else float(v) for v in values]
        require(len(values) > 0, "every batch size needs at least one seed")
        bad = [v for v in values if math.isnan(v) or v <= 0]
        require(not bad, f"per-seed steps must be > 0 (None/inf = missed), got {bad[:1]}")
        lists.append(values)
    matrix = padded_seed_matrix(lists)
    b, _ = _checked_curve(batch_sizes, np.ones(len(lists)))
    order = np.argsort(np.asarray(batch_sizes, dtype=float))
    return b, matrix[order]


def _medians(matrix: np.ndarray) -> np.ndarray:
    """Median over seeds per row, ignoring nan (no seed); inf (missed) counts as the largest value."""
    out = np.empty(matrix.shape[0])
    for i, row in enumerate(matrix):
        out[i] = np.median(row[~np.isnan(row)])
    return out


def seed_bootstrap_curves(matrix: np.ndarray, n: int, rng: np.random.Generator,
                          level: float = DEFAULT_LEVEL) -> np.ndarray:
    r"""Resampled log seed-median curves, calibrated to ``level``: (n, points) for ``matrix`` (points,
    seeds), or (T, n, points) for (T, points, seeds), the same seeds measured at T targets (a joint
    bootstrap). Per-seed steps: inf = that seed missed, nan = no such seed (the same cells at every target).

    Points where no seed missed: the observed log median plus :math:`t_\nu/z` (``t_inflation(level, nu)``)
    times the median of that point's :math:`k_i` draws from the pooled within-point deviations
    :math:`\sqrt{k_i/(k_i-1)}(\log S_{ij} - \overline{\log S_i})` of every such point with
    :math:`k_i \ge 2` seeds, :math:`\nu = \sum (k_i - 1)` over those points. Points where a seed missed
    resample their own seeds (a miss cannot be shifted), unscaled. Resampling every point's own seeds
    instead gets the variance of a median wrong by a factor that depends on k (normal noise: 0.50x for
    2 seeds, 1.20x for 3, 1.35x for 5; see :func:`analyze_steps_curve`).

    Joint (T targets): the draws are shared across targets the way seeds are. Each draw is one integer d
    on [0, L), L the least common multiple of the targets' pool sizes :math:`P_t`, and picks cell
    :math:`\lfloor d P_t / L \rfloor` of target t's pool (cells in (point, seed) order): the same seed of
    the same point at every target whose pool holds the same cells, a uniform draw at each target in any
    case. Points that fall back to their own seeds draw the same seed indices at every target.
    """
    from batchscale.theory.noise_scale import t_inflation

    values = np.asarray(matrix, dtype=float)
    joint = values.ndim == 3
    require(values.ndim in (2, 3), f"matrix must be (points, seeds) or (targets, points, seeds), got shape "
            f"{values.shape}")
    m3 = values if joint else values[None]  # (T, points, seeds)
    present = ~np.isnan(m3[0])  # (points, seeds): which seeds exist
    require(bool(np.all(~np.isnan(m3) == present[None])), "every target needs the same seeds per point")
    logs = np.log(m3)  # (T, points, seeds): nan = no such seed, inf = missed
    count = np.sum(present, axis=1)  # (points,)
    clean = ~np.any(np.isinf(logs), axis=2)  # (T, points) no seed missed
    pools: list[np.ndarray | None] = []
    scales: list[float] = []
    for t in range(m3.shape[0]):
        pooled = clean[t] & (count > 1)  # (points,)
        if not pooled.any():
            pools.append(None)
            scales.append(math.nan)
            continue
        rows = logs[t][pooled]  # (pooled points, seeds)
        deviations = (rows - np.nanmean(rows, axis=1, keepdims=True)) * np.sqrt(
            count[pooled] / (count[pooled] - 1))[:, None]  # (pooled points, seeds)
        pools.append(deviations[~np.isnan(deviations)])  # (sum k_i,) in (point, seed) order
        scales.append(t_inflation(level, int(np.sum(count[pooled] - 1))))
    sizes = [p.size for p in pools if p is not None]
    span = min(math.lcm(*sizes), 2**40) if sizes else 1
    centre = np.log(np.stack([_medians(m) for m in m3]))  # (T, points)
    out = np.empty((m3.shape[0], n, m3.shape[1]))
    for i in range(m3.shape[1]):
        k = int(count[i])
        from_pool = [pools[t] is not None and bool(clean[t, i]) for t in range(m3.shape[0])]
        if any(from_pool):
            d = rng.integers(0, span, size=(n, k))  # (n, seeds)
        if not all(from_pool):
            pick = rng.integers(0, k, size=(n, k))  # (n, seeds)
        for t, pool in enumerate(pools):
            if from_pool[t]:
                draws = pool[d * pool.size // span]  # (n, seeds)
                out[t, :, i] = centre[t, i] + scales[t] * np.median(draws, axis=1)
            else:
                own = m3[t, i][present[i]]  # (seeds,)
                out[t, :, i] = np.log(np.median(own[pick], axis=1))
    return out if joint else out[0]


def _quantiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    """Central ``level`` interval of draws that may hold +inf (not identified above); nan draws ignored."""
    d = np.asarray(draws, dtype=float)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(d, [0.5 - level / 2.0, 0.5 + level / 2.0], method="inverted_cdf")
    return float(low), float(high)


def _batch_estimate(value: float, draws: np.ndarray, level: float, b_lo: float, b_hi: float) -> Estimate:
    """An estimate of a batch size; interval ends beyond the measured range (x EXTRAPOLATION) are open."""
    low, high = _quantiles(draws, level)
    notes = []
    if not (math.isfinite(high) and high <= b_hi * EXTRAPOLATION):
        notes.append(f"above the measured range (> {b_hi:.4g}) in part of the bootstrap")
        high = None
    if not (math.isfinite(low) and low >= b_lo / EXTRAPOLATION):
        notes.append(f"below the measured range (< {b_lo:.4g}) in part of the bootstrap")
        low = None
    point = value if math.isfinite(value) else None
    return Estimate(point, low, high, not notes, "; ".join(notes))


def analyze_steps_curve(
    batch_sizes: Sequence[int],
    seed_steps: Sequence,
    *,
    critical_fraction: float = DEFAULT_CRITICAL_FRACTION,
    perfect_tolerance: float = DEFAULT_PERFECT_TOLERANCE,
    flat_fraction: float = DEFAULT_FLAT_FRACTION,
    level: float = DEFAULT_LEVEL,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> CurveAnalysis:
    r"""Fit, critical batch sizes under every definition, regimes and their intervals for one curve.

    ``seed_steps[i]`` holds the steps to target of each seed at ``batch_sizes[i]`` (a list; a number for a
    single seed; ``None``/``inf`` = that seed missed the target). The point's steps are the seed median
    (inf when most seeds missed).

    1. **Fit** :math:`S(B) = S_{min}(1 + B_{crit}/B)` (McCandlish et al. 2018) to the seed-median curve
       (:func:`batchscale.theory.noise_scale.fit_steps_curve`; needs 3 reachable batch sizes).
    2. **Bootstrap** (``n_bootstrap`` resamples, ``seed``), calibrated so that the ``level`` intervals
       cover at that level (tests/test_theory_regimes_coverage.py measures it on seeded synthetic
       curves). Every number below is computed on every resample; intervals are the central ``level``
       percentiles.

       * ``seeds`` (some point has several seeds): the seeds' log deviations from their point's mean,
         times :math:`\sqrt{k_i/(k_i-1)}` (a mean of :math:`k_i` seeds was taken out), are pooled over
         the points (the fit weighs every point equally in log, i.e. it assumes one relative noise
         level); each resampled point is its observed median plus the median of :math:`k_i` draws from
         that pool (:func:`seed_bootstrap_curves`). Resampling each point's own :math:`k_i` seeds instead
         gets the spread of a median wrong by a factor that depends on :math:`k_i`: for normal noise the
         bootstrap variance of the median is 0.50x the true one for 2 seeds (the intervals covered
         67-76%), 1.20x for 3 and 1.35x for 5 (97-98.5%).
       * ``residuals`` (one seed per point): the fit's log residuals, centred, rescaled by
         :math:`\sqrt{n/(n-2)}` and resampled onto the fitted curve
         (:func:`batchscale.theory.noise_scale.residual_bootstrap`).

       Both resample a noise level that was itself estimated, from :math:`\nu` = n - 2 residuals or
       :math:`\sum (k_i - 1)` seed deviations, and a percentile interval treats it as known, i.e. it is
       the normal interval :math:`\pm z\,se`, too narrow for small :math:`\nu` (86-92% instead of
       95% on 6-11 points with one seed). The resampled deviations are therefore scaled by
       :math:`t_\nu/z` (:func:`batchscale.theory.noise_scale.t_inflation`), which makes the interval
       the Student-t one, the one the plain fit's own intervals use and that covers at its level.
    3. **Critical batch sizes**, by name (:data:`CRITICAL_DEFINITIONS`), f = ``critical_fraction``:

       * ``mccandlish``: :math:`B_{crit} = E_{min}/S_{min}` of the fit;
       * ``examples_overhead``: where the fitted :math:`E(B) = B S(B) = E_{min}(1 + B/B_{crit})` exceeds
         :math:`(1+f)E_{min}`, i.e. :math:`f B_{crit}`;
       * ``zhang2024``: Zhang et al. 2024 (arXiv 2410.21676) call critical the batch size at which the
         steps to the target exceed what perfect linear scaling from small batches would need by a fixed
         overhead (20% in their runs). Here the linear-scaling line runs through the smallest reachable
         batch :math:`B_0` of the seed-median curve, :math:`S_{lin}(B) = S(B_0)B_0/B`, and the crossing
         of :math:`S(B)/S_{lin}(B) = 1+f` is interpolated in log-log (:func:`critical_batch_from_curve`).
         Because :math:`S/S_{lin} = E/E(B_0)` this is the examples rule measured from :math:`B_0` instead
         of from :math:`E_{min}`: on the model curve :math:`(1+f)B_0 + f B_{crit}`, so it depends on where
         the grid starts, and it is marked not identified when :math:`B_0` is not itself in perfect
         scaling.

    4. **Regimes** from the local speed-up per doubling of the fitted curve at each B
       (:func:`fitted_speedup`, which depends on B and the fit only, not on the other batch sizes listed),
       with Shallue et al.'s meanings (:func:`speedup_thresholds`): ``perfect_scaling`` (steps halve per
       doubling, examples grow by at most ``perfect_tolerance``), ``diminishing_returns``,
       ``maximal_parallelism`` (a doubling cuts the steps by at most ``flat_fraction``); ``undecided``
       when the speed-up's interval spans two regimes; ``unreachable`` when the median missed.
    5. **Maximal useful batch**: where the fitted speed-up falls to :math:`1/(1 - f_{flat})`
       (:func:`batch_at_speedup`), :math:`\approx 5.66 B_{crit}` for the default 0.1; always above
       :math:`B_{crit}` (flat_fraction < 1 - 1/sqrt 2 is required).

    A quantity is flagged not identifiable (:class:`Estimate`) when its interval reaches beyond a factor
    :data:`EXTRAPOLATION` outside the measured batch range; :math:`S_{min}` when :math:`B_{crit}`'s upper
    end does (the curve was not seen to bend), :math:`E_{min}` when its lower end does (the curve is flat).
    """
    from batchscale.theory.noise_scale import fit_log_curves, fit_steps_curve, residual_bootstrap

    require(0 < level < 1, f"level must be in (0, 1), got {level}")
    require(n_bootstrap >= 0, f"n_bootstrap must be >= 0, got {n_bootstrap}")
    require(
        math.isfinite(critical_fraction) and critical_fraction > 0,
        f"critical_fraction must be > 0, got {critical_fraction}",
    )
    require(0 < perfect_tolerance < 1, f"perfect_tolerance must be in (0, 1), got {perfect_tolerance}")
    limit = 1.0 - 1.0 / math.sqrt(2.0)
    require(0 < flat_fraction < limit, f"flat_fraction must be in (0, {limit:.3f}), got {flat_fraction}")
    perfect, flat = speedup_thresholds(perfect_tolerance, flat_fraction)
    require(perfect > flat, "perfect_tolerance and flat_fraction leave no room for diminishing returns")
    b, matrix = _seed_matrix(batch_sizes, seed_steps)
    median = _medians(matrix)  # (n,)
    reached = np.where(np.isfinite(matrix), matrix, np.nan)
    with np.errstate(all="ignore"):
        has = np.any(np.isfinite(reached), axis=1)
        s_low = np.where(has, np.nanmin(np.where(has[:, None], reached, 1.0), axis=1), math.inf)
        s_high = np.where(has, np.nanmax(np.where(has[:, None], reached, 1.0), axis=1), math.inf)
    n_seeds = tuple(int(np.sum(~np.isnan(row))) for row in matrix)
    ok = np.isfinite(median)
    common = dict(
        batch_sizes=tuple(int(x) for x in b), steps=tuple(float(x) for x in median),
        steps_low=tuple(float(x) for x in s_low), steps_high=tuple(float(x) for x in s_high),
        n_seeds=n_seeds, level=float(level), critical_fraction=float(critical_fraction),
        perfect_tolerance=float(perfect_tolerance), flat_fraction=float(flat_fraction),
    )
    if np.unique(b[ok]).size < 3:
        nan = tuple(math.nan for _ in b)
        return CurveAnalysis(
            **common, speedup=nan, speedup_low=nan, speedup_high=nan,
            regimes=tuple(UNDECIDED if o else UNREACHABLE for o in ok), fit=None, s_min=NO_ESTIMATE,
            b_crit=NO_ESTIMATE, e_min=NO_ESTIMATE,
            critical={name: NO_ESTIMATE for name in CRITICAL_DEFINITIONS}, max_useful=NO_ESTIMATE,
            n_bootstrap=0, bootstrap="none",
            note=f"{int(ok.sum())} reachable batch sizes: at least 3 are needed for a fit",
        )
    fit = fit_steps_curve(b[ok], median[ok], level=level)
    rng = np.random.default_rng(seed)
    several = any(n > 1 for n in n_seeds)
    if n_bootstrap == 0:
        curves, method = np.log(median)[None, :], "none"
        data_curves = curves
    elif several:
        curves, method = seed_bootstrap_curves(matrix, n_bootstrap, rng, level), "seeds"
        data_curves = curves
    else:
        curves = np.full((n_bootstrap, b.size), np.inf)
        curves[:, ok] = residual_bootstrap(fit, b[ok], median[ok], n_bootstrap, rng, level=level)
        method = "residuals"
        # the model-free rule (zhang2024) resamples the data itself, not the fitted curve: the measured
        # steps times the same resampled residuals (the fitted curve would bias it when the model misfits)
        data_curves = curves + (np.log(median) - np.log(fit.predict_steps(b)))[None, :]
    params = np.exp(fit_log_curves(np.log(b), curves))  # (K, 2): S_min, B_crit per resample
    d_smin, d_bc = params[:, 0], params[:, 1]
    b_lo, b_hi = float(b[ok].min()), float(b[ok].max())
    bc = _batch_estimate(fit.b_crit, d_bc, level, b_lo, b_hi)
    s_min = _ratio_estimate(fit.s_min, d_smin, level, bc.high is not None, "B_crit above the measured range: "
                            "the curve was not seen to level off")
    e_min = _ratio_estimate(fit.e_min, d_smin * d_bc, level, bc.low is not None, "B_crit below the measured "
                            "range: the curve is flat, no perfect scaling seen")
    critical = {
        "mccandlish": bc,
        "examples_overhead": _batch_estimate(critical_fraction * fit.b_crit, critical_fraction * d_bc, level,
                                             b_lo, b_hi),
        "zhang2024": _zhang_estimate(b, median, np.exp(data_curves), critical_fraction, level, b_lo, b_hi,
                                     fit.b_crit, perfect),
    }
    max_useful = _batch_estimate(float(batch_at_speedup(flat, fit.b_crit)), batch_at_speedup(flat, d_bc),
                                 level, b_lo, b_hi)
    g_fit = fitted_speedup(b, fit.b_crit)  # (n,)
    g_draws = fitted_speedup(b[None, :], d_bc[:, None])  # (K, n)
    g_lo, g_hi = zip(*(_quantiles(g_draws[:, i], level) for i in range(b.size)), strict=True)
    labels = tuple(label_speedup(lo, hi, perfect, flat) if o else UNREACHABLE
                   for lo, hi, o in zip(g_lo, g_hi, ok, strict=True))
    return CurveAnalysis(
        **common, speedup=tuple(float(x) for x in g_fit), speedup_low=tuple(g_lo), speedup_high=tuple(g_hi),
        regimes=labels, fit=fit, s_min=s_min, b_crit=bc, e_min=e_min, critical=critical,
        max_useful=max_useful, n_bootstrap=int(n_bootstrap), bootstrap=method,
    )


def _ratio_estimate(value: float, draws: np.ndarray, level: float, identified: bool, why: str) -> Estimate:
    """S_min or E_min: the interval, with its lower end open (towards 0) when not identified."""
    low, high = _quantiles(draws, level)
    if identified:
        return Estimate(value, low, high, True)
    return Estimate(value, None, high if math.isfinite(high) else None, False, why)


def _zhang_estimate(b, median, curves, fraction, level, b_lo, b_hi, b_crit, perfect) -> Estimate:
    """Zhang et al.'s rule on the seed-median curve and on every resampled curve (see analyze_steps_curve)."""
    def crossing(steps: np.ndarray) -> float:
        value = critical_batch_from_curve(b, steps, fraction, "first")
        return math.inf if value is None else value

    value = crossing(median)
    draws = np.array([crossing(c) for c in curves])
    estimate = _batch_estimate(value, draws, level, b_lo, b_hi)
    if fitted_speedup(b_lo, b_crit) < perfect:
        note = f"the smallest reachable batch {b_lo:.4g} is not in perfect scaling: no linear reference"
        return Estimate(estimate.value, estimate.low, estimate.high, False, note)
    return estimate
