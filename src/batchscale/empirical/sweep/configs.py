"""The two sweep experiments' frozen configs and their validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from batchscale.empirical.trials import OPTIMIZERS, canonical_options
from batchscale.errors import require

SEARCHES = ("auto", "grid", "quasi-random")
DECAYS = ("none", "linear", "cosine")
# Recipe and auto-target fields: left out of :meth:`StepsSweepConfig.to_dict` at these defaults, so a
# sweep without them writes the same JSON as before they existed.
OPTIONAL_DEFAULTS: dict[str, Any] = {"warmup_fraction": 0.0, "decay": "none", "weight_decay": 0.0,
                                     "target_fraction": None, "target_budget": None,
                                     "later_learning_rates": None}
TARGET_BUDGET_SHARE = 10  # --target auto's reference trials train max_steps // this by default
STATUS_FOUND = "complete"
STATUS_UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class StepsSweepConfig:
    """A steps-to-target sweep: batch sizes x searched learning rates (x momenta) x seeds, per optimizer.

    Attributes:
        workload, workload_options, data_seed, device, eval_subset, loss_form, drop_last: passed to
            every :class:`TrainConfig`.
        batch_sizes: ascending batch sizes.
        optimizers: one search chain each (``sgd``, ``momentum``, ``nesterov``, ``adam``).
        momentum: the momentum of ``momentum``/``nesterov`` (and Adam's beta1) when not tuned.
        tune_momentum: also search 1 - momentum log-uniformly in ``one_minus_momentum_range``.
        search: ``grid`` (rates ``lr_factor`` apart), ``quasi-random`` (scrambled Halton points in
            log space) or ``auto`` (grid, or quasi-random when the momentum is tuned).
        n_learning_rates: trials per batch size and seed in one window (>= 2).
        later_learning_rates: trials per seed in the window of every batch size after the first (None:
            ``n_learning_rates``). The first window must find the optimum without a guess; later ones
            are centred on the linear-scaling guess and extended past an edge holding the best rate, so a
            narrower one finds the same best rate whenever the steps-vs-rate curve has one minimum over
            the wider window (a search shortcut: it can change the answer where that curve has two).
        lr_factor: ratio of neighbouring rates in a grid window, and the unit of window widths.
        lr_range: (low, high) rates searched at the first batch size; for ``momentum``/``nesterov`` they
            are multiplied by 1 - momentum (the same effective step lr / (1 - momentum); 0.1 when tuned).
        max_extensions: edge extensions per batch size; ``n_extend`` new points each.
        seeds: one trial per seed at every point; the point's steps are the median over seeds.
        target_metric, target: the run is complete when the test metric first is <= target.
        max_steps: the step budget of every trial (before the ``budget_factor`` cap).
        budget_factor: later batch sizes stop trials at ``budget_factor`` x the previous best steps
            (None: no cap).
        prune: stop trials early (with ``verify_pruned``: only those that can no longer change the answer;
            without: the engine's pruning rule, ``run_trials(prune=True)``).
        verify_pruned: (default) stop a trial of seed s only past its limit max(k S, S_s) (S the best
            point's median steps, S_s the seed's own best, k = 1 for odd and 2 for even seed counts;
            :meth:`~batchscale.empirical.sweep.steps.BatchSearch.limits`), inside a round
            (``run_trials(median_seeds=n)``) and across rounds (step bounds), so the answer equals the
            ``prune=False`` answer; and re-run, bounded by the limit, every trial the engine's rule pruned
            before its limit (e.g. rows a sweep without verification left in the store). False: the
            engine's pruning rule and its answer (it can stop the eventual winner).
        refine_levels, refine_tolerance: after the window search, refine the best rate between its
            neighbours at factors lr_factor^(1/2), ^(1/4), ... until one more level changes the best steps
            by less than ``refine_tolerance`` (relative), at most ``refine_levels`` levels (0: off).
        warmup_fraction, decay, weight_decay: the training recipe of every trial (see
            :meth:`schedule_of`): a linear warm-up over round(warmup_fraction x max_steps) updates, then a
            constant rate (``decay="none"``) or a linear / cosine decay to 0 at the trial's max_steps;
            L2 ``weight_decay``. A schedule is a function of the horizon max_steps, so any schedule
            needs ``budget_factor=None``: every trial then has the same horizon ``max_steps``.
        target_fraction: None, or ``--target auto``: a reference run (see
            :mod:`batchscale.empirical.sweep.target`) sets the target this fraction of the way from the
            initial metric to the best metric reached (``target`` is then replaced by the chosen value).
        target_budget: the steps of each reference trial (None: max_steps // 10, see
            :meth:`reference_budget`).
    """

    workload: str = "mnist1d-mlp"
    workload_options: tuple[tuple[str, Any], ...] = (("n_samples", 20000),)
    batch_sizes: tuple[int, ...] = tuple(2**k for k in range(12))
    optimizers: tuple[str, ...] = ("sgd", "momentum")
    momentum: float = 0.9
    tune_momentum: bool = False
    one_minus_momentum_range: tuple[float, float] = (0.01, 0.5)
    search: str = "auto"
    n_learning_rates: int = 8
    later_learning_rates: int | None = None
    lr_factor: float = 2.0
    lr_range: tuple[float, float] = (0.002, 0.25)
    max_extensions: int = 3
    n_extend: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    data_seed: int = 0
    target_metric: str = "error"
    target: float = 0.2
    max_steps: int = 200_000
    budget_factor: float | None = 2.0
    prune: bool = True
    verify_pruned: bool = True
    refine_levels: int = 3
    refine_tolerance: float = 0.05
    eval_subset: int | None = 800
    loss_form: str = "mean"
    drop_last: bool = False
    device: str = "cpu"
    warmup_fraction: float = 0.0
    decay: str = "none"
    weight_decay: float = 0.0
    target_fraction: float | None = None
    target_budget: int | None = None

    def window_size(self, first: bool) -> int:
        """Trials per seed in the window of the first batch size (``first``) or of a later one."""
        if first or self.later_learning_rates is None:
            return self.n_learning_rates
        return self.later_learning_rates

    def reference_budget(self) -> int:
        """The steps of each ``--target auto`` reference trial: ``target_budget``, by default
        max(1, max_steps // :data:`TARGET_BUDGET_SHARE`)."""
        if self.target_budget is not None:
            return self.target_budget
        return max(1, self.max_steps // TARGET_BUDGET_SHARE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "workload_options", canonical_options(self.workload_options))
        object.__setattr__(self, "batch_sizes", tuple(sorted({int(b) for b in self.batch_sizes})))
        for name in ("warmup_fraction", "weight_decay"):  # 0 and 0.0 give one trial id
            if isinstance(getattr(self, name), int):
                object.__setattr__(self, name, float(getattr(self, name)))

    def schedule_of(self, max_steps: int) -> tuple[str, int]:
        """(``TrainConfig.schedule``, ``warmup_steps``) of a trial with horizon ``max_steps``.

        W = min(round(warmup_fraction x max_steps), max_steps - 1); ``decay`` none gives ``constant``
        (W = 0) or ``warmup_constant``, linear ``warmup_linear_decay``, cosine ``warmup_cosine_decay``.
        """
        if self.decay == "none" and self.warmup_fraction == 0:
            return "constant", 0
        warmup = min(round(self.warmup_fraction * max_steps), max_steps - 1)
        schedule = {"none": "warmup_constant", "linear": "warmup_linear_decay",
                    "cosine": "warmup_cosine_decay"}[self.decay]
        return schedule, warmup

    def has_schedule(self) -> bool:
        """Whether trials use a warm-up or a decay (anything but a constant rate)."""
        return self.schedule_of(self.max_steps)[0] != "constant"

    def resolved_search(self) -> str:
        """``grid`` or ``quasi-random`` (``auto`` resolved)."""
        if self.search == "auto":
            return "quasi-random" if self.tune_momentum else "grid"
        return self.search

    def validate(self, n_train: int | None = None) -> StepsSweepConfig:
        """Raise :class:`InputError` on a bad value; ``n_train`` checks the batch sizes against the data."""
        _check_common(self.batch_sizes, self.seeds, n_train)
        for name in self.optimizers:
            _require_optimizer(name)
        require(len(self.optimizers) > 0, "no optimizers to sweep")
        searches = ", ".join(SEARCHES)
        require(self.search in SEARCHES, f"unknown search {self.search!r}; expected one of {searches}")
        require(
            not (self.tune_momentum and self.resolved_search() == "grid"),
            "--tune-momentum needs the quasi-random search (use --search quasi-random or auto)",
        )
        _check_range("learning-rate range", self.lr_range)
        if self.tune_momentum:
            _check_range("1 - momentum range", self.one_minus_momentum_range, upper=1.0)
        require(self.n_learning_rates >= 2, f"need at least 2 learning rates, got {self.n_learning_rates}")
        require(self.later_learning_rates is None or self.later_learning_rates >= 2,
                f"need at least 2 learning rates in later windows, got {self.later_learning_rates}")
        require(self.lr_factor > 1, f"the learning-rate factor must be > 1, got {self.lr_factor}")
        require(self.max_extensions >= 0, f"max extensions must be >= 0, got {self.max_extensions}")
        require(self.refine_levels >= 0, f"refinement levels must be >= 0, got {self.refine_levels}")
        require(0 < self.refine_tolerance < 1,
                f"the refinement tolerance must be in (0, 1), got {self.refine_tolerance}")
        require(self.n_extend >= 1, f"extension size must be >= 1, got {self.n_extend}")
        require(self.max_steps >= 1, f"max steps must be >= 1, got {self.max_steps}")
        require(
            self.budget_factor is None or self.budget_factor >= 1,
            f"budget factor must be >= 1 or None, got {self.budget_factor}",
        )
        _check_momentum(self.momentum, () if self.tune_momentum else self.optimizers)
        _check_target(self.target_metric, self.target)
        _check_eval_subset(self.eval_subset)
        self._validate_recipe()
        require(self.target_fraction is None
                or (math.isfinite(self.target_fraction) and 0 < self.target_fraction < 1),
                f"the target fraction must be in (0, 1), got {self.target_fraction}")
        require(self.target_budget is None or 1 <= self.target_budget <= self.max_steps,
                f"the target budget must be in [1, max steps = {self.max_steps}], got {self.target_budget}")
        return self

    def _validate_recipe(self) -> None:
        require(math.isfinite(self.warmup_fraction) and 0 <= self.warmup_fraction < 1,
                f"the warm-up fraction must be in [0, 1), got {self.warmup_fraction}")
        require(self.decay in DECAYS, f"unknown decay {self.decay!r}; expected one of {', '.join(DECAYS)}")
        require(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                f"weight decay must be a finite number >= 0, got {self.weight_decay}")
        require(
            self.budget_factor is None or not self.has_schedule(),
            "a warm-up or decay schedule runs over the trial's max steps, which --budget-factor changes "
            "from one batch size to the next; use --budget-factor 0 (every trial's horizon is then "
            "--max-steps)",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``workload_options`` as a dict; the recipe and auto-target fields only when
        they differ from their defaults (:data:`OPTIONAL_DEFAULTS`)."""
        d = asdict(self)
        d["workload_options"] = dict(self.workload_options)
        for name, default in OPTIONAL_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d


@dataclass(frozen=True)
class GridSweepConfig:
    """A base-learning-rate x batch-size grid trained for a fixed number of epochs (Masters & Luschi).

    With ``loss_form="sum"`` (default) the rates are base learning rates eta~ = eta / m, so the update
    is ``w -= eta~ * sum_i g_i``; with ``"mean"`` they are plain learning rates.
    ``last_evals``: the cell's accuracy is the median of the test metric over this many last evaluations.
    """

    workload: str = "mnist1d-mlp"
    workload_options: tuple[tuple[str, Any], ...] = (("n_samples", 20000),)
    batch_sizes: tuple[int, ...] = tuple(2**k for k in range(0, 11, 2))
    learning_rates: tuple[float, ...] = tuple(2.0**k for k in range(-14, -3, 2))
    optimizer: str = "sgd"
    momentum: float = 0.0
    loss_form: str = "sum"
    epochs: float = 5.0
    seeds: tuple[int, ...] = (0,)
    data_seed: int = 0
    target_metric: str = "error"
    last_evals: int = 3
    eval_subset: int | None = None
    drop_last: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "workload_options", canonical_options(self.workload_options))
        object.__setattr__(self, "batch_sizes", tuple(sorted({int(b) for b in self.batch_sizes})))
        object.__setattr__(self, "learning_rates", tuple(sorted({float(x) for x in self.learning_rates})))

    def validate(self, n_train: int | None = None) -> GridSweepConfig:
        """Raise :class:`InputError` on a bad value."""
        _check_common(self.batch_sizes, self.seeds, n_train)
        _require_optimizer(self.optimizer)
        require(len(self.learning_rates) > 0, "empty learning-rate list")
        bad = [x for x in self.learning_rates if not (math.isfinite(x) and x > 0)]
        require(not bad, f"learning rates must be positive numbers, got {bad[0] if bad else ''}")
        require(math.isfinite(self.epochs) and self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        require(self.last_evals >= 1, f"last evaluations must be >= 1, got {self.last_evals}")
        _check_momentum(self.momentum, (self.optimizer,))
        _check_eval_subset(self.eval_subset)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``workload_options`` as a dict."""
        d = asdict(self)
        d["workload_options"] = dict(self.workload_options)
        return d


def _check_common(batch_sizes: Sequence[int], seeds: Sequence[int], n_train: int | None) -> None:
    require(len(batch_sizes) > 0, "no batch sizes to sweep")
    require(min(batch_sizes) >= 1, f"batch sizes must be >= 1, got {min(batch_sizes)}")
    require(len(seeds) > 0, "no seeds")
    if n_train is not None:
        require(
            max(batch_sizes) <= n_train,
            f"batch size {max(batch_sizes)} is larger than the training set ({n_train} examples)",
        )


def _check_momentum(momentum: float, optimizers: Sequence[str]) -> None:
    """Momentum in [0, 1), and > 0 for the ``optimizers`` among momentum/nesterov that use it."""
    require(0 <= momentum < 1, f"momentum must be in [0, 1), got {momentum}")
    for name in optimizers:
        require(name not in ("momentum", "nesterov") or momentum > 0,
                f"optimizer {name!r} needs --momentum > 0, got {momentum}")


def _check_target(metric: str, target: float) -> None:
    """An error-rate target in [0, 1); a loss target finite and > 0."""
    if metric == "error":
        require(math.isfinite(target) and 0 <= target < 1,
                f"an error-rate target must be in [0, 1), got {target}")
    else:
        require(math.isfinite(target) and target > 0, f"a loss target must be a number > 0, got {target}")


def _check_eval_subset(eval_subset: int | None) -> None:
    require(eval_subset is None or eval_subset >= 1, f"eval subset must be >= 1 (or all), got {eval_subset}")


def _require_optimizer(name: str) -> None:
    require(name in OPTIMIZERS, f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def _check_range(what: str, bounds: tuple[float, float], upper: float = math.inf) -> None:
    low, high = bounds
    require(
        math.isfinite(low) and math.isfinite(high) and 0 < low <= high < upper,
        f"empty or invalid {what} {low:g}..{high:g} (need 0 < low <= high"
        + (f" < {upper:g})" if math.isfinite(upper) else ")"),
    )
