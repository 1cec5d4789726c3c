"""The model of a measurement and its training: set-up, the engine's plain SGD loop with checkpoints,
shared choices."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from batchscale.empirical.gradients import (
    TwoBatchEMA,
    check_batch_size,
    flat_grad,
    sample_indices,
    two_batch_step_estimates,
)
from batchscale.errors import require
from batchscale.progress import counter

Progress = Callable[[str], None]


R = TypeVar("R")


def _quiet(message: str) -> None:
    """The default progress reporter: says nothing."""


@dataclass(frozen=True)
class Setup:
    """A built workload, its model (seeded initial point), and the examples (x, y) measured on.

    ``config`` is the resolved configuration reported beside every row.
    """

    workload: Any
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    config: dict[str, Any]

    @property
    def loss_fn(self) -> Callable:
        return self.workload.per_example_loss

    @property
    def population(self) -> int:
        """M, the number of examples measured on."""
        return int(self.x.shape[0])


def build_setup(
    workload: str,
    options: Mapping[str, Any],
    device: str,
    seed: int,
    sample: int | None,
    *,
    cap: int | None = None,
    **extra: Any,
) -> Setup:
    """Resolve the device, build the workload and its model (seed ``seed``), and keep ``sample`` seeded
    training examples (``sample=None``: all of them, or ``cap`` of them when there are more).

    ``extra`` joins the reported configuration.
    """
    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.workloads import get_workload

    resolved = resolve_device(device)
    wl = get_workload(workload, device=resolved, seed=seed, **dict(options))
    require(sample is None or sample >= 2, f"--sample must be >= 2, got {sample}")
    if sample is None and cap is not None and wl.n_train > cap:
        sample = cap
    idx = sample_indices(wl.n_train, sample, seed, wl.device) if sample is not None else None
    x, y = (wl.x_train, wl.y_train) if idx is None else (wl.x_train[idx], wl.y_train[idx])
    config = {"workload": workload, "options": wl.options, "seed": seed, "device": str(resolved), **extra}
    config["examples"] = int(x.shape[0])
    model = wl.model(seed)
    if stochastic_layers(model):
        config["measured_in"] = EVAL_MODE_NOTE
    return Setup(wl, model, x, y, config)


EVAL_MODE_NOTE = "eval mode (Dropout off; training uses it)"


def stochastic_layers(model: nn.Module) -> list[str]:
    """Names of the layers that draw random numbers in training mode (Dropout of every kind)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


