"""Per-example gradients and their statistics: G, tr(Sigma), |G|^2, B_simple, and the two-batch estimator.

Conventions (used by every function here and in :mod:`~batchscale.empirical.curvature` and
:mod:`~batchscale.empirical.update_stats`):

- ``loss_fn(output, target)`` returns the per-example loss l_i, shape (N,) (``Workload.per_example_loss``).
- The per-example gradient is g_i = dl_i/dw: the gradient of that example's own loss, neither divided by
  the batch size nor multiplied by it.
- The full gradient is G = (1/M) sum_i g_i, the gradient of the *mean* loss over the M examples.
- Sigma = (1/M) sum_i (g_i - G)(g_i - G)^T is the population covariance over the M examples (divisor M),
  so tr(Sigma) = mean_i |g_i|^2 - |G|^2.
- A mean-form minibatch gradient is g_B = (1/m) sum_{i in B} g_i; the sum form's is m g_B.

Models must treat examples independently (no BatchNorm in training mode): per-example gradients are
not defined otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from batchscale.errors import InputError, require
from batchscale.vocabulary import SAMPLINGS as VOCABULARY_SAMPLINGS

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Method = Literal["exact", "fast"]
Sampling = Literal["with", "without"]
SAMPLINGS: tuple[str, ...] = VOCABULARY_SAMPLINGS[:2]  # a reshuffled batch is a uniform m-subset too

# Examples per pass when no chunk size is given, by method.
DEFAULT_CHUNK = {"exact": 256, "fast": 4096}
# Bootstrap over this many random groups of examples (the group sums are all that is kept in memory).
N_GROUPS = 32


# --------------------------------------------------------------------------------------------------
# parameters as one flat vector


def trainable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require gradients, by name, detached from the model."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def num_parameters(model: nn.Module) -> int:
    """P, the number of trainable scalars."""
    return sum(p.numel() for p in trainable_parameters(model).values())


def flatten_per_example(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """{name: (N, *shape)} -> (N, P), in the model's parameter order."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)


def unflatten(vector: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(P,) -> {name: tensor shaped like ``like[name]``}."""
    out, start = {}, 0
    for name, p in like.items():
        out[name] = vector[start : start + p.numel()].view_as(p)
        start += p.numel()
    return out


def flat_grad(model: nn.Module) -> torch.Tensor:
    """The model's ``.grad`` fields as one (P,) vector (zeros where a gradient is missing)."""
    parts = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
        for p in model.parameters()
        if p.requires_grad
    ]
    return torch.cat(parts)


def check_examples_independent(model: nn.Module) -> None:
    """InputError if a batch-norm layer is in training mode: it mixes the examples of a batch, so the
    per-example gradients and the minibatch identities E|g_B|^2 = |G|^2 + c(m) tr(Sigma) do not apply."""
    for name, module in model.named_modules():
        require(
            not (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training),
            f"layer {name!r} is {type(module).__name__} in training mode: it mixes the examples of a batch, "
            "so per-example gradient statistics are undefined (use a per-example normalisation such as "
            "GroupNorm; the built-in cifar10-resnet8 has it by default, -W norm=group)",
        )


# --------------------------------------------------------------------------------------------------
# batch and per-example gradients


