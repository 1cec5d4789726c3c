"""The Python facade (``batchscale.noise_scale``, ``predict_nqm``, ``sweep_steps``, ``verify.run``).

Checked against independent computations (a plain per-example autograd loop for B_simple) and against
the commands themselves (the API's rows rendered as JSON equal ``--format json`` byte for byte), so a
row from a notebook is the row the command prints.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import batchscale
from batchscale.cli.main import cli
from batchscale.errors import InputError
from batchscale.report.tables import render_json

# ---------------------------------------------------------------------------------------------------
# import cost and discoverability


def test_import_loads_no_heavy_library_and_dir_lists_the_facade():
    code = (
        "import sys, json, batchscale, batchscale.api, batchscale.theory\n"
        "print(json.dumps([dir(batchscale), dir(batchscale.theory), dir(batchscale.api),\n"
        "                  [m for m in ('torch', 'sympy', 'numpy') if m in sys.modules]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    top, theory, api, loaded = json.loads(out.stdout)
    assert loaded == []
    facade = {"noise_scale", "predict_nqm", "sweep_steps", "verify", "NoiseScale", "NoiseScaleMonitor"}
    assert facade <= set(top)
    assert {"regimes", "nqm", "moments", "noise_scale", "stability"} <= set(theory)
    assert {"noise_scale", "predict_nqm", "sweep_steps", "with_regimes"} <= set(api)


def test_every_listed_name_resolves_and_unknown_names_fail():
    for name in dir(batchscale):
        assert getattr(batchscale, name) is not None
    for name in dir(batchscale.theory):
        assert getattr(batchscale.theory, name).__name__ == f"batchscale.theory.{name}"
    assert batchscale.verify.run is batchscale.verify.registry.run
    with pytest.raises(AttributeError):
        batchscale.no_such_thing  # noqa: B018
    with pytest.raises(AttributeError):
        batchscale.theory.no_such_module  # noqa: B018


# ---------------------------------------------------------------------------------------------------
# noise_scale


def loop_moments(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(|G|^2, tr Sigma) from one backward pass per example (no torch.func, no hooks)."""
    grads = []
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]).double())
    g = torch.stack(grads)  # (M, P)
    mean = g.mean(0)  # (P,)
    return float(mean.pow(2).sum()), float((g - mean).pow(2).sum(1).mean())


def small_problem(layer_norm: bool):
    torch.manual_seed(0)
    x = torch.randn(48, 5)  # (M, 5)
    y = torch.randint(0, 3, (48,))  # (M,)
    layers = [nn.Linear(5, 7), nn.Tanh()] + ([nn.LayerNorm(7)] if layer_norm else []) + [nn.Linear(7, 3)]
    return nn.Sequential(*layers), x, y


@pytest.mark.parametrize(("layer_norm", "method"), [(False, "fast"), (True, "exact")])
def test_noise_scale_equals_a_per_example_loop(layer_norm, method):
    model, x, y = small_problem(layer_norm)
    g2, tr = loop_moments(model, x, y)
    result = batchscale.noise_scale(model, (x, y), loss=nn.CrossEntropyLoss())  # mean loss made per-example
    assert result.method == method  # auto: fast unless a layer (LayerNorm) has no fast path
    assert result.grad_norm_sq == pytest.approx(g2, rel=1e-5)
    assert result.trace_cov == pytest.approx(tr, rel=1e-5)
    assert result.b_simple == pytest.approx(tr / g2, rel=1e-5)
    assert result.examples == result.population == 48
    (row,) = result.rows()
    assert row["b_simple"] == result.b_simple and row["status"] == result.status
    with pytest.raises(AttributeError):
        result.b_simple = 0.0  # frozen


def test_two_batch_interval_holds_the_exact_value_on_a_workload():
    exact = batchscale.noise_scale(data="digits-mlp", method="fast")
    two = batchscale.noise_scale(data="digits-mlp", method="two-batch", two_batch=(8, 256), draws=50)
    assert exact.population == two.population == 1437 and two.examples == 256
    low, high = two.interval
    assert low < exact.b_simple < high
    assert low < two.b_simple < high


def test_noise_scale_bad_input_is_one_line():
    model, x, y = small_problem(False)
    with pytest.raises(InputError, match="loss is required"):
        batchscale.noise_scale(model, (x, y))
    with pytest.raises(InputError, match="one loss per example"):
        batchscale.noise_scale(model, (x, y), loss=lambda out, target: F.cross_entropy(out, target))
    with pytest.raises(InputError, match="method must be one of"):
        batchscale.noise_scale(model, (x, y), loss=nn.CrossEntropyLoss(), method="bogus")
    with pytest.raises(InputError, match="different numbers of examples"):
        batchscale.noise_scale(model, (x, y[:10]), loss=nn.CrossEntropyLoss())


