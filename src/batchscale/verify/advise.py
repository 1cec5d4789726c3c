"""``batchscale advise`` (first version): a batch size for the user's model from a short measured run.

Trains the workload's model briefly (plain mean-loss SGD, a bounded, stated number of steps), measures
B_simple = tr(Sigma)/|G|^2 at checkpoints along that run (fast per-example path when every parameterised
layer supports it, the two-batch estimator otherwise), takes the last checkpoint's B_simple as the
critical batch size B_crit, and from McCandlish et al. (2018, eq. 2.11) predicts, relative to their
minima, the steps S(B)/S_min = 1 + B_crit/B and examples E(B)/E_min = 1 + B/B_crit at each power of two.
Everything it assumes is returned with the answer (:attr:`Advice.assumptions`).

Not built yet: the learning-rate probe (linear vs square-root scaling measured at two batch sizes), the
memory per example (whether gradient accumulation is needed), ``--check`` (the verification sweep),
a figure, and extrapolation of B_simple beyond the measured run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchscale.errors import require

# E(B) may exceed E_min by at most this fraction for "fewest steps within +20 % examples"
EXAMPLES_OVERHEAD = 0.2
# and by at most this fraction for "fewest examples"
FEWEST_EXAMPLES_OVERHEAD = 0.05


def _quiet(message: str) -> None:
    """Progress reporter that says nothing."""


@dataclass(frozen=True)
class AdviseOptions:
    """What ``advise`` trains and measures: ``budget_steps`` SGD steps at ``lr`` and ``batch_size``,
    B_simple at ``checkpoints`` + 1 evenly spaced points (step 0 and the end included), on at most
    ``max_examples`` seeded training examples."""

    workload: str = "digits-mlp"
    workload_options: Mapping[str, Any] = field(default_factory=dict)
    budget_steps: int = 200
    lr: float = 0.1
    batch_size: int = 32
    checkpoints: int = 4
    max_examples: int = 4096
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        require(self.budget_steps >= 1, f"--budget-steps must be >= 1, got {self.budget_steps}")
        require(self.checkpoints >= 1, f"--checkpoints must be >= 1, got {self.checkpoints}")
        require(self.max_examples >= 16, f"--max-examples must be >= 16, got {self.max_examples}")


@dataclass(frozen=True)
class Advice:
    """The answer: B_crit with its interval, two recommended ranges, S(B)/S_min and E(B)/E_min per power
    of two (``curve``), the B_simple measurements along the run, and the assumptions behind all of it."""

    critical_batch_size: float
    interval: tuple[float, float]
    method: str
    fewest_steps_within_20pct_examples: tuple[int, int]
    fewest_examples: tuple[int, int]
    curve: list[dict[str, Any]]
    measurements: list[dict[str, Any]]
    assumptions: list[str]
    n_train: int

    def summary(self) -> dict[str, Any]:
        """The headline numbers as one JSON-able dict."""
        return {
            "critical_batch_size": self.critical_batch_size,
            "interval": list(self.interval),
            "method": self.method,
            "fewest_steps_within_20pct_examples": list(self.fewest_steps_within_20pct_examples),
            "fewest_examples": list(self.fewest_examples),
            "n_train": self.n_train,
        }


def steps_and_examples(batch_size: int, b_crit: float) -> tuple[float, float]:
    r"""(S(B)/S_min, E(B)/E_min) = (1 + B_crit/B, 1 + B/B_crit) (McCandlish et al. 2018, eq. 2.11)."""
    from batchscale.theory.noise_scale import examples_to_target, steps_to_target

    return float(steps_to_target(batch_size, 1.0, b_crit)), float(examples_to_target(batch_size, 1.0, b_crit))


def largest_power_of_two_at_most(value: float) -> int:
    """The largest power of two <= ``value`` (1 when ``value`` < 2)."""
    return 1 if value < 2 else 2 ** int(math.floor(math.log2(value)))


def batch_range(overhead: float, low: float, high: float) -> tuple[int, int]:
    """Powers of two B with E(B)/E_min <= 1 + ``overhead``, i.e. B <= overhead * B_crit, for B_crit at the
    ends of its interval [``low``, ``high``]: (the largest such power for ``low``, for ``high``)."""
    return largest_power_of_two_at_most(overhead * low), largest_power_of_two_at_most(overhead * high)


def interval_kind(method: str) -> str:
    """How each measurement's own interval of B_simple was obtained."""
    if method == "two-batch":
        return "95% bootstrap interval over the two-batch draws"
    return "95% bootstrap interval over groups of examples (a point when all examples are measured)"


