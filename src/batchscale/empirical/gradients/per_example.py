"""Per-example gradients and their squared norms: flat parameter vectors, torch.func per-example
gradients, and the fast path from layer hooks."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from batchscale.errors import require
from batchscale.vocabulary import SAMPLINGS as VOCABULARY_SAMPLINGS

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


Method = Literal["exact", "fast"]


Sampling = Literal["with", "without"]


SAMPLINGS: tuple[str, ...] = VOCABULARY_SAMPLINGS[:2]  # a reshuffled batch is a uniform m-subset too


# Examples per pass when no chunk size is given, by method.
DEFAULT_CHUNK = {"exact": 256, "fast": 4096}


# Bootstrap over this many random groups of examples (the group sums are all that is kept in memory).
N_GROUPS = 32


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
