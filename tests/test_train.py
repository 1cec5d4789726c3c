"""The steps-to-target protocol: schedule, crossing resolution, divergence, statuses, pruning, determinism."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from batchscale.empirical.batched import StackedRun
from batchscale.empirical.engine import run_trials
from batchscale.empirical.train import (
    PRUNE_MARGIN,
    PRUNE_NEAR,
    SingleRun,
    Track,
    behind_group,
    lr_factor,
    next_eval_step,
    refine_interval,
    train,
)
from batchscale.empirical.trials import TrainConfig, TrialResult
from batchscale.empirical.workloads import Workload

RESOLUTION = 0.02  # the promised bound on (reported - true first crossing) / true first crossing


def make_linear(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(8, 1, bias=False)


def regression() -> Workload:
    """Noisy least squares in 8 dimensions with a spread spectrum: a slowly, smoothly falling test loss."""
    g = torch.Generator().manual_seed(7)
    scales = torch.logspace(0, -1, 8)
    x = torch.randn(600, 8, generator=g) * scales  # (N, D)
    y = x @ torch.randn(8, 1, generator=g) + 0.05 * torch.randn(600, 1, generator=g)  # (N, 1)
    return Workload("reg", make_linear, x[:400], y[:400], x[400:], y[400:], loss="mse")


WORKLOADS = {("reg", (), 0, "cpu"): regression()}


def config(**changes) -> TrainConfig:
    base = TrainConfig(workload="reg", batch_size=4, learning_rate=0.05, target_metric="loss", target=0.05,
                       max_steps=3000)
    return replace(base, **changes)


def every_step_first_crossing(cfg: TrainConfig) -> int:
    """The first step whose test metric meets the target, evaluating after every single step."""
    run = SingleRun(WORKLOADS[("reg", (), 0, "cpu")], cfg)
    while run.step <= cfg.max_steps:
        if run.evaluate()[0][0] <= cfg.target:
            return run.step
        run.advance(run.step + 1)
    raise AssertionError("never crossed")


def test_lr_factor_warmup_then_linear_decay():
    factors = [lr_factor(t, "warmup_linear_decay", 4, 12) for t in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4:] == pytest.approx([(12 - t) / 8 for t in range(4, 12)])
    assert lr_factor(7, "constant", 4, 12) == 1.0


@pytest.mark.parametrize("warmup, total", [(4, 12), (1, 30), (7, 8)])
def test_warmup_schedules_equal_torch_lr_schedulers(warmup, total):
    """warmup_constant = LinearLR(1/W -> 1 over W - 1 steps); warmup_cosine_decay = that, then
    CosineAnnealingLR(T_max = T - W) (SequentialLR at milestone W); warmup_linear_decay's warm-up too."""
    from torch.optim import lr_scheduler

    def torch_factors(make):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        schedule = make(opt)
        factors = []
        for _ in range(total):
            factors.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
        return factors

    def warm(opt):
        return lr_scheduler.LinearLR(opt, start_factor=1 / warmup, total_iters=max(1, warmup - 1))

    def cosine(opt):
        decay = lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup)
        return lr_scheduler.SequentialLR(opt, [warm(opt), decay], milestones=[warmup])

    ours = {s: [lr_factor(t, s, warmup, total) for t in range(total)]
            for s in ("warmup_constant", "warmup_cosine_decay", "warmup_linear_decay")}
    assert ours["warmup_constant"] == pytest.approx(torch_factors(warm), rel=1e-12)
    assert ours["warmup_cosine_decay"] == pytest.approx(torch_factors(cosine), rel=1e-9, abs=1e-12)
    assert ours["warmup_linear_decay"][:warmup] == ours["warmup_constant"][:warmup]
    if total - warmup > 2:  # not the same decay (with one or two decay steps both are 1, then 1/2)
        assert ours["warmup_cosine_decay"] != pytest.approx(ours["warmup_linear_decay"])


