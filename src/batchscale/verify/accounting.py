r"""``accounting``: steps per epoch and the last partial batch, theory vs real loaders.

Theory (:mod:`batchscale.theory.accounting`): an epoch of M examples in batches of m has
:math:`\lceil M/m\rceil` steps, the last of :math:`M - m(\lceil M/m\rceil - 1)` examples, or
:math:`\lfloor M/m\rfloor` steps of m with drop-last. Measured: the batches that
``torch.utils.data.DataLoader`` and the training engine's :class:`batchscale.empirical.train.BatchOrder`
actually yield in one epoch.

The last batch of a reshuffled epoch is a uniform m'-subset (m' = M mod m), so its mean gradient has
:math:`\mathrm{tr\,Cov} = \frac{M-m'}{M-1}\frac{\mathrm{tr}\,\Sigma}{m'}` (:func:`batchscale.theory.moments.
update_moments_at`, per step, eta = 1): noisier than a full batch of m. Measured over many reshuffled
epochs of a real loader on a real network at its initial point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from batchscale.verify.common import build_workload, mean_and_stderr, workload_choice
from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, make_row

CLAIM = "accounting"
DEFAULT_WORKLOAD = "digits-mlp"
QUICK_OPTIONS = {"hidden": 32}
BATCH_SIZE = 100  # 1437 digits training examples: 15 steps, the last of 37
DRAWS = {True: 400, False: 4000}  # reshuffled epochs per --quick / full run


def predicted_counts(dataset_size: int, batch_size: int, drop_last: bool) -> tuple[int, int]:
    """(steps per epoch, last batch size) from :func:`batchscale.theory.accounting.epoch_accounting`."""
    from batchscale.theory.accounting import epoch_accounting

    acc = epoch_accounting(dataset_size, batch_size, drop_last)
    return acc.steps_per_epoch, acc.last_batch_size


def data_loader_counts(dataset_size: int, batch_size: int, drop_last: bool, seed: int) -> tuple[int, int]:
    """(batches, size of the last) of one shuffled epoch of ``torch.utils.data.DataLoader``."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(
        TensorDataset(torch.arange(dataset_size)),
        batch_size=batch_size,
        shuffle=True,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )
    sizes = [len(batch) for (batch,) in loader]
    return len(sizes), sizes[-1]


def batch_order_counts(dataset_size: int, batch_size: int, drop_last: bool, seed: int) -> tuple[int, int]:
    """(batches, size of the last) of one epoch of the training engine's :class:`BatchOrder`."""
    import torch

    from batchscale.empirical.train import BatchOrder

    order = BatchOrder(dataset_size, batch_size, [seed], drop_last, torch.device("cpu"))
    sizes = [order.next().shape[1]]
    while not order.epoch_over():
        sizes.append(order.next().shape[1])
    return len(sizes), sizes[-1]


LOADERS: dict[str, Callable[[int, int, bool, int], tuple[int, int]]] = {
    "DataLoader": data_loader_counts,
    "BatchOrder": batch_order_counts,
}


def count_rows(
    sizes: list[tuple[int, int]],
    seed: int,
    config: dict[str, Any],
    workload: str,
    predict: Callable[[int, int, bool], tuple[int, int]] = predicted_counts,
) -> list[Row]:
    """Steps per epoch and last batch size, predicted vs each real loader, for each (M, m) and drop-last."""
    rows = []
    for dataset_size, batch_size in sizes:
        for drop_last in (False, True):
            steps, last = predict(dataset_size, batch_size, drop_last)
            for loader, count in LOADERS.items():
                got_steps, got_last = count(dataset_size, batch_size, drop_last, seed)
                where = f"{loader}, M={dataset_size}, m={batch_size}, drop_last={drop_last}"
                cfg = {
                    **config,
                    "loader": loader,
                    "dataset_size": dataset_size,
                    "batch_size": batch_size,
                    "drop_last": drop_last,
                }
                for quantity, p, x in (
                    ("steps_per_epoch", steps, got_steps),
                    ("last_batch_size", last, got_last),
                ):
                    rows.append(make_row(CLAIM, quantity, workload, p, x, n_seeds=1, config=cfg, note=where))
    return rows


class BatchVariance(NamedTuple):
    """tr Cov of one batch's mean gradient over ``draws`` reshuffled epochs (eta = 1 update variance)."""

    position: str  # "last" or "first" batch of the epoch
    batch_size: int
    mean: float
    stderr: float
    draws: int


