r"""``advise``'s learning-rate rule, measured: how the best learning rate scales between two batch sizes.

A short probe on the sweep engine (:func:`batchscale.empirical.sweep.run_grid_sweep`, one grid per seed
so every seed has its own best rate, all in one results store): plain mean-loss SGD at batch sizes
B_1 < B_2, every rate of one log grid, the same number of training examples for both (B_1 trains
``steps`` steps, B_2 ``steps`` B_1/B_2), the test loss at the end. Per seed and batch size the best rate
is the grid's minimum of the test loss (median of the last 3 evaluations) refined by a parabola in log rate
through it and its neighbours; per seed the
exponent :math:`\alpha_s = \log(\eta^*_2/\eta^*_1)/\log(B_2/B_1)`, and over seeds the mean with its
Student-t 95% interval. The rule (:func:`rule_of`): ``linear`` when the interval holds 1 and not 1/2
(Goyal et al. 2017, arXiv 1706.02677), ``square-root`` when it holds 1/2 and not 1 (Krizhevsky 2014,
arXiv 1404.5997; Hoffer et al. 2017, arXiv 1705.08741), ``neither`` when it holds neither (e.g. the
saturation of McCandlish et al. 2018's :math:`\epsilon_{opt} = \epsilon_{max}/(1 + B_{noise}/B)` above
B_noise), ``undecided`` when it holds both or too few seeds found an interior best rate.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchscale.errors import require

LINEAR, SQRT = 1.0, 0.5
GRID_FACTOR = 2**0.5  # neighbouring rates of the probe's grid
GRID_LOW, GRID_HIGH = -6, 8  # the grid: lr x GRID_FACTOR^k, k = GRID_LOW..GRID_HIGH (lr/8 .. 16 lr)
GRID_SIZE = GRID_HIGH - GRID_LOW + 1
LAST_EVALS = 3  # a trial's loss: the median of its last evaluations (the engine's geometric schedule)


@dataclass(frozen=True)
class LrProbe:
    """The probe's result: per seed the best rate at each batch size (None: on the grid's edge or no
    finite loss) and the exponent, the mean exponent with its interval, the rule, and its budget."""

    batch_sizes: tuple[int, int]
    steps: tuple[int, int]
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    best: tuple[tuple[float | None, float | None], ...]
    exponents: tuple[float, ...]
    exponent: float
    interval: tuple[float, float]
    rule: str
    n_trials: int
    examples_per_trial: int

    def base_rate(self) -> float | None:
        """The best rate at B_1: geometric mean over the seeds that found one."""
        found = [b[0] for b in self.best if b[0] is not None]
        return math.exp(sum(math.log(r) for r in found) / len(found)) if found else None

    def lr_at(self, batch_size: int) -> float | None:
        r"""The rule's rate at ``batch_size``: :math:`\eta^*_1 (B/B_1)^\alpha` (None when undetermined)."""
        base = self.base_rate()
        if base is None or not math.isfinite(self.exponent):
            return None
        return base * (batch_size / self.batch_sizes[0]) ** self.exponent

    def to_dict(self) -> dict[str, Any]:
        return {"batch_sizes": list(self.batch_sizes), "steps": list(self.steps),
                "learning_rates": list(self.learning_rates), "seeds": list(self.seeds),
                "best_learning_rates": [list(b) for b in self.best], "exponents": list(self.exponents),
                "exponent": self.exponent, "interval": list(self.interval), "rule": self.rule,
                "n_trials": self.n_trials, "examples_per_trial": self.examples_per_trial,
                "base_learning_rate": self.base_rate()}


def best_log_rate(log_rates: Sequence[float], losses: Sequence[float | None]) -> float | None:
    r"""The minimum of the loss over an evenly spaced grid of log rates x, refined by the least-squares
    parabola :math:`f \approx a x^2 + b x + c` through it and up to two neighbours on each side (finite
    losses only): :math:`-b/2a`, clamped to the grid points next to the minimum; the grid point itself when
    fewer than 3 are finite or a <= 0. None when the minimum is on the grid's edge (the best rate may lie
    outside) or no loss is finite."""
    import numpy as np

    f = [math.inf if v is None or not math.isfinite(v) else float(v) for v in losses]
    if not any(math.isfinite(v) for v in f):
        return None
    i = min(range(len(f)), key=lambda k: (f[k], k))
    if i == 0 or i == len(f) - 1:
        return None
    near = [k for k in range(max(0, i - 2), min(len(f), i + 3)) if math.isfinite(f[k])]
    if len(near) < 3:
        return log_rates[i]
    a, b, _ = np.polyfit([log_rates[k] for k in near], [f[k] for k in near], 2)
    if a <= 0:
        return log_rates[i]
    return float(min(log_rates[i + 1], max(log_rates[i - 1], -b / (2 * a))))


def seed_best(rows: Sequence[Mapping[str, Any]], batch_size: int) -> float | None:
    """One seed's best rate at ``batch_size`` from its grid rows (:func:`best_log_rate`)."""
    mine = sorted((r for r in rows if r["batch_size"] == batch_size), key=lambda r: r["learning_rate"])
    x = best_log_rate([math.log(r["learning_rate"]) for r in mine], [r["test_metric"] for r in mine])
    return None if x is None else math.exp(x)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean, mean -+ t_{n-1} s / sqrt(n) (n >= 2)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, -math.inf, math.inf
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * s / math.sqrt(n)
    return mean, mean - half, mean + half


