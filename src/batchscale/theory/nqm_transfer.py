r"""The noisy quadratic model (:mod:`batchscale.theory.nqm`) built from a network's measured spectra, and the
steps-to-target curves it predicts (the ``nqm-transfer`` claim of docs/claims.md).

Inputs are plain numbers measured on the network at one checkpoint (by
:mod:`batchscale.empirical.spectrum`): the top-k Hessian eigenvalues :math:`\lambda_i` with the per-example
gradient-noise variances :math:`c_i = v_i^\top\Sigma v_i` along their eigenvectors, the rest of the
Hessian spectrum as nodes :math:`\theta_j` with coordinate counts :math:`n_j` (stochastic Lanczos
quadrature), and the noise outside the top directions, :math:`\mathrm{tr}\,\Sigma - \sum_i c_i`.

Choices, each stated where it is made:

1. **Curvature**: the top eigenvalues one coordinate each, the bulk nodes with their counts; nodes at or
   below ``min_curvature_ratio`` :math:`\times \lambda_1` (flat and negative directions, which a
   quadratic with a minimum cannot hold) are dropped, and the counts and trace they carried are reported.
2. **Noise**: measured along the top directions; the bulk's total spread over the kept bulk nodes in
   proportion to curvature, :math:`c_j = r\theta_j` with :math:`r = (\mathrm{tr}\,\Sigma - \sum_i c_i) /
   \sum_j n_j\theta_j` (the NQM's own assumption :math:`\Sigma \propto H`, Zhang et al. Sec. 3.1, applied
   only where nothing was measured).
3. **Start**: the same :math:`E[x_{i,0}^2]` on every coordinate (Zhang et al.'s isotropic start), scaled
   so the model's initial loss :math:`\tfrac12\sum n h E[x_0^2]` is the network's initial training loss
   above its floor.
4. **Target**: the model's loss is the network's training loss above the floor :math:`L_*`: the target
   is the training loss the network has when it first meets the sweep's target metric, minus :math:`L_*`.
5. **Batch**: the sweep draws batches without replacement from M examples, so a batch of B has gradient
   variance :math:`\frac{M - B}{B(M-1)}\,c`: the model runs at the effective batch
   :math:`B_{eff} = B\,(M-1)/(M-B)` (:func:`effective_batch`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchscale.errors import require
from batchscale.theory.spectra import Spectrum, make_spectrum

MIN_CURVATURE_RATIO = 1e-3
NOISE_MODELS = ("measured", "isotropic")


@dataclass(frozen=True)
class TransferSpectrum:
    """The model's :class:`Spectrum` and what building it dropped or assumed."""

    spectrum: Spectrum
    dropped_count: float
    dropped_trace: float
    bulk_noise_per_curvature: float
    noise_model: str

    def summary(self) -> dict[str, Any]:
        s = self.spectrum
        return {
            "coordinates": float(s.counts.sum()),
            "bins": s.bins,
            "top_curvature": float(s.curvature.max()),
            "trace_h": float(np.dot(s.counts, s.curvature)),
            "trace_c": float(np.dot(s.counts, s.noise)),
            "dropped_count": self.dropped_count,
            "dropped_trace": self.dropped_trace,
            "bulk_noise_per_curvature": self.bulk_noise_per_curvature,
            "initial_loss": s.initial_loss(),
            "noise_model": self.noise_model,
        }


def transfer_spectrum(
    top_curvature: Sequence[float],
    top_noise: Sequence[float],
    bulk_curvature: Sequence[float],
    bulk_counts: Sequence[float],
    bulk_noise: float,
    initial_loss: float,
    *,
    min_curvature_ratio: float = MIN_CURVATURE_RATIO,
    noise_model: str = "measured",
    noise_factor: float = 1.0,
) -> TransferSpectrum:
    r"""The NQM of the module's choices 1-3 from measured parts.

    ``noise_model='isotropic'`` (a planted wrong model) instead gives every kept coordinate the same
    variance :math:`(\sum_i c_i + \text{bulk noise}) / \sum n`; ``noise_factor`` multiplies every
    :math:`c` (another planted wrong model when not 1).
    """
    require(noise_model in NOISE_MODELS, f"unknown noise model {noise_model!r}")
    h_top = np.asarray(top_curvature, dtype=float)
    c_top = np.maximum(np.asarray(top_noise, dtype=float), 0.0)
    theta = np.asarray(bulk_curvature, dtype=float)
    counts = np.asarray(bulk_counts, dtype=float)
    require(h_top.size >= 1 and h_top.size == c_top.size, "need as many top noise variances as eigenvalues")
    require(theta.size == counts.size, "need one count per bulk node")
    require(math.isfinite(initial_loss) and initial_loss > 0, f"initial loss above the floor must be > 0, "
            f"got {initial_loss}")
    scale = float(h_top.max())
    require(scale > 0, f"the top Hessian eigenvalue must be positive, got {scale}")
    keep_top = h_top > min_curvature_ratio * scale
    keep = theta > min_curvature_ratio * scale
    dropped_count = float(counts[~keep].sum() + (~keep_top).sum())
    dropped_trace = float(np.dot(counts[~keep], theta[~keep]) + h_top[~keep_top].sum())
    h_top, c_top, theta, counts = h_top[keep_top], c_top[keep_top], theta[keep], counts[keep]
    bulk_trace = float(np.dot(counts, theta))
    rest = max(float(bulk_noise), 0.0)
    r = rest / bulk_trace if bulk_trace > 0 else 0.0
    h = np.concatenate([h_top, theta])
    n = np.concatenate([np.ones(h_top.size), counts])
    c = np.concatenate([c_top, r * theta])
    if noise_model == "isotropic":
        c = np.full(h.size, (float(c_top.sum()) + rest) / float(n.sum()))
    init = initial_loss / (0.5 * float(np.dot(n, h)))
    spectrum = make_spectrum(h, c * noise_factor, counts=n, init_sq=init)
    return TransferSpectrum(spectrum, dropped_count, dropped_trace, r, noise_model)


