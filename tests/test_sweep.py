"""The sweep's search logic against synthetic objectives with a known optimum, and one tiny real sweep.

The synthetic objective: steps to target S(B) * (1 + log2(lr / lr*(B))^2) around an optimal rate
lr*(B) = LR0 * min(B, B_SAT) (linear scaling, then flat); rates more than 8x above lr* diverge and more
than 32x below never reach the target. The search must find lr* (to within its factor-2 grid) wherever
its initial window starts, by extending past its edges.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from batchscale.empirical.executors import ExecutorConfig, make_executor
from batchscale.empirical.store import open_store
from batchscale.empirical.sweep import (
    GridSweepConfig,
    Point,
    StepsSweepConfig,
    choose_target,
    edges_of,
    grid_chain,
    grid_window,
    last_metric,
    quasi_random_points,
    reference_trials,
    run_chains,
    run_steps_sweep,
    steps_chain,
    steps_per_epoch,
)
from batchscale.empirical.trials import TrainConfig, TrialResult
from batchscale.errors import InputError

LR0 = 0.01
B_SAT = 16


def optimal_lr(batch_size: int) -> float:
    return LR0 * min(batch_size, B_SAT)


def min_steps(batch_size: int) -> float:
    return 10_000 / batch_size + 100  # perfect scaling, then a floor


def synthetic(config: TrainConfig) -> TrialResult:
    distance = math.log2(config.learning_rate / optimal_lr(config.batch_size))
    momentum_penalty = 0.0 if config.optimizer == "sgd" else math.log10((1 - config.momentum) / 0.1) ** 2
    steps = math.ceil(min_steps(config.batch_size) * (1 + distance**2 / 4 + momentum_penalty))
    if distance > 3:
        return TrialResult(config, "diverged", None, None, None, None)
    if distance < -5 or steps > config.max_steps:
        return TrialResult(config, "incomplete", None, 0.5, 1.0, 0.5)
    return TrialResult(config, "complete", steps, 0.19, 0.5, 0.19)


def drive(chain, objective=synthetic):
    """Run a chain to its end with ``objective``; return (rows, number of trials asked for)."""
    asked = 0
    try:
        round_ = next(chain)
        while True:
            asked += len(round_.configs)
            round_ = chain.send({t.trial_id(): objective(t) for t in round_.configs})
    except StopIteration as stop:
        return stop.value, asked


BATCHES = (1, 2, 4, 8, 16, 32, 64)


@pytest.mark.parametrize(
    "lr_range",
    [(0.002, 0.25), (1e-5, 1e-4), (1.0, 10.0)],
    ids=["window-covers", "window-far-below", "window-far-above"],
)
def test_search_finds_the_optimum_wherever_it_starts(lr_range):
    config = StepsSweepConfig(
        workload="synthetic", batch_sizes=BATCHES, optimizers=("sgd",), lr_range=lr_range, max_extensions=8
    )
    rows, _ = drive(steps_chain(config, "sgd"))
    assert [r["batch_size"] for r in rows] == list(BATCHES)
    for row in rows:
        ratio = row["learning_rate"] / optimal_lr(row["batch_size"])
        assert 1 / 1.5 < ratio < 1.5, row
        assert row["status"] == "complete" and not row["at_edge"]
        assert row["steps"] <= math.ceil(min_steps(row["batch_size"]) * 1.07)


def test_optimum_left_on_an_edge_is_reported():
    config = StepsSweepConfig(
        workload="synthetic", batch_sizes=(1, 2), optimizers=("sgd",), lr_range=(1e-4, 1e-3), max_extensions=1
    )
    rows, _ = drive(steps_chain(config, "sgd"))
    assert rows[0]["at_edge"] and rows[0]["edge"] == "lr-high"
    assert rows[0]["extensions"] == 1
    assert rows[0]["lr_max"] < optimal_lr(1)


def test_later_windows_centre_on_a_linear_scaling_guess_with_eight_rates():
    config = StepsSweepConfig(workload="synthetic", batch_sizes=(4, 8), optimizers=("sgd",), max_extensions=0,
                              refine_levels=0)
    chain = steps_chain(config, "sgd")
    first = next(chain).configs
    second = chain.send({t.trial_id(): synthetic(t) for t in first}).configs
    rates = sorted({t.learning_rate for t in second})
    assert len(rates) == 8 and len(second) == 8 * len(config.seeds)
    assert all(math.isclose(b / a, 2.0, rel_tol=1e-3) for a, b in zip(rates, rates[1:], strict=False))
    best_first = min((synthetic(t).steps or math.inf, t.learning_rate) for t in first)[1]
    assert math.isclose(math.sqrt(rates[3] * rates[4]), 2 * best_first, rel_tol=1e-3)
    # budget: the second batch size may use at most budget_factor x the first one's best steps
    assert {t.max_steps for t in second} == {math.ceil(2.0 * min(synthetic(t).steps or 1e9 for t in first))}


def test_later_learning_rates_narrow_later_windows_to_their_middle_rates():
    """--later-lrs 4: a later window is the middle 4 rates of the 8-rate one (same lattice, same centre);
    the first window keeps its 8; on the synthetic curve (one minimum) every row's answer is the 8-rate
    search's, for fewer trials; to_dict leaves the field out at its default (old sweep JSON unchanged)."""
    base = StepsSweepConfig(workload="synthetic", batch_sizes=BATCHES, optimizers=("sgd",), max_extensions=8)
    narrow = replace(base, later_learning_rates=4)
    assert "later_learning_rates" not in base.to_dict() and narrow.to_dict()["later_learning_rates"] == 4

    def windows(config):  # the first two rounds, without refinement or extensions: the two windows
        chain = steps_chain(replace(config, refine_levels=0, max_extensions=0), "sgd")
        first = next(chain).configs
        return first, chain.send({t.trial_id(): synthetic(t) for t in first}).configs

    first8, second8 = windows(base)
    first4, second4 = windows(narrow)
    assert first4 == first8
    rates8, rates4 = sorted({t.learning_rate for t in second8}), sorted({t.learning_rate for t in second4})
    assert len(rates4) == 4
    assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(rates4, rates8[2:6], strict=True))
    rows8, asked8 = drive(steps_chain(base, "sgd"))
    rows4, asked4 = drive(steps_chain(narrow, "sgd"))
    key = ("batch_size", "steps", "learning_rate", "seed_steps")
    assert [[r[k] for k in key] for r in rows4] == [[r[k] for k in key] for r in rows8]
    assert asked4 < asked8
    # the best rate far from the guess: extensions still reach it (the optimum moves x 8 at B = 8)
    shifted = drive(steps_chain(replace(narrow, batch_sizes=(4, 8)), "sgd"), objective=jumping)[0]
    assert not shifted[-1]["at_edge"] and 1 / 1.5 < shifted[-1]["learning_rate"] / (8 * optimal_lr(8)) < 1.5
    with pytest.raises(InputError, match="later windows"):
        replace(base, later_learning_rates=1).validate()


