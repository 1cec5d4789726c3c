"""One steps-to-target curve classified point by point (the rule of earlier releases, kept for callers) and
learning-rate scaling rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from batchscale.errors import InputError, require

REGIMES: tuple[str, ...] = ("perfect_scaling", "diminishing_returns", "maximal_parallelism")


UNREACHABLE = "unreachable"


REFERENCES: tuple[str, ...] = ("first", "min")


SCALING_RULES: tuple[str, ...] = ("linear", "sqrt", "noise_scale")


DEFAULT_CRITICAL_FRACTION = 0.2


DEFAULT_FLAT_FRACTION = 0.1


@dataclass(frozen=True)
class RegimeReport:
    """The regime of every batch size of one steps-to-target curve.

    Attributes:
        batch_sizes: the batch sizes, ascending.
        steps: steps to target per batch size; ``inf``/``nan`` = target not reached.
        regimes: one label per batch size: one of :data:`REGIMES`, or ``"unreachable"``.
        critical_batch_size: the batch size where the examples-to-target B*S(B) first exceed
            ``(1 + critical_fraction)`` times the reference, interpolated linearly in
            (log B, log B*S); ``None`` when no measured point exceeds it (perfect scaling throughout).
        max_useful_batch_size: the smallest measured batch size beyond which no larger measured batch
            cuts the steps by more than ``flat_fraction`` per doubling; ``None`` when the curve never
            flattens within the measured range.
        critical_fraction: allowed excess of examples-to-target over the reference for perfect scaling.
        flat_fraction: the per-doubling step reduction below which the curve counts as flat.
        reference: ``"first"`` (the smallest reachable batch) or ``"min"`` (the fewest examples).
    """

    batch_sizes: tuple[int, ...]
    steps: tuple[float, ...]
    regimes: tuple[str, ...]
    critical_batch_size: float | None
    max_useful_batch_size: int | None
    critical_fraction: float = DEFAULT_CRITICAL_FRACTION
    flat_fraction: float = DEFAULT_FLAT_FRACTION
    reference: str = "first"

    def rows(self) -> list[dict]:
        """``[{"batch_size", "steps", "regime"}, ...]`` per batch size; steps ``None`` if unreachable."""
        return [
            {"batch_size": b, "steps": s if math.isfinite(s) else None, "regime": r}
            for b, s, r in zip(self.batch_sizes, self.steps, self.regimes, strict=True)
        ]


def _checked_curve(batch_sizes: Sequence, steps: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Batch sizes and steps as float arrays sorted by batch size, after the input checks."""
    b = np.asarray(batch_sizes, dtype=float).ravel()
    s = np.asarray(steps, dtype=float).ravel()
    require(b.size > 0, "batch_sizes is empty")
    require(b.size == s.size, f"{b.size} batch sizes but {s.size} step counts")
    bad_b = b[~(np.isfinite(b) & (b > 0))]
    require(bad_b.size == 0, f"batch size must be > 0, got {bad_b.tolist()[:1]}")
    require(np.all(b == np.round(b)), f"batch sizes must be integers, got {b.tolist()}")
    require(np.unique(b).size == b.size, f"batch sizes must be distinct, got {b.astype(int).tolist()}")
    bad_s = s[np.isfinite(s) & (s <= 0)]
    require(bad_s.size == 0, f"steps must be > 0 (or inf/nan for unreachable), got {bad_s.tolist()[:1]}")
    order = np.argsort(b)
    return b[order], s[order]


def examples_to_target(batch_sizes: Sequence, steps: Sequence) -> np.ndarray:
    r"""Examples processed to reach the target, :math:`E(B) = B\,S(B)`.

    B is ``batch_sizes``, S(B) is ``steps``; non-finite steps give ``inf``. (Shallue et al. 2018, Sec. 3.)
    """
    b = np.asarray(batch_sizes, dtype=float)
    s = np.asarray(steps, dtype=float)
    return np.where(np.isfinite(s), b * np.where(np.isfinite(s), s, 0.0), np.inf)


