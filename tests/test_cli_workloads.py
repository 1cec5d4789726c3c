"""``batchscale workloads`` through click's CliRunner."""

from __future__ import annotations

import csv
import io
import json
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli

FILE_BASED = {"mnist-cnn", "fashion-mnist-cnn", "cifar10-resnet8"}


@pytest.fixture()
def listing_json(tmp_path) -> tuple[list[dict], str]:
    empty = tmp_path / "no-data"
    result = CliRunner().invoke(cli, ["workloads", "--format", "json", "--data-dir", str(empty)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), str(empty)


def test_json_lists_every_workload(listing_json):
    rows, empty = listing_json
    assert [r["name"] for r in rows] == [
        "mnist1d-mlp",
        "mnist1d-cnn",
        "digits-mlp",
        "digits-cnn",
        "linreg",
        "teacher-student",
        "mnist-cnn",
        "fashion-mnist-cnn",
        "cifar10-resnet8",
    ]
    by_name = {r["name"]: r for r in rows}
    assert by_name["mnist1d-mlp"]["n_train"] == 4000 and by_name["mnist1d-mlp"]["n_test"] == 1000
    assert by_name["linreg"]["n_params"] == 50 and by_name["linreg"]["loss"] == "mse"
    assert by_name["digits-mlp"]["n_train"] + by_name["digits-mlp"]["n_test"] == 1797
    for name in FILE_BASED:
        assert by_name[name]["status"] == f"files missing under {empty}"
    assert all(r["status"] == "ok" for r in rows if r["name"] not in FILE_BASED)
    assert all(r["description"] and "options" in r for r in rows)


def test_table_and_csv_formats(tmp_path):
    table = CliRunner().invoke(cli, ["workloads", "--data-dir", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split()[:3] == ["name", "loss", "n_train"]
    assert "files missing under" in table.stdout and "workloads: loading" not in table.stdout
    rows = list(csv.DictReader(io.StringIO(CliRunner().invoke(cli, ["workloads", "--format", "csv"]).stdout)))
    assert len(rows) == 9 and rows[0]["name"] == "mnist1d-mlp"


def test_one_workload_with_options_and_seed():
    args = [
        "workloads",
        "--workload",
        "linreg",
        "-W",
        "dim=7",
        "-W",
        "n_train=30",
        "--seed",
        "4",
        "--format",
        "json",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["n_train"], row["n_params"]) == (30, 7)
    assert "dim=7" in row["options"] and "seed=4" in row["options"]


BAD = [
    pytest.param(["--workload", "nope"], "Error: unknown workload 'nope'; known: mnist1d-mlp", id="unknown"),
    pytest.param(["--workload", "linreg", "-W", "dim"], "is not KEY=VALUE", id="malformed-option"),
    pytest.param(
        ["--workload", "linreg", "-W", "dim=0"], "Error: option dim=0 must be an integer >= 1", id="range"
    ),
    pytest.param(["--workload", "linreg", "-W", "depth=3"], "bad options ['depth']", id="unknown-option"),
    pytest.param(["--workload", "nosuchmod_abc:f"], "no module named 'nosuchmod_abc'", id="user-import"),
]


@pytest.mark.parametrize("args, fragment", BAD)
def test_bad_input_exits_2_without_traceback(args, fragment):
    result = CliRunner().invoke(cli, ["workloads", *args])
    assert result.exit_code == 2
    assert fragment in result.output and "Traceback" not in result.output


def test_user_workload_through_the_cli(tmp_path, monkeypatch):
    (tmp_path / "cli_user_wl.py").write_text(
        textwrap.dedent(
            """
            import torch
            from functools import partial
            from batchscale.empirical.models import make_mlp
            from batchscale.empirical.workloads import Workload

            def make(n=12, seed=0):
                g = torch.Generator().manual_seed(seed)
                x, y = torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)
                model = partial(make_mlp, in_dim=5, hidden=(4,), out_dim=3)
                return Workload("mine", model, x, y, x[:2], y[:2])
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(
        cli, ["workloads", "--workload", "cli_user_wl:make", "-W", "n=9", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["name"] == "cli_user_wl:make" and row["description"] == "user workload"  # no docstring
    assert (row["n_train"], row["outputs"], row["n_params"]) == (9, 3, 5 * 4 + 4 + 4 * 3 + 3)


def test_user_factory_exception_is_one_line_exit_1(tmp_path, monkeypatch):
    """The user's code raised: exit 1 (not 2, bad input), the factory and its frame named, and the
    module found in the current folder although that folder is not on sys.path."""
    (tmp_path / "cli_failing_wl.py").write_text(
        "def make(n=3):\n    raise RuntimeError('cannot open data.csv\\nmore detail')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cli_failing_wl", raising=False)
    result = CliRunner().invoke(cli, ["workloads", "--workload", "cli_failing_wl:make"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert errors == [
        "Error: workload cli_failing_wl:make failed: RuntimeError: cannot open data.csv "
        "(at cli_failing_wl.py:2 in make)"
    ]
    debug = CliRunner().invoke(cli, ["--debug", "workloads", "--workload", "cli_failing_wl:make"])
    assert debug.exit_code == 1 and isinstance(debug.exception.__cause__, RuntimeError)


def test_wrong_option_type_for_a_user_factory_is_exit_2(tmp_path, monkeypatch):
    (tmp_path / "cli_typed_wl.py").write_text("def make(hidden: int = 3):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(cli, ["workloads", "--workload", "cli_typed_wl:make", "-W", "hidden=abc"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Error: workload cli_typed_wl:make: option hidden='abc' must be an integer" in result.output


DOCS = Path(__file__).resolve().parents[1] / "docs" / "workloads.md"


def test_the_documented_user_workload_runs(tmp_path, monkeypatch):
    text = DOCS.read_text()
    after = text.split("<!-- example: my_workloads.py -->", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_workloads.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_workloads", raising=False)  # test_workloads has its own
    args = [
        "workloads",
        "--workload",
        "my_workloads:spirals",
        "-W",
        "n=1000",
        "-W",
        "width=32",
        "--format",
        "json",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["n_train"], row["n_test"], row["n_params"]) == (800, 200, 2 * 32 + 32 + 32 * 2 + 2)
