"""``batchscale measure``: gradient statistics, update moments, accumulation, cosine and sharpness.

Every subcommand builds a workload, takes the model at its seeded initial point (optionally after
``--train-steps`` of plain SGD), measures, and prints rows; rows that compare a measurement with a
prediction carry predicted, measured, stderr, tolerance and pass. Torch is imported inside the commands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import click

from batchscale.cli.common import (
    FINITE,
    IntList,
    device_option,
    emit,
    format_option,
    plot_option,
    powers_of_two,
    progress,
    seed_option,
    workload_options,
)
from batchscale.errors import require

DEFAULT_WORKLOAD = "digits-mlp"


@click.group("measure")
def measure() -> None:
    """Measure gradient statistics and update moments on a real network."""


# --------------------------------------------------------------------------------------------------
# shared options and set-up


def common_options(func: Callable) -> Callable:
    """--workload/-W, --seed, --device, --format, --plot."""
    for decorate in (
        plot_option,
        format_option(),
        device_option,
        seed_option,
        workload_options(DEFAULT_WORKLOAD),
    ):
        func = decorate(func)
    return func


def training_options(during: bool) -> Callable:
    """--train-steps, --train-lr, --train-batch-size (and --every, --during-training when ``during``)."""

    def decorate(func: Callable) -> Callable:
        options = [
            click.option(
                "--train-steps",
                type=int,
                default=0,
                show_default=True,
                help="Plain SGD steps (mean loss) from the seeded initial point before measuring"
                + (" (or during which to measure, with --during-training)." if during else "."),
            ),
            click.option(
                "--train-lr",
                type=FINITE,
                default=0.1,
                show_default=True,
                help="Learning rate of those SGD steps.",
            ),
            click.option(
                "--train-batch-size",
                type=int,
                default=32,
                show_default=True,
                help="Batch size of those SGD steps (reshuffled each epoch, last partial batch dropped).",
            ),
        ]
        if during:
            options += [
                click.option(
                    "--during-training",
                    is_flag=True,
                    help="Measure at step 0, every --every steps and at the end of --train-steps.",
                ),
                click.option(
                    "--every", type=int, default=100, show_default=True, help="Steps between measurements."
                ),
            ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def sample_option(help_text: str, default: int | None) -> Callable:
    return click.option("--sample", type=int, default=default, show_default=True, help=help_text)


def minibatch_options(sampling: str, draws: int, sample_help: str) -> Callable:
    """--batch-sizes, --sampling, --draws, --sample and --z for the commands that draw many minibatches."""
    options = [
        click.option(
            "--batch-sizes",
            type=IntList(),
            default=None,
            help="Batch sizes, e.g. 1..512 or 1,4,16 [default: 1..M].",
        ),
        click.option(
            "--sampling",
            type=click.Choice(["with", "without", "both"]),
            default=sampling,
            show_default=True,
            help="Minibatches drawn with or without replacement.",
        ),
        click.option(
            "--draws", type=int, default=draws, show_default=True, help="Minibatches drawn per batch size."
        ),
        sample_option(sample_help, None),
        click.option(
            "--z", "z", type=FINITE, default=4.0, show_default=True, help="Tolerance in standard errors."
        ),
    ]

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@dataclass(frozen=True)
class Setup:
    """A built workload, its model, and the examples (x, y) the command measures on."""

    workload: Any
    model: Any
    x: Any
    y: Any
    config: dict[str, Any]

    @property
    def loss_fn(self) -> Callable:
        return self.workload.per_example_loss


def build(
    workload: str,
    workload_option: Sequence[str],
    device: str,
    seed: int,
    sample: int | None,
    *,
    cap: int | None = None,
    **extra: Any,
) -> Setup:
    """Resolve the device, build the workload and model, and keep ``sample`` seeded training examples
    (``sample=None``: all of them, or ``cap`` of them when there are more)."""
    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.gradients import sample_indices
    from batchscale.empirical.workloads import get_workload

    options = dict(workload_option)
    resolved = resolve_device(device)
    wl = get_workload(workload, device=resolved, seed=seed, **options)
    require(sample is None or sample >= 2, f"--sample must be >= 2, got {sample}")
    if sample is None and cap is not None and wl.n_train > cap:
        sample = cap
    idx = sample_indices(wl.n_train, sample, seed, wl.device) if sample is not None else None
    x, y = (wl.x_train, wl.y_train) if idx is None else (wl.x_train[idx], wl.y_train[idx])
    config = {"workload": workload, "options": wl.options, "seed": seed, "device": str(resolved), **extra}
    config["examples"] = int(x.shape[0])
    return Setup(wl, wl.model(seed), x, y, config)


def train_loss(setup: Setup) -> float:
    """Mean per-example loss over the measured examples."""
    import torch

    with torch.no_grad():
        return float(setup.loss_fn(setup.model(setup.x), setup.y).mean())


def checkpoints(
    setup: Setup,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    every: int | None,
    **ema: Any,
) -> Iterator[Any]:
    """Train on the full training set; yield at the checkpoints (every=None: only at the end).

    ``ema`` (``ema_small``, ``ema_decay``) turns on the per-step two-batch estimator of the loop.
    """
    from batchscale.empirical.update_stats import sgd_checkpoints

    require(every is None or every >= 1, f"--every must be >= 1, got {every}")
    wl = setup.workload
    loop = sgd_checkpoints(
        setup.model,
        setup.loss_fn,
        wl.x_train,
        wl.y_train,
        steps=steps,
        every=every if every is not None else max(1, steps // 10),  # progress every 10% of the run
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        **ema,
    )
    for point in loop:
        if steps and point.step:
            progress(f"  step {point.step}/{steps}  batch loss {point.batch_loss:.4g}  {point.status}")
        if every is not None or point.step == steps or point.status != "ok":
            yield point


def checks_at_checkpoints(
    setup: Setup, train: dict[str, Any], every: int | None, measure_at: Callable[[int, Any], list]
) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
    """At each checkpoint: exact per-example statistics, then ``measure_at(step, stats)``.

    ``measure_at`` returns ``(check, row)`` pairs; the result is every ``(step, check)`` (for plots) and
    the rows, with a ``step`` column when measuring along training (``every`` given).
    """
    from batchscale.empirical.gradients import gradient_statistics

    measured: list[tuple[int, Any]] = []
    rows: list[dict[str, Any]] = []
    for point in checkpoints(setup, **train, every=every):
        if point.status != "ok":
            rows.append({"step": point.step, "status": point.status})
            break
        progress(f"step {point.step}: exact per-example statistics over M={setup.x.shape[0]} examples")
        stats = gradient_statistics(setup.model, setup.loss_fn, setup.x, setup.y, seed=train["seed"])
        for check, row in measure_at(point.step, stats):
            measured.append((point.step, check))
            rows.append({"step": point.step, **row} if every is not None else row)
    return measured, rows


def with_config(rows: list[dict[str, Any]], setup: Setup, fmt: str) -> list[dict[str, Any]]:
    """Attach the resolved configuration to every row for json/csv (tables stay readable)."""
    return rows if fmt == "table" else [{**row, "config": setup.config} for row in rows]


def plot(path: str, x: Sequence, ys: dict, **kwargs: Any) -> None:
    from batchscale.report.plots import plot_series

    plot_series(path, x, ys, **kwargs)
    progress(f"wrote {path}")


def positive(value: float, name: str) -> None:
    require(value > 0, f"{name} must be positive, got {value}")


# --------------------------------------------------------------------------------------------------
# noise-scale

METHODS = ("exact", "fast", "two-batch")


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise click.BadParameter(f"{m!r} is not one of {', '.join(METHODS)}", param_hint="--method")
    return methods or ["fast"]


def noise_scale_rows(setup: Setup, methods: Sequence[str], opts: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method at the model's current point (B_noise appended when asked)."""
    from batchscale.empirical.gradients import gradient_statistics, two_batch_noise_scale

    rows, stats = [], None
    for method in methods:
        progress(f"  {method}")
        if method == "two-batch":
            small, big = opts["two_batch"]
            est = two_batch_noise_scale(
                setup.model,
                setup.loss_fn,
                setup.x,
                setup.y,
                small=small,
                big=big,
                draws=opts["draws"],
                seed=opts["seed"],
            )
            rows.append(est.as_row())
            continue
        stats = gradient_statistics(
            setup.model,
            setup.loss_fn,
            setup.x,
            setup.y,
            method=method,
            sample=opts["stat_sample"],
            chunk_size=opts["chunk_size"],
            seed=opts["seed"],
        )
        rows.append(stats.as_row())
    if opts["b_noise"]:
        n = int(setup.x.shape[0])
        progress(f"  B_noise: {min(opts['probes'], n) + 1} Hessian-vector products over {n} examples")
        rows.append(b_noise_row(setup, stats, opts))  # once per checkpoint, on a row of its own
    return rows