def critical_batch_from_curve(
    batch_sizes: np.ndarray, steps: np.ndarray, critical_fraction: float, reference: str = "first"
) -> float | None:
    r"""The batch size where examples-to-target first exceed :math:`(1+f)\,E_{ref}`.

    :math:`E(B) = B S(B)`; :math:`E_{ref}` is E at the smallest reachable batch (``reference="first"``)
    or the smallest E (``"min"``); f is ``critical_fraction``. Scanning upward from the reference point,
    the first reachable point with :math:`E > (1+f) E_{ref}` and the reachable point before it bracket the
    crossing, found by linear interpolation of :math:`\log E` in :math:`\log B`. Returns ``None`` if no
    point exceeds the threshold. Expects sorted input (see :func:`classify_regimes`).
    """
    ok = np.isfinite(steps)
    b, e = batch_sizes[ok], examples_to_target(batch_sizes[ok], steps[ok])
    if b.size == 0:
        return None
    start = 0 if reference == "first" else int(np.argmin(e))
    threshold = (1.0 + critical_fraction) * e[start]
    above = np.nonzero(e[start:] > threshold)[0]
    if above.size == 0:
        return None
    k = start + int(above[0])
    # log B* = log B_j + (log T - log E_j) / (log E_k - log E_j) * (log B_k - log B_j)
    j = k - 1
    t = (math.log(threshold) - math.log(e[j])) / (math.log(e[k]) - math.log(e[j]))
    return float(math.exp(math.log(b[j]) + t * (math.log(b[k]) - math.log(b[j]))))


def max_useful_batch_from_curve(
    batch_sizes: np.ndarray, steps: np.ndarray, flat_fraction: float
) -> int | None:
    r"""The smallest batch size beyond which doubling no longer cuts the steps by more than ``flat_fraction``.

    For reachable points j < k the step reduction per doubling between them is
    :math:`r_{jk} = 1 - (S_k/S_j)^{1/\log_2(B_k/B_j)}`. The answer is the smallest reachable
    :math:`B_j` with :math:`r_{jk} \le` ``flat_fraction`` for every larger reachable :math:`B_k`
    (a noisy uptick, :math:`S_k > S_j`, never counts as a reduction). The largest reachable point is not
    a candidate (nothing beyond it was measured): if no smaller point qualifies, the curve was not seen to
    flatten and the result is ``None``.
    """
    ok = np.isfinite(steps)
    b, s = batch_sizes[ok], steps[ok]
    for j in range(b.size - 1):
        # r_jk = 1 - (S_k / S_j) ** (1 / log2(B_k / B_j))
        doublings = np.log2(b[j + 1 :] / b[j])
        reduction = 1.0 - (s[j + 1 :] / s[j]) ** (1.0 / doublings)
        if np.all(reduction <= flat_fraction):
            return int(b[j])
    return None


