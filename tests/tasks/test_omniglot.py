"""The Omniglot loader on small archives in the official layout, and on bad files."""

import hashlib
import io
import zipfile

import jax
import numpy as np
import pytest
from PIL import Image

import metaopt as mo
from metaopt.tasks.omniglot import OMNIGLOT_MD5


def drawing(seed: int) -> np.ndarray:
    """A 105×105 black-on-white drawing, as the release stores them (1 bit per pixel)."""
    rng = np.random.default_rng(seed)
    return rng.random((105, 105)) > 0.2  # True is white paper


def png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert("1").save(out, format="PNG")
    return out.getvalue()


def write_archive(path, part, characters):
    """``characters`` is ``{("Alphabet", "character01"): [seed, ...]}``."""
    with zipfile.ZipFile(path, "w") as zf:
        for (alphabet, character), seeds in characters.items():
            for k, seed in enumerate(seeds):
                name = f"{part}/{alphabet}/{character}/{seed:04d}_{k + 1:02d}.png"
                zf.writestr(name, png_bytes(drawing(seed)))


def md5(path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture
def archives(tmp_path):
    write_archive(
        tmp_path / "images_background.zip",
        "images_background",
        {("Latin", "character02"): [3, 4], ("Greek", "character01"): [1, 2]},
    )
    write_archive(
        tmp_path / "images_evaluation.zip",
        "images_evaluation",
        {("Tengwar", "character01"): [5, 6]},
    )
    sums = {f.name: md5(f) for f in tmp_path.glob("*.zip")}
    return tmp_path, sums


def test_omniglot_reads_characters_in_name_order_resized_and_inverted(archives):
    directory, sums = archives
    ds = mo.tasks.omniglot(directory, download=False, checksums=sums, image_size=7)
    assert ds.num_classes == 3
    x = np.concatenate([ds.split(s)[0] for s in ("train", "val", "test")])
    y = np.concatenate([ds.split(s)[1] for s in ("train", "val", "test")])
    assert x.shape == (6, 7, 7, 1)
    # Classes: background alphabets in name order (Greek, Latin), then evaluation.
    for label, seeds in enumerate([[1, 2], [3, 4], [5, 6]]):
        got = sorted(x[y == label][..., 0].tolist())
        expected = []
        for seed in seeds:  # independent: PIL's own resize of the inverted drawing
            gray = Image.fromarray(drawing(seed)).convert("L").resize((7, 7), Image.LANCZOS)
            expected.append((1.0 - np.asarray(gray, np.float32) / 255.0).tolist())
        np.testing.assert_allclose(np.array(got), np.array(sorted(expected)), atol=1e-6)


def test_omniglot_episodes_draw_from_the_loaded_characters(archives):
    directory, sums = archives
    ds = mo.tasks.omniglot(directory, download=False, checksums=sums, image_size=7)
    fam = mo.fewshot_family(ds, classes=range(3), ways=2, shots=1, query_shots=1)
    assert fam.sample(jax.random.key(0)).x_support.shape == (2, 49)


def test_omniglot_without_its_files_names_the_missing_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"images_background.zip is not in"):
        mo.tasks.omniglot(tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match=r"data_dir .* is not a directory"):
        mo.tasks.omniglot(tmp_path / "nowhere", download=False)


def test_omniglot_damaged_files_are_errors_that_name_the_file(archives):
    directory, sums = archives
    # The published checksums do not match these small archives.
    with pytest.raises(ValueError, match=r"checksum mismatch for .*images_background.zip"):
        mo.tasks.omniglot(directory, download=False)
    assert OMNIGLOT_MD5["images_background.zip"] != sums["images_background.zip"]
    (directory / "images_evaluation.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"images_evaluation.zip' is not a readable zip"):
        mo.tasks.omniglot(directory, download=False, checksums={})
    with zipfile.ZipFile(directory / "images_evaluation.zip", "w") as zf:
        zf.writestr("images_evaluation/A/character01/x_01.png", b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"drawing .*x_01.png' is not a readable PNG"):
        mo.tasks.omniglot(directory, download=False, checksums={})


def test_omniglot_reads_unpacked_folders(archives):
    directory, sums = archives
    with zipfile.ZipFile(directory / "images_background.zip") as zf:
        zf.extractall(directory)
    (directory / "images_background.zip").unlink()
    ds = mo.tasks.omniglot(directory, download=False, checksums=sums, image_size=7)
    assert ds.num_classes == 3
