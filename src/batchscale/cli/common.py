"""Options and helpers shared by every subcommand: output format, device, seed, plots, progress.

Click parameter types (:class:`IntList`, :class:`FloatList`, :class:`Range`, :class:`LogGrid`,
:class:`KeyValue`, :class:`FiniteFloat`, :class:`FilePath`) turn command-line strings into plain Python
values and fail with one ``Error:`` line (exit 2) on malformed text, before the command body runs;
checks that need more than one value belong to the library and raise
:class:`batchscale.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from batchscale.progress import REPORTER
from batchscale.report.tables import render


def format_option(choices: Sequence[str] = ("table", "json", "csv"), default: str = "table"):
    """``--format`` with the given choices."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=default,
        show_default=True,
        help="Output format: " + ", ".join(choices) + ".",
    )


def device_option(func: Callable) -> Callable:
    """``--device auto|cpu|cuda`` (auto = CUDA when available)."""
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where to run: auto picks CUDA when available, else CPU.",
    )(func)


def seed_option(func: Callable) -> Callable:
    """``--seed`` for every random draw of the command."""
    return click.option(
        "--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same numbers)."
    )(func)


class _Text(click.ParamType):
    """A parameter type shown in help as its ``metavar``."""

    metavar = "TEXT"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self.metavar


class FilePath(_Text):
    """A file path that is not empty and not a folder.

    ``output=True`` (a file the command writes): the parent folder is created and must be writable, an
    existing file must be a writable regular file, and the suffix must be one of ``suffixes`` when given;
    all checked while parsing, so a bad path fails before any work starts.
    """

    name = "file"
    metavar = "FILE"

    def __init__(self, output: bool = False, suffixes: Sequence[str] = ()) -> None:
        self.output = output
        self.suffixes = tuple(suffixes)

    def convert(self, value: Any, param, ctx) -> str:
        text = os.fspath(value)
        if not str(text).strip():
            self.fail("empty; give a file name", param, ctx)
        path = Path(text)
        if path.is_dir():
            self.fail(f"{text!r} is a folder, not a file", param, ctx)
        if self.suffixes and path.suffix.lower() not in self.suffixes:
            self.fail(f"{text!r} must end in {', '.join(self.suffixes)}", param, ctx)
        if self.output:
            prepare_output(path, lambda message: self.fail(message, param, ctx))
        return str(text)


class FolderPath(_Text):
    """A folder path that is not empty and not an existing file (it need not exist yet)."""

    name = "folder"
    metavar = "DIR"

    def convert(self, value: Any, param, ctx) -> str:
        text = os.fspath(value)
        if not str(text).strip():
            self.fail("empty; give a folder", param, ctx)
        if Path(text).exists() and not Path(text).is_dir():
            self.fail(f"{text!r} is a file, not a folder", param, ctx)
        return str(text)


