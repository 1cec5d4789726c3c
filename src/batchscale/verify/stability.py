r"""``stability``: the largest stable learning rate vs batch size on least squares, theory vs training.

Theory (:func:`batchscale.theory.stability.dataset_mean_square_steps`): for the fixed dataset of the
``linreg`` workload, batches of m drawn with replacement, the second moment of the error evolves by an
exact linear map; its spectral radius crosses 1 at the largest mean-square-stable step, which grows about
linearly in m and saturates at the full-batch bound :math:`2/\lambda_{max}` (Ma, Bassily & Belkin 2018).
The theory's loss is :math:`(w^\top x - y)^2/2` and the workload's is :math:`(w^\top x - y)^2`, so the
workload's learning rate is half the theory's step.

Measured: many SGD runs (batches with replacement, mean loss, weights from zero) on a geometric grid of
learning rates around the prediction; a run diverges when its training loss exceeds 1e4 times the loss
at the start (or is not finite) within the step budget. Each seed's boundary is the geometric mean of
its largest stable and smallest divergent learning rate; the row reports their geometric mean over
seeds with a 95% interval (the seeds' spread combined with half the grid's spacing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from batchscale.verify.common import build_workload, mean_and_stderr
from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, make_row

CLAIM = "stability"
WORKLOAD = "linreg"
QUICK_OPTIONS = {"dim": 10, "n_train": 256, "n_test": 16, "noise_std": 0.0}
FULL_OPTIONS = {"dim": 20, "n_train": 1024, "n_test": 16, "noise_std": 0.0}
BATCH_SIZES = {True: (1, 8, 64), False: (1, 2, 4, 8, 16, 32, 64, 128, 256)}
STEPS = {True: 400, False: 3000}
GRID = tuple(2.0 ** (k / 8) for k in range(-8, 11))  # 0.5x .. 2.4x the prediction, 9% apart
GRID_HALF_STEP = math.log(2.0) / 16  # half the log-spacing of GRID
BLOW_UP = 1e4
SEEDS = {True: 5, False: 8}


def predicted_max_lr(inputs: Any, batch_size: int) -> float:
    """The workload's largest mean-square-stable learning rate: half the theory's step (loss without 1/2)."""
    from batchscale.theory.stability import dataset_mean_square_steps

    return dataset_mean_square_steps(inputs, batch_size).max_stable_step / 2


def full_batch_lr(inputs: Any, batch_size: int) -> float:
    """2/lambda_max of the workload's loss at every m (the full-batch bound): a planted wrong prediction."""
    import numpy as np

    x = np.asarray(inputs, dtype=float)
    return 2.0 / (2.0 * float(np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]))


def diverges(workload: Any, batch_size: int, lrs: list[float], seeds: list[int], steps: int) -> Any:
    """(L, K) booleans: does the run with learning rate lrs[l] and batch seed seeds[k] blow up?

    All L x K runs train together: weights W (L, K, d) from zero; batch k draws ``batch_size`` examples
    with replacement from the seeded generator of seed k (shared by every learning rate).
    """
    import torch

    x, y = workload.x_train.double(), workload.y_train.double()  # (M, d), (M, 1)
    n, d = x.shape
    lr = torch.tensor(lrs, dtype=torch.float64)[:, None, None]  # (L, 1, 1)
    w = torch.zeros(len(lrs), len(seeds), d, dtype=torch.float64, requires_grad=True)  # (L, K, d)
    generators = [torch.Generator().manual_seed(s) for s in seeds]

    def losses(idx: Any) -> Any:  # idx (K, B) -> mean loss per run (L, K)
        out = torch.einsum("kbd,lkd->lkb", x[idx], w)  # (L, K, B)
        target = y[idx][None, :, :, 0].expand_as(out)  # (L, K, B)
        per = workload.per_example_loss(out.reshape(-1, 1), target.reshape(-1, 1))
        return per.reshape(out.shape).mean(-1)

    with torch.no_grad():
        start = losses(torch.arange(n).expand(len(seeds), n))  # (L, K): full training loss at w = 0
    for _ in range(steps):
        idx = torch.stack([torch.randint(n, (batch_size,), generator=g) for g in generators])  # (K, B)
        (grad,) = torch.autograd.grad(losses(idx).sum(), w)
        with torch.no_grad():
            w -= lr * grad
            w.nan_to_num_(nan=math.inf)
    with torch.no_grad():
        final = losses(torch.arange(n).expand(len(seeds), n))
    return ~(final <= BLOW_UP * start)  # nan and inf count as divergence


