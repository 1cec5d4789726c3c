"""Synthetic regression data where the theory is exact: Gaussian least squares and teacher-student."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from batchscale.empirical.data import Arrays
from batchscale.empirical.models import make_mlp


class LinearRegressionData(NamedTuple):
    """Gaussian least-squares data and the facts that generated it."""

    arrays: Arrays
    spectrum: np.ndarray  # (d,) eigenvalues of E[x x^T] (diagonal)
    w_star: np.ndarray  # (d,) true weights
    noise_std: float


def gaussian_inputs(rng: np.random.Generator, n: int, spectrum: np.ndarray) -> np.ndarray:
    """``n`` draws of x ~ N(0, diag(spectrum)), shape (n, d)."""
    return rng.standard_normal((n, spectrum.size)) * np.sqrt(spectrum)


def linear_regression_data(
    spectrum: Sequence[float], n_train: int, n_test: int, noise_std: float, seed: int
) -> LinearRegressionData:
    r"""Draw :math:`w^* \sim N(0, I_d)`, then :math:`x \sim N(0, \mathrm{diag}(\lambda))` and
    :math:`y = w^{*\top} x + \varepsilon`, :math:`\varepsilon \sim N(0, \sigma^2)` (``noise_std`` = sigma),
    for ``n_train`` training and ``n_test`` test examples, all from ``numpy.random.default_rng(seed)``.

    With per-example loss :math:`(w^\top x - y)^2` the population Hessian is
    :math:`H = 2\,\mathrm{diag}(\lambda)`.
    """
    lam = np.asarray(spectrum, dtype=np.float64)
    rng = np.random.default_rng(seed)
    w_star = rng.standard_normal(lam.size)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = gaussian_inputs(rng, n, lam)  # (n, d)
        y = x @ w_star + noise_std * rng.standard_normal(n)  # (n,)
        return x.astype(np.float32), y.astype(np.float32)[:, None]

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return LinearRegressionData(Arrays(x_train, y_train, x_test, y_test), lam, w_star, float(noise_std))


def teacher_student_data(
    dim: int,
    teacher_hidden: Sequence[int],
    out_dim: int,
    n_train: int,
    n_test: int,
    label_noise: float,
    seed: int,
) -> tuple[Arrays, float]:
    """Inputs x ~ N(0, I_dim) and targets ``t(x) / s + noise``: ``t`` a ReLU MLP with torch's default
    initialisation drawn from ``seed``, ``s`` the standard deviation of its outputs on the training inputs
    (so clean targets have unit variance), noise ~ N(0, label_noise^2). Returns the arrays and ``s``.
    """
    rng = np.random.default_rng(seed)
    x_train = rng.standard_normal((n_train, dim)).astype(np.float32)
    x_test = rng.standard_normal((n_test, dim)).astype(np.float32)
    teacher = make_mlp(seed, in_dim=dim, hidden=teacher_hidden, out_dim=out_dim)
    with torch.no_grad():
        t_train = teacher(torch.from_numpy(x_train)).numpy().astype(np.float64)  # (n_train, out_dim)
        t_test = teacher(torch.from_numpy(x_test)).numpy().astype(np.float64)
    scale = float(t_train.std()) or 1.0

    def targets(t: np.ndarray) -> np.ndarray:
        return (t / scale + label_noise * rng.standard_normal(t.shape)).astype(np.float32)

    return Arrays(x_train, targets(t_train), x_test, targets(t_test)), scale
