"""Five ways to estimate the gradient noise scale B_simple, compared at the same point of a real run.

At a checkpoint (the model's current parameters, M measured examples), B_simple = tr(Sigma) / |G|^2
(``docs/claims.md``, claim noise-scale) is estimated by:

- ``exact``: per-example gradients of all M examples (torch.func): the population value, the reference;
- ``fast``: the same population value from per-example squared norms only (layer hooks);
- ``two-batch``: McCandlish et al. 2018, App. A: independent batches of ``small`` and ``batch_size``
  examples, unbiased estimates of |G|^2 and tr(Sigma) from their gradient norms;
- ``micro-batch``: one batch of ``batch_size`` split into ``micro_batches`` accumulation micro-batches;
  small = a micro-batch, big = the whole batch (each micro-batch is a uniform subset: unbiased);
- ``consecutive``: what some training frameworks log: small = this step's batch gradient, big = the mean
  of the gradients of the last ``window`` training steps, taken as one batch of ``window * batch_size``.
  The parameters move between those steps (SGD with learning rate ``lr``), so the big "batch" is not a
  batch at one point: the estimate is biased, and the bias grows with the learning rate and the window.

Each stochastic estimator is drawn ``draws`` times (independent batches; for ``consecutive`` each draw
restarts from the checkpoint). Numerators and denominators are averaged separately over draws and B_simple
is their ratio; its interval is a percentile bootstrap over draws. ``ratio_to_exact`` divides by the
exact population value, and ``covers_exact`` says whether the interval contains it (for the two
population estimators, whether they agree with the exact value to 1e-6).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from batchscale.empirical.gradients import (
    batch_gradient,
    check_batch_size,
    gradient_statistics,
    minibatch_variance_factor,
    ratio_interval,
    two_batch_estimates,
)
from batchscale.errors import require

ESTIMATORS: tuple[str, ...] = ("exact", "fast", "two-batch", "micro-batch", "consecutive")
N_BOOT = 1000


@dataclass(frozen=True)
class EstimatorOptions:
    """Settings of the comparison (see the module docstring); ``lr`` is the consecutive steps' rate."""

    batch_size: int = 64
    small: int = 8
    micro_batches: int = 4
    window: int = 8
    lr: float = 0.1
    draws: int = 40
    seed: int = 0
    estimators: tuple[str, ...] = ESTIMATORS

    def check(self, population: int) -> None:
        """InputError on settings that cannot be drawn from ``population`` examples."""
        unknown = [e for e in self.estimators if e not in ESTIMATORS]
        require(not unknown, f"unknown estimator {unknown[0] if unknown else ''!r}; "
                f"expected some of {', '.join(ESTIMATORS)}")
        check_batch_size(self.batch_size, population)
        require(1 <= self.small < self.batch_size,
                f"the small batch ({self.small}) must be in 1..{self.batch_size - 1} (below --batch-size)")
        require(self.micro_batches >= 2 and self.batch_size % self.micro_batches == 0,
                f"--micro-batches must be >= 2 and divide the batch size {self.batch_size}, "
                f"got {self.micro_batches}")
        require(self.window >= 2, f"--window must be >= 2, got {self.window}")
        require(math.isfinite(self.lr) and self.lr > 0, f"the learning rate must be positive, got {self.lr}")
        require(self.draws >= 2, f"need at least 2 draws, got {self.draws}")


def _sq(v: torch.Tensor) -> float:
    return float(v.double().pow(2).sum())


