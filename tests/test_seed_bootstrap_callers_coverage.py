"""Coverage of the seed-bootstrap intervals of ``verify noise-scale`` (tradeoff_product rows),
``verify nqm-transfer`` (S/S_min shape intervals), ``reproduce mccandlish2018`` (joint B_crit) and
``reproduce shallue2018`` (median ratio) on seeded synthetic curves with 2 seeds.

Truth = the parameters the curves were drawn from: S(B) = S_min (1 + B_crit/B) times log-normal noise per
seed, so the tradeoff product is 1, S/S_min = 1 + B_crit/B, B_crit and the log ratio of two targets'
B_crit are known. Each check also plants the old rule (each point's own seeds resampled with replacement,
the same picks at every target) through the one shared resampler every caller uses
(``batchscale.theory.regimes.seed_bootstrap_curves``) and asserts that it under-covers on the same curves.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import batchscale.theory.regimes as rg
from batchscale.errors import InputError
from batchscale.reproduce import mccandlish2018 as mc
from batchscale.reproduce import shallue2018 as sh
from batchscale.verify import noise_scale as vns
from batchscale.verify import nqm_transfer as vnt

BATCH = 2.0 ** np.arange(2, 9)  # 4..256
S_MIN, B_CRIT = 300.0, 20.0


def old_per_point_curves(matrix, n, rng, level=0.95):
    """The planted old rule: every point's own seeds drawn with replacement (the same seed picks at every
    target of a (T, points, seeds) matrix); no pooling, no t scaling. Log seed medians, like the real one."""
    m = np.asarray(matrix, dtype=float)
    m3 = m if m.ndim == 3 else m[None]  # (T, points, seeds)
    out = np.empty((m3.shape[0], n, m3.shape[1]))
    for i in range(m3.shape[1]):
        k = int(np.sum(~np.isnan(m3[0, i])))
        pick = rng.integers(0, k, size=(n, k))  # (n, seeds)
        for t in range(m3.shape[0]):
            out[t, :, i] = np.log(np.median(m3[t, i, :k][pick], axis=1))
    return out if m.ndim == 3 else out[0]


def synthetic_curve(steps):
    """A stand-in for :class:`batchscale.verify.steps_sweep.Curve`: per-seed steps (points, seeds) and
    the analysis' fit (no bootstrap needed by the callers under test)."""
    analysis = rg.analyze_steps_curve(BATCH.astype(int).tolist(), steps.tolist(), n_bootstrap=0)
    return types.SimpleNamespace(optimizer="sgd", batch_sizes=tuple(int(b) for b in BATCH),
                                 seed_steps=tuple(tuple(float(v) for v in row) for row in steps),
                                 analysis=analysis)


def noisy_steps(rng, n_seeds, noise):
    return S_MIN * (1.0 + B_CRIT / BATCH)[:, None] * np.exp(rng.normal(0.0, noise, (BATCH.size, n_seeds)))


def verify_coverage(n_curves, n_seeds, noise=0.05, n_bootstrap=120, seed=11):
    """Share of (curve, batch size) rows whose 95% interval holds the truth: noise-scale's
    tradeoff_product (measured +- 1.96 stderr vs 1) and nqm-transfer's S/S_min (vs 1 + B_crit/B); the
    median half-width of each, in the row's own units."""
    rng = np.random.default_rng(seed)
    hits, widths = {"tradeoff": [], "shape": []}, {"tradeoff": [], "shape": []}
    for k in range(n_curves):
        curve = synthetic_curve(noisy_steps(rng, n_seeds, noise))
        for row in vns.tradeoff_rows(curve, {}, "synthetic", seed=k, n_bootstrap=n_bootstrap):
            hits["tradeoff"].append(row.ci_low < 1.0 < row.ci_high)
            widths["tradeoff"].append((row.ci_high - row.ci_low) / 2)
        for b, (_, (low, high), _) in vnt.shape_interval(curve, n_bootstrap=n_bootstrap, seed=k).items():
            hits["shape"].append(low < 1.0 + B_CRIT / b < high)
            widths["shape"].append((high - low) / 2)
    return ({name: float(np.mean(h)) for name, h in hits.items()},
            {name: float(np.median(w)) for name, w in widths.items()})


TARGET_B_CRIT = (10.0, 20.0, 40.0)


