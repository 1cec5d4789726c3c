"""``batchscale measure``: every subcommand on a tiny least-squares workload, plots, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from batchscale.cli.main import cli

TINY = ["--workload", "linreg", "-W", "n_train=128", "-W", "n_test=8", "-W", "dim=4"]


def run(*args: str):
    return CliRunner().invoke(cli, ["measure", *args])


def run_json(*args: str) -> list[dict]:
    result = run(*args, *TINY, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_noise_scale_methods_agree():
    rows = run_json(
        "noise-scale", "--method", "exact,fast,two-batch", "--two-batch-sizes", "4,64", "--draws", "40"
    )
    by_method = {r["method"]: r for r in rows}
    assert by_method["fast"]["b_simple"] == pytest.approx(by_method["exact"]["b_simple"], rel=1e-5)
    two = by_method["two-batch"]
    assert two["ci_low"] <= by_method["exact"]["b_simple"] <= two["ci_high"]
    assert all(r["config"]["workload"] == "linreg" for r in rows)
    csv = run("noise-scale", "--method", "fast", *TINY, "--format", "csv")
    assert csv.exit_code == 0 and csv.stdout.splitlines()[0].endswith(",config")  # resolved config in csv too


def test_noise_scale_with_b_noise_and_during_training(tmp_path):
    png = tmp_path / "b.png"
    args = [
        "noise-scale",
        "--b-noise",
        "--probes",
        "8",
        "--during-training",
        "--train-steps",
        "6",
        "--every",
        "3",
    ]
    result = run(*args, "--train-lr", "0.05", *TINY, "--format", "json", "--plot", str(png))
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["step"], r["method"]) for r in rows] == [
        (step, method) for step in (0, 3, 6) for method in ("fast", "b-noise (HVP)")
    ]
    assert all(r["b_noise"] > 0 for r in rows if r["method"] == "b-noise (HVP)")
    assert all("b_noise" not in r for r in rows if r["method"] == "fast")  # B_noise on its own row only
    assert png.stat().st_size > 0


def test_moments_all_checks_pass():
    rows = run_json("moments", "--sample", "64", "--batch-sizes", "1,8,64", "--draws", "60")
    assert len(rows) == 2 * 2 * 3 * 3 - 2 * 1  # forms x samplings x m x quantities; m = M without: 2
    assert {r["pass"] for r in rows} == {"yes"}
    assert {r["verdict"] for r in rows if r["form"] == "sum"} == {"holds_by_construction"}
    assert {"predicted", "measured", "stderr", "tolerance", "pass"} <= set(rows[0])


def test_cosine_table_and_plot(tmp_path):
    png = tmp_path / "cos.png"
    result = run("cosine", "--sample", "64", "--draws", "20", *TINY, "--plot", str(png))
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header[:9] == [
        "quantity",
        "sampling",
        "m",
        "predicted",
        "measured",
        "stderr",
        "tolerance",
        "pass",
        "draws",
    ]
    assert len(result.stdout.splitlines()) == 2 + 7  # m = 1..64
    assert png.stat().st_size > 0


def test_accumulation_csv():
    result = run("accumulation", "--batch-size", "32", "--micro-batches", "1,4,32", *TINY, "--format", "csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = "form,m,micro_batch,k,predicted,measured,stderr,tolerance,tolerance_kind,pass,verdict,peak_MiB"
    assert lines[0].startswith(header + ",saved_MiB")
    assert len(lines) == 1 + 2 * 3 and all(",yes," in line for line in lines[1:])


def test_accumulation_default_micro_batches_divide_any_batch_size():
    rows = run_json("accumulation", "--batch-size", "12", "--form", "sum")
    assert [r["micro_batch"] for r in rows] == [1, 2, 4, 12]
    assert {r["pass"] for r in rows} == {"yes"}


def test_sharpness_lanczos_and_power_agree():
    lanczos = run_json("sharpness", "--k", "2")
    power = run_json("sharpness", "--method", "power", "--iters", "500", "--tol", "1e-7")
    assert [r["rank"] for r in lanczos] == [1, 2]
    assert power[0]["eigenvalue"] == pytest.approx(lanczos[0]["eigenvalue"], rel=1e-3)


BAD_INPUT = [
    ("unknown-workload", ["noise-scale", "--workload", "no-such-workload"], "unknown workload"),
    ("batch-larger-than-data", ["moments", *TINY, "--sample", "16", "--batch-sizes", "32"], "exceeds"),
    ("non-positive-lr", ["moments", *TINY, "--lr", "0"], "--lr must be positive"),
    ("negative-train-lr", ["sharpness", *TINY, "--train-lr", "-1"], "--train-lr must be positive"),
    (
        "micro-batch-not-dividing",
        ["accumulation", *TINY, "--batch-size", "30", "--micro-batches", "4"],
        "divide",
    ),
    ("non-positive-z", ["cosine", *TINY, "--z", "-1"], "--z must be positive"),
    ("accumulation-batch-too-big", ["accumulation", *TINY, "--batch-size", "4096"], "exceeds"),
    ("bad-method", ["noise-scale", *TINY, "--method", "magic"], "magic"),
    ("plot-needs-training", ["noise-scale", *TINY, "--plot", "x.png"], "--during-training"),
    ("bad-workload-option", ["cosine", *TINY, "-W", "nonsense"], "KEY=VALUE"),
    ("every-zero", ["cosine", *TINY, "--during-training", "--train-steps", "2", "--every", "0"], "--every"),
    (
        "ema-small-not-a-slice",
        ["noise-scale", *TINY, "--method", "two-batch", "--during-training", "--ema-small", "32"],
        "--ema-small must be in 1..31",
    ),
    ("ema-small-without-two-batch", ["noise-scale", *TINY, "--ema-small", "4"], "--ema-small needs"),
]


@pytest.mark.parametrize(("args", "message"), [b[1:] for b in BAD_INPUT], ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_one_line_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.stdout.strip() == "" or "Usage" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_exit_2():
    result = run("noise-scale", *TINY, "--device", "cuda")
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [
        "Error: --device cuda was requested but CUDA is not available on this machine"
    ]


def test_measure_help_imports_no_torch():
    code = (
        "import sys; from click.testing import CliRunner; from batchscale.cli.main import cli; "
        "r = CliRunner().invoke(cli, ['measure', 'moments', '--help']); assert r.exit_code == 0, r.output; "
        "print('torch' in sys.modules, 'sympy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_measuring_never_imports_theory():
    """Imports inside functions count too: run every command, then look at sys.modules. (sympy itself
    cannot be checked this way: torch.func's vmap imports it at its first call; tests/test_layout.py
    checks that no empirical module imports it.)"""
    commands = [
        ["noise-scale", "--method", "exact,two-batch", "--two-batch-sizes", "4,64", "--draws", "3"]
        + ["--b-noise"],
        ["moments", "--sample", "16", "--batch-sizes", "4", "--draws", "3"],
        ["cosine", "--sample", "16", "--batch-sizes", "4", "--draws", "3"],
        ["accumulation", "--batch-size", "8"],
        ["sharpness", "--method", "power", "--iters", "3"],
    ]
    code = (
        "import sys; from click.testing import CliRunner; from batchscale.cli.main import cli\n"
        f"for args in {commands!r}:\n"
        f"    r = CliRunner().invoke(cli, ['measure', *args, *{TINY!r}]); assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in sys.modules if m.startswith('batchscale.theory')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]"]


@pytest.mark.parametrize(
    "args",
    [
        ["noise-scale", "--method", "fast,two-batch", "--two-batch-sizes", "4,64", "--draws", "10"],
        ["cosine", "--sample", "32", "--draws", "5"],
    ],
    ids=["noise-scale", "cosine"],
)
def test_same_seed_same_numbers(args):
    first, second = run_json(*args, "--seed", "3"), run_json(*args, "--seed", "3")
    assert first == second
    assert run_json(*args, "--seed", "4") != first


def test_two_batch_ema_is_updated_every_training_step():
    args = ["noise-scale", "--method", "two-batch", "--two-batch-sizes", "4,64", "--draws", "10"]
    train = ["--during-training", "--train-steps", "6", "--every", "3", "--train-lr", "0.05"]
    rows = run_json(*args, *train, "--train-batch-size", "16", "--ema-decay", "0.5")
    assert [r["step"] for r in rows] == [0, 3, 6]
    assert rows[0]["b_simple_ema"] is None  # no training step observed yet
    for row in rows[1:]:  # bias-corrected EMAs of tr(Sigma) and |G|^2 kept apart; the ratio is theirs
        assert row["b_simple_ema"] == pytest.approx(row["ema_trace_cov"] / row["ema_grad_norm_sq"], rel=1e-9)
        assert row["config"]["ema_small"] == 4 and row["config"]["ema_decay"] == 0.5  # 16 // 4
    fewer = run_json(*args, *train, "--train-batch-size", "16", "--ema-decay", "0.5", "--every", "6")
    assert fewer[-1]["b_simple_ema"] == rows[-1]["b_simple_ema"]  # every step counts, not checkpoints


def test_cosine_and_moments_along_training(tmp_path):
    png = tmp_path / "cos.png"
    train = ["--during-training", "--train-steps", "4", "--every", "2", "--train-lr", "0.05"]
    cos = run_json(
        "cosine", "--sample", "32", "--batch-sizes", "1,32", "--draws", "5", *train, "--plot", str(png)
    )
    assert [(r["step"], r["m"]) for r in cos] == [(s, m) for s in (0, 2, 4) for m in (1, 32)]
    assert len({r["b_simple"] for r in cos}) == 3  # the parameters moved between checkpoints
    assert png.stat().st_size > 0
    one_m = ["moments", "--sample", "32", "--batch-sizes", "8", "--draws", "5", "--form", "mean"]
    mom = run_json(*one_m, "--sampling", "with", *train)
    assert [(r["step"], r["quantity"]) for r in mom] == [
        (s, q) for s in (0, 2, 4) for q in ("mean_along_-G", "trace_cov", "mean_all_directions")
    ]
    assert "step" not in run_json(*one_m)[0]  # a single measurement keeps the plain table


USER_WORKLOADS = '''
from functools import partial

import torch
from torch import nn

from batchscale.empirical.workloads import Workload


class Dropped(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


class Nan(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(5, 3)

    def forward(self, x):
        return self.lin(x) * float("nan")


def data(n):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)
    return x, y, x[:4], y[:4]


def dropout(n=64, seed=0):
    return Workload("dropout", Dropped, *data(n))


def nan(n=64, seed=0):
    return Workload("nan", Nan, *data(n))
'''


@pytest.fixture
def user_workloads(tmp_path, monkeypatch):
    (tmp_path / "measure_user_wl.py").write_text(USER_WORKLOADS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "measure_user_wl"


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_dropout_model_is_measured_in_eval_mode_reproducibly(user_workloads, method):
    """Dropout used to crash exact (vmap randomness) and make fast seed-dependent under a zero-width
    interval; both are now measured in eval mode, say so, and agree with each other."""
    args = ["noise-scale", "--workload", f"{user_workloads}:dropout", "--method", method, "--format", "json"]
    first, second = CliRunner().invoke(cli, ["measure", *args]), CliRunner().invoke(cli, ["measure", *args])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == json.loads(second.stdout)
    (row,) = json.loads(first.stdout)
    assert row["config"]["measured_in"].startswith("eval mode")
    exact = CliRunner().invoke(cli, ["measure", *args[:-4], "--method", "exact", "--format", "json"])
    assert json.loads(exact.stdout)[0]["b_simple"] == pytest.approx(row["b_simple"], rel=1e-5)


def test_nan_loss_says_so_and_exits_non_zero(user_workloads):
    result = run("noise-scale", "--workload", f"{user_workloads}:nan", "--format", "json")
    assert result.exit_code != 0
    assert "nan loss" in result.output
    assert json.loads(result.stdout)[0]["status"] == "nan loss"


def test_b_simple_above_the_data_says_exceeds_dataset():
    """Least squares on 16 examples after 200 SGD steps, near the minimum: |G| is small, B_simple ~1e5."""
    tiny = ["--workload", "linreg", "-W", "n_train=16", "-W", "n_test=4", "-W", "dim=2", "--format", "json"]
    result = run("noise-scale", "--method", "exact", *tiny, "--train-batch-size", "8", "--train-steps", "200")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["b_simple"] > 16 and row["status"] == "exceeds dataset"


def test_noise_scale_status_rules():
    from batchscale.empirical.measure import noise_scale_status

    assert noise_scale_status({"grad_norm_sq": -0.1, "trace_cov": 2.0, "b_simple": -20.0}, 100) == "undefined"
    assert noise_scale_status({"grad_norm_sq": 0.1, "trace_cov": -2.0, "b_simple": -20.0}, 100) == "undefined"
    assert noise_scale_status({"grad_norm_sq": 0.1, "trace_cov": 20.0, "b_simple": 200.0}, 100) == (
        "exceeds dataset"
    )
    assert noise_scale_status({"grad_norm_sq": 0.1, "trace_cov": 2.0, "b_simple": 20.0}, 100) == "ok"


@pytest.mark.parametrize("spelling", ["--two-batch-sizes", "--batch-sizes"])
def test_two_batch_sizes_new_name_and_hidden_old_alias(spelling):
    rows = run_json("noise-scale", "--method", "two-batch", spelling, "4,64", "--draws", "4")
    assert (rows[0]["small"], rows[0]["big"]) == (4, 64)
    help_text = run("noise-scale", "--help").output
    assert "--two-batch-sizes" in help_text and "--batch-sizes" not in help_text


@pytest.mark.parametrize("pair", ["64,4", "8,8", "8", "4,8,16"])
def test_inverted_or_malformed_two_batch_sizes_are_errors(pair):
    result = run("noise-scale", *TINY, "--method", "two-batch", "--two-batch-sizes", pair)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "SMALL" in result.output


def test_accumulation_rows_say_they_hold_by_construction_and_show_the_memory_peak():
    rows = run_json("accumulation", "--batch-size", "64", "--micro-batches", "4,16,64", "--form", "mean")
    assert {r["verdict"] for r in rows} == {"holds_by_construction"}
    peak = {r["micro_batch"]: r["peak_MiB"] for r in rows}
    assert 0 < peak[4] < peak[16] < peak[64]  # activations grow with the micro-batch
