"""Workloads: a dataset, a model factory and a loss, under one name.

A :class:`Workload` is what every measurement and training routine takes. Built-in workloads are
registered by name (``mnist1d-mlp``, ``digits-mlp``, ``linreg``, ...) and built with :func:`get_workload`;
users pass their own as ``package.module:function``, a function returning a :class:`Workload`.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from batchscale.empirical import models
from batchscale.empirical.data import Arrays
from batchscale.empirical.device import resolve_device
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


# ----------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class WorkloadInfo:
    """What ``batchscale workloads`` lists about a registered workload, without building it."""

    name: str
    description: str
    loss: str
    options: dict[str, Any]  # option name -> default
    needs_files: bool = False  # reads its data from files under the ``data_dir`` option


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Workload]
    info: WorkloadInfo
    size: Callable[[dict[str, Any]], int | None] | None = None  # training examples from the options


_REGISTRY: dict[str, _Entry] = {}


def default_options(factory: Callable[..., Any]) -> dict[str, Any]:
    """Keyword options of ``factory`` with their defaults (``seed`` excluded; None when required)."""
    out: dict[str, Any] = {}
    for p in inspect.signature(factory).parameters.values():
        if p.name == "seed" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        out[p.name] = None if p.default is p.empty else p.default
    return out


def register_workload(
    name: str,
    factory: Callable[..., Workload],
    description: str,
    *,
    loss: str = "cross_entropy",
    needs_files: bool = False,
    size: Callable[[dict[str, Any]], int | None] | None = None,
) -> None:
    """Register ``factory(**options) -> Workload`` under ``name`` (it gets ``seed=`` if it takes one).

    ``size(options)``: the number of training examples from the (defaulted) options alone, checking the
    options it reads, or None when only building the workload can tell (see :func:`training_set_size`).
    """
    require(bool(name) and ":" not in name, f"workload name {name!r} must be non-empty and without ':'")
    info = WorkloadInfo(name, description, loss, default_options(factory), needs_files)
    _REGISTRY[name] = _Entry(factory, info, size)


def registered(name: str) -> _Entry | None:
    """The registry entry of ``name``; None for ``package.module:function``; an unknown name is an error."""
    entry = _REGISTRY.get(name)
    if entry is None and ":" not in name:
        raise InputError(f"unknown workload {name!r}; known: {known_names()} (or package.module:function)")
    return entry


def training_set_size(name: str, options: Mapping[str, Any]) -> int | None:
    """Training examples of the registered workload ``name`` with ``options``, without building it.

    Checks the option names (and the values the count depends on); None for a user factory
    (``package.module:function``) or when the count needs the data (file datasets without ``n_train``).
    """
    entry = registered(name)
    if entry is None:
        return None
    factory_arguments(name, entry.factory, 0, dict(options))
    return None if entry.size is None else entry.size({**entry.info.options, **options})


def list_workloads() -> list[WorkloadInfo]:
    """Every registered workload, in registration order."""
    return [entry.info for entry in _REGISTRY.values()]


def known_names() -> str:
    return ", ".join(_REGISTRY)


def import_factory(spec: str) -> Callable[..., Any]:
    """``'package.module:function'`` -> the function; any failure is a one-line :class:`InputError`."""
    module_name, _, attr = spec.partition(":")
    require(
        bool(module_name) and bool(attr),
        f"workload {spec!r} is neither a known name ({known_names()}) nor package.module:function",
    )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is bad input
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(
            f"workload {spec!r}: module {module_name!r} does not import ({type(exc).__name__}: {message})"
        ) from None
    factory = getattr(module, attr, None)
    require(factory is not None, f"workload {spec!r}: module {module_name!r} has no attribute {attr!r}")
    require(callable(factory), f"workload {spec!r}: {attr!r} is not callable")
    return factory


def factory_arguments(
    name: str, factory: Callable[..., Any], seed: int, options: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments for ``factory``: ``options`` plus ``seed`` if it takes one; unknown options
    are an :class:`InputError` naming the accepted ones."""
    params = inspect.signature(factory).parameters
    kwargs = dict(options)
    if "seed" in params:
        kwargs["seed"] = seed
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(default_options(factory)) or "none"
        raise InputError(
            f"workload {name!r}: bad options {sorted(options)} ({exc}); its options: {accepted}"
        ) from None
    return kwargs


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


