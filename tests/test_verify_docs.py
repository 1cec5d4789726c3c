"""docs/claims.md mirrors the code: the tolerance table, one section per claim, the papers cited."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchscale.verify import CLAIMS
from batchscale.verify.markdown import blocks, parse_table, render_report, tolerance_table
from batchscale.verify.tolerances import table_rows

DOC = Path(__file__).resolve().parents[1] / "docs" / "claims.md"
PAPERS = (
    "1804.07612",
    "1811.03600",
    "1812.06162",
    "1907.04164",
    "1712.06559",
    "1503.02101",
    "1609.04836",
    "2410.21676",
)


@pytest.fixture(scope="module")
def text() -> str:
    return DOC.read_text()


def test_the_tolerance_table_in_the_doc_equals_the_code(text):
    assert parse_table(blocks(text)["tolerances"]) == table_rows()


def test_the_comparison_can_fail(text):
    doc = parse_table(blocks(text)["tolerances"])
    doc[0] = {**doc[0], "tolerance": "0.5"}
    assert doc != table_rows()


def test_every_claim_has_its_own_words_and_sources(text):
    found = blocks(text)
    for name in CLAIMS:
        body = found.get(f"claim:{name}", "")
        assert "**Claim.**" in body and "**Sources.**" in body, name
        assert f"results:{name}" in found, name
    for paper in PAPERS:
        assert paper in text, paper


def test_the_repository_cites_nothing_outside_itself(text):
    sources = [text] + [
        p.read_text() for p in (DOC.parents[1] / "src" / "batchscale" / "verify").glob("*.py")
    ]
    for source in sources:
        assert "MISSION" not in source and "../shared" not in source


def test_regenerating_keeps_the_hand_written_blocks(text):
    again = render_report([], text, command="batchscale verify all", wall=1.0)
    old, new = blocks(text), blocks(again)
    for name, body in old.items():
        if name.startswith(("claim:", "intro", "results:")):
            assert new[name] == body, name
    assert parse_table(new["tolerances"]) == parse_table(tolerance_table())
