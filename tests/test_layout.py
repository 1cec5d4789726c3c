"""The architecture's import rules.

theory never imports torch; empirical never imports sympy; the CLI's start-up imports neither (checked
in fresh interpreters: one interpreter per package imports its modules one at a time and names the
first that breaks the rule; an interpreter per module would pay torch's ~2 s import for every empirical
module). No import cycle among the modules of ``src/batchscale`` (checked on the source with ``ast``).
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize(
    "args", [["--help"], ["verify", "--help"], ["verify", "list"], ["reproduce", "list"]], ids=" ".join
)
def test_cli_startup_imports_neither_torch_nor_sympy(args):
    code = (
        "import sys; from click.testing import CliRunner; from batchscale.cli.main import cli; "
        f"r = CliRunner().invoke(cli, {args!r}); assert r.exit_code == 0, r.output; "
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "torch" not in loaded
    assert "sympy" not in loaded


# ---------------------------------------------------------------------------------------------------
# No import cycle
# ---------------------------------------------------------------------------------------------------

SRC = Path(batchscale.theory.__file__).resolve().parents[1]  # src/batchscale


def module_files(root: Path) -> dict[str, Path]:
    """``{dotted name: file}`` for every ``.py`` under ``root`` (a package's ``__init__`` by its name)."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def executed_imports(tree: ast.AST):
    """Every ``import`` / ``from ... import`` statement, at any depth, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if type_checking_only(node):
            children = node.orelse
        stack.extend(children)


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``files`` it imports (``from pkg import name`` is ``pkg.name`` when that
    is a module, else ``pkg``; a module's parent packages are not counted as its imports)."""
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in executed_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in files)
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in files:
                    graph[name].add(target)
                elif base in files:
                    graph[name].add(base)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of ``graph`` (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_no_import_cycle_in_src():
    """No cycle among the modules of ``src/batchscale``, counting every import statement that can run:
    module-level AND function-level (a lazy import is a deferred dependency: the cycle this rule was
    written for, ``trials.run_trials`` importing ``batched`` which imports ``trials``, was a lazy one).
    Only ``if TYPE_CHECKING:`` blocks, which never run, are ignored."""
    files = module_files(SRC)
    assert "batchscale.empirical.engine" in files and len(files) > 20
    assert find_cycle(import_graph(files)) is None


def test_the_cycle_check_can_fail(tmp_path):
    """A planted cycle through a function-level, relative import is found; TYPE_CHECKING imports are not."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    from pkg import a\n")
    assert find_cycle(import_graph(module_files(package))) is None
    (package / "b.py").write_text("def f():\n    from .a import g\n    return g\n")
    assert find_cycle(import_graph(module_files(package))) == ["pkg.a", "pkg.b", "pkg.a"]


# Modules outside batchscale.verify / batchscale.reproduce that still join theory and empirical (to move).
JOINS_TO_MOVE = {"cli/sweep.py"}


def imported_layers(source: str) -> set[str]:
    """Which of theory / empirical a module's source imports anywhere (module level or in functions)."""
    names = set()
    for node in executed_imports(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    layers = ("theory", "empirical")
    return {layer for layer in layers if any(n.startswith(f"batchscale.{layer}") for n in names)}


def test_only_verify_and_reproduce_import_both_theory_and_empirical():
    joins = {
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*.py")
        if imported_layers(path.read_text()) == {"theory", "empirical"}
    }
    assert {j for j in joins if not j.startswith(("verify/", "reproduce/"))} <= JOINS_TO_MOVE
    assert any(j.startswith("verify/") for j in joins)


def test_the_join_check_can_fail():
    source = "import batchscale.theory.moments\ndef f():\n    from batchscale.empirical import train\n"
    assert imported_layers(source) == {"theory", "empirical"}


TRAINING_LOOPS = ("batchscale.empirical.train", "batchscale.empirical.engine", "batchscale.empirical.batched",
                  "batchscale.empirical.optimizers")


def cli_training_imports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """CLI modules that import a training loop directly (any import that can run, at any depth)."""
    return {name: targets & set(TRAINING_LOOPS) for name, targets in graph.items()
            if name.startswith("batchscale.cli") and targets & set(TRAINING_LOOPS)}


def test_the_cli_imports_no_training_loop():
    """The CLI parses, calls and formats: it reaches training only through library functions (sweeps,
    measurements, verify), never by importing the training loop, the engine or the optimizers itself."""
    files = module_files(SRC)
    assert set(TRAINING_LOOPS) <= set(files)
    assert cli_training_imports(import_graph(files)) == {}


def test_the_training_loop_check_can_fail():
    graph = {"batchscale.cli.rogue": {"batchscale.empirical.train"}, "batchscale.cli.fine": {"json"}}
    assert cli_training_imports(graph) == {"batchscale.cli.rogue": {"batchscale.empirical.train"}}
