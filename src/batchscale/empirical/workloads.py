"""Workloads: a dataset, a model factory and a loss, under one name.

A :class:`Workload` is what every measurement and training routine takes. Built-in workloads are
registered by name (``mnist1d-mlp``, ``digits-mlp``, ``linreg``, ...); users pass their own as
``package.module:function``, a function returning a :class:`Workload`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

LossName = Literal["cross_entropy", "mse"]
LOSSES: tuple[str, ...] = ("cross_entropy", "mse")


@dataclass(frozen=True)
class Workload:
    """A dataset + model + loss.

    Attributes:
        name: registry name (or ``module:function`` for a user workload).
        make_model: ``seed -> torch.nn.Module``; the same seed gives the same initial weights.
        x_train, y_train, x_test, y_test: tensors (already on the workload's device). Targets are
            class indices (int64, shape (N,)) for ``cross_entropy`` and float (N, K) for ``mse``.
        loss: ``"cross_entropy"`` or ``"mse"``. Per-example losses follow torch's conventions:
            ``cross_entropy(out, y, reduction='none')`` and the mean over output dimensions of
            ``(out - y)**2`` for ``mse``. The minibatch loss is their mean (mean form) or sum (sum form).
        info: free-form facts about the workload (e.g. the exact Hessian of ``linreg``), JSON-able.
    """

    name: str
    make_model: Callable[[int], nn.Module]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    loss: LossName = "cross_entropy"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: torch.device | str) -> Workload:
        """The same workload with its tensors on ``device``."""
        device = torch.device(device)
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def per_example_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of each example, shape (N,)."""
        return per_example_loss(self.loss, output, target)

    def model(self, seed: int = 0) -> nn.Module:
        """A fresh model on the workload's device."""
        return self.make_model(seed).to(self.device)


def per_example_loss(loss: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example loss for ``loss`` in :data:`LOSSES`, shape (N,)."""
    if loss == "cross_entropy":
        return F.cross_entropy(output, target, reduction="none")
    if loss == "mse":
        return ((output - target) ** 2).reshape(output.shape[0], -1).mean(dim=1)
    raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