def jumping(trial):
    """:func:`synthetic` with the optimal rate 8x higher at B >= 8 than linear scaling predicts."""
    if trial.batch_size < 8:
        return synthetic(trial)
    return replace(synthetic(replace(trial, learning_rate=trial.learning_rate / 8)), config=trial)


def test_trials_pruned_against_a_trial_that_later_diverged_are_retried():
    """(The engine's pruning rule runs only without verification: ``verify_pruned=False``.)"""
    config = StepsSweepConfig(workload="synthetic", batch_sizes=(1,), optimizers=("sgd",), max_extensions=0,
                              seeds=(0,), verify_pruned=False)
    chain = steps_chain(config, "sgd")
    first = next(chain)
    assert first.prune
    leader = max(t.learning_rate for t in first.configs)
    status = {t.trial_id(): "diverged" if t.learning_rate == leader else "pruned" for t in first.configs}
    pruned_world = {k: TrialResult(t, status[k], None, None, None, None) for t in first.configs
                    for k in [t.trial_id()]}
    retry = chain.send(pruned_world)
    assert retry.prune and retry.redo_pruned and len(retry.configs) == len(first.configs) - 1
    # pruned again by early noise, with no trial reaching the target: the second retry does not prune
    again = chain.send({k: TrialResult(t, "pruned", None, None, None, None) for t in retry.configs
                        for k in [t.trial_id()]})
    assert not again.prune and again.redo_pruned and again.configs == retry.configs
    rows, _ = drive_from(chain, again)
    assert rows[0]["status"] == "complete" and rows[0]["n_pruned"] == 0
    assert 1 / 1.5 < rows[0]["learning_rate"] / optimal_lr(1) < 1.5


def noisy_pruning(trial, prune):
    """The synthetic world, except that pruning wrongly stops every rate near the optimum."""
    result = synthetic(trial)
    near_best = abs(math.log2(trial.learning_rate / optimal_lr(trial.batch_size))) < 1
    if prune and near_best and result.status == "complete":
        return TrialResult(trial, "pruned", None, 0.8, 2.0, 0.8)
    return result


