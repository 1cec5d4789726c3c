"""k micro-batches vs one batch: the same update, and the memory each micro-batch needs
(:func:`accumulation`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from batchscale.empirical.gradients import (
    LossFn,
    check_batch_size,
    draw_batch,
    flat_grad,
)
from batchscale.empirical.update_stats.checks import FLOAT_RTOL, FORMS, T, _check_common
from batchscale.errors import require


@contextmanager
def saved_tensor_meter(model: nn.Module) -> Iterator[dict[str, int]]:
    """Count the bytes autograd saves for backward (activations), excluding the model's parameters.

    Yields a dict whose ``"bytes"`` is the total size of the distinct tensors packed while the context
    is open. All of them are alive together until the backward pass, so this is the activation memory
    one forward pass holds: on CPU it is the measurable, allocator-independent part of peak memory.
    """
    params = {(p.data_ptr(), p.numel()) for p in model.parameters()}
    seen: set[tuple[int, int]] = set()
    meter = {"bytes": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.data_ptr(), t.numel())
        if key not in params and key not in seen:
            seen.add(key)
            meter["bytes"] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield meter


def batch_dependent_layers(model: nn.Module) -> list[str]:
    """Layers whose output for one example depends on the rest of the batch or on random draws in the
    current mode: batch norm and Dropout in training mode. Without them the accumulation identity holds
    by construction (the gradient is linear in the per-example losses)."""
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    return [name for name, m in model.named_modules() if isinstance(m, kinds) and m.training]


@dataclass(frozen=True)
class AccumulationResult:
    """Accumulated update over k micro-batches vs the one-batch update, and the memory per micro-batch.

    ``peak_bytes`` is the allocation peak of one micro-batch's forward and backward measured by torch's
    profiler (:func:`micro_batch_peak_bytes`: activations, temporaries, the gradient it adds), the main
    memory figure; ``saved_bytes`` the bytes autograd saves for that backward (activations only: a lower
    bound). ``by_construction``: the model has no batch-dependent layer, so the identity holds
    for any weights and the row only shows float rounding.
    """

    form: str
    batch_size: int
    micro_batch: int
    max_abs_diff: float
    tolerance: float
    update_max_abs: float
    saved_bytes: int
    cuda_peak_bytes: int | None
    peak_bytes: int | None = None
    by_construction: bool = True

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    @property
    def verdict(self) -> str:
        if self.by_construction:
            return "holds_by_construction" if self.passed else "fail"
        return "pass" if self.passed else "fail"

    def as_row(self) -> dict[str, object]:
        return {
            "form": self.form,
            "m": self.batch_size,
            "micro_batch": self.micro_batch,
            "k": self.batch_size // self.micro_batch,
            "predicted": 0.0,
            "measured": self.max_abs_diff,
            "stderr": 0.0,  # deterministic: the same batch, the same float operations every time
            "tolerance": self.tolerance,
            "tolerance_kind": "float rounding",
            "pass": "yes" if self.passed else "no",
            "verdict": self.verdict,
            "peak_MiB": None if self.peak_bytes is None else self.peak_bytes / 2**20,
            "saved_MiB": self.saved_bytes / 2**20,
            "cuda_peak_MiB": None if self.cuda_peak_bytes is None else self.cuda_peak_bytes / 2**20,
        }


def micro_batch_peak_bytes(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *, scale: int, form: str
) -> int:
    """Allocation peak of one micro-batch's forward and backward (``x``, ``y``), accumulating into gradient
    buffers that already exist (as every micro-batch after the first does), above the level at its start,
    measured by :func:`allocation_peak_bytes`. ``scale`` is m, the divisor of the mean form."""
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)

    def step() -> None:
        losses = loss_fn(model(x), y)  # (b,)
        (losses.sum() / scale if form == "mean" else losses.sum()).backward()

    _, peak = allocation_peak_bytes(step)
    model.zero_grad(set_to_none=True)
    return peak


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 points to /dev/null inside: the profiler's native library writes a trace line
    at every start and stop there, which would bury the progress lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def allocation_peak_bytes(run: Callable[[], T]) -> tuple[T, int]:
    """``run()`` under torch's profiler (``profile_memory=True``, CPU): its result and the peak of the
    bytes allocated while it ran, above the level at its start (the running sum of the profiler's
    allocation and free records in time order)."""
    from torch.profiler import ProfilerActivity, profile

    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = run()
    changes = [
        (e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
        for e in prof.events()
        if e.name == "[memory]" or e.self_cpu_memory_usage != 0
    ]
    level = peak = 0
    for _, change in sorted(changes, key=lambda c: c[0]):
        level += change
        peak = max(peak, level)
    return result, int(peak)


def accumulated_update(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    micro_batch: int,
    lr: float,
    form: str,
) -> tuple[torch.Tensor, int, int | None]:
    r"""SGD update from k = m/``micro_batch`` micro-batches whose gradients are accumulated.

    Mean form: each micro-batch contributes :math:`\frac1m \sum_{i\in b} l_i` (divided by the full batch
    size m, not by the micro-batch size); sum form: :math:`\sum_{i\in b} l_i`. The update is
    :math:`-\eta` times the accumulated gradient. Returns (update (P,), peak autograd-saved bytes of one
    micro-batch, CUDA peak bytes or None on CPU).
    """
    m = int(x.shape[0])
    require(
        micro_batch >= 1 and m % micro_batch == 0,
        f"micro-batch size {micro_batch} must divide the batch size {m}",
    )
    on_cuda = x.device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(x.device)
    model.zero_grad(set_to_none=True)
    saved = 0
    for start in range(0, m, micro_batch):
        with saved_tensor_meter(model) as meter:
            losses = loss_fn(model(x[start : start + micro_batch]), y[start : start + micro_batch])
        (losses.sum() / m if form == "mean" else losses.sum()).backward()
        saved = max(saved, meter["bytes"])
    update = -lr * flat_grad(model).detach().clone()
    model.zero_grad(set_to_none=True)
    return update, saved, int(torch.cuda.max_memory_allocated(x.device)) if on_cuda else None


def check_micro_batches(batch_size: int, micro_batches: Sequence[int]) -> None:
    """InputError unless every micro-batch size is >= 1 and divides ``batch_size``."""
    for mb in micro_batches:
        require(
            mb >= 1 and batch_size % mb == 0, f"micro-batch size {mb} must divide the batch size {batch_size}"
        )


def accumulation(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    micro_batches: Sequence[int],
    lr: float,
    forms: Sequence[str] = FORMS,
    seed: int = 0,
) -> list[AccumulationResult]:
    """Accumulation identity: the update from k micro-batches equals the one-batch update (float rounding).

    One batch of ``batch_size`` examples is drawn without replacement; for each micro-batch size the
    accumulated update is compared with the single-pass update (micro-batch = m). Tolerance: float
    relative precision (1e-5 float32, 1e-12 float64) times the largest update component. On a model
    without batch-dependent layers (:func:`batch_dependent_layers`) the identity holds by construction:
    such rows say ``holds_by_construction`` (a failure would be a bug in the accumulation code). Memory:
    the profiler's allocation peak (:func:`allocation_peak_bytes`) and autograd's saved bytes.
    """
    population = int(x.shape[0])
    _check_common(lr, 2, forms, ["without"])
    check_batch_size(batch_size, population)
    idx = draw_batch(population, batch_size, "without", torch.Generator().manual_seed(seed)).to(x.device)
    xb, yb = x[idx], y[idx]
    check_micro_batches(batch_size, micro_batches)
    rtol = FLOAT_RTOL.get(x.dtype, 1e-5)
    by_construction = not batch_dependent_layers(model)
    results = []
    for form in forms:
        reference, _, _ = accumulated_update(model, loss_fn, xb, yb, micro_batch=batch_size, lr=lr, form=form)
        scale = float(reference.abs().max())
        for mb in micro_batches:
            update, saved, cuda_peak = accumulated_update(
                model, loss_fn, xb, yb, micro_batch=mb, lr=lr, form=form
            )
            peak = micro_batch_peak_bytes(model, loss_fn, xb[:mb], yb[:mb], scale=batch_size, form=form)
            diff = float((update - reference).abs().max())
            results.append(
                AccumulationResult(
                    form, batch_size, mb, diff, rtol * scale, scale, saved, cuda_peak, peak, by_construction
                )
            )
    return results
