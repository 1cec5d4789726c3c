"""Steps to target, exactly: the first integer t with E[L(x_t)] <= target for many configurations at once.

One algorithm (certified stepping, :func:`_search`), so this module stays whole: the search steps forward
with doubling strides and accepts a stride only when a rigorous lower bound of the loss over it is above the
target (the noise part never decreases; monotone signals are smallest at the end; oscillating heavy-ball
signals are bounded lobe by lobe), halving the stride otherwise; it starts at the information bound
:func:`batchscale.theory.nqm.bound.steps_lower_bound`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from batchscale.errors import require
from batchscale.theory.nqm.bound import _information_start
from batchscale.theory.nqm.model import Configs, _configs, _family, _Model, build_model
from batchscale.theory.spectra import Spectrum

OK = "ok"
UNREACHABLE = "unreachable"
DIVERGED = "diverged"

COMPACT_FRACTION = 0.7  # drop finished configurations once fewer than this fraction is still searching
CHUNK_ELEMENTS = 2**17  # search at most this many (configuration, bin) pairs at once (cache-sized arrays)
DEFAULT_MAX_STEPS = 10**7


@dataclass(frozen=True, eq=False)
class StepsResult:
    """Steps to target per configuration (all arrays (N,)).

    ``steps`` is -1 unless ``status`` is 'ok'; ``steps_continuous`` interpolates log-loss linearly between
    steps - 1 and steps (inf unless ok), a smooth objective for learning-rate search; ``loss_at_steps`` is
    the expected loss at ``steps`` (at ``max_steps`` when unreachable, inf when diverged).
    """

    configs: Configs
    steps: np.ndarray
    status: np.ndarray
    loss_at_steps: np.ndarray
    steps_continuous: np.ndarray
    floor: np.ndarray
    certified: np.ndarray | None = None  # (N, L) steps shown above the target on the way, padded per row


def steps_to_target(
    spectrum: Spectrum,
    batch_size,
    learning_rate,
    target: float,
    *,
    momentum=0.0,
    ema_decay=0.0,
    precond_power: float = 0.0,
    max_steps: int = DEFAULT_MAX_STEPS,
    race=None,
    guess=None,
    probes=None,
    above=None,
) -> StepsResult:
    """First t <= ``max_steps`` with E[L(x_t)] <= ``target`` for every broadcast configuration at once.

    Absolute target (same units as the loss). Exact first crossing by certified stepping (:func:`_search`,
    module docstring).
    ``race``: optional group id per configuration; only each group's fastest members are resolved, the
    rest are reported 'unreachable' (used to find the best setting per batch size quickly).
    ``guess``: optional expected crossing step per configuration (e.g. a neighbouring setting's); it only
    sets the first stride of the search (half the distance to the guess), never the result.
    ``probes``: optional (N, L) steps per configuration to look at first (e.g. a neighbouring setting's
    ``certified`` steps, which usually certify this one's too); like ``guess`` they never change the result.
    ``above``: optional step per configuration up to which the loss is already known to be above the target
    (e.g. from :func:`_screen_pairs`); the search starts after it.
    Zhang et al. Sec. 3 ("steps required to reach a target loss").
    """
    require(math.isfinite(target) and target > 0, f"target loss must be > 0, got {target}")
    require(
        int(max_steps) == max_steps and max_steps >= 1,
        f"max steps must be a positive integer, got {max_steps}",
    )
    configs = _configs(batch_size, learning_rate, momentum, ema_decay)
    family = _family(configs)
    n = configs.batch_size.size
    race = None if race is None else np.broadcast_to(np.asarray(race, dtype=np.int64), (n,))
    groups = None if race is None else int(race.max(initial=-1)) + 1
    best = None if race is None else np.full(groups, np.iinfo(np.int64).max, dtype=np.int64)
    start = _information_start(spectrum, configs.batch_size, target)
    if above is not None:
        start = np.maximum(start, np.broadcast_to(np.asarray(above, dtype=np.int64), (n,)) + 1)
    start = np.minimum(start, int(max_steps))
    stride = np.ones(n, dtype=np.int64)
    if guess is not None:
        guess = np.broadcast_to(np.asarray(guess, dtype=float), (n,))
        ahead = np.where(np.isfinite(guess), np.minimum(guess, max_steps) - start, 0.0)
        stride = np.maximum(ahead // 2, 1).astype(np.int64)
    if probes is not None:
        probes = np.asarray(probes, dtype=np.int64)
        probes = probes.reshape(n, -1) if probes.ndim == 2 else np.broadcast_to(probes, (n, probes.size))
    # chunks of configurations keep the (configurations, bins) arrays cache-sized; a race carries each
    # group's best over to later chunks, so the group's fastest members are resolved exactly as in one pass
    chunk = max(1, CHUNK_ELEMENTS // spectrum.curvature.size)
    pieces = []
    for lo in range(0, max(n, 1), chunk):
        rows = slice(lo, lo + chunk)
        sub = Configs(*(a[rows] for a in configs))
        model = build_model(spectrum, sub, precond_power, family)
        sub_race = None if race is None else race[rows]
        sub_probes = None if probes is None else probes[rows]
        steps, chains = _search(
            model, target, int(max_steps), start[rows], sub_race, best, stride[rows], sub_probes
        )
        at = np.where(steps >= 0, steps, int(max_steps))
        loss = np.where(model.stable, model.loss(at), np.inf)
        status = np.where(~model.stable, DIVERGED, np.where(steps >= 0, OK, UNREACHABLE))
        continuous = _continuous(model, target, steps, loss)
        pieces.append((steps, status, loss, continuous, model.floor(), chains.padded(steps.size)))
    steps, status, loss, continuous, floor = (np.concatenate(p) for p in list(zip(*pieces, strict=True))[:5])
    certified = _stack_padded([p[5] for p in pieces])
    return StepsResult(configs, steps, status, loss, continuous, floor, certified)


def _stack_padded(blocks: list[np.ndarray]) -> np.ndarray:
    """Row-stack (n_i, L_i) arrays, widening each to the largest L by repeating its last column."""
    return np.concatenate(_widen(*blocks))


def _widen(*blocks: np.ndarray) -> list[np.ndarray]:
    """(n_i, L_i) arrays widened to the largest L by repeating each one's last column."""
    width = max(b.shape[1] for b in blocks)
    return [np.pad(b, ((0, 0), (0, width - b.shape[1])), mode="edge") for b in blocks]


class _Chains(NamedTuple):
    """Certified steps found by :func:`_search`: ``config[i]`` was shown above the target at ``step[i]``."""

    config: np.ndarray
    step: np.ndarray

    def padded(self, n: int) -> np.ndarray:
        """(n, L) steps per configuration, increasing, each row padded with its last value (-1 if none)."""
        order = np.lexsort((self.step, self.config))
        config, step = self.config[order], self.step[order]
        counts = np.bincount(config, minlength=n)
        out = np.full((n, max(int(counts.max(initial=0)), 1)), -1, dtype=np.int64)
        column = np.arange(config.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out[config, column] = step
        last = np.maximum(counts - 1, 0)
        fill = out[np.arange(n), last]
        pad = np.arange(out.shape[1])[None, :] >= counts[:, None]
        return np.where(pad, fill[:, None], out)


SCAN_WIDTH = 16  # at most this many points per configuration and round (scans: consecutive steps)
ROUND_POINTS = 128  # points per round over all configurations still searching (a round has a fixed cost)


def _search(
    model: _Model,
    target: float,
    max_steps: int,
    start: np.ndarray,
    race: np.ndarray | None = None,
    best: np.ndarray | None = None,
    stride: np.ndarray | None = None,
    probes: np.ndarray | None = None,
) -> tuple[np.ndarray, _Chains]:
    """First t <= max_steps with loss(t) <= target per configuration (-1 if none), exactly.

    Certified stepping: every step up to ``a`` is known to be above the target. Each round looks at points
    ``b_1 < b_2 < ... < b_M`` above ``a`` and walks along them while each link (b_{j-1}, b_j] (b_0 = a) is
    shown free of crossings: the loss at b_j is above the target and either b_j - b_{j-1} = 1 or a rigorous
    lower bound of the loss on the link (noise part at b_{j-1}, which never decreases, plus the signal of
    the monotone coordinates at b_j, plus :meth:`_Model.link_bound`) is above the target. A point at or
    below the target right after a certified unit link is the answer.

    Points: M = ``ROUND_POINTS`` / (configurations still searching), at most ``SCAN_WIDTH``, ``step`` apart.
    The step doubles after a last link certified by the bound, stays after a unit link, halves the first
    link that failed, and the points never pass the smallest step seen at or below the target (they split
    that gap evenly: bisection). Where the bound failed on a short link (oscillating losses near the target)
    the points are consecutive steps, which need no bound. Steps before ``start`` (the information bound)
    are known to be above the target. Values come from the fast evaluation where its error bound decides
    the side of the target and from the exact one otherwise (:func:`_evaluate_decided`).

    ``race`` (group ids sharing ``start``): once a member of a group is at or below the target at step s,
    members whose search has passed s stop (they cannot beat it) and report -1. ``best`` (per group, updated
    in place) carries the groups' best steps between calls. ``stride``: first step size per configuration
    (default 1). ``probes``: (N, L) steps per configuration for the first round (negative entries unused;
    e.g. a neighbouring setting's certified steps). Strides and probes only change the path, never the
    answer. Returns the steps and every step certified above the target on the way (:class:`_Chains`).
    """
    n = model.stable.size
    steps = np.full(n, -1, dtype=np.int64)
    active = np.flatnonzero(model.stable)
    # a never-increasing signal that is still above the target at max_steps never lets the loss reach it
    active = active[model.take(active).monotone_signal(max_steps) <= target]
    sub = model.take(active)
    chain_config, chain_step = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    # the virtual point start - 1: noise 0 and signal 0 are lower bounds there
    a = start[active] - 1
    noise_a = np.zeros(active.size)
    signal_a = np.zeros((active.size, sub.weight.size))
    step = np.ones(active.size, dtype=np.int64) if stride is None else stride[active].copy()
    pending = None if probes is None else probes[active]
    alive = np.ones(active.size, dtype=bool)
    stalled = np.zeros(active.size, dtype=bool)  # the bound failed on a short link: scan instead
    upper = np.full(active.size, np.iinfo(np.int64).max, dtype=np.int64)  # smallest step seen at or below
    if race is not None and best is None:
        best = np.full(int(race.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
    while True:
        if best is not None:
            alive &= a < best[race[active]]
        alive &= a < max_steps
        if not alive.any():
            break
        width = int(np.clip(ROUND_POINTS // alive.sum(), 1, SCAN_WIDTH))
        if alive.sum() < (COMPACT_FRACTION if width == 1 else 0.95) * alive.size:  # dead rows cost points
            keep = np.flatnonzero(alive)
            active, sub, a, step, noise_a = active[keep], sub.take(keep), a[keep], step[keep], noise_a[keep]
            signal_a, upper, stalled = signal_a[keep], upper[keep], stalled[keep]
            pending = None if pending is None else pending[keep]
            alive = np.ones(keep.size, dtype=bool)
        points, valid = _round_points(a, step, upper, max_steps, stalled, pending, width)
        pending = None
        m = points.shape[1]
        loss, noise, monotone, signal = _evaluate_decided(sub, points, target)
        before = np.concatenate([a[:, None], points[:, :-1]], axis=1)
        noise_before = np.concatenate([noise_a[:, None], noise[:, :-1]], axis=1)
        gap = points - before
        below = valid & alive[:, None] & (loss <= target)
        by_bound = ~below & (noise_before + monotone > target)
        unsure = valid & ~below & ~by_bound & alive[:, None]
        if unsure.any() and sub.wave:  # oscillating signals: bound them lobe by lobe
            r, c = np.nonzero(unsure)
            start_signal = np.where((c == 0)[:, None], signal_a[r], signal[r, np.maximum(c - 1, 0)])
            bound = sub.link_bound(before[r, c], points[r, c], start_signal, signal[r, c], r)
            by_bound[r, c] = noise_before[r, c] + monotone[r, c] + bound > target
        certified = ~valid | (~below & ((gap == 1) | by_bound))
        # walk along each row's certified links up to its first failing one
        failed = ~certified
        k = np.where(failed.any(axis=1), failed.argmax(axis=1), m)
        row = np.arange(a.size)
        walked = alive & (k > 0)
        last = np.maximum(k - 1, 0)
        ok = valid & alive[:, None] & (np.arange(m) < k[:, None])
        chain_config.append(active[np.nonzero(ok)[0]])
        chain_step.append(points[ok])
        stop = np.minimum(k, m - 1)  # the first failing point, else the last one
        stopped = k < m
        found = alive & stopped & below[row, stop] & (gap[row, stop] == 1)
        steps[active[found]] = points[row, stop][found]
        has_below = below.any(axis=1)
        first_below = np.where(has_below, points[row, below.argmax(axis=1)], np.iinfo(np.int64).max)
        if best is not None:  # a member at or below the target: the group's best is at most that step
            np.minimum.at(best, race[active[has_below]], first_below[has_below])
        upper = np.minimum(upper, first_below)
        a = np.where(walked, points[row, last], a)
        noise_a = np.where(walked, noise[row, last], noise_a)
        signal_a = np.where(walked[:, None], signal[row, last], signal_a)
        # next step: halve the failed link; after walking all, double the last link if the bound
        # certified it, else keep it
        last_valid = m - 1 - valid[:, ::-1].argmax(axis=1)
        link = np.where(stopped, gap[row, stop], gap[row, last_valid])
        end_by_bound = by_bound[row, np.where(stopped, stop, last_valid)]
        growth = 2 if m == 1 else m  # all m links certified: stride m times further next round
        step = np.maximum(np.where(stopped, link // 2, np.where(end_by_bound, growth * link, link)), 1)
        stalled = np.where(stopped, ~below[row, stop], stalled & ~end_by_bound)
        # the noise part never decreases: once it is above the target, the loss stays above it
        alive &= ~found & ~(walked & (noise_a > target))
    chains = _Chains(np.concatenate(chain_config), np.concatenate(chain_step))
    return steps, chains


FAST_MARGIN = 1e-12  # relative: fast values this close to the target (beyond their error bound) are redone


def _evaluate_decided(model: _Model, t: np.ndarray, target: float) -> tuple[np.ndarray, ...]:
    """(loss, noise lower bound, monotone signal, per-coordinate signal lower bound) at (N, M) steps ``t``.

    Fast evaluation (:meth:`_Model.evaluate_bounds`); where its error bound leaves the side of the target
    in doubt, the exact evaluation, so ``loss <= target`` always agrees with :meth:`_Model.evaluate`.
    """
    loss, error, noise, monotone, signal = model.evaluate_bounds(t)
    doubt = (error > 0) & (np.abs(loss - target) <= error + FAST_MARGIN * (target + loss))
    if doubt.any():
        r, c = np.nonzero(doubt)
        exact = model.take(r).evaluate(t[r, c])
        loss[r, c], noise[r, c], monotone[r, c], signal[r, c] = exact
    return loss, noise, monotone, signal


def _round_points(a, step, upper, max_steps, stalled, probes, width) -> tuple[np.ndarray, np.ndarray]:
    """(points, valid): the steps each row looks at this round, (n, M), non-decreasing along each row;
    ``valid`` marks the first occurrence of each step (repeats are padding).

    ``probes`` (n, L) when given (negative entries unused); else ``width`` points ``step`` apart, split
    evenly up to the smallest step known at or below the target, or consecutive where the bound stalled.
    """
    if probes is not None:
        points = np.where(probes < 0, -1, np.minimum(probes, max_steps))
    else:
        near = np.minimum(upper, max_steps)
        split = np.minimum(step, np.maximum((near - a) // (width + 1), 1))
        spacing = np.where(stalled & (step <= 2), 1, split)
        points = np.minimum(a[:, None] + spacing[:, None] * np.arange(1, width + 1), near[:, None])
    points = np.maximum.accumulate(np.concatenate([a[:, None], points], axis=1), axis=1)
    # padding repeats the previous step; it is evaluated but ignored, so keep it a real step (a may be -1)
    return np.maximum(points[:, 1:], 0), points[:, 1:] > points[:, :-1]


def _continuous(model: _Model, target: float, steps: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """steps - 1 + fraction of the last step at which log-loss (linear in t) hits log target."""
    out = np.full(steps.size, np.inf)
    out[steps == 0] = 0.0
    rows = np.flatnonzero(steps > 0)
    if rows.size:
        before = model.take(rows).loss(steps[rows] - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = np.log(before / target) / np.log(before / loss[rows])
        out[rows] = steps[rows] - 1 + np.clip(np.nan_to_num(fraction, nan=1.0), 0.0, 1.0)
    return out
