"""Image datasets read from their standard files on disk: MNIST and Fashion-MNIST (idx), CIFAR-10
(python pickled batches). Parsed with numpy, gzip and pickle only (torchvision is not required).

Nothing is ever downloaded: missing files raise :class:`MissingDataError` naming every file looked for,
where, and how to get them.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from batchscale.empirical.data import Arrays
from batchscale.errors import InputError

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
HOW_TO_GET = {
    "mnist": "get them from https://yann.lecun.com/exdb/mnist/ or a mirror, or with "
    "torchvision.datasets.MNIST(<data_dir>, download=True) on a machine with torchvision",
    "fashion-mnist": "get them from https://github.com/zalandoresearch/fashion-mnist (data/fashion), or with "
    "torchvision.datasets.FashionMNIST(<data_dir>, download=True)",
    "cifar10": "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into <data_dir> (packed "
    "or unpacked)",
}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)


class MissingDataError(InputError):
    """A file-based dataset's files are not where they were looked for."""


def read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (``.gz`` or plain): 2 zero bytes, a type byte, a rank byte, big-endian uint32
    dimensions, then the data in C order."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise InputError(f"{path} is not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    count = int(np.prod(shape))
    if len(raw) != header + count * dtype.itemsize:
        raise InputError(
            f"{path}: idx header says shape {shape} but the file has {len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)


def idx_search_dirs(data_dir: Path, dataset: str) -> list[Path]:
    """torchvision's layout ``<data_dir>/<Folder>/raw`` first, then ``data_dir`` itself."""
    return [data_dir / TORCHVISION_FOLDERS[dataset] / "raw", data_dir]


def find_file(dirs: Sequence[Path], name: str) -> Path | None:
    """The first of ``<dir>/<name>`` or ``<dir>/<name>.gz`` that exists."""
    for d in dirs:
        for candidate in (d / name, d / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def missing_error(dataset: str, names: Sequence[str], dirs: Sequence[Path]) -> MissingDataError:
    where = " or ".join(str(d) for d in dirs)
    forms = ", plain or .gz" if dataset in TORCHVISION_FOLDERS else ""
    return MissingDataError(
        f"{dataset} files missing: {', '.join(names)} (looked in {where}{forms}); {HOW_TO_GET[dataset]}, "
        "then pass the option data_dir=DIR (-W data_dir=DIR) or set BATCHSCALE_DATA_DIR"
    )


def idx_images(images: np.ndarray, labels: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise InputError(f"{path.parent}: images {images.shape} and labels {labels.shape} do not match")
    return images[:, None, :, :], labels.astype(np.int64)  # (N, 1, H, W), (N,)


def load_idx_dataset(data_dir: str | Path, dataset: str = "mnist") -> Arrays:
    """MNIST or Fashion-MNIST (``dataset`` = ``'mnist'`` / ``'fashion-mnist'``) from its four idx files:
    uint8 images (N, 1, 28, 28) scaled to [0, 1] as float32, int64 labels. Not yet standardised."""
    dirs = idx_search_dirs(Path(data_dir).expanduser(), dataset)
    found = {key: find_file(dirs, name) for key, name in IDX_FILES.items()}
    missing = [IDX_FILES[k] for k, p in found.items() if p is None]
    if missing:
        raise missing_error(dataset, missing, dirs)
    x_train, y_train = idx_images(read_idx(found["x_train"]), read_idx(found["y_train"]), found["x_train"])
    x_test, y_test = idx_images(read_idx(found["x_test"]), read_idx(found["y_test"]), found["x_test"])
    scale = np.float32(255.0)
    return Arrays(x_train.astype(np.float32) / scale, y_train, x_test.astype(np.float32) / scale, y_test)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a CIFAR batch cannot run arbitrary code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def parse_cifar_batch(handle: BinaryIO, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: ``data`` (N, 3072) uint8 in R, G, B planes and ``labels`` -> images
    (N, 3, 32, 32) uint8 and int64 labels. ``where`` names the source in error messages."""
    try:
        batch = NumpyOnlyUnpickler(handle, encoding="bytes").load()
        data = np.asarray(batch[b"data"] if b"data" in batch else batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"] if b"labels" in batch else batch["labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{where} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise InputError(f"{where}: data {data.shape} and labels {labels.shape} are not a CIFAR-10 batch")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`parse_cifar_batch` of the file ``path``."""
    with open(path, "rb") as handle:
        return parse_cifar_batch(handle, str(path))


def cifar_search_dirs(data_dir: Path) -> list[Path]:
    """``<data_dir>/cifar-10-batches-py`` first, then ``data_dir`` itself."""
    return [data_dir / CIFAR_FOLDER, data_dir]


def read_cifar_batches(data_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The six batches (train 1..5, then test) from an unpacked folder, else from the unopened archive
    ``<data_dir>/cifar-10-python.tar.gz`` (read in place, nothing extracted to disk)."""
    names = CIFAR_TRAIN + CIFAR_TEST
    dirs = cifar_search_dirs(data_dir)
    folder = next((d for d in dirs if all((d / n).is_file() for n in names)), None)
    if folder is not None:
        return [read_cifar_batch(folder / n) for n in names]
    archive = data_dir / CIFAR_ARCHIVE
    if archive.is_file():
        return read_cifar_archive(archive)
    missing = [n for n in names if not any((d / n).is_file() for d in dirs)]
    raise missing_error("cifar10", missing or list(names), [*dirs, archive])


def read_cifar_archive(archive: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The six batches from the official ``cifar-10-python.tar.gz``."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            out = []
            for name in CIFAR_TRAIN + CIFAR_TEST:
                member = tar.extractfile(f"{CIFAR_FOLDER}/{name}")
                if member is None:
                    raise KeyError(name)
                out.append(parse_cifar_batch(member, f"{archive}:{CIFAR_FOLDER}/{name}"))
            return out
    except (tarfile.TarError, KeyError, OSError, EOFError) as exc:
        raise InputError(
            f"{archive} is not the CIFAR-10 python archive ({type(exc).__name__}: {exc})"
        ) from None


def load_cifar10(data_dir: str | Path) -> Arrays:
    """CIFAR-10 from ``cifar-10-batches-py`` (or its .tar.gz): images (N, 3, 32, 32) scaled to [0, 1] as
    float32 (50000 train from ``data_batch_1..5``, 10000 test from ``test_batch``), int64 labels. Not yet
    standardised."""
    batches = read_cifar_batches(Path(data_dir).expanduser())
    x_train = np.concatenate([x for x, _ in batches[:-1]])
    y_train = np.concatenate([y for _, y in batches[:-1]])
    x_test, y_test = batches[-1]
    scale = np.float32(255.0)
    return Arrays(x_train.astype(np.float32) / scale, y_train, x_test.astype(np.float32) / scale, y_test)


def standardise_channels(arrays: Arrays) -> Arrays:
    """Per-channel (x - mean) / std with the training set's statistics (channel axis 1)."""
    axes = (0, 2, 3)
    mean = arrays.x_train.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = arrays.x_train.std(axis=axes, keepdims=True, dtype=np.float64)
    # statistics in float64, applied in float32 (a float64 copy of CIFAR-10 would take 1.2 GB)
    mean, std = mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)

    def apply(x: np.ndarray) -> np.ndarray:
        return (x - mean) / std

    return Arrays(apply(arrays.x_train), arrays.y_train, apply(arrays.x_test), arrays.y_test)


def subset(arrays: Arrays, n_train: int | None, n_test: int | None) -> Arrays:
    """The first ``n_train`` training and ``n_test`` test examples (all when None)."""
    return Arrays(
        arrays.x_train[:n_train], arrays.y_train[:n_train], arrays.x_test[:n_test], arrays.y_test[:n_test]
    )
