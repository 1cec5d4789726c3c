"""Piecewise-constant learning-rate schedules in the NQM (``predict nqm --schedule pwc:K``) and Zhang et al.'s
notebook binning (``--binning zhang2019``), each against an independent computation: a plain step loop, a
Monte Carlo of the stochastic iteration, a brute-force grid over 2-piece schedules, the constant-rate
search, and the authors' notebook's own numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from batchscale.errors import InputError
from batchscale.theory import nqm
from batchscale.theory.nqm.schedule import (
    optimal_schedule_steps,
    parse_schedule,
    schedule_loss,
    schedule_second_moments,
)
from batchscale.theory.spectra import make_spectrum, power_law_spectrum, zhang2019_bins

MC_SAMPLES = 40_000
MC_RTOL = 3e-2  # ~5 standard errors of a mean of MC_SAMPLES weighted squared Gaussians
TINY = make_spectrum([1.0, 0.3, 0.05, 0.01])  # initial loss 0.68
TINY_BATCH, TINY_TARGET = 2.0, 0.05


def constant_answer(spectrum, batch, target, precond_power=0.0):
    curve = nqm.tune_steps(spectrum, [batch], target, lr_grid=nqm.decade_grid(-3, 0.3, 60),
                           precond_power=precond_power)
    return int(curve.steps[0]), float(curve.learning_rate[0]), int(curve.steps_lower_bound[0])


def search(spectrum, batch, target, pieces, precond_power=0.0):
    steps, lr, bound = constant_answer(spectrum, batch, target, precond_power)
    return optimal_schedule_steps(spectrum, batch, target, pieces, constant_steps=steps,
                                  constant_learning_rate=lr, precond_power=precond_power, lower_bound=bound)


@pytest.mark.parametrize("precond_power", [0.0, 0.5])
def test_composed_closed_form_equals_a_plain_step_loop(precond_power):
    rates, lengths = [0.9, 0.3, 0.05], [7, 0, 23]
    h, c = TINY.curvature, TINY.noise
    s = np.ones_like(h)
    for lr, k in zip(rates, lengths, strict=True):
        e = lr * h ** (-precond_power)
        for _ in range(k):  # E[x^2] <- (1 - e h)^2 E[x^2] + e^2 c / B
            s = (1 - e * h) ** 2 * s + e**2 * c / TINY_BATCH
    got = schedule_second_moments(TINY, TINY_BATCH, rates, lengths, precond_power)
    np.testing.assert_allclose(got, s, rtol=1e-12)
    assert schedule_loss(TINY, TINY_BATCH, rates, lengths, precond_power) == pytest.approx(
        0.5 * float(np.sum(h * s)), rel=1e-12)


def test_found_schedule_reaches_the_target_in_a_monte_carlo_of_sgd():
    found = search(TINY, TINY_BATCH, TINY_TARGET, 3)
    h, c = TINY.curvature, TINY.noise
    rng = np.random.default_rng(0)
    x = rng.standard_normal((MC_SAMPLES, h.size))  # (S, d), E[x0^2] = 1
    for lr, k in zip(found.schedule.learning_rate, found.schedule.steps, strict=True):
        for _ in range(k):
            noise = rng.standard_normal(x.shape) * np.sqrt(c / TINY_BATCH)  # (S, d)
            x = x - lr * (h * x + noise)
    simulated = float(np.mean(0.5 * np.sum(h * x**2, axis=1)))
    assert simulated == pytest.approx(found.schedule.loss, rel=MC_RTOL)
    assert found.schedule.loss <= TINY_TARGET
    assert sum(found.schedule.steps) == found.steps


def brute_force_two_pieces(spectrum, batch, target, upto):
    """Fewest T such that some (k1, eta1, eta2) on a 160-point log grid reaches the target (plain numpy)."""
    h, c = spectrum.curvature, spectrum.noise
    etas = np.geomspace(1e-3, 2 * (1 - 1e-9) / h.max(), 160)

    def after(s, e, k):
        a, star = (1 - e * h) ** 2, e * c / (batch * h * (2 - e * h))
        return a**k * (s - star) + star

    for total in range(1, upto + 1):
        k1 = np.arange(total + 1)[:, None, None, None]
        first = after(np.ones(h.size), etas[None, :, None, None], k1)  # (k1, eta1, 1, d)
        end = after(first, etas[None, None, :, None], total - k1)  # (k1, eta1, eta2, d)
        if float((0.5 * (end * h).sum(-1)).min()) <= target:
            return total
    return None


def test_two_pieces_match_a_brute_force_grid_over_schedules():
    found = search(TINY, TINY_BATCH, TINY_TARGET, 2)
    brute = brute_force_two_pieces(TINY, TINY_BATCH, TINY_TARGET, found.constant_steps)
    assert brute is not None
    # the grid is a subset of the continuous rates: it can never beat the search by more than rounding of
    # the rates; the search must find the grid's answer
    assert found.steps == brute


@pytest.mark.parametrize("precond_power", [0.0, 0.5])
def test_one_piece_is_the_constant_rate_answer(precond_power):
    for batch in (1.0, 8.0, 64.0):
        steps, _, _ = constant_answer(TINY, batch, TINY_TARGET, precond_power)
        assert search(TINY, batch, TINY_TARGET, 1, precond_power).steps == steps


def test_more_pieces_never_need_more_steps_and_never_beat_the_information_bound():
    found = [search(TINY, TINY_BATCH, TINY_TARGET, k) for k in (1, 2, 3, 4)]
    steps = [f.steps for f in found]
    assert steps == sorted(steps, reverse=True)
    assert steps[1] < steps[0]  # at small batch a schedule helps (Zhang et al.)
    assert all(s >= found[0].lower_bound for s in steps)


def test_schedules_help_little_in_the_deterministic_regime():
    small, large = (search(TINY, b, TINY_TARGET, 3) for b in (1.0, 1e9))
    assert small.steps / small.constant_steps < 0.6
    assert large.steps / large.constant_steps > 0.6


def test_joining_pieces_of_the_same_rate_keeps_the_loss():
    from batchscale.theory.nqm.schedule import PiecewiseSchedule, _merged

    rates, lengths = (0.9, 0.9, 0.3, 0.3, 0.9), (5, 7, 3, 4, 2)
    loss = schedule_loss(TINY, TINY_BATCH, rates, lengths)
    joined = _merged(PiecewiseSchedule(lengths, rates, loss))
    assert joined.steps == (12, 7, 2) and joined.learning_rate == (0.9, 0.3, 0.9)
    again = schedule_loss(TINY, TINY_BATCH, joined.learning_rate, joined.steps)
    assert again == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("text,pieces", [("constant", None), ("pwc:1", 1), ("pwc:10", 10), (" pwc:3 ", 3)])
def test_parse_schedule(text, pieces):
    assert parse_schedule(text) == pieces


@pytest.mark.parametrize("text", ["pwc", "pwc:0", "pwc:-1", "pwc:x", "linear", "pwc:101", ""])
def test_bad_schedules_are_input_errors(text):
    with pytest.raises(InputError):
        parse_schedule(text)


CLI_SMALL = ["predict", "nqm", "--dim", "200", "--bins", "20", "--lr-grid", "-4:0.5:30", "--target", "0.05"]


def test_cli_schedule_rows_carry_a_schedule_reaching_the_target():
    result = CliRunner().invoke(
        __import__("batchscale.cli.main", fromlist=["cli"]).cli,
        [*CLI_SMALL, "--batch-sizes", "4,4096", "--schedule", "pwc:2", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    for row in rows:
        pieces = row["schedule"]
        assert 1 <= len(pieces) <= 2 and all(p["steps"] >= 1 for p in pieces)
        assert all(a["learning_rate"] != b["learning_rate"] for a, b in zip(pieces, pieces[1:], strict=False))
        assert sum(p["steps"] for p in pieces) == row["steps"] <= row["constant_steps"]
        assert row["learning_rate"] == pieces[0]["learning_rate"]
        assert row["final_learning_rate"] == pieces[-1]["learning_rate"]
        assert row["loss_at_steps"] <= 0.05
        assert row["steps"] >= row["steps_lower_bound"]


@pytest.mark.parametrize("args,words", [
    (["--schedule", "pwc:2", "--optimizer", "momentum"], "sgd and precond only"),
    (["--schedule", "pwc:2", "--optimizer", "ema"], "sgd and precond only"),
    (["--schedule", "pwc:0"], "1 to 100 pieces"),
    (["--binning", "zhang2019", "--bins", "0"], "--bins 0"),
])
def test_cli_bad_combinations_are_one_line_errors(args, words):
    from batchscale.cli.main import cli

    result = CliRunner().invoke(cli, [*CLI_SMALL, "--batch-sizes", "4", *args])
    assert result.exit_code == 2
    assert words in result.output
    assert "Traceback" not in result.output


def test_zhang2019_bins_round_every_eigenvalue_down_to_a_bin_value():
    h = 1.0 / np.arange(1, 501)
    spectrum = zhang2019_bins(make_spectrum(h, noise=3 * h), 20)
    values = np.geomspace(h.max(), h.min(), 20)
    expected: dict[float, int] = {}
    for hi in h:  # plain loop: the largest bin value not above h_i
        v = max(b for b in values if b <= hi)
        expected[v] = expected.get(v, 0) + 1
    assert sorted(expected) == list(spectrum.curvature)
    assert [expected[v] for v in spectrum.curvature] == list(spectrum.counts)
    np.testing.assert_allclose(spectrum.noise, 3 * spectrum.curvature, rtol=1e-12)  # C = 3H stays C = 3H
    assert np.all(spectrum.init_sq == 1.0)
    assert spectrum.initial_loss() < 0.5 * h.sum()  # rounding down lowers every curvature


# The authors' notebook (github.com/gd-zhang/noisy-quadratic-model, nqm.ipynb at commit be5db10): its
# functions `toy_problem(10000, 100)` and `optimal_ttl(h, h / B, 1, 0.01, counts, prec=1 / h**p,
# return_lrate=True)` (learning rates np.logspace(-5, 0.5, 100)) run here with numpy 2.4 gave, for p = 0
# and p = 0.5, (batch size, steps, learning rate):
NOTEBOOK = {
    0.0: [(4, 1507367, 0.01467799267622069), (256, 25880, 0.7742636826811262),
          (4096, 8117, 1.8957356524063753), (1048576, 7268, 1.8957356524063753)],
    0.5: [(4, 345591, 0.0006812920690579609), (256, 5421, 0.046415888336127774),
          (4096, 342, 0.6812920690579608), (1048576, 84, 1.8957356524063753)],
}


def notebook_count(spectrum, batch, lr, target, precond_power, regulariser):
    """The notebook's count: the last step whose loss is still >= target, by bisection, with its stationary
    variance e^2 c / (B (1 - a + regulariser)) (plain numpy, no batchscale)."""
    h, n, c = spectrum.curvature, spectrum.counts, spectrum.noise
    e = lr * h ** (-precond_power)
    a = (1 - e * h) ** 2
    star = e**2 * c / batch / (1 - a + regulariser)

    def loss(t):
        return 0.5 * float(np.sum(h * n * (star + a**t * (1 - star))))

    lo, hi = 0, 10**8
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if loss(mid) < target else (mid, hi)
    return lo


@pytest.mark.parametrize("precond_power", [0.0, 0.5])
def test_zhang2019_binning_reproduces_the_notebook_step_for_step(precond_power):
    spectrum = power_law_spectrum(10_000, 1.0, bins=100, binning="zhang2019")
    rows = NOTEBOOK[precond_power]
    curve = nqm.tune_steps(spectrum, [r[0] for r in rows], 0.01, lr_grid=nqm.decade_grid(-5, 0.5, 100),
                           search="grid", precond_power=precond_power)
    for (batch, steps, lr), ours, our_lr in zip(rows, curve.steps, curve.learning_rate, strict=True):
        assert our_lr == lr  # the same grid point wins at every batch size
        # the notebook's count with its 1e-8 regulariser is its published number...
        assert notebook_count(spectrum, batch, lr, 0.01, precond_power, 1e-8) == steps
        # ...and without it, the last step above the target is ours minus one (we count the first at or below)
        assert notebook_count(spectrum, batch, lr, 0.01, precond_power, 0.0) == ours - 1
        assert 0 <= ours - 1 - steps <= 1e-3 * steps  # the regulariser's whole effect: below 0.1 %


@pytest.mark.slow
def test_default_problem_schedules_one_piece_is_constant_and_more_pieces_help():
    """The paper's problem (d = 1e4, 100 bins, target 0.01): pwc:1 equals the tuned constant rate, and
    2, 5, 10 pieces never need more steps, at small, middle and large batch."""
    spectrum = power_law_spectrum(10_000, 1.0, bins=100)
    batches = [16, 1024, 65536]
    curve = nqm.tune_steps(spectrum, batches, 0.01, lr_grid=nqm.decade_grid(-5, 0.5, 100))
    for i, batch in enumerate(batches):
        found = [optimal_schedule_steps(spectrum, batch, 0.01, k, constant_steps=int(curve.steps[i]),
                                        constant_learning_rate=float(curve.learning_rate[i]),
                                        lower_bound=int(curve.steps_lower_bound[i])) for k in (1, 2, 5, 10)]
        steps = [f.steps for f in found]
        assert steps[0] == int(curve.steps[i])
        assert steps == sorted(steps, reverse=True)
        assert steps[-1] >= int(curve.steps_lower_bound[i])
        assert all(f.schedule.loss <= 0.01 for f in found)