def rule_of(low: float, high: float) -> str:
    """``linear`` | ``square-root`` | ``neither`` | ``undecided`` from the exponent's interval."""
    has_linear, has_sqrt = low <= LINEAR <= high, low <= SQRT <= high
    if has_linear and not has_sqrt:
        return "linear"
    if has_sqrt and not has_linear:
        return "square-root"
    if not (has_linear or has_sqrt):
        return "neither"
    return "undecided"


def probe_batch_sizes(low: int, high: int, n_train: int) -> tuple[int, int]:
    """B_1 = the recommended range's low end, B_2 = its high end or 4 B_1 if that is further, both
    within the training set (B_2 <= n_train, B_1 <= B_2 / 4 when B_2 had to shrink)."""
    b2 = min(max(high, 4 * low), n_train)
    b1 = max(1, min(low, b2 // 4))
    require(b2 >= 2 * b1, f"the training set ({n_train} examples) is too small for a learning-rate probe")
    return b1, b2


def probe_grid(lr: float) -> tuple[float, ...]:
    """The probe's rates: ``lr`` x 2^(k/2), k = -6..8 (lr/8 .. 16 lr), 4 significant digits."""
    from batchscale.empirical.sweep import round_sig

    return tuple(round_sig(lr * GRID_FACTOR**k) for k in range(GRID_LOW, GRID_HIGH + 1))


def lr_probe(
    workload: str,
    workload_options: Mapping[str, Any],
    batch_sizes: tuple[int, int],
    *,
    lr: float,
    steps: int,
    seeds: Sequence[int],
    n_train: int,
    device: str = "cpu",
    data_seed: int = 0,
    store: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> LrProbe:
    """Run the probe (see the module docstring): ``steps`` SGD steps at B_1, the same examples at B_2;
    ``data_seed``: the workload's data seed; ``store``: the results file (None: a temporary one)."""
    from batchscale.empirical.executors import ExecutorConfig
    from batchscale.empirical.sweep import GridSweepConfig, run_grid_sweep

    b1, b2 = batch_sizes
    rates = probe_grid(lr)
    epochs = steps * b1 / n_train
    configs = [GridSweepConfig(workload=workload, workload_options=tuple(dict(workload_options).items()),
                               batch_sizes=(b1, b2), learning_rates=rates, optimizer="sgd", loss_form="mean",
                               epochs=epochs, seeds=(seed,), data_seed=data_seed, target_metric="loss",
                               last_evals=LAST_EVALS, device=device) for seed in seeds]
    for config in configs:
        config.validate(n_train)
    if progress is not None:
        progress(f"advise: learning-rate probe: batch {b1} and {b2}, {len(rates)} rates "
                 f"{rates[0]:.3g}..{rates[-1]:.3g}, {len(seeds)} seeds, {steps * b1} examples per trial")
    seed_rows = []
    with tempfile.TemporaryDirectory(prefix="batchscale-advise-") as tmp:
        db = store if store is not None else str(Path(tmp) / "probe.sqlite")
        executor = ExecutorConfig(name="inline", folder=str(Path(tmp) / "executor"))
        for config in configs:
            rows, _ = run_grid_sweep(config, store=db, executor=executor, n_train=n_train, progress=progress)
            seed_rows.append(rows)
    return analyse_probe(seed_rows, (b1, b2), rates, tuple(seeds), steps * b1)


def analyse_probe(seed_rows: Sequence[Sequence[Mapping[str, Any]]], batch_sizes: tuple[int, int],
                  rates: tuple[float, ...], seeds: tuple[int, ...], examples: int) -> LrProbe:
    """The probe's answer from each seed's grid rows (``batch_size``, ``learning_rate``,
    ``test_metric``, ``steps``): per seed the best rates and the exponent, then the mean exponent, its
    interval and the rule (see the module docstring)."""
    b1, b2 = batch_sizes
    best, exponents = [], []
    for rows in seed_rows:
        pair = (seed_best(rows, b1), seed_best(rows, b2))
        best.append(pair)
        if pair[0] is not None and pair[1] is not None:
            exponents.append(math.log(pair[1] / pair[0]) / math.log(b2 / b1))
    steps_at = tuple(next(r["steps"] for r in seed_rows[0] if r["batch_size"] == b) for b in (b1, b2))
    if len(exponents) >= 2:
        mean, low, high = t_interval(exponents)
        rule = rule_of(low, high)
    else:
        mean, low, high, rule = (exponents[0] if exponents else math.nan), -math.inf, math.inf, "undecided"
    n_trials = sum(len(rows) for rows in seed_rows)
    return LrProbe((b1, b2), steps_at, rates, seeds, tuple(best), tuple(exponents), mean, (low, high), rule,
                   n_trials, examples)


def probe_text(probe: LrProbe) -> str:
    """One line: the rule, the exponent with its interval, the seeds and the budget."""
    b1, b2 = probe.batch_sizes
    low, high = probe.interval
    found = f"{len(probe.exponents)} of {len(probe.seeds)} seeds"
    exponent = "undetermined" if not math.isfinite(probe.exponent) else (
        f"{probe.exponent:.3g} [{low:.3g}, {high:.3g}]")
    return (f"learning-rate rule: {probe.rule} (best lr ~ B^alpha, alpha {exponent}, {found} with an "
            f"interior best rate; batch {b1} vs {b2})")


__all__ = ["LrProbe", "analyse_probe", "best_log_rate", "lr_probe", "probe_batch_sizes", "probe_grid",
           "probe_text", "rule_of", "seed_best", "t_interval"]
