"""Memory of one training step vs the batch size, measured: bytes per example and the fixed part.

The allocation peak of one (micro-)batch's forward and backward, accumulating into existing gradient
buffers, is measured by torch's profiler (:func:`batchscale.empirical.update_stats.accumulate.
micro_batch_peak_bytes`, the figure of the accumulation check) at several batch sizes b and bounded by a
line, peak(b) <= a + c b: c, the memory per example, is the slope between the two largest sizes (what
large batches pay per example); a = max_i (peak_i - c b_i), so the line lies on or above every measured
peak (small batches carry fixed temporaries that make the peaks bend). A step
also holds the parameters, their gradients and the optimizer's state: :func:`state_bytes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from batchscale.errors import require

# optimizer state in parameter-sized buffers: SGD none, momentum one, Adam two
STATE_BUFFERS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class MemoryFit:
    """peak(b) <= ``intercept_bytes`` + ``bytes_per_example`` x b over the measured ``batch_sizes``
    (``peaks``; see the module docstring), ``max_residual``: the largest (fitted - measured) relative to
    the measured peak;
    ``state_bytes``: parameters + gradients + optimizer state (:func:`state_bytes`)."""

    batch_sizes: tuple[int, ...]
    peaks: tuple[int, ...]
    bytes_per_example: float
    intercept_bytes: float
    max_residual: float
    state_bytes: int

    def step_bytes(self, micro_batch: int) -> float:
        """Memory of one step with micro-batches of ``micro_batch``: state + a + c b."""
        return self.state_bytes + max(self.intercept_bytes, 0.0) + self.bytes_per_example * micro_batch

    def largest_micro_batch(self, device_bytes: float) -> int:
        """The largest b with :meth:`step_bytes` (b) <= ``device_bytes`` (0 when not even b = 1 fits)."""
        room = device_bytes - self.state_bytes - max(self.intercept_bytes, 0.0)
        if room < self.bytes_per_example:
            return 0
        return int(math.floor(room / max(self.bytes_per_example, 1e-12)))

    def to_dict(self) -> dict[str, object]:
        return {"batch_sizes": list(self.batch_sizes), "peak_bytes": list(self.peaks),
                "bytes_per_example": self.bytes_per_example, "intercept_bytes": self.intercept_bytes,
                "max_residual": self.max_residual, "state_bytes": self.state_bytes}


def state_bytes(model: nn.Module, optimizer: str = "sgd") -> int:
    """Bytes of the parameters, their gradients and the optimizer's state: P_bytes (2 + buffers)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return int(params * (2 + STATE_BUFFERS.get(optimizer, 2)))


def upper_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(c, a): c the slope through the two largest x, a = max_i (y_i - c x_i), so a + c x >= y at
    every point (x ascending, >= 2 points)."""
    slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), 0.0)
    return float(slope), float(max(y - slope * x for x, y in zip(xs, ys, strict=True)))


def memory_per_example(
    model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, batch_sizes: Sequence[int],
    optimizer: str = "sgd",
) -> MemoryFit:
    """Allocation peak of one forward and backward at each batch size (the first b examples of x, y),
    fitted by a line (see the module docstring). Needs >= 2 distinct batch sizes <= len(x)."""
    from batchscale.empirical.update_stats.accumulate import micro_batch_peak_bytes

    sizes = tuple(sorted({int(b) for b in batch_sizes}))
    require(len(sizes) >= 2, f"memory per example needs >= 2 batch sizes, got {list(sizes)}")
    require(sizes[-1] <= x.shape[0], f"batch size {sizes[-1]} exceeds the {x.shape[0]} examples")
    peaks = tuple(micro_batch_peak_bytes(model, loss_fn, x[:b], y[:b], scale=b, form="mean") for b in sizes)
    slope, intercept = upper_line(sizes, peaks)
    residual = max((intercept + slope * b - p) / max(p, 1) for b, p in zip(sizes, peaks, strict=True))
    return MemoryFit(sizes, peaks, slope, intercept, residual, state_bytes(model, optimizer))


def accumulation_plan(fit: MemoryFit, batch_size: int, device_bytes: float) -> dict[str, object]:
    """Whether a step of ``batch_size`` fits in ``device_bytes``; if not, the fewest micro-batches k
    (a divisor of the batch size) whose micro-batch B/k fits: ``{"fits", "micro_batches",
    "micro_batch", "step_bytes"}`` (``micro_batches`` None when not even one example fits)."""
    largest = fit.largest_micro_batch(device_bytes)
    if largest >= batch_size:
        return {"batch_size": batch_size, "fits": True, "micro_batches": 1, "micro_batch": batch_size,
                "step_bytes": fit.step_bytes(batch_size)}
    k = next((k for k in range(1, batch_size + 1) if batch_size % k == 0 and batch_size // k <= largest),
             None)
    micro = None if k is None else batch_size // k
    return {"batch_size": batch_size, "fits": False, "micro_batches": k, "micro_batch": micro,
            "step_bytes": fit.step_bytes(batch_size)}


__all__ = ["MemoryFit", "accumulation_plan", "upper_line", "memory_per_example", "state_bytes"]
