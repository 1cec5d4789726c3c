"""The bad-input corpus: every command line here is wrong, and each must end cleanly.

"Cleanly" means: the documented exit code (2 for malformed input, 1 for an exception inside the user's own
workload code), exactly one ``Error:`` line, no Python traceback, and, where training would follow, no
results store created (the input was checked before any work). Two tables:

- ``GENERATED``: for every option of every command, malformed values of its type (text for a number, an
  unknown choice, ``1,,2`` and the empty string for lists, ``nan``/``inf`` for finite floats, an empty
  path, ...), read from the commands themselves so a new option joins the corpus by itself.
- ``CASES``: the cases named in the hardening and structure issues, one by one, across every area.

Cases another engineer's area still fails are ``xfail(strict=True)`` with the owner in the reason, so this
file lists what is left. Everything runs in-process (click's CliRunner) and trains nothing.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from batchscale.cli.common import FilePath, FloatList, FolderPath, IntList, KeyValue, LogGrid, Range
from batchscale.cli.main import cli

EXIT_INPUT, EXIT_USER_CODE = 2, 1

USER_MODULE = '''
import torch
from torch import nn
from batchscale.empirical.workloads import Workload


def tiny(n: int = 8, hidden: int = 4):
    """A tiny two-class workload (for the bad-input corpus)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)
    return Workload("tiny", lambda s: nn.Sequential(nn.Linear(3, hidden), nn.Linear(hidden, 2)), x, y, x, y)


def boom(n: int = 8):
    raise RuntimeError("cannot open data.csv")


def nan_loss(n: int = 64):
    x = torch.full((n, 3), float("nan"))
    y = torch.zeros(n, dtype=torch.int64)
    return Workload("nan", lambda s: nn.Linear(3, 2), x, y, x, y)


def dropout(n: int = 64):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)
    model = lambda s: nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2))  # noqa: E731
    return Workload("drop", model, x, y, x, y)
