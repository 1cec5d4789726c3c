"""``reproduce shallue2018``: verdict logic on planted curves (each statement with a planted wrong one that
is not reproduced), the released-archive reader on trees built here in the archive's published layout,
the report's content from stand-in sweeps, and the quick command end to end (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli
from batchscale.errors import InputError
from batchscale.reproduce import batch_science as bs
from batchscale.reproduce import shallue2018 as sh
from batchscale.reproduce.report import Options, write_report
from batchscale.theory.regimes import analyze_steps_curve
from batchscale.verify.steps_sweep import Curve

BATCHES = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # planted curves: S_min = 100, B_crit 8..120


def planted_steps(b_crit: float, seed: int, s_min: float = 100.0, noise: float = 0.03) -> list[list[float]]:
    """S(B) = s_min (1 + b_crit/B) for three seeds with log-normal noise."""
    rng = np.random.default_rng(seed)
    return [[s_min * (1 + b_crit / b) * math.exp(noise * rng.standard_normal()) for _ in range(3)]
            for b in BATCHES]


def planted_curve(name: str, b_crit: float, seed: int = 0, rates=None, s_min: float = 100.0) -> Curve:
    steps = planted_steps(b_crit, seed, s_min)
    if rates is None:
        rates = [[0.1 * b / (b + b_crit)] * 3 for b in BATCHES]
    analysis = analyze_steps_curve(BATCHES, steps, n_bootstrap=200, seed=seed)
    return Curve(name, BATCHES, tuple(tuple(s) for s in steps), tuple(tuple(r) for r in rates), analysis)


# --------------------------------------------------------------------------------------- verdict logic

def test_three_regimes_verdict():
    p, d, m, u = sh.PERFECT, sh.DIMINISHING, sh.MAXIMAL, "undecided"
    assert sh.three_regimes_verdict([p, p, d, d, m])[0] == "reproduced"
    assert sh.three_regimes_verdict([p, u, d, u, m])[0] == "reproduced"
    assert sh.three_regimes_verdict([p, p, d, d])[0] == "partly"
    assert sh.three_regimes_verdict([p, m, m])[0] == "partly"
    assert sh.three_regimes_verdict([d, d, d])[0] == "not reproduced"
    assert sh.three_regimes_verdict([p, p, p])[0] == "not reproduced"
    assert sh.three_regimes_verdict([u, u, d])[0] == "inconclusive"
    assert sh.three_regimes_verdict([m, d, p])[0] == "inconclusive"  # wrong order: never reproduced


def test_planted_curve_shows_three_regimes_and_planted_linear_fails():
    curve = planted_curve("sgd", 30.0)
    assert sh.regimes_row("w", curve.analysis).verdict == "reproduced"
    row = sh.regimes_row("w", curve.analysis, expect="linear")
    assert row.verdict == "not reproduced"
    assert row.statement.startswith("planted")


def test_momentum_critical_batch_above_sgd_and_planted_opposite():
    sgd, mom = planted_curve("sgd", 10.0, seed=1), planted_curve("momentum", 120.0, seed=2)
    row = sh.critical_ratio_row("w", "momentum", mom.analysis, sgd.analysis)
    assert row.verdict == "reproduced"
    assert row.ci_low > 1 and row.measured == pytest.approx(12.0, rel=0.3)
    planted = sh.critical_ratio_row("w", "momentum", mom.analysis, sgd.analysis, "below")
    assert planted.verdict == "not reproduced"
    same = sh.critical_ratio_row("w", "momentum", planted_curve("m", 10.0, seed=3).analysis, sgd.analysis)
    assert same.verdict == "inconclusive"


def test_small_batch_match_and_planted_mismatch():
    sgd, mom = planted_curve("sgd", 10.0, seed=1), planted_curve("momentum", 10.0, seed=2)
    row = sh.small_batch_row("w", "momentum", mom, sgd)
    assert row.verdict == "reproduced" and 1 / 1.5 <= row.ci_low <= row.ci_high <= 1.5
    assert sh.small_batch_row("w", "momentum", mom, sgd, claimed=3.0).verdict == "not reproduced"
    slow = planted_curve("momentum", 10.0, seed=2, s_min=300.0)  # truly 3x slower at every batch size
    assert sh.small_batch_row("w", "momentum", slow, sgd).verdict == "not reproduced"


def test_median_ratio_interval_skips_missed_seeds_and_holds_the_ratio():
    """The point value is the ratio of the medians of the seeds that reached the target; its coverage is
    tested in test_seed_bootstrap_callers_coverage.py."""
    a, b = [10.0, 12.0, None, 11.0], [5.0, 6.0, 7.0]
    ratio, low, high = sh.median_ratio_interval(a, b, seed=3, n=400)
    assert ratio == pytest.approx(11.0 / 6.0)
    assert low < ratio < high
    assert all(np.isnan(sh.median_ratio_interval([None], b)))


def test_lr_rule_verdicts():
    bent = [[0.1 / (1 + 64 / b) * f for f in (0.97, 1.0, 1.03)] for b in BATCHES]  # linear, then flat
    curve = planted_curve("sgd", 64.0, rates=bent)
    assert sh.lr_row("w", curve).verdict == "reproduced"
    assert sh.lr_row("w", curve, claim="linear").verdict == "not reproduced"
    assert sh.lr_row("w", curve, claim="square-root").verdict == "not reproduced"
    linear = [[0.001 * b * f for f in (0.97, 1.0, 1.03)] for b in BATCHES]
    lin_curve = planted_curve("sgd", 64.0, rates=linear)
    row = sh.lr_row("w", lin_curve)
    assert row.verdict == "not reproduced" and row.measured == pytest.approx(1.0, abs=0.02)
    assert sh.lr_row("w", lin_curve, claim="linear").verdict == "reproduced"
    wide = {"small": (-1.0, 2.0), "large": (-1.0, 2.0)}
    assert sh.lr_rule_verdict(wide)[0] == "inconclusive"


def test_slope_interval_is_a_t_interval():
    mean, low, high = sh.slope_interval([0.9, 1.0, 1.1])
    assert mean == pytest.approx(1.0)
    assert high - mean == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))


def test_dataset_size_row_and_planted_strong_effect():
    whole, part = planted_curve("sgd", 40.0, seed=1), planted_curve("sgd", 45.0, seed=2)
    assert sh.size_row(0.25, part.analysis, whole.analysis).verdict == "reproduced"
    row = sh.size_row(0.25, part.analysis, whole.analysis, claimed=0.25)
    assert row.verdict == "not reproduced" and row.statement.startswith("planted")
    shrunk = planted_curve("sgd", 8.0, seed=2)  # a quarter of the data, a fifth of the critical batch
    assert sh.size_row(0.25, shrunk.analysis, whole.analysis).verdict == "not reproduced"


def test_train_fraction_option():
    from batchscale.empirical.workloads import get_workload, training_set_size

    full = get_workload("digits-mlp", device="cpu", seed=0)
    quarter = get_workload("digits-cnn", device="cpu", seed=0, train_fraction=0.25)
    assert quarter.n_train == round(0.25 * full.n_train) == training_set_size("digits-cnn",
                                                                            {"train_fraction": 0.25})
    assert np.array_equal(quarter.x_train.numpy(), full.x_train[: quarter.n_train].numpy())
    assert np.array_equal(quarter.x_test.numpy(), full.x_test.numpy())
    for bad in (0, 1.5, -0.1):
        with pytest.raises(InputError, match="train_fraction"):
            training_set_size("digits-mlp", {"train_fraction": bad})


# ---------------------------------------------------------------------------------- archive reader

MNIST = "mnist/simple_cnn_base/nesterov_momentum"
COLUMNS = ("step", "train/cross_entropy_error", "val/classification_error", "val/cross_entropy_error")


def write_trial(study: Path, trial_id: int, status: str, errors: dict[int, float] | None, lr: float = 0.1,
                folder: str | None = None) -> None:
    """A trial folder: metadata.json and (when ``errors`` is given) measurements.csv with the validation
    classification error at the given (irregular) steps."""
    t = study / (folder or str(trial_id))
    t.mkdir(parents=True)
    steps = max(errors) if errors else 0
    (t / "metadata.json").write_text(json.dumps({
        "_internal_study_name": "x", "_internal_trial_id": trial_id,
        "parameters": {"learning_rate": lr, "momentum": 0.9}, "status": status, "steps": steps,
        "trial_id": trial_id}))
    if errors is not None:
        lines = [",".join(COLUMNS)] + [f"{s},{2 * e:.6g},{e:.6g},{3 * e:.6g}" for s, e in errors.items()]
        (t / "measurements.csv").write_text("\n".join(lines) + "\n")


def write_study(root: Path, folder: str, batch: int) -> Path:
    study = root / folder / str(batch)
    study.mkdir(parents=True)
    (study / "study.json").write_text(json.dumps({
        "batch_size": batch, "dataset": "mnist", "early_stopping": False, "model": "simple_cnn_base",
        "optimizer": "nesterov_momentum", "train_steps": 4000,
        "parameter_configs": {"learning_rate": {"max_value": 10.0, "min_value": 0.0001, "scale": "LOG_SCALE",
                                                "type": "DOUBLE"}}}))
    return study


def build_archive(root: Path) -> dict[int, int]:
    """Three batch sizes of the MNIST workload with irregular evaluation steps, INFEASIBLE and INCOMPLETE
    trials that would reach the target first (they must be ignored), a value exactly at the target (not
    reached: the test is strict) and trial 10 sorting after 9. Returns the expected steps per batch size."""
    s = write_study(root, MNIST, 16)
    write_trial(s, 1, "COMPLETE", {0: 0.9, 700: 0.05, 1900: 0.012, 3100: 0.009, 4000: 0.008})
    write_trial(s, 2, "COMPLETE", {0: 0.9, 1000: 0.03, 2000: 0.01, 2500: 0.0095})  # 0.01 is not < 0.01
    write_trial(s, 3, "INFEASIBLE", {0: 0.9, 100: 0.001})
    write_trial(s, 4, "INCOMPLETE", {0: 0.9, 200: 0.002})
    s = write_study(root, MNIST, 128)
    write_trial(s, 2, "COMPLETE", {0: 0.9, 450: 0.02, 1250: 0.0099})
    write_trial(s, 9, "COMPLETE", {0: 0.9, 300: 0.05, 800: 0.009})
    write_trial(s, 10, "COMPLETE", {0: 0.9, 500: 0.008}, folder="10")
    s = write_study(root, MNIST, 1024)
    write_trial(s, 1, "COMPLETE", {0: 0.9, 600: 0.2, 1333: 0.0098})
    write_trial(s, 5, "INFEASIBLE", None)  # diverged, no measurements: never read
    return {16: 2500, 128: 500, 1024: 1333}


def test_archive_reader_computes_steps_to_result(tmp_path):
    expected = build_archive(tmp_path)
    [(goal, studies, results)] = bs.figure1(tmp_path)
    assert goal.folder == MNIST and goal.target == 0.01 and goal.metric == "val/classification_error"
    assert {r.batch_size: r.steps for r in results} == expected
    first = {r.batch_size: r.trial_id for r in results}
    assert first == {16: 2, 128: 10, 1024: 1}
    assert studies[0].status_counts == {"COMPLETE": 2, "INCOMPLETE": 1, "INFEASIBLE": 1}
    assert [t.trial_id for t in studies[1].trials] == [2, 9, 10]  # integer order, not string order
    assert results[0].learning_rate == 0.1 and results[0].trials_read == 2


def test_archive_reader_takes_the_first_num_trials_complete(tmp_path):
    build_archive(tmp_path)
    goal = bs.Goal(MNIST, "t", "val/classification_error", 0.01, num_trials=1)
    [(_, studies, results)] = bs.figure1(tmp_path, (goal,))
    assert [len(s.trials) for s in studies] == [1, 1, 1]
    assert {r.batch_size: r.steps for r in results} == {16: 3100, 128: 1250, 1024: 1333}


def test_archive_reader_maximize_and_unpacked_folder(tmp_path):
    folder = "open_images_v4/resnet_50/nesterov_momentum"
    s = write_study(tmp_path / "batch_science", folder, 64)
    t = s / "1"
    t.mkdir()
    (t / "metadata.json").write_text(json.dumps({"status": "COMPLETE", "trial_id": 1, "steps": 9,
                                                 "parameters": {}}))
    (t / "measurements.csv").write_text("step,val/average_precision\n0,0.01\n5,0.31\n9,0.32\n")
    [(goal, _, [result])] = bs.figure1(tmp_path)  # the archive unpacked into tmp_path/batch_science
    assert goal.maximize and result.steps == 9  # 0.31 is not > 0.31


@pytest.mark.parametrize("remove", ["16/2/metadata.json", "128/9/measurements.csv", "1024/study.json"])
def test_archive_missing_file_is_one_error_naming_it(tmp_path, remove):
    build_archive(tmp_path)
    missing = tmp_path / MNIST / remove
    missing.unlink()
    with pytest.raises(InputError, match=f"missing file {missing}"):
        bs.figure1(tmp_path)
    result = CliRunner().invoke(cli, ["reproduce", "shallue2018", "--data", str(tmp_path), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"Error: missing file {missing}"]


def test_archive_bad_trees(tmp_path):
    with pytest.raises(InputError, match="none of Figure 1's workload folders"):
        bs.figure1(tmp_path)
    build_archive(tmp_path)
    (tmp_path / MNIST / "16" / "2" / "measurements.csv").write_text("step,val/other\n0,1\n")
    with pytest.raises(InputError, match="no column 'val/classification_error'"):
        bs.figure1(tmp_path)
    (tmp_path / MNIST / "16" / "notes").mkdir()
    with pytest.raises(InputError, match="folder names are integers"):
        bs.figure1(tmp_path)


def test_archive_report_from_the_cli(tmp_path):
    build_archive(tmp_path / "data")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["reproduce", "shallue2018", "--data", str(tmp_path / "data"), "--out",
                                      str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert report.index("## Verdicts") < report.index("## Figures")
    assert "Simple CNN on MNIST (archive, val/classification_error < 0.01)" in report
    assert "figure1_archive.png" in report and (out / "figure1_archive.png").stat().st_size > 0
    table = (out / "figure1_archive.csv").read_text().splitlines()
    assert table[0].startswith("workload,title,goal,batch_size,steps,trial_id")
    assert [line.split(",")[4] for line in table[1:]] == ["2500", "500", "1333"]
    rows = json.loads((out / "verdicts.json").read_text())
    assert len(rows) == 1 and rows[0]["source"].startswith("Sec. 4.1 and Figure 1")


# ------------------------------------------------------------------------------------ report content

def stand_in_sweeps(monkeypatch):
    """run_curves replaced by planted curves: momentum and Nesterov with a larger critical batch; the
    training-set fractions with about the same one."""
    def fake(workload, workload_options, batch_sizes, optimizers, target, settings, n_seeds, options, tally):
        crit = {"sgd": 12.0, "momentum": 90.0, "nesterov": 100.0}
        frac = dict(workload_options).get("train_fraction", 1.0)
        return {name: planted_curve(name, crit[name] * (1 + 0.1 * (frac < 1)),
                                    seed=len(name) + int(10 * frac))
                for name in optimizers}

    monkeypatch.setattr(sh, "run_curves", fake)


def test_trained_report_content(tmp_path, monkeypatch):
    stand_in_sweeps(monkeypatch)
    out = tmp_path / "out"
    result = sh.reproduce(Options(out=out, quick=True, db=str(tmp_path / "runs.sqlite")))
    path = write_report(out, result, command="batchscale reproduce shallue2018 --quick", wall=1.0)
    report = path.read_text()
    by_statement: dict[str, list[str]] = {}
    for row in result.rows:
        by_statement.setdefault(row.statement, []).append(row.verdict)
    assert set(by_statement) == set(sh.STATEMENTS.values())
    assert by_statement[sh.STATEMENTS["momentum"]] == ["reproduced"] * 4  # 2 workloads x 2 momentum kinds
    assert by_statement[sh.STATEMENTS["size"]] == ["reproduced"] * 2
    assert by_statement[sh.STATEMENTS["regimes"]] == ["reproduced"] * 6
    for png in ("steps_vs_batch.png", "optimizers.png", "best_lr.png", "dataset_size.png"):
        assert (out / png).stat().st_size > 0 and f"({png})" in report
    assert "**This is the `--quick` run**" in report and "Sec. 4.4" in report
    assert report.splitlines()[0].endswith("`--quick` settings, reduced: see Method)")
    assert report.index("## Verdicts") < report.index("## Figures") < report.index("## How this report")


def test_bad_workload_is_one_error_before_training(tmp_path):
    result = CliRunner().invoke(cli, ["reproduce", "shallue2018", "--quick", "--workload", "nope",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("Error: unknown workload 'nope'")


@pytest.mark.slow
def test_quick_command_end_to_end(tmp_path):
    out, db = tmp_path / "out", tmp_path / "runs.sqlite"
    args = ["reproduce", "shallue2018", "--quick", "--out", str(out), "--db", str(db), "--format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "verdicts.json").read_text())
    assert len(rows) == 6 + 4 + 4 + 6 + 2
    assert all(r["verdict"] in ("reproduced", "not reproduced", "partly", "inconclusive") for r in rows)
    assert "**This is the `--quick` run**" in (out / "report.md").read_text()
    again = CliRunner().invoke(cli, args)  # every trial from the store
    assert again.exit_code == 0
    assert json.loads((out / "verdicts.json").read_text()) == rows
