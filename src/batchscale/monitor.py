"""A gradient-noise-scale monitor for any PyTorch training loop.

Attach it once, call :meth:`NoiseScaleMonitor.update` after the backward pass and before
``optimizer.step()``::

    monitor = NoiseScaleMonitor(model)                 # hooks on the model's layers
    for x, y in loader:
        loss = loss_fn(model(x), y)                    # mean over the batch
        optimizer.zero_grad()
        loss.backward()
        monitor.update()                               # reads the hooks and the gradients
        optimizer.step()
    print(monitor.b_simple, monitor.interval(), monitor.suggested_batch_size)

What it estimates: the simple noise scale :math:`B_\\mathrm{simple} = \\mathrm{tr}\\,\\Sigma / |G|^2`
(McCandlish et al. 2018, eq. 2.8; ``docs/claims.md``, claim noise-scale) along training, from unbiased
per-step estimates of :math:`|G|^2` and :math:`\\mathrm{tr}\\,\\Sigma` whose exponential averages are
kept *separately* and divided at the end (averaging the ratio would be biased).

Two estimators, chosen per model (``method="auto"``):

- ``per-example`` (fast path): when every layer with trainable parameters is Linear/Conv1d/Conv2d,
  forward hooks keep each layer's input and tensor hooks on its output give the per-example squared
  gradient norms :math:`s_i = |g_i|^2` with no per-example gradient formed. With the batch gradient
  :math:`g_B` (the ``.grad`` fields), :math:`E[\\bar s] = |G|^2 + \\mathrm{tr}\\,\\Sigma` and
  :math:`E|g_B|^2 = |G|^2 + \\mathrm{tr}\\,\\Sigma / B`, so
  :math:`\\widehat{\\mathrm{tr}\\,\\Sigma} = \\frac{B}{B-1}(\\bar s - |g_B|^2)` and
  :math:`\\widehat{|G|^2} = |g_B|^2 - \\widehat{\\mathrm{tr}\\,\\Sigma}/B`.
- ``micro-batch`` (two-batch estimator, McCandlish et al. 2018, App. A): for any model trained with
  gradient accumulation over k >= 2 micro-batches, a post-accumulate hook on every parameter sees each
  micro-batch's gradient; the small batch is a micro-batch (b examples), the big batch is the whole
  step (B examples), and :func:`batchscale.empirical.gradients.two_batch_estimates` is unbiased for each
  micro-batch; the step's estimate averages them.

Both assume the batch is a uniform draw from a population much larger than B (with replacement); pass
``population=M`` to apply the finite-population correction of sampling without replacement. The user's
loss must be the *mean* over all examples of the step (``reduction="mean"``; with accumulation, each
micro-batch's mean loss divided by k) or their *sum* (``reduction="sum"``).
"""

from __future__ import annotations

import csv
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from batchscale.empirical.gradients import (
    FAST_LAYERS,
    _as_positions,
    _check_fast_supported,
    _weight_sq_norms,
    b_simple,
    minibatch_variance_factor,
    population_moments,
    ratio_interval,
    two_batch_estimates,
)
from batchscale.errors import InputError, require

METHODS = ("auto", "per-example", "micro-batch")
REDUCTIONS = ("mean", "sum")