def batch_gradient(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    r"""Gradient of the minibatch loss, one backward pass, as a (P,) vector.

    ``reduction="mean"``: :math:`g_B = \frac{1}{m}\sum_{i\in B} g_i`; ``"sum"``: :math:`\sum_{i\in B} g_i`.
    """
    require(reduction in ("mean", "sum"), f"unknown reduction {reduction!r}; expected mean or sum")
    model.zero_grad(set_to_none=True)
    losses = loss_fn(model(x), y)
    (losses.mean() if reduction == "mean" else losses.sum()).backward()
    g = flat_grad(model).detach().clone()
    model.zero_grad(set_to_none=True)
    return g


def _single_example_loss(model: nn.Module, loss_fn: LossFn, buffers: dict[str, torch.Tensor]):
    def loss_of(params, xi, yi):
        out = functional_call(model, (params, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0)).sum()

    return loss_of


def iter_per_example_gradients(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int = 256
) -> Iterator[torch.Tensor]:
    """Per-example gradients g_i = dl_i/dw, ``chunk_size`` examples at a time, each chunk (n, P).

    torch.func: ``vmap(grad(l_i))`` over the examples of a chunk with ``functional_call``; memory is
    bounded by ``chunk_size * P`` floats plus the chunk's activations.
    """
    require(chunk_size >= 1, f"chunk size must be >= 1, got {chunk_size}")
    check_examples_independent(model)
    params = trainable_parameters(model)
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    per_example = vmap(grad(_single_example_loss(model, loss_fn, buffers)), in_dims=(None, 0, 0))
    for start in range(0, x.shape[0], chunk_size):
        chunk = per_example(params, x[start : start + chunk_size], y[start : start + chunk_size])
        yield flatten_per_example(chunk)  # (n, P)


def per_example_gradients(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int = 256
) -> torch.Tensor:
    """All per-example gradients as one (N, P) tensor (mind the memory: N * P floats)."""
    return torch.cat(list(iter_per_example_gradients(model, loss_fn, x, y, chunk_size=chunk_size)))


# --------------------------------------------------------------------------------------------------
# fast path: per-example squared norms from activations and output gradients (hooks)

FAST_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _as_positions(module: nn.Module, a: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's input and output gradient as (N, T, D_in) and (N, T, D_out): grad W_i = sum_t d_it a_it^T.

    Linear: T = 1, or the flattened middle dimensions of a sequence input. Conv1d/Conv2d (groups=1, zero
    padding): a is unfolded into patches (``F.unfold``), T is the number of output positions.
    """
    if isinstance(module, nn.Linear):
        return a.reshape(a.shape[0], -1, a.shape[-1]), d.reshape(d.shape[0], -1, d.shape[-1])
    if isinstance(module, nn.Conv1d):
        a, d = a.unsqueeze(2), d.unsqueeze(2)
        kernel, dilation = (1, *module.kernel_size), (1, *module.dilation)
        padding, stride = (0, *module.padding), (1, *module.stride)
    else:
        kernel, dilation, padding, stride = module.kernel_size, module.dilation, module.padding, module.stride
    cols = F.unfold(a, kernel, dilation=dilation, padding=padding, stride=stride)  # (N, C_in k, T)
    return cols.transpose(1, 2), d.reshape(d.shape[0], d.shape[1], -1).transpose(1, 2)


def _weight_sq_norms(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """|sum_t d_t a_t^T|_F^2 per example for a (N, T, D_in), d (N, T, D_out).

    T = 1: |d a^T|^2 = |a|^2 |d|^2 (Goodfellow 2015). T > 1: the Gram-matrix trick (Li et al. 2022,
    "ghost clipping") |D^T A|_F^2 = <A A^T, D D^T>_F when T^2 < D_in D_out; else D^T A is formed.
    """
    n_pos, d_in, d_out = a.shape[1], a.shape[2], d.shape[2]
    if n_pos == 1:
        return a.pow(2).sum((1, 2)) * d.pow(2).sum((1, 2))
    if n_pos * n_pos < d_in * d_out:
        return (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(d, d.transpose(1, 2))).sum((1, 2))
    return torch.bmm(d.transpose(1, 2), a).pow(2).sum((1, 2))


def _blocks(t: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(N, T, D) -> (K, ceil(N/K) T, D): K contiguous blocks of examples, the last zero-padded."""
    size = math.ceil(t.shape[0] / n_groups)
    padded = F.pad(t, (0, 0, 0, 0, 0, size * n_groups - t.shape[0]))
    return padded.reshape(n_groups, size * t.shape[1], t.shape[2])


def block_counts(n: int, n_groups: int) -> np.ndarray:
    """How many of n examples fall in each of the K contiguous blocks used by the fast path."""
    size = math.ceil(n / n_groups)
    return np.clip(n - size * np.arange(n_groups), 0, size).astype(float)


def _check_fast_supported(model: nn.Module) -> None:
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        require(
            isinstance(module, FAST_LAYERS),
            f"the fast per-example norm path supports Linear/Conv1d/Conv2d layers only; "
            f"layer {name or 'model'!r} is {type(module).__name__} (use --method exact)",
        )
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            ok = module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str)
            require(ok, f"fast path: conv layer {name!r} needs groups=1 and numeric zero padding")


class _SqNormRecorder:
    """Forward hooks keep each layer's input; tensor hooks on its output add per-example |grad|^2 and,
    with ``n_groups``, the gradient summed over each of K contiguous blocks of examples."""

    def __init__(self, model: nn.Module, n_groups: int | None = None):
        _check_fast_supported(model)
        self.n_groups = n_groups
        self.sq_norms: torch.Tensor | None = None
        self.group_grads: dict[torch.nn.Parameter, torch.Tensor] = {}  # param -> (K, numel)
        self.calls: dict[str, int] = {}
        self.handles = [
            m.register_forward_hook(self._forward_hook(name))
            for name, m in model.named_modules()
            if isinstance(m, FAST_LAYERS) and any(p.requires_grad for p in m.parameters(recurse=False))
        ]

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            self.calls[name] = self.calls.get(name, 0) + 1
            require(self.calls[name] == 1, f"fast path: layer {name!r} is used twice in one forward pass")
            a = inputs[0].detach()
            output.register_hook(lambda d: self._add(module, a, d.detach()))

        return hook

    def _add(self, module: nn.Module, a: torch.Tensor, d: torch.Tensor) -> None:
        a, d = _as_positions(module, a, d)  # (N, T, D_in), (N, T, D_out)
        bias = module.bias if module.bias is not None and module.bias.requires_grad else None
        sq = _weight_sq_norms(a, d) if module.weight.requires_grad else torch.zeros_like(d[:, 0, 0])
        if bias is not None:
            sq = sq + d.sum(1).pow(2).sum(1)  # grad b_i = sum_t d_it
        self.sq_norms = sq if self.sq_norms is None else self.sq_norms + sq
        if self.n_groups is not None:
            a_k, d_k = _blocks(a, self.n_groups), _blocks(d, self.n_groups)  # (K, c T, D)
            if module.weight.requires_grad:
                self.group_grads[module.weight] = torch.bmm(d_k.transpose(1, 2), a_k).flatten(1)
            if bias is not None:
                self.group_grads[bias] = d_k.sum(1)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _hooked_backward(model: nn.Module, loss_fn: LossFn, x, y, n_groups: int | None) -> _SqNormRecorder:
    recorder = _SqNormRecorder(model, n_groups)
    try:
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).sum().backward()
    finally:
        recorder.remove()
    return recorder