def joint_coverage(n_curves, n_seeds, noise=0.05, n_bootstrap=120, seed=13, shared=0.8):
    """Share of synthetic 3-target sweeps whose joint-bootstrap 95% intervals hold each target's B_crit
    and log(B_crit hardest / easiest); a seed's noise is ``shared``-correlated across targets (one run)."""
    rng = np.random.default_rng(seed)
    truth_diff = np.log(TARGET_B_CRIT[-1] / TARGET_B_CRIT[0])
    hits = {"b_crit": [], "diff": []}
    for k in range(n_curves):
        common = rng.normal(0.0, 1.0, (BATCH.size, n_seeds))  # (n, seeds): the run
        steps = np.stack([S_MIN * (1.0 + bc / BATCH)[:, None] * np.exp(noise * (
            shared * common + np.sqrt(1 - shared**2) * rng.normal(0.0, 1.0, common.shape)))
            for bc in TARGET_B_CRIT])  # (T, n, seeds)
        draws = mc.joint_log_b_crit(BATCH.astype(int).tolist(), steps, n_bootstrap=n_bootstrap, seed=k)
        for t, bc in enumerate(TARGET_B_CRIT):
            low, high = np.percentile(draws[:, t], [2.5, 97.5])
            hits["b_crit"].append(low < np.log(bc) < high)
        low, high = np.percentile(draws[:, -1] - draws[:, 0], [2.5, 97.5])
        hits["diff"].append(low < truth_diff < high)
    return {name: float(np.mean(h)) for name, h in hits.items()}


def ratio_coverage(n_pairs, n_seeds, noise=0.05, n=200, seed=17):
    """Share of synthetic pairs of seed sets (true median ratio 1.5) whose median_ratio_interval holds it."""
    rng = np.random.default_rng(seed)
    hits = []
    for k in range(n_pairs):
        a = 150.0 * np.exp(rng.normal(0.0, noise, n_seeds))
        b = 100.0 * np.exp(rng.normal(0.0, noise, n_seeds))
        _, low, high = sh.median_ratio_interval(list(a), list(b), seed=k, n=n)
        hits.append(low < 1.5 < high)
    return float(np.mean(hits))


@pytest.fixture
def planted(monkeypatch):
    monkeypatch.setattr(rg, "seed_bootstrap_curves", old_per_point_curves)


def test_verify_rows_cover_with_two_seeds():
    """25 curves x 7 rows, 5% noise: the tradeoff and shape intervals hold the truth >= 90% of the rows
    (150 curves, 400 resamples: 95% and 96%; the old rule 73% and 71%)."""
    coverage, _ = verify_coverage(25, 2)
    assert all(c >= 0.9 for c in coverage.values()), coverage


def test_verify_rows_under_cover_with_the_planted_old_rule(planted):
    coverage, _ = verify_coverage(25, 2)
    assert all(c < 0.85 for c in coverage.values()), coverage


def test_joint_b_crit_intervals_cover_with_two_seeds():
    """25 sweeps of 3 targets: each B_crit interval and that of log(B_crit hardest / easiest) hold the truth
    >= 90% of the time (150 sweeps, 400 resamples: 93% and 96%; the old rule 71% and 79%)."""
    coverage = joint_coverage(25, 2)
    assert all(c >= 0.9 for c in coverage.values()), coverage


def test_joint_b_crit_intervals_under_cover_with_the_planted_old_rule(planted):
    coverage = joint_coverage(25, 2)
    assert min(coverage.values()) < 0.85, coverage


def test_median_ratio_interval_covers_with_two_seeds():
    """200 pairs (600, 400 resamples: 96%; the old rule 68%)."""
    assert ratio_coverage(200, 2) >= 0.9


def test_median_ratio_interval_under_covers_with_the_planted_old_rule(planted):
    assert ratio_coverage(200, 2) < 0.85


def test_joint_draws_are_shared_across_targets():
    """Two identical targets give identical resampled curves and a target scaled by 3 the same curves
    shifted by log 3 (the same draws of the same cells); one target alone gives the first target's curves
    (the same generator stream). A point where a seed missed at one target resamples its own seeds there
    (inf when the resampled median misses) and stays pooled at the other targets."""
    rng = np.random.default_rng(0)
    one = noisy_steps(rng, 3, 0.05)  # (n, seeds)
    joint = rg.seed_bootstrap_curves(np.stack([one, one, 3.0 * one]), 50, np.random.default_rng(1))
    assert joint.shape == (3, 50, BATCH.size)
    assert np.array_equal(joint[0], joint[1])
    assert joint[2] == pytest.approx(joint[0] + np.log(3.0))
    single = rg.seed_bootstrap_curves(one, 50, np.random.default_rng(1))  # (50, n)
    assert np.array_equal(single, joint[0])
    missed = one.copy()
    missed[2, 0] = np.inf
    mixed = rg.seed_bootstrap_curves(np.stack([one, missed]), 400, np.random.default_rng(2))  # (2, K, n)
    assert np.all(np.isin(mixed[1][:, 2], np.log(np.append(missed[2], np.inf))))  # a median of 3 own seeds
    assert np.isinf(mixed[1][:, 2]).any() and np.isfinite(mixed[0][:, 2]).all()
    assert np.isfinite(np.delete(mixed[1], 2, axis=1)).all()  # the other points pooled at both targets


@pytest.mark.parametrize("matrix", [np.ones(4), np.array([[[1.0, 2.0]], [[1.0, np.nan]]])],
                         ids=["one-dimensional", "seeds-differ-across-targets"])
def test_seed_bootstrap_curves_bad_input(matrix):
    with pytest.raises(InputError):
        rg.seed_bootstrap_curves(matrix, 10, np.random.default_rng(0))