def b_noise_row(setup: Setup, stats: Any, opts: dict[str, Any]) -> dict[str, Any]:
    from batchscale.empirical.curvature import b_noise
    from batchscale.empirical.gradients import gradient_statistics

    if stats is None or stats.n_examples != stats.population:
        stats = gradient_statistics(setup.model, setup.loss_fn, setup.x, setup.y, seed=opts["seed"])
    result = b_noise(
        setup.model,
        setup.loss_fn,
        setup.x,
        setup.y,
        mean_gradient=stats.mean_gradient,
        probes=min(opts["probes"], int(setup.x.shape[0])),
        seed=opts["seed"],
    )
    return {"method": "b-noise (HVP)", "examples": result.n_examples, **result.as_row()}


@measure.command("noise-scale")
@click.option(
    "--method",
    default="fast",
    show_default=True,
    help="exact (torch.func per-example gradients), fast (per-example squared norms from hooks; "
    "Linear/Conv layers), two-batch (gradient norms at two batch sizes); a comma list compares them.",
)
@sample_option("Measure over this many training examples (seeded) instead of all of them.", None)
@click.option(
    "--stat-sample",
    type=int,
    default=None,
    help="exact/fast: estimate from a random sample of this many of the measured examples "
    "(unbiased, finite-population corrected); default: all of them (exact values).",
)
@click.option(
    "--batch-sizes",
    "two_batch",
    type=IntList(),
    default="8,256",
    show_default=True,
    help="two-batch: the SMALL,BIG batch sizes.",
)
@click.option("--draws", type=int, default=50, show_default=True, help="two-batch: pairs of batches drawn.")
@click.option(
    "--chunk-size",
    type=int,
    default=None,
    help="Examples per vmap/backward chunk (bounds memory) [default: 256 exact, 4096 fast].",
)
@click.option(
    "--b-noise", "with_b_noise", is_flag=True, help="Also compute B_noise = tr(H Sigma)/(G^T H G) via HVPs."
)
@click.option(
    "--probes",
    type=int,
    default=32,
    show_default=True,
    help="--b-noise: per-example gradients for tr(H Sigma).",
)
@click.option(
    "--ema-small",
    type=int,
    default=None,
    help="two-batch with --during-training: every training step also estimates |G|^2 and tr(Sigma) "
    "from its own batch (big) and its first EMA_SMALL examples (small, one extra backward pass) "
    "[default: a quarter of --train-batch-size].",
)
@click.option(
    "--ema-decay",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.98,
    show_default=True,
    help="Decay of the per-step exponential moving averages of those two estimates, kept separately; "
    "b_simple_ema is their ratio.",
)
@training_options(during=True)
@common_options
def noise_scale(
    method,
    sample,
    stat_sample,
    two_batch,
    draws,
    chunk_size,
    with_b_noise,
    probes,
    ema_small,
    ema_decay,
    train_steps,
    train_lr,
    train_batch_size,
    during_training,
    every,
    workload,
    workload_option,
    seed,
    device,
    fmt,
    plot_path,
) -> None:
    """Gradient noise scale B_simple (and B_noise).

    B_simple = tr(Sigma)/|G|^2 from per-example gradients (exact, fast) or from gradient norms at two
    batch sizes (two-batch; McCandlish et al. 2018, App. A); B_noise = tr(H Sigma)/(G^T H G) via HVPs.
    With --during-training, two-batch also updates exponential moving averages of |G|^2 and tr(Sigma)
    at every training step (its batch and a slice of it) and reports their ratio, b_simple_ema.
    """
    methods = parse_methods(method)
    pair = two_batch
    if "two-batch" in methods:
        got = ",".join(map(str, pair))
        require(len(pair) == 2, f"--batch-sizes for two-batch needs SMALL,BIG, got {got}")
    positive(train_lr, "--train-lr")
    require(
        plot_path is None or during_training, "--plot draws B_simple along training: add --during-training"
    )
    setup = build(
        workload,
        workload_option,
        device,
        seed,
        sample,
        command="noise-scale",
        train=(train_steps, train_lr, train_batch_size),
        methods=methods,
    )
    opts = {
        "two_batch": pair,
        "draws": draws,
        "seed": seed,
        "stat_sample": stat_sample,
        "chunk_size": chunk_size,
        "b_noise": with_b_noise,
        "probes": probes,
    }
    rows = []
    every_n = every if during_training else None
    ema = ema_options(methods, during_training, ema_small, ema_decay, train_batch_size)
    setup.config.update(ema)
    for point in checkpoints(
        setup, steps=train_steps, lr=train_lr, batch_size=train_batch_size, seed=seed, every=every_n, **ema
    ):
        if point.status != "ok":
            rows.append({"step": point.step, "status": point.status})
            break
        progress(f"noise scale at step {point.step} ({', '.join(methods)})")
        loss = train_loss(setup)
        for row in noise_scale_rows(setup, methods, opts):
            if row["method"] == "two-batch" and point.ema is not None:
                row.update(ema_columns(point.ema))
            rows.append({"step": point.step, "train_loss": loss, **row, "status": "ok"})
    rows = with_config(rows, setup, fmt)
    emit(rows, fmt, columns_in(rows, NOISE_COLUMNS))
    if plot_path:
        plot_noise_scale(plot_path, rows, methods)


