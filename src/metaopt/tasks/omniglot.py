"""Omniglot: 1,623 handwritten characters from 50 alphabets, 20 drawings of each.

Lake, Salakhutdinov, Tenenbaum 2015 ("Human-level concept learning through
probabilistic program induction"); the data set of Santoro et al. 2016, Vinyals et al.
2016 and Snell et al. 2017. :func:`omniglot` reads the two archives of the official
release, ``images_background.zip`` (30 alphabets, 964 characters) and
``images_evaluation.zip`` (20 alphabets, 659 characters), from a directory you name or
the cache directory (see :func:`~metaopt.tasks.datasets.cache_dir`), downloading them
there when allowed and verifying their md5 checksums. A directory may also hold them
unpacked (``images_background/`` and ``images_evaluation/`` folders).

Each character is a class; labels run over the background characters first, then the
evaluation ones, alphabets and characters in name order. The papers' split (Vinyals et
al.) trains on 1,200 characters, each also rotated by 90°, 180° and 270° as new classes
(``fewshot_family(..., rotations=4)``), and tests on the other 423:
``classes=range(1200)`` and ``classes=range(1200, 1623)`` here. Images are resized to
``image_size`` (28 in the papers) and inverted, so strokes are 1 and paper 0.
"""

import io
import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from metaopt.core import checks
from metaopt.tasks.datasets import Dataset, _fetch, cache_dir, from_arrays

OMNIGLOT_PARTS = ("images_background", "images_evaluation")
OMNIGLOT_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
OMNIGLOT_URLS = ["https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"]
BACKGROUND_CHARACTERS = 964
PAPERS_TRAIN_CHARACTERS = 1200


def omniglot(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    checksums: Mapping[str, str] | None = None,
    image_size: int = 28,
) -> Dataset:
    """Omniglot as a :class:`~metaopt.tasks.datasets.Dataset`, one class per character.

    Args:
      data_dir: a directory holding ``images_background.zip`` and
        ``images_evaluation.zip`` (or the folders they unpack to); the cache directory's
        ``omniglot`` folder if None.
      download: fetch missing archives from the official repository.
      checksums: md5 per archive name; the published ones if None. An archive missing
        from the mapping is not verified.
      image_size: height and width the 105×105 drawings are resized to.

    Returns:
      A dataset of ``(N, image_size, image_size, 1)`` float32 images in [0, 1]. Its
      splits are a random partition of the drawings; few-shot episodes
      (:func:`~metaopt.fewshot_family`) draw from every split of the classes they name.

    Raises:
      FileNotFoundError: naming the archive that is missing (and where to put it).
      ValueError: naming the archive or drawing that is damaged.

    Example:
      >>> import tempfile
      >>> omniglot(tempfile.mkdtemp(), download=False)
      Traceback (most recent call last):
      ...
      FileNotFoundError: ...images_background.zip...
    """
    image_size = checks.positive_int("image_size", image_size)
    directory = Path(data_dir) if data_dir is not None else cache_dir() / "omniglot"
    if data_dir is not None and not directory.is_dir():
        raise FileNotFoundError(f"data_dir {str(directory)!r} is not a directory")
    sums = OMNIGLOT_MD5 if checksums is None else checksums
    archives = [f"{part}.zip" for part in OMNIGLOT_PARTS]
    images, labels, label = [], [], 0
    for part, archive in zip(OMNIGLOT_PARTS, archives, strict=True):
        for drawings in _characters(directory, part, archive, archives, sums, download):
            images += [_decode(name, data, image_size) for name, data in drawings]
            labels += [label] * len(drawings)
            label += 1
    x = np.stack(images)[..., None]
    return from_arrays(x, np.asarray(labels), name="omniglot", num_classes=label)


def _characters(
    directory: Path,
    part: str,
    archive: str,
    archives: list[str],
    checksums: Mapping[str, str],
    download: bool,
) -> Iterator[list[tuple[str, bytes]]]:
    """Each character's drawings ``[(name, png bytes), ...]``, in name order."""
    folder = directory / part
    if folder.is_dir():
        files = sorted(folder.glob("*/*/*.png"))
        if not files:
            raise ValueError(f"omniglot: {str(folder)!r} holds no alphabet/character/*.png")
        yield from _grouped([(str(f), f.read_bytes()) for f in files])
        return
    path = _fetch(directory, archive, OMNIGLOT_URLS, checksums, download, "omniglot", archives)
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(n for n in zf.namelist() if n.endswith(".png"))
            members = [(f"{path}:{n}", zf.read(n)) for n in names]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"omniglot: {str(path)!r} is not a readable zip archive: {e}") from e
    if not members:
        raise ValueError(f"omniglot: {str(path)!r} holds no .png drawings")
    yield from _grouped(members)


def _grouped(members: list[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
    """Consecutive members of one character folder (the path up to the file name)."""
    current, group = None, []
    for name, data in members:
        folder = name.rsplit("/", 1)[0]
        if folder != current and group:
            yield group
            group = []
        current = folder
        group.append((name, data))
    if group:
        yield group


def _decode(name: str, data: bytes, image_size: int) -> np.ndarray:
    """One drawing as ``(image_size, image_size)`` float32, strokes 1 and paper 0."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            gray = image.convert("L").resize((image_size, image_size), Image.Resampling.LANCZOS)
            pixels = np.asarray(gray, np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"omniglot: drawing {name!r} is not a readable PNG: {e}") from e
    return np.clip(1.0 - pixels, 0.0, 1.0)
