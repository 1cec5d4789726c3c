"""B_simple, the two-batch estimator and B_noise at a checkpoint or along training
(``measure noise-scale``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batchscale.empirical.gradients import (
    TwoBatchEMA,
    check_batch_size,
    gradient_statistics,
    two_batch_noise_scale,
)
from batchscale.empirical.measure.training import (
    Checkpoint,
    Progress,
    Setup,
    Training,
    _quiet,
    measure_along_training,
    status_row,
    train_loss,
)
from batchscale.errors import require

NOISE_METHODS: tuple[str, ...] = ("exact", "fast", "two-batch")


@dataclass(frozen=True)
class NoiseScaleOptions:
    """What ``measure noise-scale`` computes at each checkpoint.

    ``two_batch`` is the (small, big) pair of the two-batch method, ``stat_sample`` the per-example
    sample of exact/fast (None: all), ``b_noise`` adds B_noise from ``probes`` HVP probes.
    """

    methods: tuple[str, ...] = ("fast",)
    two_batch: tuple[int, int] = (8, 256)
    draws: int = 50
    seed: int = 0
    stat_sample: int | None = None
    chunk_size: int | None = None
    b_noise: bool = False
    probes: int = 32

    def __post_init__(self) -> None:
        small, big = self.two_batch
        if "two-batch" in self.methods:
            require(
                1 <= small < big,
                f"two-batch sizes must be SMALL,BIG with 1 <= SMALL < BIG, got {small},{big}",
            )
            require(self.draws >= 2, f"two-batch needs at least 2 draws, got {self.draws}")


def noise_scale_status(row: Mapping[str, Any], population: int) -> str:
    """``ok``; ``undefined`` when the |G|^2 (or tr Sigma, or G^T H G) estimate is not positive (a two-batch
    or sampled estimate can be: the ratio is then meaningless, reported but not trusted); ``exceeds
    dataset`` when B_simple (or B_noise) is larger than the M examples measured on (the full batch of M
    examples is itself still noise-dominated: a critical batch size beyond the data)."""
    for key in ("grad_norm_sq", "trace_cov", "g_h_g"):
        value = row.get(key)
        if value is not None and not value > 0:
            return "undefined"
    value = row.get("b_simple", row.get("b_noise"))
    if value is not None and not math.isfinite(value):
        return "undefined"
    if value is not None and value > population:
        return "exceeds dataset"
    return "ok"


def noise_scale_rows(setup: Setup, opts: NoiseScaleOptions, progress: Progress = _quiet) -> list[dict]:
    """One row per method at the model's current point (B_noise appended on a row of its own)."""
    rows, stats = [], None
    for method in opts.methods:
        progress(f"  {method}")
        if method == "two-batch":
            small, big = opts.two_batch
            est = two_batch_noise_scale(
                setup.model,
                setup.loss_fn,
                setup.x,
                setup.y,
                small=small,
                big=big,
                draws=opts.draws,
                seed=opts.seed,
            )
            rows.append(est.as_row())
            continue
        stats = gradient_statistics(
            setup.model,
            setup.loss_fn,
            setup.x,
            setup.y,
            method=method,
            sample=opts.stat_sample,
            chunk_size=opts.chunk_size,
            seed=opts.seed,
        )
        rows.append(stats.as_row())
    if opts.b_noise:
        n = setup.population
        progress(f"  B_noise: {min(opts.probes, n) + 1} Hessian-vector products over {n} examples")
        rows.append(b_noise_row(setup, stats, opts))
    return rows


def b_noise_row(setup: Setup, stats: Any, opts: NoiseScaleOptions) -> dict[str, Any]:
    """B_noise = tr(H Sigma)/(G^T H G) with G exact over the measured examples."""
    from batchscale.empirical.curvature import b_noise

    if stats is None or stats.n_examples != stats.population:
        stats = gradient_statistics(setup.model, setup.loss_fn, setup.x, setup.y, seed=opts.seed)
    result = b_noise(
        setup.model,
        setup.loss_fn,
        setup.x,
        setup.y,
        mean_gradient=stats.mean_gradient,
        probes=min(opts.probes, setup.population),
        seed=opts.seed,
    )
    return {"method": "b-noise (HVP)", "examples": result.n_examples, **result.as_row()}


def ema_settings(
    methods: Sequence[str], during: bool, small: int | None, decay: float, train_batch_size: int
) -> dict[str, Any]:
    """The per-step two-batch estimator's settings (empty unless two-batch along training)."""
    if "two-batch" not in methods or not during:
        require(small is None, "--ema-small needs --method two-batch with --during-training")
        return {}
    require(train_batch_size >= 2, "the per-step two-batch estimator needs --train-batch-size >= 2")
    small = max(1, train_batch_size // 4) if small is None else small
    require(
        1 <= small < train_batch_size,
        f"--ema-small must be in 1..{train_batch_size - 1} (a slice of the training batch), got {small}",
    )
    return {"ema_small": small, "ema_decay": decay}


def ema_columns(ema: TwoBatchEMA) -> dict[str, Any]:
    """Bias-corrected per-step EMAs of |G|^2 and tr(Sigma) and their ratio (None before any step)."""
    if ema.weight == 0:
        return {"ema_grad_norm_sq": None, "ema_trace_cov": None, "b_simple_ema": None}
    g2, tr = ema.corrected
    return {"ema_grad_norm_sq": g2, "ema_trace_cov": tr, "b_simple_ema": ema.b_simple}


def noise_scale_along_training(
    setup: Setup,
    training: Training,
    opts: NoiseScaleOptions,
    *,
    every: int | None = None,
    ema: Mapping[str, Any] | None = None,
    progress: Progress = _quiet,
) -> list[dict[str, Any]]:
    """Rows (step, train_loss, one per method, status) at each checkpoint (see :func:`noise_scale_rows`);
    ``ema`` (:func:`ema_settings`) adds the per-step two-batch EMA columns to the two-batch rows."""

    if "two-batch" in opts.methods:
        check_batch_size(opts.two_batch[1], setup.population)

    def measure_at(point: Checkpoint) -> list[dict[str, Any]]:
        progress(f"noise scale at step {point.step} ({', '.join(opts.methods)})")
        loss = train_loss(setup)
        if not math.isfinite(loss):  # no gradient statistic means anything here
            return [{"step": point.step, "train_loss": None, "status": "nan loss"}]
        rows = []
        for row in noise_scale_rows(setup, opts, progress):
            if row["method"] == "two-batch" and point.ema is not None:
                row.update(ema_columns(point.ema))
            status = noise_scale_status(row, setup.population)
            rows.append({"step": point.step, "train_loss": loss, **row, "status": status})
        return rows

    measured = measure_along_training(
        setup, training, measure_at, every=every, progress=progress, **dict(ema or {})
    )
    return [row for point, rows in measured for row in (rows or [status_row(point)])]


NOISE_COLUMNS: tuple[str, ...] = (
    "step",
    "train_loss",
    "method",
    "examples",
    "population",
    "small",
    "big",
    "draws",
    "grad_norm_sq",
    "trace_cov",
    "b_simple",
    "ci_low",
    "ci_high",
    "ema_grad_norm_sq",
    "ema_trace_cov",
    "b_simple_ema",
    "b_noise",
    "b_noise_stderr",
    "trace_h_sigma",
    "g_h_g",
    "probes",
    "status",
)