def test_evaluation_schedule_is_dense_then_geometric():
    steps = [0]
    while steps[-1] < 1000:
        steps.append(next_eval_step(steps[-1]))
    assert steps[:11] == list(range(11))
    gaps = [b / a for a, b in zip(steps[20:], steps[21:], strict=False)]
    assert max(gaps) <= 1.1 + 1e-9
    assert len(steps) < 90
    assert refine_interval(0) == 1 and refine_interval(250) == 3


@pytest.mark.parametrize("lr, target", [(0.01, 0.02), (0.02, 0.01), (0.05, 0.005), (0.05, 0.004)])
def test_steps_to_target_is_within_2_percent_of_every_step_evaluation(lr, target):
    cfg = config(learning_rate=lr, target=target)
    truth = every_step_first_crossing(cfg)
    assert truth > 100  # far enough out that the geometric schedule alone would miss by > 2%
    for strategy in ("sequential", "batched"):
        result = run_trials([cfg], strategy=strategy, workloads=WORKLOADS)[0]
        assert result.status == "complete"
        assert truth <= result.steps <= truth * (1 + RESOLUTION), (strategy, result.steps, truth)
        assert result.history[-1][0] == result.steps and result.history[-1][1] <= target


def test_target_met_at_step_zero():
    result = train(config(target=1e6), WORKLOADS[("reg", (), 0, "cpu")])
    assert (result.status, result.steps, result.stop_step) == ("complete", 0, 0)


@pytest.mark.parametrize("lr", [1e6, 3.0], ids=["overflow", "loss-blow-up"])
def test_divergence_is_recorded_without_warnings(lr):
    results = run_trials([config(learning_rate=lr), config(learning_rate=lr, seed=1)], workloads=WORKLOADS)
    for result in results:
        assert result.status == "diverged"
        assert result.steps is None and result.final_metric is None
        assert result.stop_step < 200


def test_incomplete_and_no_target_statuses():
    incomplete, full = run_trials(
        [config(learning_rate=1e-4, max_steps=60), config(target=None, max_steps=60)], workloads=WORKLOADS
    )
    assert (incomplete.status, incomplete.steps, incomplete.stop_step) == ("incomplete", None, 60)
    assert (full.status, full.steps, full.stop_step) == ("complete", None, 60)
    assert full.history[-1][0] == 60 and full.final_metric == full.history[-1][1]
    assert full.best_metric == min(m for _, m, _ in full.history)


def test_same_config_gives_identical_history():
    configs = [config(learning_rate=lr, seed=s) for lr in (0.02, 0.05) for s in (0, 1)]
    first = run_trials(configs, workloads=WORKLOADS)
    second = run_trials(configs, workloads=WORKLOADS)
    assert [r.history for r in first] == [r.history for r in second]
    assert [r.steps for r in first] == [r.steps for r in second]


@pytest.mark.parametrize("strategy", ["batched", "sequential"])
def test_pruning_stops_trials_far_behind_their_group(strategy):
    configs = [config(learning_rate=0.1, max_steps=400), config(learning_rate=1e-3, max_steps=400)]
    kept = run_trials(configs, workloads=WORKLOADS, strategy=strategy)
    pruned = run_trials(configs, workloads=WORKLOADS, prune=True, strategy=strategy)
    assert [r.status for r in kept] == ["complete", "incomplete"]
    assert [r.status for r in pruned] == ["complete", "pruned"]
    assert pruned[1].stop_step < 400
    assert pruned[0].steps == kept[0].steps


@pytest.mark.parametrize("stacked", [False, True], ids=["single", "stacked"])
def test_replay_from_a_snapshot_is_exact(stacked):
    workload = WORKLOADS[("reg", (), 0, "cpu")]
    cfgs = [config(seed=0, optimizer="adam", learning_rate=0.01), config(seed=1, optimizer="adam")]
    run = StackedRun(workload, cfgs, [0, 1]) if stacked else SingleRun(workload, cfgs[0])
    run.advance(37)  # mid-epoch (batch 4 of 400 examples: 100 steps per epoch)
    snapshot = run.snapshot()
    run.advance(260)  # across two epoch boundaries
    first = run.evaluate()
    replay = run.resume(snapshot, run.trials)
    replay.advance(260)
    assert replay.evaluate() == first
    assert all(math.isfinite(v) for v in first[1])


