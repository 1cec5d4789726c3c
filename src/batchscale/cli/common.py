"""Options and helpers shared by every subcommand: output format, device, seed, plots, progress.

Parsers turn command-line strings into plain Python values and raise ``click.BadParameter`` (exit 2)
on malformed text; range checks belong to the library and raise :class:`batchscale.errors.InputError`.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

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


def plot_option(func: Callable) -> Callable:
    """``--plot FILE.png``: also draw the result as a figure."""
    return click.option(
        "--plot",
        "plot_path",
        type=click.Path(dir_okay=False, writable=True),
        default=None,
        help="Also write a figure to this file (.png, .pdf or .svg).",
    )(func)


def emit(rows: Sequence[Mapping[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> None:
    """Print result rows to stdout in ``fmt``."""
    click.echo(render(rows, fmt, columns))


def progress(message: str) -> None:
    """A progress line on stderr (never mixed into machine-readable stdout)."""
    click.echo(message, err=True)


def parse_int_list(text: str, name: str = "value") -> list[int]:
    """``'1,2,8'`` -> [1, 2, 8]; ``'4..64'`` -> the powers of two from 4 to 64 inclusive.

    Ranges take powers of two between the bounds (bounds need not be powers of two: ``3..20`` gives
    4, 8, 16). Mixed forms are allowed: ``'1,2,16..64'``.
    """
    values: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if ".." in part:
                lo_text, hi_text = part.split("..", 1)
                lo, hi = int(lo_text), int(hi_text)
                if lo <= 0 or hi < lo:
                    raise click.BadParameter(f"range {part!r} needs 0 < low <= high", param_hint=name)
                p = 1 << max(0, math.ceil(math.log2(lo)))
                while p <= hi:
                    values.append(p)
                    p *= 2
            else:
                values.append(int(part))
        except ValueError:
            raise click.BadParameter(
                f"{part!r} is not an integer or a LOW..HIGH range", param_hint=name
            ) from None
    if not values:
        raise click.BadParameter(f"no values in {text!r}", param_hint=name)
    return sorted(set(values))


def parse_float_list(text: str, name: str = "value") -> list[float]:
    """``'0.1,0.3,1'`` -> [0.1, 0.3, 1.0]."""
    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma list of numbers", param_hint=name) from None
    if not values:
        raise click.BadParameter(f"no values in {text!r}", param_hint=name)
    return values


def parse_log_grid(text: str, name: str = "grid") -> tuple[float, float, int]:
    """``'LO:HI:N'`` (log10 bounds and a count) -> (lo, hi, n), checked for shape only."""
    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        message = f"{text!r} is not LO:HI:N (log10 bounds and a count)"
        raise click.BadParameter(message, param_hint=name) from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo or n < 1:
        raise click.BadParameter(f"{text!r} needs finite LO <= HI and N >= 1", param_hint=name)
    return lo, hi, n


def echo_err(message: str) -> None:
    """Write a line to stderr."""
    sys.stderr.write(message + "\n")


def _set_data_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        os.environ["BATCHSCALE_DATA_DIR"] = value  # read by file-based workloads, inherited by workers


def workload_options(default: str = "mnist1d-mlp", data_dir: bool = True):
    """``--workload NAME``, repeatable ``--workload-option KEY=VALUE`` and ``--data-dir DIR``.

    ``--data-dir`` sets ``$BATCHSCALE_DATA_DIR`` for this process and its workers, where the file-based
    workloads (mnist-cnn, fashion-mnist-cnn, cifar10-resnet8) look for their files; it is not passed to
    the command. Values of ``-W`` are parsed by :func:`parse_key_values`.
    """

    def decorate(func: Callable) -> Callable:
        if data_dir:
            func = click.option(
                "--data-dir",
                type=click.Path(file_okay=False),
                default=None,
                expose_value=False,
                callback=_set_data_dir,
                help="Folder holding downloaded datasets (MNIST, Fashion-MNIST, CIFAR-10) "
                "[default: $BATCHSCALE_DATA_DIR, else the user data directory].",
            )(func)
        func = click.option(
            "--workload-option",
            "-W",
            "workload_option",
            multiple=True,
            metavar="KEY=VALUE",
            help="Workload option, repeatable (e.g. -W n_samples=20000 -W hidden=256,256).",
        )(func)
        return click.option(
            "--workload",
            default=default,
            show_default=True,
            help="Built-in workload name (see `batchscale workloads`) or package.module:function.",
        )(func)

    return decorate


def parse_scalar(text: str) -> Any:
    """``'3'`` -> 3, ``'0.5'`` -> 0.5, ``'true'`` -> True, ``'256,256'`` -> (256, 256), else the text."""
    if "," in text:
        return tuple(parse_scalar(p) for p in text.split(",") if p)
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


def parse_key_values(items: Sequence[str], name: str = "--workload-option") -> dict[str, Any]:
    """``['a=1', 'b=x,y']`` -> ``{'a': 1, 'b': ('x', 'y')}``; malformed items are a BadParameter."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=name)
        out[key.strip()] = parse_scalar(value.strip())
    return out
