"""``batchscale advise --check``: the advised critical batch against the verification sweep's.

Runs (or reuses from its store) the seeded quick steps-to-target sweep that the ``regimes`` and
``noise-scale`` claims share (:func:`batchscale.verify.steps_sweep.run_sweep`, ``--quick``: batch 4..256,
SGD and momentum 0.9, the learning rate tuned per batch size, 3 seeds, target 10 % test error) on the
advised workload, and compares advise's B_crit (B_simple of the short run) with SGD's fitted critical
batch E_min/S_min (McCandlish et al. 2018) and its seed-bootstrap interval. The row is the ``noise-scale``
claim's ``b_simple_over_b_crit`` (ratio predicted 1, its declared tolerance a factor 10: McCandlish et
al. find B_simple within about an order of magnitude of B_crit): the ratio's interval
[advised_low / measured_high, advised_high / measured_low] inside the band passes, wholly outside fails,
across an edge is inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from batchscale.verify.rows import Row, make_row

CLAIM, QUANTITY = "noise-scale", "b_simple_over_b_crit"
DEFINITION = "mccandlish"


def check_row(advised: float, advised_interval: tuple[float, float], measured: Any, workload: str,
              config: dict[str, Any], n_seeds: int) -> Row:
    """Advised B_crit (with its interval) over the sweep's ``measured`` critical batch (an
    :class:`batchscale.theory.regimes.Estimate`), judged under the declared tolerance."""
    low, high = advised_interval
    note = (f"advised B_crit {advised:.4g} [{low:.4g}, {high:.4g}] vs the sweep's SGD critical batch "
            f"({DEFINITION}, E_min/S_min) {measured.text()}")
    if measured.value is None or not measured.value > 0:
        return make_row(CLAIM, QUANTITY, workload, 1.0, math.nan, n_seeds=n_seeds, config=config, note=note)
    ratio_low = 0.0 if measured.high is None else low / measured.high
    ratio_high = math.inf if measured.low is None or measured.low <= 0 else high / measured.low
    return make_row(CLAIM, QUANTITY, workload, 1.0, advised / measured.value, ci=(ratio_low, ratio_high),
                    n_seeds=n_seeds, config=config, note=note)


def check_advice(advice: Any, opts: Any, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the sweep for ``opts`` (:class:`batchscale.verify.advise.AdviseOptions`) and judge ``advice``:
    ``{"row": Row, "measured": Estimate, "sweep": its config, "store": path}``."""
    from batchscale.verify.registry import resolve
    from batchscale.verify.steps_sweep import run_sweep

    vopts = resolve(workload=opts.workload, workload_options=dict(opts.workload_options), seed=opts.seed,
                    quick=True, db=opts.db, device=opts.device, progress=progress)
    sweep = run_sweep(vopts)
    measured = sweep.curves["sgd"].analysis.critical[DEFINITION]
    config = vopts.config("advise-check", opts.workload, sweep=sweep.config, store=sweep.store)
    row = check_row(advice.critical_batch_size, advice.interval, measured, opts.workload, config,
                    sweep.n_seeds)
    return {"row": row, "measured": measured, "sweep": sweep.config, "store": sweep.store}


def check_text(check: dict[str, Any]) -> str:
    """Two lines: predicted vs measured critical batch, and the ratio with its tolerance and verdict."""
    row, measured = check["row"], check["measured"]
    ratio = "-" if not math.isfinite(row.measured) else (
        f"{row.measured:.3g} [{row.ci_low:.3g}, {row.ci_high:.3g}]")
    sweep = check["sweep"]
    return (f"check: measured critical batch {measured.text()} (SGD, E_min/S_min, {len(sweep['seeds'])}-seed "
            f"steps-to-target sweep of {sweep['workload']}, batch {sweep['batch_sizes'][0]}.."
            f"{sweep['batch_sizes'][-1]}, target {sweep['target']:g} test {sweep['target_metric']})\n"
            f"check: advised / measured = {ratio}; tolerance factor {row.tolerance:g} "
            f"({CLAIM}/{QUANTITY}); verdict {row.verdict}")


__all__ = ["check_advice", "check_row", "check_text"]