def boundaries(lrs: list[float], diverged: Any) -> list[float]:
    """Per seed: the geometric mean of the largest stable lr below its first divergent lr and that lr
    (nan when the grid does not bracket the boundary)."""
    out = []
    for k in range(diverged.shape[1]):
        column = diverged[:, k].tolist()
        first = next((i for i, bad in enumerate(column) if bad), None)
        out.append(math.nan if first is None or first == 0 else math.sqrt(lrs[first - 1] * lrs[first]))
    return out


class StabilityPoint(NamedTuple):
    batch_size: int
    predicted: float  # predicted_max_lr at this batch size
    boundaries: list[float]  # measured, per seed


def stability_rows(
    inputs: Any,
    points: list[StabilityPoint],
    config: dict[str, Any],
    predict: Callable[[Any, int], float] | None = None,
) -> list[Row]:
    """One row per batch size; ``predict(inputs, m)`` replaces the stored prediction (planted tests)."""
    rows = []
    for p in points:
        predicted = p.predicted if predict is None else predict(inputs, p.batch_size)
        logs = [math.log(b) for b in p.boundaries if math.isfinite(b)]
        cfg = {**config, "batch_size": p.batch_size, "boundaries": p.boundaries}
        note = f"m={p.batch_size}: {len(logs)} of {len(p.boundaries)} seeds bracketed by the grid"
        if len(logs) < 2:
            rows.append(
                make_row(
                    CLAIM,
                    "max_stable_lr",
                    WORKLOAD,
                    predicted,
                    math.nan,
                    n_seeds=len(logs),
                    config=cfg,
                    note=note,
                )
            )
            continue
        mean, stderr = mean_and_stderr(logs)
        half = math.hypot(1.96 * stderr, GRID_HALF_STEP)  # seeds' spread and the grid's resolution
        ci = (math.exp(mean - half), math.exp(mean + half))
        rows.append(
            make_row(
                CLAIM,
                "max_stable_lr",
                WORKLOAD,
                predicted,
                math.exp(mean),
                ci=ci,
                n_seeds=len(logs),
                config=cfg,
                note=note,
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------------
# Networks: the local quadratic model with measured sharpness and curvature noise vs bisected training
# ---------------------------------------------------------------------------------------------------

NETWORK = "digits-mlp"
NETWORK_QUICK_OPTIONS = {"hidden": 64}
NETWORK_BATCHES = {True: (1, 8, 64, 512), False: (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)}
NETWORK_STEPS = {True: 100, False: 300}
NETWORK_BISECTIONS = {True: 2, False: 3}
NETWORK_SEEDS = 3
NETWORK_TOL = {True: 1e-3, False: 1e-4}  # Lanczos' relative tolerance on lambda_max


class NetworkPoint(NamedTuple):
    batch_size: int
    predicted: float  # the model's largest stable learning rate (mean form) at this batch size
    boundaries: list[float]  # measured, per seed (nan: not bracketed)
    half_widths: list[float]  # per seed, half the bracket in natural log


def network_prediction(noise: Sequence[Any], n_train: int, rule: str = "model") -> Callable[[int], float]:
    """``m -> eta_max(m)`` from the seeds' :class:`batchscale.empirical.curvature_noise.CurvatureNoise`
    (their means of lambda and S^2): the model (``model``), or a planted wrong rule: ``along-v`` (only the
    spread of v^T H_i v, not of all of H_i v), ``no-noise`` (2/lambda at every m) or ``linear`` (the
    model's eta_max(1) x m: linear scaling past the noise-dominated range)."""
    from batchscale.theory.stability import curvature_noise_max_stable_step

    curvature = sum(n.mean for n in noise) / len(noise)
    spread = sum((n.along_variance if rule == "along-v" else n.spread) for n in noise) / len(noise)

    def model(m: int) -> float:
        return curvature_noise_max_stable_step(curvature, spread, m, n_train)

    if rule in ("model", "along-v"):
        return model
    if rule == "no-noise":
        return lambda m: 2.0 / curvature
    if rule == "linear":
        return lambda m: model(1) * m
    raise ValueError(f"unknown rule {rule!r}")


def _log_interval(
    boundaries: list[float], half_widths: list[float]
) -> tuple[float, tuple[float, float], int]:
    """Geometric mean of the bracketed seeds' boundaries and its 95% interval: a Student-t interval on the
    logs combined with the brackets' mean half-width (their resolution)."""
    from batchscale.verify.lr_grid import t_interval

    pairs = [(math.log(b), h) for b, h in zip(boundaries, half_widths, strict=True) if math.isfinite(b)]
    mean, low, high = t_interval([p for p, _ in pairs])
    if not pairs:
        return math.nan, (math.nan, math.nan), 0
    half = math.hypot((high - mean) if math.isfinite(high) else 0.0, sum(h for _, h in pairs) / len(pairs))
    return math.exp(mean), (math.exp(mean - half), math.exp(mean + half)), len(pairs)


def network_rows(
    points: list[NetworkPoint],
    workload: str,
    config: dict[str, Any],
    predict: Callable[[int], float] | None = None,
    narrowing: str = "narrows",
) -> list[Row]:
    """Per batch size ``max_stable_lr_network`` (predicted by ``predict``, default the stored model
    prediction); then ``max_stable_base_lr_slope`` (per-seed least-squares slope of log(eta_max / m) on
    log m against the prediction's) and ``base_lr_range_narrows`` (Masters & Luschi, one-sided:
    ``narrows`` is the claim, ``widens`` a planted wrong prediction)."""
    from batchscale.verify.common import log_log_slope
    from batchscale.verify.lr_grid import t_interval

    rows = []
    predicted_at = {p.batch_size: p.predicted if predict is None else predict(p.batch_size) for p in points}
    for p in points:
        measured, ci, n = _log_interval(p.boundaries, p.half_widths)
        note = f"m={p.batch_size}: {n} of {len(p.boundaries)} seeds bracketed"
        cfg = {**config, "batch_size": p.batch_size, "boundaries": p.boundaries}
        rows.append(make_row(CLAIM, "max_stable_lr_network", workload, predicted_at[p.batch_size], measured,
                             ci=ci if n >= 2 else None, n_seeds=n, config=cfg, note=note))
    sizes = [p.batch_size for p in points]
    slopes = []
    for k in range(len(points[0].boundaries)):
        pts = [(p.batch_size, p.boundaries[k] / p.batch_size) for p in points
               if math.isfinite(p.boundaries[k])]
        if len(pts) >= 2:
            slopes.append(log_log_slope([a for a, _ in pts], [b for _, b in pts]))
    predicted_slope = log_log_slope(sizes, [predicted_at[m] / m for m in sizes])
    mean, low, high = t_interval(slopes)
    shown = ", ".join(f"{x:.3g}" for x in slopes)
    ci = (low, high) if math.isfinite(low) else None
    rows.append(make_row(CLAIM, "max_stable_base_lr_slope", workload, predicted_slope, mean, ci=ci,
                         n_seeds=len(slopes), config=config,
                         note=f"d log(eta_max/m) / d log m over m={sizes[0]}..{sizes[-1]}; per seed {shown}"))
    rows.append(narrowing_row(mean, ci, len(slopes), workload, config, narrowing))
    return rows


def narrowing_row(slope: float, ci: tuple[float, float] | None, n_seeds: int, workload: str,
                  config: dict[str, Any], claim: str = "narrows") -> Row:
    """One-sided: the stable range of the base rate narrows as m grows iff the slope of the largest
    stable base rate is < 0: pass when its 95% interval lies below 0 (for ``narrows``; above 0 for the
    planted ``widens``), fail when it lies on the other side, inconclusive when it holds 0."""
    from batchscale.verify.tolerances import tolerance

    declared = tolerance(CLAIM, "base_lr_range_narrows")
    if ci is None or not all(math.isfinite(x) for x in ci):
        verdict, reason = "inconclusive", "no interval for the slope"
    elif ci[1] < 0 or ci[0] > 0:
        below = ci[1] < 0
        verdict = "pass" if below == (claim == "narrows") else "fail"
        reason = f"95% interval [{ci[0]:.3g}, {ci[1]:.3g}] lies {'below' if below else 'above'} 0"
    else:
        verdict, reason = "inconclusive", f"95% interval [{ci[0]:.3g}, {ci[1]:.3g}] holds 0: too noisy"
    reason += f"; predicted: the largest stable base rate eta_max/m {claim} as m grows (Masters & Luschi)"
    return Row(claim=CLAIM, quantity="base_lr_range_narrows", workload=workload, predicted=0.0,
               measured=slope, ci_low=None if ci is None else ci[0], ci_high=None if ci is None else ci[1],
               stderr=None, tolerance=float(declared.value), tolerance_kind=declared.kind, verdict=verdict,
               reason=reason, n_seeds=n_seeds, config=config)


def network_run(opts: Options, name: str, options: dict[str, Any]) -> list[Row]:
    """Measure lambda and the curvature noise at each seed's initial point, predict eta_max(m), and bisect
    the divergence boundary of training at each m (stored trials)."""
    from batchscale.empirical.curvature_noise import curvature_noise
    from batchscale.empirical.device import resolve_device
    from batchscale.empirical.executors import ExecutorConfig
    from batchscale.empirical.sweep.boundary import BoundarySearch, run_boundary_search
    from batchscale.verify.lr_grid import store_path

    workload = build_workload(opts, name, options, data_seed=opts.seed)
    seeds = opts.seed_list(NETWORK_SEEDS)
    batches = tuple(m for m in NETWORK_BATCHES[opts.quick] if m <= workload.n_train)
    noise = []
    for s in seeds:
        opts.say(f"stability: lambda_max and curvature noise at seed {s}'s initial point")
        noise.append(curvature_noise(workload.model(s), workload.per_example_loss, workload.x_train,
                                     workload.y_train, tol=NETWORK_TOL[opts.quick], seed=s))
    predict = network_prediction(noise, workload.n_train)
    search = BoundarySearch(workload=name, workload_options=tuple(options.items()), batch_sizes=batches,
                            seeds=tuple(seeds), max_steps=NETWORK_STEPS[opts.quick],
                            bisections=NETWORK_BISECTIONS[opts.quick], data_seed=opts.seed,
                            device=str(resolve_device(opts.device)))
    store = store_path(opts.db)
    opts.say(f"stability: divergence boundary at m = {', '.join(map(str, batches))} in {store}")
    found, stats = run_boundary_search(search, [predict(m) for m in batches], store=store,
                                   executor=ExecutorConfig(name="inline"), n_train=workload.n_train,
                                   progress=opts.say)
    points = [NetworkPoint(m, predict(m), [b.boundary for b in found[m]], [b.half_width for b in found[m]])
              for m in batches]
    config = opts.config(
        CLAIM, name, workload_options=workload.options, n_train=workload.n_train, seeds=seeds,
        steps=search.max_steps,
        bisections=search.bisections, store=store, trials={"trained": stats.trained, "reused": stats.reused},
        divergence="the engine's rule: non-finite training loss "
        "or test loss > 10x its initial value",
        per_seed=[{"lambda_max": n.eigenvalue, "mean_vHv": n.mean, "spread_S2": n.spread,
                   "along_v_variance": n.along_variance, "residual": n.residual} for n in noise],
    )
    return network_rows(points, name, config)


def run(opts: Options) -> list[Row]:
    """Least squares (``linreg``, with ``-W`` options) and the network ``digits-mlp`` at its defaults;
    ``--workload`` picks one (``linreg``, or any network)."""
    if opts.workload is None:
        options = dict(NETWORK_QUICK_OPTIONS) if opts.quick else {}
        return least_squares_run(opts) + network_run(opts, NETWORK, options)
    if opts.workload == WORKLOAD:
        return least_squares_run(opts)
    return network_run(opts, opts.workload, dict(opts.workload_options))


def least_squares_run(opts: Options) -> list[Row]:
    name, options = WORKLOAD, {**(QUICK_OPTIONS if opts.quick else {}), **dict(opts.workload_options)}
    if not opts.quick and not opts.workload_options:
        options = dict(FULL_OPTIONS)
    workload = build_workload(opts, name, options, data_seed=opts.seed)
    inputs = workload.x_train.double().cpu().numpy()
    seeds = opts.seed_list(SEEDS[opts.quick])
    steps = STEPS[opts.quick]
    config = opts.config(
        CLAIM,
        name,
        workload_options=workload.options,
        seeds=seeds,
        steps=steps,
        blow_up=BLOW_UP,
        grid=[GRID[0], GRID[-1], len(GRID)],
    )
    points = []
    for m in BATCH_SIZES[opts.quick]:
        centre = predicted_max_lr(inputs, m)
        lrs = [centre * f for f in GRID]
        opts.say(f"stability: m={m}: {len(lrs)} learning rates x {len(seeds)} seeds, {steps} steps")
        points.append(StabilityPoint(m, centre, boundaries(lrs, diverges(workload, m, lrs, seeds, steps))))
    return stability_rows(inputs, points, config)
