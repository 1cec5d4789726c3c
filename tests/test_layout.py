"""The architecture's import rules, checked in fresh interpreters.

theory never imports torch; empirical never imports sympy; the CLI's start-up imports neither.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import batchscale.empirical
import batchscale.theory


def modules_of(package) -> list[str]:
    return [
        f"{package.__name__}.{m.name}"
        for m in pkgutil.walk_packages(package.__path__)
        if not m.name.startswith("_")
    ]


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", modules_of(batchscale.theory) or ["batchscale.theory"])
def test_theory_never_imports_torch(module):
    assert "torch" not in imported_after(f"import {module}")


@pytest.mark.parametrize("module", modules_of(batchscale.empirical))
def test_empirical_never_imports_sympy(module):
    assert "sympy" not in imported_after(f"import {module}")


def test_cli_startup_imports_neither_torch_nor_sympy():
    loaded = imported_after(
        "from click.testing import CliRunner; from batchscale.cli.main import cli; "
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output"
    )
    assert "torch" not in loaded
    assert "sympy" not in loaded