def predicted_trace_cov(dataset_size: int, batch_size: int, trace_cov: float) -> float:
    r""":math:`\mathrm{tr\,Cov}[g_B] = \frac{M-b}{M-1}\frac{\mathrm{tr}\,\Sigma}{b}` for a uniform b-subset.

    The coefficient of eta^2 Sigma in :func:`batchscale.theory.moments.update_moments_at` (mean form,
    reshuffle, per step, batch of b = ``batch_size``).
    """
    from batchscale.theory.moments import update_moments_at

    cov = update_moments_at("mean", "reshuffle", "step", dataset_size, batch_size).covariance
    return float(cov.subs({s: 1 for s in cov.free_symbols})) * trace_cov


def measure_batch_variances(
    workload: Any, seed: int, batch_size: int, draws: int
) -> tuple[list[BatchVariance], float, int]:
    """First and last batch of ``draws`` shuffled DataLoader epochs on the model at its seeded initial
    point: the mean over draws of :math:`|g_B - G|^2`; also tr Sigma (population) and M.

    The per-example gradients g_i of all M examples are formed once (torch.func, (M, P) floats), so a
    batch's gradient is the mean of its rows (the mean-loss batch gradient, no batch-coupled layers).
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from batchscale.empirical.gradients import per_example_gradients

    model, loss_fn = workload.model(seed), workload.per_example_loss
    grads = per_example_gradients(model, loss_fn, workload.x_train, workload.y_train).double()  # (M, P)
    population = int(grads.shape[0])
    full = grads.mean(0)  # (P,): G
    trace_cov = float((grads - full).pow(2).sum(1).mean())  # tr Sigma, divisor M
    loader = DataLoader(
        TensorDataset(torch.arange(population)),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    picks: dict[str, list] = {"first": [], "last": []}
    for _ in range(draws):
        batches = [b for (b,) in loader]
        picks["first"].append(batches[0])
        picks["last"].append(batches[-1])
    sq = {}
    for position, batches in picks.items():
        idx = torch.stack(batches)  # (D, b)
        select = torch.zeros(draws, population, dtype=grads.dtype)  # (D, M): 1/b on the batch's examples
        select.scatter_(1, idx, 1.0 / idx.shape[1])
        sq[position] = (select @ grads - full).pow(2).sum(1).tolist()  # (D,): |g_B - G|^2
    out = []
    for position in ("first", "last"):
        mean, stderr = mean_and_stderr(sq[position])
        size = batch_size if position == "first" else population - batch_size * (population // batch_size)
        out.append(BatchVariance(position, size, mean, stderr, draws))
    return out, trace_cov, population


def variance_rows(
    measured: list[BatchVariance],
    trace_cov: float,
    population: int,
    config: dict[str, Any],
    workload: str,
    predict: Callable[[int, int, float], float] = predicted_trace_cov,
) -> list[Row]:
    rows = []
    for v in measured:
        quantity = "last_batch_trace_cov" if v.position == "last" else "full_batch_trace_cov"
        cfg = {**config, "batch": v.position, "batch_size": v.batch_size, "draws": v.draws}
        rows.append(
            make_row(
                CLAIM,
                quantity,
                workload,
                predict(population, v.batch_size, trace_cov),
                v.mean,
                stderr=v.stderr,
                n_seeds=1,
                config=cfg,
                note=f"{v.position} batch of {v.batch_size}, {v.draws} reshuffled epochs",
            )
        )
    return rows


def run(opts: Options) -> list[Row]:
    """Counts vs two real loaders (M = 1050 and the workload's M), then the last batch's variance."""
    name, options = workload_choice(opts, DEFAULT_WORKLOAD, QUICK_OPTIONS)
    workload = build_workload(opts, name, options)
    population = workload.n_train
    batch_size = BATCH_SIZE if population % BATCH_SIZE else BATCH_SIZE - 1
    draws = DRAWS[opts.quick]
    config = opts.config(CLAIM, name, workload_options=workload.options, draws=draws)
    opts.say(f"accounting: loaders at M=1050 and M={population}, m={batch_size}")
    rows = count_rows([(1050, 100), (population, batch_size)], opts.seed, config, name)
    opts.say(f"accounting: first and last batch variance over {draws} reshuffled epochs")
    measured, trace_cov, population = measure_batch_variances(workload, opts.seed, batch_size, draws)
    return rows + variance_rows(measured, trace_cov, population, config, name)
