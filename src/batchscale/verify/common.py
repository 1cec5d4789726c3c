"""Helpers the claim modules share: which workload a claim runs on, and building it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from batchscale.verify.registry import Options


def workload_choice(
    opts: Options, default: str, quick_options: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """The workload name and options a claim runs on: the user's ``--workload``/``-W``, else the claim's
    default (with its small ``quick_options`` under ``--quick`` unless ``-W`` overrides them)."""
    if opts.workload is not None:
        return opts.workload, dict(opts.workload_options)
    extra = dict(quick_options or {}) if opts.quick else {}
    return default, {**extra, **dict(opts.workload_options)}


def build_workload(opts: Options, name: str, options: Mapping[str, Any], data_seed: int = 0) -> Any:
    """The :class:`batchscale.empirical.workloads.Workload` ``name`` on the resolved device."""
    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.workloads import get_workload

    return get_workload(name, device=resolve_device(opts.device), seed=data_seed, **dict(options))


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Sample mean and its standard error (sample std / sqrt(n)); stderr nan for n < 2."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def log_log_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(v) for v in x], [math.log(v) for v in y]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)
