"""``batchscale derive``: exact results, printed as pretty sympy, LaTeX or JSON.

Commands: ``accounting`` (integers of an epoch), ``moments`` (mean and covariance of one update for every
loss form, sampling scheme and normalisation), ``accumulation`` (micro-batches == one batch) and
``staleness`` (n small steps vs one big step). sympy is imported inside the commands that need it.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from batchscale.cli.common import IntList, counted, emit, plot_option, progress, seed_option
from batchscale.vocabulary import LOSS_FORMS, PERS, SAMPLINGS

# The same names as batchscale.theory.moments (kept here so `derive --help` does not import sympy).
FORM_TEXT = {"mean": "mean loss, learning rate eta", "sum": "summed loss, base learning rate eta_base"}
SAMPLING_TEXT = {
    "with": "sampling with replacement",
    "without": "sampling without replacement",
    "reshuffle": "reshuffle every epoch",
}
PER_TEXT = {"step": "per step", "example": "per example seen", "epoch": "per epoch"}

MOMENTS_PREAMBLE = """\
Moments of one SGD update dw = w_next - w, all gradients taken at w.
  M examples, per-example gradients g_i with mean G and population covariance Sigma; batch size m.
  mean form: dw = -eta * (1/m) * sum_{i in B} g_i;  sum form: dw = -eta_base * sum_{i in B} g_i,
  eta_base = eta/m.
  with: m independent uniform draws;  without: a uniform m-subset per step, steps independent;
  reshuffle: each epoch a random partition into batches.
  per step: one update;  per example seen: per step / m;  per epoch: sum of the M/m updates (m divides M).
  G stands for the mean gradient vector and Sigma for the covariance matrix: each result is a number
  times G or times Sigma."""


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


@click.group()
def derive() -> None:
    """Exact symbolic results: accounting, update moments, accumulation, staleness."""


# ---- accounting ---------------------------------------------------------------------------------------


@derive.command()
@click.option("--dataset-size", "-M", type=int, required=True, help="Number of examples M in the dataset.")
@click.option(
    "--batch-size",
    "-m",
    type=IntList(minimum=None),
    required=True,
    help="Batch size m, or a list: 1,10,100 or 4..64 (powers of two).",
)
@click.option("--drop-last", is_flag=True, help="Drop the last partial batch of every epoch.")
@click.option("--epochs", type=int, default=None, help="Also count the updates in this many epochs.")
@click.option("--examples", type=int, default=None, help="Also count the updates in this many examples seen.")
@format_option()
def accounting(
    dataset_size: int,
    batch_size: list[int],
    drop_last: bool,
    epochs: int | None,
    examples: int | None,
    fmt: str,
) -> None:
    """Epoch integers: steps, last batch, updates.

    Steps per epoch, the last batch and the updates for a budget of epochs or examples, as exact integers.

    Steps per epoch are ceil(M/m), or floor(M/m) with --drop-last; the last batch holds M mod m examples
    when m does not divide M. A budget of examples counts the updates completed within it.
    """
    from batchscale.theory.accounting import epoch_accounting

    sizes = batch_size
    rows = [
        vars(epoch_accounting(dataset_size, size, drop_last, epochs=epochs, examples=examples))
        for size in sizes
    ]
    if epochs is None and examples is None:
        rows = [{k: v for k, v in row.items() if k not in ("epochs", "examples", "updates")} for row in rows]
    if fmt == "json":
        emit(rows, "json")
    elif fmt == "latex":
        click.echo(_accounting_latex(rows))
    else:
        emit(rows, "table")


def _accounting_latex(rows: Sequence[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        big_m, small_m = row["dataset_size"], row["batch_size"]
        op = r"\lfloor %d/%d \rfloor" if row["drop_last"] else r"\lceil %d/%d \rceil"
        lines.append(
            f"{op % (big_m, small_m)} = {row['steps_per_epoch']}"
            + rf",\quad m_{{last}} = {row['last_batch_size']}"
        )
        if row.get("updates") is not None:
            lines[-1] += rf",\quad U = {row['updates']}"
    return "\n".join(lines)


# ---- moments ------------------------------------------------------------------------------------------


@derive.command()
@form_option
@sampling_option
@click.option(
    "--per",
    "pers",
    type=click.Choice(PERS),
    multiple=True,
    help="Normalisation: per step, per example seen (step / m) or per epoch; repeatable; default all.",
)
@click.option("--dataset-size", "-M", type=int, default=None, help="Evaluate at this M (needs --batch-size).")
@click.option("--batch-size", "-m", type=int, default=None, help="Evaluate at this m (needs --dataset-size).")
@click.option("--drop-last", is_flag=True, help="With sizes given: drop the last partial batch of an epoch.")
@format_option()
def moments(
    forms: tuple[str, ...],
    samplings: tuple[str, ...],
    pers: tuple[str, ...],
    dataset_size: int | None,
    batch_size: int | None,
    drop_last: bool,
    fmt: str,
) -> None:
    """Mean and covariance of one SGD update.

    Every loss form (mean, sum), sampling scheme (with, without, reshuffle) and normalisation (per step,
    per example seen, per epoch), as exact sympy expressions in M, m, eta or eta_base, G and Sigma.

    With no options, prints all 18 cases (3 samplings x 2 forms x 3 normalisations) with their m = 1,
    m = M and M -> infinity limits; --form, --sampling and --per select cases. With --dataset-size and
    --batch-size, prints the exact moments at those sizes instead (per epoch including a last partial
    batch, kept or dropped).
    """
    from batchscale.theory import moments as mo

    chosen_samplings = samplings
    forms, samplings, pers = forms or LOSS_FORMS, samplings or SAMPLINGS, pers or PERS
    if (dataset_size is None) != (batch_size is None):
        raise click.UsageError("--dataset-size and --batch-size go together")
    if drop_last and dataset_size is None:
        raise click.UsageError("--drop-last needs --dataset-size and --batch-size (a partial last batch)")
    if dataset_size is not None:
        if not chosen_samplings:
            samplings = _samplings_for_sizes(dataset_size, batch_size)
        sized = [
            mo.update_moments_at(f, s, p, dataset_size, batch_size, drop_last)
            for s in samplings
            for f in forms
            for p in pers
        ]
        _print_sized(sized, fmt)
        return
    progress(f"deriving {counted(len(forms) * len(samplings) * len(pers), 'case')} with sympy ...")
    results = mo.all_update_moments(tuple(forms), tuple(samplings), tuple(pers))
    if fmt == "json":
        emit([_moments_row(r) for r in results], "json")
    elif fmt == "latex":
        click.echo("\n\n".join(_moments_latex(r) for r in results))
    else:
        click.echo(MOMENTS_PREAMBLE)
        for r in results:
            click.echo("\n" + _moments_pretty(r))


def _samplings_for_sizes(dataset_size: int, batch_size: int) -> tuple[str, ...]:
    """Every sampling scheme, less those that cannot draw m > M examples (with a note on stderr).

    Asked for explicitly (``--sampling without``), such a case stays an error instead.
    """
    if batch_size <= dataset_size or batch_size < 1:
        return SAMPLINGS
    progress(
        f"note: batch size {batch_size} > dataset size {dataset_size}: only sampling with replacement "
        "can draw such a batch; the without and reshuffle cases are skipped"
    )
    return ("with",)


def _heading(form: str, sampling: str, per: str) -> str:
    return f"{FORM_TEXT[form]} | {SAMPLING_TEXT[sampling]} | {PER_TEXT[per]}"


def _moments_row(r) -> dict[str, str]:
    fields = ("mean", "covariance", "mean_m1", "mean_mM", "mean_Minf")
    fields += ("covariance_m1", "covariance_mM", "covariance_Minf")
    row = {"form": r.form, "sampling": r.sampling, "per": r.per}
    row.update({name: str(getattr(r, name)) for name in fields})
    row["note"] = r.note
    return row


def _moments_pretty(r) -> str:
    limits = "  ".join(
        f"{label}: {inline(value)}"
        for label, value in (("m=1", r.covariance_m1), ("m=M", r.covariance_mM), ("M→∞", r.covariance_Minf))
    )
    lines = [
        "== " + _heading(r.form, r.sampling, r.per) + " ==",
        pretty_equation("E[Δw]", r.mean),
        pretty_equation("Cov[Δw]", r.covariance),
        f"Cov limits  {limits}",
    ]
    if _depends_on_sizes(r.mean):
        mean_limits = f"m=1: {inline(r.mean_m1)}  m=M: {inline(r.mean_mM)}  M→∞: {inline(r.mean_Minf)}"
        lines.append(f"E limits    {mean_limits}")
    lines.append(textwrap.fill(r.note, width=100, initial_indent="note: ", subsequent_indent="      "))
    return "\n".join(lines)


def _depends_on_sizes(expr) -> bool:
    """Whether ``expr`` involves m or M (else its limits are the expression itself)."""
    return bool({s.name for s in expr.free_symbols} & {"m", "M"})


def _latex_limits(symbol: str, m1, mM, minf) -> str:
    import sympy as sp

    return (
        rf"{symbol}\big|_{{m=1}} = {sp.latex(m1)},\quad "
        rf"{symbol}\big|_{{m=M}} = {sp.latex(mM)},\quad "
        rf"{symbol} \xrightarrow{{M\to\infty}} {sp.latex(minf)}"
    )


def _moments_latex(r) -> str:
    import sympy as sp

    e, c = r"\mathbb{E}[\Delta w]", r"\operatorname{Cov}[\Delta w]"
    lines = [
        f"% {_heading(r.form, r.sampling, r.per)}",
        f"{e} = {sp.latex(r.mean)}",
        f"{c} = {sp.latex(r.covariance)}",
    ]
    if _depends_on_sizes(r.mean):
        lines.append(_latex_limits(e, r.mean_m1, r.mean_mM, r.mean_Minf))
    lines.append(_latex_limits(c, r.covariance_m1, r.covariance_mM, r.covariance_Minf))
    return "\n".join(lines)


def _print_sized(sized, fmt: str) -> None:
    import sympy as sp

    if fmt == "json":
        keys = ("form", "sampling", "per", "dataset_size", "batch_size", "drop_last")
        emit(
            [
                {**{k: getattr(s, k) for k in keys}, "mean": str(s.mean), "covariance": str(s.covariance)}
                for s in sized
            ],
            "json",
        )
        return
    if fmt == "latex":
        for s in sized:
            click.echo(f"% {_heading(s.form, s.sampling, s.per)}, M={s.dataset_size}, m={s.batch_size}")
            click.echo(
                rf"\mathbb{{E}}[\Delta w] = {sp.latex(s.mean)},\quad "
                rf"\operatorname{{Cov}}[\Delta w] = {sp.latex(s.covariance)}"
            )
        return
    first = sized[0]
    click.echo(
        f"Exact moments at M={first.dataset_size}, m={first.batch_size}"
        f"{' (last partial batch dropped)' if first.drop_last else ''}:"
    )
    rows = [
        {
            "form": s.form,
            "sampling": s.sampling,
            "per": s.per,
            "E[Δw]": inline(s.mean),
            "Cov[Δw]": inline(s.covariance),
        }
        for s in sized
    ]
    emit(rows, "table")


# ---- accumulation -------------------------------------------------------------------------------------


@derive.command()
@form_option
@click.option("--batch-size", "-m", type=int, default=8, show_default=True, help="Batch size m.")
@click.option(
    "--micro-batches",
    "-k",
    type=int,
    default=4,
    show_default=True,
    help="Number k of micro-batches (divides m).",
)
@click.option(
    "--dim", type=int, default=1000, show_default=True, help="Gradient dimension of the numeric check."
)
@seed_option
@format_option()
def accumulation(forms: tuple[str, ...], batch_size: int, micro_batches: int, dim: int, seed: int, fmt: str):
    """k micro-batches of m/k equal one batch of m.

    States the identity for general k and b = m/k, checks it exactly for the given m and k, and measures
    the float rounding difference on random per-example gradients (numpy, float64 and float32).
    """
    import numpy as np
    import sympy as sp

    from batchscale.errors import require
    from batchscale.theory import accumulation as ac

    ac.check_written_sizes(batch_size, micro_batches)  # bad sizes: one-line error before any work
    require(dim >= 1, f"--dim must be >= 1, got {dim}")
    require(
        batch_size * dim <= MAX_CHECK_NUMBERS,
        f"--batch-size x --dim = {batch_size * dim} random numbers: "
        f"at most {MAX_CHECK_NUMBERS} for the float check",
    )
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(batch_size, dim))  # (m, d)
    rows = []
    for form in forms or LOSS_FORMS:
        identity = ac.accumulation_identity(form, batch_size, micro_batches)
        diffs = {}
        for dtype in (np.float64, np.float32):
            full = ac.batch_gradient(grads.astype(dtype), form)
            accumulated = ac.accumulated_gradient(grads.astype(dtype), micro_batches, form)
            diffs[np.dtype(dtype).name] = float(np.max(np.abs(accumulated - full)) / np.max(np.abs(full)))
        rows.append({"identity": identity, "diffs": diffs})
    if fmt == "json":
        emit([_accumulation_row(r["identity"], r["diffs"]) for r in rows], "json")
        return
    for r in rows:
        identity, diffs = r["identity"], r["diffs"]
        if fmt == "latex":
            click.echo(
                f"% {FORM_TEXT[identity.form]}; holds for m={batch_size}, k={micro_batches}: {identity.holds}"
            )
            click.echo(sp.latex(identity.statement))
            continue
        click.echo(f"== {FORM_TEXT[identity.form]}: k micro-batches of b = m/k (m = k*b) ==")
        click.echo(sp.pretty(identity.statement, use_unicode=True, wrap_line=False))
        scale = ac.micro_batch_loss_scale(identity.form, micro_batches)
        click.echo(
            f"exact for m={batch_size}, k={micro_batches}: {'holds' if identity.holds else 'FAILS'}"
            f"  (micro-batch loss scaled by {scale:g} before backward)"
        )
        click.echo(
            "float check, max |accumulated - one batch| / max |one batch| on random gradients "
            f"(d={dim}): float64 {diffs['float64']:.2e}, float32 {diffs['float32']:.2e}\n"
        )


MAX_CHECK_NUMBERS = 20_000_000  # m x d float64 numbers of the float check (160 MB)


def _accumulation_row(identity, diffs: dict[str, float]) -> dict[str, Any]:
    from batchscale.theory.accumulation import micro_batch_loss_scale

    return {
        "form": identity.form,
        "batch_size": identity.batch_size,
        "micro_batches": identity.micro_batches,
        "micro_batch_size": identity.batch_size // identity.micro_batches,
        "micro_batch_loss_scale": micro_batch_loss_scale(identity.form, identity.micro_batches),
        "statement": str(identity.statement),
        "holds": identity.holds,
        "relative_diff_float64": diffs["float64"],
        "relative_diff_float32": diffs["float32"],
    }


# ---- staleness ----------------------------------------------------------------------------------------


@derive.command()
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
