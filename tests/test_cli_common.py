import click
import pytest
from click.testing import CliRunner

from batchscale.cli.common import parse_int_list, parse_log_grid
from batchscale.cli.main import cli


def test_power_of_two_ranges():
    assert parse_int_list("4..64") == [4, 8, 16, 32, 64]
    assert parse_int_list("3..20") == [4, 8, 16]
    assert parse_int_list("1,2,16..32") == [1, 2, 16, 32]
    assert len(parse_int_list("4..2097152")) == 20


@pytest.mark.parametrize("text", ["", "a", "8..4", "0..4", "1,,x"])
def test_bad_int_lists(text):
    with pytest.raises(click.BadParameter):
        parse_int_list(text)


def test_log_grid():
    assert parse_log_grid("-5:0.5:100") == (-5.0, 0.5, 100)
    for bad in ["-5:0.5", "1:0:3", "a:b:c", "0:1:0"]:
        with pytest.raises(click.BadParameter):
            parse_log_grid(bad)


def test_root_help_and_unknown_command():
    runner = CliRunner()
    assert runner.invoke(cli, ["--help"]).exit_code == 0
    result = runner.invoke(cli, ["no-such-command"])
    assert result.exit_code == 2


def test_key_values():
    from batchscale.cli.common import parse_key_values

    assert parse_key_values(["n=3", "lr=0.5", "hidden=256,256", "flag=true", "name=x"]) == {
        "n": 3,
        "lr": 0.5,
        "hidden": (256, 256),
        "flag": True,
        "name": "x",
    }
    with pytest.raises(click.BadParameter):
        parse_key_values(["novalue"])


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