def drive_pruned(config):
    """Run the chain in the noisy-pruning world; (rows, step budgets of the unpruned re-runs). The rounds
    that do not redo pruned trials come back pruned by the rule (as they do without ``verify_pruned``, or
    by default from a store such a sweep filled)."""
    chain, budgets = steps_chain(config, "sgd"), []
    try:
        round_ = next(chain)
        while True:
            budgets += [t.max_steps for t in round_.configs if round_.redo_pruned]
            pruning = not round_.redo_pruned and config.prune
            round_ = chain.send({t.trial_id(): replace(noisy_pruning(t, pruning), notes=round_.notes)
                                 for t in round_.configs})  # the notes: as the engine adds them
    except StopIteration as stop:
        return stop.value, budgets


def test_pruned_optimum_is_recovered_by_default():
    """Pruning that wrongly stops the best rate (early noise) must not change the answer: by default the
    pruned trials that could still win are re-run without pruning, and the answer equals no pruning's."""
    config = StepsSweepConfig(workload="synthetic", batch_sizes=(1, 2, 4), optimizers=("sgd",))
    first = next(steps_chain(config, "sgd"))  # the default's own rounds use the exact rule, not pruning
    assert not first.prune and first.median_seeds == len(config.seeds)
    rows, budgets = drive_pruned(config)
    assert budgets, "no verification round was asked for"
    unpruned, _ = drive(steps_chain(replace(config, prune=False), "sgd"))
    assert [(r["steps"], r["learning_rate"]) for r in rows] == [
        (r["steps"], r["learning_rate"]) for r in unpruned
    ]
    for row, plain in zip(rows, unpruned, strict=True):
        assert 1 / 1.5 < row["learning_rate"] / optimal_lr(row["batch_size"]) < 1.5, row
        assert row["n_verified"] >= 1 and row["n_pruned"] == 0
        assert row["trial_id"] == plain["trial_id"] and row["seed_steps"] == plain["seed_steps"]
    # the planted failure: without the re-runs the same world reports slower rates
    wrong, _ = drive_pruned(replace(config, verify_pruned=False))
    assert any(w["steps"] > r["steps"] for w, r in zip(wrong, rows, strict=True))


def drive_from(chain, round_, objective=synthetic):
    try:
        while True:
            round_ = chain.send({t.trial_id(): objective(t) for t in round_.configs})
    except StopIteration as stop:
        return stop.value, None


def test_unreachable_target_is_a_status_not_a_crash():
    config = StepsSweepConfig(workload="synthetic", batch_sizes=(1, 2), optimizers=("sgd",), max_steps=10)
    rows, _ = drive(steps_chain(config, "sgd"))
    assert [r["status"] for r in rows] == ["unreachable", "unreachable"]
    assert rows[0]["steps"] is None and rows[0]["n_trials"] >= 8


def test_momentum_tuning_samples_one_minus_momentum_log_uniformly():
    points = quasi_random_points((0.01, 1.0), (0.01, 0.5), 64, seed=0)
    gaps = [1 - p.momentum for p in points]
    assert min(gaps) >= 0.01 - 1e-9 and max(gaps) <= 0.5 + 1e-9
    below = sum(g < math.sqrt(0.01 * 0.5) for g in gaps)
    assert 24 <= below <= 40  # half of the points below the geometric middle (log-uniform)
    config = StepsSweepConfig(
        workload="synthetic", batch_sizes=(1, 4), optimizers=("momentum",), tune_momentum=True,
        n_learning_rates=16, max_extensions=6,
    )
    rows, _ = drive(steps_chain(config, "momentum"))
    for row in rows:
        assert abs(math.log10((1 - row["momentum"]) / 0.1)) < 0.35, row
        assert 1 / 2.5 < row["learning_rate"] / optimal_lr(row["batch_size"]) < 2.5, row


def test_edges_of():
    tried = [Point(0.1, 0.9), Point(0.2, 0.99), Point(0.4, 0.5)]
    assert edges_of(Point(0.1, 0.9), tried, tune_momentum=False) == ("lr-low",)
    assert edges_of(Point(0.2, 0.99), tried, tune_momentum=True) == ("momentum-high",)
    assert edges_of(Point(0.4, 0.5), tried, tune_momentum=True) == ("lr-high", "momentum-low")
    assert grid_window(1.0, 2, 4.0) == [0.5, 2.0]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"lr_range": (1.0, 0.1)}, "empty or invalid learning-rate range"),
        ({"lr_range": (0.0, 0.1)}, "learning-rate range"),
        ({"optimizers": ("lbfgs",)}, "unknown optimizer 'lbfgs'"),
        ({"batch_sizes": (1, 4096)}, "larger than the training set"),
        ({"search": "grid", "tune_momentum": True}, "quasi-random"),
        ({"n_learning_rates": 1}, "at least 2"),
        ({"warmup_fraction": 1.0, "budget_factor": None}, "warm-up fraction"),
        ({"warmup_fraction": math.nan, "budget_factor": None}, "warm-up fraction"),
        ({"decay": "step", "budget_factor": None}, "unknown decay 'step'"),
        ({"weight_decay": -1e-4}, "weight decay"),
        ({"weight_decay": math.inf}, "weight decay"),
        ({"decay": "cosine"}, "--budget-factor 0"),
        ({"warmup_fraction": 0.1}, "--budget-factor 0"),
        ({"target_fraction": 1.0}, "target fraction"),
    ],
)
def test_bad_sweep_configs(kwargs, words):
    with pytest.raises(InputError, match=words):
        StepsSweepConfig(**{"batch_sizes": (1, 2, 4), **kwargs}).validate(n_train=1000)