# ---------------------------------------------------------------------------------------------------
# predict_nqm and sweep_steps: the commands' rows


def cli_json(args: list[str]) -> str:
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_predict_nqm_rows_are_the_commands(optimizer):
    rows = batchscale.predict_nqm([4, 8, 16, 32, 64, 128], dim=100, bins=0, lr_grid=(-3, 0.5, 20),
                                  lr_search="grid", optimizer=optimizer, momentum_grid=(-2, 0, 5))
    args = ["predict", "nqm", "--dim", "100", "--bins", "0", "--lr-grid", "-3:0.5:20", "--lr-search", "grid",
            "--batch-sizes", "4..128", "--optimizer", optimizer]
    args += ["--momentum-grid", "-2:0:5"] if optimizer == "momentum" else []
    assert render_json(rows) + "\n" == cli_json(args)
    assert all(row["regime"] for row in rows) and len(rows) == 6


def test_predict_nqm_bad_input_is_one_line():
    with pytest.raises(InputError, match="not below the initial loss"):
        batchscale.predict_nqm([4, 8], dim=100, bins=0, target=1e6)


SWEEP = {"batch_sizes": (8, 16), "optimizers": ("sgd",), "n_seeds": 1, "n_learning_rates": 2,
         "max_steps": 300, "target": 0.3, "max_extensions": 0, "refine_levels": 0, "eval_subset": None}


def test_sweep_steps_rows_are_the_commands(tmp_path):
    rows = batchscale.sweep_steps("digits-mlp", **SWEEP, executor="inline", store=tmp_path / "api.sqlite")
    out = json.loads(cli_json([
        "sweep", "steps", "--workload", "digits-mlp", "--batch-sizes", "8,16", "--optimizers", "sgd",
        "--n-seeds", "1", "--lrs", "2", "--max-steps", "300", "--target", "0.3", "--max-extensions", "0",
        "--lr-refine", "0", "--eval-subset", "0",
        "--executor", "inline", "--out", str(tmp_path / "cli")]))
    api = json.loads(render_json(rows))
    for row in [*out, *api]:  # where it ran differs; everything else must not
        del row["sweep"]["db"]
    assert api == out
    assert {"regime", "critical_batch_size", "speedup", "max_useful_batch_size"} <= set(rows[0])


def test_sweep_steps_refuses_an_unknown_setting_before_training():
    with pytest.raises(InputError, match="unknown sweep setting.*n_lrs"):
        batchscale.sweep_steps("digits-mlp", n_lrs=3)


# ---------------------------------------------------------------------------------------------------
# scripts: the local pool from a script without a __main__ guard


def run_script(tmp_path, text: str) -> subprocess.CompletedProcess:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(text))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=600)


def test_unguarded_script_runs_the_sweep_in_process_once_and_says_so(tmp_path):
    out = run_script(tmp_path, """
        import batchscale
        print("top level ran")
        rows = batchscale.sweep_steps("digits-mlp", batch_sizes=(8,), optimizers=("sgd",), n_seeds=1,
                                      n_learning_rates=2, max_steps=100, target=0.5, max_extensions=0,
                                      refine_levels=0, eval_subset=None)
        print("rows", len(rows), rows[0]["sweep"]["executor"]["name"])
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["top level ran", "rows 1 inline"]
    assert "no `if __name__ == \"__main__\":` guard" in out.stderr


def test_guarded_script_keeps_the_pool(tmp_path):
    out = run_script(tmp_path, """
        from batchscale.verify.sweeps import choose_executor
        if __name__ == "__main__":
            print(choose_executor("auto"), choose_executor("inline"))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "('local', None) ('inline', None)"


# ---------------------------------------------------------------------------------------------------
# docs/api.md runs as written


DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def doc_session(text: str) -> list[tuple[str, str | None]]:
    """The ``python`` blocks of a page in order, each with the ``text`` block right after it (its printed
    output) or None."""
    blocks = re.findall(r"```(python|text)\n(.*?)```", text, re.S)
    session: list[tuple[str, str | None]] = []
    for kind, body in blocks:
        if kind == "python":
            session.append((body, None))
        elif session and session[-1][1] is None:
            session[-1] = (session[-1][0], body)
    return session


def test_doc_session_parser_pairs_code_with_its_output():
    text = "```python\nprint(1)\n```\n\n```text\n1\n```\n```python\nx = 2\n```\n```text\nfree\n```\n"
    assert doc_session(text) == [("print(1)\n", "1\n"), ("x = 2\n", "free\n")]


def test_docs_api_session_prints_what_the_page_shows():
    session = doc_session(DOC.read_text())
    assert len(session) >= 6 and all(expected is not None for _, expected in session)
    namespace: dict = {}
    for code, expected in session:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(DOC), "exec"), namespace)
        assert out.getvalue() == expected, code
