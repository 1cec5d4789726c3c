"""``batchscale verify``: list, exit codes, formats, bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli
from batchscale.verify import CLAIMS


def invoke(*args: str):
    return CliRunner().invoke(cli, ["verify", *args])


def test_list_names_every_claim_once():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines()]
    assert names == list(CLAIMS)
    assert set(names) >= {
        "accounting",
        "moments",
        "accumulation",
        "staleness",
        "stability",
        "regimes",
        "noise-scale",
        "nqm-transfer",
        "cosine",
        "saddle",
        "sharpness",
    }


def test_unknown_claim_and_bad_options_exit_2():
    for args in (
        ["nope"],
        ["accounting", "--seeds", "0"],
        ["accounting", "-W", "novalue"],
        ["accounting", "--format", "xml"],
        ["accounting", "--workload", "no-such-workload"],
    ):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output


@pytest.fixture
def not_built(monkeypatch) -> str:
    """A registered claim that is not built yet: the first still unbuilt one, else `sharpness` registered
    again with a ``needs`` (every claim is built now; the not-built path must keep working)."""
    names = [n for n, c in CLAIMS.items() if not c.real]
    if names:
        return names[0]
    monkeypatch.setitem(CLAIMS, "sharpness", replace(CLAIMS["sharpness"], needs="a planted missing part"))
    return "sharpness"


def test_a_claim_not_built_exits_1_with_json_rows(not_built):
    result = invoke(not_built, "--format", "json")
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [r["verdict"] for r in rows] == ["inconclusive"]
    assert "not built yet" in rows[0]["reason"]
    assert "inconclusive" in result.stderr


def test_passing_claim_exits_0_and_writes_csv():
    result = invoke("accounting", "--quick", "-W", "hidden=8", "--format", "csv")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split(",")
    for column in (
        "claim",
        "quantity",
        "workload",
        "predicted",
        "measured",
        "ci_low",
        "ci_high",
        "stderr",
        "tolerance",
        "tolerance_kind",
        "verdict",
        "reason",
        "n_seeds",
        "config",
    ):
        assert column in header


def test_report_keeps_hand_written_blocks(tmp_path, not_built):
    report = tmp_path / "claims.md"
    report.write_text(
        "<!-- claim:accounting -->\nOur own words.\n<!-- /claim:accounting -->\n"
        "<!-- results:saddle -->\nold saddle rows\n<!-- /results:saddle -->\n"
    )
    name = not_built
    result = invoke(name, "--report", str(report))
    assert result.exit_code == 1
    text = report.read_text()
    assert "Our own words." in text and "old saddle rows" in text
    assert "not built yet" in text.split(f"<!-- results:{name} -->")[1]
