"""Model factories for the built-in workloads, each seeded: the same seed gives the same weights.

Every factory here is a plain module-level function (so ``functools.partial(factory, ...)`` pickles and a
:class:`~batchscale.empirical.workloads.Workload` can be sent to another process). Initial weights come
from torch's default initialisers drawn inside :func:`seeded`, which forks the global RNG so building a
model never disturbs the caller's random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


def seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``build()`` with torch's CPU RNG seeded by ``seed``; the caller's RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


def n_parameters(model: nn.Module) -> int:
    """Number of trainable scalars of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """Fully connected ReLU network ``in_dim -> hidden[0] -> ... -> out_dim``; flattens its input."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def make_mlp(seed: int, *, in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Module:
    """Seeded :func:`mlp`."""
    return seeded(lambda: mlp(in_dim, hidden, out_dim), seed)


def linear(in_dim: int, out_dim: int = 1) -> nn.Linear:
    """``f(x) = W x`` without bias."""
    return nn.Linear(in_dim, out_dim, bias=False)


def make_linear(seed: int, *, in_dim: int, out_dim: int = 1, init: str = "zero") -> nn.Module:
    """Linear model without bias; ``init='zero'`` starts at w = 0 for every seed, ``'random'`` draws
    torch's default U(-1/sqrt(d), 1/sqrt(d)) weights from ``seed``."""
    model = seeded(lambda: linear(in_dim, out_dim), seed)
    if init == "zero":
        with torch.no_grad():
            model.weight.zero_()
    return model


class Unsqueeze(nn.Module):
    """Add a channel axis: (N, L) -> (N, 1, L)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


def cnn1d(length: int = 40, channels: int = 32, out_dim: int = 10) -> nn.Sequential:
    """Small 1-D conv net for MNIST-1D: three ReLU convolutions (the last two stride 2) and a linear head."""
    reduced = (length + 1) // 2
    reduced = (reduced + 1) // 2
    return nn.Sequential(
        Unsqueeze(),  # (N, 1, L)
        nn.Conv1d(1, channels, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),  # (N, C, ceil(L/2))
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),  # (N, C, ceil(L/4))
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(channels * reduced, out_dim),
    )


def make_cnn1d(seed: int, *, length: int = 40, channels: int = 32, out_dim: int = 10) -> nn.Module:
    """Seeded :func:`cnn1d`."""
    return seeded(lambda: cnn1d(length, channels, out_dim), seed)


def cnn2d(in_channels: int, size: int, channels: Sequence[int], dense: int, out_dim: int) -> nn.Sequential:
    """Conv net for small images: per entry of ``channels`` a 3x3 ReLU conv and a 2x2 max-pool, then a
    dense ReLU layer of width ``dense`` (none if 0) and a linear head."""
    layers: list[nn.Module] = []
    width = in_channels
    for c in channels:
        layers += [nn.Conv2d(width, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        width, size = c, size // 2
    layers.append(nn.Flatten())
    features = width * size * size
    if dense:
        layers += [nn.Linear(features, dense), nn.ReLU()]
        features = dense
    layers.append(nn.Linear(features, out_dim))
    return nn.Sequential(*layers)


def make_cnn2d(
    seed: int, *, in_channels: int, size: int, channels: Sequence[int], dense: int, out_dim: int
) -> nn.Module:
    """Seeded :func:`cnn2d`."""
    return seeded(lambda: cnn2d(in_channels, size, channels, dense, out_dim), seed)


NORMS = ("group", "batch", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """GroupNorm (per-example, so per-example gradients stay independent), BatchNorm or identity.

    GroupNorm uses gcd(8, channels) groups: 8 for the default widths, and a divisor of any other width.
    """
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Residual block of two 3x3 convolutions (He et al. 2016, CIFAR variant, 1x1 projection shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm_layer(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = norm_layer(norm, cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm_layer(norm, cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet8(width: int = 16, out_dim: int = 10, norm: str = "group") -> nn.Sequential:
    """ResNet-8 for 32x32 RGB: a 3x3 stem, three stages of one basic block (width, 2 width, 4 width;
    strides 1, 2, 2), global average pooling and a linear head: 1 + 3*2 + 1 = 8 weight layers."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False),  # (N, w, 32, 32)
        norm_layer(norm, width),
        nn.ReLU(),
        BasicBlock(width, width, 1, norm),
        BasicBlock(width, 2 * width, 2, norm),  # (N, 2w, 16, 16)
        BasicBlock(2 * width, 4 * width, 2, norm),  # (N, 4w, 8, 8)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, out_dim),
    )


def make_resnet8(seed: int, *, width: int = 16, out_dim: int = 10, norm: str = "group") -> nn.Module:
    """Seeded :func:`resnet8`."""
    return seeded(lambda: resnet8(width, out_dim, norm), seed)