def test_grid_chain_rows_and_accounting():
    config = GridSweepConfig(workload="synthetic", batch_sizes=(1, 8), learning_rates=(0.1, 0.01), epochs=2)
    assert steps_per_epoch(1050, 100, drop_last=False) == 11
    assert steps_per_epoch(1050, 100, drop_last=True) == 10

    def objective(trial):
        history = ((1, 0.5, 1.0), (2, 0.3, 0.8), (3, 0.2, 0.7), (4, 0.4, 0.7))
        if trial.learning_rate * trial.batch_size > 0.5:
            return TrialResult(trial, "diverged", None, None, None, None, history=history[:1])
        return TrialResult(trial, "complete", None, 0.4, 0.7, 0.2, history=history)

    rows, asked = drive(grid_chain(config, n_train=100), objective)
    assert asked == 4
    cells = {(r["batch_size"], r["base_learning_rate"]): r for r in rows}
    assert cells[(8, 0.1)]["diverged"] and cells[(8, 0.1)]["test_accuracy"] is None
    assert cells[(1, 0.1)]["test_accuracy"] == pytest.approx(1 - 0.3)  # median of 0.3, 0.2, 0.4
    assert cells[(1, 0.1)]["steps"] == 200 and cells[(8, 0.1)]["steps"] == 26
    assert last_metric(objective(TrainConfig(learning_rate=0.01, batch_size=1)), 1) == 0.4


def test_tiny_real_sweep_reuses_the_store(tmp_path):
    config = StepsSweepConfig(
        workload="digits-mlp", workload_options={}, batch_sizes=(16, 32), optimizers=("sgd",),
        lr_range=(0.05, 0.8), n_learning_rates=4, max_extensions=1, target=0.15, max_steps=1500,
        eval_subset=None, seeds=(0,),
    )
    path = tmp_path / "runs.sqlite"
    with open_store(path) as store, make_executor(ExecutorConfig(name="inline")) as executor:
        rows, stats = run_steps_sweep(config, store=store, executor=executor, n_train=1437)
        assert stats.trained > 0 and stats.reused == 0
        assert store.count() <= stats.trained  # a pruned trial re-run without pruning replaces its row
    assert all(r["status"] == "complete" for r in rows), rows
    with open_store(path) as store, make_executor(ExecutorConfig(name="inline")) as executor:
        again, stats2 = run_steps_sweep(config, store=store, executor=executor, n_train=1437)
    assert stats2.trained == 0 and stats2.reused > 0
    keys = ("batch_size", "steps", "learning_rate", "trial_id", "seed_steps", "seed_learning_rates", "status")
    assert [[r[k] for k in keys] for r in again] == [[r[k] for k in keys] for r in rows]


def test_run_chains_with_nothing_to_do(tmp_path):
    def empty():
        return []
        yield  # pragma: no cover

    with open_store(tmp_path / "r.sqlite") as store, make_executor(ExecutorConfig(name="inline")) as ex:
        rows, stats = run_chains({"x": empty()}, store=store, executor=ex)
    assert rows == {"x": []} and stats.trained == 0


def test_local_pool_streams_each_trial_to_the_store_as_it_ends(tmp_path):
    config = StepsSweepConfig(
        workload="digits-mlp", workload_options={}, batch_sizes=(16,), optimizers=("sgd",),
        lr_range=(0.01, 3.0), n_learning_rates=5, max_extensions=0, target=0.15, max_steps=1500,
        eval_subset=None, prune=False, seeds=(0,), refine_levels=0,
    )
    with open_store(tmp_path / "r.sqlite") as store, make_executor(ExecutorConfig(workers=1)) as executor:
        rows, stats = run_steps_sweep(config, store=store, executor=executor, n_train=1437)
        records = [r for r in store.records() if r.config["max_steps"] > 1]  # not the step-0 probe
    assert stats.trained == len(records) + 1 and len(records) == 5
    # streamed rows carry each trial's own end time; a chunk written at its end would share one
    assert len({r.finished_at for r in records}) == 5
    assert {r.started_at for r in records} == {records[0].started_at}
    assert rows[0]["status"] == "complete"


