"""``batchscale predict stability``: optimal and maximal stable SGD step vs batch size for least squares."""

from __future__ import annotations

import math

import click

from batchscale.cli.common import FINITE, FloatList, IntList, emit, format_option, plot_option, progress
from batchscale.errors import require

MAX_DATASET_DIM = 30
TABLE_COLUMNS = (
    "batch_size",
    "optimal_step",
    "optimal_rate",
    "max_stable_step",
    "mbb_step",
    "mbb_critical_batch",
    "ms_critical_batch",
    "full_batch_limit",
)
STEP_COLUMNS = ("optimal_step", "max_stable_step", "mbb_step", "full_batch_limit")


@click.command("stability")
@click.option(
    "--spectrum",
    type=FloatList(),
    default=None,
    help="Comma list of input-covariance eigenvalues (replaces --dim/--alpha).",
)
@click.option("--dim", type=int, default=20, show_default=True, help="Dimension d of the power-law spectrum.")
@click.option(
    "--alpha", type=FINITE, default=1.0, show_default=True, help="Power-law spectrum lambda_i = i^-alpha."
)
@click.option(
    "--inputs",
    type=click.Choice(["gaussian", "dataset"]),
    default="gaussian",
    show_default=True,
    help="gaussian: x ~ N(0, diag(lambda)); dataset: a fixed sample of --n-examples such x, batches drawn "
    f"with replacement (exact d^2 recursion, d <= {MAX_DATASET_DIM}).",
)
@click.option(
    "--n-examples", type=int, default=1000, show_default=True, help="Dataset size for --inputs dataset."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed of the --inputs dataset sample."
)
@click.option(
    "--batch-sizes",
    type=IntList(),
    default="1..1024",
    show_default=True,
    help="Comma list, or LOW..HIGH for the powers of two between.",
)
@click.option(
    "--form",
    type=click.Choice(["mean", "sum"]),
    default="mean",
    show_default=True,
    help="mean: steps multiply the batch-mean gradient; sum: base learning rates eta/m (sum of gradients).",
)
@format_option()
@plot_option
def stability(spectrum, dim, alpha, inputs, n_examples, seed, batch_sizes, form, fmt, plot_path) -> None:
    """Least squares: critical batch m*, optimal and maximal stable step vs batch.

    Noiseless least squares y = w*.x (interpolation). Per batch size m: the step with the fastest
    contraction of E|w - w*|^2 and the largest mean-square-stable step (exact second-moment recursion),
    Ma, Bassily & Belkin's eta*(m) = m/(beta + (m-1) lambda_1) with m* = beta/lambda_1 (arXiv 1712.06559),
    and the full-batch limit 2/lambda_1.
    """
    import numpy as np

    from batchscale.power_law import power_law_eigenvalues
    from batchscale.theory import stability as st

    lam = st.checked_spectrum(spectrum) if spectrum else None
    if lam is None:
        require(dim >= 1, f"--dim must be >= 1, got {dim}")
        lam = power_law_eigenvalues(dim, alpha)
    batches = batch_sizes
    require(batches[0] >= 1, f"batch sizes must be >= 1, got {batches[0]}")
    if inputs == "dataset":
        require(lam.size <= MAX_DATASET_DIM, f"--inputs dataset needs d <= {MAX_DATASET_DIM}, got {lam.size}")
        require(n_examples >= 1, f"--n-examples must be >= 1, got {n_examples}")
        x = np.random.default_rng(seed).normal(size=(n_examples, lam.size)) * np.sqrt(lam)  # (n, d)
        progress(f"stability: {n_examples} Gaussian examples in d={lam.size}, {len(batches)} batch sizes")
        table = st.stability_table(batches, inputs=x)
    else:
        table = st.stability_table(batches, spectrum=lam)
    config = {"form": form, "inputs": inputs, "dim": int(lam.size), "alpha": None if spectrum else alpha}
    if inputs == "dataset":
        config.update(n_examples=n_examples, seed=seed)
    rows = [_row(r, form, config) for r in table]
    emit(rows, fmt, TABLE_COLUMNS if fmt == "table" else None)
    if plot_path:
        _plot(plot_path, rows, form)
        progress(f"wrote {plot_path}")


def _row(result, form: str, config: dict) -> dict:
    row = {"batch_size": result.batch_size}
    scale = 1.0 / result.batch_size if form == "sum" else 1.0
    for name, value in vars(result).items():
        if name != "batch_size":
            row[name] = value * scale if name in STEP_COLUMNS else value
    row.update(config)
    return row


def _plot(path: str, rows: list[dict], form: str) -> None:
    from batchscale.report.plots import plot_series

    m_star = rows[0]["mbb_critical_batch"]
    plot_series(
        path,
        [r["batch_size"] for r in rows],
        {
            "optimal step (mean-square)": [r["optimal_step"] for r in rows],
            "max stable step (mean-square)": [r["max_stable_step"] for r in rows],
            "MBB eta*(m)": [r["mbb_step"] for r in rows],
            "full batch 2/lambda_1": [r["full_batch_limit"] for r in rows],
        },
        xlabel="batch size m",
        ylabel="step size eta" + (" / m (sum form)" if form == "sum" else " (mean form)"),
        title="Least-squares step sizes vs batch (interpolation regime)",
        logx=True,
        logy=True,
        vlines={f"m* = beta/lambda_1 = {m_star:.3g}": m_star if math.isfinite(m_star) else math.nan},
    )
