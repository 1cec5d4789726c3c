"""The tolerance table: every (claim, quantity) with its tolerance, kind and reason, declared before any run.

``docs/claims.md`` mirrors this table (``tests/test_verify_docs.py`` checks they are equal). A tolerance
is never widened to make a row pass: a row that fails is a result, kept and explained.
Standard library only.
"""

from __future__ import annotations

from typing import NamedTuple

from batchscale.errors import require


class Tolerance(NamedTuple):
    """``value`` of ``kind`` (absolute | relative | factor | z-score) and why it is that wide."""

    value: float
    kind: str
    why: str


MC = "Monte Carlo over many draws; 4 standard errors keep a false fail below 1e-4 per row"

TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("accounting", "steps_per_epoch"): Tolerance(
        0, "absolute", "an integer count: a real loader must match exactly"
    ),
    ("accounting", "last_batch_size"): Tolerance(
        0, "absolute", "an integer count: a real loader must match exactly"
    ),
    ("accounting", "last_batch_trace_cov"): Tolerance(4, "z-score", MC),
    ("accounting", "full_batch_trace_cov"): Tolerance(4, "z-score", MC),
    ("moments", "mean_along_-G"): Tolerance(4, "z-score", MC + ", plus a float-rounding floor"),
    ("moments", "trace_cov"): Tolerance(4, "z-score", MC + ", plus a float-rounding floor"),
    ("moments", "mean_all_directions"): Tolerance(
        4, "z-score", "Hotelling T^2 of the update's mean on 16 random directions, as its equivalent normal "
        "deviate: the same 6.3e-5 false-fail level as 4 standard errors"
    ),
    ("accumulation", "relative_difference"): Tolerance(
        1e-5,
        "absolute",
        "float32 summation in a different order: rounding of ~1e-7 per term over <= 1e2 terms",
    ),
    ("accumulation", "peak_bytes"): Tolerance(
        0.1,
        "relative",
        "the allocation peak of one micro-batch, a fixed part plus a part per example fitted on the two "
        "smallest micro-batches; 10% leaves room for the allocator's rounding and workspace buffers",
    ),
    ("staleness", "gap_slope"): Tolerance(
        0.1,
        "absolute",
        "log-log slope over a 16x range of lr with eta*n*lambda_max <= 0.004: third-order terms bias it by "
        "< 0.01; larger steps can cross a ReLU kink, where the expansion stops holding",
    ),
    ("staleness", "gap_over_leading"): Tolerance(
        0.05, "relative", "at the smallest lr the terms beyond second order are below 1% of the gap"
    ),
    ("stability", "max_stable_lr"): Tolerance(
        1.5,
        "factor",
        "training diverges at the almost-sure boundary, at or above the mean-square one the "
        "theory gives; a finite run and a grid of learning rates add a few percent",
    ),
    ("stability", "max_stable_lr_network"): Tolerance(
        2,
        "factor",
        "the local quadratic model at the initial point, along the top eigenvector only: training can "
        "leave an unstable region before it blows up (the catapult of Lewkowycz et al. 2020, arXiv "
        "2003.02218), so the boundary lies at or above it; finite runs and bisection add a few percent",
    ),
    ("stability", "max_stable_base_lr_slope"): Tolerance(
        0.25,
        "absolute",
        "a log-log slope over >= 2.5 decades of m from boundaries bracketed to <= 19%: the brackets move it "
        "by < 0.1; the model's shape in m, not its scale, is the claim",
    ),
    ("stability", "base_lr_range_narrows"): Tolerance(
        0,
        "absolute",
        "one-sided (Masters & Luschi): the slope of the largest stable base rate eta_max/m in m must have "
        "its 95% interval below 0; above 0 fails, an interval holding 0 is inconclusive",
    ),
    ("saddle", "escape_steps"): Tolerance(
        0.15,
        "relative",
        "the linearised prediction ignores the quartic term (<1% at the threshold) and the "
        "first steps' transient",
    ),
    ("saddle", "escaped_fraction"): Tolerance(
        0, "absolute", "with noise, every run must leave the saddle within ten times the predicted steps"
    ),
    ("saddle", "full_batch_escaped_fraction"): Tolerance(
        0, "absolute", "the full-batch gradient at the saddle is exactly zero: no run may escape"
    ),
    ("cosine", "mean_cosine"): Tolerance(4, "z-score", MC),
    ("regimes", "critical_batch"): Tolerance(
        2, "factor", "a batch size read off a fitted S(B) over a grid of powers of two"
    ),
    ("regimes", "momentum_over_sgd_critical_batch"): Tolerance(
        1,
        "factor",
        "one-sided: momentum's 95% interval must lie wholly above SGD's (the ratio's interval above 1); "
        "overlapping intervals are inconclusive, SGD's interval above momentum's fails",
    ),
    ("regimes", "regime_order"): Tolerance(
        0,
        "absolute",
        "a yes/no read off labels each decided by the bootstrap interval of the fitted speed-up: "
        "undecided labels make it inconclusive, never a pass",
    ),
    ("regimes", "lr_slope"): Tolerance(
        0.3,
        "absolute",
        "each seed's best rate is read off a grid of rates a factor <= 2 apart: over a half of the grid "
        "(an 8x range of B) one grid step in one rate moves the slope by up to ~0.2; the model's "
        "B_noise = B_crit holds only to a factor of a few",
    ),
    ("noise-scale", "b_simple_over_b_crit"): Tolerance(
        10, "factor", "McCandlish et al. find B_simple within about an order of magnitude of B_crit"
    ),
    ("noise-scale", "tradeoff_product"): Tolerance(
        4, "z-score", "(S/S_min - 1)(E/E_min - 1) = 1 within its seeds' error"
    ),
    ("nqm-transfer", "critical_batch"): Tolerance(
        2, "factor", "a quadratic model of a network: its curve's shape, not its scale, is the claim"
    ),
    ("nqm-transfer", "steps_shape"): Tolerance(
        2,
        "factor",
        "S(B)/S_min = 1 + B_crit/B on the fitted curve, between 1 and B_crit/B + 1: a factor-2 error in "
        "B_crit moves it by at most a factor 2, so the shape is held to the critical batch's factor",
    ),
    ("sharpness", "sharpness_ratio_large_over_small"): Tolerance(
        10,
        "factor",
        "a direction, not a value: predicted 10 with factor 10, so the band [1, 100] accepts any sharper "
        "large-batch solution up to 100x and fails a flatter one (Keskar et al. report a direction)",
    ),
    ("sharpness", "best_batch_size"): Tolerance(
        4,
        "factor",
        "Masters & Luschi's range: predicted 8 with factor 4 is the band [2, 32] of batch sizes; the "
        "measured interval must lie inside it",
    ),
}


def tolerance(claim: str, quantity: str) -> Tolerance:
    """The declared tolerance of ``quantity`` in ``claim`` (an InputError if none was declared)."""
    key = (claim, quantity)
    require(key in TOLERANCES, f"no tolerance declared for {claim}/{quantity}")
    return TOLERANCES[key]


def table_rows() -> list[dict[str, str]]:
    """The table as rows (claim, quantity, tolerance, kind, why), in declaration order."""
    return [
        {"claim": c, "quantity": q, "tolerance": f"{t.value:g}", "kind": t.kind, "why": t.why}
        for (c, q), t in TOLERANCES.items()
    ]