def test_num_threads_is_restored_and_progress_reports_each_trial():
    before = torch.get_num_threads()
    lines = []
    run_trials([config(max_steps=20), config(max_steps=20, seed=1)], workloads=WORKLOADS, num_threads=1,
               progress=lines.append)
    assert torch.get_num_threads() == before
    assert len(lines) == 2 and all("batch 4" in line for line in lines)


@pytest.mark.slow
def test_digits_mlp_sweep_stacked_equals_one_at_a_time():
    """A real workload by name: the two strategies give the same statuses and steps."""
    configs = [TrainConfig(workload="digits-mlp", batch_size=b, learning_rate=lr, target=0.1, max_steps=1500)
               for b in (8, 64) for lr in (0.01, 0.1, 1.0, 30.0)]
    stacked = run_trials(configs, strategy="batched")
    single = run_trials(configs, strategy="sequential")
    assert [(r.status, r.steps) for r in stacked] == [(r.status, r.steps) for r in single]
    assert {r.status for r in stacked} >= {"complete", "diverged"}


# --- the pruning rule on hand-made histories (error metric on 800 examples: sd ~0.014 near 0.2) -------


def track(history, status=None) -> Track:
    """A Track with ``history`` [(step, metric)], ended with ``status`` (None: still running)."""
    t = Track(config(target_metric="error", target=0.2))
    t.history = [(s, m, None if m is None else 1.0) for s, m in history]
    if status is not None:
        t.result = TrialResult(config=t.config, status=status, steps=None, final_metric=None, final_loss=None,
                               best_metric=None, history=tuple(t.history), wall_time=0.0, device="cpu",
                               stop_step=t.history[-1][0])
    return t


def test_noisy_but_best_copy_is_not_pruned():
    # At step 40 the candidate (0.60) is the best now, though another copy's step-20 reading (0.55) was
    # better: a noise bump of the leader must not prune it.
    leader = track([(20, 0.62), (40, 0.60)])
    other = track([(20, 0.55), (40, 0.64)])
    assert not behind_group(0, 40, 0.60, [leader, other])


def test_noise_within_the_margin_never_prunes():
    group = [track([(20, 0.86), (40, 0.88)]), track([(20, 0.87), (40, 0.85)])]
    assert not behind_group(0, 40, 0.88, group)  # 0.87 + 0.03 >= 0.88: within noise
    group = [track([(10, 0.89), (20, 0.89)]), track([(10, 0.80), (20, 0.70)])]
    assert not behind_group(0, 19, 0.89, group)  # before PRUNE_MIN_STEP


def test_a_diverging_copy_never_prunes_others():
    slow = [(20, 0.70), (40, 0.50)]
    fast_then_nan = [(20, 0.40), (40, None)]  # its step-20 reading was far ahead
    assert not behind_group(0, 40, 0.50, [track(slow), track(fast_then_nan, "diverged")])
    rising = [(20, 0.40), (40, 0.80)]  # on its way to diverging, not yet stopped: behind now
    assert not behind_group(0, 40, 0.50, [track(slow), track(rising)])
    pruned = [(20, 0.40), (40, 0.30)]
    assert not behind_group(0, 40, 0.50, [track(slow), track(pruned, "pruned")])


def test_a_clearly_dominated_copy_is_pruned():
    assert behind_group(0, 40, 0.80, [track([(20, 0.85), (40, 0.80)]), track([(20, 0.50), (40, 0.24)])])
    finished = track([(20, 0.40), (33, 0.19)], "complete")  # ended at the target: still a leader
    assert behind_group(0, 40, 0.80, [track([(20, 0.85), (40, 0.80)]), finished])
    assert PRUNE_MARGIN == pytest.approx(0.03)


