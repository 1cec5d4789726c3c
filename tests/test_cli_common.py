import math

import click
import pytest
from click.testing import CliRunner

from batchscale.cli.common import (
    FilePath,
    FiniteFloat,
    FloatList,
    IntList,
    KeyValue,
    LogGrid,
    Range,
    key_value_option,
    powers_of_two,
    quick_option,
)
from batchscale.cli.main import cli


def test_power_of_two_ranges():
    ints = IntList()
    assert ints.convert("4..64", None, None) == [4, 8, 16, 32, 64]
    assert ints.convert("3..20", None, None) == [4, 8, 16]
    assert ints.convert("1,2,16..32", None, None) == [1, 2, 16, 32]
    assert ints.convert("8,2,8", None, None) == [2, 8]
    assert len(ints.convert("4..2097152", None, None)) == 20
    assert powers_of_two(1, 100) == [1, 2, 4, 8, 16, 32, 64]


@pytest.mark.parametrize(
    "text", ["", " ", "a", "8..4", "0..4", "1,,2", "1,2,", ",1", "4..", "..8", "5..7", "0", "-1", "1..x"]
)
def test_bad_int_lists(text):
    with pytest.raises(click.BadParameter):
        IntList().convert(text, None, None)


def test_float_lists():
    assert FloatList().convert("0.1, 0.3,1", None, None) == [0.1, 0.3, 1.0]
    for bad in ["", "1,,2", "x", "1,inf", "nan"]:
        with pytest.raises(click.BadParameter):
            FloatList().convert(bad, None, None)


def test_ranges_and_log_grids():
    assert Range().convert("0.01:0.5", None, None) == (0.01, 0.5)
    for bad in ["0.5", "1:2:3", "a:1", "1:", "0.5:0.1", "0:inf", ""]:
        with pytest.raises(click.BadParameter):
            Range().convert(bad, None, None)
    assert LogGrid().convert("-5:0.5:100", None, None) == (-5.0, 0.5, 100)
    for bad in ["-5:0.5", "1:0:3", "a:b:c", "0:1:0", "0:1:2.5", "0:nan:3", "::"]:
        with pytest.raises(click.BadParameter):
            LogGrid().convert(bad, None, None)


def test_finite_float_bounds():
    above_one = FiniteFloat(min=1, min_open=True)
    assert above_one.convert("1.5", None, None) == 1.5
    for bad in ["1", "0.5", "inf", "nan", "-inf", "x"]:
        with pytest.raises(click.BadParameter):
            above_one.convert(bad, None, None)
    assert math.isfinite(FiniteFloat().convert("1e300", None, None))
    no_limit = FiniteFloat(min=0, min_open=True, allow_inf=True)
    assert no_limit.convert("inf", None, None) == math.inf
    with pytest.raises(click.BadParameter):
        no_limit.convert("nan", None, None)


def test_file_paths(tmp_path):
    plot = FilePath(output=True, suffixes=(".png",))
    target = tmp_path / "new" / "deeper" / "x.png"
    assert plot.convert(str(target), None, None) == str(target)
    assert target.parent.is_dir()  # the parent folder is created while parsing
    for bad in ["", str(tmp_path / "x.bmp"), str(tmp_path)]:
        with pytest.raises(click.BadParameter):
            plot.convert(bad, None, None)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(click.BadParameter, match="cannot create"):
        FilePath(output=True).convert(str(blocker / "x.sqlite"), None, None)


def test_plot_suffixes_match_the_plotting_module():
    from batchscale.cli.common import PLOT_SUFFIXES
    from batchscale.report.plots import PLOT_SUFFIXES as DRAWN

    assert PLOT_SUFFIXES == DRAWN


def test_root_help_and_unknown_command():
    runner = CliRunner()
    assert runner.invoke(cli, ["--help"]).exit_code == 0
    result = runner.invoke(cli, ["no-such-command"])
    assert result.exit_code == 2


def test_key_values():
    @click.command()
    @key_value_option("-W", "options", help="x")
    def show(options):
        click.echo(repr(options))

    runner = CliRunner()
    result = runner.invoke(show, ["-W", "n=3", "-W", "lr=0.5", "-W", "hidden=256,256", "-W", "flag=true",
                                  "-W", "name=x"])
    assert result.output.strip() == repr({"n": 3, "lr": 0.5, "hidden": (256, 256), "flag": True, "name": "x"})
    for bad in (["-W", "novalue"], ["-W", "=3"], ["-W", "a="], ["-W", "h=1,,2"], ["-W", "a=1", "-W", "a=2"]):
        result = runner.invoke(show, bad)
        assert result.exit_code == 2, bad
        assert "Traceback" not in result.output
    assert KeyValue().convert("a = 1", None, None) == ("a", 1)


def test_quick_applies_only_to_defaults():
    @click.command()
    @click.option("--a", type=int, default=1)
    @click.option("--b", type=int, default=2)
    @quick_option({"a": 10, "b": 20}, "demo")
    def show(a, b):
        click.echo(f"{a} {b}")

    runner = CliRunner()
    assert runner.invoke(show, []).output.strip() == "1 2"
    assert runner.invoke(show, ["--quick"]).output.strip() == "10 20"
    assert runner.invoke(show, ["--quick", "--b", "2"]).output.strip() == "10 2"
    assert runner.invoke(show, ["--b", "3", "--quick"]).output.strip() == "10 3"


def test_data_dir_reaches_file_workloads(tmp_path, monkeypatch):
    """--data-dir on a measuring command is where a file-based workload looks (and says so)."""
    monkeypatch.delenv("BATCHSCALE_DATA_DIR", raising=False)
    where = tmp_path / "datasets"
    result = CliRunner().invoke(
        cli, ["measure", "sharpness", "--workload", "mnist-cnn", "--data-dir", str(where)]
    )
    assert result.exit_code == 2
    assert str(where) in result.output
    assert "Traceback" not in result.output


def test_counted_nouns():
    from batchscale.cli.common import counted

    words = [counted(1, "case"), counted(18, "case"), counted(0.5, "epoch")]
    assert words == ["1 case", "18 cases", "0.5 epochs"]


@pytest.mark.parametrize(
    "args", [["predict", "stability", "--dim", "4"], ["predict", "noise-scale", "--b-simple", "100"]]
)
def test_plot_creates_its_folder_and_says_so(tmp_path, args):
    target = tmp_path / "new" / "figure.png"
    result = CliRunner().invoke(cli, [*args, "--batch-sizes", "1,8", "--plot", str(target)])
    assert result.exit_code == 0, result.output
    assert target.stat().st_size > 0 and f"wrote {target}" in result.stderr


def test_ctrl_c_is_one_line_with_exit_130():
    from batchscale.cli.common import on_interrupt

    @click.command()
    def slow():
        with on_interrupt("the work so far is kept in X; run again to resume"):
            raise KeyboardInterrupt

    result = CliRunner().invoke(slow, [])
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert result.stderr.strip() == "Interrupted: the work so far is kept in X; run again to resume"