def effective_batch(batch_size: float, population: int) -> float:
    r""":math:`B_{eff} = B (M - 1)/(M - B)`: the batch with replacement whose gradient variance
    :math:`c/B_{eff}` equals that of B drawn without replacement from M, :math:`\frac{M-B}{B(M-1)}c`
    (infinite at B = M: no noise)."""
    require(1 <= batch_size <= population, f"batch size must be in 1..{population}, got {batch_size}")
    if batch_size >= population:
        return math.inf
    return batch_size * (population - 1) / (population - batch_size)


def model_target(initial_loss: float, target_loss: float, floor: float = 0.0) -> tuple[float, float]:
    """(initial, target) of the model: the network's training losses above the floor ``floor`` (choice 4)."""
    require(math.isfinite(floor), f"loss floor must be finite, got {floor}")
    require(target_loss > floor,
            f"the target training loss {target_loss:.4g} must be above the floor {floor:g}")
    require(initial_loss > target_loss, f"the initial training loss {initial_loss:.4g} must be above the "
            f"target's {target_loss:.4g}")
    return initial_loss - floor, target_loss - floor


@dataclass(frozen=True)
class PredictedCurve:
    """The model's tuned steps per (real) batch size, its rates, and the curve's analysis
    (:class:`batchscale.theory.regimes.CurveAnalysis`, the same analysis the measured sweep gets)."""

    optimizer: str
    batch_sizes: tuple[int, ...]
    steps: tuple[float, ...]
    learning_rates: tuple[float, ...]
    analysis: Any

    def rows(self) -> list[dict[str, Any]]:
        return [{"batch_size": b, "steps": s, "learning_rate": lr}
                for b, s, lr in zip(self.batch_sizes, self.steps, self.learning_rates, strict=True)]


def predict_curve(
    spectrum: Spectrum,
    batch_sizes: Sequence[int],
    target: float,
    *,
    population: int,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    lr_points: int = 40,
    max_steps: int = 10**6,
) -> PredictedCurve:
    r"""Fewest steps to ``target`` per batch size with the learning rate tuned (momentum fixed at
    ``momentum`` for ``optimizer='momentum'``, as the sweep does), on the effective batches of
    :func:`effective_batch`; analysed by :func:`batchscale.theory.regimes.analyze_steps_curve`.

    Learning rates: ``lr_points`` log-spaced from :math:`10^{-5}` of the stability limit up to it
    (:math:`2/\lambda_1`, with momentum :math:`2(1+\beta)/\lambda_1`), then golden-section refinement.
    """
    from batchscale.theory import nqm
    from batchscale.theory.regimes import analyze_steps_curve

    require(optimizer in ("sgd", "momentum"), f"optimizer must be sgd or momentum, got {optimizer!r}")
    require(0 < target < spectrum.initial_loss(), f"target {target:.4g} must lie between 0 and the initial "
            f"loss {spectrum.initial_loss():.4g}")
    limit = 2.0 / float(spectrum.curvature.max()) * ((1.0 + momentum) if optimizer == "momentum" else 1.0)
    top = math.log10(limit * (1.0 - 1e-6))
    lrs = nqm.decade_grid(top - 5.0, top, lr_points)
    batches = [int(b) for b in batch_sizes]
    eff = [min(effective_batch(b, population), 1e15) for b in batches]
    curve = nqm.tune_steps(spectrum, eff, target, lr_grid=lrs,
                           momentum_grid=[momentum] if optimizer == "momentum" else None,
                           search="continuous", max_steps=max_steps)
    ok = curve.status == nqm.OK
    steps = tuple(float(s) if good else math.inf for s, good in zip(curve.steps, ok, strict=True))
    rates = tuple(float(r) if good else math.nan for r, good in zip(curve.learning_rate, ok, strict=True))
    return PredictedCurve(optimizer, tuple(batches), steps, rates, analyze_steps_curve(batches, list(steps)))


__all__ = [
    "MIN_CURVATURE_RATIO",
    "PredictedCurve",
    "TransferSpectrum",
    "effective_batch",
    "model_target",
    "predict_curve",
    "transfer_spectrum",
]
