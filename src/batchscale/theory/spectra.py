r"""Curvature and gradient-noise spectra for the noisy quadratic model (Zhang et al. 2019, arXiv 1907.04164).

A :class:`Spectrum` is a diagonal quadratic in "bins": bin k holds ``counts[k]`` coordinates that share the
curvature h_k (``curvature``), the per-example gradient-noise variance c_k (``noise``) and the initial
second moment E[x_k^2] (``init_sq``). Without binning every count is 1. The expected loss is
:math:`\tfrac12 \sum_k n_k h_k E[x_k^2]`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchscale.errors import InputError, require
from batchscale.power_law import power_law_eigenvalues


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Binned diagonal quadratic: curvatures h_k, noise variances c_k, multiplicities n_k, E[x_k^2] at t=0."""

    curvature: np.ndarray
    noise: np.ndarray
    counts: np.ndarray
    init_sq: np.ndarray

    @property
    def dim(self) -> int:
        """Number of coordinates d = sum_k n_k."""
        return int(round(float(self.counts.sum())))

    @property
    def bins(self) -> int:
        """Number of bins K."""
        return int(self.curvature.size)

    def initial_loss(self) -> float:
        r""":math:`L_0 = \tfrac12 \sum_k n_k h_k E[x_{k,0}^2]`."""
        return float(0.5 * np.sum(self.counts * self.curvature * self.init_sq))