def test_a_leader_far_from_the_target_prunes_nobody():
    # A high rate at B = 1 on MNIST-1D: ahead early (0.62 vs 0.85), then stuck near 0.65 for 200k steps,
    # while the rate that reaches 0.2 first starts slowly. Only a leader within PRUNE_NEAR prunes.
    stalled = track([(20, 0.62), (40, 0.60)])
    assert not behind_group(0, 40, 0.85, [track([(20, 0.88), (40, 0.85)]), stalled])
    near = track([(20, 0.62), (40, 0.2 + PRUNE_NEAR)])
    assert behind_group(0, 40, 0.85, [track([(20, 0.88), (40, 0.85)]), near])
    ran_out = track([(20, 0.30), (40, 0.21)], "incomplete")  # max_steps without the target
    assert not behind_group(0, 40, 0.85, [track([(20, 0.88), (40, 0.85)]), ran_out])


def test_a_trial_past_a_group_mates_steps_to_target_is_pruned():
    done = track([(20, 0.40), (30, 0.19)], "complete")
    done.result = replace(done.result, steps=30)
    assert behind_group(0, 33, 0.21, [track([(20, 0.35), (33, 0.21)]), done])  # cannot beat 30 steps
    assert not behind_group(0, 30, 0.21, [track([(20, 0.35), (30, 0.21)]), done])  # not yet past it


# --- seeds: stacked together, pruned apart ---------------------------------------------------------------


def test_a_leader_of_another_seed_never_prunes():
    slow, fast = track([(20, 0.85), (40, 0.80)]), track([(20, 0.50), (40, 0.24)])
    assert behind_group(0, 40, 0.80, [slow, fast])  # same seed: pruned
    fast.config = replace(fast.config, seed=1)
    assert not behind_group(0, 40, 0.80, [slow, fast])  # another seed's leader: not a group-mate
    done = track([(20, 0.40), (30, 0.19)], "complete")
    done.config, done.result = replace(done.config, seed=1), replace(done.result, steps=30)
    assert not behind_group(0, 33, 0.21, [track([(20, 0.35), (33, 0.21)]), done])


@pytest.mark.parametrize("strategy", ["batched", "sequential"])
def test_seeds_stack_together_and_each_seed_is_pruned_only_by_its_own(strategy):
    """Three seeds of one configuration form one group (one stack); with pruning on, each seed's results
    equal those of that seed run alone. Seed 2 has only the slow rate: alone it is never pruned, so a
    rule that let seed 0's fast trial prune it would fail here."""
    from batchscale.empirical.engine import group_trials

    slow, fast = 0.005, 0.05
    configs = [config(learning_rate=lr, seed=s, max_steps=600) for s, lrs in ((0, (fast, slow)),
               (1, (slow, fast)), (2, (slow,))) for lr in lrs]
    assert len(group_trials(configs)) == 1
    together = run_trials(configs, workloads=WORKLOADS, prune=True, strategy=strategy)
    for seed in (0, 1, 2):
        mine = [c for c in configs if c.seed == seed]
        alone = run_trials(mine, workloads=WORKLOADS, prune=True, strategy=strategy)
        got = [(r.status, r.steps, r.stop_step) for r in together if r.config.seed == seed]
        assert got == [(r.status, r.steps, r.stop_step) for r in alone], seed
    pruned = [r.status for r in together].count("pruned")  # sequential: a slow trial run first is kept
    assert pruned == (2 if strategy == "batched" else 1) and together[-1].status != "pruned"


