"""Dataset loaders, on small files the tests write in each standard format."""

import gzip
import hashlib
import pickle
import re
import struct
import tarfile

import numpy as np
import pytest

from metaopt.tasks import datasets


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def md5(path):
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (30, 5, 4)),
        "train_labels": rng.integers(0, 10, 30),
        "test_images": rng.integers(0, 256, (12, 5, 4)),
        "test_labels": rng.integers(0, 10, 12),
    }
    for key, name in datasets.MNIST_FILES.items():
        write_idx(tmp_path / name, arrays[key])
    return tmp_path, arrays


@pytest.mark.parametrize("loader", [datasets.mnist, datasets.fashion_mnist])
def test_idx_round_trip_with_checksums(idx_dir, loader):
    directory, arrays = idx_dir
    sums = {name: md5(directory / name) for name in datasets.MNIST_FILES.values()}
    ds = loader(directory, download=False, checksums=sums)
    x_train, y_train = ds.split("train")
    x_val, y_val = ds.split("val")
    x_test, y_test = ds.split("test")
    # The last len(train) // 5 training images validate (fewer than 5,000 here).
    np.testing.assert_array_equal(np.concatenate([y_train, y_val]), arrays["train_labels"])
    np.testing.assert_allclose(
        np.concatenate([x_train, x_val])[..., 0], arrays["train_images"] / 255.0, rtol=1e-6
    )
    assert len(y_val) == 6
    np.testing.assert_allclose(x_test[..., 0], arrays["test_images"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, arrays["test_labels"])
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32


def test_checksum_mismatch_names_the_file(idx_dir):
    directory, _ = idx_dir
    sums = {name: md5(directory / name) for name in datasets.MNIST_FILES.values()}
    sums["t10k-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(ValueError, match=r"checksum mismatch.*t10k-labels"):
        datasets.mnist(directory, download=False, checksums=sums)


def test_published_checksums_reject_other_files(idx_dir):
    directory, _ = idx_dir
    with pytest.raises(ValueError, match="checksum mismatch"):
        datasets.mnist(directory, download=False)


def test_truncated_idx_file_is_a_clear_error(idx_dir):
    directory, _ = idx_dir
    path = directory / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    with gzip.open(path, "wb") as f:
        f.write(raw[:-7])
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*truncated"):
        datasets.mnist(directory, download=False, checksums={})
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        datasets.mnist(directory, download=False, checksums={})


def test_missing_directory_and_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        datasets.mnist(tmp_path / "nope", download=False)
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz.*Put"):
        datasets.mnist(tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match=r"cifar-10-python\.tar\.gz"):
        datasets.cifar10(tmp_path, download=False)


def write_cifar(directory, rng, sizes=(3, 3, 3, 3, 3, 4)):
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in zip(datasets.CIFAR10_BATCHES, sizes, strict=True):
        data = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with (directory / name).open("wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
        written[name] = (data, labels)
    return written


def test_cifar_batches_round_trip(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py", np.random.default_rng(1))
    ds = datasets.cifar10(tmp_path, download=False)
    x_test, y_test = ds.split("test")
    data, labels = written["test_batch"]
    assert x_test.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(y_test, labels)
    # Channel-major rows of 3072 bytes: red plane, then green, then blue.
    np.testing.assert_allclose(x_test[2, 0, 1, 1], data[2, 1024 + 1] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(x_test[3, 31, 31, 2], data[3, 3071] / 255.0, rtol=1e-6)
    assert len(ds.split("train")[1]) + len(ds.split("val")[1]) == 15


def test_cifar_archive_is_verified_and_unpacked(tmp_path):
    source = tmp_path / "src"
    write_cifar(source / "cifar-10-batches-py", np.random.default_rng(2))
    target = tmp_path / "data"
    target.mkdir()
    archive = target / datasets.CIFAR10_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with pytest.raises(ValueError, match="checksum mismatch"):
        datasets.cifar10(target, download=False)
    ds = datasets.cifar10(
        target, download=False, checksums={datasets.CIFAR10_ARCHIVE: md5(archive)}
    )
    assert ds.split("test")[0].shape == (4, 32, 32, 3)


def test_corrupted_cifar_batch_names_the_file(tmp_path):
    write_cifar(tmp_path, np.random.default_rng(3))
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="data_batch_3"):
        datasets.cifar10(tmp_path, download=False)


def test_from_arrays_splits_disjointly_and_completely():
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = np.arange(100) % 4
    ds = datasets.from_arrays(x, y, val_fraction=0.1, test_fraction=0.3, seed=3)
    parts = [ds.split(s) for s in ("train", "val", "test")]
    assert [len(p[1]) for p in parts] == [60, 10, 30]
    seen = np.concatenate([p[0][:, 0] for p in parts])
    np.testing.assert_array_equal(np.sort(seen), x[:, 0])
    for px, py in parts:
        np.testing.assert_array_equal(py, (px[:, 0] / 2).astype(int) % 4)
    assert ds.num_classes == 4


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros((10, 2)), np.zeros(9, int), "x must be"),
        (np.zeros((10, 2)), np.zeros(10), "integer"),
        (np.full((10, 2), np.nan), np.zeros(10, int), "NaN"),
        (np.zeros((3, 2)), np.zeros(3, int), "too few"),
        (np.zeros((10, 2)), -np.ones(10, int), "non-negative"),
    ],
)
def test_from_arrays_rejects_bad_input(x, y, match):
    with pytest.raises((ValueError, TypeError), match=match):
        datasets.from_arrays(x, y)


def test_digits_ship_without_download():
    ds = datasets.digits()
    assert ds.num_classes == 10
    assert sum(len(ds.split(s)[1]) for s in ("train", "val", "test")) == 1797
    assert ds.split("train")[0].shape[1:] == (8, 8, 1)
    assert 0.0 <= ds.split("test")[0].min() and ds.split("test")[0].max() <= 1.0