def per_example_sq_norms(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-example squared gradient norms :math:`|g_i|^2` (N,) and the summed gradient :math:`\sum_i g_i`.

    One forward and one backward pass of the *sum* loss: the gradient reaching a layer's output is then
    :math:`\delta_i = \partial l_i/\partial z_i`, and for a Linear layer with input :math:`a_i`,
    :math:`|\nabla_W l_i|^2 = |a_i|^2 |\delta_i|^2` and :math:`|\nabla_b l_i|^2 = |\delta_i|^2`
    (Goodfellow 2015, "Efficient per-example gradient computations"). Sequence and conv inputs use the
    Gram-matrix trick (Li et al. 2022; Opacus ghost clipping). No per-example gradient is formed.
    """
    recorder = _hooked_backward(model, loss_fn, x, y, None)
    g_sum = flat_grad(model).detach().clone()
    model.zero_grad(set_to_none=True)
    assert recorder.sq_norms is not None
    return recorder.sq_norms.detach(), g_sum


def per_example_sq_norms_and_block_sums(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, n_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`per_example_sq_norms` plus the gradient summed over each of ``n_groups`` contiguous blocks
    of examples ((K, P), one batched matmul per layer; block sizes in :func:`block_counts`)."""
    recorder = _hooked_backward(model, loss_fn, x, y, n_groups)
    model.zero_grad(set_to_none=True)
    assert recorder.sq_norms is not None
    params = [p for p in model.parameters() if p.requires_grad]
    return recorder.sq_norms.detach(), torch.cat([recorder.group_grads[p] for p in params], dim=1)


# --------------------------------------------------------------------------------------------------
# statistics: G, tr(Sigma), B_simple with a bootstrap CI


@dataclass(frozen=True)
class GradientStatistics:
    r"""Per-example gradient statistics over ``n_examples`` examples describing a population of M.

    ``grad_norm_sq`` is :math:`|G|^2`, ``trace_cov`` is :math:`\mathrm{tr}\,\Sigma` (population, divisor M),
    ``b_simple`` their ratio (McCandlish et al. 2018, eq. 2.8), ``b_simple_ci`` a bootstrap 95% interval
    over random groups of examples (the spread over draws of the data, not float error).
    ``mean_gradient`` (float64, (P,)) is the sample's mean gradient.
    """

    method: str
    n_examples: int
    population: int
    grad_norm_sq: float
    trace_cov: float
    mean_sq_norm: float
    b_simple: float
    b_simple_ci: tuple[float, float]
    mean_gradient: torch.Tensor = field(repr=False, compare=False)

    def as_row(self) -> dict[str, object]:
        """Flat dict for a result table."""
        return {
            "method": self.method,
            "examples": self.n_examples,
            "population": self.population,
            "grad_norm_sq": self.grad_norm_sq,
            "trace_cov": self.trace_cov,
            "b_simple": self.b_simple,
            "ci_low": self.b_simple_ci[0],
            "ci_high": self.b_simple_ci[1],
        }


def population_moments(
    mean_grad_sq: float, mean_sq_norm: float, n: int, population: int
) -> tuple[float, float]:
    r"""Unbiased :math:`(|G|^2, \mathrm{tr}\,\Sigma)` from a simple random sample of n of M examples.

    With :math:`\hat G` the sample mean and :math:`s^2 = \frac{n}{n-1}(\overline{|g|^2} - |\hat G|^2)`
    (divisor n-1): :math:`\mathrm{tr}\,\Sigma = s^2 (M-1)/M` and
    :math:`|G|^2 = |\hat G|^2 - s^2 (M-n)/(M n)` (finite-population sampling, Cochran 1977, ch. 2).
    With n = M both are the exact population values. ``mean_grad_sq`` is :math:`|\hat G|^2`,
    ``mean_sq_norm`` is :math:`\overline{|g|^2}`, n is ``n``, M is ``population``.
    """
    require(n >= 2, f"need at least 2 examples for gradient statistics, got {n}")
    require(n <= population, f"sample of {n} examples exceeds the population of {population}")
    s2 = (mean_sq_norm - mean_grad_sq) * n / (n - 1)
    return mean_grad_sq - s2 * (population - n) / (population * n), s2 * (population - 1) / population


def b_simple(grad_norm_sq: float, trace_cov: float) -> float:
    r""":math:`B_\mathrm{simple} = \mathrm{tr}\,\Sigma / |G|^2` (McCandlish et al. 2018, eq. 2.8)."""
    return trace_cov / grad_norm_sq if grad_norm_sq > 0 else math.inf


@dataclass(frozen=True)
class _GroupSums:
    """Sufficient statistics per random group of examples: count, sum of g_i, sum of |g_i|^2."""

    counts: np.ndarray  # (K,)
    sum_grad: torch.Tensor  # (K, P) float64
    sum_sq: np.ndarray  # (K,)


def _bootstrap_b_simple(
    sums: _GroupSums, point: float, population: int, n_boot: int, seed: int
) -> tuple[float, float]:
    """95% interval for the population's B_simple from resampling the K groups with replacement.

    Replicate b with group multiplicities w estimates |G|^2 by the U-statistic over pairs of distinct
    draws, (w^T Q w - sum_k w_k Q_kk) / (K (K - 1)) with Q the Gram matrix of group mean gradients, and
    tr(Sigma) by the weighted mean of |g_i|^2 minus that. The interval is the replicates' 2.5%-97.5%
    spread around their median on a log scale, shrunk by the finite-population factor sqrt((M-n)/(M-1))
    and placed around the point estimate: zero width when all M examples were used (the value is exact);
    (nan, nan) when ``n_boot`` is 0.
    """
    keep = sums.counts > 0
    k, n_total = int(keep.sum()), float(sums.counts.sum())
    shrink = math.sqrt((population - n_total) / (population - 1)) if population > 1 else 0.0
    if shrink == 0.0:
        return point, point
    if k < 2 or n_boot < 1 or not math.isfinite(point):
        return math.nan, math.nan
    counts, sum_sq = sums.counts[keep], sums.sum_sq[keep]
    means = (
        sums.sum_grad[torch.from_numpy(keep).to(sums.sum_grad.device)]
        / torch.from_numpy(counts).to(sums.sum_grad)[:, None]
    )
    gram = (means @ means.T).cpu().numpy()  # (K, K)
    w = np.random.default_rng(seed).multinomial(k, np.full(k, 1.0 / k), size=n_boot).astype(float)
    g2 = (np.einsum("bk,kl,bl->b", w, gram, w) - w @ np.diag(gram)) / (k * (k - 1))
    trace = w @ sum_sq / (w @ counts) - g2
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.where((g2 > 0) & (trace > 0), np.log(trace / g2), np.inf)
        low, mid, high = np.percentile(log_ratio, [2.5, 50, 97.5], method="nearest")
        out = (point * np.exp(-shrink * (mid - low)), point * np.exp(shrink * (high - mid)))
    return tuple(float(v) if np.isfinite(v) else math.inf for v in out)  # type: ignore[return-value]


def sample_indices(n_total: int, sample: int | None, seed: int, device: torch.device) -> torch.Tensor:
    """A seeded random permutation of all ``n_total`` indices, or of ``sample`` of them."""
    n = n_total if sample is None else sample
    require(n >= 1, f"sample size must be >= 1, got {n}")
    require(n <= n_total, f"sample of {n} examples exceeds the {n_total} training examples")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=generator)[:n].to(device)


