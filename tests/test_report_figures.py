"""What the measurement and model figures draw (read back from the matplotlib figure before it is saved):
intervals as bands, undefined and zero points marked instead of dropped, predicted and measured in one
colour, E(B) = B S(B) beside S(B), one tick format per heatmap axis."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import batchscale.report.plots as plots
from batchscale.report.measure_plots import plot_accumulation, plot_checks, plot_noise_scale


@pytest.fixture
def figure(monkeypatch):
    """The figure a plot function made (its file is not written)."""
    seen = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.append(fig))
    yield seen


def legend_texts(fig) -> list[str]:
    texts = []
    for ax in fig.axes:
        if ax.get_legend() is not None:
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    texts += [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    return texts


def line(ax, label):
    """The data line labelled ``label``: a plain line, or the line of an errorbar container."""
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    found += [c.lines[0] for c in ax.containers if c.get_label() == label]
    assert len(found) == 1, f"{label!r}: {len(found)} lines"
    return found[0]


def noise_rows():
    rows = []
    for step, fast, two, low, high, ema in [
        (0, 70.0, 72.0, 65.0, 80.0, None),
        (100, 300.0, None, None, 900.0, 250.0),  # two-batch undefined here: |G|^2 estimate <= 0
        (200, 700.0, 650.0, 500.0, float("inf"), None),  # the average undefined (after step 0)
        (300, 900.0, 950.0, 700.0, 1500.0, 300.0),
    ]:
        rows.append({"step": step, "method": "fast", "b_simple": fast, "ci_low": fast, "ci_high": fast,
                     "population": 1437, "status": "ok"})
        rows.append({"step": step, "method": "two-batch", "b_simple": two, "ci_low": low, "ci_high": high,
                     "b_simple_ema": ema, "status": "exceeds dataset" if step == 300 else "ok"})
    return rows


def test_noise_scale_interval_is_a_band_and_undefined_points_are_marked(figure):
    plot_noise_scale("x.png", noise_rows(), ["fast", "two-batch"])
    (fig,) = figure
    ax = fig.axes[0]
    texts = legend_texts(fig)
    assert not any("CI low" in t or "CI high" in t for t in texts)  # no bounds drawn as lines
    assert "95% interval (two-batch)" in texts and "95% interval (fast)" not in texts  # exact: no band
    two = line(ax, "B_simple (two-batch)")
    assert list(two.get_xdata()) == [0, 200, 300]  # joined across the undefined step, none dropped after
    undefined = line(ax, "B_simple (two-batch) undefined: |G|^2 estimate <= 0")
    assert list(undefined.get_xdata()) == [100]
    assert list(line(ax, "per-step EMA undefined: averaged |G|^2 <= 0").get_xdata()) == [200]
    # the band has no piece at the undefined step (no lone upper bound there)
    (band,) = [c for c in ax.collections if c.get_label().startswith("95%")]
    xs = np.concatenate([p.vertices[:, 0] for p in band.get_paths()])
    assert 100 not in set(np.round(xs).tolist())
    assert "training examples M = 1437" in texts


def test_noise_scale_b_noise_has_its_own_colour(figure):
    rows = noise_rows() + [{"step": s, "method": "b-noise (HVP)", "b_noise": 50.0, "b_noise_stderr": 5.0}
                           for s in (0, 100, 200, 300)]
    plot_noise_scale("x.png", rows, ["fast", "two-batch"])
    ax = figure[0].axes[0]
    colours = {line(ax, label).get_color() for label in
               ("B_simple (fast)", "B_simple (two-batch)", "B_noise (HVP; bars: 1 stderr)")}
    assert len(colours) == 3


def check(form, sampling, m, predicted, measured):
    return SimpleNamespace(quantity="trace_cov", form=form, sampling=sampling, batch_size=m,
                           predicted=predicted, measured=measured, stderr=0.01 * measured)


def test_moments_pairs_colours_and_marks_zero_predictions(figure):
    measured = [(0, check(f, s, m, 1.0 / m, 1.1 / m)) for f in ("mean", "sum") for s in ("with", "without")
                for m in (1, 4, 16)]
    measured += [(0, check(f, "without", 64, 0.0, 1e-12)) for f in ("mean", "sum")]
    plot_checks("x.png", measured, "trace_cov", "tr Cov", "t", logy=True)
    (fig,) = figure
    ax = fig.axes[0]
    for form in ("mean", "sum"):
        for sampling in ("with", "without"):
            name = f"{form} form, {sampling} repl."
            assert line(ax, f"{name}: predicted").get_color() == line(ax, f"{name}: measured").get_color()
    assert line(ax, "mean form, with repl.: predicted").get_color() != line(
        ax, "sum form, with repl.: predicted").get_color()
    zero = line(ax, "predicted 0 (m = M without repl.; measured: float rounding)")
    assert list(zero.get_xdata()) == [64]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # outside the axes, right of the data


def test_accumulation_shows_the_identity_beside_the_memory(figure):
    results = [SimpleNamespace(form=f, batch_size=8, micro_batch=b, max_abs_diff=0.0 if b == 8 else 1e-9,
                               tolerance=4e-8, update_max_abs=0.01, saved_bytes=1000 * b, peak_bytes=5000 * b)
               for f in ("mean", "sum") for b in (1, 2, 4, 8)]
    plot_accumulation("x.png", results)
    (fig,) = figure
    left, right = fig.axes
    diff = line(left, "mean form: max |accumulated - one batch|")
    assert list(diff.get_xdata()) == [1, 2, 4]
    assert list(line(left, "difference exactly 0 (k = 1: the same computation)").get_xdata()) == [8]
    assert list(line(left, "sum form: tolerance (float rounding)").get_ydata()) == [4e-8] * 4
    assert list(line(right, "autograd-saved bytes").get_ydata()) == [1000 * b / 2**20 for b in (1, 2, 4, 8)]


def test_noise_scale_model_draws_examples_as_batch_times_steps(figure):
    batches = [16, 32, 64, 128]
    steps = [100.0, 60.0, 40.0, 30.0]
    plots.plot_steps_and_examples("x.png", batches, {"input curve (nqm.json)": {"steps": steps}},
                                  regimes=["perfect_scaling"] * 4, vlines={"B_crit": 40.0})
    (fig,) = figure
    s_ax, e_ax = fig.axes
    np.testing.assert_allclose(line(s_ax, "input curve (nqm.json)").get_ydata(), steps)
    np.testing.assert_allclose(line(e_ax, "input curve (nqm.json)").get_ydata(), np.multiply(batches, steps))
    assert not any("measured" in t for t in legend_texts(fig))


def test_fitted_curve_is_not_called_measured(tmp_path, figure):
    from click.testing import CliRunner

    from batchscale.cli.main import cli

    curve = tmp_path / "c.csv"
    curve.write_text("batch_size,steps\n1,1000\n2,520\n4,280\n8,160\n16,110\n32,90\n")
    result = CliRunner().invoke(cli, ["predict", "noise-scale", "--curve", str(curve), "--plot",
                                      str(tmp_path / "f.png")])
    assert result.exit_code == 0, result.output
    texts = legend_texts(figure[0])
    assert "input curve (c.csv)" in texts and not any("measured" in t for t in texts)
    assert any(t.startswith("fit: ") for t in texts)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 4, 16], ["1", "4", "16"]),
        ([0.0625, 0.0156, 0.00391], ["0.0625", "0.0156", "0.00391"]),
        ([6.1e-05, 0.00098, 0.0625], ["6.1e-05", "9.8e-04", "6.2e-02"]),  # one format, not mixed
        ([2**-14, 2**-9, 2**-4], ["$2^{-14}$", "$2^{-9}$", "$2^{-4}$"]),
    ],
)
def test_heatmap_ticks_share_one_format(values, expected):
    assert plots._ticks(values) == expected
