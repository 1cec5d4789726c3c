r"""``nqm-transfer``: the noisy quadratic model built from the network's own spectra predicts its steps curve.

Measured: the seeded sweep of :mod:`batchscale.verify.steps_sweep` (shared with ``regimes`` and
``noise-scale``, same store). Predicted: per seed of the sweep, one plain-SGD reference run at a small batch
(16 under ``--quick``, else 32; the sweep's best rate there) for the sweep's steps to the target there,
S_ref. On the training examples (all of them, at most ``CAP``):

- the training loss at step 0 (:math:`L_0`) and at S_ref (:math:`L_T`, the loss at which the network meets
  the sweep's target metric); the loss floor :math:`L_* = 0` (the networks verified here fit their
  training sets; cross-entropy and squared error are >= 0);
- at step ceil(S_ref / 2), half-way, the spectra (:func:`batchscale.empirical.spectrum.network_spectrum`):
  top-k Hessian eigenpairs (Lanczos), the bulk (stochastic Lanczos quadrature), noise along the top
  eigenvectors and tr(Sigma).

Each seed's model (:func:`batchscale.theory.nqm_transfer.transfer_spectrum`, its choices stated there)
starts at :math:`L_0 - L_*` and its target is :math:`L_T - L_*`; its tuned steps at the sweep's batch sizes
(SGD, and heavy ball at the sweep's momentum with the rate tuned) are analysed like the measured curve.
Rows (the prediction is the geometric mean over the seeds of the spectra; the interval judged joins the
measured one with the prediction's seed range, :func:`joined`):

- ``critical_batch`` (per optimizer): the model's McCandlish :math:`B_{crit} = E_{min}/S_{min}` (the
  verdict's definition; the others printed beside it) against the sweep's, with the sweep's seed-bootstrap
  interval; within the declared factor.
- ``steps_shape`` (per optimizer and batch size every seed reached): :math:`S(B)/S_{min}`, each curve over
  its own fitted :math:`S_{min}` (the shape, not the scale: a quadratic model's absolute steps are not the
  claim), measured from the seed-median point with a seed-bootstrap interval (seeds resampled per point,
  the curve refitted).

Planted wrong models in the tests: isotropic noise (the same total spread equally), and the noise x10.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from batchscale.verify.registry import Options
from batchscale.verify.rows import Row, make_row

CLAIM = "nqm-transfer"
MEASURE_BATCH = {True: 16, False: 32}
CAP = 4096  # training examples the spectra are measured on, at most
SPECTRUM = {True: {"k": 10, "probes": 3, "steps": 20}, False: {"k": 20, "probes": 8, "steps": 40}}
N_BOOTSTRAP = 400
LEVEL = 0.95


def measuring_point(rows: Sequence[Mapping[str, Any]], wanted: int) -> tuple[int, float, int] | None:
    """(batch, best rate, steps rounded up) of the SGD sweep row whose batch is nearest ``wanted`` in log
    (ties: the smaller), among rows that reached the target; None when none did."""
    sgd = [r for r in rows if r["optimizer"] == "sgd" and r.get("steps") is not None]
    if not sgd:
        return None
    row = min(sgd, key=lambda r: (abs(math.log(r["batch_size"] / wanted)), r["batch_size"]))
    return int(row["batch_size"]), float(row["learning_rate"]), int(math.ceil(row["steps"]))


def reference_run(opts: Options, sweep: Any, *, also_at: Sequence[int] = ()) -> dict[str, Any] | None:
    """Train the reference run and measure what the model needs (see the module docstring); None when
    SGD reached the target at no batch size or the run diverged.

    ``also_at``: further steps (0..S_ref) where the spectra are measured too, under ``"spectra"`` by step
    (a sensitivity check: the claim's model uses the half-way ones, ``"spectrum"``)."""
    from batchscale.empirical.measure import Training, build_setup
    from batchscale.empirical.measure.training import measuring_mode, sgd_checkpoints, train_loss
    from batchscale.empirical.spectrum import network_spectrum

    point = measuring_point(sweep.rows, MEASURE_BATCH[opts.quick])
    if point is None:
        return None
    batch, lr, steps = point
    half = max(1, math.ceil(steps / 2))
    setup = build_setup(sweep.config["workload"], dict(sweep.config["workload_options"]), opts.device,
                        opts.seed, None, cap=CAP)
    out: dict[str, Any] = {"batch": batch, "lr": lr, "steps": steps, "checkpoint": half,
                           "examples": setup.population, "n_train": int(setup.workload.n_train),
                           "seed": opts.seed, "floor": 0.0}
    opts.say(f"nqm-transfer: SGD reference run, batch {batch}, lr {lr:.4g}, {steps} steps; spectra at {half}")
    spectra: dict[int, Any] = {}
    for cp in sgd_checkpoints(setup, Training(steps, lr, batch, opts.seed), every=1):
        if cp.status != "ok":
            return None
        with measuring_mode(setup.model):
            if cp.step == 0:
                out["initial_loss"] = train_loss(setup)
            if cp.step == half or cp.step in also_at:
                spec = network_spectrum(setup.model, setup.loss_fn, setup.x, setup.y, seed=opts.seed,
                                        **SPECTRUM[opts.quick])
                spectra[cp.step] = spec.as_dict()
                opts.say(f"nqm-transfer: step {cp.step}: top eigenvalue {spec.top_curvature[0]:.4g}, "
                         f"tr(Sigma) {spec.trace_sigma:.4g}, {spec.hvps} Hessian-vector products")
            if cp.step == steps:
                out["target_loss"] = train_loss(setup)
    out["spectrum"] = spectra[half]
    if also_at:
        out["spectra"] = spectra
    return out


def build_model(measured: Mapping[str, Any], **planted: Any) -> Any:
    """The :class:`TransferSpectrum` and model target of a reference run (``planted``: ``noise_model``,
    ``noise_factor`` of :func:`transfer_spectrum`)."""
    from batchscale.theory.nqm_transfer import model_target, transfer_spectrum

    spec = measured["spectrum"]
    initial, target = model_target(measured["initial_loss"], measured["target_loss"], measured["floor"])
    bulk = spec["trace_sigma"] - float(sum(spec["top_noise"]))
    model = transfer_spectrum(spec["top_curvature"], spec["top_noise"], spec["bulk_curvature"],
                              spec["bulk_counts"], bulk, initial, **planted)
    return model, target


def predict(model: Any, target: float, batch_sizes: Sequence[int], population: int, momentum: float,
            max_steps: int = 10**6) -> dict[str, Any]:
    """The model's curve per optimizer (``sgd``, ``momentum``)."""
    from batchscale.theory.nqm_transfer import predict_curve

    return {name: predict_curve(model.spectrum, batch_sizes, target, population=population, optimizer=name,
                                momentum=momentum, max_steps=max_steps)
            for name in ("sgd", "momentum")}


def shape_interval(curve: Any, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict[int, tuple]:
    """Per batch size every seed reached: (measured S/S_min on the seed-median point, its 95% seed-bootstrap
    interval, seeds). Empty when the curve has no fit."""
    from batchscale.verify.steps_sweep import seed_bootstrap

    fit = curve.analysis.fit
    if fit is None:
        return {}
    keep = [i for i, s in enumerate(curve.seed_steps) if s and all(v is not None for v in s)]
    b = np.asarray([curve.batch_sizes[i] for i in keep], dtype=float)  # (n,)
    matrix = [np.asarray(curve.seed_steps[i], dtype=float) for i in keep]
    median = np.asarray([np.median(m) for m in matrix])  # (n,)
    ratio = median / fit.s_min
    if any(m.size > 1 for m in matrix) and b.size >= 3:
        draws, params = seed_bootstrap(b, matrix, n_bootstrap, seed)  # (K, n), (K, 2)
        ratios = draws / params[:, :1]  # (K, n)
        tail = 100 * (1 - LEVEL) / 2
        low, high = np.nanpercentile(ratios, tail, axis=0), np.nanpercentile(ratios, 100 - tail, axis=0)
    else:
        low, high = ratio, ratio
    return {int(b[i]): (float(ratio[i]), (float(low[i]), float(high[i])), int(matrix[i].size))
            for i in range(b.size)}


def _critical_text(analysis: Any) -> str:
    return ", ".join(f"{name} {est.text()}" for name, est in analysis.critical.items())


def joined(ci: tuple[float, float], predictions: Sequence[float]) -> tuple[float, tuple[float, float]]:
    r"""(geometric mean p of the per-seed ``predictions``, the interval judged against the band around p).

    The measured interval [lo, hi] joined with the prediction's seed range [p_min, p_max] as the ratio
    interval [lo/p_max, hi/p_min] (as ``noise-scale`` joins B_simple's seeds with B_crit's interval),
    scaled by p: judging it against [p/t, p t] is judging the ratio against [1/t, t]. With one seed it is
    the measured interval."""
    values = np.asarray([v for v in predictions if math.isfinite(v) and v > 0], dtype=float)
    if values.size == 0:
        return math.nan, ci
    p = float(np.exp(np.mean(np.log(values))))
    return p, (ci[0] * p / float(values.max()), ci[1] * p / float(values.min()))


def _per_seed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def transfer_rows(predicted: Mapping[str, Any], measured: Mapping[str, Any], config: dict[str, Any],
                  workload: str, n_seeds: int, *, seed: int = 0) -> list[Row]:
    """The claim's rows: ``predicted[optimizer]`` a :class:`PredictedCurve` or a list of them (one per
    seed of the spectra), ``measured[optimizer]`` a :class:`batchscale.verify.steps_sweep.Curve`."""
    rows: list[Row] = []
    for name, curve in measured.items():
        models = [m.analysis for m in _per_seed(predicted[name])]
        est = curve.analysis.critical["mccandlish"]
        guesses = [math.nan if m.critical["mccandlish"].value is None else m.critical["mccandlish"].value
                   for m in models]
        value = math.nan if est.value is None else est.value
        ci = (0.0 if est.low is None else est.low, math.inf if est.high is None else est.high)
        guess, span = joined(ci, guesses)
        scale = ", ".join(f"{m.s_min.value:.4g}" for m in models if m.s_min.value is not None)
        rows.append(make_row(
            CLAIM, "critical_batch", workload, guess, value, ci=span, n_seeds=n_seeds, config=config,
            note=f"{name}, verdict uses mccandlish; model per seed of the spectra "
            f"{', '.join(f'{g:.4g}' for g in guesses)} (geometric mean predicted; interval: the sweep's "
            f"[{ci[0]:.4g}, {ci[1]:.4g}] joined with that range); model seed {seed}: "
            f"{_critical_text(models[0])}; measured: {_critical_text(curve.analysis)}; S_min model {scale} "
            f"vs measured {curve.analysis.s_min.text()}",
        ))
    for name, curve in measured.items():
        models = _per_seed(predicted[name])
        shapes = []
        for m in models:
            fit = m.analysis.fit
            shapes.append({b: (s / fit.s_min if fit is not None else math.nan)
                           for b, s in zip(m.batch_sizes, m.steps, strict=True)})
        for b, (ratio, ci, seeds) in shape_interval(curve, seed=seed).items():
            guesses = [shape.get(b, math.nan) for shape in shapes]
            guess, span = joined(ci, guesses)
            rows.append(make_row(
                CLAIM, "steps_shape", workload, guess, ratio, ci=span, n_seeds=seeds, config=config,
                note=f"{name}, B={b}: S(B)/S_min, each curve over its own fitted S_min; model per seed "
                f"{', '.join(f'{g:.4g}' for g in guesses)}; measured interval [{ci[0]:.4g}, {ci[1]:.4g}] "
                "joined with the model's seed range",
            ))
    return rows


def _finite(values: Sequence[float]) -> list[float | None]:
    """The values with inf/nan as None (JSON)."""
    return [float(v) if math.isfinite(v) else None for v in values]


def _median(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.median(finite)) if finite else None


def planted_critical(references: Sequence[Mapping[str, Any]], batch_sizes: Sequence[int],
                     momentum: float) -> dict:
    """What the planted wrong models predict on this network (McCandlish B_crit per optimizer and seed of
    the spectra): on record beside the rows, so the distance to the nearest wrong model is known."""
    out: dict[str, dict[str, list]] = {}
    plants = {"isotropic_noise": {"noise_model": "isotropic"}, "noise_x10": {"noise_factor": 10.0}}
    for label, planted in plants.items():
        out[label] = {"sgd": [], "momentum": []}
        for ref in references:
            model, target = build_model(ref, **planted)
            curves = predict(model, target, batch_sizes, ref["n_train"], momentum)
            for name, c in curves.items():
                out[label][name].append(c.analysis.critical["mccandlish"].value)
    return out


def curves_config(predicted: Mapping[str, Any], measured: Mapping[str, Any]) -> dict[str, Any]:
    """Both curves per optimizer, as plain lists (for the figure and the JSON config); the model's steps
    and rate are the medians over the seeds of the spectra, with the seeds' range."""
    out = {}
    for name, curve in measured.items():
        a = curve.analysis
        models = _per_seed(predicted[name])
        steps = np.asarray([m.steps for m in models], dtype=float)  # (seeds, n)
        rates = np.asarray([m.learning_rates for m in models], dtype=float)  # (seeds, n)
        out[name] = {
            "batch_size": list(curve.batch_sizes),
            "measured_steps": _finite(a.steps),
            "measured_low": _finite(a.steps_low),
            "measured_high": _finite(a.steps_high),
            "measured_learning_rate": [_median(r) for r in curve.seed_learning_rates],
            "model_steps": _finite(np.median(steps, axis=0)),
            "model_low": _finite(steps.min(axis=0)),
            "model_high": _finite(steps.max(axis=0)),
            "model_learning_rate": _finite(np.median(rates, axis=0)),
        }
    return out


def run(opts: Options) -> list[Row]:
    from dataclasses import replace

    from batchscale.verify.steps_sweep import run_sweep

    sweep = run_sweep(opts)
    workload = str(sweep.config["workload"])
    references = [reference_run(replace(opts, seed=s), sweep) for s in opts.seed_list(sweep.n_seeds)]
    if not references or any(r is None for r in references):
        config = opts.config(CLAIM, workload, sweep=sweep.config, store=sweep.store)
        return [make_row(CLAIM, "critical_batch", workload, math.nan, math.nan, n_seeds=0, config=config,
                         note="no reference run: SGD reached the target at no batch size, or diverged")]
    batch_sizes = sweep.curves["sgd"].batch_sizes
    momentum = float(sweep.config["momentum"])
    predicted: dict[str, list] = {"sgd": [], "momentum": []}
    models, targets = [], []
    for ref in references:
        model, target = build_model(ref)
        opts.say(f"nqm-transfer: seed {ref['seed']}: model of {model.spectrum.bins} bins, initial loss "
                 f"{model.spectrum.initial_loss():.4g}, target {target:.4g}")
        for name, curve in predict(model, target, batch_sizes, ref["n_train"], momentum).items():
            predicted[name].append(curve)
        models.append(model.summary())
        targets.append(target)
    config = opts.config(CLAIM, workload, sweep=sweep.config, store=sweep.store, reference=references,
                         model=models, model_target=targets, curves=curves_config(predicted, sweep.curves),
                         planted=planted_critical(references, batch_sizes, momentum))
    return transfer_rows(predicted, sweep.curves, config, workload, sweep.n_seeds, seed=opts.seed)
