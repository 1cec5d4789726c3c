r"""``staleness``: one step on a batch of n*m vs n steps of m on a real network, as the learning rate shrinks.

Mean form: n small steps :math:`w_j = w_{j-1} - \eta\, g_j(w_{j-1})` on disjoint batches of m, against one
step :math:`w_{big} = w_0 - n\eta\, g_{B}(w_0)` on their union B (n*m examples, the linearly scaled
learning rate). Theory (:mod:`batchscale.theory.staleness`): the gap is second order in eta,

.. math:: w_n - w_{big} = \eta^2 \sum_{k<j} H_j g_k + O(\eta^3),

with :math:`H_j`, :math:`g_k` the batch-mean Hessians and gradients at :math:`w_0` (the leading term of
:func:`batchscale.theory.staleness.staleness_terms`; :func:`leading_term` evaluates it with
Hessian-vector products, so it needs no P x P matrix). Measured: both trajectories trained in float64;
the log-log slope of |w_n - w_big| over a 16x range of eta (predicted 2), and the gap's component along
the predicted term at the smallest eta (predicted 1). The range is eta = c / (n lambda_max) for
c = 0.004 ... 0.00025, with lambda_max the training loss's measured top Hessian eigenvalue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from batchscale.verify.common import build_workload, log_log_slope, mean_and_stderr, workload_choice
from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, make_row

CLAIM = "staleness"
DEFAULT_WORKLOAD = "teacher-student"
QUICK_OPTIONS = {"dim": 8, "student_hidden": 16, "n_train": 256, "n_test": 64}
STEPS = 4  # n small steps
BATCH = {True: 16, False: 64}  # m per --quick / full run
SCALES = (0.004, 0.002, 0.001, 0.0005, 0.00025)  # eta * n * lambda_max: a 16x range, all << 1
SEEDS = 3


class StalenessRun(NamedTuple):
    """One seed: the learning rates, the measured gaps (vectors) and the predicted second-order terms."""

    lrs: list[float]
    gaps: list[Any]  # (P,) float64 tensors: w_n - w_big at each lr
    leading: Any  # (P,): sum_{k<j} H_j g_k at w_0 (times lr^2 at each lr)
    lambda_max: float
    without_h: Any  # (P,): sum_{k<j} g_k, the same sum with every H_j dropped (a planted wrong term)


def flat_params(model: Any) -> Any:
    from torch.nn.utils import parameters_to_vector

    return parameters_to_vector(model.parameters()).detach().clone()


def set_params(model: Any, vector: Any) -> None:
    from torch.nn.utils import vector_to_parameters

    vector_to_parameters(vector, model.parameters())


def leading_term(model: Any, loss_fn: Callable, batches: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    r""":math:`\sum_{j}H_j \sum_{k<j} g_k` at the model's parameters (mean-loss batch Hessians and
    gradients): :func:`batchscale.theory.staleness.leading_term` without its :math:`\eta^2`, one
    Hessian-vector product per batch instead of explicit matrices. Also :math:`\sum_j\sum_{k<j} g_k`."""
    import torch

    from batchscale.empirical.curvature import hessian_vector_product
    from batchscale.empirical.gradients import batch_gradient

    grads = [batch_gradient(model, loss_fn, x, y) for x, y in batches]  # n x (P,)
    total = torch.zeros_like(grads[0])
    without_h = torch.zeros_like(grads[0])
    earlier = torch.zeros_like(grads[0])  # sum_{k<j} g_k
    for (x, y), g in zip(batches, grads, strict=True):
        if earlier.abs().sum() > 0:
            total += hessian_vector_product(model, loss_fn, x, y, earlier)
            without_h += earlier
        earlier = earlier + g
    return total, without_h


def gap(model: Any, loss_fn: Callable, batches: list[tuple[Any, Any]], lr: float) -> Any:
    """w_n - w_big: n SGD steps of ``lr`` on the batches in order, minus one step of n*lr on their union."""
    import torch

    from batchscale.empirical.gradients import batch_gradient

    start = flat_params(model)
    x_all = torch.cat([x for x, _ in batches])
    y_all = torch.cat([y for _, y in batches])
    big = start - len(batches) * lr * batch_gradient(model, loss_fn, x_all, y_all)
    w = start
    for x, y in batches:
        w = w - lr * batch_gradient(model, loss_fn, x, y)
        set_params(model, w)
    set_params(model, start)
    return w - big


def measure_seed(workload: Any, seed: int, batch_size: int, steps: int = STEPS) -> StalenessRun:
    """One seed: model and disjoint batches drawn from ``seed``, float64 throughout."""
    import torch

    from batchscale.empirical.curvature import sharpness

    model = workload.model(seed).double()
    loss_fn = workload.per_example_loss
    x, y = workload.x_train.double(), workload.y_train
    y = y.double() if y.is_floating_point() else y
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    batches = [(x[idx], y[idx]) for idx in order[: steps * batch_size].split(batch_size)]
    lam = sharpness(model, loss_fn, x, y, method="power", iters=50, tol=1e-3, seed=seed).eigenvalues[0]
    lrs = [c / (steps * lam) for c in SCALES]
    gaps = [gap(model, loss_fn, batches, lr) for lr in lrs]
    leading, without_h = leading_term(model, loss_fn, batches)
    return StalenessRun(lrs, gaps, leading, lam, without_h)


def slope(run: StalenessRun) -> float:
    return log_log_slope(run.lrs, [float(g.norm()) for g in run.gaps])


def along_leading(run: StalenessRun, predicted: Callable[[StalenessRun, float], Any]) -> float:
    """The gap's coefficient along the predicted term at the smallest learning rate: gap.D / |D|^2."""
    lr, g = run.lrs[-1], run.gaps[-1]
    d = predicted(run, lr)
    return float(g @ d / (d @ d))


