"""Measuring a real network at its seeded initial point or along training: what ``batchscale measure`` runs.

Every measurement goes through :func:`measure_along_training`: it builds nothing itself, trains the
model of a :class:`Setup` with the training engine's plain loop (:class:`~batchscale.empirical.train.
SingleRun`, mean-loss SGD, reshuffled each epoch, last partial batch dropped) and, at step 0, every
``every`` steps and at the end (or only at the end), calls the measurement. One function per command
(:func:`noise_scale_along_training`, :func:`moments_along_training`, :func:`cosine_along_training`,
:func:`accumulation_after_training`, :func:`sharpness_along_training`) decides what to compute and
returns result rows; the CLI only parses options, calls these and formats the rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from batchscale.empirical.gradients import (
    SAMPLINGS,
    TwoBatchEMA,
    check_batch_size,
    flat_grad,
    gradient_statistics,
    sample_indices,
    two_batch_noise_scale,
    two_batch_step_estimates,
)
from batchscale.errors import require
from batchscale.vocabulary import LOSS_FORMS

Progress = Callable[[str], None]
R = TypeVar("R")


def _quiet(message: str) -> None:
    """The default progress reporter: says nothing."""


# --------------------------------------------------------------------------------------------------
# set-up and training


@dataclass(frozen=True)
class Setup:
    """A built workload, its model (seeded initial point), and the examples (x, y) measured on.

    ``config`` is the resolved configuration reported beside every row.
    """

    workload: Any
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    config: dict[str, Any]

    @property
    def loss_fn(self) -> Callable:
        return self.workload.per_example_loss

    @property
    def population(self) -> int:
        """M, the number of examples measured on."""
        return int(self.x.shape[0])


def build_setup(
    workload: str,
    options: Mapping[str, Any],
    device: str,
    seed: int,
    sample: int | None,
    *,
    cap: int | None = None,
    **extra: Any,
) -> Setup:
    """Resolve the device, build the workload and its model (seed ``seed``), and keep ``sample`` seeded
    training examples (``sample=None``: all of them, or ``cap`` of them when there are more).

    ``extra`` joins the reported configuration.
    """
    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.workloads import get_workload

    resolved = resolve_device(device)
    wl = get_workload(workload, device=resolved, seed=seed, **dict(options))
    require(sample is None or sample >= 2, f"--sample must be >= 2, got {sample}")
    if sample is None and cap is not None and wl.n_train > cap:
        sample = cap
    idx = sample_indices(wl.n_train, sample, seed, wl.device) if sample is not None else None
    x, y = (wl.x_train, wl.y_train) if idx is None else (wl.x_train[idx], wl.y_train[idx])
    config = {"workload": workload, "options": wl.options, "seed": seed, "device": str(resolved), **extra}
    config["examples"] = int(x.shape[0])
    model = wl.model(seed)
    if stochastic_layers(model):
        config["measured_in"] = EVAL_MODE_NOTE
    return Setup(wl, model, x, y, config)


EVAL_MODE_NOTE = "eval mode (Dropout off; training uses it)"


def stochastic_layers(model: nn.Module) -> list[str]:
    """Names of the layers that draw random numbers in training mode (Dropout of every kind)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