def prepare_output(path: Path, fail: Callable[[str], Any]) -> None:
    """Create ``path``'s parent folder and check that ``path`` can be written; ``fail(message)`` if not."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the folder {str(parent)!r}: {exc.strerror or exc}")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"the folder {str(parent)!r} is not writable")
    if path.exists() and (not path.is_file() or not os.access(path, os.W_OK)):
        fail(f"{str(path)!r} exists and is not a writable regular file")


PLOT_SUFFIXES = (".png", ".pdf", ".svg")  # batchscale.report.plots.PLOT_SUFFIXES (checked by a test)


def plot_option(func: Callable) -> Callable:
    """``--plot FILE.png``: also draw the result as a figure (path checked before any work)."""
    return click.option(
        "--plot",
        "plot_path",
        type=FilePath(output=True, suffixes=PLOT_SUFFIXES),
        default=None,
        help="Also write a figure to this file (.png, .pdf or .svg; its folder is created).",
    )(func)


def emit(rows: Sequence[Mapping[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> None:
    """Print result rows to stdout in ``fmt``."""
    click.echo(render(rows, fmt, columns))


progress = REPORTER
"""Progress on stderr (never mixed into machine-readable stdout): ``progress(message)`` says a line, and
library code given it opens counters with an ETA (:func:`batchscale.progress.counter`)."""


def powers_of_two(lo: int, hi: int) -> list[int]:
    """The powers of two p with lo <= p <= hi (``3, 20`` -> [4, 8, 16])."""
    values, p = [], 1 << max(0, math.ceil(math.log2(max(lo, 1))))
    while p <= hi:
        values.append(p)
        p *= 2
    return values


def _pieces(text: str, what: str, param_type: click.ParamType, param, ctx) -> list[str]:
    """``text`` split at commas; an empty text or an empty piece (``1,,2``) fails."""
    if not text.strip():
        param_type.fail(f"empty; give {what}", param, ctx)
    pieces = [p.strip() for p in text.split(",")]
    if any(not p for p in pieces):
        param_type.fail(f"{text!r} has an empty item (two commas in a row or a trailing comma)", param, ctx)
    return pieces


class IntList(_Text):
    """``'1,2,8'`` -> [1, 2, 8]; ``'4..64'`` -> the powers of two from 4 to 64 inclusive.

    Ranges take powers of two between the bounds (bounds need not be powers of two: ``3..20`` gives
    4, 8, 16). Mixed forms are allowed: ``'1,2,16..64'``. Values are sorted, duplicates dropped, and
    each must be >= ``minimum`` (None: the library checks them).
    """

    name = "ints"
    metavar = "LIST"

    def __init__(self, minimum: int | None = 1) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list | tuple):
            return list(value)
        values: list[int] = []
        for part in _pieces(str(value), "integers such as 1,2,8 or 4..64", self, param, ctx):
            try:
                if ".." in part:
                    lo_text, hi_text = part.split("..", 1)
                    lo, hi = int(lo_text), int(hi_text)
                    if lo < 1 or hi < lo:
                        self.fail(f"range {part!r} needs 1 <= LOW <= HIGH", param, ctx)
                    found = powers_of_two(lo, hi)
                    if not found:
                        self.fail(f"range {part!r} holds no power of two", param, ctx)
                    values.extend(found)
                else:
                    values.append(int(part))
            except ValueError:
                self.fail(f"{part!r} is not an integer or a LOW..HIGH range", param, ctx)
        low = [v for v in values if self.minimum is not None and v < self.minimum]
        if low:
            self.fail(f"{low[0]} is below the minimum {self.minimum}", param, ctx)
        return sorted(set(values))


class FloatList(_Text):
    """``'0.1,0.3,1'`` -> [0.1, 0.3, 1.0]; every value finite."""

    name = "floats"
    metavar = "LIST"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[float]:
        if isinstance(value, list | tuple):
            return [float(v) for v in value]
        pieces = _pieces(str(value), "numbers such as 0.1,0.3,1", self, param, ctx)
        return [_finite(part, self, param, ctx) for part in pieces]


def _numbers(text: str, count: int, shape: str, param_type: click.ParamType, param, ctx) -> list[str]:
    parts = text.split(":")
    if len(parts) != count or any(not p.strip() for p in parts):
        param_type.fail(f"{text!r} is not {shape}", param, ctx)
    return parts


def _finite(text: str, param_type: click.ParamType, param, ctx) -> float:
    try:
        number = float(text)
    except ValueError:
        param_type.fail(f"{text.strip()!r} is not a number", param, ctx)
    if not math.isfinite(number):
        param_type.fail(f"{text.strip()!r} is not a finite number", param, ctx)
    return number


class Range(_Text):
    """``'LO:HI'`` -> (lo, hi), two finite numbers with LO <= HI."""

    name = "range"
    metavar = "LO:HI"

    def convert(self, value: Any, param, ctx) -> tuple[float, float]:
        if isinstance(value, list | tuple):
            return float(value[0]), float(value[1])
        lo_text, hi_text = _numbers(str(value), 2, "LO:HI (two numbers)", self, param, ctx)
        lo, hi = _finite(lo_text, self, param, ctx), _finite(hi_text, self, param, ctx)
        if hi < lo:
            self.fail(f"{value!r} needs LO <= HI", param, ctx)
        return lo, hi


class LogGrid(_Text):
    """``'LO:HI:N'`` (log10 bounds and a count) -> (lo, hi, n) with finite LO <= HI and N >= 1."""

    name = "grid"
    metavar = "LO:HI:N"

    def convert(self, value: Any, param, ctx) -> tuple[float, float, int]:
        if isinstance(value, list | tuple):
            return float(value[0]), float(value[1]), int(value[2])
        shape = "LO:HI:N (log10 bounds and a count)"
        lo_text, hi_text, n_text = _numbers(str(value), 3, shape, self, param, ctx)
        lo, hi = _finite(lo_text, self, param, ctx), _finite(hi_text, self, param, ctx)
        try:
            n = int(n_text)
        except ValueError:
            self.fail(f"{n_text.strip()!r} is not a count (an integer)", param, ctx)
        if hi < lo or n < 1:
            self.fail(f"{value!r} needs LO <= HI and N >= 1", param, ctx)
        return lo, hi, n


class FiniteFloat(click.FloatRange):
    """A float within optional bounds (as ``click.FloatRange``) that is also finite (no nan, no inf; with
    ``allow_inf=True``: no nan, for options where inf means "no limit")."""

    name = "float"

    def __init__(self, *args: Any, allow_inf: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_inf = allow_inf

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()

    def convert(self, value: Any, param, ctx) -> float:
        number = super().convert(value, param, ctx)
        if math.isnan(number) or (math.isinf(number) and not self.allow_inf):
            self.fail(f"{value!r} is not a {'number' if self.allow_inf else 'finite number'}", param, ctx)
        return number


FINITE = FiniteFloat()


def parse_scalar(text: str) -> Any:
    """``'3'`` -> 3, ``'0.5'`` -> 0.5, ``'true'`` -> True, ``'256,256'`` -> (256, 256), else the text.

    Raises ValueError on an empty item in a comma list (``'1,,2'``).
    """
    if "," in text:
        parts = [p.strip() for p in text.split(",")]
        if any(not p for p in parts):
            raise ValueError(f"{text!r} has an empty item")
        return tuple(parse_scalar(p) for p in parts)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


class KeyValue(_Text):
    """``'a=1'`` -> ``('a', 1)``, the value read by :func:`parse_scalar`; use with :func:`key_value_dict`."""

    name = "key=value"
    metavar = "KEY=VALUE"

    def convert(self, value: Any, param, ctx) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        key, sep, text = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"{value!r} is not KEY=VALUE", param, ctx)
        if not text.strip():
            self.fail(f"{value!r} has no value after '='", param, ctx)
        try:
            return key.strip(), parse_scalar(text.strip())
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


def key_value_dict(ctx: click.Context, param: click.Parameter, value: Any) -> dict[str, Any]:
    """Callback of a repeatable :class:`KeyValue` option: the pairs as a dict; a key given twice fails."""
    if isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value or ():
        if key in out:
            raise click.BadParameter(f"{key!r} is given twice", ctx=ctx, param=param)
        out[key] = item
    return out


def key_value_option(*decls: str, help: str, **kwargs: Any) -> Callable:
    """A repeatable ``KEY=VALUE`` option whose value reaches the command as a dict."""
    return click.option(*decls, type=KeyValue(), multiple=True, callback=key_value_dict, help=help, **kwargs)


QUICK_HELP = "Demo variant: {} (options given explicitly win)."


def quick_option(preset: Mapping[str, Any], summary: str) -> Callable:
    """``--quick``: ``preset`` (parameter name -> value) replaces the parameters left at their default.

    The one ``--quick`` mechanism of every command: an option the user gave (command line or
    environment) keeps its value and is checked as usual; the preset's values are already converted.
    """

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, quick: bool = False, **kwargs: Any) -> Any:
            if quick:
                ctx = click.get_current_context()
                for name, value in preset.items():
                    if ctx.get_parameter_source(name) in (None, ParameterSource.DEFAULT):
                        kwargs[name] = value
            return func(*args, **kwargs)

        return click.option("--quick", is_flag=True, help=QUICK_HELP.format(summary))(wrapper)

    return decorate


class Interrupted(click.ClickException):
    """Ctrl-C: one line saying what was kept and how to go on, exit code 130 (128 + SIGINT)."""

    exit_code = 130

    def show(self, file: Any = None) -> None:
        after_caret = "\n" if sys.stderr.isatty() else ""  # the terminal echoed ^C on the current line
        click.echo(f"{after_caret}Interrupted: {self.message}", err=True)


@contextlib.contextmanager
def on_interrupt(message: str) -> Iterator[None]:
    """Turn a ``KeyboardInterrupt`` inside the block into :class:`Interrupted` with ``message`` (e.g. how
    to resume), instead of click's bare "Aborted!"."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(message) from None