'''


@pytest.fixture()
def sandbox(tmp_path, monkeypatch):
    """A scratch current folder holding a regular file, spectrum files and a user workload module."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATCHSCALE_DATA_DIR", raising=False)
    (tmp_path / "file.txt").write_text("a regular file, not a folder\n")
    (tmp_path / "corpus_wl.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "corpus_wl", raising=False)
    np.save(tmp_path / "object.npy", np.array([{"h": 1.0}, None], dtype=object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("1.0\n0.5\n")
    (tmp_path / "wide.csv").write_text("1.0,0.5,0.25\n1.0,0.5,0.25\n")  # 2 rows x 3 columns: ambiguous
    (tmp_path / "extreme.csv").write_text("1e300\n1e-300\n")
    return tmp_path


def check(result, code: int, sandbox: Path | None = None) -> None:
    output = result.output
    assert result.exit_code == code, output
    assert "Traceback" not in output, output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    if sandbox is not None:
        stores = [p for p in sandbox.rglob("*") if p.suffix == ".sqlite" or p.name.endswith("-journal")]
        assert not stores, f"a store was created before the input was checked: {stores}"


# ----------------------------------------------------------------------------------------------------
# Generated: malformed values for every option of every command

BASE_ARGS = {  # what a command needs besides the option under test (valid values)
    ("derive", "accounting"): ["-M", "10", "-m", "2"],
    ("runs", "show"): ["abc"],
}
SKIP = {"--seed"}  # any integer is a valid seed


def bad_values(param: click.Option) -> list[str]:
    kind = param.type
    if isinstance(kind, click.Choice):
        return ["bogus-choice"]
    if isinstance(kind, IntList):
        return ["1,,2", "", "abc", "4..2"]
    if isinstance(kind, FloatList):
        return ["1,,2", "", "nan"]
    if isinstance(kind, Range):
        return ["1", "2:1", "a:b"]
    if isinstance(kind, LogGrid):
        return ["1:2", "0:1:0"]
    if isinstance(kind, KeyValue):
        return ["novalue", "=3"]
    if isinstance(kind, FilePath):
        return ["", "x.bmp"] if kind.suffixes else [""]
    if isinstance(kind, FolderPath):
        return ["", "file.txt"]
    if isinstance(kind, click.types.IntParamType):
        return ["abc", "1.5"]
    if isinstance(kind, click.types.FloatParamType):
        bounded = isinstance(kind, click.FloatRange) and kind.max is not None
        inf_ok = bounded or getattr(kind, "allow_inf", False)
        return ["abc", "nan"] if inf_ok else ["abc", "nan", "inf"]
    if isinstance(kind, click.Path):
        return [""]
    return []


def generated() -> list:
    ctx = click.Context(cli)
    cases = []

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name])
            return
        for param in command.params:
            if not isinstance(param, click.Option) or param.is_flag or param.opts[0] in SKIP:
                continue
            for value in bad_values(param):
                args = [*path, *BASE_ARGS.get(tuple(path), []), param.opts[0], value]
                cases.append(pytest.param(args, id=" ".join([*path, param.opts[0], repr(value)])))

    walk(cli, [])
    return cases


GENERATED = generated()


def test_the_generated_corpus_covers_every_command():
    commands = {tuple(c.values[0][:2]) for c in GENERATED}
    assert len(commands) >= 16 and len(GENERATED) >= 300


@pytest.mark.parametrize("args", GENERATED)
def test_malformed_option_values(args, sandbox):
    check(CliRunner().invoke(cli, args), EXIT_INPUT, sandbox)


# ----------------------------------------------------------------------------------------------------
# Named cases (issues: hardening, structure, practitioner friction)


def owner(name: str, why: str):
    return pytest.mark.xfail(strict=True, reason=f"open, owner {name}: {why}")


SWEEP = ["sweep", "steps", "--workload", "digits-mlp", "--batch-sizes", "8..32", "--executor", "inline"]
GRID = ["sweep", "grid", "--workload", "digits-mlp", "--batch-sizes", "8,32", "--executor", "inline"]
USER = ["workloads", "--workload"]

CASES = [
    # output paths and stores
    pytest.param([*SWEEP, "--plot", "x.bmp"], EXIT_INPUT, (), id="steps-plot-bmp"),
    pytest.param([*SWEEP, "--plot", ""], EXIT_INPUT, (), id="steps-plot-empty"),
    pytest.param([*SWEEP, "--plot", "file.txt/x.png"], EXIT_INPUT, (), id="steps-plot-under-a-file"),
    pytest.param([*GRID, "--plot", "z.txt"], EXIT_INPUT, (), id="grid-plot-txt"),
    pytest.param([*SWEEP, "--db", ""], EXIT_INPUT, (), id="steps-db-empty"),
    pytest.param([*SWEEP, "--db", "/dev/null"], EXIT_INPUT, (), id="steps-db-dev-null"),
    pytest.param([*SWEEP, "--db", "file.txt/r.sqlite"], EXIT_INPUT, (), id="steps-db-under-a-file"),
    pytest.param([*SWEEP, "--db", "."], EXIT_INPUT, (), id="steps-db-a-folder"),
    pytest.param([*SWEEP, "--out", ""], EXIT_INPUT, (), id="steps-out-empty"),
    pytest.param([*SWEEP, "--out", "file.txt"], EXIT_INPUT, (), id="steps-out-a-file"),
    pytest.param(["runs", "list", "--db", ""], EXIT_INPUT, (), id="runs-db-empty"),
    pytest.param(["runs", "list", "--db", "missing.sqlite"], EXIT_INPUT, (), id="runs-db-missing"),
    pytest.param(["runs", "list", "--db", "file.txt"], EXIT_INPUT, (), id="runs-db-foreign-file"),
    pytest.param(["runs", "export", "-o", "file.txt/x.csv"], EXIT_INPUT, (), id="runs-export-under-a-file"),
    pytest.param(["runs", "list", "--status", "bogus"], EXIT_INPUT, (), id="runs-status-bogus"),
    pytest.param(["runs", "list", "--limit", "-5"], EXIT_INPUT, (), id="runs-limit-negative"),
    pytest.param(["derive", "staleness", "--plot", "curve.txt"], EXIT_INPUT, (), id="derive-plot-txt"),
    # sweep options checked before the first trial
    pytest.param([*SWEEP, "--critical-fraction", "-1"], EXIT_INPUT, (), id="critical-fraction-negative"),
    pytest.param([*SWEEP, "--target", "2"], EXIT_INPUT, (), id="target-error-rate-2"),
    pytest.param([*SWEEP, "--target", "-1"], EXIT_INPUT, (), id="target-negative"),
    pytest.param([*SWEEP, "--target-metric", "loss", "--target", "-1"], EXIT_INPUT, (), id="loss-target-neg"),
    pytest.param([*SWEEP, "--eval-subset", "-1"], EXIT_INPUT, (), id="eval-subset-negative"),
    pytest.param([*SWEEP, "--decay", "linear"], EXIT_INPUT, (), id="decay-with-budget-factor"),
    pytest.param([*SWEEP, "--budget-factor", "0", "--warmup-fraction", "1"], EXIT_INPUT, (), id="warmup-1"),
    pytest.param([*SWEEP, "--weight-decay", "-1"], EXIT_INPUT, (), id="weight-decay-negative"),
    pytest.param([*SWEEP, "--target", "auto", "--target-fraction", "0"], EXIT_INPUT, (), id="target-frac-0"),
    pytest.param([*SWEEP, "--target-fraction", "0.5"], EXIT_INPUT, (), id="target-fraction-without-auto"),
    pytest.param([*SWEEP, "--target-budget", "50"], EXIT_INPUT, (), id="target-budget-without-auto"),
    pytest.param([*SWEEP, "--target", "auto", "--target-budget", "0"], EXIT_INPUT, (), id="target-budget-0"),
    pytest.param([*SWEEP, "--target", "best"], EXIT_INPUT, (), id="target-word"),
    pytest.param([*GRID, "--optimizer", "momentum", "--momentum", "0"], EXIT_INPUT, (), id="grid-momentum-0"),
    pytest.param([*GRID, "--optimizer", "lbfgs"], EXIT_INPUT, (), id="grid-optimizer-unknown"),
    pytest.param([*GRID, "--epochs", "inf"], EXIT_INPUT, (), id="grid-epochs-inf"),
    pytest.param([*GRID, "--epochs", "0"], EXIT_INPUT, (), id="grid-epochs-0"),
    pytest.param([*GRID, "--lrs", "0.1,,1"], EXIT_INPUT, (), id="grid-lrs-empty-item"),
    pytest.param([*SWEEP, "--lr-factor", "1e200"], EXIT_INPUT, (), id="lr-factor-1e200"),
    pytest.param([*SWEEP, "--lr-factor", "1"], EXIT_INPUT, (), id="lr-factor-1"),
    pytest.param([*SWEEP, "--later-lrs", "1"], EXIT_INPUT, (), id="later-lrs-1"),
    pytest.param([*SWEEP, "--lr-range", "1:0.1"], EXIT_INPUT, (), id="lr-range-inverted"),
    pytest.param([*SWEEP, "--lr-range", "0:1"], EXIT_INPUT, (), id="lr-range-zero"),
    pytest.param([*SWEEP, "--n-seeds", "0"], EXIT_INPUT, (), id="n-seeds-0"),
    pytest.param([*SWEEP, "--threads", "0"], EXIT_INPUT, (), id="threads-0"),
    pytest.param([*SWEEP, "--workers", "0"], EXIT_INPUT, (), id="workers-0"),
    pytest.param([*SWEEP, "--max-steps", "0"], EXIT_INPUT, (), id="max-steps-0"),
    pytest.param([*SWEEP, "--batch-sizes", "16,4096"], EXIT_INPUT, (), id="batch-larger-than-data"),
    pytest.param([*SWEEP, "--batch-sizes", "0"], EXIT_INPUT, (), id="batch-zero"),
    pytest.param([*SWEEP, "--optimizers", "sgd,lbfgs"], EXIT_INPUT, (), id="optimizer-unknown"),
    pytest.param([*SWEEP, "--optimizers", ""], EXIT_INPUT, (), id="optimizers-empty"),
    pytest.param([*SWEEP, "--workload", "nope"], EXIT_INPUT, (), id="workload-unknown"),
    pytest.param([*SWEEP, "--workload", ""], EXIT_INPUT, (), id="workload-empty"),
    pytest.param([*SWEEP, "-W", "test_fraction=2"], EXIT_INPUT, (), id="workload-option-out-of-range"),
    pytest.param([*SWEEP, "-W", "depth=3"], EXIT_INPUT, (), id="workload-option-unknown"),
    pytest.param([*SWEEP, "-W", "hidden=8,,8"], EXIT_INPUT, (), id="workload-option-empty-item"),
    pytest.param([*SWEEP, "-W", "a=1", "-W", "a=2"], EXIT_INPUT, (), id="workload-option-twice"),
    pytest.param([*SWEEP, "--quick", "--batch-sizes", "0"], EXIT_INPUT, (), id="quick-explicit-checked"),
    pytest.param(["sweep", "steps", "--data-dir", ""], EXIT_INPUT, (), id="data-dir-empty"),
    # executors
    pytest.param([*SWEEP, "-X", "bogus=1"], EXIT_INPUT, (), id="executor-option-unknown"),
    pytest.param([*SWEEP, "--executor", "local", "-X", "adress=x"], EXIT_INPUT, (), id="local-option"),
    pytest.param([*SWEEP, "-X", "novalue"], EXIT_INPUT, (), id="executor-option-malformed"),
    # lists and numbers
    pytest.param(["derive", "accounting", "-M", "10", "-m", "1,,2"], EXIT_INPUT, (), id="m-empty-item"),
    pytest.param(["derive", "accounting", "-M", "10", "-m", ""], EXIT_INPUT, (), id="m-empty"),
    pytest.param(["derive", "accounting", "-M", "0", "-m", "1"], EXIT_INPUT, (), id="dataset-size-0"),
    pytest.param(["derive", "moments", "--dataset-size", "4"], EXIT_INPUT, (), id="moments-size-alone"),
    pytest.param(["predict", "stability", "--spectrum", ""], EXIT_INPUT, (), id="stability-spectrum-empty"),
    pytest.param(["predict", "stability", "--spectrum", "1,-1"], EXIT_INPUT, (), id="stability-negative"),
    pytest.param(["predict", "nqm", "--spectrum", ""], EXIT_INPUT, (), id="nqm-spectrum-empty"),
    pytest.param(["predict", "nqm", "--spectrum", "object.npy"], EXIT_INPUT, (), id="nqm-object-npy"),
    pytest.param(["predict", "nqm", "--spectrum", "text.npy"], EXIT_INPUT, (), id="nqm-text-npy"),
    pytest.param(["predict", "nqm", "--spectrum", "missing.csv"], EXIT_INPUT, (), id="nqm-spectrum-missing"),
    pytest.param(["predict", "nqm", "--spectrum", "wide.csv", "--batch-sizes", "4"], EXIT_INPUT, (),
                 id="nqm-2x3-csv"),
    pytest.param(["predict", "nqm", "--batch-sizes", "0,4"], EXIT_INPUT, (), id="nqm-batch-zero"),
    pytest.param(["predict", "nqm", "--target", "100"], EXIT_INPUT, (), id="nqm-target-above-start"),
    pytest.param(["predict", "nqm", "--dim", "0"], EXIT_INPUT, (), id="nqm-dim-0"),
    pytest.param(["predict", "noise-scale", "--b-noise", "nan"], EXIT_INPUT, (), id="b-noise-nan"),
    pytest.param(["predict", "noise-scale", "--b-noise", "-3"], EXIT_INPUT, (), id="b-noise-negative"),
    pytest.param(["predict", "noise-scale", "--curve", "missing.json"], EXIT_INPUT, (), id="curve-missing"),
    pytest.param(["predict", "noise-scale", "--curve", "file.txt"], EXIT_INPUT, (), id="curve-not-a-table"),
    # measure
    pytest.param(["measure", "noise-scale", "--method", "bogus"], EXIT_INPUT, (), id="method-unknown"),
    pytest.param(["measure", "moments", "--batch-sizes", "0"], EXIT_INPUT, (), id="moments-batch-zero"),
    pytest.param(
        ["measure", "sharpness", "--workload", "mnist-cnn", "--data-dir", "nodata"], EXIT_INPUT, (),
        id="no-files",
    ),
    pytest.param(
        ["measure", "noise-scale", "--workload", "corpus_wl:tiny", "-W", "n=64", "--method", "two-batch",
         "--batch-sizes", "16,4", "--draws", "2"],
        EXIT_INPUT, (),
        id="two-batch-inverted",
    ),
    # user workloads
    pytest.param([*USER, "corpus_wl:tiny", "-W", "hidden=abc"], EXIT_INPUT, (), id="user-option-type"),
    pytest.param([*USER, "corpus_wl:tiny", "-W", "width=3"], EXIT_INPUT, (), id="user-option-unknown"),
    pytest.param([*USER, "corpus_wl:missing"], EXIT_INPUT, (), id="user-no-attribute"),
    pytest.param([*USER, "no_such_module_abc:f"], EXIT_INPUT, (), id="user-no-module"),
    pytest.param([*USER, ":f"], EXIT_INPUT, (), id="user-empty-module"),
    pytest.param([*USER, "corpus_wl:boom"], EXIT_USER_CODE, (), id="user-factory-raises"),
    # a Dropout model is no longer bad input: measure evaluates it in a stated eval mode (test_cli_measure)
    # the root group
    pytest.param(["no-such-command"], EXIT_INPUT, (), id="unknown-command"),
    pytest.param(["--bogus"], EXIT_INPUT, (), id="unknown-root-option"),
    pytest.param(["sweep", "steps", "--bogus"], EXIT_INPUT, (), id="unknown-option"),
]


def _apply(cases):
    return [pytest.param(*c.values, marks=c.values[2], id=c.id) for c in cases]


@pytest.mark.parametrize("args, code, marks", _apply(CASES))
def test_named_bad_inputs(args, code, marks, sandbox):
    check(CliRunner().invoke(cli, args), code, sandbox)


# Inputs that are not malformed but extreme or degenerate: each must end cleanly (a result, or one Error:
# line with exit 2), never with a traceback or a silent wrong answer.
EXTREME = [
    pytest.param(["predict", "stability", "--spectrum", "1e308,1e-308"], (), id="stability-1e308"),
    pytest.param(["predict", "nqm", "--spectrum", "extreme.csv", "--batch-sizes", "4,8"], (), id="nqm-1e300"),
]
EXTREME_PARAMS = [pytest.param(*c.values, marks=c.values[1], id=c.id) for c in EXTREME]


@pytest.mark.parametrize("args, marks", EXTREME_PARAMS)
def test_extreme_inputs_end_cleanly(args, marks, sandbox):
    result = CliRunner().invoke(cli, args)
    assert "Traceback" not in result.output and not isinstance(result.exception, ArithmeticError)
    assert result.exit_code in (0, EXIT_INPUT), result.output
    if result.exit_code:
        assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1


def test_nan_loss_is_not_reported_ok(sandbox):
    """A workload whose loss is NaN: say so and exit non-zero, not 'status ok' with null statistics."""
    result = CliRunner().invoke(cli, ["measure", "noise-scale", "--workload", "corpus_wl:nan_loss"])
    assert "Traceback" not in result.output
    assert result.exit_code != 0 and "nan" in result.output.lower(), result.output
