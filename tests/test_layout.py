"""The architecture's import rules, checked in fresh interpreters.

theory never imports torch; empirical never imports sympy; the CLI's start-up imports neither.
One interpreter per package imports its modules one at a time and names the first that breaks the
rule (an interpreter per module would pay torch's ~2 s import for every empirical module).
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import batchscale.empirical
import batchscale.report
import batchscale.theory


def modules_of(package) -> list[str]:
    return [
        f"{package.__name__}.{m.name}"
        for m in pkgutil.walk_packages(package.__path__, onerror=lambda name: None)
        if not m.name.split(".")[-1].startswith("_")
    ]


def first_offender(modules: list[str], forbidden: str) -> str | None:
    """Import ``modules`` in order in a fresh interpreter; the first after which ``forbidden`` is loaded."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"    if {forbidden!r} in sys.modules:\n"
        "        print(json.dumps(name)); break\n"
        "else:\n"
        "    print(json.dumps(None))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        (batchscale.theory, "torch"),
        (batchscale.empirical, "sympy"),
        (batchscale.report, "torch"),
        (batchscale.report, "sympy"),
    ],
    ids=["theory-no-torch", "empirical-no-sympy", "report-no-torch", "report-no-sympy"],
)
def test_package_never_imports(package, forbidden):
    modules = modules_of(package)
    assert modules, f"no modules found under {package.__name__}"
    assert first_offender(modules, forbidden) is None


def test_theory_and_empirical_never_import_each_other():
    assert first_offender(modules_of(batchscale.theory), "batchscale.empirical") is None
    assert first_offender(modules_of(batchscale.empirical), "batchscale.theory") is None


def test_the_check_can_fail():
    assert first_offender(["json", "batchscale.empirical.device"], "torch") == "batchscale.empirical.device"


def test_cli_startup_imports_neither_torch_nor_sympy():
    code = (
        "import sys; from click.testing import CliRunner; from batchscale.cli.main import cli; "
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output; "
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "torch" not in loaded
    assert "sympy" not in loaded