def get_workload(name: str, *, device: str | torch.device = "cpu", seed: int = 0, **options: Any) -> Workload:
    """Build the workload ``name`` (registered, or ``package.module:function``) on ``device``.

    ``seed`` is the data seed of the synthetic workloads (``linreg``, ``teacher-student``); model weights
    are seeded separately by ``Workload.make_model(seed)``. Unknown names, bad options or a result that
    breaks the :class:`Workload` contract raise a one-line :class:`InputError`. ``device`` may also be
    ``"auto"`` (CUDA when available, see :func:`batchscale.empirical.device.resolve_device`).
    """
    device = resolve_device(device) if isinstance(device, str) else device
    entry = registered(name)
    factory = entry.factory if entry is not None else import_factory(name)
    kwargs = factory_arguments(name, factory, seed, options)
    workload = check_workload(name, call_factory(name, factory, kwargs))
    if entry is None:  # user code: also check that its model builds and fits the data
        check_model(name, workload)
    resolved = {**default_options(factory), **kwargs}
    return replace(workload, name=name, options=to_plain(resolved)).to(device)


def one_line(exc: BaseException) -> str:
    """``'ValueError: first line of the message'``."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def call_factory(name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``factory(**kwargs)``; any exception but an :class:`InputError` becomes a one-line InputError naming
    the workload (a user factory's bug is bad input to batchscale, not a batchscale traceback)."""
    try:
        return factory(**kwargs)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"workload {name} failed: {one_line(exc)}") from exc


def check_model(name: str, workload: Workload) -> nn.Module:
    """Build ``make_model(0)`` and run it (eval mode) on two training examples: an ``nn.Module`` whose
    output is (N, K) logits with K above every class label (``cross_entropy``) or the targets' shape
    (``mse``). Any failure is a one-line :class:`InputError`; torch's global RNG is left untouched."""
    x, y = workload.x_train[:2], workload.y_train[:2]
    with torch.random.fork_rng(devices=[]):
        try:
            model = workload.make_model(0)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"workload {name}: make_model(0) failed: {one_line(exc)}") from exc
        require(
            isinstance(model, nn.Module),
            f"workload {name}: make_model(0) returned {type(model).__name__}, not a torch.nn.Module",
        )
        try:
            with torch.no_grad():
                out = model.to(x.device).eval()(x)  # eval: a batch-norm model accepts one example
        except Exception as exc:
            raise InputError(
                f"workload {name}: the model fails on x_train[:2] {tuple(x.shape)}: {one_line(exc)}"
            ) from exc
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


# ----------------------------------------------------------------------------------------------------
# Option checks (values arrive from the command line as int, float, str or tuples of them)


def as_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; anything else is an :class:`InputError`."""
    ok = (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        or (isinstance(value, float) and value.is_integer())
    )
    require(ok and int(value) >= minimum, f"option {name}={value!r} must be an integer >= {minimum}")
    return int(value)


def as_float(name: str, value: Any, minimum: float = 0.0, *, strict: bool = False) -> float:
    """``value`` as a finite float >= ``minimum`` (> when ``strict``)."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    require(ok, f"option {name}={value!r} must be a finite number {'>' if strict else '>='} {minimum}")
    return float(value)


def as_ints(name: str, value: Any, minimum: int = 1) -> tuple[int, ...]:
    """An int or a sequence of ints (``256,256``) as a tuple of ints >= ``minimum``."""
    items = value if isinstance(value, (list, tuple)) else (value,)
    return tuple(as_int(name, v, minimum) for v in items)


def as_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    require(value in choices, f"option {name}={value!r} must be one of {', '.join(choices)}")
    return str(value)


