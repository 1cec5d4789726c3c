"""A prediction beside its measurement (:class:`Check`) and the plain-arithmetic predictions of the
update's moments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from batchscale.empirical.gradients import SAMPLINGS, minibatch_variance_factor
from batchscale.errors import require

FORMS: tuple[str, ...] = ("mean", "sum")


T = TypeVar("T")


# Default number of standard errors a measurement may differ from its prediction.
Z_TOLERANCE = 4.0


# Relative float floor on tolerances (float32 sums over up to ~1e4 terms).
FLOAT_RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@dataclass(frozen=True)
class Check:
    """One prediction beside its measurement: pass when |measured - predicted| <= tolerance.

    ``tolerance_kind`` says what the tolerance is made of; ``by_construction`` marks a row whose
    agreement follows from how it is measured (e.g. m = M without replacement: the batch is the whole
    population), so its verdict is ``holds_by_construction`` (or ``fail``, which would be a bug).
    """

    quantity: str
    form: str
    sampling: str
    batch_size: int
    predicted: float
    measured: float
    stderr: float
    tolerance: float
    draws: int
    tolerance_kind: str = "z stderr + float floor"
    by_construction: bool = False

    @property
    def passed(self) -> bool:
        return abs(self.measured - self.predicted) <= self.tolerance

    @property
    def verdict(self) -> str:
        """pass | fail | holds_by_construction."""
        if not self.passed:
            return "fail"
        return "holds_by_construction" if self.by_construction else "pass"

    def as_row(self) -> dict[str, object]:
        return {
            "quantity": self.quantity,
            "form": self.form,
            "sampling": self.sampling,
            "m": self.batch_size,
            "predicted": self.predicted,
            "measured": self.measured,
            "stderr": self.stderr,
            "tolerance": self.tolerance,
            "pass": "yes" if self.passed else "no",
            "draws": self.draws,
            "verdict": self.verdict,
            "tolerance_kind": self.tolerance_kind,
        }


def effective_lr(lr: float, form: str, batch_size: int) -> float:
    r""":math:`\eta_\mathrm{eff}`, the step on :math:`g_B`: ``lr`` (mean form) or ``lr * m`` (sum form).

    Mean form :math:`w \leftarrow w - \eta \frac1m \sum_{i\in B} g_i`; sum form
    :math:`w \leftarrow w - \tilde\eta \sum_{i\in B} g_i = w - (\tilde\eta m) g_B` (Masters & Luschi 2018,
    eqs. 3-4). ``lr`` is :math:`\eta` or :math:`\tilde\eta`, ``batch_size`` is m.
    """
    require(form in FORMS, f"unknown loss form {form!r}; expected mean or sum")
    return lr if form == "mean" else lr * batch_size


def predicted_update_mean(lr: float, form: str, batch_size: int, grad_norm: float) -> float:
    r"""Component of :math:`E[\Delta w]` along :math:`-G/|G|`: :math:`\eta_\mathrm{eff} |G|`.

    :math:`E[\Delta w] = -\eta_\mathrm{eff} G` under either sampling scheme (Masters & Luschi 2018,
    sec. 2). ``grad_norm`` is :math:`|G|`.
    """
    return effective_lr(lr, form, batch_size) * grad_norm


def predicted_update_trace_cov(
    lr: float, form: str, batch_size: int, trace_cov: float, sampling: str, population: int
) -> float:
    r""":math:`\mathrm{tr\,Cov}[\Delta w] = \eta_\mathrm{eff}^2\, c(m)\, \mathrm{tr}\,\Sigma`.

    c(m) = 1/m with replacement, (M-m)/(m(M-1)) without (Masters & Luschi 2018, sec. 2). ``trace_cov``
    is :math:`\mathrm{tr}\,\Sigma` (population, divisor M), ``population`` is M.
    """
    c = minibatch_variance_factor(batch_size, population, sampling)
    return effective_lr(lr, form, batch_size) ** 2 * c * trace_cov


def predicted_cosine(b_simple: float, batch_size: int, sampling: str, population: int) -> float:
    r"""Approximate :math:`E[\cos(g_B, G)] \approx 1/\sqrt{1 + c(m)\,B_\mathrm{simple}}`.

    Exact for the ratio :math:`E[g_B\cdot G]/(|G|\sqrt{E|g_B|^2})` since
    :math:`E|g_B|^2 = |G|^2 + c(m)\,\mathrm{tr}\,\Sigma`; the mean cosine :math:`E[g_B\cdot G/|g_B|]/|G|`
    differs from it by a gap of either sign (|g_B| is correlated with :math:`g_B\cdot G`; on least squares
    at m = 1 the mean cosine is about half the ratio) that vanishes when :math:`|g_B|` concentrates.
    With replacement c(m) = 1/m, giving the familiar :math:`1/\sqrt{1 + B_\mathrm{simple}/m}`
    (McCandlish et al. 2018, App. A).
    """
    return 1.0 / math.sqrt(1.0 + minibatch_variance_factor(batch_size, population, sampling) * b_simple)


def draw_indices(population: int, batch_size: int, sampling: str, samples: int, seed: int) -> np.ndarray:
    """``samples`` seeded minibatches of indices (S, m), with or without replacement."""
    rng = np.random.default_rng(seed)
    if sampling == "with":
        return rng.integers(0, population, size=(samples, batch_size))
    return np.argsort(rng.random((samples, population)), axis=1)[:, :batch_size]


def _check_common(lr: float, draws: int, forms: Sequence[str], samplings: Sequence[str]) -> None:
    require(math.isfinite(lr) and lr > 0, f"learning rate must be positive, got {lr}")
    require(draws >= 2, f"need at least 2 draws per batch size, got {draws}")
    for form in forms:
        require(form in FORMS, f"unknown loss form {form!r}; expected mean or sum")
    for sampling in samplings:
        require(sampling in SAMPLINGS, f"unknown sampling {sampling!r}; expected with or without")