def ema_options(
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


def ema_columns(ema: Any) -> dict[str, Any]:
    """Bias-corrected per-step EMAs of |G|^2 and tr(Sigma) and their ratio (None before any step)."""
    if ema.weight == 0:
        return {"ema_grad_norm_sq": None, "ema_trace_cov": None, "b_simple_ema": None}
    g2, tr = ema.corrected
    return {"ema_grad_norm_sq": g2, "ema_trace_cov": tr, "b_simple_ema": ema.b_simple}


NOISE_COLUMNS = (
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


def columns_in(rows: Sequence[dict[str, Any]], order: Sequence[str]) -> list[str]:
    """``order`` restricted to the columns present, then any others (e.g. config)."""
    present = {k for row in rows for k in row}
    return [c for c in order if c in present] + sorted(present - set(order))


def plot_noise_scale(path: str, rows: list[dict[str, Any]], methods: Sequence[str]) -> None:
    """B_simple per method with its 95% interval drawn as two lines of bounds (the interval is skewed,
    so no symmetric error bar), the per-step two-batch EMA, and B_noise (bars: one stderr), against the
    SGD step."""
    ys, err = {}, {}
    steps = sorted({r["step"] for r in rows if r.get("status") == "ok"})
    nan = float("nan")

    def series(method: str, key: str) -> list[float]:
        mine = {r["step"]: r for r in rows if r.get("method") == method}
        return [nan if mine.get(s, {}).get(key) is None else mine[s][key] for s in steps]

    for method in methods:
        ys[f"B_simple ({method})"] = series(method, "b_simple")
        low, high = series(method, "ci_low"), series(method, "ci_high")
        if any(hi > lo for lo, hi in zip(low, high, strict=True)):  # zero width: exact over all examples
            ys[f"  95% CI low ({method})"], ys[f"  95% CI high ({method})"] = low, high
        if method == "two-batch" and any(r.get("b_simple_ema") is not None for r in rows):
            ys["B_simple (two-batch, per-step EMA)"] = series(method, "b_simple_ema")
    if any("b_noise" in r for r in rows):
        ys["B_noise (HVP; bars: 1 stderr)"] = series("b-noise (HVP)", "b_noise")
        err["B_noise (HVP; bars: 1 stderr)"] = series("b-noise (HVP)", "b_noise_stderr")
    plot(
        path,
        steps,
        ys,
        xlabel="SGD step",
        ylabel="batch size",
        title="Gradient noise scale along training",
        logy=True,
        yerr=err,
    )


# --------------------------------------------------------------------------------------------------
# moments


def check_sizes(batch_sizes: Sequence[int], population: int) -> None:
    """Fail fast (before any training or statistics) on a batch size outside 1..M."""
    from batchscale.empirical.gradients import check_batch_size

    for m in batch_sizes:
        check_batch_size(m, population)


def choices(value: str, allowed: Sequence[str]) -> list[str]:
    """``both`` -> every allowed value, else just ``value``."""
    return list(allowed) if value == "both" else [value]


def default_batch_sizes(sizes: Sequence[int] | None, population: int) -> list[int]:
    return list(sizes) if sizes else powers_of_two(1, population)


def checks_plot(
    path: str, measured: Sequence[tuple[int, Any]], quantity: str, ylabel: str, title: str, logy: bool
) -> None:
    """Predicted and measured ``quantity`` vs m, one pair of lines per (form, sampling) and, along
    training, per step. ``measured`` holds (step, Check) pairs.

    On a log axis, points predicted to be exactly 0 (m = M without replacement) are left out: their
    measurement is float rounding.
    """
    groups: dict[tuple[int, str, str], dict[int, Any]] = {}
    for step, c in measured:
        if c.quantity == quantity and not (logy and c.predicted == 0):
            groups.setdefault((step, c.form, c.sampling), {})[c.batch_size] = c
    ms = sorted({c.batch_size for _, c in measured})
    several_steps = len({step for step, _ in measured}) > 1
    nan = float("nan")
    ys, err = {}, {}
    for (step, form, sampling), by_m in groups.items():
        label = f"{form} form, {sampling} repl." if quantity != "cosine" else f"{sampling} replacement"
        label = f"step {step}, {label}" if several_steps else label
        ys[f"predicted, {label}"] = [by_m[m].predicted if m in by_m else nan for m in ms]
        ys[f"measured, {label}"] = [by_m[m].measured if m in by_m else nan for m in ms]
        err[f"measured, {label}"] = [by_m[m].stderr if m in by_m else nan for m in ms]
    plot(path, ms, ys, xlabel="batch size m", ylabel=ylabel, title=title, logx=True, logy=logy, yerr=err)


@measure.command("moments")
@click.option(
    "--lr", type=FINITE, default=0.1, show_default=True, help="eta (mean form) or eta_base (sum form)."
)
@click.option(
    "--form",
    type=click.Choice(["mean", "sum", "both"]),
    default="both",
    show_default=True,
    help="Loss form: mean (w -= lr * mean grad) or sum (w -= lr * sum of grads).",
)
@minibatch_options(
    sampling="both", draws=100, sample_help="M: draw minibatches from this many training examples "
    "(seeded subset) [default: 512 or all]."
)
@training_options(during=True)
@common_options
def moments(
    batch_sizes,
    lr,
    form,
    sampling,
    draws,
    sample,
    z,
    train_steps,
    train_lr,
    train_batch_size,
    during_training,
    every,
    workload,
    workload_option,
    seed,
    device,
    fmt,
    plot_path,
) -> None:
    """Update mean and covariance vs batch size.

    Measured over many minibatches per m, beside the exact predictions E = -eta G and
    tr Cov = eta^2 tr(Sigma)/m (x (M-m)/(M-1) without replacement); sum form with eta_base m.
    """
    from batchscale.empirical.update_stats import update_moments

    positive(lr, "--lr")
    positive(train_lr, "--train-lr")
    positive(z, "--z")
    setup = build(
        workload,
        workload_option,
        device,
        seed,
        sample,
        cap=512,
        command="moments",
        train=(train_steps, train_lr, train_batch_size),
        lr=lr,
        draws=draws,
    )
    ms = default_batch_sizes(batch_sizes, int(setup.x.shape[0]))
    check_sizes(ms, int(setup.x.shape[0]))
    train = {"steps": train_steps, "lr": train_lr, "batch_size": train_batch_size, "seed": seed}

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
            forms=choices(form, ("mean", "sum")),
            samplings=choices(sampling, ("with", "without")),
            draws=draws,
            seed=seed,
            z=z,
        )
        return [(c, c.as_row()) for c in checks]

    measured, rows = checks_at_checkpoints(setup, train, every if during_training else None, measure_at)
    emit(with_config(rows, setup, fmt), fmt)
    if plot_path and measured:
        checks_plot(
            plot_path, measured, "trace_cov", "tr Cov[update]", "Update covariance vs batch size", True
        )


@measure.command("cosine")
@minibatch_options(
    sampling="without", draws=50, sample_help="M: the training examples (seeded subset) for G and the "
    "minibatches [default: 1024 or all]."
)
@training_options(during=True)
@common_options
def cosine(
    batch_sizes,
    sampling,
    draws,
    sample,
    z,
    train_steps,
    train_lr,
    train_batch_size,
    during_training,
    every,
    workload,
    workload_option,
    seed,
    device,
    fmt,
    plot_path,
) -> None:
    """Minibatch vs full gradient cosine.

    Mean cos(g_B, G) over many minibatches per m, beside the approximation 1/sqrt(1 + B_simple/m)
    (x (M-m)/(M-1) inside without replacement).
    """
    from batchscale.empirical.update_stats import gradient_cosine

    positive(train_lr, "--train-lr")
    positive(z, "--z")
    setup = build(
        workload,
        workload_option,
        device,
        seed,
        sample,
        cap=1024,
        command="cosine",
        train=(train_steps, train_lr, train_batch_size),
        draws=draws,
    )
    ms = default_batch_sizes(batch_sizes, int(setup.x.shape[0]))
    check_sizes(ms, int(setup.x.shape[0]))
    train = {"steps": train_steps, "lr": train_lr, "batch_size": train_batch_size, "seed": seed}

    def measure_at(step: int, stats: Any) -> list:
        pairs = []
        for s in choices(sampling, ("with", "without")):
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
                seed=seed,
                z=z,
            )
            for c in checks:
                row = {k: v for k, v in c.as_row().items() if k != "form"} | {"b_simple": stats.b_simple}
                pairs.append((c, row))
        return pairs

    measured, rows = checks_at_checkpoints(setup, train, every if during_training else None, measure_at)
    emit(with_config(rows, setup, fmt), fmt)
    if plot_path and measured:
        checks_plot(plot_path, measured, "cosine", "cos(g_B, G)", "Minibatch vs full gradient", False)


