"""A PyTorch Lightning callback that runs :class:`batchscale.monitor.NoiseScaleMonitor` during ``fit``.

Install the extra: ``pip install 'batchscale[lightning]'``. Then::

    from batchscale.integrations.lightning import NoiseScaleCallback
    trainer = lightning.Trainer(callbacks=[NoiseScaleCallback()], ...)

The callback attaches the monitor to the LightningModule when fitting starts, calls
:meth:`~batchscale.monitor.NoiseScaleMonitor.update` in ``on_before_optimizer_step`` (after the
backward passes of all accumulated micro-batches, before the step, which is where the monitor must
read the gradients), and logs ``noise_scale/b_simple``, ``noise_scale/grad_norm_sq`` and
``noise_scale/trace_cov`` through ``LightningModule.log``. Lightning's automatic optimisation divides
each micro-batch's loss by ``accumulate_grad_batches``, so a module that returns the mean loss of its
batch gives the mean over the step, the monitor's ``reduction="mean"``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from batchscale.monitor import NoiseScaleMonitor


class NoiseScaleCallback(pl.Callback):
    """Estimate B_simple along ``fit``; keyword arguments go to :class:`NoiseScaleMonitor`.

    ``monitor`` is the attached monitor once fitting has started (its ``history``, ``b_simple``,
    ``interval()`` and ``suggested_batch_size`` are what the plain monitor gives).
    """

    def __init__(self, **monitor_options: Any):
        super().__init__()
        self.monitor_options = monitor_options
        self.monitor: NoiseScaleMonitor | None = None
        self._examples = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.monitor = NoiseScaleMonitor(pl_module, **self.monitor_options)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._examples += _batch_length(batch)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        assert self.monitor is not None
        estimate = self.monitor.update(batch_size=self._examples)
        self._examples = 0
        if estimate is None:  # a step the monitor skips (``every`` > 1)
            return
        for key in ("b_simple", "grad_norm_sq", "trace_cov"):
            pl_module.log(f"noise_scale/{key}", float(getattr(estimate, key)), on_step=True, on_epoch=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None:
            self.monitor.close()


def _batch_length(batch: Any) -> int:
    """Examples in a batch: the leading size of its first tensor (tuples, lists and dicts searched)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else []
    for item in items:
        try:
            return _batch_length(item)
        except TypeError:
            continue
    raise TypeError(f"cannot tell the number of examples of a {type(batch).__name__} batch")


__all__ = ["NoiseScaleCallback"]