def gradient_statistics(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: Method = "exact",
    sample: int | None = None,
    chunk_size: int | None = None,
    seed: int = 0,
    n_boot: int = 1000,
) -> GradientStatistics:
    r""":math:`|G|^2`, :math:`\mathrm{tr}\,\Sigma` and :math:`B_\mathrm{simple}` of the per-example gradients.

    Over all M = len(x) examples (``sample=None``: exact population values) or a random sample of
    ``sample`` of them (unbiased estimates, see :func:`population_moments`).
    ``method="exact"`` forms per-example gradients with torch.func; ``"fast"`` uses only their squared
    norms (:func:`per_example_sq_norms`). Both give :math:`\mathrm{tr}\,\Sigma = \overline{|g_i|^2} - |G|^2`
    accumulated in float64. The examples are shuffled and processed ``chunk_size`` at a time (default
    :data:`DEFAULT_CHUNK`: 256 exact, 4096 fast); each chunk
    is cut into K = 32 contiguous blocks and block k joins bootstrap group k (group sums of g_i come from
    the same pass: one batched matmul per layer on the fast path).
    """
    require(method in ("exact", "fast"), f"unknown method {method!r}; expected exact or fast")
    check_examples_independent(model)
    if chunk_size is None:  # exact holds chunk x P floats of gradients; fast only activations
        chunk_size = DEFAULT_CHUNK[method]
    require(chunk_size >= 1, f"chunk size must be >= 1, got {chunk_size}")
    population = int(x.shape[0])
    order = sample_indices(population, sample, seed, x.device)
    sums = {
        "counts": np.zeros(N_GROUPS),
        "sum_sq": np.zeros(N_GROUPS),
        "sum_grad": torch.zeros(N_GROUPS, num_parameters(model), dtype=x.dtype, device=x.device),
    }
    for start in range(0, order.numel(), chunk_size):
        idx = order[start : start + chunk_size]  # shuffled examples; block k of each chunk joins group k
        if method == "exact":
            (grads,) = iter_per_example_gradients(model, loss_fn, x[idx], y[idx], chunk_size=idx.numel())
            sq, block_sums = grads.double().pow(2).sum(1), _blocks(grads[:, None, :], N_GROUPS).sum(1)
        else:
            sq, block_sums = per_example_sq_norms_and_block_sums(model, loss_fn, x[idx], y[idx], N_GROUPS)
        counts = block_counts(idx.numel(), N_GROUPS)
        sums["counts"] += counts
        sums["sum_sq"] += _block_totals(sq.double(), N_GROUPS)
        sums["sum_grad"] += block_sums  # model precision within the chunks, float64 from here on
    sums["sum_grad"] = sums["sum_grad"].double()
    return _statistics_from_sums(method, _GroupSums(**sums), population, n_boot, seed)