def counted(n: float, noun: str) -> str:
    """``counted(1, 'case')`` -> ``'1 case'``, ``counted(3, 'case')`` -> ``'3 cases'`` (n printed with :g)."""
    return f"{n:g} {noun}" if n == 1 else f"{n:g} {noun}s"


def _set_data_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        os.environ["BATCHSCALE_DATA_DIR"] = value  # read by file-based workloads, inherited by workers


def workload_options(default: str = "mnist1d-mlp", data_dir: bool = True):
    """``--workload NAME``, repeatable ``--workload-option KEY=VALUE`` and ``--data-dir DIR``.

    ``--data-dir`` sets ``$BATCHSCALE_DATA_DIR`` for this process and its workers, where the file-based
    workloads (mnist-cnn, fashion-mnist-cnn, cifar10-resnet8) look for their files; it is not passed to
    the command. ``-W`` reaches the command as a dict (see :class:`KeyValue`).
    """

    def decorate(func: Callable) -> Callable:
        if data_dir:
            func = click.option(
                "--data-dir",
                type=FolderPath(),
                default=None,
                expose_value=False,
                callback=_set_data_dir,
                help="Folder holding downloaded datasets (MNIST, Fashion-MNIST, CIFAR-10) "
                "[default: $BATCHSCALE_DATA_DIR, else the user data directory].",
            )(func)
        func = key_value_option(
            "--workload-option",
            "-W",
            "workload_option",
            help="Workload option, repeatable (e.g. -W n_samples=20000 -W hidden=256,256).",
        )(func)
        return click.option(
            "--workload",
            default=default,
            show_default=True,
            help="Built-in workload name (see `batchscale workloads`) or package.module:function.",
        )(func)

    return decorate
