"""The workload contract: the :class:`Workload` type, its per-example loss, and the checks a factory's
result must pass (tensor shapes and dtypes, a model that builds and fits the data)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from batchscale.empirical import models
from batchscale.empirical.workloads.user import user_code_error
from batchscale.errors import InputError, require

LossName = Literal["cross_entropy", "mse"]

LOSSES: tuple[str, ...] = ("cross_entropy", "mse")


@dataclass(frozen=True)
class Workload:
    """A dataset + model + loss: the contract every built-in and user workload fulfils.

    A user workload is a function ``f(**options) -> Workload`` named on the command line as
    ``package.module:function`` (it receives ``seed=`` too when it has a ``seed`` parameter). Rules:

    - ``x_train``/``x_test`` are float tensors with the same shape after the first (example) axis;
      ``y_*`` have as many rows as their ``x_*``.
    - ``loss="cross_entropy"``: targets int64 class indices of shape (N,), the model outputs (N, K) logits.
      ``loss="mse"``: float targets (N, K) and outputs (N, K).
    - ``make_model(seed)`` returns a fresh ``nn.Module`` with the same weights for the same seed (draw
      them inside :func:`batchscale.empirical.models.seeded`); it must be picklable (a module-level
      function or a ``functools.partial`` of one) if runs are sent to other processes.
    - ``info`` holds JSON-able facts (for ``linreg``: ``spectrum``, ``w_star``, ``noise_std``).

    Attributes:
        name: registry name (or ``module:function`` for a user workload).
        make_model: ``seed -> torch.nn.Module``; the same seed gives the same initial weights.
        x_train, y_train, x_test, y_test: tensors (already on the workload's device). Targets are
            class indices (int64, shape (N,)) for ``cross_entropy`` and float (N, K) for ``mse``.
        loss: ``"cross_entropy"`` or ``"mse"``. Per-example losses follow torch's conventions:
            ``cross_entropy(out, y, reduction='none')`` and the mean over output dimensions of
            ``(out - y)**2`` for ``mse``. The minibatch loss is their mean (mean form) or sum (sum form).
        info: free-form facts about the workload (e.g. the exact Hessian of ``linreg``), JSON-able.
        options: the resolved options it was built with (defaults filled in, and ``seed``), JSON-able.
    """

    name: str
    make_model: Callable[[int], nn.Module]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    loss: LossName = "cross_entropy"
    info: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: torch.device | str) -> Workload:
        """The same workload with its tensors on ``device``."""
        device = torch.device(device)
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def per_example_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of each example, shape (N,)."""
        return per_example_loss(self.loss, output, target)

    def model(self, seed: int = 0) -> nn.Module:
        """A fresh model on the workload's device."""
        return self.make_model(seed).to(self.device)


def per_example_loss(loss: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example loss for ``loss`` in :data:`LOSSES`, shape (N,)."""
    if loss == "cross_entropy":
        return F.cross_entropy(output, target, reduction="none")
    if loss == "mse":
        return ((output - target) ** 2).reshape(output.shape[0], -1).mean(dim=1)
    raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")


def check_workload(name: str, workload: Any) -> Workload:
    """Check a factory's result against the :class:`Workload` contract; :class:`InputError` if broken."""
    require(
        isinstance(workload, Workload),
        f"workload {name!r} returned {type(workload).__name__}, not a batchscale Workload",
    )
    w = workload
    require(w.loss in LOSSES, f"workload {name!r}: loss {w.loss!r} is not one of {', '.join(LOSSES)}")
    tensors = {"x_train": w.x_train, "y_train": w.y_train, "x_test": w.x_test, "y_test": w.y_test}
    for key, t in tensors.items():
        require(isinstance(t, torch.Tensor), f"workload {name!r}: {key} is {type(t).__name__}, not a tensor")
    for split in ("train", "test"):
        x, y = tensors[f"x_{split}"], tensors[f"y_{split}"]
        require(
            x.ndim >= 1 and y.ndim >= 1 and x.shape[0] == y.shape[0] and x.shape[0] > 0,
            f"workload {name!r}: x_{split} has shape {tuple(x.shape)} but y_{split} {tuple(y.shape)}",
        )
    require(
        w.x_train.shape[1:] == w.x_test.shape[1:],
        f"workload {name!r}: x_train examples {tuple(w.x_train.shape[1:])} differ from x_test "
        f"{tuple(w.x_test.shape[1:])}",
    )
    require(w.x_train.is_floating_point(), f"workload {name!r}: x_train must be a float tensor")
    if w.loss == "cross_entropy":
        for key in ("y_train", "y_test"):
            t = tensors[key]
            require(
                t.dtype == torch.int64 and t.ndim == 1,
                f"workload {name!r}: cross_entropy needs int64 class targets of shape (N,); {key} is "
                f"{t.dtype} {tuple(t.shape)}",
            )
            require(bool((t >= 0).all()), f"workload {name!r}: {key} has negative class labels")
    else:
        require(
            w.y_train.is_floating_point()
            and w.y_train.shape[1:] == w.y_test.shape[1:]
            and w.y_train.ndim == 2,
            f"workload {name!r}: mse needs float targets of shape (N, K); y_train is "
            f"{w.y_train.dtype} {tuple(w.y_train.shape)}, y_test {tuple(w.y_test.shape)}",
        )
    require(callable(w.make_model), f"workload {name!r}: make_model is not callable")
    return w


def check_model(name: str, workload: Workload) -> nn.Module:
    """Build ``make_model(0)`` and run it (eval mode) on two training examples: an ``nn.Module`` whose
    output is (N, K) logits with K above every class label (``cross_entropy``) or the targets' shape
    (``mse``). A wrong result is a one-line :class:`InputError`, an exception raised by ``make_model`` or
    the model a :class:`~batchscale.errors.UserCodeError`; torch's global RNG is left untouched."""
    x, y = workload.x_train[:2], workload.y_train[:2]
    with torch.random.fork_rng(devices=[]):
        try:
            model = workload.make_model(0)
        except InputError:
            raise
        except Exception as exc:
            raise user_code_error(f"workload {name}: make_model(0)", exc) from exc
        require(
            isinstance(model, nn.Module),
            f"workload {name}: make_model(0) returned {type(model).__name__}, not a torch.nn.Module",
        )
        try:
            with torch.no_grad():
                out = model.to(x.device).eval()(x)  # eval: a batch-norm model accepts one example
        except Exception as exc:
            raise user_code_error(f"workload {name}: the model on x_train[:2] {tuple(x.shape)}", exc) from exc
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if workload.loss == "cross_entropy":
        classes = int(max(workload.y_train.max(), workload.y_test.max())) + 1
        ok = isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == len(x)
        ok = ok and out.shape[1] >= classes
        want = f"({len(x)}, K) logits with K >= {classes} classes"
    else:
        ok = isinstance(out, torch.Tensor) and out.shape == y.shape
        want = f"the targets' shape {tuple(y.shape)}"
    require(ok, f"workload {name}: the model maps x_train[:2] to {shape}, expected {want}")
    return model


def to_plain(value: Any) -> Any:
    """JSON-able copy: tuples as lists, numpy scalars and arrays unwrapped."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def workload_summary(workload: Workload) -> dict[str, Any]:
    """One flat row about ``workload``: sizes, input shape, outputs, parameter count of ``make_model(0)``."""
    model = check_model(workload.name, workload)
    if workload.loss == "cross_entropy":
        outputs = int(workload.info.get("n_classes", int(workload.y_train.max()) + 1))
    else:
        outputs = int(workload.y_train.shape[1])
    return {
        "name": workload.name,
        "loss": workload.loss,
        "n_train": workload.n_train,
        "n_test": workload.n_test,
        "input_shape": "x".join(str(s) for s in workload.x_train.shape[1:]),
        "outputs": outputs,
        "n_params": models.n_parameters(model),
    }
