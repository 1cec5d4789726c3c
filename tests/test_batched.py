"""The stacked engine and the plain loop against independent per-config torch.optim loops.

The twin below is written from the documented conventions only (batch order: ``torch.randperm`` from
``torch.Generator().manual_seed(seed)`` each epoch; learning-rate schedule: linear warm-up then linear
decay to 0 at max_steps; torch.optim optimizers), without any engine code.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batchscale.empirical.batched import StackedRun, mlp_plan, stackable
from batchscale.empirical.engine import run_trials
from batchscale.empirical.train import SingleRun
from batchscale.empirical.trials import TrainConfig
from batchscale.empirical.workloads import Workload
from batchscale.errors import InputError

RTOL, ATOL = 1e-4, 1e-5  # float32, a few dozen steps
STEPS = 25


def make_toy_mlp(seed: int, width: int = 16) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 3))


class Residual(nn.Module):
    """Not a plain MLP: exercises the vmap(functional_call) path."""

    def __init__(self):
        super().__init__()
        self.inp, self.hidden, self.out = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(h + torch.tanh(self.hidden(h)))


def make_residual(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Residual()


def make_linear(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(6, 2, bias=False)


def toy_workload(make_model=make_toy_mlp, loss: str = "cross_entropy", n_train: int = 50) -> Workload:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n_train + 40, 6, generator=g)
    if loss == "cross_entropy":
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    else:
        w = torch.randn(6, 2, generator=g)
        y = x @ w + 0.1 * torch.randn(n_train + 40, 2, generator=g)
    return Workload("toy", make_model, x[:n_train], y[:n_train], x[n_train:], y[n_train:], loss=loss)


def twin_parameters(workload: Workload, config: TrainConfig, steps: int) -> list[torch.Tensor]:
    """A plain per-config loop: torch.optim + LambdaLR + per-epoch randperm batches."""
    model = workload.make_model(config.seed)
    lr, wd, mu = config.learning_rate, config.weight_decay, config.momentum
    if config.optimizer in ("adam", "adamw"):  # beta1 once spelled ``momentum`` (0: the default 0.9)
        kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        beta1 = config.beta1 if config.beta1 is not None else (mu or 0.9)
        beta2 = 0.999 if config.beta2 is None else config.beta2
        eps = 1e-8 if config.eps is None else config.eps
        opt = kind(model.parameters(), lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd)
    else:
        momentum = 0.0 if config.optimizer == "sgd" else mu
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                              nesterov=config.optimizer == "nesterov", weight_decay=wd)
    w, total = config.warmup_steps, config.max_steps
    if config.schedule == "warmup_linear_decay":
        factor = lambda t: (t + 1) / w if t < w else (total - t) / (total - w)  # noqa: E731
    elif config.schedule == "warmup_cosine_decay":
        factor = lambda t: (t + 1) / w if t < w else (1 + math.cos(math.pi * (t - w) / (total - w))) / 2  # noqa: E731
    elif config.schedule == "warmup_constant":
        factor = lambda t: min(1.0, (t + 1) / w)  # noqa: E731
    else:
        factor = lambda t: 1.0  # noqa: E731
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    g = torch.Generator().manual_seed(config.seed)
    n, m = workload.n_train, config.batch_size
    batches = []
    while len(batches) < steps:
        perm = torch.randperm(n, generator=g)
        ends = range(m, n + 1, m) if config.drop_last else range(m, n + m, m)
        batches += [perm[e - m : min(e, n)] for e in ends]
    reduction = "mean" if config.loss_form == "mean" else "sum"
    for idx in batches[:steps]:
        out = model(workload.x_train[idx])
        if workload.loss == "cross_entropy":
            loss = F.cross_entropy(out, workload.y_train[idx], reduction=reduction)
        else:
            per = ((out - workload.y_train[idx]) ** 2).mean(dim=1)
            loss = per.mean() if reduction == "mean" else per.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return [p.detach() for p in model.parameters()]


def stacked_parameters(run: StackedRun, copy: int) -> list[torch.Tensor]:
    return [p[copy].detach() for p in run.params]


CASES = {
    "sgd-mean": dict(optimizer="sgd", learning_rate=0.3),
    "sgd-sum": dict(optimizer="sgd", learning_rate=0.04, loss_form="sum"),
    "momentum": dict(optimizer="momentum", momentum=0.9, learning_rate=0.05),
    "nesterov-wd": dict(optimizer="nesterov", momentum=0.8, learning_rate=0.05, weight_decay=0.01),
    "adam": dict(optimizer="adam", learning_rate=0.01),
    "adam-beta1-sum-wd": dict(optimizer="adam", momentum=0.5, learning_rate=0.01, loss_form="sum",
                              weight_decay=0.1),
    "adam-beta-fields": dict(optimizer="adam", beta1=0.7, beta2=0.99, eps=1e-6, learning_rate=0.01,
                             weight_decay=0.05),
    "adamw": dict(optimizer="adamw", beta1=0.8, beta2=0.99, eps=1e-6, learning_rate=0.02, weight_decay=0.5,
                  schedule="warmup_linear_decay", warmup_steps=5, max_steps=30),
    "warmup-decay": dict(optimizer="momentum", momentum=0.9, learning_rate=0.1,
                         schedule="warmup_linear_decay", warmup_steps=5, max_steps=30),
    "warmup-cosine": dict(optimizer="nesterov", momentum=0.9, learning_rate=0.1, weight_decay=0.01,
                          schedule="warmup_cosine_decay", warmup_steps=6, max_steps=30),
    "warmup-constant": dict(optimizer="adamw", learning_rate=0.01, weight_decay=0.1,
                            schedule="warmup_constant", warmup_steps=10, max_steps=30),
    "drop-last": dict(optimizer="sgd", learning_rate=0.2, drop_last=True, batch_size=16),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_stacked_run_equals_independent_torch_optim_loops(case):
    workload = toy_workload()
    base = TrainConfig(**{"workload": "toy", "batch_size": 7, "target": None, "max_steps": 100,
                          **CASES[case]})
    copies = [(0, 1.0), (1, 0.5), (2, 2.0)]  # (seed, learning-rate multiplier)
    configs = [replace(base, seed=s, learning_rate=base.learning_rate * f) for s, f in copies]
    run = StackedRun(workload, configs, [0, 1, 2])
    assert run.advance(STEPS) == []
    for k, config in enumerate(configs):
        want = twin_parameters(workload, config, STEPS)
        for got, expected in zip(stacked_parameters(run, k), want, strict=True):
            torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["sgd-mean", "nesterov-wd", "adam-beta1-sum-wd", "adamw", "warmup-decay"])
def test_single_run_equals_independent_torch_optim_loop(case):
    workload = toy_workload()
    config = TrainConfig(**{"workload": "toy", "batch_size": 7, "target": None, "max_steps": 100, "seed": 3,
                            **CASES[case]})
    run = SingleRun(workload, config)
    run.advance(STEPS)
    for got, want in zip(run.model.parameters(), twin_parameters(workload, config, STEPS), strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=RTOL, atol=ATOL)


def test_adamw_is_not_adam_with_the_same_weight_decay():
    """The nearest wrong rule (coupled L2 decay, torch.optim.Adam) is told apart from AdamW's decoupled one
    at the tolerance the twin tests use; so is AdamW on the vmap path (not a plain MLP)."""
    for make_model in (make_toy_mlp, make_residual):
        workload = toy_workload(make_model)
        config = TrainConfig(workload="toy", batch_size=7, target=None, **CASES["adamw"])
        run = StackedRun(workload, [config], [0])
        run.advance(STEPS)
        got = stacked_parameters(run, 0)
        for a, b in zip(got, twin_parameters(workload, config, STEPS), strict=True):
            torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
        coupled = twin_parameters(workload, replace(config, optimizer="adam"), STEPS)
        assert not all(torch.allclose(a, b, rtol=RTOL, atol=ATOL) for a, b in zip(got, coupled, strict=True))


def test_adam_beta1_old_spelling_gives_the_same_numbers():
    """``momentum=0.6`` on Adam (the old spelling) and ``beta1=0.6`` run identically, stacked together."""
    workload = toy_workload()
    old = TrainConfig(workload="toy", batch_size=7, optimizer="adam", momentum=0.6, learning_rate=0.01,
                      target=None)
    new = replace(old, momentum=0.0, beta1=0.6)
    assert old.group_key() == new.group_key()
    run = StackedRun(workload, [old, new], [0, 1])
    run.advance(STEPS)
    for p in run.params:
        assert torch.equal(p[0], p[1])


@pytest.mark.parametrize(
    "make_model, loss",
    [(make_residual, "cross_entropy"), (make_linear, "mse")],
    ids=["vmap-path", "linear-mse"],
)
def test_other_models_equal_their_twins(make_model, loss):
    workload = toy_workload(make_model, loss)
    metric = "error" if loss == "cross_entropy" else "loss"
    configs = [TrainConfig(workload="toy", batch_size=5, learning_rate=lr, optimizer="momentum", momentum=0.9,
                           seed=s, target=None, target_metric=metric) for s, lr in [(0, 0.02), (1, 0.05)]]
    run = StackedRun(workload, configs, [0, 1])
    run.advance(STEPS)
    for k, config in enumerate(configs):
        want = twin_parameters(workload, config, STEPS)
        for got, expected in zip(stacked_parameters(run, k), want, strict=True):
            torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


def test_sum_form_with_base_lr_equals_mean_form_with_lr_times_m():
    workload, m, base_lr = toy_workload(), 10, 0.02  # m divides the 50 examples: no short last batch
    common = dict(workload="toy", batch_size=m, optimizer="momentum", momentum=0.9, target=None)
    summed = StackedRun(workload, [TrainConfig(loss_form="sum", learning_rate=base_lr, **common)], [0])
    mean = StackedRun(workload, [TrainConfig(loss_form="mean", learning_rate=base_lr * m, **common)], [0])
    summed.advance(STEPS)
    mean.advance(STEPS)
    for a, b in zip(summed.params, mean.params, strict=True):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


def test_plan_detection():
    assert mlp_plan(make_toy_mlp(0)) == ["flatten", "linear", "relu", "linear"]
    assert mlp_plan(make_linear(0)) == ["linear_nobias"]
    assert mlp_plan(make_residual(0)) is None
    assert stackable(make_residual(0))
    assert not stackable(nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4)))


def test_batched_and_sequential_strategies_agree():
    workload = toy_workload()
    configs = [TrainConfig(workload="toy", batch_size=4, learning_rate=lr, seed=s, target=0.3, max_steps=300,
                           target_metric="error") for lr in (0.01, 0.1, 0.5, 50.0) for s in (0, 1)]
    key = {("toy", (), 0, "cpu"): workload}
    stacked = run_trials(configs, strategy="batched", workloads=key)
    single = run_trials(configs, strategy="sequential", workloads=key)
    for a, b in zip(stacked, single, strict=True):
        assert (a.status, a.steps, a.stop_step) == (b.status, b.steps, b.stop_step)
        assert len(a.history) == len(b.history)
    assert {r.status for r in stacked} >= {"complete", "diverged"}


def test_batch_larger_than_training_set_is_an_input_error():
    workload = toy_workload(n_train=50)
    with pytest.raises(InputError, match=r"batch size 64 is larger than the training set \(50\)"):
        run_trials([TrainConfig(workload="toy", batch_size=64)], workloads={("toy", (), 0, "cpu"): workload})


def test_error_metric_on_regression_is_an_input_error():
    workload = toy_workload(make_linear, "mse")
    with pytest.raises(InputError, match="target_metric='loss'"):
        run_trials([TrainConfig(workload="toy", batch_size=4)], workloads={("toy", (), 0, "cpu"): workload})


def test_results_arrive_through_on_result_once_each():
    workload = toy_workload()
    configs = [TrainConfig(workload="toy", batch_size=4, learning_rate=lr, target=0.3, max_steps=100)
               for lr in (0.1, 1e4)]
    seen = []
    results = run_trials(configs, on_result=seen.append, workloads={("toy", (), 0, "cpu"): workload})
    assert sorted(r.config.learning_rate for r in seen) == [0.1, 1e4]
    assert [r.config for r in results] == configs


def test_registered_workload_by_name_with_options():
    """run_trials loads ``linreg`` through get_workload with the config's options and data seed."""
    configs = [TrainConfig(workload="linreg", workload_options={"dim": 5, "n_train": 200, "n_test": 100},
                           batch_size=8, learning_rate=lr, target_metric="loss", target=None, max_steps=30)
               for lr in (0.05, 0.1)]
    results = run_trials(configs)
    assert [r.status for r in results] == ["complete", "complete"]
    assert all(r.final_loss < r.history[0][2] for r in results)


def make_dropout_mlp(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 3))


def test_unstackable_models_run_one_at_a_time():
    workload = toy_workload(make_dropout_mlp)
    assert not stackable(workload.make_model(0))
    configs = [TrainConfig(workload="toy", batch_size=5, learning_rate=0.1, seed=s, target=None, max_steps=10)
               for s in (0, 1)]
    results = run_trials(configs, strategy="batched", workloads={("toy", (), 0, "cpu"): workload})
    assert [r.status for r in results] == ["complete", "complete"]
