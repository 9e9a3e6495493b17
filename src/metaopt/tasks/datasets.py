"""Classification datasets as host arrays with train, validation and test splits.

- :func:`digits`: scikit-learn's bundled 8×8 digits (1,797 images); no download.
- :func:`mnist`, :func:`fashion_mnist`: IDX files; :func:`cifar10`: python pickle
  batches. Each reads a directory you name, or the cache directory
  (``$METAOPT_DATA``, else ``$XDG_CACHE_HOME/metaopt``, else ``~/.cache/metaopt``),
  downloads there from the standard source when allowed, and verifies checksums.
- :func:`from_arrays`: your own ``(x, y)`` in one call.

Images are float32 in [0, 1] with shape ``(N, H, W, C)``; labels are int32.
"""

import dataclasses
import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from metaopt.core import checks
from metaopt.core.files import atomic_write

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A labelled dataset split three ways.

    Attributes:
      name: identifier, e.g. ``"digits"``.
      splits: ``{"train": (x, y), "val": (x, y), "test": (x, y)}`` as NumPy arrays.
      num_classes: number of labels.
    """

    name: str
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    num_classes: int

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in self.splits:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return self.splits[name]


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    name: str = "custom",
    num_classes: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Makes a :class:`Dataset` from arrays, shuffled once with ``seed`` and split.

    Example:
      >>> import numpy as np
      >>> ds = from_arrays(np.random.rand(100, 4), np.arange(100) % 3)
      >>> [len(ds.split(s)[0]) for s in ("train", "val", "test")], ds.num_classes
      ([70, 10, 20], 3)
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"x must be (N, ...) and y must be (N,), got x {x.shape} and y {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf")
    if y.min(initial=0) < 0:
        raise ValueError("y must hold non-negative class labels")
    num_classes = int(y.max()) + 1 if num_classes is None else num_classes
    num_classes = checks.positive_int("num_classes", num_classes)
    if y.max() >= num_classes:
        raise ValueError(f"y has label {y.max()} but num_classes is {num_classes}")
    for arg, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < frac < 1:
            raise ValueError(f"{arg} must be in (0, 1), got {frac}")
    n = len(x)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if min(n_val, n_test, n - n_val - n_test) < 1:
        raise ValueError(f"{n} examples are too few to split {val_fraction}/{test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    x, y = x[order], y[order].astype(np.int32)
    n_train = n - n_val - n_test
    splits = {
        "train": (x[:n_train], y[:n_train]),
        "val": (x[n_train : n_train + n_val], y[n_train : n_train + n_val]),
        "test": (x[n_train + n_val :], y[n_train + n_val :]),
    }
    return Dataset(name=name, splits=splits, num_classes=num_classes)


def digits() -> Dataset:
    """scikit-learn's 8×8 handwritten digits: 1,797 images, 10 classes, no download.

    Split 70/10/20 into train, validation and test with a fixed shuffle.

    Example:
      >>> ds = digits()
      >>> ds.split("train")[0].shape
      (1258, 8, 8, 1)
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    return from_arrays(x, data.target, name="digits", num_classes=10)


def cache_dir() -> Path:
    """Where downloaded datasets are kept."""
    if "METAOPT_DATA" in os.environ:
        return Path(os.environ["METAOPT_DATA"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "metaopt"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(
    directory: Path,
    filename: str,
    urls: list[str],
    checksums: Mapping[str, str],
    download: bool,
    dataset: str,
    all_files: list[str],
) -> Path:
    path = directory / filename
    if not path.exists() and download:
        errors = []
        for base in urls:
            try:
                with urllib.request.urlopen(base + filename, timeout=30) as response:
                    data = response.read()
            except OSError as e:
                errors.append(f"{base}: {e}")
                continue
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f, data=data: f.write(data))
            break
        else:
            reason = "; ".join(errors) or "no source"
            raise FileNotFoundError(
                f"{dataset}: {filename} is not in {str(directory)!r} and could not be "
                f"downloaded ({reason}). Put {', '.join(all_files)} in {str(directory)!r} "
                "or pass data_dir=DIR holding them."
            )
    if not path.exists():
        raise FileNotFoundError(
            f"{dataset}: {filename} is not in {str(directory)!r}. Put "
            f"{', '.join(all_files)} there, pass data_dir=DIR holding them, or allow download."
        )
    expected = checksums.get(filename)
    if expected is not None and (got := _md5(path)) != expected:
        raise ValueError(
            f"{dataset}: checksum mismatch for {str(path)!r}: expected md5 {expected}, got {got}. "
            "Delete the file and fetch it again."
        )
    return path


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST.

    Raises:
      ValueError: naming the file, if it is truncated or not IDX.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{str(path)!r} is not a readable IDX file: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{str(path)!r} is not an unsigned-byte IDX file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{str(path)!r} is truncated (incomplete header)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(shape)):
        raise ValueError(
            f"{str(path)!r} is truncated or corrupted: header says {shape}, "
            f"found {len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _idx_dataset(name, data_dir, download, checksums, urls, files, val_size):
    directory = Path(data_dir) if data_dir is not None else cache_dir() / name
    if data_dir is not None and not directory.is_dir():
        raise FileNotFoundError(f"data_dir {str(directory)!r} is not a directory")
    names = list(files.values())
    paths = {
        k: _fetch(directory, f, urls, checksums, download, name, names) for k, f in files.items()
    }
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{name}: {split} images {x.shape} and labels {y.shape} do not match")
    x_train = (arrays["train_images"][..., None] / 255.0).astype(np.float32)
    y_train = arrays["train_labels"].astype(np.int32)
    x_test = (arrays["test_images"][..., None] / 255.0).astype(np.float32)
    y_test = arrays["test_labels"].astype(np.int32)
    val_size = min(val_size, len(x_train) // 5) or 1
    splits = {
        "train": (x_train[:-val_size], y_train[:-val_size]),
        "val": (x_train[-val_size:], y_train[-val_size:]),
        "test": (x_test, y_test),
    }
    return Dataset(name=name, splits=splits, num_classes=10)


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_URLS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
]
FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_URLS = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]


def mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> Dataset:
    """MNIST from its four gzipped IDX files; the last 5,000 training images validate.

    Args:
      data_dir: a directory holding the files; the cache directory if None.
      download: fetch missing files from the standard sources.
      checksums: md5 per file name; the published ones if None. A file missing from
        the mapping is not verified.
    """
    sums = MNIST_MD5 if checksums is None else checksums
    return _idx_dataset("mnist", data_dir, download, sums, MNIST_URLS, MNIST_FILES, 5000)


def fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> Dataset:
    """Fashion-MNIST, in MNIST's file layout; arguments as :func:`mnist`."""
    sums = FASHION_MD5 if checksums is None else checksums
    return _idx_dataset("fashion_mnist", data_dir, download, sums, FASHION_URLS, MNIST_FILES, 5000)


CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = {CIFAR10_ARCHIVE: "c58f30108f718f92721af3b95e74349a"}
CIFAR10_URLS = ["https://www.cs.toronto.edu/~kriz/"]
CIFAR10_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            # The official format is a pickle; only load files you trust.
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], np.uint8)
        labels = np.asarray(batch[b"labels"], np.int32)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{str(path)!r} is not a readable CIFAR-10 batch: {e}") from e
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"{str(path)!r} is not a CIFAR-10 batch: data has shape {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def cifar10(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> Dataset:
    """CIFAR-10 from its python batches; the last 5,000 training images validate.

    ``data_dir`` may hold the batches directly, a ``cifar-10-batches-py`` folder, or
    the ``cifar-10-python.tar.gz`` archive (verified, then unpacked beside it).
    """
    directory = Path(data_dir) if data_dir is not None else cache_dir() / "cifar10"
    if data_dir is not None and not directory.is_dir():
        raise FileNotFoundError(f"data_dir {str(directory)!r} is not a directory")
    for candidate in (directory, directory / "cifar-10-batches-py"):
        if all((candidate / b).exists() for b in CIFAR10_BATCHES):
            batches_dir = candidate
            break
    else:
        sums = CIFAR10_MD5 if checksums is None else checksums
        archive = _fetch(
            directory,
            CIFAR10_ARCHIVE,
            CIFAR10_URLS,
            sums,
            download,
            "cifar10",
            [CIFAR10_ARCHIVE, "or the folder cifar-10-batches-py"],
        )
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(directory, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ValueError(f"{str(archive)!r} is not a readable archive: {e}") from e
        batches_dir = directory / "cifar-10-batches-py"
    parts = [_read_cifar_batch(batches_dir / b) for b in CIFAR10_BATCHES]
    x_train = np.concatenate([p[0] for p in parts[:5]]).astype(np.float32) / 255.0
    y_train = np.concatenate([p[1] for p in parts[:5]])
    x_test, y_test = parts[5][0].astype(np.float32) / 255.0, parts[5][1]
    val = min(5000, len(x_train) // 5) or 1
    splits = {
        "train": (x_train[:-val], y_train[:-val]),
        "val": (x_train[-val:], y_train[-val:]),
        "test": (x_test, y_test),
    }
    return Dataset(name="cifar10", splits=splits, num_classes=10)