def tensors(arrays: Arrays) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Numpy arrays -> tensors (float32 inputs; int64 labels or float32 targets kept as they are)."""
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------
# Built-in workloads


def linreg_workload(
    *,
    seed: int = 0,
    dim: int = 50,
    alpha: float = 1.0,
    spectrum: Sequence[float] | None = None,
    n_train: int = 2000,
    n_test: int = 1000,
    noise_std: float = 0.5,
    init: str = "zero",
) -> Workload:
    r"""Gaussian least squares: :math:`x \sim N(0, \mathrm{diag}(\lambda))`, :math:`\lambda_i = i^{-\alpha}`
    (or ``spectrum`` given), :math:`y = w^{*\top}x + \varepsilon`; model ``nn.Linear(dim, 1, bias=False)``
    started at zero (``init='zero'``) or at torch's seeded default (``'random'``); loss ``(w.x - y)^2``."""
    from batchscale.empirical.data.synthetic import linear_regression_data
    from batchscale.power_law import power_law_eigenvalues

    if spectrum is not None:
        lam = np.asarray([as_float("spectrum", v, 0.0, strict=True) for v in as_tuple(spectrum)])
    else:
        lam = power_law_eigenvalues(as_int("dim", dim), as_float("alpha", alpha))
    init = as_choice("init", init, ("zero", "random"))
    data = linear_regression_data(
        lam, as_int("n_train", n_train), as_int("n_test", n_test), as_float("noise_std", noise_std), seed
    )
    info = {
        "spectrum": lam.tolist(),
        "w_star": data.w_star.tolist(),
        "noise_std": data.noise_std,
        "hessian": "2 * diag(spectrum)  (population Hessian of the per-example loss (w.x - y)^2)",
        "init": init,
    }
    make = partial(models.make_linear, in_dim=lam.size, out_dim=1, init=init)
    return Workload("linreg", make, *tensors(data.arrays), loss="mse", info=info)


def as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def digits_mlp_workload(*, test_fraction: float = 0.2, hidden: Sequence[int] | int = (128, 128)) -> Workload:
    """scikit-learn digits (8x8, standardised, stratified split) with a ReLU MLP 64-hidden-10."""
    from batchscale.empirical.data.digits import load_digits_arrays

    arrays = load_digits_arrays(as_fraction("test_fraction", test_fraction))
    make = partial(models.make_mlp, in_dim=64, hidden=as_ints("hidden", hidden), out_dim=10)
    return Workload("digits-mlp", make, *tensors(arrays), info={"n_classes": 10})


def digits_cnn_workload(*, test_fraction: float = 0.2, channels: Sequence[int] | int = (16, 32)) -> Workload:
    """scikit-learn digits as 1x8x8 images with a small conv net (3x3 conv + 2x2 pool per entry of
    ``channels``, dense 64, linear 10)."""
    from batchscale.empirical.data.digits import load_digits_arrays

    arrays = load_digits_arrays(as_fraction("test_fraction", test_fraction))
    make = partial(
        models.make_cnn2d, in_channels=1, size=8, channels=pooled_channels(channels, 8), dense=64, out_dim=10
    )
    return Workload("digits-cnn", make, *tensors(arrays), info={"n_classes": 10})


def pooled_channels(channels: Any, size: int) -> tuple[int, ...]:
    """``channels`` of a conv net that halves a ``size`` x ``size`` image once per entry: at most
    log2(size) entries, so the image keeps at least one pixel."""
    chans = as_ints("channels", channels)
    most = int(np.log2(size))
    require(
        len(chans) <= most,
        f"option channels={','.join(map(str, chans))}: at most {most} entries for "
        f"{size}x{size} images (each 2x2 pool halves the size)",
    )
    return chans


def as_fraction(name: str, value: Any) -> float:
    value = as_float(name, value, 0.0, strict=True)
    require(value < 1.0, f"option {name}={value!r} must lie strictly between 0 and 1")
    return value


def teacher_student_workload(
    *,
    seed: int = 0,
    dim: int = 20,
    teacher_hidden: Sequence[int] | int = (32,),
    student_hidden: Sequence[int] | int = (64,),
    out_dim: int = 1,
    n_train: int = 2000,
    n_test: int = 1000,
    label_noise: float = 0.0,
) -> Workload:
    """Regression on a random ReLU teacher: x ~ N(0, I_dim), y = teacher(x) / std + N(0, label_noise^2);
    the student is a ReLU MLP dim-student_hidden-out_dim; loss mse. The data seed also draws the teacher."""
    from batchscale.empirical.data.synthetic import teacher_student_data

    dim, out_dim = as_int("dim", dim), as_int("out_dim", out_dim)
    arrays, scale = teacher_student_data(
        dim,
        as_ints("teacher_hidden", teacher_hidden),
        out_dim,
        as_int("n_train", n_train),
        as_int("n_test", n_test),
        as_float("label_noise", label_noise),
        seed,
    )
    make = partial(
        models.make_mlp, in_dim=dim, hidden=as_ints("student_hidden", student_hidden), out_dim=out_dim
    )
    info = {"teacher_output_std": scale, "label_noise": float(label_noise)}
    return Workload("teacher-student", make, *tensors(arrays), loss="mse", info=info)


