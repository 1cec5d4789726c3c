"""The Lightning callback gives exactly what the plain monitor gives on the same batches."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch", reason="the optional extra 'lightning' is not installed")

from batchscale.integrations.lightning import NoiseScaleCallback  # noqa: E402
from batchscale.monitor import NoiseScaleMonitor  # noqa: E402

STEPS, BATCH, MICRO = 6, 8, 2


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n = STEPS * BATCH * MICRO
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = make_model()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def plain_history(accumulate: int) -> list[float]:
    """The same training by hand: micro-batches of BATCH, accumulate, monitor, step."""
    model, (x, y) = make_model(), data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = NoiseScaleMonitor(model)
    out = []
    for s in range(STEPS * MICRO // accumulate):
        opt.zero_grad()
        for j in range(accumulate):
            k = s * accumulate + j
            part = slice(k * BATCH, (k + 1) * BATCH)
            (nn.functional.cross_entropy(model(x[part]), y[part]) / accumulate).backward()
        out.append(monitor.update(batch_size=BATCH * accumulate).b_simple)
        opt.step()
    return out


@pytest.mark.parametrize("accumulate", [1, 2])
def test_callback_equals_the_plain_monitor(accumulate, tmp_path):
    x, y = data()
    dataset = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=False)
    callback = NoiseScaleCallback()
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, callbacks=[callback], accumulate_grad_batches=accumulate,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice about workers and logging on tiny runs
        trainer.fit(Tiny(), loader)
    got = [h.b_simple for h in callback.monitor.history]
    expected = plain_history(accumulate)
    assert len(got) == len(expected) == STEPS * MICRO // accumulate
    assert got == pytest.approx(expected, rel=1e-5)