def classify_regimes(
    batch_sizes: Sequence[int],
    steps: Sequence[float],
    critical_fraction: float = DEFAULT_CRITICAL_FRACTION,
    flat_fraction: float = DEFAULT_FLAT_FRACTION,
    reference: str = "first",
) -> RegimeReport:
    r"""Label each batch size perfect scaling, diminishing returns or maximal parallelism.

    Rules (Shallue et al. 2018, Sec. 4.1, made exact):

    * :math:`E(B) = B\,S(B)` is the examples-to-target; :math:`E_{ref}` is E at the smallest reachable
      batch (``reference="first"``) or the smallest E over the curve (``reference="min"``).
    * the **critical batch size** :math:`B^*` is where E first exceeds :math:`(1+f)E_{ref}`, f =
      ``critical_fraction`` (log-log interpolation, :func:`critical_batch_from_curve`);
    * the **maximal useful batch size** :math:`B_{max}` is the smallest batch beyond which no larger batch
      cuts the steps by more than ``flat_fraction`` per doubling (:func:`max_useful_batch_from_curve`);
    * a reachable batch B is ``maximal_parallelism`` if :math:`B > B_{max}`, else ``perfect_scaling`` if
      :math:`B \le B^*` (or :math:`B^*` is None), else ``diminishing_returns``; a batch whose steps are
      ``inf``/``nan`` is ``unreachable``.

    The labels are monotone in B by construction, so one noisy point cannot split a regime.
    For the model curve :math:`S = S_{min}(1 + B_c/B)` with reference "first" at :math:`B_0`,
    :math:`B^* = (1+f)B_0 + f B_c`, and on a powers-of-two grid
    :math:`B_{max}` is the smallest grid point with :math:`B \ge B_c (1/(2 f_{flat}) - 1)`.

    Args:
        batch_sizes: distinct positive integers (any order; the report is sorted).
        steps: steps to target, positive, or ``inf``/``nan`` where the target was not reached.
        critical_fraction: f > 0 (default 0.2: 20% more examples than the reference).
        flat_fraction: in (0, 1) (default 0.1: doubling cuts the steps by at most 10%).
        reference: ``"first"`` or ``"min"``.
    """
    require(reference in REFERENCES, f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    require(
        math.isfinite(critical_fraction) and critical_fraction > 0,
        f"critical_fraction must be > 0, got {critical_fraction}",
    )
    require(0 < flat_fraction < 1, f"flat_fraction must be in (0, 1), got {flat_fraction}")
    b, s = _checked_curve(batch_sizes, steps)
    critical = critical_batch_from_curve(b, s, critical_fraction, reference)
    max_useful = max_useful_batch_from_curve(b, s, flat_fraction)
    labels = tuple(_label(bi, si, critical, max_useful) for bi, si in zip(b, s, strict=True))
    return RegimeReport(
        batch_sizes=tuple(int(x) for x in b),
        steps=tuple(float(x) for x in s),
        regimes=labels,
        critical_batch_size=critical,
        max_useful_batch_size=max_useful,
        critical_fraction=float(critical_fraction),
        flat_fraction=float(flat_fraction),
        reference=reference,
    )


def _label(batch: float, steps: float, critical: float | None, max_useful: int | None) -> str:
    if not math.isfinite(steps):
        return UNREACHABLE
    if max_useful is not None and batch > max_useful:
        return "maximal_parallelism"
    if critical is None or batch <= critical:
        return "perfect_scaling"
    return "diminishing_returns"


def scaling_rule_lr(
    batch_sizes: Sequence[float],
    base_batch: float,
    base_lr: float,
    rule: str = "linear",
    b_noise: float | None = None,
) -> np.ndarray:
    r"""Predicted best learning rate per batch size under a scaling rule; ``base_lr`` at ``base_batch``.

    * ``linear`` (Goyal et al. 2017): :math:`\eta(B) = \eta_0 B / B_0`;
    * ``sqrt`` (Krizhevsky 2014; Hoffer et al. 2017): :math:`\eta(B) = \eta_0 \sqrt{B / B_0}`;
    * ``noise_scale`` (McCandlish et al. 2018, eq. 2.6):
      :math:`\epsilon_{opt}(B) = \epsilon_{max} / (1 + B_{noise}/B)` with
      :math:`\epsilon_{max} = \eta_0 (1 + B_{noise}/B_0)` so that :math:`\epsilon_{opt}(B_0) = \eta_0`.

    :math:`B` is ``batch_sizes``, :math:`B_0` is ``base_batch``, :math:`\eta_0` is ``base_lr``,
    :math:`B_{noise}` is ``b_noise`` (required, >= 0, for ``noise_scale``).
    """
    require(rule in SCALING_RULES, f"rule must be one of {', '.join(SCALING_RULES)}, got {rule!r}")
    b = np.asarray(batch_sizes, dtype=float)
    ok = b.size > 0 and bool(np.all(np.isfinite(b) & (b > 0)))
    require(ok, f"batch sizes must be > 0, got {b.tolist()}")
    require(math.isfinite(base_batch) and base_batch > 0, f"base_batch must be > 0, got {base_batch}")
    require(math.isfinite(base_lr) and base_lr > 0, f"base_lr must be > 0, got {base_lr}")
    if rule == "linear":
        return base_lr * b / base_batch
    if rule == "sqrt":
        return base_lr * np.sqrt(b / base_batch)
    if b_noise is None:
        raise InputError("rule 'noise_scale' needs b_noise")
    require(math.isfinite(b_noise) and b_noise >= 0, f"b_noise must be >= 0, got {b_noise}")
    # eps(B) = eps_max / (1 + B_noise / B),  eps_max = base_lr (1 + B_noise / B_0)
    eps_max = base_lr * (1.0 + b_noise / base_batch)
    return eps_max / (1.0 + b_noise / b)
