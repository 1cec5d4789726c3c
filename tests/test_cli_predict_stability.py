"""``batchscale predict stability`` via CliRunner: values vs independent formulas, forms, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.optimize import brentq

from batchscale.cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, ["predict", "stability", *args])


def boundary(step: float, lam: np.ndarray, m: int) -> float:
    return step / m * np.sum(lam / (2 - step * lam * (1 + 1 / m))) - 1


def test_gaussian_spectrum_json_against_hand_formulas():
    result = run("--spectrum", "1,0.5,0.25", "--batch-sizes", "1,4", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    lam = np.array([1.0, 0.5, 0.25])
    beta = lam.sum() + 2 * lam[0]  # tr + 2 lambda_1
    for row, m in zip(rows, (1, 4), strict=True):
        assert row["mbb_step"] == pytest.approx(m / (beta + (m - 1) * lam[0]))
        assert row["mbb_critical_batch"] == pytest.approx(beta / lam[0])
        assert row["full_batch_limit"] == pytest.approx(2.0)
        # boundary: (eta/m) sum lambda_i / (2 - eta lambda_i (1 + 1/m)) = 1
        pole = 2 / (1 + 1 / m)
        root = brentq(boundary, 1e-9, pole * (1 - 1e-12), args=(lam, m))
        assert row["max_stable_step"] == pytest.approx(root, rel=1e-7)


def test_sum_form_divides_steps_by_m():
    mean = json.loads(run("--dim", "5", "--batch-sizes", "8", "--format", "json").output)[0]
    total = json.loads(run("--dim", "5", "--batch-sizes", "8", "--form", "sum", "--format", "json").output)[0]
    for key in ("optimal_step", "max_stable_step", "mbb_step", "full_batch_limit"):
        assert total[key] == pytest.approx(mean[key] / 8)
    assert total["optimal_rate"] == mean["optimal_rate"]


def test_dataset_inputs_table_csv_and_plot(tmp_path):
    result = run("--inputs", "dataset", "--dim", "4", "--n-examples", "50", "--batch-sizes", "1..8")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split()[0] == "batch_size"
    csv_out = run("--dim", "3", "--batch-sizes", "2", "--format", "csv").output.splitlines()
    assert csv_out[0].startswith("batch_size,") and len(csv_out) == 2
    png = tmp_path / "p" / "st.png"
    assert run("--dim", "6", "--batch-sizes", "1..64", "--plot", str(png)).exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--spectrum", "1,-2"], id="negative-eigenvalue"),
        pytest.param(["--spectrum", "1,nan"], id="nan-eigenvalue"),
        pytest.param(["--spectrum", "0"], id="zero-eigenvalue"),
        pytest.param(["--spectrum", ","], id="empty-spectrum"),
        pytest.param(["--batch-sizes", "0,2"], id="zero-batch"),
        pytest.param(["--dim", "0"], id="zero-dim"),
        pytest.param(["--inputs", "dataset", "--dim", "40"], id="dataset-too-large"),
    ],
)
def test_bad_input_is_one_line_exit_2(args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Error" in result.output


@pytest.mark.parametrize(
    "spectrum, words",
    [
        ("1e308,1e-308", "ratio beyond float64"),
        ("1e308,1e308", "beyond float64's range"),
        ("1e-310", "normal range"),
    ],
)
def test_extreme_spectra_give_one_error_line(spectrum, words):
    result = run("--spectrum", spectrum, "--batch-sizes", "1,4")
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2 and len(errors) == 1 and words in errors[0], result.output


@pytest.mark.parametrize("scale", [1e300, 1e-300, 3.0])
@pytest.mark.parametrize("inputs", ["gaussian", "dataset"])
def test_a_scaled_spectrum_scales_the_steps(scale, inputs):
    """Every step is 1/lambda times a function of the spectrum's shape: lambda -> s lambda gives steps / s,
    the same rates and critical batches, also for s = 1e300 (where lambda^2 overflows) and 1e-300."""
    base_lam = np.array([1.0, 0.3, 0.05])
    args = ["--batch-sizes", "1,4", "--format", "json", "--inputs", inputs, "--n-examples", "20"]
    base = json.loads(run("--spectrum", ",".join(repr(float(v)) for v in base_lam), *args).stdout)
    scaled = run("--spectrum", ",".join(repr(float(v * scale)) for v in base_lam), *args)
    assert scaled.exit_code == 0, scaled.output
    for b, s in zip(base, json.loads(scaled.stdout), strict=True):
        # the minimiser of a flat minimum is found to about sqrt(machine epsilon) only
        assert s["optimal_step"] * scale == pytest.approx(b["optimal_step"], rel=1e-6)
        for key in ("max_stable_step", "mbb_step", "full_batch_limit"):
            assert s[key] * scale == pytest.approx(b[key], rel=1e-9), key
        for key in ("optimal_rate", "mbb_critical_batch", "ms_critical_batch"):
            assert s[key] == pytest.approx(b[key], rel=1e-9), key
        assert s["lambda_max"] / scale == pytest.approx(b["lambda_max"], rel=1e-12)
