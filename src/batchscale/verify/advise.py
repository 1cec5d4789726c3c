"""``batchscale advise``: a batch size and a learning-rate rule for the user's model from a short run.

1. Trains the workload's model briefly (plain mean-loss SGD, a bounded, stated number of steps) and
   measures B_simple = tr(Sigma)/|G|^2 at checkpoints along that run (fast per-example path when every
   parameterised layer supports it, the two-batch estimator otherwise); the last checkpoint's B_simple is
   the critical batch size B_crit. From McCandlish et al. (2018, eq. 2.11) it predicts, relative to their
   minima, the steps S(B)/S_min = 1 + B_crit/B and examples E(B)/E_min = 1 + B/B_crit at each power of
   two, and the two recommended ranges.
2. The trend of B_simple along the run (:func:`b_simple_trend`): a power law in the step fitted over the
   checkpoints, with an interval; extrapolated to ``train_steps`` only when that is defensible.
3. The learning-rate rule, measured (:mod:`batchscale.verify.advise_lr`): a short probe at two batch
   sizes on the sweep engine decides between linear and square-root scaling.
4. The memory per example, measured (:func:`batchscale.empirical.memory.memory_per_example`), and with
   ``device_memory_gb`` whether the recommended batch sizes need gradient accumulation.
``--check`` (:mod:`batchscale.verify.advise_check`) compares B_crit with the verification sweep's.
Everything it assumes is returned with the answer (:attr:`Advice.assumptions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchscale.errors import require
from batchscale.verify.advise_lr import GRID_SIZE

# E(B) may exceed E_min by at most this fraction for "fewest steps within +20 % examples"
EXAMPLES_OVERHEAD = 0.2
# and by at most this fraction for "fewest examples"
FEWEST_EXAMPLES_OVERHEAD = 0.05
# extrapolating the B_simple trend: at most this many times the measured run's length ...
MAX_EXTRAPOLATION = 10.0
# ... and only when the extrapolated value's 95% interval spans at most this factor (high / low)
MAX_TREND_SPREAD = 4.0
MEMORY_BATCHES = (16, 64, 256)  # batch sizes the memory per example is measured at (capped by the data)
GB = 1e9


def _quiet(message: str) -> None:
    """Progress reporter that says nothing."""


@dataclass(frozen=True)
class AdviseOptions:
    """What ``advise`` trains and measures: ``budget_steps`` SGD steps at ``lr`` and ``batch_size``,
    B_simple at ``checkpoints`` + 1 evenly spaced points (step 0 and the end included), on at most
    ``max_examples`` seeded training examples; a learning-rate probe of ``lr_probe_steps`` steps at the
    smaller batch size and ``lr_probe_seeds`` seeds (0 steps: no probe); ``device_memory_gb``: the
    device's memory, for the gradient-accumulation advice (None: not asked); ``train_steps``: the length
    of the user's full training run in steps of this run, to extrapolate B_simple to (None: not asked);
    ``db``: results store of the probe and ``--check`` (None: a temporary one for the probe); ``check``:
    ``--check`` will follow (its sweep needs a classification workload: checked before training)."""

    workload: str = "digits-mlp"
    workload_options: Mapping[str, Any] = field(default_factory=dict)
    budget_steps: int = 200
    lr: float = 0.1
    batch_size: int = 32
    checkpoints: int = 4
    max_examples: int = 4096
    seed: int = 0
    device: str = "cpu"
    lr_probe_steps: int = 100
    lr_probe_seeds: int = 3
    device_memory_gb: float | None = None
    train_steps: int | None = None
    db: str | None = None
    check: bool = False

    def __post_init__(self) -> None:
        require(self.budget_steps >= 1, f"--budget-steps must be >= 1, got {self.budget_steps}")
        require(self.checkpoints >= 1, f"--checkpoints must be >= 1, got {self.checkpoints}")
        require(self.max_examples >= 16, f"--max-examples must be >= 16, got {self.max_examples}")
        require(self.lr_probe_steps >= 0, f"--lr-probe-steps must be >= 0, got {self.lr_probe_steps}")
        require(self.lr_probe_seeds >= 3, f"--lr-probe-seeds must be >= 3, got {self.lr_probe_seeds}")
        require(self.device_memory_gb is None
                or (math.isfinite(self.device_memory_gb) and self.device_memory_gb > 0),
                f"--device-memory must be a number of GB > 0, got {self.device_memory_gb}")
        require(self.train_steps is None or self.train_steps >= 1,
                f"--train-steps must be >= 1, got {self.train_steps}")

    def budget_text(self) -> str:
        """The run's budget in words (what the default run costs)."""
        probe = ("no learning-rate probe" if self.lr_probe_steps == 0 else
                 f"a learning-rate probe of {2 * GRID_SIZE * self.lr_probe_seeds} trials (2 batch sizes x "
                 f"{GRID_SIZE} rates x {self.lr_probe_seeds} seeds) of {self.lr_probe_steps} steps at the "
                 "smaller batch size, the same examples at the larger")
        return (f"budget: {self.budget_steps} SGD steps of batch {self.batch_size} with B_simple at "
                f"{self.checkpoints + 1} checkpoints; {probe}; memory at {len(MEMORY_BATCHES)} batch sizes")