def divisor_sizes(batch_size: int) -> list[int]:
    """The powers of two that divide ``batch_size``, and ``batch_size`` itself (the default micro-batches)."""
    require(batch_size >= 1, f"batch size must be >= 1, got {batch_size}")
    return sorted(
        {1 << k for k in range(batch_size.bit_length()) if batch_size % (1 << k) == 0} | {batch_size}
    )


@measure.command("accumulation")
@click.option(
    "--batch-size", type=int, default=256, show_default=True, help="The batch size m of one update."
)
@click.option(
    "--micro-batches",
    type=IntList(),
    default=None,
    help="Micro-batch sizes dividing m, e.g. 1..256 or 4,12 [default: the powers of two dividing m, and m].",
)
@click.option(
    "--lr", type=FINITE, default=0.1, show_default=True, help="eta (mean form) or eta_base (sum form)."
)
@click.option(
    "--form",
    type=click.Choice(["mean", "sum", "both"]),
    default="both",
    show_default=True,
    help="Loss form of the update.",
)
@training_options(during=False)
@common_options
def accumulation(
    batch_size,
    micro_batches,
    lr,
    form,
    train_steps,
    train_lr,
    train_batch_size,
    workload,
    workload_option,
    seed,
    device,
    fmt,
    plot_path,
) -> None:
    """Gradient accumulation vs one batch, and memory.

    The update from k micro-batches vs one batch (max abs difference, both loss forms) and the bytes
    autograd saves for backward per micro-batch (CUDA: also peak allocated memory).
    """
    from batchscale.empirical.update_stats import accumulation as measure_accumulation
    from batchscale.empirical.update_stats import check_micro_batches

    positive(lr, "--lr")
    positive(train_lr, "--train-lr")
    setup = build(
        workload,
        workload_option,
        device,
        seed,
        None,
        command="accumulation",
        train=(train_steps, train_lr, train_batch_size),
        lr=lr,
    )
    sizes = list(micro_batches) if micro_batches else divisor_sizes(batch_size)
    check_micro_batches(batch_size, sizes)
    check_sizes([batch_size], int(setup.x.shape[0]))
    for _ in checkpoints(
        setup, steps=train_steps, lr=train_lr, batch_size=train_batch_size, seed=seed, every=None
    ):
        pass
    progress(f"accumulating micro-batches {sizes} into one batch of {batch_size}")
    results = measure_accumulation(
        setup.model,
        setup.loss_fn,
        setup.x,
        setup.y,
        batch_size=batch_size,
        micro_batches=sizes,
        lr=lr,
        forms=choices(form, ("mean", "sum")),
        seed=seed,
    )
    emit(with_config([r.as_row() for r in results], setup, fmt), fmt)
    if plot_path:
        first = [r for r in results if r.form == results[0].form]
        plot(
            plot_path,
            [r.micro_batch for r in first],
            {"autograd-saved MiB": [r.saved_bytes / 2**20 for r in first]},
            xlabel="micro-batch size",
            ylabel="MiB saved for backward",
            title="Activation memory vs micro-batch",
            logx=True,
            logy=True,
        )


