"""``batchscale sweep steps|grid`` end to end on tiny workloads, bad input, and resumption after SIGKILL."""

from __future__ import annotations

import json
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

TINY_STEPS = [
    "sweep", "steps", "--workload", "digits-mlp", "--batch-sizes", "16,32", "--optimizers", "sgd,momentum",
    "--lrs", "4", "--lr-range", "0.02:0.8", "--target", "0.15", "--max-steps", "1500", "--eval-subset", "0",
    "--max-extensions", "1", "--executor", "inline",
]
REQUIRED = {"batch_size", "steps", "learning_rate", "momentum", "optimizer", "regime", "status", "n_trials",
            "at_edge", "config", "sweep", "seed_steps", "seed_learning_rates", "steps_low", "steps_high"}


def invoke(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def one_line_error(result, words):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error:") and words in lines[-1], result.stderr
    assert "Traceback" not in result.output


def test_tiny_steps_sweep_json_plot_and_resume(tmp_path):
    db, plot = tmp_path / "runs.sqlite", tmp_path / "steps.png"
    first = invoke([*TINY_STEPS, "--db", str(db), "--format", "json", "--plot", str(plot)])
    assert first.exit_code == 0, first.output
    rows = json.loads(first.stdout)
    assert [(r["optimizer"], r["batch_size"]) for r in rows] == [
        ("sgd", 16), ("sgd", 32), ("momentum", 16), ("momentum", 32)
    ]
    for row in rows:
        assert REQUIRED <= set(row)
        assert row["status"] == "complete" and row["steps"] > 0
        assert row["config"]["batch_size"] == row["batch_size"]
        assert row["config"]["learning_rate"] == row["learning_rate"]
        assert row["regime"] in ("perfect_scaling", "diminishing_returns", "maximal_parallelism", "undecided")
    assert {r["momentum"] for r in rows if r["optimizer"] == "momentum"} == {0.9}
    for row in rows:  # three seeds by default: the median, its range and every seed's own best rate
        assert row["sweep"]["seeds"] == [0, 1, 2] and len(row["seed_learning_rates"]) == 3
        assert sorted(s if s is not None else float("inf") for s in row["seed_steps"])[1] == row["steps"]
        assert row["steps_low"] <= row["steps"] <= (row["steps_high"] or float("inf"))
    assert rows[0]["sweep"]["workload"] == "digits-mlp" and rows[0]["sweep"]["executor"]["name"] == "inline"
    assert plot.stat().st_size > 1000

    again = invoke([*TINY_STEPS, "--db", str(db), "--format", "json"])
    assert again.exit_code == 0
    assert "0 trials trained" in again.stderr
    assert [{k: r[k] for k in REQUIRED - {"sweep"}} for r in json.loads(again.stdout)] == [
        {k: r[k] for k in REQUIRED - {"sweep"}} for r in rows
    ]

    table = invoke([*TINY_STEPS, "--db", str(db)])
    assert table.exit_code == 0 and "at_edge" in table.stdout and "regime" in table.stdout


def test_unreachable_target_is_a_row_status(tmp_path):
    args = [*TINY_STEPS, "--optimizers", "sgd", "--target", "0.0", "--max-steps", "20"]
    args += ["--max-extensions", "0"]
    result = invoke([*args, "--db", str(tmp_path / "r.sqlite"), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert {r["status"] for r in json.loads(result.stdout)} == {"unreachable"}


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--batch-sizes", "16,4096"], "larger than the training set"),
        (["--lr-range", "1:0.1"], "LO <= HI"),
        (["--optimizers", "sgd,lbfgs"], "unknown optimizer 'lbfgs'"),
        (["--n-seeds", "0"], "--n-seeds"),
    ],
    ids=["batch-too-large", "empty-lr-range", "unknown-optimizer", "no-seeds"],
)
def test_bad_input_is_one_line(tmp_path, extra, words):
    one_line_error(invoke([*TINY_STEPS, *extra, "--db", str(tmp_path / "r.sqlite")]), words)


@pytest.mark.parametrize(
    "command, extra, words",
    [
        (["sweep", "steps"], ["--batch-sizes", "0"], "below the minimum 1"),
        (["sweep", "steps"], ["--batch-sizes", "4096"], "larger than the training set"),
        (["sweep", "grid"], ["--batch-sizes", "4096"], "larger than the training set"),
    ],
    ids=["steps-zero", "steps-too-large", "grid-too-large"],
)
def test_quick_keeps_explicit_options(tmp_path, command, extra, words):
    """--quick supplies defaults; an option the user gave is used (and checked), not replaced."""
    one_line_error(invoke([*command, "--quick", *extra, "--db", str(tmp_path / "r.sqlite")]), words)


GRID_TINY = ["sweep", "grid", "--workload", "digits-mlp", "--batch-sizes", "32", "--lrs", "0.01",
             "--epochs", "0.1", "--executor", "inline"]


@pytest.mark.parametrize(
    "args, words",
    [
        ([*TINY_STEPS, "--plot", "x.bmp"], "--plot"),
        ([*TINY_STEPS, "--plot", ""], "--plot"),
        ([*TINY_STEPS, "--critical-fraction", "-1"], "--critical-fraction"),
        ([*TINY_STEPS, "--target", "2"], "error-rate target must be in [0, 1)"),
        ([*TINY_STEPS, "--target", "-1"], "error-rate target must be in [0, 1)"),
        ([*TINY_STEPS, "--target-metric", "loss", "--target", "-1"], "loss target"),
        ([*TINY_STEPS, "--eval-subset", "-1"], "--eval-subset"),
        ([*TINY_STEPS, "--optimizers", "momentum", "--momentum", "0"], "needs --momentum > 0"),
        ([*TINY_STEPS, "--workload-option", "n_samples=10"], "bad options"),
        ([*TINY_STEPS, "--decay", "cosine"], "--budget-factor 0"),
        ([*TINY_STEPS, "--budget-factor", "0", "--warmup-fraction", "1"], "warm-up fraction"),
        ([*TINY_STEPS, "--weight-decay", "-0.1"], "weight decay"),
        ([*GRID_TINY, "--plot", "z.txt"], "--plot"),
        ([*GRID_TINY, "--optimizer", "momentum", "--momentum", "0"], "needs --momentum > 0"),
        ([*GRID_TINY, "--eval-subset", "-1"], "--eval-subset"),
        ([*GRID_TINY, "--epochs", "inf"], "--epochs"),
    ],
    ids=["plot-bmp", "plot-empty", "critical-negative", "target-2", "target-negative", "loss-target-negative",
         "eval-subset-negative", "momentum-0", "unknown-workload-option", "decay-with-budget",
         "warmup-fraction-1", "weight-decay-negative", "grid-plot-txt", "grid-momentum-0",
         "grid-eval-subset", "grid-epochs-inf"],
)
def test_bad_options_fail_before_the_store_exists(tmp_path, args, words):
    """Every option is checked before the first trial: no training, no store left behind."""
    db = tmp_path / "r.sqlite"
    result = invoke([*args, "--db", str(db)])
    one_line_error(result, words)
    assert not db.exists() and list(tmp_path.iterdir()) == []
    assert "trials trained" not in result.stderr and "store" not in result.stderr


def test_missing_executor_extra_names_it(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    fake = lambda name, *a: None if name == "ray" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", fake)
    result = invoke([*TINY_STEPS, "--executor", "ray", "--db", str(tmp_path / "r.sqlite")])
    one_line_error(result, "batchscale[ray]")


def test_malformed_option_text_is_a_usage_error(tmp_path):
    result = invoke([*TINY_STEPS, "--lr-range", "abc", "--db", str(tmp_path / "r.sqlite")])
    assert result.exit_code == 2 and "LO:HI" in result.output


def test_foreign_database_is_refused_untouched(tmp_path):
    db = tmp_path / "theirs.sqlite"
    connection = sqlite3.connect(db)
    try:
        with connection:
            connection.execute("CREATE TABLE invoices (id INTEGER)")
    finally:
        connection.close()
    before = db.read_bytes()
    one_line_error(invoke([*TINY_STEPS, "--db", str(db)]), "another program")
    assert db.read_bytes() == before


def test_tiny_grid_with_divergence_and_heatmap(tmp_path):
    plot = tmp_path / "grid.png"
    args = [
        "sweep", "grid", "--workload", "digits-mlp", "--batch-sizes", "32,128", "--lrs", "0.001,1.0",
        "--epochs", "0.5", "--executor", "inline", "--db", str(tmp_path / "r.sqlite"), "--format", "json",
        "--plot", str(plot),
    ]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    cells = {(r["batch_size"], r["base_learning_rate"]): r for r in rows}
    assert set(cells) == {(32, 0.001), (32, 1.0), (128, 0.001), (128, 1.0)}
    assert cells[(128, 1.0)]["diverged"] and cells[(128, 1.0)]["test_accuracy"] is None
    assert not cells[(32, 0.001)]["diverged"] and 0 < cells[(32, 0.001)]["test_accuracy"] <= 1
    assert cells[(32, 0.001)]["steps"] == 23  # 0.5 epoch of ceil(1437 / 32) = 45 steps
    assert cells[(128, 1.0)]["effective_learning_rate"] == 128.0
    assert plot.stat().st_size > 1000
    assert invoke([*args[:-2], "--format", "csv"]).stdout.startswith("batch_size,")


# ----------------------------------------------------------------------------------------------------
# Kill -9 in the middle, re-run, compare with an uninterrupted run.

KILL_ARGS = [
    "sweep", "steps", "--workload", "digits-mlp", "--batch-sizes", "8..32", "--optimizers", "sgd,momentum",
    "--lrs", "4", "--lr-range", "0.02:0.8", "--target", "0.15", "--max-steps", "1500", "--eval-subset", "0",
    "--max-extensions", "1", "--threads", "1", "--format", "json", "--n-seeds", "1",
]
KEYS = ("optimizer", "batch_size", "steps", "learning_rate", "momentum", "status", "n_trials", "at_edge")


def run_cli(args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "batchscale.cli.main", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


def stored_rows(db: Path) -> list[tuple[str, str, float, str]]:
    if not db.exists():
        return []
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT trial_id, session, finished_at, status FROM trials").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        connection.close()


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return False
    state = next((line for line in status.read_text().splitlines() if line.startswith("State:")), "")
    return "Z" not in state.split()[1:2]


def test_sigkill_mid_sweep_then_resume_equals_uninterrupted(tmp_path):
    killed_db, reference_db = tmp_path / "killed.sqlite", tmp_path / "reference.sqlite"
    reference = run_cli([*KILL_ARGS, "--executor", "inline", "--db", str(reference_db)])

    victim = run_cli([*KILL_ARGS, "--executor", "local", "--workers", "1", "--db", str(killed_db)])
    deadline = time.monotonic() + 120
    workers: list[int] = []
    finished = lambda: [r for r in stored_rows(killed_db) if r[3] != "pruned"]  # noqa: E731
    while len(finished()) < 2 and time.monotonic() < deadline and victim.poll() is None:
        workers = children_of(victim.pid) or workers
        time.sleep(0.02)
    workers = children_of(victim.pid) or workers
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    # a pruned trial is re-run without pruning when it could still win (its row replaced): not a re-training
    before = {trial_id: (session, finished) for trial_id, session, finished, status in stored_rows(killed_db)
              if status != "pruned"}
    assert before, "no rows were written before the kill"

    for pid in workers:  # orphaned pool workers notice the dead parent and exit by themselves
        stop = time.monotonic() + 15
        while alive(pid) and time.monotonic() < stop:
            time.sleep(0.1)
        assert not alive(pid), f"worker {pid} outlived its killed parent"

    resumed = run_cli([*KILL_ARGS, "--executor", "inline", "--db", str(killed_db)])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"{len(before)} reused" in err or "reused" in err
    after = {trial_id: (session, finished) for trial_id, session, finished, _ in stored_rows(killed_db)}
    assert all(after[k] == v for k, v in before.items()), "rows of the killed run were re-trained"
    assert len(after) > len(before)

    ref_out, ref_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_err
    pick = lambda text: [tuple(r[k] for k in KEYS) for r in json.loads(text)]  # noqa: E731
    assert pick(out) == pick(ref_out)
    assert len(after) == len(stored_rows(reference_db))


# ----------------------------------------------------------------------------------------------------
# Pruning never changes the answer: the default (pruned trials that could still win are re-run) equals
# --no-prune on the README's quick sweep.

LIGHT_QUICK = ["sweep", "steps", "--quick", "--batch-sizes", "4,8", "--optimizers", "sgd", "--n-seeds", "1",
               "--executor", "inline", "--format", "json"]
ANSWER = ("optimizer", "batch_size", "steps", "learning_rate", "momentum", "status")


def answers(result):
    assert result.exit_code == 0, result.output
    return [tuple(r[k] for k in ANSWER) for r in json.loads(result.stdout)], json.loads(result.stdout)


def test_default_equals_no_prune_on_a_small_quick_sweep(tmp_path):
    default, rows = answers(invoke([*LIGHT_QUICK, "--db", str(tmp_path / "a.sqlite")]))
    assert sum(r["n_pruned"] + r["n_verified"] for r in rows) > 0, "nothing was pruned: the test is void"
    no_prune, _ = answers(invoke([*LIGHT_QUICK, "--no-prune", "--db", str(tmp_path / "b.sqlite")]))
    assert default == no_prune


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_quick_sweep_default_equals_no_prune(tmp_path, seed):
    """The README's quick sweep, one seed at a time (seeds 0-3, where the pruning rule alone changed 4 of
    56 answers): the default answer equals the --no-prune answer at every point."""
    args = ["sweep", "steps", "--quick", "--n-seeds", "1", "--seed", str(seed), "--format", "json"]
    default, _ = answers(invoke([*args, "--db", str(tmp_path / "a.sqlite")]))
    no_prune, _ = answers(invoke([*args, "--no-prune", "--db", str(tmp_path / "b.sqlite")]))
    assert default == no_prune


def test_recipe_options_reach_every_trial(tmp_path):
    """--warmup-fraction, --decay, --weight-decay: in every row's trial config and in its sweep config."""
    args = ["sweep", "steps", "--workload", "digits-mlp", "--batch-sizes", "32", "--optimizers", "sgd",
            "--lrs", "2", "--lr-range", "0.1:0.4", "--target", "0.3", "--max-steps", "400", "--eval-subset",
            "0", "--max-extensions", "0", "--lr-refine", "0", "--n-seeds", "1", "--executor", "inline",
            "--budget-factor", "0", "--warmup-fraction", "0.1", "--decay", "linear", "--weight-decay", "1e-4",
            "--format", "json", "--db", str(tmp_path / "r.sqlite")]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["status"] == "complete", row
    assert (row["config"]["schedule"], row["config"]["warmup_steps"], row["config"]["weight_decay"]) == (
        "warmup_linear_decay", 40, 1e-4)
    assert (row["sweep"]["warmup_fraction"], row["sweep"]["decay"], row["sweep"]["budget_factor"]) == (
        0.1, "linear", None)


def test_target_auto_lies_between_initial_and_best_and_is_reused(tmp_path):
    """--target auto on digits-mlp (tiny): the chosen target sits between the reference run's initial and
    best metric at the stated fraction, every row's sweep config carries it, and a re-run trains nothing."""
    args = ["sweep", "steps", "--workload", "digits-mlp", "--batch-sizes", "32,64", "--optimizers", "sgd",
            "--lrs", "2", "--lr-range", "0.1:0.4", "--target", "auto", "--target-fraction", "0.8",
            "--target-budget", "200", "--max-steps", "300", "--eval-subset", "0", "--max-extensions", "0",
            "--lr-refine", "0",
            "--n-seeds", "1", "--executor", "inline", "--format", "json", "--db", str(tmp_path / "r.sqlite")]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    auto = rows[0]["auto_target"]
    assert auto["best_metric"] < auto["target"] < auto["initial_metric"]
    expected = auto["initial_metric"] - 0.8 * (auto["initial_metric"] - auto["best_metric"])
    assert auto["target"] == pytest.approx(expected, rel=1e-3)
    assert all(r["sweep"]["target"] == auto["target"] == r["config"]["target"] for r in rows if r["config"])
    assert all(r["sweep"]["auto_target"] == auto for r in rows)
    assert "target auto: error" in result.stderr and "200 steps each: --target-budget" in result.stderr
    assert auto["max_steps"] == 200
    again = invoke(args)
    assert again.exit_code == 0 and " 0 trials trained" in again.stderr, again.stderr
    assert [r["auto_target"] for r in json.loads(again.stdout)] == [auto] * len(rows)


def test_target_fraction_needs_target_auto(tmp_path):
    one_line_error(invoke([*TINY_STEPS, "--target-fraction", "0.5", "--db", str(tmp_path / "r.sqlite")]),
                   "--target auto")


def test_a_target_met_at_step_0_is_refused_before_training(tmp_path):
    """Error 0.95 is met by the untrained model (10 classes: ~0.9 error): one Error line naming step 0 and
    the initial metric, and the store holds only the one-step probe trials (no sweep trial trained)."""
    import sqlite3

    db = tmp_path / "r.sqlite"
    args = [*TINY_STEPS, "--target", "0.95", "--n-seeds", "2", "--db", str(db)]
    one_line_error(invoke(args), "met at step 0")
    with sqlite3.connect(db) as connection:
        budgets = [json.loads(c)["max_steps"] for (c,) in connection.execute("SELECT config FROM trials")]
    assert budgets == [1, 1]
    assert invoke([*TINY_STEPS, "--lrs", "2", "--lr-refine", "0", "--max-extensions", "0", "--optimizers",
                   "sgd", "--batch-sizes", "32", "--n-seeds", "1", "--db", str(tmp_path / "ok.sqlite")]
                  ).exit_code == 0  # the planted wrong answer: a reachable target is not refused


def test_n_verified_is_the_same_in_a_fresh_and_a_resumed_run(tmp_path):
    """A store filled by the pruning rule alone (--no-verify-pruned) makes the default sweep re-run the
    pruned trials that could matter (n_verified > 0 somewhere); running the default again on that store
    trains nothing and reports the same rows, n_verified included (it counts results noted as re-runs)."""
    db = tmp_path / "v.sqlite"
    invoke([*LIGHT_QUICK, "--no-verify-pruned", "--db", str(db)])
    fresh = invoke([*LIGHT_QUICK, "--db", str(db)])
    resumed = invoke([*LIGHT_QUICK, "--db", str(db)])
    assert fresh.exit_code == 0 and resumed.exit_code == 0 and " 0 trials trained" in resumed.stderr
    rows, again = json.loads(fresh.stdout), json.loads(resumed.stdout)
    assert sum(r["n_verified"] for r in rows) > 0, "nothing was verified: the test is void"
    assert [r["n_verified"] for r in again] == [r["n_verified"] for r in rows]
    assert [{k: v for k, v in r.items() if k != "sweep"} for r in again] == [
        {k: v for k, v in r.items() if k != "sweep"} for r in rows]

