"""``batchscale derive staleness``: n small steps vs one big step, the second-order gap."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import click

from batchscale.cli.common import emit, plot_option, progress, seed_option
from batchscale.cli.derive.options import (
    FORM_TEXT,
    SAMPLING_TEXT,
    form_option,
    format_option,
    inline,
    pretty_equation,
    sampling_option,
)
from batchscale.vocabulary import LOSS_FORMS, SAMPLINGS


@click.command()
@form_option
@sampling_option
@click.option(
    "--order",
    type=int,
    default=2,
    show_default=True,
    help="Highest power K of the learning rate in the series of w_n - w_big (K >= 1).",
)
@click.option(
    "--steps", "-n", type=int, default=3, show_default=True, help="Number n of small steps written out."
)
@plot_option
@seed_option
@format_option()
def staleness(
    forms: tuple[str, ...],
    samplings: tuple[str, ...],
    order: int,
    steps: int,
    plot_path: str | None,
    seed: int,
    fmt: str,
) -> None:
    """n small steps vs one big step, in the lr.

    The difference w_n - w_big as a series in the learning rate, its exact product form for a quadratic,
    and the expectation and covariance of its leading term over random batches.

    Sum form: batch j has summed gradient S_j and summed Hessian H_j at the start; n small steps with
    base lr eta_base vs one step on all n batches with gradients at the start. Mean form: batch means g_j,
    H_j, lr eta for the small steps and n*eta for the big step. The expectation over batches of the
    leading term is in terms of H (mean per-example Hessian), G, Sigma, C (Hessian-gradient covariance).
    """
    import sympy as sp

    from batchscale.errors import require
    from batchscale.theory import staleness as st

    if plot_path is not None:
        suffix = Path(plot_path).suffix.lower()
        require(
            suffix in PLOT_SUFFIXES, f"--plot file must end in {', '.join(PLOT_SUFFIXES)}, got {plot_path!r}"
        )
    rows: list[dict[str, Any]] = []
    for form in forms or LOSS_FORMS:
        terms = st.staleness_terms(steps, order, form)
        rows.append(
            {
                "kind": "series",
                "form": form,
                "steps": steps,
                "order": order,
                "leading_term": st.leading_term_symbolic(form),
                "terms": terms,
                "series": sp.Add(*terms.values()),
                "exact": st.staleness_exact_symbolic(steps, form),
            }
        )
        for sampling in samplings or SAMPLINGS:
            r = st.leading_term_moments(form, sampling)
            rows.append(
                {
                    "kind": "expectation",
                    "form": form,
                    "sampling": sampling,
                    "mean": r.mean,
                    "covariance": r.covariance,
                    "note": r.note,
                }
            )
    curve = _staleness_curve(steps, order, seed, plot_path) if plot_path else []
    if fmt == "json":
        emit([_stringify(row) for row in rows] + [{"kind": "curve", **p._asdict()} for p in curve], "json")
    elif fmt == "latex":
        click.echo("\n".join(_staleness_latex(row) for row in rows))
    else:
        click.echo("\n".join(_staleness_pretty(row) for row in rows))
        if curve:
            click.echo(f"random quadratic (d={CURVE_DIM}, n={steps}, seed={seed}), norms over |w_big - w_0|:")
            emit([p._asdict() for p in curve], "table")


CURVE_DIM = 10


PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def _staleness_curve(steps: int, order: int, seed: int, plot_path: str):
    """Exact vs predicted difference on a random quadratic over learning rates; draws the figure."""
    import numpy as np

    from batchscale.theory import staleness as st

    hessians, grads = st.random_quadratic(CURVE_DIM, steps, seed)
    lam = float(np.linalg.eigvalsh(hessians).max())
    curve = st.staleness_curve(hessians, grads, np.geomspace(1e-3, 4.0, 12) / (steps * lam), order)
    _plot_staleness(curve, steps, order, plot_path)
    progress(f"wrote {plot_path}")
    return curve


def _plot_staleness(curve, steps: int, order: int, plot_path: str) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([p.lr_n_lambda_max for p in curve])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))

    def line(values, style: str, label: str) -> None:
        y = np.array(values)
        ok = y > 0  # a log axis cannot show exact zeros (n = 1, or a series that terminated)
        ax.loglog(x[ok], y[ok], style, label=label)

    line([p.difference for p in curve], "o-", r"exact $|w_n - w_{big}|$ ($\propto\eta$)")
    line([p.leading for p in curve], "--", r"leading term $\eta^2|\sum_{k<j}H_jS_k|$")
    line([p.leading_remainder for p in curve], "^-.", r"exact $-$ leading term ($\propto\eta^2$)")
    if order > 2:
        label = f"exact $-$ series to order {order} ($\\propto\\eta^{{{order}}}$)"
        line([p.series_remainder for p in curve], "s:", label)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xlabel(r"$\eta\, n\, \lambda_{max}$ (big step against the curvature)")
    ax.set_ylabel(r"norm relative to the big step $|w_{big} - w_0|$")
    ax.set_title(f"{steps} small steps vs one big step, random quadratic (d={CURVE_DIM})")
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(plot_path, dpi=120)
    plt.close(fig)


ORDER_NOTE = (
    "sympy.sympify reads H, G, Sigma, C, H_j, S_j, g_j as commutative scalars: the matrix products keep "
    "the written order (H_j before S_k; H*Sigma*H)"
)


def _staleness_pretty(row: dict[str, Any]) -> str:
    if row["kind"] == "series":
        import sympy as sp

        from batchscale.theory.moments import learning_rate_symbol

        lr = learning_rate_symbol(row["form"])
        lines = [
            f"== {FORM_TEXT[row['form']]}: n small steps vs one big step ==",
            "leading term for any n:",
            pretty_equation("w_n - w_big", row["leading_term"] + sp.O(lr**3)),
            f"exact product form (quadratic), n = {row['steps']}:",
            pretty_equation("w_n - w_big", row["exact"]),
            f"series to order {row['order']} (T_q: the term in {inline(lr)}^q), n = {row['steps']}:",
        ]
        lines += [pretty_equation(f"T_{q}", term) for q, term in row["terms"].items()]
        if not row["terms"]:
            lines.append("  (order 1: no terms; the difference starts at the second order)")
        return "\n".join(lines) + "\n"
    return "\n".join(
        [
            f"-- expectation over batches, {FORM_TEXT[row['form']]}, {SAMPLING_TEXT[row['sampling']]} --",
            pretty_equation("E[leading]", row["mean"]),
            pretty_equation("Cov[leading]", row["covariance"]),
            textwrap.fill(row["note"], width=100, initial_indent="note: ", subsequent_indent="      ") + "\n",
        ]
    )


def _staleness_latex(row: dict[str, Any]) -> str:
    import sympy as sp

    if row["kind"] == "series":
        from batchscale.theory.moments import learning_rate_symbol

        lr = learning_rate_symbol(row["form"])
        lines = [
            f"% {FORM_TEXT[row['form']]}, n = {row['steps']}, order {row['order']}; T_q: the term in lr^q",
            f"w_n - w_{{big}} = {sp.latex(row['leading_term'] + sp.O(lr**3))}",
            f"w_n - w_{{big}} = {sp.latex(row['exact'])}",
        ]
        lines += [f"T_{{{q}}} = {sp.latex(t)}" for q, t in row["terms"].items()]
        return "\n".join(lines)
    return "\n".join(
        [
            f"% expectation, {FORM_TEXT[row['form']]}, {SAMPLING_TEXT[row['sampling']]}",
            rf"\mathbb{{E}}[D] = {sp.latex(row['mean'])}",
            rf"\operatorname{{Cov}}[D] = {sp.latex(row['covariance'])}",
        ]
    )


def json_str(expr: Any) -> str:
    """``str(expr)`` that ``sympy.sympify`` reads back: an indexed ``H[j]`` is written ``Indexed('H', j)``."""
    from sympy.printing.str import StrPrinter

    class _Printer(StrPrinter):
        printmethod = "_batchscale_json_str"  # not Indexed._sympystr, which writes H[j]

        def _print_Indexed(self, e) -> str:
            indices = ", ".join(self._print(i) for i in e.indices)
            return f"Indexed('{e.base.label}', {indices})"

    return _Printer().doprint(expr)


def _stringify(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out[key] = {str(k): json_str(v) for k, v in value.items()}
        elif isinstance(value, (str, int, bool)):
            out[key] = value
        else:
            out[key] = json_str(value)
    if row["kind"] == "series":
        out["note"] = ORDER_NOTE
    else:
        out["note"] = f"{row['note']} {ORDER_NOTE}."
    return out
