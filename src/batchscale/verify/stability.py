r"""``stability``: the largest stable learning rate vs batch size on least squares, theory vs training.

Theory (:func:`batchscale.theory.stability.dataset_mean_square_steps`): for the fixed dataset of the
``linreg`` workload, batches of m drawn with replacement, the second moment of the error evolves by an
exact linear map; its spectral radius crosses 1 at the largest mean-square-stable step, which grows about
linearly in m and saturates at the full-batch bound :math:`2/\lambda_{max}` (Ma, Bassily & Belkin 2018).
The theory's loss is :math:`(w^\top x - y)^2/2` and the workload's is :math:`(w^\top x - y)^2`, so the
workload's learning rate is half the theory's step.

Measured: many SGD runs (batches with replacement, mean loss, weights from zero) on a geometric grid of
learning rates around the prediction; a run diverges when its training loss exceeds 1e4 times the loss
at the start (or is not finite) within the step budget. Each seed's boundary is the geometric mean of
its largest stable and smallest divergent learning rate; the row reports their geometric mean over
seeds with a 95% interval (the seeds' spread combined with half the grid's spacing).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from batchscale.verify.common import build_workload, mean_and_stderr, workload_choice
from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, make_row, not_built

CLAIM = "stability"
WORKLOAD = "linreg"
QUICK_OPTIONS = {"dim": 10, "n_train": 256, "n_test": 16, "noise_std": 0.0}
FULL_OPTIONS = {"dim": 20, "n_train": 1024, "n_test": 16, "noise_std": 0.0}
BATCH_SIZES = {True: (1, 8, 64), False: (1, 2, 4, 8, 16, 32, 64, 128, 256)}
STEPS = {True: 400, False: 3000}
GRID = tuple(2.0 ** (k / 8) for k in range(-8, 11))  # 0.5x .. 2.4x the prediction, 9% apart
GRID_HALF_STEP = math.log(2.0) / 16  # half the log-spacing of GRID
BLOW_UP = 1e4
SEEDS = {True: 5, False: 8}


def predicted_max_lr(inputs: Any, batch_size: int) -> float:
    """The workload's largest mean-square-stable learning rate: half the theory's step (loss without 1/2)."""
    from batchscale.theory.stability import dataset_mean_square_steps

    return dataset_mean_square_steps(inputs, batch_size).max_stable_step / 2


def full_batch_lr(inputs: Any, batch_size: int) -> float:
    """2/lambda_max of the workload's loss at every m (the full-batch bound): a planted wrong prediction."""
    import numpy as np

    x = np.asarray(inputs, dtype=float)
    return 2.0 / (2.0 * float(np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]))


def diverges(workload: Any, batch_size: int, lrs: list[float], seeds: list[int], steps: int) -> Any:
    """(L, K) booleans: does the run with learning rate lrs[l] and batch seed seeds[k] blow up?

    All L x K runs train together: weights W (L, K, d) from zero; batch k draws ``batch_size`` examples
    with replacement from the seeded generator of seed k (shared by every learning rate).
    """
    import torch

    x, y = workload.x_train.double(), workload.y_train.double()  # (M, d), (M, 1)
    n, d = x.shape
    lr = torch.tensor(lrs, dtype=torch.float64)[:, None, None]  # (L, 1, 1)
    w = torch.zeros(len(lrs), len(seeds), d, dtype=torch.float64, requires_grad=True)  # (L, K, d)
    generators = [torch.Generator().manual_seed(s) for s in seeds]

    def losses(idx: Any) -> Any:  # idx (K, B) -> mean loss per run (L, K)
        out = torch.einsum("kbd,lkd->lkb", x[idx], w)  # (L, K, B)
        target = y[idx][None, :, :, 0].expand_as(out)  # (L, K, B)
        per = workload.per_example_loss(out.reshape(-1, 1), target.reshape(-1, 1))
        return per.reshape(out.shape).mean(-1)

    with torch.no_grad():
        start = losses(torch.arange(n).expand(len(seeds), n))  # (L, K): full training loss at w = 0
    for _ in range(steps):
        idx = torch.stack([torch.randint(n, (batch_size,), generator=g) for g in generators])  # (K, B)
        (grad,) = torch.autograd.grad(losses(idx).sum(), w)
        with torch.no_grad():
            w -= lr * grad
            w.nan_to_num_(nan=math.inf)
    with torch.no_grad():
        final = losses(torch.arange(n).expand(len(seeds), n))
    return ~(final <= BLOW_UP * start)  # nan and inf count as divergence


