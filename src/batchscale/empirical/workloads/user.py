"""User workloads named ``package.module:function``: importing them (the current folder is on the path),
checking their options against the function's signature, and reporting their exceptions.

Malformed input (no such module, an option the function does not take, a value of the wrong type) is an
:class:`~batchscale.errors.InputError` (exit 2 on the command line); an exception raised *inside* the
user's code (the factory, its module at import, its model) is a :class:`~batchscale.errors.UserCodeError`
naming the workload and the frame that raised it (exit 1; ``batchscale --debug`` shows the traceback).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import sysconfig
import traceback
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from batchscale.errors import InputError, UserCodeError, require


def one_line(exc: BaseException) -> str:
    """``'ValueError: first line of the message'``."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _library_dirs() -> tuple[str, ...]:
    """Folders whose frames are not the user's: the standard library, installed packages, batchscale."""
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.add(str(Path(__file__).resolve().parents[2]))  # src/batchscale
    return tuple(str(Path(d).resolve()) + os.sep for d in dirs if d)


def _shown(path: str) -> str:
    """``path`` relative to the current folder when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def raising_frame(exc: BaseException) -> str:
    """Where ``exc`` was raised, as ``'file.py:12 in fn'``: the innermost frame of the user's own code
    (not the standard library, an installed package or batchscale), else the innermost frame."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_shown(exc.filename)}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown place"
    library = _library_dirs()
    own = [f for f in frames if not str(Path(f.filename).resolve()).startswith(library)]
    frame = (own or frames)[-1]
    return f"{_shown(frame.filename)}:{frame.lineno} in {frame.name}"


def user_code_error(what: str, exc: BaseException) -> UserCodeError:
    """``UserCodeError('<what> failed: ValueError: message (at file.py:12 in fn)')`` caused by ``exc``."""
    error = UserCodeError(f"{what} failed: {one_line(exc)} (at {raising_frame(exc)})")
    error.__cause__ = exc
    return error


def _on_path(folder: str) -> None:
    """Put ``folder`` first on ``sys.path`` unless it is there already (as ``python -m`` does with '')."""
    present = {os.path.abspath(p or ".") for p in sys.path}
    if os.path.abspath(folder) not in present:
        sys.path.insert(0, folder)


def import_factory(spec: str, known: str) -> Callable[..., Any]:
    """``'package.module:function'`` -> the function, imported with the current folder on the path.

    A wrong name is an :class:`InputError` with a hint; an exception raised while the user's module
    imports is a :class:`UserCodeError`. ``known`` lists the registered names for the message.
    """
    module_name, _, attr = spec.partition(":")
    require(
        bool(module_name) and bool(attr),
        f"workload {spec!r} is neither a known name ({known}) nor package.module:function",
    )
    _on_path(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            top = module_name.split(".")[0]
            raise InputError(
                f"workload {spec!r}: no module named {missing!r} in the current folder ({os.getcwd()}) or "
                f"on the Python path; run from the folder holding {top}.py (or the {top}/ package) or add "
                "that folder to PYTHONPATH"
            ) from None
        raise user_code_error(f"workload {spec!r}: importing module {module_name!r}", exc) from None
    except Exception as exc:  # any other import-time failure is the user's module raising
        raise user_code_error(f"workload {spec!r}: importing module {module_name!r}", exc) from None
    factory = getattr(module, attr, None)
    require(factory is not None, f"workload {spec!r}: module {module_name!r} has no attribute {attr!r}")
    require(callable(factory), f"workload {spec!r}: {attr!r} is not callable")
    return factory


def description(factory: Callable[..., Any]) -> str:
    """The first paragraph of ``factory``'s docstring on one line, or ``'user workload'``."""
    doc = inspect.getdoc(factory)
    if not doc:
        return "user workload"
    return " ".join(doc.split("\n\n", 1)[0].split())


# ----------------------------------------------------------------------------------------------------
# Option types from the signature


def _hints(factory: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the defaults' types
        return {}


def _expected(parameter: inspect.Parameter, hints: dict[str, Any]) -> Any:
    """The type an option should have: its annotation, else its default's type, else None (anything)."""
    if parameter.name in hints:
        return hints[parameter.name]
    default = parameter.default
    if default is parameter.empty or default is None:
        return None
    if isinstance(default, list | tuple):
        items = {type(v) for v in default}
        return tuple[items.pop(), ...] if len(items) == 1 else type(default)
    return type(default)


_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}
_PLURALS = {int: "integers", float: "numbers", bool: "true/false values", str: "words"}


def _describe(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind in _WORDS:
        return _WORDS[kind]
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " or none"
    if origin in (tuple, list, Sequence) or kind in (tuple, list):
        inner = [a for a in args if a is not Ellipsis]
        item = _PLURALS.get(inner[0], f"{_describe(inner[0])} values") if len(inner) == 1 else ""
        return "a comma list" + (f" of {item}" if item else "")
    return getattr(kind, "__name__", str(kind))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, kind: Any) -> Any:
    """``value`` (as read from ``-W``: int, float, bool, str, None or a tuple of them) as ``kind``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is None or kind is Any or kind is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is typing.Literal:
        if value in args:
            return value
        raise _Mismatch
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if kind is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    if origin in (tuple, list, Sequence) or kind in (tuple, list):
        items = value if isinstance(value, tuple | list) else (value,)
        inner = [a for a in args if a is not Ellipsis]
        if len(inner) == 1 or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
            items = tuple(_coerce(v, inner[0]) for v in items)
        elif origin is tuple and args and len(args) != len(items):
            raise _Mismatch
        elif origin is tuple and args:
            items = tuple(_coerce(v, a) for v, a in zip(items, args, strict=True))
        return list(items) if (origin or kind) is list else tuple(items)
    if isinstance(kind, type) and not isinstance(value, kind):
        raise _Mismatch
    return value


def checked_options(name: str, factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` coerced to the types of ``factory``'s parameters (annotations, else the defaults'
    types): ``3`` for a float parameter becomes ``3.0``, ``256`` for a tuple ``(256,)``; a value that
    does not fit is a one-line :class:`InputError` naming the option and the expected type."""
    params = inspect.signature(factory).parameters
    hints = _hints(factory)
    out = dict(options)
    for key, value in options.items():
        if key not in params:
            continue
        kind = _expected(params[key], hints)
        try:
            out[key] = _coerce(value, kind)
        except _Mismatch:
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            raise InputError(
                f"workload {name}: option {key}={shown!r} must be {_describe(kind)} "
                f"(from the signature of {getattr(factory, '__qualname__', name)})"
            ) from None
    return out