class ScalarWriter(Protocol):
    """What :class:`NoiseScaleMonitor` needs of a TensorBoard-style writer (``SummaryWriter`` has it)."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> Any: ...


@dataclass(frozen=True)
class StepEstimate:
    """One update's unbiased estimates and the running (bias-corrected, averaged) noise scale.

    ``grad_norm_sq`` and ``trace_cov`` are this step's unbiased estimates of :math:`|G|^2` and
    :math:`\\mathrm{tr}\\,\\Sigma` (per example, for the gradient of the mean loss); ``b_simple`` is the ratio
    of their exponential averages up to this step (its interval: :meth:`NoiseScaleMonitor.interval`, on
    demand, since a bootstrap every step would cost more than the estimate).
    """

    step: int
    batch_size: int
    method: str
    grad_norm_sq: float
    trace_cov: float
    b_simple: float

    def as_row(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "batch_size": self.batch_size,
            "method": self.method,
            "grad_norm_sq": self.grad_norm_sq,
            "trace_cov": self.trace_cov,
            "b_simple": self.b_simple,
        }


class _PerExampleNorms:
    """Hooks that sum the per-example squared gradient norms of every forward pass since the last reset.

    Only :math:`\\sum_i s_i` is needed (the estimators use the mean :math:`\\bar s`), so each layer adds one
    scalar per pass and no per-example vector outlives its hook. A Linear layer that sees one vector per
    example has per-example gradient :math:`d_i a_i^T` (and :math:`d_i` for the bias), so
    :math:`\\sum_i |g_i|^2 = \\sum_i |d_i|^2 (|a_i|^2 + 1)`: :math:`|a_i|^2` is taken in the forward hook and
    :math:`|d_i|^2` in the output's gradient hook while each tensor is still in cache (three tensor ops per
    layer and step); convolutions and sequence inputs use the per-position form of
    :func:`batchscale.empirical.gradients.per_example`. The sums stay tensors until ``update()`` reads them.
    """

    def __init__(self, model: nn.Module):
        _check_fast_supported(model)
        layers = [
            module
            for module in model.modules()
            if isinstance(module, FAST_LAYERS)
            and any(p.requires_grad for p in module.parameters(recurse=False))
        ]
        self.n_layers = len(layers)
        # one [sums, sizes] per forward pass: sums, the layers' 0-d tensors; sizes[i], layer i's N once its
        # gradient arrived (None: not run in this pass, False: run, no gradient yet)
        self.passes: list[list] = []
        self.active = True  # off on the steps the monitor skips (``every``): the hooks return at once
        self.handles = [
            layer.register_forward_hook(self._forward_hook(i, layer)) for i, layer in enumerate(layers)
        ]

    def _forward_hook(self, i: int, layer: nn.Module) -> Callable:
        outer = isinstance(layer, nn.Linear) and layer.weight.requires_grad  # the |d|^2 |a|^2 identity
        weight = layer.weight.requires_grad
        bias = layer.bias is not None and layer.bias.requires_grad

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if not self.active or not output.requires_grad:
                return  # a skipped step, or an evaluation pass (no backward follows)
            passes = self.passes
            if not passes or passes[-1][1][i] is not None:
                passes.append([[], [None] * self.n_layers])  # a new forward pass (or micro-batch) starts
            sums, sizes = passes[-1]
            sizes[i] = False
            a = inputs[0].detach()
            if outer and a.dim() == 2:
                a_sq = torch.linalg.vecdot(a, a)  # (N,)
                if bias:
                    a_sq += 1

                def grad_hook(d: torch.Tensor) -> None:
                    sums.append(torch.dot(torch.linalg.vecdot(d, d), a_sq))  # sum_i |d_i|^2 (|a_i|^2 + 1)
                    sizes[i] = d.shape[0]
            else:

                def grad_hook(d: torch.Tensor) -> None:
                    a3, d3 = _as_positions(module, a, d.detach())  # (N, T, D_in), (N, T, D_out)
                    if weight:
                        sums.append(_weight_sq_norms(a3, d3).sum())
                    if bias:
                        sums.append(d3.sum(1).pow(2).sum())  # grad b_i = sum_t d_it
                    sizes[i] = d.shape[0]

            output.register_hook(grad_hook)

        return hook

    def take(self) -> tuple[torch.Tensor, int]:
        """The sum over the examples of the raw per-example squared norms (a 0-d float64 tensor) and the
        number of examples, over all passes since the last call; then reset."""
        passes, self.passes = self.passes, []
        require(bool(passes), "NoiseScaleMonitor.update() found no forward pass since the last update")
        sums, n = [], 0
        for part, sizes in passes:
            if all(s is None or s is False for s in sizes):
                continue  # a forward pass with no backward (e.g. an evaluation with gradients enabled)
            require(
                all(sizes),
                "NoiseScaleMonitor: a layer ran more than once per forward pass or got no gradient; "
                "use method='micro-batch' with gradient accumulation for such models",
            )
            n += sizes[0]
            sums.extend(part)
        require(n > 0, "NoiseScaleMonitor.update() found no backward pass since the last update")
        return torch.stack(sums).double().sum(), n

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class _MicroBatchGrads:
    """Post-accumulate hooks: the squared norm of each micro-batch's own contribution to ``.grad``."""

    def __init__(self, model: nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        require(bool(self.params), "the model has no trainable parameters")
        self.previous = [None] * len(self.params)  # .grad after the last micro-batch (None: zero)
        self.pending = [0.0] * len(self.params)
        self.seen = [0] * len(self.params)
        self.micro_sq: list[float] = []  # |contribution of micro-batch j|^2, one entry per micro-batch
        self.active = True
        self.handles = [
            p.register_post_accumulate_grad_hook(self._hook(i)) for i, p in enumerate(self.params)
        ]

    def _hook(self, i: int) -> Callable:
        def hook(p: torch.Tensor) -> None:
            if not self.active:
                return
            grad = p.grad.detach()
            before = self.previous[i]
            delta = grad if before is None else grad - before
            self.previous[i] = grad.clone()
            self.pending[i] += float(delta.double().pow(2).sum())
            self.seen[i] += 1
            if all(s == self.seen[0] for s in self.seen) and self.seen[0] > len(self.micro_sq):
                self.micro_sq.append(sum(self.pending))
                self.pending = [0.0] * len(self.params)

        return hook

    def take(self) -> list[float]:
        out, self.micro_sq = self.micro_sq, []
        self.previous = [None] * len(self.params)
        self.pending, self.seen = [0.0] * len(self.params), [0] * len(self.params)
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class NoiseScaleMonitor:
    """Estimate the gradient noise scale B_simple inside any training loop (see the module docstring).

    Args:
        model: the ``nn.Module`` being trained (hooks are attached now; :meth:`close` removes them).
        method: ``auto`` (``per-example`` when every parameterised layer is Linear/Conv1d/Conv2d, else
            ``micro-batch``), ``per-example`` or ``micro-batch``.
        reduction: how the user's loss combines the examples of a step: ``mean`` or ``sum``.
        decay: exponential-average decay d of the numerator and denominator (bias-corrected).
        population: M, the number of training examples, for the finite-population correction (None:
            a population much larger than the batch).
        window: measured steps kept for the interval of :meth:`interval`.
        every: measure every ``every``-th step only (steps 0, every, 2 every, ...): the hooks cost a
            fixed time per layer and step, so on small models ``every=10`` cuts the overhead about tenfold.
        log: called with each :class:`StepEstimate` (e.g. ``print`` or a list's ``append``).
        csv_path: also append every estimate as a row to this CSV file.
        writer: a TensorBoard-style writer (``add_scalar``); gets ``noise_scale/b_simple``,
            ``noise_scale/grad_norm_sq`` and ``noise_scale/trace_cov``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        method: str = "auto",
        reduction: str = "mean",
        decay: float = 0.95,
        population: int | None = None,
        window: int = 50,
        every: int = 1,
        log: Callable[[StepEstimate], Any] | None = None,
        csv_path: str | Path | None = None,
        writer: ScalarWriter | None = None,
        seed: int = 0,
    ):
        require(method in METHODS, f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        require(reduction in REDUCTIONS, f"unknown reduction {reduction!r}; expected mean or sum")
        require(0 <= decay < 1, f"decay must be in [0, 1), got {decay}")
        require(window >= 2, f"window must be >= 2, got {window}")
        require(isinstance(every, int) and every >= 1, f"every must be a positive integer, got {every}")
        require(population is None or population >= 2, f"population must be >= 2, got {population}")
        for name, module in model.named_modules():
            require(
                not isinstance(module, nn.modules.batchnorm._BatchNorm),
                f"layer {name!r} is {type(module).__name__}: it mixes the examples of a batch, so the "
                "gradient noise scale of independent examples is undefined (use GroupNorm or LayerNorm)",
            )
        if method == "auto":
            method = "per-example" if _fast_supported(model) else "micro-batch"
        self.method, self.reduction, self.decay, self.population = method, reduction, decay, population
        self.log, self.writer = log, writer
        self.csv_path = None if csv_path is None else Path(csv_path)
        self._norms = _PerExampleNorms(model) if method == "per-example" else None
        self._micro = _MicroBatchGrads(model) if method == "micro-batch" else None
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._avg = (0.0, 0.0)  # exponential averages of (|G|^2, tr Sigma)
        self._weight = 0.0
        self._recent: deque[tuple[float, float]] = deque(maxlen=window)
        self._rng = np.random.default_rng(seed)
        self.every = every
        self.step = 0  # training steps seen (update() calls)
        self.history: list[StepEstimate] = []

    # -- the one call per step ----------------------------------------------------------------------

    def update(
        self, loss: torch.Tensor | None = None, *, batch_size: int | None = None
    ) -> StepEstimate | None:
        """Read this step's hooks and gradients (after ``backward()``, before ``optimizer.step()``).

        With ``every = k`` only every k-th step is measured (steps 0, k, 2k, ...; the hooks sleep on the
        others, which cost almost nothing) and update() returns None on the skipped ones.

        ``loss`` is accepted for symmetry with training loops and is not used. ``batch_size`` is the
        number of examples of the step; the per-example path counts it, the micro-batch path needs it
        when the micro-batches are of unequal size (else it is k times the size of one micro-batch).
        """
        if self.step % self.every != 0:
            self._advance()
            return None
        grads = [p.grad for p in self._params]
        require(all(g is not None for g in grads), "NoiseScaleMonitor.update() needs gradients: call it "
                "after loss.backward() and before optimizer.zero_grad()/step()")
        g_sq = torch.stack(torch._foreach_norm(grads)).double().pow(2).sum()  # |sum of .grad|^2
        if self.method == "per-example":
            grad_norm_sq, trace_cov, batch = self._per_example(g_sq)
        else:
            grad_norm_sq, trace_cov, batch = self._micro_batch(float(g_sq), batch_size)
        return self._record(grad_norm_sq, trace_cov, batch)

    def _per_example(self, g_sq: torch.Tensor) -> tuple[float, float, int]:
        raw_sum, batch = self._norms.take()  # sum_i of the raw per-example squared norms, B
        require(batch >= 2, "the per-example estimator needs at least 2 examples per step")
        g_sq_raw, raw_total = torch.stack((g_sq, raw_sum)).tolist()  # the step's one read of the tensors
        # hooks see d(user loss)/dz: per-example gradients carry the loss's 1/B (mean) or 1 (sum)
        scale = float(batch) if self.reduction == "mean" else 1.0
        mean_sq_norm = raw_total * scale**2 / batch  # mean_i |g_i|^2
        mean_grad_sq = g_sq_raw * (scale / batch) ** 2  # |g_B|^2, g_B the mean of the g_i
        if self.population is None:
            trace = (mean_sq_norm - mean_grad_sq) * batch / (batch - 1)
            return mean_grad_sq - trace / batch, trace, batch
        require(batch <= self.population, f"batch of {batch} exceeds the population {self.population}")
        grad_norm_sq, trace = population_moments(mean_grad_sq, mean_sq_norm, batch, self.population)
        return grad_norm_sq, trace, batch

    def _micro_batch(self, g_sq_raw: float, batch_size: int | None) -> tuple[float, float, int]:
        micro = self._micro.take()
        k = len(micro)
        require(k >= 2, "the micro-batch estimator needs gradient accumulation over >= 2 micro-batches "
                "per step (or a model whose layers allow method='per-example')")
        require(batch_size is not None, "micro-batch needs update(batch_size=B), B the step's examples")
        require(batch_size >= k, f"batch_size {batch_size} is smaller than the {k} micro-batches")
        small = batch_size / k
        # the micro-batch's contribution is (b/B) g_b (mean) or b g_b (sum); the step's is g_B or B g_B
        to_small = (batch_size / small) ** 2 if self.reduction == "mean" else 1 / small**2
        to_big = 1.0 if self.reduction == "mean" else 1 / batch_size**2
        sampling = "with" if self.population is None else "without"
        c_small = minibatch_variance_factor(max(1, round(small)), self.population, sampling)
        c_big = minibatch_variance_factor(batch_size, self.population, sampling)
        estimates = [two_batch_estimates(s * to_small, g_sq_raw * to_big, c_small, c_big) for s in micro]
        grad_norm_sq, trace = np.mean(estimates, axis=0)
        return float(grad_norm_sq), float(trace), int(batch_size)

    def _record(self, grad_norm_sq: float, trace_cov: float, batch: int) -> StepEstimate:
        require(math.isfinite(grad_norm_sq) and math.isfinite(trace_cov),
                f"non-finite gradient statistics at step {self.step} (nan or inf loss?)")
        d = self.decay
        self._avg = (d * self._avg[0] + (1 - d) * grad_norm_sq, d * self._avg[1] + (1 - d) * trace_cov)
        self._weight = d * self._weight + (1 - d)
        self._recent.append((grad_norm_sq, trace_cov))
        estimate = StepEstimate(self.step, batch, self.method, grad_norm_sq, trace_cov, self.b_simple)
        self._advance()
        self.history.append(estimate)
        self._emit(estimate)
        return estimate

    def _advance(self) -> None:
        """Count the step; wake the hooks for the next one only when it is measured."""
        self.step += 1
        for part in (self._norms, self._micro):
            if part is not None:
                part.active = self.step % self.every == 0

    def _emit(self, estimate: StepEstimate) -> None:
        if self.log is not None:
            self.log(estimate)
        if self.writer is not None:
            for key in ("b_simple", "grad_norm_sq", "trace_cov"):
                self.writer.add_scalar(f"noise_scale/{key}", getattr(estimate, key), estimate.step)
        if self.csv_path is not None:
            row = estimate.as_row()
            new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
            with self.csv_path.open("a", newline="") as handle:
                out = csv.DictWriter(handle, fieldnames=list(row))
                if new:
                    out.writeheader()
                out.writerow(row)

    # -- what the user reads --------------------------------------------------------------------------

    @property
    def averages(self) -> tuple[float, float]:
        """Bias-corrected exponential averages (|G|^2, tr Sigma): each divided by 1 - d^t."""
        if self._weight == 0:
            return math.nan, math.nan
        g2, tr = self._avg
        return g2 / self._weight, tr / self._weight

    @property
    def b_simple(self) -> float:
        """tr Sigma / |G|^2 of the averages (inf while averaged |G|^2 <= 0; nan before any step)."""
        if self._weight == 0:
            return math.nan
        return b_simple(*self._avg)  # the bias corrections cancel

    def interval(self, level: float = 0.95, n_boot: int = 500) -> tuple[float, float]:
        """Percentile-bootstrap interval of B_simple over the last ``window`` steps' estimates.

        Resamples steps and takes the ratio of the resampled means of tr Sigma and |G|^2. The parameters
        move between the steps, so it measures the spread of the recent estimates, not a fixed point's
        uncertainty; (nan, nan) with fewer than 2 steps, inf bounds where resampled |G|^2 <= 0.
        """
        require(0 < level < 1, f"level must be in (0, 1), got {level}")
        if len(self._recent) < 2:
            return math.nan, math.nan
        return ratio_interval(np.array(self._recent), self._rng, level=level, n_boot=n_boot)

    @property
    def suggested_batch_size(self) -> int | None:
        """B_simple rounded to a power of two: the critical batch size it predicts (McCandlish et al. 2018
        find B_crit ~ B_noise ~ B_simple when the Hessian is well conditioned; ``docs/claims.md``,
        claim noise-scale). None while B_simple is not a positive finite number."""
        value = self.b_simple
        if not (math.isfinite(value) and value > 0):
            return None
        return int(2 ** max(0, round(math.log2(value))))

    def close(self) -> None:
        """Remove every hook from the model."""
        for part in (self._norms, self._micro):
            if part is not None:
                part.remove()

    def __enter__(self) -> NoiseScaleMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fast_supported(model: nn.Module) -> bool:
    try:
        _check_fast_supported(model)
    except InputError:
        return False
    return True


__all__ = ["NoiseScaleMonitor", "ScalarWriter", "StepEstimate"]