def predicted_term(run: StalenessRun, lr: float) -> Any:
    """eta^2 sum_{k<j} H_j g_k."""
    return lr**2 * run.leading


def staleness_rows(
    runs: list[StalenessRun],
    config: dict[str, Any],
    workload: str,
    predicted_slope: float = 2.0,
    predicted: Callable[[StalenessRun, float], Any] = predicted_term,
) -> list[Row]:
    slopes = [slope(r) for r in runs]
    coefficients = [along_leading(r, predicted) for r in runs]
    s_mean, s_err = mean_and_stderr(slopes)
    c_mean, c_err = mean_and_stderr(coefficients)
    cfg = {
        **config,
        "lrs": [r.lrs for r in runs],
        "lambda_max": [r.lambda_max for r in runs],
        "slopes": slopes,
        "coefficients": coefficients,
    }
    n = len(runs)
    return [
        make_row(
            CLAIM,
            "gap_slope",
            workload,
            predicted_slope,
            s_mean,
            stderr=s_err,
            n_seeds=n,
            config=cfg,
            note="d log|w_n - w_big| / d log eta over eta*n*lambda_max = 0.004 .. 0.00025",
        ),
        make_row(
            CLAIM,
            "gap_over_leading",
            workload,
            1.0,
            c_mean,
            stderr=c_err,
            n_seeds=n,
            config=cfg,
            note="gap . D / |D|^2 with D = eta^2 sum_{k<j} H_j g_k at the smallest eta",
        ),
    ]


def run(opts: Options) -> list[Row]:
    name, options = workload_choice(opts, DEFAULT_WORKLOAD, QUICK_OPTIONS)
    workload = build_workload(opts, name, options)
    batch_size = BATCH[opts.quick]
    seeds = opts.seed_list(SEEDS)
    config = opts.config(
        CLAIM,
        name,
        workload_options=workload.options,
        steps=STEPS,
        batch_size=batch_size,
        seeds=seeds,
        scales=list(SCALES),
    )
    runs = []
    for seed in seeds:
        opts.say(f"staleness: seed {seed}: {STEPS} steps of {batch_size} vs one of {STEPS * batch_size}")
        runs.append(measure_seed(workload, seed, batch_size))
    return staleness_rows(runs, config, name)