def test_no_verification_round_when_turned_off():
    config = StepsSweepConfig(workload="synthetic", batch_sizes=(1, 2), optimizers=("sgd",),
                              verify_pruned=False)
    chain = steps_chain(config, "sgd")
    round_ = next(chain)
    while True:
        assert round_.prune, "a verification round (prune=False) was asked for"
        results = {t.trial_id(): synthetic(t) for t in round_.configs}
        slow = [t for t in round_.configs if synthetic(t).status == "complete"][-1:]
        results.update({t.trial_id(): TrialResult(t, "pruned", None, 0.8, 2.0, 0.8) for t in slow})
        try:
            round_ = chain.send(results)
        except StopIteration:
            break


@pytest.mark.parametrize(
    "name, options",
    [("digits-mlp", {}), ("digits-cnn", {"test_fraction": 0.33}), ("mnist1d-mlp", {"n_samples": 130}),
     ("mnist1d-cnn", {"n_samples": 250}), ("linreg", {"n_train": 77, "dim": 3}), ("teacher-student", {})],
)
def test_training_set_size_without_building_equals_the_built_workload(name, options):
    from batchscale.empirical.workloads import get_workload, training_set_size

    assert training_set_size(name, options) == get_workload(name, **options).n_train


def test_training_set_size_checks_options_and_names():
    from batchscale.empirical.workloads import training_set_size

    for name, options in [("digits-mlp", {"bogus": 1}), ("mnist1d-mlp", {"n_samples": 15}), ("nope", {})]:
        with pytest.raises(InputError):
            training_set_size(name, options)
    assert training_set_size("some.module:factory", {}) is None  # only building a user factory tells
    assert training_set_size("mnist-cnn", {"n_train": 100}) == 100


@pytest.mark.parametrize(
    "config",
    [
        StepsSweepConfig(target=1.0), StepsSweepConfig(target=-0.1), StepsSweepConfig(eval_subset=-1),
        StepsSweepConfig(target_metric="loss", target=0.0),
        StepsSweepConfig(optimizers=("nesterov",), momentum=0),
        GridSweepConfig(epochs=math.inf), GridSweepConfig(optimizer="momentum", momentum=0.0),
        GridSweepConfig(eval_subset=0),
    ],
)
def test_configs_refuse_values_trials_would_refuse_later(config):
    with pytest.raises(InputError):
        config.validate(10_000)


def seeded(config: TrainConfig) -> TrialResult:
    """The synthetic world with a seed-dependent optimum (lr* x 2^(seed - 1)) and speed (1 + seed / 10)."""
    optimum = optimal_lr(config.batch_size) * 2.0 ** (config.seed - 1)
    distance = math.log2(config.learning_rate / optimum)
    steps = math.ceil(min_steps(config.batch_size) * (1 + config.seed / 10) * (1 + distance**2 / 4))
    if distance > 3:
        return TrialResult(config, "diverged", None, None, None, None)
    if distance < -5 or steps > config.max_steps:
        return TrialResult(config, "incomplete", None, 0.5, 1.0, 0.5)
    return TrialResult(config, "complete", steps, 0.19, 0.5, 0.19)


def test_rows_report_the_median_the_seed_range_and_each_seeds_own_best_rate():
    config = StepsSweepConfig(workload="synthetic", batch_sizes=(4, 8), optimizers=("sgd",), seeds=(0, 1, 2))
    asked: list[TrainConfig] = []

    def objective(trial):
        asked.append(trial)
        return seeded(trial)

    rows, _ = drive(steps_chain(config, "sgd"), objective)
    for row in rows:  # recomputed with plain loops over every trial the chain asked for
        trials = [t for t in asked if t.batch_size == row["batch_size"]]
        rates = sorted({t.learning_rate for t in trials})
        steps = {(lr, s): seeded(next(t for t in trials if t.learning_rate == lr and t.seed == s)).steps
                 for lr in rates for s in config.seeds}
        per_seed = [steps[(row["learning_rate"], s)] for s in config.seeds]
        assert row["seed_steps"] == per_seed and row["steps"] == sorted(per_seed)[1]
        assert (row["steps_low"], row["steps_high"]) == (min(per_seed), max(per_seed))
        medians = {lr: sorted(steps[(lr, s)] or math.inf for s in config.seeds)[1] for lr in rates}
        assert medians[row["learning_rate"]] == min(medians.values())
        own = [min(rates, key=lambda lr, s=s: (steps[(lr, s)] or math.inf, lr)) for s in config.seeds]
        assert row["seed_learning_rates"] == own
        assert own[0] < own[1] < own[2]  # the planted seed dependence is seen
        assert row["lr_seed_spread"] == own[2] / own[0]


