"""What a sweep chain yields: a :class:`Round` of trials, and the :data:`Chain` generator type."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from batchscale.empirical.trials import TrainConfig, TrialResult


@dataclass(frozen=True)
class Round:
    """Trials a chain needs before it can decide its next step.

    ``prune``: let the engine stop trials far behind the best of their group (when the sweep allows it).
    ``redo_pruned``: stored rows with status ``pruned`` do not count as done (retried without pruning).
    """

    configs: tuple[TrainConfig, ...]
    prune: bool = True
    redo_pruned: bool = False


Chain = Generator[Round, dict[str, TrialResult], list[dict[str, Any]]]
