"""Saved claim rows (batchscale.verify.reuse): a re-run with the same key returns them without measuring,
anything in the key measures again, and a damaged or foreign file is never trusted."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli
from batchscale.verify import reuse
from batchscale.verify.registry import CLAIMS, resolve
from batchscale.verify.rows import make_row


@pytest.fixture(autouse=True)
def _reuse_on(monkeypatch):
    monkeypatch.setenv(reuse.ENVIRONMENT, "1")


def fake_rows(value: float) -> list:
    return [make_row("staleness", "gap_slope", "w", 2.0, value, n_seeds=3, config={"t": (1, 2)}, stderr=0.01),
            make_row("staleness", "gap_over_leading", "w", 1.0, float("nan"), n_seeds=3,
                     config={"n": float("inf")})]


def counting(monkeypatch, value: float = 2.0) -> list[int]:
    """Replace the staleness claim's measurement by a counter returning fixed rows."""
    calls = []

    def measure(opts):
        calls.append(1)
        return fake_rows(value)

    monkeypatch.setattr(type(CLAIMS["staleness"]), "function", lambda self: measure)
    return calls


def test_second_run_reuses_rows_without_measuring(tmp_path, monkeypatch):
    calls = counting(monkeypatch)
    opts = resolve(db=str(tmp_path / "runs.sqlite"), quick=True)
    first = reuse.claim_rows("staleness", opts)
    second = reuse.claim_rows("staleness", opts)
    assert len(calls) == 1
    assert [r.as_dict()["measured"] for r in second][0] == first[0].measured
    assert [r.verdict for r in second] == [r.verdict for r in first]
    assert reuse.path_of("staleness", opts).parent == tmp_path / reuse.FOLDER


@pytest.mark.parametrize("change", [{"seed": 1}, {"seeds": 5}, {"quick": False},
                                    {"workload_options": {"hidden": 8}}, {"workload": "digits-cnn"}])
def test_any_option_in_the_key_measures_again(tmp_path, monkeypatch, change):
    calls = counting(monkeypatch)
    base = {"db": str(tmp_path / "runs.sqlite"), "quick": True}
    reuse.claim_rows("staleness", resolve(**base))
    reuse.claim_rows("staleness", resolve(**{**base, **change}))
    assert len(calls) == 2


def test_source_change_rerun_flag_and_environment_measure_again(tmp_path, monkeypatch):
    calls = counting(monkeypatch)
    opts = resolve(db=str(tmp_path / "runs.sqlite"))
    reuse.claim_rows("staleness", opts)
    reuse.claim_rows("staleness", opts, rerun=True)
    assert len(calls) == 2
    monkeypatch.setattr(reuse, "source_digest", lambda: "edited")
    reuse.claim_rows("staleness", opts)
    assert len(calls) == 3
    monkeypatch.setenv(reuse.ENVIRONMENT, "0")
    reuse.claim_rows("staleness", opts)
    assert len(calls) == 4


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": "other", "version": 1, "rows": []}),
                                     json.dumps({"format": reuse.FORMAT, "version": 1,
                                                 "rows": [{"claim": "x"}]})])
def test_damaged_or_foreign_file_is_measured_again_and_replaced(tmp_path, monkeypatch, content):
    calls = counting(monkeypatch, value=2.5)
    opts = resolve(db=str(tmp_path / "runs.sqlite"))
    path = reuse.path_of("staleness", opts)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    rows = reuse.claim_rows("staleness", opts)
    assert len(calls) == 1 and rows[0].measured == 2.5
    assert reuse.load(path)[0].measured == 2.5


def test_source_digest_sees_every_module():
    # The digest covers the package's files: a planted one-byte edit of any module changes it.
    assert len(reuse.source_digest()) == 64
    root = reuse.Path(reuse.__file__).resolve().parent.parent
    assert (root / "verify" / "reuse.py") in set(root.rglob("*.py"))


def test_cli_rerun_prints_the_same_json_from_saved_rows(tmp_path, monkeypatch):
    calls = counting(monkeypatch)
    args = ["verify", "staleness", "--quick", "--db", str(tmp_path / "runs.sqlite"), "--format", "json"]
    first = CliRunner().invoke(cli, args)
    second = CliRunner().invoke(cli, args)
    assert len(calls) == 1
    assert first.exit_code == second.exit_code == 1  # the nan row is inconclusive
    assert json.loads(first.stdout) == json.loads(second.stdout)
    assert "rows reused from" in second.stderr
    third = CliRunner().invoke(cli, [*args, "--rerun"])
    assert len(calls) == 2 and json.loads(third.stdout) == json.loads(first.stdout)
