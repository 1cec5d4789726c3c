"""Every reproduction's trials go to the results store: a second run trains nothing, an interrupted one
resumes (counts from the store's rows and each run's own tally)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli
from batchscale.reproduce.report import DEFAULT_STORE, Options
from batchscale.reproduce.trials import Tally, train_stored


def stored_rows(db: Path) -> dict[str, str]:
    """``{trial_id: session}`` of the store's rows (empty when there is no readable store yet)."""
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        return dict(connection.execute("SELECT trial_id, session FROM trials"))
    except sqlite3.Error:
        return {}
    finally:
        connection.close()


def tiny_configs():
    from batchscale.empirical.trials import TrainConfig

    return [TrainConfig(workload="linreg", workload_options={"dim": 3, "n_train": 32, "n_test": 8,
                                                             "noise_std": 0.0},
                        batch_size=b, learning_rate=0.1, seed=s, max_steps=40, target_metric="loss",
                        target=1e-3) for b in (2, 8) for s in (0, 1)]


def test_default_store_is_the_one_sweep_and_verify_use():
    from batchscale.verify.steps_sweep import DEFAULT_STORE as VERIFY_STORE

    assert Options().store == DEFAULT_STORE == VERIFY_STORE
    assert Options(db="x.sqlite").store == "x.sqlite"


def test_a_second_call_trains_nothing_and_returns_the_same_results(tmp_path):
    db = tmp_path / "runs.sqlite"
    options = Options(db=str(db))
    first, second = Tally(str(db)), Tally(str(db))
    a = train_stored(options, tiny_configs(), "t", first)
    rows = stored_rows(db)
    b = train_stored(options, tiny_configs(), "t", second)
    assert (first.trained, first.reused) == (4, 0) and (second.trained, second.reused) == (0, 4)
    assert stored_rows(db) == rows and len(rows) == 4 and len(set(rows.values())) == 1
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]
    assert [r.config for r in a] == tiny_configs()  # in the order asked


def test_a_foreign_store_is_refused_before_training(tmp_path):
    db = tmp_path / "other.sqlite"
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE notes(x)")
    connection.commit()
    connection.close()
    before = db.read_bytes()
    result = CliRunner().invoke(cli, ["reproduce", "ma2018", "--quick", "--db", str(db), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2 and "another program" in result.output, result.output
    assert db.read_bytes() == before and not (tmp_path / "out").exists()


def default_sigint() -> None:
    """In the child: SIGINT back to its default, so Python installs its KeyboardInterrupt handler even when
    the test runs in a background job (which inherits SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args):
    return subprocess.Popen([sys.executable, "-m", "batchscale.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_sigint)


@pytest.mark.slow
def test_ma2018_rerun_trains_nothing_and_an_interrupted_run_resumes(tmp_path):
    db = tmp_path / "runs.sqlite"
    args = ["reproduce", "ma2018", "--quick", "--db", str(db), "--out", str(tmp_path / "out"), "--format",
            "json"]
    victim = start(args)
    deadline = time.monotonic() + 300
    while len(stored_rows(db)) < 6 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the reproduction ended before it could be interrupted"
    os.killpg(victim.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 130, err
    assert "Traceback" not in err and f"stored in {db}; run the same command again to resume" in err
    kept = stored_rows(db)
    assert kept and not (tmp_path / "out" / "report.md").exists()
    resumed = start(args)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    rows = stored_rows(db)
    assert all(rows[k] == v for k, v in kept.items())  # nothing kept was trained again
    assert f"{len(rows) - len(kept)} trials trained, {len(kept)} reused" in err
    again = start(args)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert stored_rows(db) == rows and f"0 trials trained, {len(rows)} reused" in err
    assert f"0 trained by this run, {len(rows)} reused" in (tmp_path / "out" / "report.md").read_text()


def test_a_measurement_is_kept_beside_the_store_and_read_back(tmp_path):
    from batchscale.reproduce.trials import MEASURED_FOLDER, measured_beside_store

    options = Options(db=str(tmp_path / "runs.sqlite"))
    calls = []

    def compute(value):
        calls.append(value)
        return [{"step": 0, "b_simple": value}]

    first = measured_beside_store(options, "m", {"lr": 0.1}, lambda: compute(1.5))
    again = measured_beside_store(options, "m", {"lr": 0.1}, lambda: compute(9.9))
    other = measured_beside_store(options, "m", {"lr": 0.2}, lambda: compute(2.5))
    assert first == again == [{"step": 0, "b_simple": 1.5}] and other[0]["b_simple"] == 2.5
    assert calls == [1.5, 2.5]  # the second call with the same settings measured nothing
    for path in (tmp_path / MEASURED_FOLDER).iterdir():
        path.write_text("{not json")  # damaged: measured again, never trusted
    assert measured_beside_store(options, "m", {"lr": 0.1}, lambda: compute(3.5))[0]["b_simple"] == 3.5
