"""The analysis and figure of ``sweep steps`` on synthetic rows (no training): per-optimizer critical
batch sizes under every named definition, regimes with ``undecided``, seed error bars, one strip of
regime shading per optimizer."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from batchscale.cli import sweep as sweep_cli
from batchscale.theory.regimes import CRITICAL_DEFINITIONS


def synthetic_rows(b_crits=None, n_seeds=3, noise=0.05):
    """Rows as run_steps_sweep returns them, with per-seed steps and learning rates."""
    b_crits = b_crits or {"sgd": 20.0, "momentum": 200.0}
    rows = []
    for k, (optimizer, b_crit) in enumerate(b_crits.items()):
        rng = np.random.default_rng(k)
        for b in 2 ** np.arange(2, 11):
            seeds = (300 * (1 + b_crit / b) * np.exp(rng.normal(0, noise, n_seeds))).tolist()
            rates = (0.01 * b * np.exp(rng.normal(0, 0.1, n_seeds))).tolist()
            rows.append({"optimizer": optimizer, "batch_size": int(b), "steps": float(np.median(seeds)),
                         "learning_rate": float(np.median(rates)), "seed_steps": seeds,
                         "seed_learning_rates": rates})
    return rows


def test_every_row_names_its_curves_critical_batches_with_intervals(capsys):
    rows = sweep_cli._with_regimes(synthetic_rows(), ["sgd", "momentum"], 0.2)
    by_opt = {opt: [r for r in rows if r["optimizer"] == opt] for opt in ("sgd", "momentum")}
    for opt, truth in (("sgd", 20.0), ("momentum", 200.0)):
        row = by_opt[opt][0]
        assert row["bootstrap"] == "seeds"
        assert row["critical_batch_mccandlish_low"] < truth < row["critical_batch_mccandlish_high"]
        for name in CRITICAL_DEFINITIONS:
            assert f"critical_batch_{name}" in row and f"critical_batch_{name}_identifiable" in row
        assert row["max_useful_batch"] > row["critical_batch_mccandlish"]
    # momentum's curve bends later: its B_crit interval lies above SGD's
    momentum, sgd = by_opt["momentum"][0], by_opt["sgd"][0]
    assert momentum["critical_batch_mccandlish_low"] > sgd["critical_batch_mccandlish_high"]
    # the regimes are each optimizer's own: B = 256 is past SGD's B_crit, within momentum's perfect range
    regime = {(r["optimizer"], r["batch_size"]): r["regime"] for r in rows}
    assert regime[("sgd", 256)] != "perfect_scaling" and regime[("momentum", 16)] == "perfect_scaling"
    text = sweep_cli.regime_summary(rows, ["sgd", "momentum"])
    assert all(f"critical batch, {name}" in text for name in CRITICAL_DEFINITIONS)
    assert "maximal useful batch" in text and "seeds bootstrap" in text
    assert all(f"  {name}: " in text.split("definitions:")[1] for name in CRITICAL_DEFINITIONS)
    assert "mccandlish" in capsys.readouterr().err


def test_missed_seeds_and_rows_without_seed_steps():
    rows = synthetic_rows({"sgd": 20.0})
    rows[0]["seed_steps"] = [None, None, rows[0]["seed_steps"][0]]
    rows[0]["steps"] = None
    for row in rows[1:]:
        row.pop("seed_steps")  # an old store: one number per point
    out = sweep_cli._with_regimes(rows, ["sgd"], 0.2)
    assert out[0]["regime"] == "unreachable"
    assert out[1]["bootstrap"] == "seeds"  # the first row still has several seeds


def capture_figure(monkeypatch):
    from batchscale.report import plots

    saved = {}

    def fake_save(fig, path):
        saved["fig"] = fig

    monkeypatch.setattr(plots, "_save", fake_save)
    return saved


def test_figure_shades_each_optimizers_regimes_and_draws_seed_bars(tmp_path, monkeypatch):
    saved = capture_figure(monkeypatch)
    rows = sweep_cli._with_regimes(synthetic_rows(), ["sgd", "momentum"], 0.2)
    config = SimpleNamespace(optimizers=("sgd", "momentum"), momentum=0.9, tune_momentum=False,
                             target_metric="error", target=0.1, workload="synthetic")
    sweep_cli._plot_steps(str(tmp_path / "s.png"), rows, config)
    steps_ax, lr_ax = saved["fig"].axes
    names = [t.get_text() for t in steps_ax.texts]
    assert names == ["sgd regimes", "momentum 0.9 regimes"]
    # one shaded span per batch size per optimizer, each in its own strip
    spans = [p for p in steps_ax.patches]
    assert len(spans) == 2 * 9
    strips = {round(p.get_y(), 3) for p in spans}
    assert len(strips) == 2
    # error bars (LineCollections) on the steps and on the learning rates of both optimizers
    assert len(steps_ax.collections) >= 2 and len(lr_ax.collections) >= 2
    legend = [t.get_text() for t in steps_ax.get_legend().get_texts()]
    assert "sgd: fit S_min (1 + B_crit/B)" in legend and "steps to target (bars: range over seeds)" == (
        steps_ax.get_ylabel())
    import matplotlib.pyplot as plt

    plt.close(saved["fig"])


def test_one_regime_list_with_several_curves_says_whose(tmp_path, monkeypatch):
    from batchscale.report.plots import plot_steps_vs_batch

    saved = capture_figure(monkeypatch)
    curves = {"a": {"batch_size": [1, 2, 4], "steps": [4.0, 2.0, 1.5]},
              "b": {"batch_size": [1, 2, 4], "steps": [5.0, 3.0, 2.0]}}
    plot_steps_vs_batch(tmp_path / "x.png", curves, regimes=["perfect_scaling"] * 3)
    legend = [t.get_text() for t in saved["fig"].axes[0].get_legend().get_texts()]
    assert "(shading: regimes of a)" in legend
    import matplotlib.pyplot as plt

    plt.close(saved["fig"])


@pytest.mark.parametrize("bad", [{"c": ["perfect_scaling"] * 3}, {"a": ["perfect_scaling"]}])
def test_regime_mapping_must_match_the_curves(tmp_path, bad):
    from batchscale.errors import InputError
    from batchscale.report.plots import plot_steps_vs_batch

    curves = {"a": {"batch_size": [1, 2, 4], "steps": [4.0, 2.0, math.inf]}}
    with pytest.raises(InputError):
        plot_steps_vs_batch(tmp_path / "x.png", curves, regimes=bad)