def mnist1d_arrays(n_samples: Any, generator_seed: Any) -> Arrays:
    from batchscale.empirical.data.mnist1d import load_mnist1d

    return load_mnist1d(mnist1d_samples(n_samples), as_int("generator_seed", generator_seed, minimum=0))


def mnist1d_samples(n_samples: Any) -> int:
    """The checked ``n_samples`` option of the MNIST-1D workloads."""
    n = as_int("n_samples", n_samples, minimum=10)
    # the generator draws n // 10 examples per class: anything else silently gives fewer examples
    require(n % 10 == 0, f"option n_samples={n} must be a multiple of 10 (n_samples // 10 per class)")
    return n


def mnist1d_train_size(options: Mapping[str, Any]) -> int:
    """int(0.8 n_samples): the generator's 80/20 split."""
    return int(mnist1d_samples(options["n_samples"]) * 0.8)


def digits_train_size(options: Mapping[str, Any]) -> int:
    """1797 - ceil(test_fraction * 1797): scikit-learn's split of the 1797 digits."""
    fraction = as_fraction("test_fraction", options["test_fraction"])
    return DIGITS_EXAMPLES - math.ceil(fraction * DIGITS_EXAMPLES)


def n_train_option(options: Mapping[str, Any]) -> int | None:
    """The ``n_train`` option (None: the whole file dataset, known only once read)."""
    value = options.get("n_train")
    return None if value is None else as_int("n_train", value)


def mnist1d_mlp_workload(
    *, n_samples: int = 5000, generator_seed: int = 42, hidden: Sequence[int] | int = (256, 256)
) -> Workload:
    """MNIST-1D (``n_samples`` total, 80/20 split; generated by the ``mnist1d`` package with its seed 42,
    cached) with a ReLU MLP 40-hidden-10."""
    arrays = mnist1d_arrays(n_samples, generator_seed)
    make = partial(models.make_mlp, in_dim=40, hidden=as_ints("hidden", hidden), out_dim=10)
    return Workload("mnist1d-mlp", make, *tensors(arrays), info={"n_classes": 10})


def mnist1d_cnn_workload(*, n_samples: int = 5000, generator_seed: int = 42, channels: int = 32) -> Workload:
    """MNIST-1D with a 1-D conv net: three ReLU convolutions of ``channels`` channels (kernel 5, then
    3 and 3 with stride 2) and a linear head."""
    arrays = mnist1d_arrays(n_samples, generator_seed)
    make = partial(models.make_cnn1d, length=40, channels=as_int("channels", channels), out_dim=10)
    return Workload("mnist1d-cnn", make, *tensors(arrays), info={"n_classes": 10})


def file_arrays(dataset: str, data_dir: Any, n_train: Any, n_test: Any) -> Arrays:
    """Read ``dataset`` from ``data_dir`` (default :func:`default_data_dir`), keep the first ``n_train`` /
    ``n_test`` examples (None: all) and standardise per channel with the kept training statistics."""
    from batchscale.empirical.data import files

    root = default_data_dir() if data_dir is None else Path(str(data_dir)).expanduser()
    if dataset == "cifar10":
        arrays = files.load_cifar10(root)
    else:
        arrays = files.load_idx_dataset(root, dataset)
    n_train = None if n_train is None else as_int("n_train", n_train)
    n_test = None if n_test is None else as_int("n_test", n_test)
    for key, wanted, have in (
        ("n_train", n_train, len(arrays.x_train)),
        ("n_test", n_test, len(arrays.x_test)),
    ):
        require(
            wanted is None or wanted <= have,
            f"option {key}={wanted} exceeds the {have} examples of {dataset}",
        )
    return files.standardise_channels(files.subset(arrays, n_train, n_test))