def _block_totals(values: torch.Tensor, n_groups: int) -> np.ndarray:
    """Sums of a per-example (N,) tensor over the K contiguous blocks of :func:`block_counts`."""
    return _blocks(values[:, None, None], n_groups).sum((1, 2)).cpu().numpy()


def _statistics_from_sums(method: str, sums: _GroupSums, population: int, n_boot: int, seed: int):
    n = int(sums.counts.sum())
    mean_gradient = sums.sum_grad.sum(0) / n
    mean_grad_sq = float(mean_gradient.pow(2).sum())
    mean_sq_norm = float(sums.sum_sq.sum() / n)
    g2, tr = population_moments(mean_grad_sq, mean_sq_norm, n, population)
    point = b_simple(g2, tr)
    return GradientStatistics(
        method=method,
        n_examples=n,
        population=population,
        grad_norm_sq=g2,
        trace_cov=tr,
        mean_sq_norm=mean_sq_norm,
        b_simple=point,
        b_simple_ci=_bootstrap_b_simple(sums, point, population, n_boot, seed),
        mean_gradient=mean_gradient,
    )


# --------------------------------------------------------------------------------------------------
# two-batch-size estimator (McCandlish et al. 2018, App. A)


def minibatch_variance_factor(batch_size: int, population: int | None, sampling: Sampling) -> float:
    r"""c(m) with :math:`E|g_B|^2 = |G|^2 + c(m)\,\mathrm{tr}\,\Sigma`.

    With replacement c(m) = 1/m; without replacement from M examples c(m) = (M-m)/(m (M-1)).
    """
    if sampling == "with" or population is None:
        return 1.0 / batch_size
    return (population - batch_size) / (batch_size * (population - 1))


