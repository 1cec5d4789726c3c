"""Training one model, and the steps-to-target protocol shared by every way of running trials.

Read top to bottom:

1. the pieces every run uses: the learning-rate schedule (:func:`lr_factor`), the batch order
   (:class:`BatchOrder`: each trial reshuffles its own index permutation every epoch, no DataLoader), the
   minibatch loss (:func:`batch_loss`) and the test metric (:func:`metric_and_loss`);
2. :class:`SingleRun`: one ``nn.Module`` trained with ``torch.optim``, the plain loop;
3. :func:`drive`: the protocol that turns a run into results. It evaluates on a geometric schedule
   (:func:`next_eval_step`), stops diverged runs at once, and, when an evaluation first meets the
   target, replays the last interval from a checkpoint, evaluating every :func:`refine_interval` steps,
   so the reported step is within 1% of the first crossing in that interval.

The stacked model (:mod:`batchscale.empirical.batched`) runs K trials as one model through the same
:func:`drive`; :mod:`batchscale.empirical.engine` decides which trials run how (neither is imported here).
``docs/training.md`` describes the protocol; ``docs/perf-training.md`` its speed.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from batchscale.empirical.optimizers import optimizer_rule
from batchscale.empirical.protocol import (  # the protocol's constants (they enter every trial id)
    DIVERGENCE_FACTOR,
    EVAL_GROWTH,
    PRUNE_MARGIN,
    PRUNE_MIN_STEP,
    PRUNE_NEAR,
    PRUNE_NEAR_LOSS,
    REFINE_FRACTION,
)
from batchscale.empirical.trials import TrainConfig, TrialResult
from batchscale.empirical.workloads import Workload
from batchscale.errors import InputError, require

# ---------------------------------------------------------------------------------------------------
# Pieces every run uses
# ---------------------------------------------------------------------------------------------------


def lr_factor(step: int, schedule: str, warmup_steps: int, max_steps: int) -> float:
    """Multiplier of the learning rate at update ``step`` (0-based: the first update is step 0).

    ``constant``: 1. Every other schedule warms up linearly, (step + 1) / W during the first
    W = ``warmup_steps`` updates (``torch.optim.lr_scheduler.LinearLR(start_factor=1/W,
    total_iters=W-1)``), then: ``warmup_constant``: 1; ``warmup_linear_decay``: (T - step) / (T - W),
    reaching 1/(T - W) at the last update (T = ``max_steps``); ``warmup_cosine_decay``:
    (1 + cos(pi (step - W) / (T - W))) / 2 (``CosineAnnealingLR(T_max=T-W)`` after the warm-up).
    """
    if schedule == "constant":
        return 1.0
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "warmup_constant":
        return 1.0
    if schedule == "warmup_cosine_decay":
        since = min(step - warmup_steps, max_steps - warmup_steps)  # updates since the warm-up ended
        return 0.5 * (1.0 + math.cos(math.pi * since / (max_steps - warmup_steps)))
    return max(0.0, (max_steps - step) / (max_steps - warmup_steps))


def next_eval_step(step: int) -> int:
    """The evaluation after ``step``: every step up to 10, then steps growing by :data:`EVAL_GROWTH`."""
    return max(step + 1, math.floor(step * EVAL_GROWTH))


def refine_interval(step: int) -> int:
    """Evaluation spacing when resolving a crossing found after an evaluation at ``step``: ceil(1% step).

    A crossing at true step t in (step, next] is reported at t' with 0 <= t' - t < 1% * step <= 1% * t.
    """
    return max(1, math.ceil(REFINE_FRACTION * step))


def batch_loss(per_example: torch.Tensor, loss_form: str) -> torch.Tensor:
    """Mean (``mean``) or sum (``sum``) of per-example losses over the last axis."""
    return per_example.mean(dim=-1) if loss_form == "mean" else per_example.sum(dim=-1)


class BatchOrder:
    """The batch order of K trials: trial k reshuffles its own permutation of the M training indices
    each epoch with ``torch.randperm(M, generator=torch.Generator().manual_seed(seeds[k]))``.

    All K trials share the batch size, so they share the position in the epoch; batch ``i`` of an
    epoch is ``perm[i*m : (i+1)*m]`` (the last one shorter, or dropped with ``drop_last``).
    """

    def __init__(self, n: int, batch_size: int, seeds: Sequence[int], drop_last: bool, device: torch.device):
        self.n, self.batch_size, self.drop_last, self.device = n, batch_size, drop_last, device
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.perms = torch.empty(len(seeds), 0, dtype=torch.long, device=device)  # (K, M)
        self.pos = n  # start of the next batch; n means "new epoch"

    def epoch_over(self) -> bool:
        left = self.n - self.pos
        return left <= 0 or (self.drop_last and left < self.batch_size)

    def next(self) -> torch.Tensor:
        """Indices of the next batch of every trial, (K, B)."""
        if self.epoch_over():
            perms = [torch.randperm(self.n, generator=g) for g in self.generators]
            self.perms = torch.stack(perms).to(self.device)  # (K, M)
            self.pos = 0
        idx = self.perms[:, self.pos : self.pos + self.batch_size]  # (K, B)
        self.pos += self.batch_size
        return idx

    def state(self) -> tuple:
        return self.perms.clone(), self.pos, [g.get_state() for g in self.generators]

    def restore(self, state: tuple, rows: Sequence[int]) -> None:
        """Load ``state`` for the trials at ``rows`` of the state (in that order)."""
        perms, self.pos, gen_states = state
        self.perms = perms[list(rows)].clone() if perms.numel() else perms[: len(rows)]
        self.generators = [torch.Generator().set_state(gen_states[r]) for r in rows]

    def keep(self, rows: Sequence[int]) -> None:
        """Keep the trials at ``rows``."""
        self.restore(self.state(), rows)


def metric_and_loss(
    output: torch.Tensor, target: torch.Tensor, loss: str, metric: str
) -> tuple[float, float]:
    """Test metric (``error`` = 1 - accuracy, or ``loss``) and mean per-example loss of one model."""
    from batchscale.empirical.workloads import per_example_loss

    mean_loss = float(per_example_loss(loss, output, target).mean())
    if metric == "loss":
        return mean_loss, mean_loss
    error = float((output.argmax(dim=-1) != target).float().mean())
    return error, mean_loss


def load_workload(config: TrainConfig) -> Workload:
    """The workload of ``config`` (``get_workload`` by name, data seed and options)."""
    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.workloads import get_workload

    device = resolve_device(config.device)
    options = dict(config.workload_options)
    return get_workload(config.workload, device=device, seed=config.data_seed, **options)


def check_fits(config: TrainConfig, workload: Workload) -> None:
    """InputError when the config cannot run on the workload (batch too large, error metric on mse)."""
    require(
        config.batch_size <= workload.n_train,
        f"batch size {config.batch_size} is larger than the training set ({workload.n_train})",
    )
    require(
        config.target_metric == "loss" or workload.loss == "cross_entropy",
        f"target metric 'error' needs a classification workload; {workload.name!r} has loss "
        f"{workload.loss!r} (use target_metric='loss')",
    )


def eval_data(config: TrainConfig, workload: Workload) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``eval_subset`` test examples (all of them when None)."""
    n = workload.n_test if config.eval_subset is None else min(config.eval_subset, workload.n_test)
    return workload.x_test[:n], workload.y_test[:n]


