"""One training run as data: its configuration (:class:`TrainConfig`) and its outcome (:class:`TrialResult`).

A *trial* is one training run of one workload with one batch size, learning rate, optimizer and seed.
Everything that determines its numbers is in :class:`TrainConfig`; :meth:`TrainConfig.trial_id` hashes
it, so a sweep store can tell at once whether a trial was already run. Running trials is the engine's
job (:func:`batchscale.empirical.engine.run_trials`); this module holds data only and imports no other
module of the engine.

This module imports no torch at import time, so stores and the CLI can use the types cheaply.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from batchscale.empirical.optimizers import REGISTRY, optimizer_rule
from batchscale.empirical.protocol import data_identity, protocol_identity
from batchscale.errors import InputError, require
from batchscale.vocabulary import LOSS_FORMS, check_choice

OPTIMIZERS: tuple[str, ...] = tuple(REGISTRY)
SCHEDULES: tuple[str, ...] = ("constant", "warmup_constant", "warmup_linear_decay", "warmup_cosine_decay")
TARGET_METRICS: tuple[str, ...] = ("error", "loss")
STATUSES: tuple[str, ...] = ("complete", "incomplete", "diverged", "pruned")


@dataclass(frozen=True)
class TrainConfig:
    """One training run; everything that determines its numbers.

    Attributes:
        workload: registry name or ``package.module:function`` (see :mod:`batchscale.empirical.workloads`).
        workload_options: sorted ``(key, value)`` pairs passed to ``get_workload`` (hashable).
        batch_size: examples per update, m.
        learning_rate: the learning rate eta (``loss_form="mean"``) or the base learning rate
            eta~ = eta / m (``loss_form="sum"``); the update is ``w -= eta * mean_i g_i`` or
            ``w -= eta~ * sum_i g_i``.
        optimizer: ``sgd`` | ``momentum`` (heavy ball) | ``nesterov`` | ``adam`` | ``adamw``, with
            torch.optim's update rules (``torch.optim.SGD`` with dampening 0; ``torch.optim.Adam``,
            ``torch.optim.AdamW``); one entry each in :mod:`batchscale.empirical.optimizers`.
        momentum: heavy-ball / Nesterov coefficient (must be > 0 for those two; ignored by ``sgd``).
            Older configs gave Adam's beta1 here (0 meaning 0.9); that still holds when ``beta1`` is None.
        beta1, beta2, eps: Adam's / AdamW's coefficients; None means torch's defaults 0.9, 0.999, 1e-8
            (other optimizers take none of them).
        loss_form: ``mean`` or ``sum`` of the per-example losses of the batch.
        schedule: ``constant``, or a linear warm-up over ``warmup_steps`` updates followed by a constant
            rate (``warmup_constant``), a linear decay to 0 at ``max_steps`` (``warmup_linear_decay``) or
            a cosine decay to 0 at ``max_steps`` (``warmup_cosine_decay``); see
            :func:`batchscale.empirical.train.lr_factor`.
        warmup_steps: length of the warm-up (not used by ``constant``).
        weight_decay: L2 coefficient added to the gradient (torch.optim's ``weight_decay``; decoupled
            for ``adamw``).
        seed: model initialisation and batch order.
        data_seed: passed to ``get_workload(seed=...)`` (data generation and train/test split).
        max_steps: the run stops after this many updates.
        target_metric: ``error`` (1 - accuracy) or ``loss`` (mean per-example loss) on the test set.
        target: the run is complete at the first step where the metric is <= target; None trains to
            ``max_steps`` and reports the final metrics (learning rate x batch size grids).
        eval_subset: evaluate on the first N test examples (None: all of them).
        drop_last: drop the last partial batch of each epoch (floor(M/m) steps per epoch).
        device: ``cpu`` or ``cuda[:i]``.
    """

    workload: str = "mnist1d-mlp"
    workload_options: tuple[tuple[str, Any], ...] = ()
    batch_size: int = 32
    learning_rate: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.0
    beta1: float | None = None
    beta2: float | None = None
    eps: float | None = None
    loss_form: str = "mean"
    schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    seed: int = 0
    data_seed: int = 0
    max_steps: int = 10_000
    target_metric: str = "error"
    target: float | None = 0.2
    eval_subset: int | None = None
    drop_last: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "workload_options", canonical_options(self.workload_options))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; ``workload_options`` becomes a plain dict."""
        d = asdict(self)
        d["workload_options"] = dict(self.workload_options)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an :class:`InputError`."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        require(not unknown, f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**dict(d))

    def provenance(self) -> dict[str, Any]:
        """What fixes this trial's numbers besides its fields: the training protocol (version and
        constants) and the data's identity (see :mod:`batchscale.empirical.protocol`)."""
        return {"protocol": protocol_identity(),
                "data": data_identity(self.workload, dict(self.workload_options))}

    def trial_id(self) -> str:
        """16 hex digits of the sha256 of the canonical JSON of :meth:`to_dict` and :meth:`provenance`,
        so results of another protocol or other data never share an id."""
        text = json.dumps({**self.to_dict(), "provenance": self.provenance()}, sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def validate(self) -> None:
        """Raise :class:`InputError` on a bad value (checks needing the data happen at load time)."""
        require(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        require(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            f"learning rate must be a positive number, got {self.learning_rate}",
        )
        rule = optimizer_rule(self.optimizer)
        check_choice("loss form", self.loss_form, LOSS_FORMS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("target metric", self.target_metric, TARGET_METRICS)
        require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            require(value is None or 0 <= value < 1, f"{name} must be in [0, 1), got {value}")
        require(
            self.eps is None or (math.isfinite(self.eps) and self.eps > 0),
            f"eps must be a positive number, got {self.eps}",
        )
        rule.validate(self)
        require(self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}")
        require(self.max_steps >= 1, f"max steps must be >= 1, got {self.max_steps}")
        require(
            0 <= self.warmup_steps < self.max_steps or self.schedule == "constant",
            f"warm-up steps must be in [0, max steps = {self.max_steps}), got {self.warmup_steps}",
        )
        require(
            self.target is None or math.isfinite(self.target),
            f"target must be a finite number or None, got {self.target}",
        )
        require(
            self.eval_subset is None or self.eval_subset >= 1,
            f"eval subset must be >= 1 or None, got {self.eval_subset}",
        )

    def group_key(self) -> tuple:
        """What trials must share to run as one stacked model: all but lr, momentum, beta1, wd and seed."""
        per_copy = {"learning_rate", "momentum", "beta1", "weight_decay", "seed"}
        return tuple((f.name, getattr(self, f.name)) for f in fields(self) if f.name not in per_copy)


def canonical_options(options: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """Workload options as sorted ``(key, value)`` pairs with hashable values: one spelling per config."""
    if isinstance(options, Mapping):
        options = options.items()
    return tuple(sorted((str(k), hashable(v)) for k, v in options))


def hashable(value: Any) -> Any:
    """Lists (as JSON gives them) become tuples, recursively, so a config can key a dict."""
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    return value


@dataclass(frozen=True)
class TrialResult:
    """The outcome of one trial.

    Attributes:
        config: the configuration that produced it.
        status: ``complete`` (target met, or ``target`` None and ``max_steps`` reached), ``incomplete``
            (``max_steps`` without the target), ``diverged`` (non-finite training loss, or test loss
            above ``DIVERGENCE_FACTOR`` times its initial value) or ``pruned`` (stopped far behind
            the best trial of its group).
        steps: the first step at which the target was met (``complete`` with a target only), resolved
            to within 1% of the first crossing after the last evaluation that missed it
            (see ``docs/training.md``).
        final_metric, final_loss: test metric and test loss at the last evaluation (None if diverged).
        best_metric: the best (lowest) metric over the evaluations.
        history: ``(step, metric, loss)`` at each evaluation, by step (non-finite values as None).
        wall_time: seconds from the start of its run to its end (trials of one stacked run share the
            machine, so their wall times overlap).
        device: where it ran.
        stop_step: the step at which training of this trial stopped.
    """

    config: TrainConfig
    status: str
    steps: int | None
    final_metric: float | None
    final_loss: float | None
    best_metric: float | None
    history: tuple[tuple[int, float | None, float | None], ...] = ()
    wall_time: float = 0.0
    device: str = "cpu"
    stop_step: int | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the config nested as a dict, history as lists)."""
        d = asdict(self)
        d["config"] = self.config.to_dict()
        d["history"] = [list(h) for h in self.history]
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialResult:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["config"] = TrainConfig.from_dict(d["config"])
        d["history"] = tuple(tuple(h) for h in d.get("history", ()))
        d["notes"] = tuple(d.get("notes", ()))
        return cls(**d)


__all__ = [
    "InputError",
    "OPTIMIZERS",
    "LOSS_FORMS",
    "SCHEDULES",
    "STATUSES",
    "TARGET_METRICS",
    "TrainConfig",
    "TrialResult",
]