def advise(opts: AdviseOptions, progress: Callable[[str], None] = _quiet) -> Advice:
    """Train briefly, measure B_simple along the run, and derive the advice (see the module docstring)."""
    from batchscale.empirical.gradients import _check_fast_supported
    from batchscale.empirical.measure import (
        NoiseScaleOptions,
        Training,
        build_setup,
        noise_scale_along_training,
    )
    from batchscale.errors import InputError

    setup = build_setup(opts.workload, opts.workload_options, opts.device, opts.seed, None,
                        cap=opts.max_examples)
    n_train = setup.workload.n_train
    training = Training(steps=opts.budget_steps, lr=opts.lr, batch_size=opts.batch_size, seed=opts.seed)
    training.check(n_train)
    try:
        _check_fast_supported(setup.model)
        method = "fast"
    except InputError:
        method = "two-batch"
    big = min(256, setup.population // 2)
    require(big > 8, f"too few examples to measure on: {setup.population}")
    ns = NoiseScaleOptions(methods=(method,), two_batch=(8, big), seed=opts.seed)
    every = max(1, opts.budget_steps // opts.checkpoints)
    progress(f"advise: training {opts.workload} for {opts.budget_steps} SGD steps (lr {opts.lr}, batch "
             f"{opts.batch_size}), measuring B_simple ({method}) on {setup.population} examples every "
             f"{every} steps")
    rows = noise_scale_along_training(setup, training, ns, every=every, progress=progress)
    good = [r for r in rows if r.get("status") in ("ok", "exceeds dataset") and r.get("b_simple") is not None]
    require(good, "no checkpoint gave a defined B_simple (diverged run or undefined estimates): lower --lr")
    last = good[-1]
    b_crit = float(last["b_simple"])
    late = [r for r in good if r["step"] >= opts.budget_steps / 2] or [last]
    low = min(float(r["b_simple"] if r["ci_low"] is None else r["ci_low"]) for r in late)
    high = max(float(r["b_simple"] if r["ci_high"] is None else r["ci_high"]) for r in late)
    first = good[0]
    trend = b_crit / float(first["b_simple"]) if first["b_simple"] else math.nan
    curve = []
    top = max(4 * max(high, b_crit), 2.0)
    b = 1
    while b <= min(top, n_train):
        s, e = steps_and_examples(b, b_crit)
        curve.append({"batch_size": b, "steps_over_min": s, "examples_over_min": e})
        b *= 2
    assumptions = [
        f"B_crit = B_simple at step {last['step']} of a {opts.budget_steps}-step SGD run (lr {opts.lr}, "
        f"batch {opts.batch_size}, seed {opts.seed}); B_simple changed by x{trend:.3g} from step "
        f"{first['step']}: it usually grows as the loss falls, so later training likely wants larger "
        "batches (not extrapolated)",
        "B_simple = tr(Sigma)/|G|^2 stands for B_noise = tr(H Sigma)/(G^T H G): equal when the Hessian is "
        "a multiple of the identity in the relevant directions (McCandlish et al. 2018)",
        "S(B)/S_min = 1 + B_crit/B and E(B)/E_min = 1 + B/B_crit (McCandlish et al. 2018, eq. 2.11): "
        "a tuned learning rate per batch size, plain SGD; S_min and E_min themselves are not predicted",
        f"interval: the range over the {len(late)} checkpoint(s) of the run's second half of "
        f"B_simple and its {interval_kind(method)}; "
        f"measured on {setup.population} of {n_train} training examples",
        "not built yet: learning-rate probe (linear vs square-root scaling), memory per example, --check",
    ]
    return Advice(
        critical_batch_size=b_crit,
        interval=(low, high),
        method=method,
        fewest_steps_within_20pct_examples=batch_range(EXAMPLES_OVERHEAD, low, high),
        fewest_examples=batch_range(FEWEST_EXAMPLES_OVERHEAD, low, high),
        curve=curve,
        measurements=rows,
        assumptions=assumptions,
        n_train=n_train,
    )


__all__ = ["Advice", "AdviseOptions", "advise", "batch_range", "steps_and_examples"]
