"""What fixes a trial's numbers besides its :class:`~batchscale.empirical.trials.TrainConfig`: the training
protocol's constants and the identity of its data. Both enter ``TrainConfig.trial_id()``, so a store can
never mix results of different protocols or data silently: a changed protocol gives new ids, and the
trials run again.

The constants are used by :mod:`batchscale.empirical.train` (the protocol is described in
``docs/training.md``). :data:`PROTOCOL_VERSION` rises whenever the protocol's code changes in a way its
constants do not show (a changed pruning rule, a changed evaluation schedule). Standard library only, so
ids are computed without torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = 2  # 2: pruning compares a trial only with trials of its own seed
DIVERGENCE_FACTOR = 10.0  # diverged when the test loss exceeds this multiple of its initial value
EVAL_GROWTH = 1.1  # evaluations at steps 0, 1, 2, ..., 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, ...
REFINE_FRACTION = 0.01  # re-evaluate every ceil(1% of the step) when resolving a crossing
PRUNE_MIN_STEP = 20  # no pruning before this step
PRUNE_MARGIN = 0.03  # pruning needs a lead larger than this (error on 800 test examples: sd 0.014 at 0.2)
PRUNE_NEAR = 0.1  # ... and a leader whose error is within this of the target (docs/training.md)
PRUNE_NEAR_LOSS = 0.25  # ... or, for a loss target, whose loss is within this fraction of the target

# Built-in workloads that read files under their ``data_dir`` option (``needs_files`` in the workload
# registry; tests/test_trials.py checks the two agree). A user's file-based workload puts its data in
# the id by passing ``data_dir`` explicitly.
FILE_WORKLOADS: tuple[str, ...] = ("mnist-cnn", "fashion-mnist-cnn", "cifar10-resnet8")


def protocol_identity() -> dict[str, Any]:
    """The protocol's version and constants, read at call time (a changed constant changes the id)."""
    return {
        "version": PROTOCOL_VERSION,
        "divergence_factor": DIVERGENCE_FACTOR,
        "eval_growth": EVAL_GROWTH,
        "refine_fraction": REFINE_FRACTION,
        "prune_min_step": PRUNE_MIN_STEP,
        "prune_margin": PRUNE_MARGIN,
        "prune_near": PRUNE_NEAR,
        "prune_near_loss": PRUNE_NEAR_LOSS,
    }


def default_data_dir() -> Path:
    """``$BATCHSCALE_DATA_DIR`` if set, else the user data directory of batchscale."""
    env = os.environ.get("BATCHSCALE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("batchscale"))


def data_identity(workload: str, options: Mapping[str, Any]) -> str | None:
    """Where a file-based workload reads its data: the absolute ``data_dir`` (the option if given, else
    :func:`default_data_dir`); None for generated or bundled data, which ``options`` and the data seed
    already fix. The path, not the files' contents, is hashed (hashing CIFAR-10 per id would cost
    seconds): replacing the files in place is not detected."""
    if "data_dir" not in options and workload not in FILE_WORKLOADS:
        return None
    given = options.get("data_dir")
    root = default_data_dir() if given is None else Path(str(given)).expanduser()
    return str(root.resolve())


__all__ = [
    "DIVERGENCE_FACTOR",
    "EVAL_GROWTH",
    "FILE_WORKLOADS",
    "PROTOCOL_VERSION",
    "PRUNE_MARGIN",
    "PRUNE_MIN_STEP",
    "PRUNE_NEAR",
    "PRUNE_NEAR_LOSS",
    "REFINE_FRACTION",
    "data_identity",
    "default_data_dir",
    "protocol_identity",
]