def _batch(population: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randperm(population, generator=generator)[:size].to(device)  # without replacement


def two_batch_draw(model: nn.Module, loss_fn: Callable, x, y, opts: EstimatorOptions,
                   generator: torch.Generator) -> tuple[float, float]:
    """(|G|^2, tr Sigma) from one independent small and one big batch."""
    m = int(x.shape[0])
    sq = [_sq(batch_gradient(model, loss_fn, x[i], y[i]))
          for i in (_batch(m, b, generator, x.device) for b in (opts.small, opts.batch_size))]
    c = [minibatch_variance_factor(b, m, "without") for b in (opts.small, opts.batch_size)]
    return two_batch_estimates(sq[0], sq[1], c[0], c[1])


def micro_batch_draw(model: nn.Module, loss_fn: Callable, x, y, opts: EstimatorOptions,
                     generator: torch.Generator) -> tuple[float, float]:
    """(|G|^2, tr Sigma): one batch, each of its k micro-batches against the whole, averaged over k."""
    m, k = int(x.shape[0]), opts.micro_batches
    idx = _batch(m, opts.batch_size, generator, x.device)
    micro = [batch_gradient(model, loss_fn, x[part], y[part]) for part in idx.chunk(k)]  # k x (P,)
    big = torch.stack(micro).mean(0)  # the accumulated step gradient (equal micro-batches)
    c_small = minibatch_variance_factor(opts.batch_size // k, m, "without")
    c_big = minibatch_variance_factor(opts.batch_size, m, "without")
    estimates = [two_batch_estimates(_sq(g), _sq(big), c_small, c_big) for g in micro]
    g2, tr = np.mean(estimates, axis=0)
    return float(g2), float(tr)


def consecutive_draw(model: nn.Module, loss_fn: Callable, x, y, opts: EstimatorOptions,
                     generator: torch.Generator) -> tuple[float, float]:
    """(|G|^2, tr Sigma) as a training framework logs them: ``window`` SGD steps from the checkpoint (on a
    copy), small = the last step's batch gradient, big = the mean of the window's batch gradients."""
    m = int(x.shape[0])
    runner = copy.deepcopy(model)
    params = [p for p in runner.parameters() if p.requires_grad]
    grads = []
    for _ in range(opts.window):
        idx = _batch(m, opts.batch_size, generator, x.device)
        g = batch_gradient(runner, loss_fn, x[idx], y[idx])  # (P,) at the current (moving) parameters
        grads.append(g)
        with torch.no_grad():
            for p, part in zip(params, g.split([p.numel() for p in params]), strict=True):
                p.sub_(opts.lr * part.view_as(p))
    c_small = minibatch_variance_factor(opts.batch_size, m, "without")
    c_big = c_small / opts.window  # the mean of `window` independent batches, as if at one point
    return two_batch_estimates(_sq(grads[-1]), _sq(torch.stack(grads).mean(0)), c_small, c_big)


DRAWS: dict[str, Callable[..., tuple[float, float]]] = {
    "two-batch": two_batch_draw,
    "micro-batch": micro_batch_draw,
    "consecutive": consecutive_draw,
}


def compare_estimators(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
                       opts: EstimatorOptions) -> list[dict[str, Any]]:
    """One row per estimator at the model's current parameters (see the module docstring)."""
    population = int(x.shape[0])
    opts.check(population)
    exact = gradient_statistics(model, loss_fn, x, y, method="exact", seed=opts.seed)
    reference = exact.b_simple
    rows = []
    for name in opts.estimators:
        if name in ("exact", "fast"):
            stats = exact if name == "exact" else gradient_statistics(model, loss_fn, x, y, method="fast",
                                                                      seed=opts.seed)
            g2, tr, value = stats.grad_norm_sq, stats.trace_cov, stats.b_simple
            low = high = value  # population values over all M examples: no sampling error
            n_draws = 0
        else:
            generator = torch.Generator().manual_seed(opts.seed + 7919 * ESTIMATORS.index(name))
            draws = np.array([DRAWS[name](model, loss_fn, x, y, opts, generator) for _ in range(opts.draws)])
            g2, tr = (float(v) for v in draws.mean(0))
            value = tr / g2 if g2 > 0 else math.inf
            low, high = ratio_interval(draws, np.random.default_rng(opts.seed), n_boot=N_BOOT)
            n_draws = opts.draws
        rows.append({
            "estimator": name,
            "b_simple": value,
            "ci_low": low,
            "ci_high": high,
            "exact_b_simple": reference,
            "ratio_to_exact": value / reference if reference > 0 else math.nan,
            "covers_exact": bool(low <= reference <= high) if n_draws else math.isclose(value, reference,
                                                                                        rel_tol=1e-6),
            "grad_norm_sq": g2,
            "trace_cov": tr,
            "draws": n_draws,
        })
    return rows





def estimators_along_training(setup: Any, training: Any, opts: EstimatorOptions, *, every: int | None = None,
                              progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """:func:`compare_estimators` at the checkpoints of :func:`batchscale.empirical.measure.
    measure_along_training` (at the end of ``training``, or every ``every`` steps); rows carry ``step``."""
    from batchscale.empirical.measure import measure_along_training

    training.check(setup.workload.n_train)
    opts.check(setup.population)

    def at(point: Any) -> list[dict[str, Any]]:
        if progress is not None:
            progress(f"  step {point.step}: {len(opts.estimators)} estimators, {opts.draws} draws each")
        rows = compare_estimators(setup.model, setup.loss_fn, setup.x, setup.y, opts)
        return [{"step": point.step, **row} for row in rows]

    kwargs = {} if progress is None else {"progress": progress}
    measured = measure_along_training(setup, training, at, every=every, **kwargs)
    out = []
    for point, rows in measured:
        out.extend(rows or [{"step": point.step, "estimator": None, "status": point.status}])
    return out

__all__ = ["ESTIMATORS", "EstimatorOptions", "compare_estimators", "estimators_along_training"]
