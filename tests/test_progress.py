"""Progress (batchscale.progress): counters and lines go to stderr, never stdout; stderr that is not a
terminal gets whole lines (no carriage returns); plain callbacks see messages only; long commands and the
sweep runner report counts that end at their totals."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from test_store_claims import RecordingExecutor, run

from batchscale.cli.main import cli
from batchscale.progress import REPORTER, counter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def count_with_reporter(monkeypatch, stream: io.StringIO, total: int = 5) -> str:
    monkeypatch.setattr("sys.stderr", stream)
    REPORTER("a message")
    with counter(REPORTER, total, unit="trial", desc="work") as bar:
        for k in range(total):
            bar.update()
            if k == 1:
                REPORTER("in between")
    return stream.getvalue()


def test_a_log_file_gets_whole_lines_without_carriage_returns(monkeypatch):
    text = count_with_reporter(monkeypatch, io.StringIO())
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "a message" and "in between" in lines
    assert lines[1].startswith("work:   0%") and "0/5" in lines[1]  # shown before the first unit ends
    assert lines[-1].startswith("work: 100%") and "5/5" in lines[-1]
    assert len(lines) <= 5  # start, message lines, end: no line per update within LINE_SECONDS


def test_a_growing_total_adds_no_lines_to_a_log_file(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    with counter(REPORTER, None, unit="trial", desc="trials") as bar:
        for total in range(1, 30):
            bar.set_total(total)
            bar.update()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "0/1" in lines[1] and "29/29" in lines[-1], lines  # the first total is said


def test_a_terminal_gets_the_redrawn_bar(monkeypatch):
    """The line mode above is a choice: the same calls on a terminal redraw in place."""
    text = count_with_reporter(monkeypatch, Terminal())
    assert "\r" in text and "5/5" in text and "a message\n" in text


def test_plain_callbacks_get_messages_and_a_silent_counter(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    heard: list[str] = []
    with counter(heard.append, 3, unit="trial") as bar:
        bar.update()
        bar.set_total(4)
        bar.set_postfix_str("x")
    assert heard == [] and stream.getvalue() == ""
    with counter(None, 3) as bar:
        bar.update(3)


def test_the_sweep_runner_counts_the_trials_it_trains(monkeypatch, tmp_path):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    executor = RecordingExecutor()
    rows, stats, _ = run(tmp_path / "runs.sqlite", executor, REPORTER)
    trained = len(executor.trained)
    assert stats.trained == trained == 4
    last = [line for line in stream.getvalue().splitlines() if line.startswith("trials:")][-1]
    assert f"{trained}/{trained}" in last and "100%" in last
    stream.truncate(0)
    run(tmp_path / "runs.sqlite", RecordingExecutor(), REPORTER)  # all reused: nothing to train
    assert not any(f"/{trained}" in line for line in stream.getvalue().splitlines())


@pytest.mark.parametrize("command", ["predict-nqm", "predict-noise-scale-bootstrap"])
def test_stdout_is_the_same_with_progress_silenced(command, monkeypatch, tmp_path):
    """stdout is JSON only, identical whether the counters run or are silenced (TQDM_DISABLE=1)."""
    if command == "predict-nqm":
        args = ["predict", "nqm", "--dim", "300", "--batch-sizes", "1,8,64", "--format", "json"]
        bar = "search:"
    else:
        import batchscale.cli.predict_noise_scale as cli_ns

        monkeypatch.setattr(cli_ns, "PROGRESS_FROM", 100)
        curve = tmp_path / "c.csv"
        curve.write_text("batch_size,steps\n1,1000\n2,520\n4,280\n8,160\n16,110\n32,90\n")
        args = ["predict", "noise-scale", "--curve", str(curve), "--bootstrap", "500", "--format", "json"]
        bar = "bootstrap:"
    shown = CliRunner().invoke(cli, args)
    assert shown.exit_code == 0, shown.output
    monkeypatch.setenv("TQDM_DISABLE", "1")
    silent = CliRunner().invoke(cli, args)
    assert silent.exit_code == 0, silent.output
    assert shown.stdout == silent.stdout
    json.loads(shown.stdout)
    assert "\r" not in shown.stderr
    assert f"{bar} 100%" in shown.stderr and bar not in silent.stderr and bar not in shown.stdout


def test_update_moments_counts_the_examples_it_draws(monkeypatch):
    """The draws of `measure moments` (the long part after training) have their own counter."""
    from batchscale.empirical.gradients import gradient_statistics
    from batchscale.empirical.update_stats import update_moments
    from batchscale.empirical.workloads import get_workload

    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    wl = get_workload("linreg", spectrum=(1.0, 0.5), n_train=16, n_test=4, noise_std=0.5)
    model = wl.model(0)
    stats = gradient_statistics(model, wl.per_example_loss, wl.x_train, wl.y_train)
    update_moments(model, wl.per_example_loss, wl.x_train, wl.y_train, stats=stats, batch_sizes=[1, 4],
                   lr=0.05, draws=3, progress=REPORTER)
    total = 2 * 2 * 3 * (1 + 4)  # samplings x forms x draws x examples per batch
    last = stream.getvalue().splitlines()[-1]
    assert last.startswith("draws: 100%") and f"{total}/{total}" in last