def test_seeds_of_one_configuration_stack_in_one_chunk():
    from batchscale.empirical.sweep import chunks_of

    base = TrainConfig(workload="digits-mlp", batch_size=8, learning_rate=0.1)
    configs = [replace(base, learning_rate=lr, seed=s) for lr in (0.1, 0.2) for s in (0, 1, 2)]
    assert chunks_of(configs) == [configs]
    assert len(chunks_of([*configs, replace(base, batch_size=16)])) == 2


def test_refinement_finds_a_rate_between_the_grid_points():
    """The window's rates sit half a factor 2 either side of the optimum (6.25 % slower there); the
    sqrt(2) level lands on the optimum (a 5.9 % change), the 2^(1/4) level changes nothing (< 5 %)."""
    opt, m = optimal_lr(4), min_steps(4)
    config = StepsSweepConfig(workload="synthetic", batch_sizes=(4,), optimizers=("sgd",), seeds=(0,),
                              lr_range=(opt * 2**-3.5, opt * 2**3.5), n_learning_rates=8)
    (row,), _ = drive(steps_chain(config, "sgd"))
    assert math.isclose(row["learning_rate"], opt, rel_tol=1e-3)
    assert row["steps"] == math.ceil(m * (1 + math.log2(row["learning_rate"] / opt) ** 2 / 4))
    assert row["lr_refine_levels"] == 2 and row["lr_refine_change"] == 0
    assert math.isclose(row["lr_refine_factor"], 2**0.25)
    (coarse,), _ = drive(steps_chain(replace(config, refine_levels=0), "sgd"))  # the planted failure
    assert coarse["steps"] > 1.05 * row["steps"] and coarse["lr_refine_change"] is None


@pytest.mark.parametrize(
    "warmup, decay, horizon, expected",
    [
        (0.0, "none", 1000, ("constant", 0)),
        (0.1, "none", 1000, ("warmup_constant", 100)),
        (0.0, "linear", 1000, ("warmup_linear_decay", 0)),
        (0.25, "cosine", 10, ("warmup_cosine_decay", 2)),  # round(2.5) = 2
        (0.99, "cosine", 10, ("warmup_cosine_decay", 9)),  # below the horizon, as TrainConfig needs
    ],
)
def test_recipe_maps_onto_the_engines_schedules(warmup, decay, horizon, expected):
    config = StepsSweepConfig(warmup_fraction=warmup, decay=decay, budget_factor=None)
    assert config.schedule_of(horizon) == expected


def test_recipe_enters_every_trial_and_its_id():
    """Warm-up, decay and weight decay reach every trial the chain asks for (so they are in the trial
    ids, and a sweep with another recipe reuses nothing); the defaults leave configs and ids unchanged."""
    base = StepsSweepConfig(batch_sizes=(4, 8, 16), optimizers=("sgd",), max_steps=20_000, budget_factor=None,
                            seeds=(0,))
    recipe = replace(base, warmup_fraction=0.05, decay="cosine", weight_decay=1e-4).validate()
    asked: list[TrainConfig] = []

    def record(config):
        asked.append(config)
        return synthetic(config)

    rows, _ = drive(steps_chain(recipe, "sgd"), record)
    assert asked and all(r["status"] == "complete" for r in rows)
    assert {(t.schedule, t.warmup_steps, t.weight_decay, t.max_steps) for t in asked} == {
        ("warmup_cosine_decay", 1000, 1e-4, 20_000)}
    plain = [replace(t, schedule="constant", warmup_steps=0, weight_decay=0.0) for t in asked]
    assert not {t.trial_id() for t in asked} & {t.trial_id() for t in plain}
    default_trials: list[TrainConfig] = []
    drive(steps_chain(base, "sgd"), lambda c: default_trials.append(c) or synthetic(c))
    # the defaults: the same TrainConfig as one built without any recipe field (today's trial ids)
    assert all(t == TrainConfig(**{k: v for k, v in t.to_dict().items()
                                   if k not in ("schedule", "warmup_steps", "weight_decay")})
               for t in default_trials)
    assert not {"warmup_fraction", "decay", "weight_decay", "target_fraction"} & set(base.to_dict())
    assert recipe.to_dict()["decay"] == "cosine" and recipe.to_dict()["weight_decay"] == 1e-4


