"""``batchscale measure noise-scale``: B_simple (exact, fast, two-batch) and B_noise."""

from __future__ import annotations

import click

from batchscale.cli.common import FiniteFloat, emit, progress
from batchscale.cli.measure.options import (
    build,
    columns_in,
    common_options,
    sample_option,
    training,
    training_options,
    with_config,
    wrote,
)
from batchscale.errors import require

METHODS = ("exact", "fast", "two-batch")


class TwoBatchSizes(click.ParamType):
    """``SMALL,BIG``: two integers with 1 <= SMALL < BIG, in that order (never swapped)."""

    name = "small,big"

    def convert(self, value, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        try:
            small, big = (int(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not SMALL,BIG (two integers, e.g. 8,256)", param, ctx)
        if not 1 <= small < big:
            self.fail(f"{value!r}: need 1 <= SMALL < BIG (the small batch first)", param, ctx)
        return small, big


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise click.BadParameter(f"{m!r} is not one of {', '.join(METHODS)}", param_hint="--method")
    return methods or ["fast"]


@click.command("noise-scale")
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
    "--two-batch-sizes",
    "two_batch",
    type=TwoBatchSizes(),
    default="8,256",
    show_default=True,
    help="two-batch: the SMALL,BIG batch sizes (SMALL < BIG).",
)
@click.option("--batch-sizes", "two_batch_old", type=TwoBatchSizes(), default=None, hidden=True)
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
    type=FiniteFloat(0.0, 1.0, max_open=True),
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
    two_batch_old,
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
    from batchscale.empirical.measure import (
        NOISE_COLUMNS,
        NoiseScaleOptions,
        ema_settings,
        noise_scale_along_training,
    )

    methods = parse_methods(method)
    pair = two_batch if two_batch_old is None else two_batch_old  # --batch-sizes: the old spelling
    train = training(train_steps, train_lr, train_batch_size, seed)
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
    opts = NoiseScaleOptions(
        methods=tuple(methods),
        two_batch=pair,
        draws=draws,
        seed=seed,
        stat_sample=stat_sample,
        chunk_size=chunk_size,
        b_noise=with_b_noise,
        probes=probes,
    )
    ema = ema_settings(methods, during_training, ema_small, ema_decay, train_batch_size)
    setup.config.update(ema)
    rows = noise_scale_along_training(
        setup, train, opts, every=every if during_training else None, ema=ema, progress=progress
    )
    rows = with_config(rows, setup, fmt)
    emit(rows, fmt, columns_in(rows, NOISE_COLUMNS))
    nan = [r["step"] for r in rows if r.get("status") == "nan loss"]
    if nan:
        raise click.ClickException(f"nan loss: the training loss is not finite at step {nan[0]}")
    if plot_path:
        from batchscale.report.measure_plots import plot_noise_scale

        plot_noise_scale(plot_path, rows, methods)
        wrote(plot_path)