@pytest.mark.parametrize("strategy", ["batched", "sequential"])
def test_a_step_bound_stops_a_trial_that_misses_the_target_by_then(strategy):
    """``bounds``: a trial still short of the target at an evaluation at a step >= its bound ends as
    ``pruned`` there (its steps would exceed the bound); a trial that meets the target by its bound gets the
    unbounded steps; with no bound nothing changes. The notes reach every result."""
    configs = [config(learning_rate=0.1, max_steps=400), config(learning_rate=1e-3, max_steps=400)]
    free = run_trials(configs, workloads=WORKLOADS, strategy=strategy)
    assert [r.status for r in free] == ["complete", "incomplete"]
    reached = free[0].steps
    bounded = run_trials(configs, workloads=WORKLOADS, strategy=strategy, bounds=[reached, 100],
                         notes=("checked",))
    assert (bounded[0].status, bounded[0].steps) == ("complete", reached)
    assert bounded[1].status == "pruned" and 100 <= bounded[1].stop_step < 400
    assert all(h[0] < 100 for h in bounded[1].history[:-1]) and bounded[1].history[-1][0] >= 100
    assert all(r.notes == ("checked",) for r in bounded)


def test_group_limits_against_medians_with_unfinished_seeds_as_infinite():
    """U is the best median when every unfinished seed is infinitely slow (a plain numpy median), the limit
    max(k U, own best) with k = 2 for an even number of seeds."""
    import numpy as np

    from batchscale.empirical.train import Track, group_limits

    rng = np.random.default_rng(0)
    for n_seeds in (1, 2, 3, 4, 5):
        for _ in range(20):
            tracks, table = [], {}
            for lr in (0.01, 0.02, 0.04):
                for seed in range(n_seeds):
                    track = Track(config(learning_rate=lr, seed=seed))
                    if rng.random() < 0.6:
                        steps = int(rng.integers(10, 100))
                        track.result = TrialResult(track.config, "complete", steps, 0.0, 0.0, 0.0)
                    table[(lr, seed)] = track.result.steps if track.result else math.inf
                    tracks.append(track)
            medians = [float(np.median([table[(lr, s)] for s in range(n_seeds)]))
                       for lr in (0.01, 0.02, 0.04)]
            scale = 1 if n_seeds % 2 else 2
            expected = {s: max(scale * min(medians), min(table[(lr, s)] for lr in (0.01, 0.02, 0.04)))
                        for s in range(n_seeds)}
            assert group_limits(tracks, n_seeds) == expected


@pytest.mark.parametrize("strategy", ["batched", "sequential"])
def test_median_seeds_stops_only_trials_that_cannot_change_the_answer(strategy):
    """Rates x 3 seeds: with ``median_seeds`` some trials stop early, every one that finishes has its
    unpruned steps, every stopped one was slower than its stop step, and the best point by median and each
    seed's own best rate are those of the unpruned run."""
    import numpy as np

    rates, seeds = (0.005, 0.01, 0.02, 0.05, 0.1), (0, 1, 2)
    configs = [config(learning_rate=lr, seed=s, max_steps=1500) for lr in rates[::-1] for s in seeds]

    def answer(results):
        steps = {(r.config.learning_rate, r.config.seed): r.steps if r.status == "complete" else math.inf
                 for r in results}
        medians = {lr: float(np.median([steps[(lr, s)] for s in seeds])) for lr in rates}
        best = min(rates, key=lambda lr: (medians[lr], lr))
        own = [min(rates, key=lambda lr, s=s: (steps[(lr, s)], lr)) for s in seeds]
        return best, medians[best], [steps[(best, s)] for s in seeds], own

    free = run_trials(configs, workloads=WORKLOADS, strategy=strategy)
    exact = run_trials(configs, workloads=WORKLOADS, strategy=strategy, median_seeds=3)
    assert any(r.status == "pruned" for r in exact), "nothing was stopped: the test is void"
    for a, b in zip(free, exact, strict=True):
        if b.status == "pruned":
            assert a.status != "complete" or a.steps > b.stop_step
        else:
            assert (a.status, a.steps) == (b.status, b.steps)
    assert answer(exact) == answer(free)
