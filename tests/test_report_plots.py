"""Plots are written, non-empty, in the requested format, without matplotlib warnings."""

from __future__ import annotations

import numpy as np
import pytest

from batchscale.errors import InputError
from batchscale.report.plots import plot_heatmap, plot_series, plot_steps_vs_batch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_steps_vs_batch_png_with_everything(tmp_path):
    batch = [1, 2, 4, 8, 16, 32]
    steps = [640.0, 330.0, 180.0, 110.0, 90.0, float("inf")]
    path = tmp_path / "sub" / "steps.png"
    plot_steps_vs_batch(
        path,
        {
            "measured": {
                "batch_size": batch,
                "steps": steps,
                "learning_rate": [0.01, 0.02, 0.04, 0.05, 0.05, 0.05],
                "steps_err": [10, 10, 5, 5, 3, float("nan")],
            },
            "other": {"batch_size": batch, "steps": [float("nan")] + steps[1:]},
        },
        regimes=["perfect_scaling"] * 3 + ["diminishing_returns", "maximal_parallelism", "unreachable"],
        title="t",
        lines={"fit": {"batch_size": batch, "steps": steps}},
        vlines={"B_crit": 8.0},
    )
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_other_formats(tmp_path, suffix, magic):
    path = tmp_path / f"s{suffix}"
    plot_series(path, [1, 2, 4], {"a": [1.0, 0.5, 0.25]}, xlabel="m", ylabel="y", logx=True, logy=True)
    assert path.read_bytes()[: len(magic)] == magic


def test_heatmap_and_series(tmp_path):
    values = np.arange(12.0).reshape(3, 4)
    values[0, 0] = np.nan
    plot_heatmap(
        tmp_path / "h.png",
        [1, 2, 4, 8],
        [1e-3, 1e-2, 1e-1],
        values,
        diverged=values > 9,
        xlabel="batch",
        ylabel="lr",
        value_label="acc",
    )
    plot_series(
        tmp_path / "s.png",
        [1, 2, 4],
        {"a": [1, np.nan, 3], "b": [0, 1, 2]},
        xlabel="m",
        ylabel="y",
        logy=True,
        yerr={"a": [0.1, 0.1, 0.1]},
    )
    for name in ("h.png", "s.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_bad_suffix_and_shapes(tmp_path):
    with pytest.raises(InputError):
        plot_series(tmp_path / "x.txt", [1], {"a": [1]}, xlabel="", ylabel="")
    with pytest.raises(InputError):
        plot_heatmap(tmp_path / "h.png", [1, 2], [1], [[1.0]], xlabel="", ylabel="")


def test_series_error_bars_with_missing_values(tmp_path):
    path = tmp_path / "e.png"
    plot_series(
        path,
        [1, 2, 4, 8],
        {"a": [1, 2, 3, 0]},
        xlabel="m",
        ylabel="y",
        logx=True,
        logy=True,
        yerr={"a": [0.1, None, float("nan"), 0.2]},
    )
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_series_asymmetric_error_bars(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, yerr=None, **kwargs):
        drawn.append(None if yerr is None else np.asarray(yerr))
        return original(self, x, y, yerr=yerr, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    path = tmp_path / "a.png"
    low_high = [[0.5, 0.2, float("nan"), 5.0], [1.0, 0.3, 0.1, 0.4]]  # (2, n): below, above
    plot_series(
        path,
        [1, 2, 4, 8],
        {"a": [1.0, 2.0, 3.0, 4.0], "b": [2.0, 3.0, 4.0, 5.0]},
        xlabel="m",
        ylabel="y",
        logy=True,
        yerr={"a": low_high, "b": [0.1, 0.2, 0.3, 0.4]},
    )
    assert path.read_bytes()[:8] == PNG_MAGIC
    # NaN draws no bar; the bar below y = 4 (5.0) would cross zero on the log axis: cut to 0.999 * 4
    np.testing.assert_allclose(drawn[0], [[0.5, 0.2, 0.0, 3.996], [1.0, 0.3, 0.1, 0.4]])
    np.testing.assert_allclose(drawn[1], [[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])


@pytest.mark.parametrize(
    "bad, message",
    [([[0.1, 0.1], [0.1, 0.1]], "shape"), ([0.1, 0.1, 0.1, 0.1], "shape"), ([0.1, -0.1, 0.1], ">= 0")],
    ids=["2x2-for-3", "4-for-3", "negative"],
)
def test_series_bad_error_bars_are_input_errors(tmp_path, bad, message):
    with pytest.raises(InputError, match=message):
        plot_series(tmp_path / "b.png", [1, 2, 4], {"a": [1, 2, 3]}, xlabel="", ylabel="", yerr={"a": bad})


def test_importing_plots_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, batchscale.report.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
