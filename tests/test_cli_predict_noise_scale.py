"""``batchscale predict noise-scale`` through CliRunner: model tables, curve fits, plots, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from batchscale.cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, ["predict", "noise-scale", *args])


def test_model_from_numbers_json():
    result = run("--b-noise", "64", "--s-min", "1000", "--batch-sizes", "1..4096", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = [r for r in json.loads(result.output) if r["batch_size"] in (1, 64, 4096)]
    # S(B) = 1000 (1 + 64/B), E(B) = 64000 (1 + B/64), eps_opt/eps_max = 1/(1 + 64/B), by hand
    assert [r["steps_model"] for r in rows] == pytest.approx([65000, 2000, 1015.625])
    assert [r["examples_model"] for r in rows] == pytest.approx([65000, 128000, 4160000])
    assert rows[1]["eps_opt_over_max"] == pytest.approx(0.5)
    assert rows[0]["regime"] == "perfect_scaling" and rows[2]["regime"] == "maximal_parallelism"


def test_model_from_s_min_and_e_min_table_and_csv():
    result = run("--s-min", "10", "--e-min", "100", "--batch-sizes", "1..16")
    assert result.exit_code == 0, result.output
    assert "steps_model" in result.output.splitlines()[0]
    csv_out = run("--b-simple", "10", "--batch-sizes", "10", "--format", "csv").output.splitlines()
    header, row = csv_out[0].split(","), csv_out[1].split(",")
    assert float(row[header.index("steps_ratio")]) == pytest.approx(2.0)


def write_curve(path, s_min=500.0, b_crit=50.0, noise=0.03, unreachable=()):
    batch = 2 ** np.arange(0, 13)
    steps = s_min * (1 + b_crit / batch) * np.exp(np.random.default_rng(0).normal(0, noise, batch.size))
    rows = [
        {"batch_size": int(b), "steps": None if b in unreachable else float(s), "optimizer": "sgd"}
        for b, s in zip(batch, steps, strict=True)
    ]
    rows.append({"batch_size": 8, "steps": 1.0, "optimizer": "adam"})  # filtered out by --where
    path.write_text(json.dumps(rows))
    return path


def test_fit_curve_json_recovers_parameters(tmp_path):
    curve = write_curve(tmp_path / "c.json", unreachable=(4096,))
    result = run("--curve", str(curve), "--where", "optimizer=sgd", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 13 and rows[-1]["steps"] is None and rows[-1]["regime"] == "unreachable"
    fit = rows[0]
    assert abs(fit["b_crit"] - 50) < 3 * fit["b_crit_err"]
    assert abs(fit["s_min"] - 500) < 3 * fit["s_min_err"]
    assert fit["n_points"] == 12


def test_fit_curve_csv_table_bootstrap_and_plot(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("batch_size,steps\n1,1000\n2,520\n4,280\n8,160\n16,110\n32,90\n")
    png = tmp_path / "img" / "fit.png"
    result = run("--curve", str(path), "--bootstrap", "20", "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert "B_crit =" in result.output and "bootstrap" in result.output
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, content",
    [
        pytest.param(["--b-noise", "-1"], None, id="negative-b-noise"),
        pytest.param(["--b-noise", "nan"], None, id="nan-b-noise"),
        pytest.param(["--s-min", "10"], None, id="no-noise-scale"),
        pytest.param(["--b-noise", "5", "--batch-sizes", "0,4"], None, id="zero-batch"),
        pytest.param(["--curve", "{path}"], '[{"batch_size": 1, "steps": 3}]', id="too-few-points"),
        pytest.param(["--curve", "{path}"], '[{"batch": 1, "steps": 3}]', id="missing-column"),
        pytest.param(["--curve", "{path}"], "not json", id="bad-json"),
        pytest.param(["--curve", "{path}"], '[{"batch_size": 1, "steps": -3}]', id="negative-steps"),
        pytest.param(["--curve", "/no/such/file.json"], None, id="missing-file"),
        pytest.param(["--curve", "{path}"], '[{"batch_size": 1, "steps": "nan"}]', id="nan-steps"),
        pytest.param(["--curve", "{path}"], '[{"batch_size": 0, "steps": 3}]', id="zero-batch-in-file"),
        pytest.param(
            ["--curve", "{path}", "--where", "optimizer=adam"],
            '[{"batch_size": 1, "steps": 3}]',
            id="no-matching-rows",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, content):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    result = run(*[a.format(path=path) for a in args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bootstrap_above_the_limit_is_refused_before_running(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("batch_size,steps\n1,1000\n2,520\n4,280\n8,160\n")
    result = run("--curve", str(path), "--bootstrap", "100000000")
    assert result.exit_code == 2 and result.output.startswith("Error: ")
    assert "--bootstrap-limit" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_long_bootstrap_reports_progress_and_percentiles(tmp_path, monkeypatch):
    import batchscale.cli.predict_noise_scale as cli_ns

    monkeypatch.setattr(cli_ns, "PROGRESS_FROM", 100)
    path = tmp_path / "c.csv"
    path.write_text("batch_size,steps\n1,1000\n2,520\n4,280\n8,160\n16,110\n32,90\n")
    result = run("--curve", str(path), "--bootstrap", "3000", "--format", "json")
    assert result.exit_code == 0, result.output
    last = result.stderr.strip().splitlines()[-1]  # a plain line (stderr is not a terminal here)
    assert last.startswith("bootstrap: 100%") and "3000/3000" in last and "\r" not in result.stderr
    row = json.loads(result.stdout)[0]
    assert row["b_crit_boot_low"] < row["b_crit"] < row["b_crit_boot_high"]
    assert row["b_crit_low"] < row["b_crit"] < row["b_crit_high"]
    for name in ("mccandlish", "examples_overhead", "zhang2024"):
        assert f"critical_batch_{name}" in row and f"critical_batch_{name}_low" in row


def test_fit_table_names_every_critical_batch_definition(tmp_path):
    curve = write_curve(tmp_path / "c.json")
    result = run("--curve", str(curve), "--where", "optimizer=sgd")
    assert result.exit_code == 0, result.output
    for text in ("mccandlish", "examples_overhead", "zhang2024", "max useful", "E_min/S_min"):
        assert text in result.output


def test_seed_steps_in_the_curve_file_drive_a_seed_bootstrap(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for b in 2 ** np.arange(0, 9):
        seeds = (300 * (1 + 20 / b) * np.exp(rng.normal(0, 0.05, 3))).tolist()
        rows.append({"batch_size": int(b), "steps": float(np.median(seeds)), "seed_steps": seeds})
    path = tmp_path / "s.json"
    path.write_text(json.dumps(rows))
    result = run("--curve", str(path), "--format", "json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["bootstrap"] == "seeds" and row["critical_batch_mccandlish_identifiable"]
