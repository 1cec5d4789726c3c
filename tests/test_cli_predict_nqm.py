"""``batchscale predict nqm`` through click's CliRunner: output fields, formats, plots and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli

SMALL = ["predict", "nqm", "--dim", "1000", "--bins", "30", "--lr-grid", "-4:0.5:30", "--target", "0.02"]
REGIMES = {"perfect_scaling", "diminishing_returns", "maximal_parallelism", "unreachable"}


def run(*args):
    return CliRunner().invoke(cli, [*args])


def rows_of(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_sgd_json_rows_carry_the_documented_fields():
    rows = rows_of(run(*SMALL, "--batch-sizes", "4,64,4096,262144", "--format", "json"))
    assert [r["batch_size"] for r in rows] == [4, 64, 4096, 262144]
    for row in rows:
        assert {"batch_size", "steps", "learning_rate", "regime", "loss_at_steps"} <= set(row)
        assert "momentum" not in row
        assert row["regime"] in REGIMES
        assert row["steps"] >= row["steps_lower_bound"] > 0
        assert row["loss_at_steps"] <= 0.02
    steps = [r["steps"] for r in rows]
    assert steps == sorted(steps, reverse=True)


def test_momentum_rows_have_momentum_and_beat_sgd_at_large_batch():
    args = [*SMALL, "--batch-sizes", "262144", "--format", "json", "--momentum-grid", "-2:0:5"]
    heavy = rows_of(run(*args, "--optimizer", "momentum"))[0]
    plain = rows_of(run(*args))[0]
    assert 0 <= heavy["momentum"] < 1
    assert heavy["steps"] < plain["steps"]


@pytest.mark.parametrize("optimizer", ["precond", "ema"])
def test_precond_and_ema_run(optimizer):
    rows = rows_of(run(*SMALL, "--batch-sizes", "16,1024", "--format", "json", "--optimizer", optimizer))
    assert all(r["steps"] > 0 for r in rows)


def test_grid_search_picks_learning_rates_from_the_grid():
    rows = rows_of(run(*SMALL, "--batch-sizes", "8,512", "--lr-search", "grid", "--format", "json"))
    grid = np.logspace(-4, 0.5, 30)
    for row in rows:
        assert np.min(np.abs(grid - row["learning_rate"])) == 0.0


def test_table_and_csv_formats():
    table = run(*SMALL, "--batch-sizes", "4,8")
    assert table.exit_code == 0 and "regime" in table.stdout.splitlines()[0]
    csv = run(*SMALL, "--batch-sizes", "4,8", "--format", "csv")
    assert csv.stdout.splitlines()[0].startswith("batch_size,steps,learning_rate,regime,loss_at_steps")


def test_default_problem_gives_three_regimes():
    rows = rows_of(run("predict", "nqm", "--batch-sizes", "4..2097152", "--format", "json"))
    assert len(rows) == 20
    assert {r["regime"] for r in rows} == {"perfect_scaling", "diminishing_returns", "maximal_parallelism"}


@pytest.mark.parametrize("suffix", ["npy", "csv"])
def test_spectrum_file(tmp_path, suffix):
    h = 1.0 / np.arange(1, 201)
    path = tmp_path / f"spectrum.{suffix}"
    if suffix == "npy":
        np.save(path, np.column_stack([h, 2 * h]))
    else:
        path.write_text("h,c\n" + "\n".join(f"{float(a)!r},{float(2 * a)!r}" for a in h) + "\n")
    rows = rows_of(
        run(
            "predict",
            "nqm",
            "--spectrum",
            str(path),
            "--bins",
            "0",
            "--target",
            "0.05",
            "--batch-sizes",
            "16,4096",
            "--lr-grid",
            "-3:0.5:20",
            "--format",
            "json",
        )
    )
    assert all(r["steps"] > 0 for r in rows)


def test_plot_is_written(tmp_path):
    path = tmp_path / "nqm.png"
    result = run(*SMALL, "--batch-sizes", "4..4096", "--plot", str(path))
    assert result.exit_code == 0, result.output
    assert path.stat().st_size > 1000


def test_unreachable_batch_sizes_are_rows_not_errors():
    result = run(*SMALL, "--batch-sizes", "4,1048576", "--max-steps", "2000", "--format", "json")
    rows = rows_of(result)
    assert rows[0]["status"] == "unreachable" and rows[0]["regime"] == "unreachable"
    assert rows[0]["steps"] is None and rows[0]["loss_at_steps"] > 0.02
    assert rows[1]["status"] == "ok"
    assert "unreachable within 2000 steps (lowest loss reached" in result.stderr


BAD = [
    ("batch-zero", ["--batch-sizes", "0,4"], "--batch-sizes"),
    ("target-zero", ["--target", "0"], "target"),
    ("target-above-initial-loss", ["--target", "100"], "initial loss"),
    ("negative-noise", ["--noise", "-1"], "noise"),
    ("negative-bins", ["--bins", "-1"], "--bins"),
    ("bad-lr-grid", ["--lr-grid", "1:0:3"], "lr-grid"),
    ("bad-ema-decay", ["--optimizer", "ema", "--ema-decay", "1.5"], "ema-decay"),
    ("missing-spectrum", ["--spectrum", "/no/such/file.npy"], "does not exist"),
    (
        "target-below-reachable",
        ["--target", "1e-9", "--max-steps", "1000"],
        "unreachable at every batch size",
    ),
]


@pytest.mark.parametrize("args, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_exit_code_2(args, words):
    result = run(*SMALL, "--batch-sizes", "4", *args)
    assert result.exit_code == 2
    assert words in result.output
    assert "Traceback" not in result.output


def test_unreachable_target_reports_the_lowest_loss_reached():
    from batchscale.theory import nqm
    from batchscale.theory.spectra import power_law_spectrum

    result = run(*SMALL, "--batch-sizes", "4,64", "--target", "1e-9", "--max-steps", "1000")
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1
    assert "unreachable at every batch size" in errors[0]
    reported = float(errors[0].rsplit(" ", 1)[1])
    # independently: the lowest loss at step 1000 over the grid and both batch sizes
    spectrum = power_law_spectrum(1000, 1.0, bins=30)
    lrs = nqm.decade_grid(-4, 0.5, 30)
    losses = nqm.expected_loss(spectrum, np.array([[4.0], [64.0]]), lrs, 1000)
    assert reported == pytest.approx(float(np.min(losses)), rel=1e-3)


def test_options_of_another_optimizer_are_noted_as_ignored():
    result = run(*SMALL, "--batch-sizes", "4", "--ema-decay", "0.5", "--format", "json")
    assert result.exit_code == 0
    assert "--ema-decay is ignored: it applies to --optimizer ema only, not sgd" in result.stderr


def test_bad_spectrum_file_values(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("1.0\n-0.5\n")
    result = run("predict", "nqm", "--spectrum", str(path), "--batch-sizes", "4")
    assert result.exit_code == 2
    assert "Error: eigenvalues must be positive" in result.output


# --------------------------------------------------------------------------------------------------------
# Hostile input: extreme numbers, odd files, big problems (each ends in one Error: line or a right answer)
# --------------------------------------------------------------------------------------------------------


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


MOMENTUM_TINY = ["--optimizer", "momentum", "--momentum-grid", "-2:0:3", "--lr-grid", "-305:-1:6"]


def written(save):
    """A writer of ``path`` that closes its file (np.save/np.savez to an open file)."""

    def write(path):
        with open(path, "wb") as file:
            save(file)

    return write


@pytest.mark.parametrize(
    "rows, options",
    [
        ("1e300\n1e-300\n1\n", []),
        ("1e300,1\n1e-300,1\n", ["--optimizer", "ema"]),
        ("1e300\n1e-300\n1\n", MOMENTUM_TINY),
        ("1e300,1\n1e-300,1\n", ["--lr-grid", "-305:-298:6", "--optimizer", "ema"]),
    ],
    ids=["sgd-all-diverge", "ema-all-diverge", "momentum-underflow", "ema-tiny-steps"],
)
def test_extreme_spectra_end_cleanly(tmp_path, rows, options):
    path = tmp_path / "extreme.csv"
    path.write_text(rows)
    result = run("predict", "nqm", "--spectrum", str(path), "--batch-sizes", "4,64", "--bins", "0", *options)
    errors = error_lines(result)
    assert result.exit_code == 0 or (result.exit_code == 2 and len(errors) == 1), result.output


def test_a_grid_that_diverges_everywhere_says_so_with_the_stability_limit(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("1e300\n1\n")
    result = run("predict", "nqm", "--spectrum", str(path), "--batch-sizes", "4", "--lr-grid", "-5:0:4")
    (error,) = error_lines(result)
    assert result.exit_code == 2
    assert "diverges at every batch size" in error and "2e-300" in error and "--lr-grid" in error


@pytest.mark.parametrize(
    "name, write, words",
    [
        ("objects.npy", written(lambda f: np.save(f, np.array([1.0, None], dtype=object))), "objects"),
        ("complex.npy", lambda p: np.save(p, np.array([1 + 1j, 0.5])), "complex"),
        ("text.npy", lambda p: p.write_text("1.0\n0.5\n"), "not a .npy"),
        ("archive.npy", written(lambda f: np.savez(f, a=np.ones(3))), ".npz archive"),
        ("binary.csv", written(lambda f: np.save(f, np.ones(3))), "not a text CSV"),
        ("wide.csv", lambda p: p.write_text("1.0,0.5,0.1\n0.2,0.2,0.3\n"), "2 x 3"),
        ("row.csv", lambda p: p.write_text("1.0,0.5,0.1\n"), "1 x 3"),
        ("ragged.csv", lambda p: p.write_text("1.0,0.5\n0.5\n"), "row 2"),
        ("gap.csv", lambda p: p.write_text("1.0,,0.5\n"), "not a number"),
        ("wide.npy", lambda p: np.save(p, np.ones((2, 5))), "2 x 5"),
    ],
)
def test_odd_spectrum_files_give_one_error_line(tmp_path, name, write, words):
    path = tmp_path / name
    write(path)
    result = run("predict", "nqm", "--spectrum", str(path), "--batch-sizes", "4")
    (error,) = error_lines(result)
    assert result.exit_code == 2 and words in error, error


@pytest.mark.parametrize("command", [["nqm"], ["stability"]])
def test_empty_spectrum_is_an_error_not_the_default(command):
    result = run("predict", *command, "--spectrum", "")
    (error,) = error_lines(result)
    assert result.exit_code == 2 and "--spectrum" in error and "empty" in error


@pytest.mark.parametrize(
    "args",
    [["--dim", "1000000", "--bins", "0"], ["--dim", "100000000"], ["--dim", "1000", "--max-memory", "1e-6"]],
    ids=["million-unbinned", "hundred-million", "tiny-limit"],
)
def test_big_problems_are_refused_before_any_work_with_how_to_override(args):
    result = run("predict", "nqm", *args)
    (error,) = error_lines(result)
    assert result.exit_code == 2 and "GB of memory" in error and "raise the limit with --max-memory" in error
    assert "nqm:" not in result.stderr  # refused before the problem was built


def test_a_nan_memory_limit_is_refused():
    result = run(*SMALL, "--batch-sizes", "4", "--max-memory", "nan")
    (error,) = error_lines(result)
    assert result.exit_code == 2 and "--max-memory" in error


def test_a_raised_limit_lets_the_problem_run():
    result = run(*SMALL, "--batch-sizes", "4", "--max-memory", "inf", "--format", "json")
    assert rows_of(result)[0]["status"] == "ok"


def test_table_momentum_tells_0_9999_from_1():
    """The table's momentum keeps 3 significant digits of 1 - momentum (it printed '1' for 0.99997)."""
    args = [*SMALL, "--lr-grid", "-8:-2:13", "--lr-search", "grid", "--optimizer", "momentum"]
    args += ["--batch-sizes", "1024,65536", "--momentum-grid", "-4.5:-4.5:1"]  # momentum 1 - 10^-4.5
    exact = [r["momentum"] for r in rows_of(run(*args, "--format", "json"))]
    assert exact == pytest.approx([1 - 10**-4.5] * 2, rel=1e-12)
    table = run(*args, "--format", "table")
    assert table.exit_code == 0
    header, _, *lines = table.stdout.splitlines()
    column = header.split().index("momentum")
    shown = [float(line.split()[column]) for line in lines]
    for m, text in zip(exact, shown, strict=True):
        assert 1.0 - text == pytest.approx(1.0 - m, rel=5e-3)
