"""Where the spectra are measured moves the NQM's prediction: ``nqm-transfer``'s model built from the
spectra at step 0, half-way (the claim's choice, fixed before any run) and at S_ref, per seed.

Not a timing: a sensitivity analysis of docs/claims.md, section nqm-transfer. Prints one line per
(seed, step): the top Hessian eigenvalue, tr(Sigma), and the model's McCandlish critical batch per
optimizer, beside the sweep's. Uses the quick sweep's store (``--db``, default batchscale-out/runs.sqlite).

    python benchmarks/nqm_transfer_checkpoints.py [--db FILE] [--seeds 3]
"""

from __future__ import annotations

import argparse
import math

from batchscale.verify.nqm_transfer import build_model, measuring_point, predict, reference_run
from batchscale.verify.registry import resolve
from batchscale.verify.steps_sweep import run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    sweep = run_sweep(resolve(quick=True, db=args.db))
    measured = {n: c.analysis.critical["mccandlish"].text() for n, c in sweep.curves.items()}
    print(f"sweep (mccandlish): {measured}")
    batch, _, steps = measuring_point(sweep.rows, 16)
    for seed in range(args.seeds):
        ref = reference_run(resolve(quick=True, db=args.db, seed=seed), sweep, also_at=(0, steps))
        for step, spec in sorted(ref["spectra"].items()):
            model, target = build_model({**ref, "spectrum": spec})
            curves = predict(model, target, sweep.curves["sgd"].batch_sizes, ref["n_train"],
                             float(sweep.config["momentum"]))
            where = "half-way (the claim)" if step == math.ceil(steps / 2) else f"step {step}"
            crit = ", ".join(f"{n} {c.analysis.critical['mccandlish'].value:.3g}" for n, c in curves.items())
            print(f"seed {seed}, batch {batch}, {where}: lambda_1 {spec['top_curvature'][0]:.3g}, "
                  f"tr(Sigma) {spec['trace_sigma']:.3g}; model B_crit {crit}", flush=True)


if __name__ == "__main__":
    main()
