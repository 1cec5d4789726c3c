"""``batchscale derive moments``: mean and covariance of one update, every form x sampling x normalisation."""

from __future__ import annotations

import textwrap

import click

from batchscale.cli.common import counted, emit, progress
from batchscale.cli.derive.options import (
    FORM_TEXT,
    PER_TEXT,
    SAMPLING_TEXT,
    form_option,
    format_option,
    inline,
    pretty_equation,
    sampling_option,
)
from batchscale.vocabulary import LOSS_FORMS, PERS, SAMPLINGS

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


@click.command()
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