@dataclass(frozen=True)
class TwoBatchEstimate:
    r"""Two-batch-size estimate of :math:`|G|^2`, :math:`\mathrm{tr}\,\Sigma` and their ratio B_simple.

    ``grad_norm_sq`` and ``trace_cov`` are averages of per-draw unbiased estimates (numerator and
    denominator averaged separately, never the ratio), with standard errors over the draws;
    ``b_simple_ci`` is a bootstrap 95% interval over the draws.
    """

    small: int
    big: int
    draws: int
    grad_norm_sq: float
    trace_cov: float
    b_simple: float
    b_simple_ci: tuple[float, float]
    grad_norm_sq_stderr: float = math.nan
    trace_cov_stderr: float = math.nan

    def as_row(self) -> dict[str, object]:
        return {
            "method": "two-batch",
            "small": self.small,
            "big": self.big,
            "draws": self.draws,
            "grad_norm_sq": self.grad_norm_sq,
            "trace_cov": self.trace_cov,
            "b_simple": self.b_simple,
            "ci_low": self.b_simple_ci[0],
            "ci_high": self.b_simple_ci[1],
        }


def two_batch_estimates(sq_small: float, sq_big: float, c_small: float, c_big: float) -> tuple[float, float]:
    r"""Unbiased :math:`(|G|^2, \mathrm{tr}\,\Sigma)` from squared norms of two minibatch gradients.

    McCandlish et al. 2018, App. A (eqs. A.2-A.3), written with c(B) = 1/B for sampling with replacement:
    :math:`\mathcal{S} = (|G_s|^2 - |G_b|^2)/(c_s - c_b)` and :math:`|G|^2 = |G_b|^2 - c_b \mathcal{S}`,
    i.e. :math:`|G|^2 = (B_b|G_b|^2 - B_s|G_s|^2)/(B_b - B_s)` when c = 1/B. ``sq_small`` is
    :math:`|G_s|^2`, ``sq_big`` is :math:`|G_b|^2`, ``c_small``/``c_big`` are
    :func:`minibatch_variance_factor` of the two batch sizes.
    """
    trace = (sq_small - sq_big) / (c_small - c_big)
    return sq_big - c_big * trace, trace


