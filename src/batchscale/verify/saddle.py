r"""``saddle``: gradient noise escapes a strict saddle, full-batch gradient descent started on it never does.

The problem: M examples with losses :math:`l_i(u, v) = u^2/2 - v^2/2 + v^4/4 + a_i^\top (u, v)`, whose
mean :math:`f = u^2/2 - v^2/2 + v^4/4` has a strict saddle at 0 (Hessian diag(1, -1)) and minima at
v = +-1. The offsets come in pairs :math:`\pm b_k` on a grid of :math:`2^{-20}`, so their mean is exactly 0
in floating point: the full-batch gradient at the saddle is exactly zero (Ge et al. 2015 study this
setting: the noise of SGD, not the gradient, moves the iterate off the saddle).

Prediction (linearised around the saddle): mean-form SGD with step eta on batches of m drawn without
replacement moves :math:`v_{t+1} = (1+\eta) v_t - \eta \xi_t` with :math:`\mathrm{Var}\,\xi_t =
c(m)\,\sigma^2/m` (:math:`c(m) = (M-m)/(M-1)`, :math:`\sigma^2` the population variance of the offsets'
v-component), so :math:`v_t \approx (1+\eta)^t s Z` with :math:`s^2 = \eta^2 c(m)\sigma^2/(m((1+\eta)^2-1))`
and Z standard normal. The first t with :math:`|v_t| \ge r` then has mean

.. math:: E[\tau] = \frac{\ln(r/s) + (\gamma + \ln 2)/2}{\ln(1+\eta)}

(:math:`E\ln|Z| = -(\gamma+\ln 2)/2`): it grows like :math:`\ln(m/c(m))/(2\ln(1+\eta))`, and is infinite
at m = M, where c(M) = 0. Measured: that first-passage step, over many independent SGD runs per m.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from batchscale.verify.common import mean_and_stderr
from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, make_row

CLAIM = "saddle"
WORKLOAD = "strict-saddle"
EULER_GAMMA = 0.5772156649015329
PAIRS = 32  # M = 64 examples
NOISE = 0.01  # standard deviation of the offsets
LR = 0.1
RADIUS = 0.1  # escape: |v| >= RADIUS (the quartic term is 1% of the gradient there)
BATCH_SIZES = (1, 8, 32, 56, 64)
RUNS = {True: 100, False: 2000}
GRID = 2.0**-20


class Problem(NamedTuple):
    """The offsets a_i (M, 2) and the population variance of their v-component."""

    offsets: Any  # (M, 2) float64
    variance: float


def make_problem(seed: int, pairs: int = PAIRS, noise: float = NOISE) -> Problem:
    """Offsets +-b_k, b_k ~ N(0, noise^2 I) rounded to the grid 2^-20 (their sum is exact: mean 0)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    b = torch.round(torch.randn(pairs, 2, generator=g, dtype=torch.float64) * noise / GRID) * GRID
    offsets = torch.stack([b, -b], 1).reshape(2 * pairs, 2)  # (M, 2)
    return Problem(offsets, float(offsets[:, 1].pow(2).mean()))


def gradient(w: Any, batch_offsets: Any) -> Any:
    """Mean-loss minibatch gradient at w (R, 2) for batches (R, m, 2): (u, -v + v^3) + mean a_i."""
    import torch

    u, v = w[:, 0], w[:, 1]
    return torch.stack([u, -v + v**3], 1) + batch_offsets.mean(1)


def escape_steps(problem: Problem, batch_size: int, runs: int, seed: int, max_steps: int) -> list[float]:
    """First step with |v| >= RADIUS of ``runs`` SGD runs started exactly at the saddle (inf: never)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    population = problem.offsets.shape[0]
    w = torch.zeros(runs, 2, dtype=torch.float64)  # (R, 2)
    escaped = torch.full((runs,), math.inf, dtype=torch.float64)
    for step in range(1, max_steps + 1):
        idx = torch.rand(runs, population, generator=g).argsort(1)[:, :batch_size]  # (R, m) without repl.
        w = w - LR * gradient(w, problem.offsets[idx])
        new = (w[:, 1].abs() >= RADIUS) & torch.isinf(escaped)
        escaped[new] = step
        if not torch.isinf(escaped).any():
            break
    return escaped.tolist()


def predicted_escape_steps(batch_size: int, population: int, variance: float, lr: float = LR) -> float:
    r""":math:`E[\tau] = (\ln(r/s) + (\gamma+\ln 2)/2)/\ln(1+\eta)` (module docstring); inf at m = M."""
    from batchscale.vocabulary import finite_population_factor

    c = finite_population_factor(population, batch_size, "without")
    if c == 0:
        return math.inf
    s = math.sqrt(lr**2 * c * variance / (batch_size * ((1 + lr) ** 2 - 1)))
    return (math.log(RADIUS / s) + (EULER_GAMMA + math.log(2)) / 2) / math.log(1 + lr)


class SaddleRuns(NamedTuple):
    batch_size: int
    steps: list[float]  # per run; inf when it never escaped
    max_steps: int


def saddle_rows(
    problem: Problem,
    measured: list[SaddleRuns],
    config: dict[str, Any],
    predict: Callable[[int, int, float], float] = predicted_escape_steps,
) -> list[Row]:
    population = problem.offsets.shape[0]
    rows = []
    for runs in measured:
        cfg = {**config, "batch_size": runs.batch_size, "runs": len(runs.steps), "max_steps": runs.max_steps}
        predicted = predict(runs.batch_size, population, problem.variance)
        escaped = [s for s in runs.steps if math.isfinite(s)]
        if math.isinf(predicted) or len(escaped) < len(runs.steps):
            fraction = len(escaped) / len(runs.steps)
            rows.append(
                make_row(
                    CLAIM,
                    "full_batch_escaped_fraction" if runs.batch_size == population else "escaped_fraction",
                    WORKLOAD,
                    0.0 if math.isinf(predicted) else 1.0,
                    fraction,
                    n_seeds=len(runs.steps),
                    config=cfg,
                    note=f"m={runs.batch_size}: {len(escaped)} of {len(runs.steps)} runs left "
                    f"|v| < {RADIUS} within {runs.max_steps} steps",
                )
            )
            continue
        mean, stderr = mean_and_stderr(escaped)
        rows.append(
            make_row(
                CLAIM,
                "escape_steps",
                WORKLOAD,
                predicted,
                mean,
                stderr=stderr,
                n_seeds=len(escaped),
                config=cfg,
                note=f"m={runs.batch_size} of M={population}, eta={LR}",
            )
        )
    return rows


def run(opts: Options) -> list[Row]:
    problem = make_problem(opts.seed)
    population = problem.offsets.shape[0]
    runs = RUNS[opts.quick]
    config = opts.config(
        CLAIM, WORKLOAD, pairs=PAIRS, noise=NOISE, lr=LR, radius=RADIUS, workload_ignored=opts.workload
    )
    finite = [predicted_escape_steps(b, population, problem.variance) for b in BATCH_SIZES[:-1]]
    max_steps = int(10 * max(finite))  # 10x the slowest predicted escape
    measured = []
    for k, m in enumerate(BATCH_SIZES):
        opts.say(f"saddle: {runs} runs at m={m} (at most {max_steps} steps)")
        measured.append(SaddleRuns(m, escape_steps(problem, m, runs, opts.seed + k, max_steps), max_steps))
    return saddle_rows(problem, measured, config)