@contextmanager
def measuring_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode while measuring a model with stochastic layers, so that every statistic is a function of
    the parameters (same seed, same numbers; per-example gradients defined); training mode is restored.
    Models without such layers are measured as they are."""
    if not stochastic_layers(model):
        yield
        return
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.train(training)


@dataclass(frozen=True)
class Training:
    """Plain SGD on the mean loss from the seeded initial point: ``steps`` updates of learning rate
    ``lr`` on batches of ``batch_size`` training examples (all of the workload's, not only the measured
    ones), batch order seeded by ``seed``."""

    steps: int = 0
    lr: float = 0.1
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.steps >= 0, f"training steps must be >= 0, got {self.steps}")
        require(math.isfinite(self.lr) and self.lr > 0, f"--train-lr must be positive, got {self.lr}")

    def check(self, n_train: int) -> None:
        """InputError on a batch larger than the training set."""
        check_batch_size(self.batch_size, n_train)


@dataclass(frozen=True)
class Checkpoint:
    """Where training stands: ``step`` updates done, the last minibatch loss, and the status.

    ``ema`` is the per-step two-batch estimator's state after ``step`` updates (None unless asked for).
    """

    step: int
    batch_loss: float
    status: str  # "ok" or "diverged"
    ema: TwoBatchEMA | None = None


@dataclass
class TwoBatchHook:
    """Per-step two-batch estimator, a :data:`~batchscale.empirical.train.GradientHook`.

    Big batch = the step's own batch (its gradient is the one the update uses), small batch = its first
    ``small`` examples (one extra backward pass of that many examples, at the same parameters), see
    :func:`~batchscale.empirical.gradients.two_batch_step_estimates`; the estimates of |G|^2 and
    tr(Sigma) enter separate exponential moving averages (:class:`TwoBatchEMA`). The step's gradient is
    put back in ``.grad`` afterwards, so the update is unchanged.
    """

    loss_fn: Callable
    x: torch.Tensor
    y: torch.Tensor
    small: int
    ema: TwoBatchEMA = field(default_factory=TwoBatchEMA)

    def __call__(self, model: nn.Module, idx: torch.Tensor, loss: torch.Tensor) -> None:
        if not math.isfinite(float(loss)):
            return  # the run is diverging: the engine stops after this step
        params = [p for p in model.parameters() if p.requires_grad]
        g = flat_grad(model).detach().clone()  # (P,): g_B at the current parameters
        population = int(self.x.shape[0])
        est = two_batch_step_estimates(
            model, self.loss_fn, self.x[idx], self.y[idx], g, small=self.small, population=population
        )
        self.ema = self.ema.update(*est)
        for p, part in zip(params, g.split([p.numel() for p in params]), strict=True):
            p.grad = part.view_as(p).clone()


def sgd_checkpoints(
    setup: Setup,
    training: Training,
    *,
    every: int,
    ema_small: int | None = None,
    ema_decay: float = 0.98,
) -> Iterator[Checkpoint]:
    """Train ``setup.model`` in place with the engine's plain loop; yield at step 0, every ``every``
    steps and at the end. A non-finite minibatch loss stops training with status "diverged".

    With ``ema_small``, every step also feeds the two-batch estimator (:class:`TwoBatchHook`).
    """
    from batchscale.empirical.train import SingleRun
    from batchscale.empirical.trials import TrainConfig

    wl = setup.workload
    training.check(wl.n_train)
    require(every >= 1, f"--every must be >= 1, got {every}")
    if ema_small is not None:
        require(
            1 <= ema_small < training.batch_size,
            f"the two-batch small batch ({ema_small}) must be in 1..{training.batch_size - 1}: a slice of "
            f"the training batch of {training.batch_size}",
        )
    require(0 <= ema_decay < 1, f"EMA decay must be in [0, 1), got {ema_decay}")
    hook = None
    if ema_small is not None:
        hook = TwoBatchHook(wl.per_example_loss, wl.x_train, wl.y_train, ema_small, TwoBatchEMA(ema_decay))
    config = TrainConfig(
        workload=str(setup.config.get("workload", wl.name)),
        batch_size=training.batch_size,
        learning_rate=training.lr,
        optimizer="sgd",
        seed=training.seed,
        max_steps=max(training.steps, 1),
        target_metric="loss",
        target=None,
        eval_subset=1,
        drop_last=True,
        device=str(wl.device),
    )
    run = SingleRun(wl, config, model=setup.model, on_gradient=hook)
    yield Checkpoint(0, math.nan, "ok", None if hook is None else hook.ema)
    for step in range(1, training.steps + 1):
        loss = run.train_step()
        if not math.isfinite(loss):
            yield Checkpoint(step, loss, "diverged", None if hook is None else hook.ema)
            return
        if step % every == 0 or step == training.steps:
            setup.model.zero_grad(set_to_none=True)
            yield Checkpoint(step, loss, "ok", None if hook is None else hook.ema)
    setup.model.zero_grad(set_to_none=True)


def measure_along_training(
    setup: Setup,
    training: Training,
    measure_at: Callable[[Checkpoint], Sequence[R]],
    *,
    every: int | None = None,
    ema_small: int | None = None,
    ema_decay: float = 0.98,
    progress: Progress = _quiet,
) -> list[tuple[Checkpoint, list[R]]]:
    """Train (:func:`sgd_checkpoints`) and call ``measure_at(checkpoint)`` on the model as it stands.

    ``every=None``: measure once, at the end of training; else at step 0, every ``every`` steps and at
    the end. A model with stochastic layers (Dropout) is measured in eval mode (:func:`measuring_mode`).
    A diverged run ends the list with ``(checkpoint, [])``. ``progress`` gets a counter of the training
    steps with an ETA (:func:`batchscale.progress.counter`), advanced every 10% of the run (or every
    ``every`` steps), and a line if the run diverges.
    """
    require(every is None or every >= 1, f"--every must be >= 1, got {every}")
    steps = training.steps
    out: list[tuple[Checkpoint, list[R]]] = []
    checkpoints = sgd_checkpoints(
        setup,
        training,
        every=every if every is not None else max(1, steps // 10),
        ema_small=ema_small,
        ema_decay=ema_decay,
    )
    with counter(progress if steps else None, steps, unit="step", desc="train") as bar:
        for point in checkpoints:
            if steps and point.step:
                bar.set_postfix_str(f"batch loss {point.batch_loss:.4g}", refresh=False)
                bar.update(point.step - bar.n)
            if point.status != "ok":
                progress(f"  step {point.step}/{steps}: {point.status} (batch loss {point.batch_loss:.4g})")
                out.append((point, []))
                break
            if every is not None or point.step == steps:
                with measuring_mode(setup.model):
                    out.append((point, list(measure_at(point))))
    return out


def train_loss(setup: Setup) -> float:
    """Mean per-example loss over the measured examples."""
    with torch.no_grad():
        return float(setup.loss_fn(setup.model(setup.x), setup.y).mean())


def status_row(point: Checkpoint) -> dict[str, Any]:
    """The row of a checkpoint where training stopped (diverged)."""
    return {"step": point.step, "status": point.status}


def powers_of_two_up_to(limit: int) -> list[int]:
    """1, 2, 4, ... <= ``limit`` (the default batch sizes 1..M)."""
    return [1 << k for k in range(max(limit, 1).bit_length())]


def divisor_sizes(batch_size: int) -> list[int]:
    """The powers of two that divide ``batch_size``, and ``batch_size`` itself (the default micro-batches)."""
    require(batch_size >= 1, f"batch size must be >= 1, got {batch_size}")
    return sorted(
        {1 << k for k in range(batch_size.bit_length()) if batch_size % (1 << k) == 0} | {batch_size}
    )


def choices(value: str, allowed: Sequence[str]) -> list[str]:
    """``both`` -> every allowed value, else just ``value``."""
    return list(allowed) if value == "both" else [value]


def check_sizes(batch_sizes: Sequence[int], population: int) -> None:
    """Fail fast (before any training or statistics) on a batch size outside 1..M."""
    for m in batch_sizes:
        check_batch_size(m, population)