def two_batch_noise_scale(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    small: int,
    big: int,
    draws: int = 50,
    sampling: Sampling = "with",
    seed: int = 0,
    n_boot: int = 1000,
) -> TwoBatchEstimate:
    """B_simple from minibatch gradient norms at two batch sizes (no per-example gradients needed).

    Each draw takes an independent batch of ``small`` and one of ``big`` examples and forms the unbiased
    estimates of :func:`two_batch_estimates`; the result averages numerators and denominators separately.
    """
    population = int(x.shape[0])
    require(1 <= small < big, f"need 1 <= small < big batch sizes, got small={small}, big={big}")
    require(draws >= 2, f"need at least 2 draws, got {draws}")
    check_batch_size(big, population, sampling)
    check_examples_independent(model)
    generator = torch.Generator().manual_seed(seed)
    c_s = minibatch_variance_factor(small, population, sampling)
    c_b = minibatch_variance_factor(big, population, sampling)
    per_draw = []
    for _ in range(draws):
        sq = []
        for m in (small, big):
            idx = draw_batch(population, m, sampling, generator).to(x.device)
            sq.append(float(batch_gradient(model, loss_fn, x[idx], y[idx]).double().pow(2).sum()))
        per_draw.append(two_batch_estimates(sq[0], sq[1], c_s, c_b))
    est = np.array(per_draw)  # (draws, 2): |G|^2, tr Sigma
    g2, tr = est.mean(0)
    boot = np.random.default_rng(seed).integers(0, draws, size=(n_boot, draws))
    g2_b, tr_b = est[boot, 0].mean(1), est[boot, 1].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g2_b > 0, tr_b / g2_b, np.inf)
        # linear interpolation between two infinite replicates gives inf - inf = nan: the bound is inf
        low, high = np.nan_to_num(np.percentile(ratio, [2.5, 97.5]), nan=np.inf, posinf=np.inf)
    g2, tr = float(g2), float(tr)
    g2_se, tr_se = (est.std(0, ddof=1) / math.sqrt(draws)).tolist()
    return TwoBatchEstimate(
        small, big, draws, g2, tr, b_simple(g2, tr), (float(low), float(high)), g2_se, tr_se
    )