def reference_result(config: TrainConfig, initial: float, final: float | None) -> TrialResult:
    status = "diverged" if final is None else "complete"
    return TrialResult(config, status, None, final, None, final, history=((0, initial, 2.3),))


def test_auto_target_is_the_stated_fraction_of_the_way_to_the_best():
    """M0 = median of the step-0 metrics, M* = best over rates of the median over seeds (a diverged seed
    counts as inf), target = M0 - f (M0 - M*): here 0.9 - 0.75 x (0.9 - 0.3) = 0.45."""
    config = StepsSweepConfig(batch_sizes=(8, 16), optimizers=("sgd", "momentum"), n_learning_rates=3,
                              seeds=(0, 1, 2), target_fraction=0.75, max_steps=500)
    trials = reference_trials(config)  # budget: max_steps // 10 by default, or target_budget
    assert len(trials) == 9 and {(t.optimizer, t.batch_size, t.target, t.max_steps) for t in trials} == {
        ("sgd", 8, None, 50)}
    assert {t.max_steps for t in reference_trials(replace(config, target_budget=120))} == {120}
    with pytest.raises(InputError, match="target budget"):
        replace(config, target_budget=501).validate()
    rates = sorted({t.learning_rate for t in trials})
    finals = {rates[0]: (0.5, 0.5, 0.5), rates[1]: (0.3, 0.2, 0.4), rates[2]: (0.01, None, None)}
    initials = {0: 0.9, 1: 0.88, 2: 0.95}
    results = [reference_result(t, initials[t.seed], finals[t.learning_rate][t.seed]) for t in trials]
    auto = choose_target(config, results)
    assert (auto.initial_metric, auto.best_metric, auto.best_learning_rate) == (0.9, 0.3, rates[1])
    assert auto.target == pytest.approx(0.45) and auto.relative_gap == pytest.approx(0.25)
    assert auto.best_metric < auto.target < auto.initial_metric and auto.max_steps == 50
    flat = [reference_result(t, 0.9, 0.9) for t in trials]  # nothing learned: no target to choose
    with pytest.raises(InputError, match="improved on the initial"):
        choose_target(config, flat)


# --- step bounds: trials that cannot change the answer stop early -------------------------------------


def drive_bounded(chain, objective):
    """Run a chain like the engine does with step bounds: a trial whose steps would exceed its round's
    bound (or that would never reach the target) stops as ``pruned`` at the bound. Returns (rows, number
    of bounded trials)."""
    n_bounded = 0
    try:
        round_ = next(chain)
        while True:
            results = {}
            for t in round_.configs:
                result, bound = objective(t, round_.prune), round_.bounds.get(t.trial_id())
                if bound is not None and result.status in ("complete", "incomplete") and (
                        result.steps is None or result.steps > bound):
                    result = TrialResult(t, "pruned", None, 0.5, 1.0, 0.5, stop_step=bound)
                    n_bounded += 1
                results[t.trial_id()] = replace(result, notes=round_.notes)
            round_ = chain.send(results)
    except StopIteration as stop:
        return stop.value, n_bounded


ANSWER_FIELDS = ("steps", "learning_rate", "seed_steps", "steps_low", "steps_high", "seed_learning_rates",
                 "trial_id")


def test_step_bounds_leave_every_answer_of_three_seeds_as_without_pruning():
    """Seeds with their own optima and speeds, pruning that wrongly stops every rate near the optimum:
    with the verification re-runs and refinement rounds bounded by the seeds' limits, each row's answer
    (median steps, rate, per-seed steps, each seed's own best rate) equals the unpruned sweep's."""
    config = StepsSweepConfig(workload="synthetic", batch_sizes=(2, 4, 8), optimizers=("sgd",),
                              seeds=(0, 1, 2))

    def world(trial, prune):
        result = seeded(trial)
        near_best = abs(math.log2(trial.learning_rate / optimal_lr(trial.batch_size))) < 1.5
        if prune and near_best and result.status == "complete" and trial.seed != 1:
            return TrialResult(trial, "pruned", None, 0.8, 2.0, 0.8, stop_step=5)
        return result

    rows, n_bounded = drive_bounded(steps_chain(config, "sgd"), world)
    assert n_bounded > 0, "no trial was bounded: the test is void"
    plain, _ = drive_bounded(steps_chain(replace(config, prune=False), "sgd"), world)
    for row, ref in zip(rows, plain, strict=True):
        assert {k: row[k] for k in ANSWER_FIELDS} == {k: ref[k] for k in ANSWER_FIELDS}, row["batch_size"]