@contextmanager
def measuring_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode while measuring a model with stochastic layers, so that every statistic is a function of
    the parameters (same seed, same numbers; per-example gradients defined); training mode is restored.
    Models without such layers are measured as they are."""
    if not stochastic_layers(model):
        yield
        return
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.train(training)


@dataclass(frozen=True)
class Training:
    """Plain SGD on the mean loss from the seeded initial point: ``steps`` updates of learning rate
    ``lr`` on batches of ``batch_size`` training examples (all of the workload's, not only the measured
    ones), batch order seeded by ``seed``."""

    steps: int = 0
    lr: float = 0.1
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.steps >= 0, f"training steps must be >= 0, got {self.steps}")
        require(math.isfinite(self.lr) and self.lr > 0, f"--train-lr must be positive, got {self.lr}")

    def check(self, n_train: int) -> None:
        """InputError on a batch larger than the training set."""
        check_batch_size(self.batch_size, n_train)


@dataclass(frozen=True)
class Checkpoint:
    """Where training stands: ``step`` updates done, the last minibatch loss, and the status.

    ``ema`` is the per-step two-batch estimator's state after ``step`` updates (None unless asked for).
    """

    step: int
    batch_loss: float
    status: str  # "ok" or "diverged"
    ema: TwoBatchEMA | None = None


@dataclass
class TwoBatchHook:
    """Per-step two-batch estimator, a :data:`~batchscale.empirical.train.GradientHook`.

    Big batch = the step's own batch (its gradient is the one the update uses), small batch = its first
    ``small`` examples (one extra backward pass of that many examples, at the same parameters), see
    :func:`~batchscale.empirical.gradients.two_batch_step_estimates`; the estimates of |G|^2 and
    tr(Sigma) enter separate exponential moving averages (:class:`TwoBatchEMA`). The step's gradient is
    put back in ``.grad`` afterwards, so the update is unchanged.
    """

    loss_fn: Callable
    x: torch.Tensor
    y: torch.Tensor
    small: int
    ema: TwoBatchEMA = field(default_factory=TwoBatchEMA)

    def __call__(self, model: nn.Module, idx: torch.Tensor, loss: torch.Tensor) -> None:
        if not math.isfinite(float(loss)):
            return  # the run is diverging: the engine stops after this step
        params = [p for p in model.parameters() if p.requires_grad]
        g = flat_grad(model).detach().clone()  # (P,): g_B at the current parameters
        population = int(self.x.shape[0])
        est = two_batch_step_estimates(
            model, self.loss_fn, self.x[idx], self.y[idx], g, small=self.small, population=population
        )
        self.ema = self.ema.update(*est)
        for p, part in zip(params, g.split([p.numel() for p in params]), strict=True):
            p.grad = part.view_as(p).clone()


def sgd_checkpoints(
    setup: Setup,
    training: Training,
    *,
    every: int,
    ema_small: int | None = None,
    ema_decay: float = 0.98,
) -> Iterator[Checkpoint]:
    """Train ``setup.model`` in place with the engine's plain loop; yield at step 0, every ``every``
    steps and at the end. A non-finite minibatch loss stops training with status "diverged".

    With ``ema_small``, every step also feeds the two-batch estimator (:class:`TwoBatchHook`).
    """
    from batchscale.empirical.train import SingleRun
    from batchscale.empirical.trials import TrainConfig

    wl = setup.workload
    training.check(wl.n_train)
    require(every >= 1, f"--every must be >= 1, got {every}")
    if ema_small is not None:
        require(
            1 <= ema_small < training.batch_size,
            f"the two-batch small batch ({ema_small}) must be in 1..{training.batch_size - 1}: a slice of "
            f"the training batch of {training.batch_size}",
        )
    require(0 <= ema_decay < 1, f"EMA decay must be in [0, 1), got {ema_decay}")
    hook = None
    if ema_small is not None:
        hook = TwoBatchHook(wl.per_example_loss, wl.x_train, wl.y_train, ema_small, TwoBatchEMA(ema_decay))
    config = TrainConfig(
        workload=str(setup.config.get("workload", wl.name)),
        batch_size=training.batch_size,
        learning_rate=training.lr,
        optimizer="sgd",
        seed=training.seed,
        max_steps=max(training.steps, 1),
        target_metric="loss",
        target=None,
        eval_subset=1,
        drop_last=True,
        device=str(wl.device),
    )
    run = SingleRun(wl, config, model=setup.model, on_gradient=hook)
    yield Checkpoint(0, math.nan, "ok", None if hook is None else hook.ema)
    for step in range(1, training.steps + 1):
        loss = run.train_step()
        if not math.isfinite(loss):
            yield Checkpoint(step, loss, "diverged", None if hook is None else hook.ema)
            return
        if step % every == 0 or step == training.steps:
            setup.model.zero_grad(set_to_none=True)
            yield Checkpoint(step, loss, "ok", None if hook is None else hook.ema)
    setup.model.zero_grad(set_to_none=True)


def measure_along_training(
    setup: Setup,
    training: Training,
    measure_at: Callable[[Checkpoint], Sequence[R]],
    *,
    every: int | None = None,
    ema_small: int | None = None,
    ema_decay: float = 0.98,
    progress: Progress = _quiet,
) -> list[tuple[Checkpoint, list[R]]]:
    """Train (:func:`sgd_checkpoints`) and call ``measure_at(checkpoint)`` on the model as it stands.

    ``every=None``: measure once, at the end of training; else at step 0, every ``every`` steps and at
    the end. A model with stochastic layers (Dropout) is measured in eval mode (:func:`measuring_mode`).
    A diverged run ends the list with ``(checkpoint, [])``. ``progress`` hears of the training
    every 10% of the run (or every ``every`` steps).
    """
    require(every is None or every >= 1, f"--every must be >= 1, got {every}")
    steps = training.steps
    out: list[tuple[Checkpoint, list[R]]] = []
    for point in sgd_checkpoints(
        setup,
        training,
        every=every if every is not None else max(1, steps // 10),
        ema_small=ema_small,
        ema_decay=ema_decay,
    ):
        if steps and point.step:
            progress(f"  step {point.step}/{steps}  batch loss {point.batch_loss:.4g}  {point.status}")
        if point.status != "ok":
            out.append((point, []))
            break
        if every is not None or point.step == steps:
            with measuring_mode(setup.model):
                out.append((point, list(measure_at(point))))
    return out


def train_loss(setup: Setup) -> float:
    """Mean per-example loss over the measured examples."""
    with torch.no_grad():
        return float(setup.loss_fn(setup.model(setup.x), setup.y).mean())


def status_row(point: Checkpoint) -> dict[str, Any]:
    """The row of a checkpoint where training stopped (diverged)."""
    return {"step": point.step, "status": point.status}


# --------------------------------------------------------------------------------------------------
# choices shared by the commands


def powers_of_two_up_to(limit: int) -> list[int]:
    """1, 2, 4, ... <= ``limit`` (the default batch sizes 1..M)."""
    return [1 << k for k in range(max(limit, 1).bit_length())]


def divisor_sizes(batch_size: int) -> list[int]:
    """The powers of two that divide ``batch_size``, and ``batch_size`` itself (the default micro-batches)."""
    require(batch_size >= 1, f"batch size must be >= 1, got {batch_size}")
    return sorted(
        {1 << k for k in range(batch_size.bit_length()) if batch_size % (1 << k) == 0} | {batch_size}
    )


def choices(value: str, allowed: Sequence[str]) -> list[str]:
    """``both`` -> every allowed value, else just ``value``."""
    return list(allowed) if value == "both" else [value]


def check_sizes(batch_sizes: Sequence[int], population: int) -> None:
    """Fail fast (before any training or statistics) on a batch size outside 1..M."""
    for m in batch_sizes:
        check_batch_size(m, population)


# --------------------------------------------------------------------------------------------------
# noise scale

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


# --------------------------------------------------------------------------------------------------
# update moments and cosine: checks against predictions at each checkpoint


def checks_along_training(
    setup: Setup,
    training: Training,
    every: int | None,
    measure_at: Callable[[int, Any], list],
    progress: Progress = _quiet,
) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
    """At each checkpoint: exact per-example statistics, then ``measure_at(step, stats)``.

    ``measure_at`` returns ``(check, row)`` pairs; the result is every ``(step, check)`` (for plots) and
    the rows, with a ``step`` column when measuring along training (``every`` given).
    """

    def at(point: Checkpoint) -> list[tuple[Any, dict[str, Any]]]:
        progress(f"step {point.step}: exact per-example statistics over M={setup.population} examples")
        stats = gradient_statistics(setup.model, setup.loss_fn, setup.x, setup.y, seed=training.seed)
        return measure_at(point.step, stats)

    measured: list[tuple[int, Any]] = []
    rows: list[dict[str, Any]] = []
    for point, pairs in measure_along_training(setup, training, at, every=every, progress=progress):
        if point.status != "ok":
            rows.append(status_row(point))
        for check, row in pairs:
            measured.append((point.step, check))
            rows.append({"step": point.step, **row} if every is not None else row)
    return measured, rows


def moments_along_training(
    setup: Setup,
    training: Training,
    *,
    batch_sizes: Sequence[int] | None,
    lr: float,
    form: str = "both",
    sampling: str = "both",
    draws: int = 100,
    z: float = 4.0,
    every: int | None = None,
    progress: Progress = _quiet,
) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
    """``measure moments``: :func:`~batchscale.empirical.update_stats.update_moments` at each checkpoint
    (batch sizes default to the powers of two up to M; ``form``/``sampling`` may be ``both``)."""
    from batchscale.empirical.update_stats import update_moments

    require(lr > 0, f"--lr must be positive, got {lr}")
    require(z > 0, f"--z must be positive, got {z}")
    ms = list(batch_sizes) if batch_sizes else powers_of_two_up_to(setup.population)
    check_sizes(ms, setup.population)

    def measure_at(step: int, stats: Any) -> list:
        progress(f"step {step}: drawing {draws} minibatches for each of {len(ms)} batch sizes")
        checks = update_moments(
            setup.model,
            setup.loss_fn,
            setup.x,
            setup.y,
            stats=stats,
            batch_sizes=ms,
            lr=lr,
            forms=choices(form, LOSS_FORMS),
            samplings=choices(sampling, SAMPLINGS),
            draws=draws,
            seed=training.seed,
            z=z,
        )
        return [(c, c.as_row()) for c in checks]

    return checks_along_training(setup, training, every, measure_at, progress)


def cosine_along_training(
    setup: Setup,
    training: Training,
    *,
    batch_sizes: Sequence[int] | None,
    sampling: str = "without",
    draws: int = 50,
    z: float = 4.0,
    every: int | None = None,
    progress: Progress = _quiet,
) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
    """``measure cosine``: :func:`~batchscale.empirical.update_stats.gradient_cosine` at each checkpoint."""
    from batchscale.empirical.update_stats import gradient_cosine, gram_statistics

    require(z > 0, f"--z must be positive, got {z}")
    ms = list(batch_sizes) if batch_sizes else powers_of_two_up_to(setup.population)
    check_sizes(ms, setup.population)

    def measure_at(step: int, stats: Any) -> list:
        pairs = []
        gram = gram_statistics(setup.model, setup.loss_fn, setup.x, setup.y)  # the prediction's statistics
        for s in choices(sampling, SAMPLINGS):
            progress(f"step {step}: {draws} minibatches ({s} replacement) for each of {len(ms)} sizes")
            checks = gradient_cosine(
                setup.model,
                setup.loss_fn,
                setup.x,
                setup.y,
                stats=stats,
                batch_sizes=ms,
                sampling=s,
                draws=draws,
                seed=training.seed,
                z=z,
                gram=gram,
            )
            for c in checks:
                row = {k: v for k, v in c.as_row().items() if k != "form"} | {"b_simple": stats.b_simple}
                pairs.append((c, row))
        return pairs

    return checks_along_training(setup, training, every, measure_at, progress)


# --------------------------------------------------------------------------------------------------
# accumulation and sharpness


def accumulation_after_training(
    setup: Setup,
    training: Training,
    *,
    batch_size: int,
    micro_batches: Sequence[int] | None,
    lr: float,
    form: str = "both",
    progress: Progress = _quiet,
) -> list[Any]:
    """``measure accumulation``: train, then :func:`~batchscale.empirical.update_stats.accumulation`
    (micro-batches default to :func:`divisor_sizes`). Returns AccumulationResults, or the one status
    row of a diverged training run."""
    from batchscale.empirical.update_stats import accumulation, check_micro_batches

    require(lr > 0, f"--lr must be positive, got {lr}")
    sizes = list(micro_batches) if micro_batches else divisor_sizes(batch_size)
    check_micro_batches(batch_size, sizes)
    check_sizes([batch_size], setup.population)

    def measure_at(point: Checkpoint) -> list[Any]:
        progress(f"accumulating micro-batches {sizes} into one batch of {batch_size}")
        return accumulation(
            setup.model,
            setup.loss_fn,
            setup.x,
            setup.y,
            batch_size=batch_size,
            micro_batches=sizes,
            lr=lr,
            forms=choices(form, LOSS_FORMS),
            seed=training.seed,
        )

    ((point, results),) = measure_along_training(setup, training, measure_at, progress=progress)[-1:]
    return results if point.status == "ok" else [status_row(point)]


def sharpness_along_training(
    setup: Setup,
    training: Training,
    *,
    method: str = "lanczos",
    k: int = 1,
    iters: int = 100,
    tol: float = 1e-4,
    every: int | None = None,
    on_hvp: Callable[[int], None] | None = None,
    progress: Progress = _quiet,
) -> list[dict[str, Any]]:
    """``measure sharpness``: rows (step, train_loss, one per eigenvalue) at each checkpoint."""
    from batchscale.empirical.curvature import sharpness

    require(tol > 0, f"--tol must be positive, got {tol}")

    def measure_at(point: Checkpoint) -> list[dict[str, Any]]:
        progress(f"sharpness at step {point.step} ({method})")
        result = sharpness(
            setup.model,
            setup.loss_fn,
            setup.x,
            setup.y,
            k=k,
            method=method,
            iters=iters,
            tol=tol,
            seed=training.seed,
            on_hvp=on_hvp,
        )
        loss = train_loss(setup)
        return [{"step": point.step, "train_loss": loss, **row} for row in result.as_rows()]

    measured = measure_along_training(setup, training, measure_at, every=every, progress=progress)
    return [row for point, rows in measured for row in (rows or [status_row(point)])]