def boundaries(lrs: list[float], diverged: Any) -> list[float]:
    """Per seed: the geometric mean of the largest stable lr below its first divergent lr and that lr
    (nan when the grid does not bracket the boundary)."""
    out = []
    for k in range(diverged.shape[1]):
        column = diverged[:, k].tolist()
        first = next((i for i, bad in enumerate(column) if bad), None)
        out.append(math.nan if first is None or first == 0 else math.sqrt(lrs[first - 1] * lrs[first]))
    return out


class StabilityPoint(NamedTuple):
    batch_size: int
    predicted: float  # predicted_max_lr at this batch size
    boundaries: list[float]  # measured, per seed


def stability_rows(
    inputs: Any,
    points: list[StabilityPoint],
    config: dict[str, Any],
    predict: Callable[[Any, int], float] | None = None,
) -> list[Row]:
    """One row per batch size; ``predict(inputs, m)`` replaces the stored prediction (planted tests)."""
    rows = []
    for p in points:
        predicted = p.predicted if predict is None else predict(inputs, p.batch_size)
        logs = [math.log(b) for b in p.boundaries if math.isfinite(b)]
        cfg = {**config, "batch_size": p.batch_size, "boundaries": p.boundaries}
        note = f"m={p.batch_size}: {len(logs)} of {len(p.boundaries)} seeds bracketed by the grid"
        if len(logs) < 2:
            rows.append(
                make_row(
                    CLAIM,
                    "max_stable_lr",
                    WORKLOAD,
                    predicted,
                    math.nan,
                    n_seeds=len(logs),
                    config=cfg,
                    note=note,
                )
            )
            continue
        mean, stderr = mean_and_stderr(logs)
        half = math.hypot(1.96 * stderr, GRID_HALF_STEP)  # seeds' spread and the grid's resolution
        ci = (math.exp(mean - half), math.exp(mean + half))
        rows.append(
            make_row(
                CLAIM,
                "max_stable_lr",
                WORKLOAD,
                predicted,
                math.exp(mean),
                ci=ci,
                n_seeds=len(logs),
                config=cfg,
                note=note,
            )
        )
    return rows


def run(opts: Options) -> list[Row]:
    name, options = workload_choice(opts, WORKLOAD, QUICK_OPTIONS)
    if name != WORKLOAD:
        needs = "the local quadratic model with measured sharpness and noise, for networks"
        return [not_built(CLAIM, "max_stable_lr", name, needs, opts.config(CLAIM, name))]
    if not opts.quick and not opts.workload_options:
        options = dict(FULL_OPTIONS)
    workload = build_workload(opts, name, options, data_seed=opts.seed)
    inputs = workload.x_train.double().cpu().numpy()
    seeds = opts.seed_list(SEEDS[opts.quick])
    steps = STEPS[opts.quick]
    config = opts.config(
        CLAIM,
        name,
        workload_options=workload.options,
        seeds=seeds,
        steps=steps,
        blow_up=BLOW_UP,
        grid=[GRID[0], GRID[-1], len(GRID)],
    )
    points = []
    for m in BATCH_SIZES[opts.quick]:
        centre = predicted_max_lr(inputs, m)
        lrs = [centre * f for f in GRID]
        opts.say(f"stability: m={m}: {len(lrs)} learning rates x {len(seeds)} seeds, {steps} steps")
        points.append(StabilityPoint(m, centre, boundaries(lrs, diverges(workload, m, lrs, seeds, steps))))
    return stability_rows(inputs, points, config)