# ---------------------------------------------------------------------------------------------------
# The plain loop: one nn.Module, torch.optim
# ---------------------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The torch.optim twin of ``config``'s optimizer (learning rate set per step by the run)."""
    return optimizer_rule(config.optimizer).torch_optimizer(model.parameters(), config)


class Snapshot(NamedTuple):
    """Everything needed to replay a run from an evaluation: step, weights, optimizer, batch order."""

    step: int
    trials: tuple[int, ...]
    state: Any
    order: tuple


class Run(Protocol):
    """What :func:`drive` needs of a run of one or more trials (``trials``: their ids, in copy order)."""

    step: int
    trials: list[int]

    def advance(self, until: int) -> list[int]: ...
    def evaluate(self) -> tuple[list[float], list[float]]: ...
    def snapshot(self) -> Snapshot: ...
    def resume(self, snapshot: Snapshot, trials: Sequence[int]) -> Run: ...
    def keep(self, trials: Sequence[int]) -> None: ...


# on_gradient(model, batch indices (B,), batch loss ()) of SingleRun: sees each step's gradient in .grad
GradientHook = Callable[[nn.Module, torch.Tensor, torch.Tensor], None]


class SingleRun:
    """One trial: an ``nn.Module`` trained by ``torch.optim`` on in-memory index batches.

    ``model`` (default ``workload.model(config.seed)``) is trained in place; ``on_gradient`` is a per-step
    hook (see :data:`GradientHook`) for measuring along training.
    """

    def __init__(self, workload: Workload, config: TrainConfig, trial: int = 0, *,
                 model: nn.Module | None = None, on_gradient: GradientHook | None = None):
        check_fits(config, workload)
        self.workload, self.config, self.trial, self.trials, self.step = workload, config, trial, [trial], 0
        self.model = workload.model(config.seed) if model is None else model
        self.on_gradient = on_gradient  # called after each backward, before the update (measurements)
        self.optimizer = make_optimizer(self.model, config)
        self.order = BatchOrder(workload.n_train, config.batch_size, [config.seed], config.drop_last,
                                workload.device)
        self.x_eval, self.y_eval = eval_data(config, workload)

    def train_step(self) -> float:
        """One update; returns the minibatch loss."""
        c = self.config
        idx = self.order.next()[0]  # (B,)
        x, y = self.workload.x_train[idx], self.workload.y_train[idx]  # (B, ...), (B,)
        loss = batch_loss(self.workload.per_example_loss(self.model(x), y), c.loss_form)  # ()
        for group in self.optimizer.param_groups:
            group["lr"] = c.learning_rate * lr_factor(self.step, c.schedule, c.warmup_steps, c.max_steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.on_gradient is not None:  # it may read (and must leave) the gradient of this batch
            self.on_gradient(self.model, idx, loss.detach())
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def advance(self, until: int) -> list[int]:
        """Train up to step ``until``; stop early (returning the trial) on a non-finite training loss."""
        while self.step < until:
            if not math.isfinite(self.train_step()):
                return list(self.trials)
        return []

    @torch.no_grad()
    def evaluate(self) -> tuple[list[float], list[float]]:
        output = self.model(self.x_eval)  # (N, C)
        metric, loss = metric_and_loss(output, self.y_eval, self.workload.loss, self.config.target_metric)
        return [metric], [loss]

    def snapshot(self) -> Snapshot:
        state = copy.deepcopy((self.model.state_dict(), self.optimizer.state_dict()))
        return Snapshot(self.step, tuple(self.trials), state, self.order.state())

    def resume(self, snapshot: Snapshot, trials: Sequence[int]) -> SingleRun:
        run = SingleRun(self.workload, self.config, self.trial)
        model_state, optimizer_state = copy.deepcopy(snapshot.state)
        run.model.load_state_dict(model_state)
        run.optimizer.load_state_dict(optimizer_state)
        run.order.restore(snapshot.order, [0])
        run.step = snapshot.step
        return run

    def keep(self, trials: Sequence[int]) -> None:
        self.trials = [t for t in self.trials if t in trials]


# ---------------------------------------------------------------------------------------------------
# The protocol: evaluation schedule, crossing refinement, divergence, pruning
# ---------------------------------------------------------------------------------------------------


@dataclass
class Track:
    """The running record of one trial while :func:`drive` runs it (mutable; frozen into a TrialResult)."""

    config: TrainConfig
    history: list[tuple[int, float | None, float | None]] = field(default_factory=list)
    initial_loss: float | None = None
    result: TrialResult | None = None
    started: float = field(default_factory=time.perf_counter)
    bound: int | None = None  # stop as ``pruned`` at the first evaluation >= bound that misses the target
    notes: tuple[str, ...] = ()  # copied into the result


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def metric_at(track: Track, step: int) -> float | None:
    """The metric of the last evaluation of ``track`` at or before ``step`` (None if none)."""
    value = None
    for s, metric, _ in track.history:
        if s > step:
            break
        value = metric
    return value


def near_target(track: Track, metric: float | None) -> bool:
    """Whether ``metric`` is within :data:`PRUNE_NEAR` of the target of ``track`` (for a ``loss``
    target: within :data:`PRUNE_NEAR_LOSS` times the target)."""
    c = track.config
    if metric is None or c.target is None:
        return False
    near = PRUNE_NEAR if c.target_metric == "error" else PRUNE_NEAR_LOSS * c.target
    return metric <= c.target + near


def behind_group(trial: int, step: int, metric: float, group: Sequence[Track]) -> bool:
    """Pruning rule: at ``step`` >= :data:`PRUNE_MIN_STEP`, prune when some *healthy leader* j of the
    group (not diverged, not pruned) is near the target now, is still ahead now, and had at ``step // 2``
    a metric better than this one's by more than :data:`PRUNE_MARGIN`. Such a trial needs over twice
    j's steps to get where j already was, and j is about to meet the target.

    The margin keeps evaluation noise from pruning (an error on n test examples has standard deviation
    sqrt(p (1 - p) / n)); "ahead now" means the current best trial is never pruned and a trial whose
    metric rises on its way to diverging stops counting as a leader; "near the target" (within
    :data:`PRUNE_NEAR`, or met it) keeps a leader that learns fast early and then stalls on a noise
    floor above the target (high rates at small batch sizes) from pruning the trials that would reach it.
    A trial still short of the target at a step past a group-mate's steps-to-target is pruned outright:
    it can no longer be the fastest (at any step). Only trials of the same seed count as group-mates
    (seeds of one configuration share a stack but are separate experiments: a seed's answer must not
    depend on how another seed's trials went).
    See ``docs/training.md``.
    """
    seed = group[trial].config.seed
    for j, track in enumerate(group):
        ended = track.result.status if track.result is not None else None
        if j == trial or track.config.seed != seed or ended in ("diverged", "pruned", "incomplete"):
            continue
        if ended == "complete" and track.result.steps is not None and track.result.steps < step:
            return True  # j met the target in fewer steps than this trial has already taken
        if step < PRUNE_MIN_STEP:
            continue
        earlier, now = metric_at(track, step // 2), metric_at(track, step)
        if earlier is None or now is None or earlier + PRUNE_MARGIN >= metric:
            continue
        if ended == "complete" or (now < metric and near_target(track, now)):
            return True
    return False


def point_of(config: TrainConfig) -> tuple:
    """A trial's search point: its per-copy hyper-parameters without the seed."""
    return config.learning_rate, config.momentum, config.beta1, config.weight_decay


def group_limits(group: Sequence[Track], n_seeds: int) -> dict[int, float]:
    """Per seed, the steps beyond which a trial of the group can no longer change the answer of a search
    that takes, over ``n_seeds`` seeds, the median steps of each point (the best point wins) and each
    seed's own fastest point.

    limit_s = max(k U, S_s): S_s the seed's fewest steps among the group's finished trials (inf if none);
    U an upper bound of the best median: min over points of (c_lo + c_hi) / 2, c the sorted steps of the
    point's finished trials, lo = (n - 1) // 2, hi = n // 2 (a point with more than hi finished); an order
    statistic of all n seeds is at most the same one of those finished, so the median is at most this.
    k = 1 for odd n, 2 for even n (a median (b + c) / 2 <= U has c <= 2 U). A trial that misses the target
    at an evaluation at a step >= its limit has steps above it: it can neither make a point's median at most
    the best one nor become its seed's fastest.
    """
    by_point: dict[tuple, list[int]] = {}
    own: dict[int, float] = {}
    for track in group:
        result = track.result
        if result is not None and result.status == "complete" and result.steps is not None:
            by_point.setdefault(point_of(track.config), []).append(result.steps)
            seed = track.config.seed
            own[seed] = min(own.get(seed, math.inf), result.steps)
    lo, hi = (n_seeds - 1) // 2, n_seeds // 2
    medians = [(c[lo] + c[hi]) / 2 for c in map(sorted, by_point.values()) if len(c) > hi]
    best = min(medians, default=math.inf)
    scale = 1 if n_seeds % 2 else 2
    seeds = {track.config.seed for track in group}
    return {seed: max(scale * best, own.get(seed, math.inf)) for seed in seeds}


def finish(tracks: list[Track], trial: int, status: str, stop_step: int, steps: int | None,
           on_result: Callable[[TrialResult], None] | None, device: str) -> None:
    """Freeze the track of ``trial`` into its TrialResult and hand it to ``on_result``."""
    track = tracks[trial]
    history = tuple(sorted(track.history))
    metrics = [m for _, m, _ in history if m is not None]
    last = history[-1] if history and status != "diverged" else (None, None, None)
    track.result = TrialResult(
        config=track.config,
        status=status,
        steps=steps,
        final_metric=last[1],
        final_loss=last[2],
        best_metric=min(metrics) if metrics else None,
        history=history,
        wall_time=time.perf_counter() - track.started,
        device=device,
        stop_step=stop_step,
        notes=track.notes,
    )
    if on_result is not None:
        on_result(track.result)


class Driver:
    """Runs :func:`drive` for one run of trials that share max_steps, target and metric."""

    def __init__(self, tracks: list[Track], *, prune: bool, on_result, device: str,
                 median_seeds: int | None = None):
        self.tracks, self.prune, self.on_result, self.device = tracks, prune, on_result, device
        self.median_seeds = median_seeds

    def limit(self, trial: int, limits: dict[int, float] | None) -> float:
        """The step from which ``trial`` stops when it misses the target: its bound, and with
        ``median_seeds`` its seed's :func:`group_limits` (the smaller)."""
        track = self.tracks[trial]
        bound = math.inf if track.bound is None else track.bound
        return bound if limits is None else min(bound, limits.get(track.config.seed, math.inf))

    def limits(self) -> dict[int, float] | None:
        return None if self.median_seeds is None else group_limits(self.tracks, self.median_seeds)

    def end(self, trial: int, status: str, stop_step: int, steps: int | None = None) -> None:
        finish(self.tracks, trial, status, stop_step, steps, self.on_result, self.device)

    def record(self, run: Run) -> list[tuple[int, float, float]]:
        """Evaluate every trial of ``run`` and append to its history; returns (trial, metric, loss)."""
        metrics, losses = run.evaluate()
        rows = list(zip(run.trials, metrics, losses, strict=True))
        for trial, metric, loss in rows:
            self.tracks[trial].history.append((run.step, finite_or_none(metric), finite_or_none(loss)))
        return rows

    def judge(self, run: Run) -> list[int]:
        """Evaluate; end diverged and pruned trials; return the trials that meet the target now."""
        crossed, limits = [], self.limits()
        for trial, metric, loss in self.record(run):
            track, target = self.tracks[trial], self.tracks[trial].config.target
            if track.initial_loss is None:
                track.initial_loss = loss
            if not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * track.initial_loss:
                self.end(trial, "diverged", run.step)
            elif target is not None and metric <= target:
                crossed.append(trial)
            elif target is not None and run.step >= self.limit(trial, limits):
                self.end(trial, "pruned", run.step)  # steps > run.step >= limit: it cannot matter
            elif target is not None and self.prune and behind_group(trial, run.step, metric, self.tracks):
                self.end(trial, "pruned", run.step)
        return crossed

    def prune_behind(self, run: Run) -> None:
        """End the running trials of ``run`` that :func:`behind_group` prunes, or whose limit
        (:meth:`limit`) they passed, at their last evaluation."""
        limits = self.limits()
        for trial in run.trials:
            track = self.tracks[trial]
            if track.result is None and track.history and track.history[-1][1] is not None:
                step, metric, _ = track.history[-1]
                if step >= self.limit(trial, limits) or (
                        self.prune and behind_group(trial, step, metric, self.tracks)):
                    self.end(trial, "pruned", step)

    def advance(self, run: Run, until: int) -> None:
        """Train ``run`` to step ``until``, ending trials whose training loss turns non-finite."""
        while run.trials and run.step < until:
            bad = run.advance(until)
            for trial in bad:
                self.end(trial, "diverged", run.step)
            run.keep([t for t in run.trials if t not in bad])

    def refine(self, run: Run, snapshot: Snapshot, crossed: list[int]) -> None:
        """Replay ``crossed`` from ``snapshot``, evaluating every refine_interval(snapshot.step) steps,
        and end each at the first evaluation that meets its target."""
        goal, spacing = run.step, refine_interval(snapshot.step)
        saved = {t: self.tracks[t].history.pop() for t in crossed}  # the evaluation at ``goal``
        replay = run.resume(snapshot, crossed)
        for until in range(snapshot.step + spacing, goal + spacing, spacing):
            while replay.trials and replay.step < min(until, goal):
                bad = replay.advance(min(until, goal))  # replays that blow up fall back to ``saved``
                replay.keep([t for t in replay.trials if t not in bad])
            if not replay.trials:
                break
            met = [t for t, m, _ in self.record(replay) if m <= self.tracks[t].config.target]
            for trial in met:
                self.end(trial, "complete", replay.step, replay.step)
            replay.keep([t for t in replay.trials if t not in met])
        for trial in crossed:  # float noise kept the replay from crossing: the original evaluation counts
            if self.tracks[trial].result is None:
                history = [h for h in self.tracks[trial].history if h[0] < goal] + [saved[trial]]
                self.tracks[trial].history = history
                self.end(trial, "complete", goal, goal)

    def drive(self, run: Run) -> None:
        """Run every trial of ``run`` to its end: target met, diverged, pruned or max_steps."""
        config = self.tracks[run.trials[0]].config
        for trial in run.trials:
            self.tracks[trial].started = time.perf_counter()
        snapshot = None
        while run.trials:
            crossed = self.judge(run)
            if crossed and snapshot is None:  # met at step 0
                for trial in crossed:
                    self.end(trial, "complete", run.step, run.step)
            elif crossed:
                self.refine(run, snapshot, crossed)
                if self.prune or self.median_seeds is not None:  # the rest may be past the new
                    self.prune_behind(run)  # steps-to-target: stop them now, not next time
            run.keep([t for t in run.trials if self.tracks[t].result is None])
            if not run.trials or run.step >= config.max_steps:
                break
            snapshot = run.snapshot() if config.target is not None else None  # for replaying a crossing
            self.advance(run, min(next_eval_step(run.step), config.max_steps))
        status = "complete" if config.target is None else "incomplete"
        for trial in run.trials:
            self.end(trial, status, run.step)


def drive(run: Run, tracks: list[Track], *, prune: bool = False,
          on_result: Callable[[TrialResult], None] | None = None, device: str = "cpu") -> None:
    """Run the trials of ``run`` (ids index ``tracks``) under the steps-to-target protocol.

    At step 0 and at every :func:`next_eval_step`, evaluate the test metric and loss of each trial:
    a non-finite or > DIVERGENCE_FACTOR x initial test loss is ``diverged`` (so is a non-finite
    training loss at any step, at once); a metric <= target is a crossing, resolved by replaying the
    interval since the previous evaluation (:meth:`Driver.refine`); with ``prune``, a trial
    :func:`behind_group` is ``pruned``; so is a trial with a ``bound`` (:class:`Track`) that misses the
    target at an evaluation at step >= bound (its steps exceed the bound). Trials left at ``max_steps``
    are ``incomplete`` (``complete`` when the target is None). Each result goes to ``on_result`` as soon
    as its trial ends.
    """
    Driver(tracks, prune=prune, on_result=on_result, device=device).drive(run)


def train(config: TrainConfig, workload: Workload | None = None,
          on_result: Callable[[TrialResult], None] | None = None) -> TrialResult:
    """Train one trial with the plain loop (:class:`SingleRun`) under the steps-to-target protocol.

    ``workload`` defaults to :func:`load_workload` of ``config``.
    """
    config.validate()
    workload = load_workload(config) if workload is None else workload
    tracks = [Track(config)]
    drive(SingleRun(workload, config), tracks, on_result=on_result, device=str(workload.device))
    assert tracks[0].result is not None
    return tracks[0].result


__all__ = [
    "DIVERGENCE_FACTOR",
    "BatchOrder",
    "InputError",
    "SingleRun",
    "Track",
    "batch_loss",
    "drive",
    "lr_factor",
    "next_eval_step",
    "refine_interval",
    "train",
]