def mnist_cnn_model(channels: Any, dense: Any) -> Callable[[int], nn.Module]:
    return partial(
        models.make_cnn2d,
        in_channels=1,
        size=28,
        channels=pooled_channels(channels, 28),
        dense=as_int("dense", dense, minimum=0),
        out_dim=10,
    )


def mnist_cnn_workload(
    *,
    data_dir: str | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    channels: Sequence[int] | int = (32, 64),
    dense: int = 128,
) -> Workload:
    """MNIST from its idx files under ``data_dir`` with a conv net (3x3 conv + 2x2 pool per entry of
    ``channels``, dense ``dense``, linear 10); inputs standardised with the training mean and std."""
    make = mnist_cnn_model(channels, dense)  # options checked before any file is read
    arrays = file_arrays("mnist", data_dir, n_train, n_test)
    return Workload("mnist-cnn", make, *tensors(arrays), info={"n_classes": 10})


def fashion_mnist_cnn_workload(
    *,
    data_dir: str | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    channels: Sequence[int] | int = (32, 64),
    dense: int = 128,
) -> Workload:
    """Fashion-MNIST from its idx files under ``data_dir`` with the same conv net as ``mnist-cnn``."""
    make = mnist_cnn_model(channels, dense)
    arrays = file_arrays("fashion-mnist", data_dir, n_train, n_test)
    return Workload("fashion-mnist-cnn", make, *tensors(arrays), info={"n_classes": 10})


def cifar10_resnet8_workload(
    *,
    data_dir: str | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    width: int = 16,
    norm: str = "group",
) -> Workload:
    """CIFAR-10 from ``cifar-10-batches-py`` under ``data_dir`` with a ResNet-8 (``width`` channels in
    the first stage; ``norm`` = group (default: keeps examples independent), batch or none)."""
    make = partial(
        models.make_resnet8,
        width=as_int("width", width),
        out_dim=10,
        norm=as_choice("norm", norm, models.NORMS),
    )
    arrays = file_arrays("cifar10", data_dir, n_train, n_test)
    return Workload("cifar10-resnet8", make, *tensors(arrays), info={"n_classes": 10})


def default_data_dir() -> Path:
    """``$BATCHSCALE_DATA_DIR`` if set, else the user data directory of batchscale."""
    env = os.environ.get("BATCHSCALE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("batchscale"))


DIGITS_EXAMPLES = 1797

register_workload(
    "mnist1d-mlp",
    mnist1d_mlp_workload,
    "MNIST-1D (generated locally, cached), MLP 40-256-256-10.",
    size=mnist1d_train_size,
)
register_workload("mnist1d-cnn", mnist1d_cnn_workload, "MNIST-1D (generated locally, cached), 1-D conv net.",
                  size=mnist1d_train_size)
register_workload("digits-mlp", digits_mlp_workload, "scikit-learn 8x8 digits (bundled), MLP 64-128-128-10.",
                  size=digits_train_size)
register_workload("digits-cnn", digits_cnn_workload, "scikit-learn 8x8 digits (bundled), small conv net.",
                  size=digits_train_size)
register_workload(
    "linreg",
    linreg_workload,
    "Gaussian least squares, power-law spectrum; linear model without bias (theory exact).",
    loss="mse",
    size=n_train_option,
)
register_workload(
    "teacher-student",
    teacher_student_workload,
    "Gaussian inputs, random ReLU teacher MLP, student MLP regression.",
    loss="mse",
    size=n_train_option,
)
register_workload(
    "mnist-cnn",
    mnist_cnn_workload,
    "MNIST from idx files under data_dir, conv net 2x(conv+pool), dense 128.",
    needs_files=True,
    size=n_train_option,
)
register_workload(
    "fashion-mnist-cnn",
    fashion_mnist_cnn_workload,
    "Fashion-MNIST from idx files under data_dir, same conv net as mnist-cnn.",
    needs_files=True,
    size=n_train_option,
)
register_workload(
    "cifar10-resnet8",
    cifar10_resnet8_workload,
    "CIFAR-10 from cifar-10-batches-py under data_dir, ResNet-8 (GroupNorm).",
    needs_files=True,
    size=n_train_option,
)
