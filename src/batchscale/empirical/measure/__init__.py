"""Measuring a real network at its seeded initial point or along training: what ``batchscale measure`` runs.

Every measurement goes through :func:`measure_along_training`: it builds nothing itself, trains the
model of a :class:`Setup` with the training engine's plain loop (:class:`~batchscale.empirical.train.
SingleRun`, mean-loss SGD, reshuffled each epoch, last partial batch dropped) and, at step 0, every
``every`` steps and at the end (or only at the end), calls the measurement. One function per command
(:func:`noise_scale_along_training`, :func:`moments_along_training`, :func:`cosine_along_training`,
:func:`accumulation_after_training`, :func:`sharpness_along_training`) decides what to compute and
returns result rows; the CLI only parses options, calls these and formats the rows.


Modules: ``training``, ``noise_scale``, ``checks``; every name is re-exported here.
"""

from __future__ import annotations

from batchscale.empirical.measure.checks import (  # noqa: F401
    accumulation_after_training,
    checks_along_training,
    cosine_along_training,
    moments_along_training,
    sharpness_along_training,
)
from batchscale.empirical.measure.noise_scale import (  # noqa: F401
    NOISE_COLUMNS,
    NOISE_METHODS,
    NoiseScaleOptions,
    b_noise_row,
    ema_columns,
    ema_settings,
    noise_scale_along_training,
    noise_scale_rows,
    noise_scale_status,
)
from batchscale.empirical.measure.training import (  # noqa: F401
    EVAL_MODE_NOTE,
    Checkpoint,
    Progress,
    R,
    Setup,
    Training,
    TwoBatchHook,
    _quiet,
    build_setup,
    check_sizes,
    choices,
    divisor_sizes,
    measure_along_training,
    measuring_mode,
    powers_of_two_up_to,
    sgd_checkpoints,
    status_row,
    stochastic_layers,
    train_loss,
)