def _as_vector(values, name: str, size: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim == 0 and size is not None:
        array = np.full(size, float(array))
    require(array.ndim == 1, f"{name} must be a 1-D list of numbers, got shape {array.shape}")
    require(array.size > 0, f"{name} is empty")
    require(size is None or array.size == size, f"{name} has {array.size} values, expected {size}")
    return array


def _require_all(values: np.ndarray, ok: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(~ok)
    if bad.size:
        raise InputError(f"{what}; got {float(values[bad[0]])} at index {int(bad[0])}")


def make_spectrum(
    curvature,
    noise=None,
    *,
    counts=None,
    init_sq=1.0,
    noise_scale: float = 1.0,
) -> Spectrum:
    """Check and bundle a spectrum; ``noise`` defaults to the curvature (C = H, Zhang et al. Sec. 3.1).

    ``noise_scale`` multiplies the noise variances (c_k -> noise_scale * c_k).
    """
    h = _as_vector(curvature, "curvature")
    _require_all(h, np.isfinite(h) & (h > 0), "eigenvalues must be positive and finite")
    require(math.isfinite(noise_scale) and noise_scale >= 0, f"noise scale must be >= 0, got {noise_scale}")
    c = h.copy() if noise is None else _as_vector(noise, "noise", h.size)
    _require_all(c, np.isfinite(c) & (c >= 0), "noise variances must be >= 0 and finite")
    n = _as_vector(1.0 if counts is None else counts, "counts", h.size)
    require(bool(np.all(np.isfinite(n) & (n > 0))), "bin counts must be positive")
    x0 = _as_vector(init_sq, "initial E[x^2]", h.size)
    require(bool(np.all(np.isfinite(x0) & (x0 >= 0))), "initial E[x^2] must be >= 0 and finite")
    return Spectrum(h, noise_scale * c, n, x0)


BINNINGS = ("geometric", "zhang2019")


def power_law_spectrum(
    dim: int = 10_000, alpha: float = 1.0, *, noise_scale: float = 1.0, bins: int = 0,
    binning: str = "geometric",
) -> Spectrum:
    r""":math:`h_i = i^{-\alpha}`, :math:`c_i = h_i`, :math:`E[x_{i,0}^2] = 1`, i = 1..d (Zhang et al. 3.1).

    d is ``dim``, alpha is ``alpha`` (eigenvalues from :func:`batchscale.power_law.power_law_eigenvalues`);
    ``bins`` > 0 groups the d eigenvalues into that many bins by ``binning`` (:func:`bin_spectrum`).
    """
    require(math.isfinite(alpha) and alpha >= 0, f"alpha must be >= 0, got {alpha}")
    h = power_law_eigenvalues(dim, alpha)
    spectrum = make_spectrum(h, noise_scale=noise_scale)
    return bin_spectrum(spectrum, bins, binning) if bins else spectrum


def bin_spectrum(spectrum: Spectrum, bins: int, binning: str = "geometric") -> Spectrum:
    """``spectrum`` in ``bins`` bins: :func:`geometric_bins` (``'geometric'``, the default: bin means) or
    :func:`zhang2019_bins` (``'zhang2019'``: eigenvalues rounded down to the bin values)."""
    require(binning in BINNINGS, f"unknown binning {binning!r}; expected one of {', '.join(BINNINGS)}")
    return zhang2019_bins(spectrum, bins) if binning == "zhang2019" else geometric_bins(spectrum, bins)


def zhang2019_bins(spectrum: Spectrum, bins: int) -> Spectrum:
    r"""The grouping of Zhang et al.'s public notebook: each :math:`h_i` rounded down to a bin value.

    The bin values are ``bins`` numbers in geometric progression from :math:`\max_i h_i` down to
    :math:`\min_i h_i`, :math:`b_k = h_{\max} (h_{\min}/h_{\max})^{k/(K-1)}` (K is ``bins``); coordinate i
    goes to the largest :math:`b_k \le h_i` and takes :math:`b_k` as its curvature. Its noise variance
    is scaled with it, :math:`c_i b_k / h_i` (so C = H stays C = H: :math:`c = b_k`, as in the notebook),
    and each bin keeps the count-weighted means of these and of :math:`E[x_{i,0}^2]`. Unlike
    :func:`geometric_bins` this lowers every curvature (by up to the ratio of neighbouring bin values),
    so tr(H) and the initial loss are below the unbinned problem's. Empty bins are dropped.
    Zhang et al. 2019, arXiv 1907.04164, notebook github.com/gd-zhang/noisy-quadratic-model (nqm.ipynb).
    """
    require(isinstance(bins, (int, np.integer)) and bins >= 1, f"bins must be a positive integer, got {bins}")
    h, n = spectrum.curvature, spectrum.counts
    values = np.geomspace(h.max(), h.min(), bins) if bins > 1 else np.array([h.min()])  # descending
    ascending = values[::-1]
    # the largest bin value <= h_i (the smallest value is min h, so every h_i has one)
    position = np.searchsorted(ascending, h, side="right") - 1  # index into ascending
    index = np.clip(position, 0, bins - 1)
    count = np.bincount(index, weights=n, minlength=bins)
    keep = count > 0

    def mean(values_i: np.ndarray) -> np.ndarray:
        return np.bincount(index, weights=n * values_i, minlength=bins)[keep] / count[keep]

    curvature = ascending[keep]
    noise = mean(spectrum.noise * ascending[index] / h)
    return Spectrum(curvature, noise, count[keep], mean(spectrum.init_sq))


def geometric_bins(spectrum: Spectrum, bins: int) -> Spectrum:
    """Group coordinates into ``bins`` bins equally spaced in log h; empty bins are dropped.

    Each bin keeps the count-weighted means of h, c and h E[x_0^2] / h, so tr(H), tr(C) and the initial loss
    are exact; the dynamics inside a bin are approximated by its mean curvature.
    """
    require(isinstance(bins, (int, np.integer)) and bins >= 1, f"bins must be a positive integer, got {bins}")
    h, n = spectrum.curvature, spectrum.counts
    lo, hi = math.log(h.min()), math.log(h.max())
    edges = np.linspace(lo, hi, bins + 1)
    index = np.clip(np.searchsorted(edges, np.log(h), side="right") - 1, 0, bins - 1)
    count = np.bincount(index, weights=n, minlength=bins)
    keep = count > 0

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(index, weights=n * values, minlength=bins)[keep] / count[keep]

    curvature = mean(h)
    init_sq = mean(h * spectrum.init_sq) / curvature
    return Spectrum(curvature, mean(spectrum.noise), count[keep], init_sq)


def load_spectrum(
    path: str | Path, *, noise_scale: float = 1.0, bins: int = 0, binning: str = "geometric"
) -> Spectrum:
    """Read eigenvalues (and optionally noise variances) from ``.npy`` or ``.csv``.

    One coordinate per row: column 1 is h_i, an optional column 2 is c_i (else c = h); a 1-D ``.npy`` array
    is one column. A CSV may start with a header line. Any other shape is refused, never guessed: a table of
    2 rows x 3 columns could be 3 coordinates written across or a mistake. A ``.npy`` file must hold a plain
    real-valued array (no objects, no complex numbers, no structured records).
    """
    path = Path(path)
    require(path.exists(), f"spectrum file {str(path)!r} does not exist")
    require(path.is_file(), f"spectrum file {str(path)!r} is not a regular file")
    if path.suffix == ".npy":
        data = _read_npy(path)
    elif path.suffix == ".csv":
        data = _read_csv(path)
    else:
        raise InputError(f"spectrum file {str(path)!r} must end in .npy or .csv")
    data = np.asarray(data, dtype=float)
    require(data.size > 0, f"spectrum file {str(path)!r} is empty")
    if not (data.ndim == 1 or (data.ndim == 2 and data.shape[1] in (1, 2))):
        across = data.ndim == 2 and data.shape[0] in (1, 2)
        raise InputError(
            f"spectrum file {str(path)!r} must hold one or two columns (one coordinate per row: h, then "
            f"optionally c), got {' x '.join(map(str, data.shape))} values"
            + ("; if its rows are the columns, transpose it" if across else "")
        )
    curvature = data if data.ndim == 1 else data[:, 0]
    noise = data[:, 1] if data.ndim == 2 and data.shape[1] == 2 else None
    spectrum = make_spectrum(curvature, noise, noise_scale=noise_scale)
    return bin_spectrum(spectrum, bins, binning) if bins else spectrum


def _read_npy(path: Path) -> np.ndarray:
    """A real-valued array from a ``.npy`` file; one line naming the problem for anything else."""
    name = str(path)
    with path.open("rb") as file:
        magic = file.read(6)
    if magic[:4] == b"PK\x03\x04":
        raise InputError(f"spectrum file {name!r} is an .npz archive of arrays, not one .npy array")
    if magic != b"\x93NUMPY":
        raise InputError(f"spectrum file {name!r} is not a .npy array file (no .npy header)")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError:  # object arrays need pickle, which is never allowed
        raise InputError(f"spectrum file {name!r} holds Python objects; save a float array") from None
    except (OSError, EOFError) as exc:  # truncated or damaged
        raise InputError(f"spectrum file {name!r} cannot be read as .npy: {exc}") from None
    if data.dtype.kind not in "iuf":
        raise InputError(f"spectrum file {name!r} holds values of type {data.dtype}; expected real numbers")
    return data


def _read_csv(path: Path) -> np.ndarray:
    """Rows of numbers (a first line that does not start with a number is a header); trailing empty cells
    are ignored, every row must have the same number of values."""
    name = str(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise InputError(f"spectrum file {name!r} is not a text CSV file") from None
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if rows:
        try:
            float(rows[0][0])
        except ValueError:
            rows = rows[1:]
    values = []
    for number, row in enumerate(rows, start=1):
        while row and not row[-1].strip():
            row = row[:-1]
        try:
            values.append([float(c) for c in row])
        except ValueError as exc:
            raise InputError(f"spectrum file {name!r}, data row {number}: not a number: {exc}") from None
        if len(values[-1]) != len(values[0]):
            raise InputError(
                f"spectrum file {name!r}, data row {number}: {len(values[-1])} values, but row 1 has "
                f"{len(values[0])}"
            )
    return np.array(values, dtype=float)
