"""MNIST / Fashion-MNIST idx files and CIFAR-10 python batches, on small fake files in the exact formats.

Independent computation: the fake files are written byte by byte here (struct, gzip, pickle), and the
expected tensors are computed from the raw pixel arrays with plain numpy.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from batchscale.cli.main import cli
from batchscale.empirical.data import files
from batchscale.empirical.workloads import get_workload
from batchscale.errors import InputError

N_TRAIN, N_TEST = 20, 8


def idx_bytes(array: np.ndarray) -> bytes:
    """idx encoding of a uint8 array: 0, 0, type 0x08, rank, big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_idx_set(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def write_idx_set(folder: Path, arrays: dict[str, np.ndarray], gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in files.IDX_FILES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


LAYOUTS = [
    pytest.param("mnist-cnn", "MNIST/raw", False, id="mnist-torchvision-plain"),
    pytest.param("mnist-cnn", "", True, id="mnist-flat-gz"),
    pytest.param("fashion-mnist-cnn", "FashionMNIST/raw", True, id="fashion-torchvision-gz"),
    pytest.param("fashion-mnist-cnn", "", False, id="fashion-flat-plain"),
]


@pytest.mark.parametrize("name, sub, gz", LAYOUTS)
def test_idx_workload_reads_values_and_labels(tmp_path, name, sub, gz):
    raw = fake_idx_set(seed=len(sub) + gz)
    write_idx_set(tmp_path / sub, raw, gz)
    w = get_workload(name, data_dir=str(tmp_path))
    pixels = raw["x_train"].astype(np.float64) / 255
    mean, std = pixels.mean(), pixels.std()
    expected_test = (raw["x_test"].astype(np.float64) / 255 - mean) / std
    assert w.x_train.shape == (N_TRAIN, 1, 28, 28) and w.x_train.dtype == torch.float32
    np.testing.assert_allclose(w.x_train[:, 0].numpy(), (pixels - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w.x_test[:, 0].numpy(), expected_test, rtol=1e-5, atol=1e-5)
    assert w.y_train.dtype == torch.int64
    np.testing.assert_array_equal(w.y_train.numpy(), raw["y_train"])
    np.testing.assert_array_equal(w.y_test.numpy(), raw["y_test"])
    assert w.model(0)(w.x_train[:3]).shape == (3, 10)


def test_idx_subset_options(tmp_path):
    raw = fake_idx_set(seed=0)
    write_idx_set(tmp_path, raw, gz=False)
    w = get_workload("mnist-cnn", data_dir=str(tmp_path), n_train=5, n_test=3)
    assert (w.n_train, w.n_test) == (5, 3)
    np.testing.assert_array_equal(w.y_train.numpy(), raw["y_train"][:5])
    too_many = f"option n_test={N_TEST + 1} exceeds the {N_TEST} examples of mnist"
    with pytest.raises(InputError, match=too_many):
        get_workload("mnist-cnn", data_dir=str(tmp_path), n_test=N_TEST + 1)


def test_raw_idx_reader_scales_to_unit_interval(tmp_path):
    raw = fake_idx_set(seed=1)
    write_idx_set(tmp_path, raw, gz=True)
    arrays = files.load_idx_dataset(tmp_path, "mnist")
    np.testing.assert_allclose(arrays.x_test[:, 0], raw["x_test"] / 255.0, rtol=1e-6)


BAD_IDX = [
    pytest.param(b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc", "bad magic number", id="magic"),
    pytest.param(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc", "has 3 data bytes", id="short"),
    pytest.param(b"\x00", "bad magic number", id="tiny"),
]


@pytest.mark.parametrize("content, fragment", BAD_IDX)
def test_malformed_idx_is_an_input_error(tmp_path, content, fragment):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(InputError, match=fragment):
        files.read_idx(path)


def test_missing_idx_files_name_every_file_and_place(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw", fake_idx_set(0), gz=False)
    os.remove(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte")
    with pytest.raises(files.MissingDataError) as info:
        get_workload("mnist-cnn", data_dir=str(tmp_path))
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message and "train-images" not in message
    assert str(tmp_path / "MNIST" / "raw") in message and "download" in message


def cifar_batch(rng: np.random.Generator, n: int) -> tuple[dict, np.ndarray, list[int]]:
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    return (
        {b"batch_label": b"fake", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n},
        data,
        labels,
    )


def write_cifar(folder: Path, per_batch: int = 4) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train_data, train_labels = [], []
    for name in files.CIFAR_TRAIN:
        batch, data, labels = cifar_batch(rng, per_batch)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        train_data.append(data)
        train_labels += labels
    batch, test_data, test_labels = cifar_batch(rng, per_batch)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    return np.concatenate(train_data), train_labels, test_data, test_labels


@pytest.mark.parametrize("sub", ["cifar-10-batches-py", ""], ids=["standard-folder", "flat"])
def test_cifar_workload_reads_planes_and_labels(tmp_path, sub):
    train_data, train_labels, test_data, test_labels = write_cifar(tmp_path / sub)
    arrays = files.load_cifar10(tmp_path)
    assert arrays.x_train.shape == (20, 3, 32, 32)
    # pixel (row r, column c) of channel k is byte k*1024 + r*32 + c of the row
    for i, k, r, c in [(0, 0, 0, 0), (3, 1, 5, 7), (19, 2, 31, 31), (7, 2, 0, 31)]:
        assert arrays.x_train[i, k, r, c] * 255 == pytest.approx(train_data[i, k * 1024 + r * 32 + c])
    np.testing.assert_array_equal(arrays.y_train, train_labels)
    np.testing.assert_array_equal(arrays.y_test, test_labels)
    w = get_workload("cifar10-resnet8", data_dir=str(tmp_path), width=4)
    channel_means = w.x_train.double().mean(dim=(0, 2, 3))
    np.testing.assert_allclose(channel_means.numpy(), 0.0, atol=1e-5)  # standardised per channel
    assert w.model(0)(w.x_test[:2]).shape == (2, 10)


def test_cifar_read_from_the_unopened_archive(tmp_path):
    train_data, train_labels, test_data, test_labels = write_cifar(
        tmp_path / "unpacked" / "cifar-10-batches-py"
    )
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "unpacked" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    arrays = files.load_cifar10(tmp_path)
    np.testing.assert_allclose(arrays.x_test.reshape(len(test_labels), -1), test_data / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(arrays.y_train, train_labels)


def test_broken_archive_is_an_input_error(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(InputError, match="is not the CIFAR-10 python archive"):
        files.load_cifar10(tmp_path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": [1]}))
    with pytest.raises(InputError, match="refusing to load"):
        files.read_cifar_batch(path)


def test_missing_cifar_files_listed(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(files.MissingDataError, match=r"files missing: data_batch_3 \(looked in"):
        files.load_cifar10(tmp_path)


@pytest.mark.parametrize("name", ["mnist-cnn", "fashion-mnist-cnn", "cifar10-resnet8"])
def test_cli_missing_files_exit_2_with_file_names(tmp_path, name):
    result = CliRunner().invoke(cli, ["workloads", "--workload", name, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    expected = "test_batch" if name.startswith("cifar") else "t10k-images-idx3-ubyte"
    assert expected in result.output and str(tmp_path) in result.output


def test_cli_with_fake_files_lists_sizes(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw", fake_idx_set(0), gz=True)
    args = ["workloads", "--workload", "mnist-cnn", "--data-dir", str(tmp_path), "--format", "csv"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    header, row = result.output.strip().splitlines()
    values = dict(zip(header.split(","), row.split(","), strict=False))
    assert values["n_train"] == str(N_TRAIN) and values["input_shape"] == "1x28x28"


def test_listing_shows_a_damaged_file_as_a_status_not_an_error(tmp_path):
    """One unreadable dataset must not hide the other workloads in `batchscale workloads`."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (raw / name).write_bytes(b"\x01\x02\x03\x04 not an idx file")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"")
    args = ["workloads", "--data-dir", str(tmp_path), "--format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    status = {row["name"]: row["status"] for row in json.loads(result.stdout)}
    assert status["mnist-cnn"].startswith("error: ") and "not an idx file" in status["mnist-cnn"]
    assert status["fashion-mnist-cnn"] == f"files missing under {tmp_path}"
    assert status["linreg"] == "ok"
