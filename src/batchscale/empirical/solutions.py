"""Solutions trained to one training-loss target, and their sharpness (Keskar et al. 2017,
arXiv 1609.04836): mean-form SGD with the engine's plain loop (:class:`batchscale.empirical.train.SingleRun`)
until the mean loss over the whole training set is at or below the target at the end of an epoch, then the
top Hessian eigenvalue of that loss by Lanczos (:func:`batchscale.empirical.curvature.sharpness`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from batchscale.empirical.curvature import sharpness
from batchscale.empirical.trials import TrainConfig
from batchscale.empirical.workloads import Workload
from batchscale.errors import require
from batchscale.vocabulary import steps_per_epoch


@dataclass(frozen=True)
class Solution:
    """One run: ``status`` is ``reached`` (training loss <= target after ``steps`` updates), ``missed``
    (not within ``max_steps``) or ``diverged``; ``sharpness`` is lambda_max of the mean training loss at
    the end (nan unless reached), with the Lanczos residual and Hessian-vector products it took."""

    batch_size: int
    learning_rate: float
    seed: int
    status: str
    steps: int
    train_loss: float
    sharpness: float
    residual: float
    hvps: int


def full_train_loss(model: torch.nn.Module, workload: Workload, chunk: int = 4096) -> float:
    """Mean per-example loss over the whole training set."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, workload.n_train, chunk):
            x, y = workload.x_train[start : start + chunk], workload.y_train[start : start + chunk]
            total += float(workload.per_example_loss(model(x), y).sum())
    return total / workload.n_train


def train_to_loss(
    workload: Workload, batch_size: int, learning_rate: float, seed: int, target: float, max_steps: int,
    *, tol: float = 1e-4,
) -> Solution:
    """Train the seeded model with batch ``batch_size`` and rate ``learning_rate`` (mean loss, batches
    reshuffled each epoch) until the full training loss is <= ``target`` at an epoch's end; measure its
    sharpness there."""
    from batchscale.empirical.train import SingleRun

    require(target > 0, f"target must be > 0, got {target}")
    require(max_steps >= 1, f"max_steps must be >= 1, got {max_steps}")
    config = TrainConfig(workload=workload.name, batch_size=batch_size, learning_rate=learning_rate,
                         optimizer="sgd", loss_form="mean", seed=seed, max_steps=max_steps, target=None,
                         target_metric="loss", eval_subset=1, device=str(workload.device))
    run = SingleRun(workload, config)
    epoch = steps_per_epoch(workload.n_train, batch_size, False)
    nan = math.nan
    loss = full_train_loss(run.model, workload)
    while run.step < max_steps and loss > target:
        if run.advance(min(run.step + epoch, max_steps)):
            return Solution(batch_size, learning_rate, seed, "diverged", run.step, nan, nan, nan, 0)
        loss = full_train_loss(run.model, workload)
        if not math.isfinite(loss):
            return Solution(batch_size, learning_rate, seed, "diverged", run.step, nan, nan, nan, 0)
    if loss > target:
        return Solution(batch_size, learning_rate, seed, "missed", run.step, loss, nan, nan, 0)
    x, y = workload.x_train, workload.y_train
    top = sharpness(run.model, workload.per_example_loss, x, y, tol=tol, seed=seed)
    return Solution(batch_size, learning_rate, seed, "reached", run.step, loss, top.top, top.residuals[0],
                    top.matvecs)
