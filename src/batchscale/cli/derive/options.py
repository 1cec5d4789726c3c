"""Options and formatting shared by the ``derive`` subcommands (parsing and printing only)."""

from __future__ import annotations

import re
from typing import Any

import click

from batchscale.vocabulary import LOSS_FORMS, SAMPLINGS

# The same names as batchscale.theory.moments (kept here so `derive --help` does not import sympy).
FORM_TEXT = {"mean": "mean loss, learning rate eta", "sum": "summed loss, base learning rate eta_base"}


SAMPLING_TEXT = {
    "with": "sampling with replacement",
    "without": "sampling without replacement",
    "reshuffle": "reshuffle every epoch",
}


PER_TEXT = {"step": "per step", "example": "per example seen", "epoch": "per epoch"}


def format_option(default: str = "pretty"):
    """``--format pretty|latex|json``."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["pretty", "latex", "json"]),
        default=default,
        show_default=True,
        help="pretty: sympy pretty printing for a terminal; latex: LaTeX; json: a list of objects.",
    )


def form_option(func):
    return click.option(
        "--form",
        "forms",
        type=click.Choice(LOSS_FORMS),
        multiple=True,
        help="Loss form: mean (lr eta) or sum (base lr eta_base = eta/m); repeatable; default both.",
    )(func)


def sampling_option(func):
    return click.option(
        "--sampling",
        "samplings",
        type=click.Choice(SAMPLINGS),
        multiple=True,
        help="Batch sampling: with or without replacement, or reshuffle each epoch; repeatable; default all.",
    )(func)


_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def inline(expr: Any) -> str:
    """A one-line unicode rendering of a sympy expression: ``Sigma*eta**2/m`` -> ``Σ·η²/m``."""
    text = str(expr)
    text = re.sub(r"\beta_base\b", "η_base", text)
    text = re.sub(r"\beta\b", "η", text)
    text = re.sub(r"\bSigma\b", "Σ", text)
    text = re.sub(r"\boo\b", "∞", text)
    text = re.sub(r"\*\*(-?\d+)", lambda mt: mt.group(1).translate(_SUPERSCRIPTS), text)
    return text.replace("*", "·")


def pretty_equation(lhs: str, expr: Any) -> str:
    """``lhs = expr`` with sympy's unicode pretty printer (multi-line fractions aligned on the '=')."""
    import sympy as sp

    return sp.pretty(sp.Eq(sp.Symbol(lhs), expr, evaluate=False), use_unicode=True, wrap_line=False)