def report_hvps(n: int) -> None:
    """Progress of an eigensolver: a line every 10 Hessian-vector products."""
    if n % 10 == 0:
        progress(f"  {n} Hessian-vector products")


@measure.command("sharpness")
@click.option(
    "--method",
    type=click.Choice(["lanczos", "power"]),
    default="lanczos",
    show_default=True,
    help="Lanczos (scipy eigsh on HVPs) or power iteration (top eigenvalue only).",
)
@click.option("--k", "k", type=int, default=1, show_default=True, help="How many top eigenvalues (lanczos).")
@click.option(
    "--iters", type=int, default=100, show_default=True, help="Power iteration: at most this many HVPs."
)
@click.option(
    "--tol", type=FINITE, default=1e-4, show_default=True, help="Relative tolerance of the eigenvalues."
)
@sample_option("Hessian of the mean loss over this many training examples (seeded); default all.", None)
@training_options(during=True)
@common_options
def sharpness(
    method,
    k,
    iters,
    tol,
    sample,
    train_steps,
    train_lr,
    train_batch_size,
    during_training,
    every,
    workload,
    workload_option,
    seed,
    device,
    fmt,
    plot_path,
) -> None:
    """Top Hessian eigenvalues (sharpness).

    Lanczos or power iteration on Hessian-vector products of the mean training loss.
    """
    from batchscale.empirical.curvature import sharpness as top_eigenvalues

    positive(train_lr, "--train-lr")
    positive(tol, "--tol")
    require(
        plot_path is None or during_training, "--plot draws sharpness along training: add --during-training"
    )
    setup = build(
        workload,
        workload_option,
        device,
        seed,
        sample,
        command="sharpness",
        train=(train_steps, train_lr, train_batch_size),
        method=method,
    )
    rows = []
    every_n = every if during_training else None
    for point in checkpoints(
        setup, steps=train_steps, lr=train_lr, batch_size=train_batch_size, seed=seed, every=every_n
    ):
        if point.status != "ok":
            rows.append({"step": point.step, "status": point.status})
            break
        progress(f"sharpness at step {point.step} ({method})")
        result = top_eigenvalues(
            setup.model,
            setup.loss_fn,
            setup.x,
            setup.y,
            k=k,
            method=method,
            iters=iters,
            tol=tol,
            seed=seed,
            on_hvp=report_hvps,
        )
        loss = train_loss(setup)
        rows += [{"step": point.step, "train_loss": loss, **row, "status": "ok"} for row in result.as_rows()]
    emit(with_config(rows, setup, fmt), fmt)
    if plot_path:
        top = [r for r in rows if r.get("rank") == 1]
        plot(
            plot_path,
            [r["step"] for r in top],
            {"lambda_max": [r["eigenvalue"] for r in top], "2 / train lr": [2 / train_lr] * len(top)},
            xlabel="SGD step",
            ylabel="top Hessian eigenvalue",
            title="Sharpness along training",
            logy=True,
        )
