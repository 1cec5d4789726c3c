"""``noise_scale(model, data)``: B_simple of any model on any data in one call (``batchscale.noise_scale``).

The notebook entry point to :func:`batchscale.empirical.gradients.gradient_statistics` and
:func:`~batchscale.empirical.gradients.two_batch_noise_scale`; see docs/api.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batchscale.errors import InputError, require

METHODS = ("auto", "exact", "fast", "two-batch")


@dataclass(frozen=True)
class NoiseScale:
    r"""B_simple = tr(Sigma) / |G|^2 of a model on M examples (McCandlish et al. 2018, eq. 2.8).

    ``grad_norm_sq`` is :math:`|G|^2` of the mean-loss gradient, ``trace_cov`` is :math:`\mathrm{tr}\,\Sigma`
    of the per-example gradients (population, divisor M), ``interval`` a 95% bootstrap interval of
    ``b_simple`` (over groups of examples for exact/fast, over draws for two-batch). ``method`` is the
    method that ran (``auto`` resolved), ``status`` ``ok``, ``undefined`` (an estimate of |G|^2 or
    tr Sigma is not positive) or ``exceeds dataset`` (B_simple > M).
    """

    b_simple: float
    interval: tuple[float, float]
    grad_norm_sq: float
    trace_cov: float
    method: str
    examples: int
    population: int
    status: str

    def rows(self) -> list[dict[str, Any]]:
        """One row with the columns of ``batchscale measure noise-scale --format json`` (no config)."""
        return [{
            "method": self.method, "examples": self.examples, "population": self.population,
            "grad_norm_sq": self.grad_norm_sq, "trace_cov": self.trace_cov, "b_simple": self.b_simple,
            "ci_low": self.interval[0], "ci_high": self.interval[1], "status": self.status,
        }]


def _per_example_loss(loss: Any) -> Callable:
    """A torch loss module with ``reduction`` (e.g. ``nn.CrossEntropyLoss()``) as a per-example loss
    (``reduction="none"``); any other callable is used as given."""
    import copy

    if hasattr(loss, "reduction") and getattr(loss, "reduction", None) != "none":
        loss = copy.copy(loss)
        loss.reduction = "none"
    return loss


def _resolve_data(model: Any, data: Any, loss: Any, device: str, seed: int, options: Mapping[str, Any]):
    """(model, per-example loss, x, y) from a workload name, a Workload or an (x, y) pair."""
    from batchscale.empirical.workloads import Workload, get_workload

    if isinstance(data, str):
        data = get_workload(data, device=device, seed=seed, **dict(options))
    elif options:
        raise InputError("workload_options apply to a workload given by name only")
    if isinstance(data, Workload):
        model = data.model(seed) if model is None else model
        return model, loss if loss is not None else data.per_example_loss, data.x_train, data.y_train
    require(
        isinstance(data, (tuple, list)) and len(data) == 2,
        f"data must be a workload name, a Workload or an (x, y) pair of tensors, got {type(data).__name__}",
    )
    require(model is not None, "model is required when data is an (x, y) pair")
    require(loss is not None, "loss is required when data is an (x, y) pair: a per-example loss "
            "loss(output, target) -> (N,) or a torch loss module such as nn.CrossEntropyLoss()")
    x, y = data
    require(len(x) == len(y), f"x and y hold different numbers of examples: {len(x)} and {len(y)}")
    return model, loss, x, y


def _check_per_example(model: Any, loss_fn: Callable, x: Any, y: Any) -> None:
    """InputError unless ``loss_fn`` returns one loss per example (shape (N,)) on two examples."""
    import torch

    with torch.no_grad():
        out = loss_fn(model(x[:2]), y[:2])
    require(
        tuple(out.shape) == (2,),
        f"the loss must return one loss per example (shape (N,)), got shape {tuple(out.shape)} on 2 "
        "examples: pass a per-example loss or a torch loss module (its reduction is set to 'none')",
    )


def noise_scale(
    model: Any = None,
    data: Any = "digits-mlp",
    *,
    loss: Any = None,
    method: str = "auto",
    sample: int | None = None,
    two_batch: tuple[int, int] = (8, 256),
    draws: int = 50,
    seed: int = 0,
    device: str = "cpu",
    workload_options: Mapping[str, Any] | None = None,
) -> NoiseScale:
    r"""B_simple = tr(Sigma)/|G|^2 of ``model`` at its current parameters on ``data``.

    ``data``: a workload name (``"digits-mlp"``, ``"module:function"``; built with ``workload_options``
    and data seed ``seed``), a :class:`~batchscale.empirical.Workload`, or an ``(x, y)`` pair of tensors
    (then ``model`` and ``loss`` are required). ``model`` None: the workload's model with seed ``seed``.
    ``loss``: per-example ``loss(output, target) -> (N,)`` or a torch loss module (its ``reduction`` is set
    to ``"none"`` on a copy); default: the workload's. ``method``: ``exact`` (torch.func per-example
    gradients), ``fast`` (per-example squared norms from hooks; Linear/Conv layers), ``two-batch`` (gradient
    norms at the batch sizes ``two_batch``, ``draws`` pairs), or ``auto`` (fast when every parameterised
    layer supports it, else exact). ``sample``: measure on this many seeded examples instead of all.
    Models with Dropout are measured in eval mode (training mode is restored).
    """
    from batchscale.empirical.gradients import (
        _check_fast_supported,
        gradient_statistics,
        sample_indices,
        two_batch_noise_scale,
    )
    from batchscale.empirical.measure import measuring_mode, noise_scale_status

    require(method in METHODS, f"method must be one of {', '.join(METHODS)}, got {method!r}")
    model, loss_fn, x, y = _resolve_data(model, data, loss, device, seed, workload_options or {})
    loss_fn = _per_example_loss(loss_fn)
    if sample is not None:
        require(sample >= 2, f"sample must be >= 2, got {sample}")
        idx = sample_indices(int(x.shape[0]), sample, seed, x.device)
        x, y = x[idx], y[idx]
    population = int(x.shape[0])
    require(population >= 2, f"need at least 2 examples, got {population}")
    with measuring_mode(model):
        _check_per_example(model, loss_fn, x, y)
        if method == "auto":
            try:
                _check_fast_supported(model)
                method = "fast"
            except InputError:
                method = "exact"
        if method == "two-batch":
            small, big = two_batch
            require(1 <= small < big, f"two_batch must be (small, big), 1 <= small < big, got {two_batch}")
            est = two_batch_noise_scale(model, loss_fn, x, y, small=small, big=big, draws=draws, seed=seed)
            examples = big
        else:
            est = gradient_statistics(model, loss_fn, x, y, method=method, seed=seed)
            examples = est.n_examples
    row = est.as_row()
    return NoiseScale(
        b_simple=float(est.b_simple),
        interval=(float(est.b_simple_ci[0]), float(est.b_simple_ci[1])),
        grad_norm_sq=float(est.grad_norm_sq),
        trace_cov=float(est.trace_cov),
        method=method,
        examples=examples,
        population=population,
        status=noise_scale_status(row, population),
    )


__all__ = ["METHODS", "NoiseScale", "noise_scale"]