@dataclass(frozen=True)
class Trend:
    r"""B_simple along the run fitted by a power law in the step, :math:`\log B = a + p \log t` over the
    checkpoints after step 0 (least squares): the exponent p with its 95% Student-t interval, and at
    ``horizon`` (None: not asked) the extrapolated B_simple with the 95% interval of the fitted line there,
    ``defensible`` and the ``reason`` (why not, or the conditions met)."""

    n_points: int
    exponent: float
    exponent_interval: tuple[float, float]
    horizon: int | None
    value: float | None
    interval: tuple[float, float] | None
    defensible: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"n_points": self.n_points, "exponent": self.exponent,
                "exponent_interval": list(self.exponent_interval), "horizon": self.horizon,
                "value": self.value, "interval": None if self.interval is None else list(self.interval),
                "defensible": self.defensible, "reason": self.reason}


@dataclass(frozen=True)
class Advice:
    """The answer: B_crit with its interval, two recommended ranges, S(B)/S_min and E(B)/E_min per power
    of two (``curve``), the B_simple measurements along the run, their trend, the measured learning-rate
    rule (``lr_probe``, None when skipped), the memory per example and the accumulation plan per
    recommended batch size (``accumulation``, empty without a device memory), and the assumptions."""

    critical_batch_size: float
    interval: tuple[float, float]
    method: str
    fewest_steps_within_20pct_examples: tuple[int, int]
    fewest_examples: tuple[int, int]
    curve: list[dict[str, Any]]
    measurements: list[dict[str, Any]]
    assumptions: list[str]
    n_train: int
    trend: Trend | None = None
    lr_probe: Any = None
    memory: Any = None
    accumulation: list[dict[str, Any]] = field(default_factory=list)
    budget: str = ""

    def summary(self) -> dict[str, Any]:
        """The headline numbers as one JSON-able dict."""
        return {
            "critical_batch_size": self.critical_batch_size,
            "interval": list(self.interval),
            "method": self.method,
            "fewest_steps_within_20pct_examples": list(self.fewest_steps_within_20pct_examples),
            "fewest_examples": list(self.fewest_examples),
            "n_train": self.n_train,
            "trend": None if self.trend is None else self.trend.to_dict(),
            "lr_probe": None if self.lr_probe is None else self.lr_probe.to_dict(),
            "memory": None if self.memory is None else self.memory.to_dict(),
            "accumulation": self.accumulation,
            "budget": self.budget,
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


def b_simple_trend(steps: Sequence[int], values: Sequence[float], horizon: int | None,
                   level: float = 0.95) -> Trend:
    r"""The power-law trend of B_simple (see :class:`Trend`) over the checkpoints ``steps`` > 0.

    Least squares of :math:`y = \log B` on :math:`x = \log t`: slope p with standard error
    :math:`s/\sqrt{S_{xx}}`, the line at :math:`x_0 = \log T` with standard error
    :math:`s\sqrt{1/n + (x_0 - \bar x)^2/S_{xx}}`, both with Student-t quantiles on n - 2 degrees of
    freedom. Extrapolating to T is defensible when n >= 3, T <= :data:`MAX_EXTRAPOLATION` x the last
    step, and the interval there spans at most a factor :data:`MAX_TREND_SPREAD`; otherwise it is
    refused with the reason."""
    from scipy import stats

    pts = [(math.log(t), math.log(v)) for t, v in zip(steps, values, strict=True) if t > 0 and v > 0]
    n = len(pts)
    nan2 = (math.nan, math.nan)
    if n < 3:
        return Trend(n, math.nan, nan2, horizon, None, None, False,
                     f"{n} checkpoint(s) after step 0 with a defined B_simple: a trend needs >= 3 "
                     "(raise --checkpoints)")
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    rss = sum((y - my - slope * (x - mx)) ** 2 for x, y in pts)
    s = math.sqrt(rss / (n - 2)) if n > 2 else math.inf
    t = float(stats.t.ppf(0.5 + level / 2, n - 2))
    half = t * s / math.sqrt(sxx)
    exponent_interval = (slope - half, slope + half)
    if horizon is None:
        return Trend(n, slope, exponent_interval, None, None, None, False,
                     "not asked (give --train-steps to extrapolate to the end of your training run)")
    x0 = math.log(horizon)
    centre = my + slope * (x0 - mx)
    width = t * s * math.sqrt(1 / n + (x0 - mx) ** 2 / sxx)
    value, interval = math.exp(centre), (math.exp(centre - width), math.exp(centre + width))
    last = math.exp(max(xs))
    if horizon > MAX_EXTRAPOLATION * last:
        return Trend(n, slope, exponent_interval, horizon, value, interval, False,
                     f"refused: step {horizon} is more than {MAX_EXTRAPOLATION:g}x beyond the last measured "
                     f"step {last:.0f} (measure a longer run: raise --budget-steps)")
    spread = interval[1] / interval[0]
    if spread > MAX_TREND_SPREAD:
        return Trend(n, slope, exponent_interval, horizon, value, interval, False,
                     f"refused: the trend is not determined (its 95% interval at step {horizon} spans a "
                     f"factor {spread:.3g} > {MAX_TREND_SPREAD:g}); raise --checkpoints or --budget-steps")
    return Trend(n, slope, exponent_interval, horizon, value, interval, True,
                 f"power law over {n} checkpoints, step {horizon} within {MAX_EXTRAPOLATION:g}x of the last "
                 f"measured step, 95% interval within a factor {MAX_TREND_SPREAD:g}")


def power_curve(b_crit: float, top: float, n_train: int) -> list[dict[str, Any]]:
    """S(B)/S_min and E(B)/E_min at each power of two up to min(``top``, n_train)."""
    curve, b = [], 1
    while b <= min(top, n_train):
        s, e = steps_and_examples(b, b_crit)
        curve.append({"batch_size": b, "steps_over_min": s, "examples_over_min": e})
        b *= 2
    return curve


def measure_memory(setup: Any, progress: Callable[[str], None]) -> Any:
    """The memory fit of the setup's model at :data:`MEMORY_BATCHES` (capped by the examples measured)."""
    from batchscale.empirical.memory import memory_per_example

    sizes = sorted({min(b, setup.population) for b in MEMORY_BATCHES})
    if len(sizes) < 2:
        sizes = sorted({max(1, setup.population // 4), setup.population})
    progress(f"advise: memory per example (torch profiler allocation peak) at batch {sizes}")
    return memory_per_example(setup.model, setup.loss_fn, setup.x, setup.y, sizes)


def advise(opts: AdviseOptions, progress: Callable[[str], None] = _quiet) -> Advice:
    """Train briefly, measure B_simple along the run, and derive the advice (see the module docstring)."""
    from batchscale.empirical.gradients import _check_fast_supported
    from batchscale.empirical.measure import (
        NoiseScaleOptions,
        Training,
        build_setup,
        noise_scale_along_training,
    )
    from batchscale.empirical.memory import accumulation_plan
    from batchscale.errors import InputError

    setup = build_setup(opts.workload, opts.workload_options, opts.device, opts.seed, None,
                        cap=opts.max_examples)
    n_train = setup.workload.n_train
    require(not opts.check or setup.workload.loss == "cross_entropy",
            f"--check runs the verification sweep to a test-error target, which needs a classification "
            f"workload (cross-entropy loss); {opts.workload} has loss {setup.workload.loss}")
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
    progress(opts.budget_text())
    memory = measure_memory(setup, progress)  # at the seeded initial point, before training moves it
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
    change = b_crit / float(first["b_simple"]) if first["b_simple"] else math.nan
    trend = b_simple_trend([int(r["step"]) for r in good], [float(r["b_simple"]) for r in good],
                           opts.train_steps)
    steps_range = batch_range(EXAMPLES_OVERHEAD, low, high)
    probe = run_lr_probe(opts, steps_range, n_train, str(setup.config["device"]), progress)
    accumulation = []
    if opts.device_memory_gb is not None:
        sizes = sorted({*steps_range, *batch_range(FEWEST_EXAMPLES_OVERHEAD, low, high)})
        accumulation = [accumulation_plan(memory, b, opts.device_memory_gb * GB) for b in sizes]
    assumptions = [
        f"B_crit = B_simple at step {last['step']} of a {opts.budget_steps}-step SGD run (lr {opts.lr}, "
        f"batch {opts.batch_size}, seed {opts.seed}); B_simple changed by x{change:.3g} from step "
        f"{first['step']}: it usually grows as the loss falls, so later training likely wants larger "
        "batches (see the trend line)",
        "B_simple = tr(Sigma)/|G|^2 stands for B_noise = tr(H Sigma)/(G^T H G): equal when the Hessian is "
        "a multiple of the identity in the relevant directions (McCandlish et al. 2018)",
        "S(B)/S_min = 1 + B_crit/B and E(B)/E_min = 1 + B/B_crit (McCandlish et al. 2018, eq. 2.11): "
        "a tuned learning rate per batch size, plain SGD; S_min and E_min themselves are not predicted",
        f"interval: the range over the {len(late)} checkpoint(s) of the run's second half of "
        f"B_simple and its {interval_kind(method)}; "
        f"measured on {setup.population} of {n_train} training examples",
        "learning-rate rule: plain SGD, the same training examples at both batch sizes, the best rate = the "
        "lowest test loss at the end of the probe; a short probe says how the rate scales early in "
        "training",
        "memory: the allocation peak of one forward and backward (torch profiler, "
        f"{setup.config.get('device', opts.device)}) bounded by a line in the batch size, plus parameters, "
        "gradients and no optimizer state (plain SGD; momentum adds one parameter-sized buffer, Adam two)",
        opts.budget_text(),
    ]
    return Advice(
        critical_batch_size=b_crit,
        interval=(low, high),
        method=method,
        fewest_steps_within_20pct_examples=steps_range,
        fewest_examples=batch_range(FEWEST_EXAMPLES_OVERHEAD, low, high),
        curve=power_curve(b_crit, max(4 * max(high, b_crit), 2.0), n_train),
        measurements=rows,
        assumptions=assumptions,
        n_train=n_train,
        trend=trend,
        lr_probe=probe,
        memory=memory,
        accumulation=accumulation,
        budget=opts.budget_text(),
    )


def run_lr_probe(opts: AdviseOptions, steps_range: tuple[int, int], n_train: int, device: str,
                 progress: Callable[[str], None]) -> Any:
    """The learning-rate probe at the recommended range's ends (or B and 4B), or None when skipped."""
    from batchscale.verify.advise_lr import lr_probe, probe_batch_sizes

    if opts.lr_probe_steps == 0:
        return None
    pair = probe_batch_sizes(*steps_range, n_train)
    seeds = [opts.seed + k for k in range(opts.lr_probe_seeds)]
    return lr_probe(opts.workload, opts.workload_options, pair, lr=opts.lr, steps=opts.lr_probe_steps,
                    seeds=seeds, n_train=n_train, device=device, data_seed=opts.seed, store=opts.db,
                    progress=progress)


__all__ = ["Advice", "AdviseOptions", "Trend", "advise", "b_simple_trend", "batch_range", "power_curve",
           "steps_and_examples"]