def two_batch_step_estimates(
    model: nn.Module,
    loss_fn: LossFn,
    x_big: torch.Tensor,
    y_big: torch.Tensor,
    big_gradient: torch.Tensor,
    *,
    small: int,
    population: int,
) -> tuple[float, float]:
    r"""Unbiased :math:`(|G|^2, \mathrm{tr}\,\Sigma)` from one training batch and a slice of it.

    The big batch is the training step's own batch (``x_big``, ``y_big``; its mean-loss gradient
    ``big_gradient`` is already computed), the small batch its first ``small`` examples: one extra
    forward/backward of ``small`` examples. Both are uniform subsets drawn without replacement from the
    M = ``population`` examples (slices of a random permutation), so
    :math:`E|G_B|^2 = |G|^2 + c(B)\,\mathrm{tr}\,\Sigma` holds for each and
    :func:`two_batch_estimates` is unbiased; the two norms are correlated, which changes only the variance
    (McCandlish et al. 2018, App. A use the per-device and the all-reduced gradient the same way).
    """
    big = int(x_big.shape[0])
    require(1 <= small < big, f"need 1 <= small < big batch sizes, got small={small}, big={big}")
    check_examples_independent(model)
    sq_big = float(big_gradient.double().pow(2).sum())
    sq_small = float(batch_gradient(model, loss_fn, x_big[:small], y_big[:small]).double().pow(2).sum())
    c_s = minibatch_variance_factor(small, population, "without")
    c_b = minibatch_variance_factor(big, population, "without")
    return two_batch_estimates(sq_small, sq_big, c_s, c_b)


@dataclass(frozen=True)
class TwoBatchEMA:
    r"""Exponential moving averages of the two-batch numerator and denominator, kept separately.

    :math:`\bar x_t = d\,\bar x_{t-1} + (1-d)\,x_t` for :math:`x = |G|^2` and :math:`x = \mathrm{tr}\,\Sigma`
    (McCandlish et al. 2018, App. A: average the two, not their ratio). ``weight`` is
    :math:`1 - d^t`, the bias correction; ``update`` returns a new state.
    """

    decay: float = 0.9
    grad_norm_sq: float = 0.0
    trace_cov: float = 0.0
    weight: float = 0.0

    def update(self, grad_norm_sq: float, trace_cov: float) -> TwoBatchEMA:
        d = self.decay
        return TwoBatchEMA(
            decay=d,
            grad_norm_sq=d * self.grad_norm_sq + (1 - d) * grad_norm_sq,
            trace_cov=d * self.trace_cov + (1 - d) * trace_cov,
            weight=d * self.weight + (1 - d),
        )

    @property
    def corrected(self) -> tuple[float, float]:
        """Bias-corrected averages (|G|^2, tr Sigma): each divided by 1 - d^t."""
        if self.weight == 0:
            return math.nan, math.nan
        return self.grad_norm_sq / self.weight, self.trace_cov / self.weight

    @property
    def b_simple(self) -> float:
        # the (1 - d^t) bias corrections of numerator and denominator cancel in the ratio
        return b_simple(self.grad_norm_sq, self.trace_cov)


# --------------------------------------------------------------------------------------------------
# minibatch sampling shared by the measurements


def check_batch_size(batch_size: int, population: int, sampling: str = "without") -> None:
    """InputError unless 1 <= batch_size <= population and ``sampling`` is known."""
    require(sampling in SAMPLINGS, f"unknown sampling {sampling!r}; expected with or without")
    require(batch_size >= 1, f"batch size must be >= 1, got {batch_size}")
    require(
        batch_size <= population,
        f"batch size {batch_size} exceeds the {population} examples it is drawn from",
    )


def draw_batch(population: int, batch_size: int, sampling: str, generator: torch.Generator) -> torch.Tensor:
    """Indices of one minibatch: uniform with replacement, or a uniform subset without replacement."""
    if sampling == "with":
        return torch.randint(population, (batch_size,), generator=generator)
    if sampling == "without":
        return torch.randperm(population, generator=generator)[:batch_size]
    raise InputError(f"unknown sampling {sampling!r}; expected with or without")