def skewed_refinement_world(trial, prune=False):
    """Four seeds; the window's rates sit half a factor 2 either side of lr* (every seed the same steps S
    at the best of them); at lr* itself two seeds are fast (0.4 S) and two slow (1.5 S): median 0.95 S."""
    opt, m = optimal_lr(4), min_steps(4)
    distance = math.log2(trial.learning_rate / opt)
    best_window = math.ceil(m * (1 + 0.25 / 4))
    if abs(distance) < 1e-3:
        steps = math.ceil((0.4 if trial.seed < 2 else 1.5) * best_window)
    else:
        steps = math.ceil(m * (1 + distance**2 / 4))
    return TrialResult(trial, "complete", steps, 0.19, 0.5, 0.19)


def test_step_bounds_of_an_even_number_of_seeds_allow_twice_the_median(monkeypatch):
    """With 4 seeds the median is the mean of the middle two: the winner at lr* has a seed at 1.5 S, above
    the best median S so far. Its bound (2 S) keeps it; the planted bound max(S, own best) cuts it and
    reports the slower window rate."""
    from batchscale.empirical.sweep.steps import BatchSearch

    opt = optimal_lr(4)
    config = StepsSweepConfig(workload="synthetic", batch_sizes=(4,), optimizers=("sgd",), seeds=(0, 1, 2, 3),
                              lr_range=(opt * 2**-3.5, opt * 2**3.5), n_learning_rates=8, refine_levels=1)
    (row,), _ = drive_bounded(steps_chain(config, "sgd"), skewed_refinement_world)
    (plain,), _ = drive_bounded(steps_chain(replace(config, prune=False), "sgd"), skewed_refinement_world)
    assert math.isclose(row["learning_rate"], opt, rel_tol=1e-3) and row["steps"] == plain["steps"]

    def too_tight(self):
        best, _, _ = self.summary()
        own = self.seed_best_steps()
        return None if best is None else {s: max(best.steps, own[s]) for s in self.config.seeds}

    monkeypatch.setattr(BatchSearch, "limits", too_tight)
    (wrong,), _ = drive_bounded(steps_chain(config, "sgd"), skewed_refinement_world)
    assert wrong["steps"] > plain["steps"]


def slow_seed_world(trial, prune=False):
    """Three seeds around lr* = optimal_lr(4); seeds 0 and 1 follow the synthetic curve, seed 2 is slow
    (2 x the minimum) except at lr* / 2, where it takes 1.5 x: its own best rate is a refinement point
    whose steps exceed the best median."""
    distance, m = math.log2(trial.learning_rate / optimal_lr(4)), min_steps(4)
    if trial.seed == 2:
        steps = math.ceil((1.5 if abs(distance + 1) < 1e-3 else 2.0) * m)
    else:
        steps = math.ceil(m * (1 + distance**2 / 4))
    return TrialResult(trial, "complete", steps, 0.19, 0.5, 0.19)


def test_step_bounds_keep_each_seeds_own_best_rate(monkeypatch):
    """A seed's own best rate can be a trial slower than the best median: its bound is its own best steps
    so far, not the median. The planted bound (the median alone) loses seed 2's own best rate."""
    from batchscale.empirical.sweep.steps import BatchSearch

    opt = optimal_lr(4)
    config = StepsSweepConfig(workload="synthetic", batch_sizes=(4,), optimizers=("sgd",), seeds=(0, 1, 2),
                              lr_range=(opt * 2**-3.5, opt * 2**3.5), n_learning_rates=8, refine_levels=1)
    (row,), n_bounded = drive_bounded(steps_chain(config, "sgd"), slow_seed_world)
    (plain,), _ = drive_bounded(steps_chain(replace(config, prune=False), "sgd"), slow_seed_world)
    assert n_bounded > 0 and math.isclose(plain["seed_learning_rates"][2], opt / 2, rel_tol=1e-3)
    assert {k: row[k] for k in ANSWER_FIELDS} == {k: plain[k] for k in ANSWER_FIELDS}

    def median_only(self):
        best, _, _ = self.summary()
        return None if best is None else {s: best.steps for s in self.config.seeds}

    monkeypatch.setattr(BatchSearch, "limits", median_only)
    (wrong,), _ = drive_bounded(steps_chain(config, "sgd"), slow_seed_world)
    assert wrong["seed_learning_rates"][2] != plain["seed_learning_rates"][2]


def test_examples_is_a_count():
    """``examples`` (= steps x B) is an int when it is a whole number (every row of one seed)."""
    config = StepsSweepConfig(workload="synthetic", batch_sizes=(1, 2), optimizers=("sgd",), seeds=(0,))
    rows, _ = drive(steps_chain(config, "sgd"))
    assert all(type(r["examples"]) is int and r["examples"] == r["steps"] * r["batch_size"] for r in rows)
