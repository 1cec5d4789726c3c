"""The built-in workloads (registered by name on import) and the checks of their options."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from batchscale.empirical import models
from batchscale.empirical.data import Arrays
from batchscale.empirical.protocol import default_data_dir  # the data directory is part of trial ids
from batchscale.empirical.workloads.contract import Workload
from batchscale.empirical.workloads.registry import register_workload
from batchscale.errors import require


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


def digits_mlp_workload(
    *, test_fraction: float = 0.2, hidden: Sequence[int] | int = (128, 128), train_fraction: float = 1.0
) -> Workload:
    """scikit-learn digits (8x8, standardised, stratified split) with a ReLU MLP 64-hidden-10;
    ``train_fraction`` < 1 keeps the first part of the training set (:func:`digits_arrays`)."""
    arrays = digits_arrays(test_fraction, train_fraction)
    make = partial(models.make_mlp, in_dim=64, hidden=as_ints("hidden", hidden), out_dim=10)
    return Workload("digits-mlp", make, *tensors(arrays), info={"n_classes": 10})


def digits_cnn_workload(
    *, test_fraction: float = 0.2, channels: Sequence[int] | int = (16, 32), train_fraction: float = 1.0
) -> Workload:
    """scikit-learn digits as 1x8x8 images with a small conv net (3x3 conv + 2x2 pool per entry of
    ``channels``, dense 64, linear 10); ``train_fraction`` as for ``digits-mlp``."""
    arrays = digits_arrays(test_fraction, train_fraction)
    make = partial(
        models.make_cnn2d, in_channels=1, size=8, channels=pooled_channels(channels, 8), dense=64, out_dim=10
    )
    return Workload("digits-cnn", make, *tensors(arrays), info={"n_classes": 10})


def digits_arrays(test_fraction: Any, train_fraction: Any) -> Arrays:
    """The digits split of ``test_fraction``, its training set cut to its first
    :func:`digits_kept` examples (the split is shuffled and stratified, so a prefix keeps the classes
    about balanced); the test set is unchanged, so targets compare across training-set sizes."""
    from batchscale.empirical.data.digits import load_digits_arrays

    arrays = load_digits_arrays(as_fraction("test_fraction", test_fraction))
    keep = digits_kept(len(arrays.x_train), train_fraction)
    return Arrays(arrays.x_train[:keep], arrays.y_train[:keep], arrays.x_test, arrays.y_test)


def digits_kept(n_train: int, train_fraction: Any) -> int:
    """round(train_fraction x n_train) training examples kept, train_fraction in (0, 1]."""
    fraction = as_float("train_fraction", train_fraction, 0.0, strict=True)
    require(fraction <= 1.0, f"option train_fraction={train_fraction!r} must lie in (0, 1]")
    return max(1, round(fraction * n_train))


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
    """round(train_fraction x (1797 - ceil(test_fraction x 1797))): scikit-learn's split of the 1797
    digits, of which the first ``train_fraction`` are kept."""
    fraction = as_fraction("test_fraction", options["test_fraction"])
    return digits_kept(DIGITS_EXAMPLES - math.ceil(fraction * DIGITS_EXAMPLES), options["train_fraction"])


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
