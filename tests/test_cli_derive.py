"""``batchscale derive``: output of every command, JSON parseable by sympy, bad input as exit code 2."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

from batchscale.cli import derive as derive_cli
from batchscale.cli.main import cli

NAMES = {"M", "m", "eta", "eta_base", "G", "Sigma", "n"}
EXACT_TOL = 1e-10


def run(*args: str):
    result = CliRunner().invoke(cli, ["derive", *args])
    assert "Traceback" not in result.output
    return result


def test_cli_choices_are_the_vocabulary():
    """Every --form/--sampling/--per choice list of ``derive`` and its help texts name the shared words."""
    import click

    from batchscale.vocabulary import LOSS_FORMS, PERS, SAMPLINGS

    words = {"forms": LOSS_FORMS, "samplings": SAMPLINGS, "per": PERS, "pers": PERS}
    seen = set()
    for command in derive_cli.derive.commands.values():
        for param in command.params:
            if param.name in words and isinstance(param.type, click.Choice):
                assert tuple(param.type.choices) == words[param.name], (command.name, param.name)
                seen.add(param.name)
    assert {"forms", "samplings"} <= seen and seen & {"per", "pers"}
    texts = derive_cli.options
    assert (tuple(texts.FORM_TEXT), tuple(texts.SAMPLING_TEXT), tuple(texts.PER_TEXT)) == (
        LOSS_FORMS,
        SAMPLINGS,
        PERS,
    )


@pytest.fixture(scope="module")
def moments_json() -> list[dict]:
    result = run("moments", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_moments_json_has_every_case_and_sympifies(moments_json):
    rows = moments_json
    cases = {(r["form"], r["sampling"], r["per"]) for r in rows}
    assert len(rows) == 18 and len(cases) == 18
    for row in rows:
        for field in ("mean", "covariance", "covariance_m1", "covariance_mM", "covariance_Minf", "mean_Minf"):
            expr = sp.sympify(row[field])
            assert {s.name for s in expr.free_symbols} <= NAMES, (field, row[field])
        assert isinstance(row["note"], str) and row["note"]
    reshuffle_epoch = [r for r in rows if r["sampling"] == "reshuffle" and r["per"] == "epoch"]
    assert all(r["covariance"] == "0" and "deterministic" in r["note"] for r in reshuffle_epoch)


def enumerate_moments(grads: np.ndarray, m: int, lr: float, form: str, sampling: str, per: str):
    """Exact moments by listing every batch (sequence) of a tiny dataset; independent of the library."""
    size = len(grads)
    if sampling == "with":
        batches = list(itertools.product(range(size), repeat=m))
    elif sampling == "without":
        batches = list(itertools.combinations(range(size), m))
    else:
        batches = [p[j : j + m] for p in itertools.permutations(range(size)) for j in range(0, size, m)]
    c = lr / m if form == "mean" else lr
    steps = [-c * grads[list(b)].sum(axis=0) for b in batches]
    if per == "epoch":
        s = size // m
        if sampling == "reshuffle":
            perms = list(itertools.permutations(range(size)))
            steps = [-c * grads[list(p)].sum(axis=0) for p in perms]  # all s batches of one partition
        else:
            steps = [sum(t) for t in itertools.product(steps, repeat=s)]
    values = np.array(steps)
    mean = values.mean(axis=0)
    cov = (values - mean).T @ (values - mean) / len(values)
    return (mean / m, cov / m) if per == "example" else (mean, cov)


def test_moments_json_evaluates_to_the_enumeration(moments_json):
    """Evaluate the printed expressions with sympy only and compare with every batch of a tiny dataset."""
    grads = np.random.default_rng(5).normal(size=(4, 2)) + [1.0, -0.5]  # M = 4, d = 2
    size, m, lr = 4, 2, 0.7
    mean_grad = grads.mean(axis=0)
    sigma = (grads - mean_grad).T @ (grads - mean_grad) / size
    for row in moments_json:
        numbers = {"M": size, "m": m, "eta": lr, "eta_base": lr, "G": 1, "Sigma": 1}
        mean_coef = float(sp.sympify(row["mean"]).subs(numbers))
        cov_coef = float(sp.sympify(row["covariance"]).subs(numbers))
        mean, cov = enumerate_moments(grads, m, lr, row["form"], row["sampling"], row["per"])
        case = (row["form"], row["sampling"], row["per"])
        np.testing.assert_allclose(mean_coef * mean_grad, mean, atol=EXACT_TOL, err_msg=str(case))
        np.testing.assert_allclose(cov_coef * sigma, cov, atol=EXACT_TOL, err_msg=str(case))


def test_moments_default_pretty_prints_all_cases_with_limits():
    result = run("moments")
    assert result.exit_code == 0
    assert result.output.count("== ") == 18
    assert result.output.count("Cov limits") == 18
    assert "Σ" in result.output and "η_base" in result.output and "deterministic" in result.output


@pytest.mark.parametrize(
    "args, count",
    [
        (["--form", "sum"], 9),
        (["--sampling", "with", "--sampling", "without"], 12),
        (["--form", "mean", "--sampling", "without", "--per", "step"], 1),
        (["--per", "epoch"], 6),
    ],
    ids=["form", "two-samplings", "one-case", "per-epoch"],
)
def test_moments_filters(args, count):
    rows = json.loads(run("moments", *args, "--format", "json").stdout)
    assert len(rows) == count


def test_moments_latex():
    result = run("moments", "--form", "mean", "--sampling", "without", "--per", "step", "--format", "latex")
    assert result.exit_code == 0
    assert (
        r"\operatorname{Cov}[\Delta w] = \frac{\Sigma \eta^{2} \left(M - m\right)}{m \left(M - 1\right)}"
        in (result.output)
    )


def test_moments_at_sizes_with_partial_last_batch():
    rows = json.loads(run("moments", "-M", "1050", "-m", "100", "--per", "epoch", "--format", "json").stdout)
    by_case = {(r["form"], r["sampling"]): r for r in rows}
    # 10 full batches and one of 50: the mean loss gives the last batch the weight of a full step
    assert sp.sympify(by_case[("mean", "with")]["mean"]) == sp.sympify("-11*G*eta")
    assert sp.sympify(by_case[("sum", "reshuffle")]["covariance"]) == 0
    # reshuffle, mean form: only the short last batch is random, (1/50 - 1/100)^2 * 50 * 1000/1049
    assert sp.sympify(by_case[("mean", "reshuffle")]["covariance"]) == sp.sympify("5*Sigma*eta**2/1049")
    table = run("moments", "-M", "1050", "-m", "100")
    assert table.exit_code == 0 and "3·Σ·η²/25" in table.output


def test_accounting_integers():
    rows = json.loads(run("accounting", "-M", "1050", "-m", "100", "--format", "json").stdout)
    assert (rows[0]["steps_per_epoch"], rows[0]["last_batch_size"]) == (11, 50)
    rows = json.loads(run("accounting", "-M", "1050", "-m", "100", "--drop-last", "--format", "json").stdout)
    assert (rows[0]["steps_per_epoch"], rows[0]["examples_dropped_per_epoch"]) == (10, 50)
    rows = json.loads(
        run("accounting", "-M", "1050", "-m", "1,100,2048", "--epochs", "2", "--format", "json").stdout
    )
    assert [r["updates"] for r in rows] == [2100, 22, 2]
    pretty = run("accounting", "-M", "1050", "-m", "100", "--examples", "2500")
    assert pretty.exit_code == 0 and "26" in pretty.output
    latex = run("accounting", "-M", "1050", "-m", "100", "--format", "latex")
    assert r"\lceil 1050/100 \rceil = 11" in latex.output


def test_accumulation_output():
    rows = json.loads(run("accumulation", "-m", "12", "-k", "3", "--format", "json").stdout)
    assert [r["form"] for r in rows] == ["mean", "sum"]
    assert all(r["holds"] and r["relative_diff_float64"] < 1e-14 for r in rows)
    assert rows[0]["micro_batch_loss_scale"] == pytest.approx(1 / 3)
    pretty = run("accumulation", "--form", "mean")
    assert pretty.exit_code == 0 and "holds" in pretty.output and "float32" in pretty.output


def test_staleness_output():
    rows = json.loads(run("staleness", "--form", "sum", "--order", "3", "--format", "json").stdout)
    series = rows[0]
    assert series["kind"] == "series" and set(series["terms"]) == {"2", "3"}
    assert sp.sympify(series["terms"]["2"]) == sp.sympify("eta_base**2*(H_2*S_1 + H_3*S_1 + H_3*S_2)")
    expectations = {r["sampling"]: r for r in rows[1:]}
    assert set(expectations) == {"with", "without", "reshuffle"}
    assert "C" in expectations["reshuffle"]["mean"] and "C" not in expectations["with"]["mean"]
    pretty = run("staleness")
    assert pretty.exit_code == 0 and "T₂" in pretty.output and "O⎝η_base" in pretty.output
    assert run("staleness", "--format", "latex").exit_code == 0


def test_moments_at_sizes_skips_without_replacement_when_m_exceeds_M():
    """m > M: only sampling with replacement can draw the batch; the other cases are skipped with a note."""
    result = run("moments", "-M", "4", "-m", "5", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["sampling"] for r in rows} == {"with"} and len(rows) == 6
    assert "skipped" in result.stderr and "5 > dataset size 4" in result.stderr
    by_case = {(r["form"], r["per"]): r for r in rows}
    # by hand: a batch of 5 drawn with replacement, mean loss: Cov = eta^2 Sigma / 5
    assert sp.sympify(by_case[("mean", "step")]["covariance"]) == sp.sympify("Sigma*eta**2/5")
    # an epoch of 4 examples is one batch of 4 (ceil(4/5) = 1 step, the last batch holds M = 4)
    assert sp.sympify(by_case[("sum", "epoch")]["mean"]) == sp.sympify("-4*G*eta_base")


STALENESS_NAMES = NAMES | {"H", "C", "S", "g", "j", "k"}


def sympify_names(text: str) -> set[str]:
    """Names of the free symbols of ``sympify(text)``; indexed objects count by their base name."""
    expr = sp.sympify(text)
    names = set()
    for s in expr.free_symbols:
        names.add(s.base.label.name if isinstance(s, sp.Indexed) else s.name)
    return names


def test_staleness_json_sympifies_with_the_named_symbols():
    rows = json.loads(run("staleness", "--steps", "3", "--order", "3", "--format", "json").stdout)
    pattern = {f"{b}_{i}" for b in "HSg" for i in range(1, 4)}
    for row in rows:
        assert "sympify" in row["note"]
        fields = ["leading_term", "series", "exact"] if row["kind"] == "series" else ["mean", "covariance"]
        texts = [row[f] for f in fields] + list(row.get("terms", {}).values())
        for text in texts:
            assert sympify_names(text) <= STALENESS_NAMES | pattern, text


@pytest.mark.parametrize("form, grad", [("sum", "S"), ("mean", "g")])
def test_staleness_json_leading_term_written_out_equals_the_pairs(form, grad):
    """The general-n leading term, read back with sympify and summed by hand at n = 3, is the term T_2."""
    (series,) = [
        r
        for r in json.loads(run("staleness", "--form", form, "--format", "json").stdout)
        if r["kind"] == "series"
    ]
    lead = sp.sympify(series["leading_term"])
    (total,) = lead.atoms(sp.Sum)
    (k, k_lo, k_hi), (j, j_lo, j_hi) = total.limits
    n3 = {sp.Symbol("n"): 3}
    by_hand = sp.Add(
        *(
            total.function.subs({j: jv, k: kv})
            for jv in range(int(j_lo), int(j_hi.subs(n3)) + 1)
            for kv in range(int(k_lo), int(k_hi.subs(j, jv)) + 1)
        )
    )
    lr = sp.Symbol("eta_base" if form == "sum" else "eta")
    flat = {sp.Indexed(base, i): sp.Symbol(f"{base}_{i}") for base in ("H", grad) for i in range(1, 4)}
    written = (lead / total * by_hand).xreplace(flat)
    assert sp.expand(written - sp.sympify(series["terms"]["2"])) == 0
    assert written.coeff(lr, 2) != 0


def test_moments_pretty_and_latex_show_mean_limits_where_the_mean_depends_on_sizes():
    pretty = run("moments")
    # the mean depends on m or M in 12 of the 18 cases: every sum-form step, every mean-form example,
    # and every epoch
    assert pretty.output.count("E limits") == 12
    latex = run("moments", "--form", "mean", "--sampling", "with", "--per", "example", "--format", "latex")
    assert r"\mathbb{E}[\Delta w]\big|_{m=M} = - \frac{G \eta}{M}" in latex.output


BAD = [
    (["accounting", "-M", "1050", "-m", "0"], "batch_size must be a positive integer, got 0"),
    (["accounting", "-M", "1050", "--batch-size=-5"], "got -5"),
    (["accounting", "-M", "0", "-m", "10"], "dataset_size must be a positive integer, got 0"),
    (["accounting", "-M", "10", "-m", "20", "--drop-last"], "leaves no batch"),
    (["accounting", "-M", "10", "-m", "x"], "'x' is not an integer"),
    (["moments", "-M", "4", "-m", "5", "--sampling", "without"], "needs sampling with replacement"),
    (["moments", "-M", "4", "-m", "0"], "batch_size must be >= 1"),
    (["moments", "-M", "0", "-m", "1"], "dataset_size must be >= 1"),
    (["moments", "-M", "4"], "--dataset-size and --batch-size go together"),
    (["moments", "--drop-last"], "--drop-last needs --dataset-size and --batch-size"),
    (["moments", "--form", "avg"], "'avg' is not one of"),
    (["moments", "--sampling", "replace"], "'replace' is not one of"),
    (["moments", "--per", "batch"], "'batch' is not one of"),
    (["staleness", "--order", "0"], "order must be a positive integer, got 0"),
    (["staleness", "--steps", "0"], "steps must be a positive integer, got 0"),
    (["accumulation", "-m", "8", "-k", "3"], "micro_batches 3 does not divide batch_size 8"),
    (["accumulation", "-m", "0"], "batch_size must be >= 1"),
    (["accumulation", "--dim", "0"], "--dim must be >= 1, got 0"),
    (["accumulation", "--dim", "1000000000"], "at most 20000000 for the float check"),
    (["accumulation", "-m", "1000000", "-k", "2"], "too large to write the sums out (at most 20000 terms)"),
    (["staleness", "--plot", "curve.txt"], "must end in .png, .pdf, .svg"),
]


@pytest.mark.parametrize("args, fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exit_code_2_one_line(args, fragment):
    result = run(*args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and fragment in errors[0], result.output


def test_staleness_plot_and_curve(tmp_path):
    path = tmp_path / "staleness.png"
    result = run(
        "staleness",
        "--form",
        "sum",
        "--sampling",
        "with",
        "--steps",
        "4",
        "--plot",
        str(path),
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    assert path.stat().st_size > 10_000
    curve = [r for r in json.loads(result.stdout) if r["kind"] == "curve"]
    assert len(curve) == 12
    small = curve[0]  # eta n lambda_max = 1e-3: the leading term is the difference to 1e-4 relative
    assert small["lr_n_lambda_max"] == pytest.approx(1e-3)
    assert small["leading_remainder"] < 1e-4 * small["difference"]
