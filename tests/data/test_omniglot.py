"""The omniglot source: the fixed split file, a tiny fake Omniglot built in tmp_path, the cache, the download list.

The real-data tests at the end read ../shared/data/omniglot and skip with a reason where it is absent; they use
the ordinary cache ($SELFMETA_CACHE or ~/.cache/selfmeta), so after the first run they take about a second.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared
from selfmeta.data import download, load_data
from selfmeta.data.dataset import Dataset, fixed_split
from selfmeta.data.source import detect_format
from selfmeta.data.sources.omniglot import SPLIT_FILE, read_split_file
from selfmeta.errors import SelfmetaError

ROTATIONS = ("rot000", "rot090", "rot180", "rot270")


def by_class(ds: Dataset, per_class: int) -> np.ndarray:
    """(C * 4 * per_class, 1, 28, 28) items, ordered by class -> (C, 4, per_class, 28, 28)."""
    assert ds.y.tolist() == [label for label in range(ds.num_classes) for _ in range(per_class)]
    return ds.x[:, 0].numpy().reshape(-1, 4, per_class, 28, 28)


def assert_rotations(images: np.ndarray) -> None:
    """Class k of each character is its rot000 images turned k quarter turns counter-clockwise."""
    for k in range(1, 4):
        assert np.array_equal(images[:, k], np.rot90(images[:, 0], k, axes=(2, 3)))


# ------------------------------------------------------------------------------------------ split file


def test_split_file_counts_and_protocol():
    characters = read_split_file(SPLIT_FILE)
    counts = Counter(c.split for c in characters)
    assert counts == {"train": 1028, "val": 172, "test": 423}
    assert len({c.name for c in characters}) == 1623  # no character in two splits (or twice in one)
    assert {c.part for c in characters if c.split == "test"} == {"evaluation"}
    assert {c.part for c in characters if c.split == "val"} == {"background"}
    # Whole alphabets: no alphabet is in two splits.
    splits_of = {}
    for c in characters:
        splits_of.setdefault(c.name.split("/")[0], set()).add(c.split)
    assert len(splits_of) == 50 and all(len(s) == 1 for s in splits_of.values())
    assert all(re.fullmatch(r"[^/]+/character\d\d", c.name) for c in characters)
    # File order: train, then val, then test.
    assert [c.split for c in characters] == sorted((c.split for c in characters), key=["train", "val", "test"].index)


def test_split_file_is_package_data():
    assert SPLIT_FILE.is_file()
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert "data/sources/omniglot_split.txt" in pyproject


# ------------------------------------------------------------------------------------- a fake Omniglot

FAKE = {  # zip -> alphabet -> number of characters; each character gets DRAWINGS drawings
    "background": {"Alpha": 2, "Beta": 1},
    "evaluation": {"Gamma": 2, "Delta": 1},
}
DRAWINGS = 3
FAKE_SPLIT = (
    "# a tiny split for the tests\n"
    "train\tbackground\tAlpha/character01\n"
    "train\tbackground\tAlpha/character02\n"
    "train\tevaluation\tDelta/character01\n"
    "val\tbackground\tBeta/character01\n"
    "test\tevaluation\tGamma/character02\n"
    "test\tevaluation\tGamma/character01\n"
)


def drawing(seed: int) -> np.ndarray:
    """A 105x105 drawing like Omniglot's: black strokes (False) on white (True), asymmetric so rotations differ."""
    rng = np.random.default_rng(seed)
    image = np.ones((105, 105), dtype=bool)
    for _ in range(3):
        r, c = rng.integers(5, 80, 2)
        image[r : r + rng.integers(4, 25), c : c + rng.integers(4, 25)] = False
    image[5:10, 5:40] = False  # a bar near the top left corner
    return image


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def expected_28(image: np.ndarray) -> np.ndarray:
    """The protocol in plain Pillow: grey, Lanczos to 28x28, inverted."""
    return 255 - np.asarray(Image.fromarray(image).convert("L").resize((28, 28), Image.LANCZOS))


def make_fake(root: Path, zipped: bool = True) -> dict[str, np.ndarray]:
    """root/images_{background,evaluation}.zip (or folders); returns 'Alphabet/characterNN' -> (3, 28, 28)."""
    root.mkdir(parents=True, exist_ok=True)
    expected, seed = {}, 0
    for part, alphabets in FAKE.items():
        members = {}
        for alphabet, n in alphabets.items():
            for c in range(1, n + 1):
                character = f"{alphabet}/character{c:02d}"
                images = []
                for d in range(1, DRAWINGS + 1):
                    seed += 1
                    images.append(drawing(seed))
                    members[f"images_{part}/{character}/{seed:04d}_{d:02d}.png"] = png(images[-1])
                expected[character] = np.stack([expected_28(i) for i in images])
        if zipped:
            with zipfile.ZipFile(root / f"images_{part}.zip", "w") as z:
                for name, data in members.items():
                    z.writestr(name, data)
        else:
            for name, data in members.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
    return expected


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake Omniglot, its split file and a private cache; returns (folder, split file, expected images)."""
    monkeypatch.setenv("SELFMETA_CACHE", str(tmp_path / "cache"))
    split_file = tmp_path / "split.txt"
    split_file.write_text(FAKE_SPLIT)
    return tmp_path / "omniglot", split_file, make_fake(tmp_path / "omniglot")


def test_fake_zips_load(fake):
    folder, split_file, expected = fake
    assert detect_format(folder) == "omniglot"  # not imagefolder, which takes any folder
    wanted = {
        "train": ["Alpha/character01", "Alpha/character02", "Delta/character01"],
        "val": ["Beta/character01"],
        "test": ["Gamma/character02", "Gamma/character01"],  # split-file order, not sorted
    }
    wanted["all"] = wanted["train"] + wanted["val"] + wanted["test"]
    for split, characters in wanted.items():
        ds = load_data(folder, split, split_file=split_file)
        assert ds.name == "omniglot" and ds.modality == "image"
        assert ds.x.shape == (len(characters) * 4 * DRAWINGS, 1, 28, 28) and ds.x.dtype == torch.uint8
        assert ds.y.dtype == torch.int64
        assert ds.classes == [f"{c}/{r}" for c in characters for r in ROTATIONS]
        images = by_class(ds, DRAWINGS)
        for i, character in enumerate(characters):
            assert np.array_equal(images[i, 0], expected[character])
        assert_rotations(images)
        assert float(ds.x.float().mean()) < 64  # strokes bright on a dark background


def test_fake_strokes_are_bright(tmp_path, monkeypatch):
    """An all-white drawing (no strokes) loads as zeros, an all-black one as 255."""
    monkeypatch.setenv("SELFMETA_CACHE", str(tmp_path / "cache"))
    for part, value in (("background", True), ("evaluation", False)):
        with zipfile.ZipFile(tmp_path / f"images_{part}.zip", "w") as z:
            z.writestr(f"images_{part}/A{part}/character01/0001_01.png", png(np.full((105, 105), value)))
    (tmp_path / "split.txt").write_text(
        "train\tbackground\tAbackground/character01\ntest\tevaluation\tAevaluation/character01\n"
    )
    blank = load_data(tmp_path, "train", split_file=tmp_path / "split.txt")
    ink = load_data(tmp_path, "test", split_file=tmp_path / "split.txt")
    assert int(blank.x.max()) == 0 and int(ink.x.min()) == 255


def test_fake_unzipped_folders(tmp_path, fake):
    folder, split_file, _ = fake
    make_fake(tmp_path / "unzipped", zipped=False)
    assert detect_format(tmp_path / "unzipped") == "omniglot"
    for split in ("train", "test"):
        from_zip = load_data(folder, split, split_file=split_file)
        from_dir = load_data(tmp_path / "unzipped", split, split_file=split_file)
        assert torch.equal(from_zip.x, from_dir.x) and torch.equal(from_zip.y, from_dir.y)
        assert from_zip.classes == from_dir.classes


def test_fake_cache(tmp_path, fake):
    folder, split_file, _ = fake
    first = load_data(folder, "all", split_file=split_file)  # decodes, writes the cache
    files = sorted((tmp_path / "cache").iterdir())
    assert [f.name.split("-")[:2] for f in files] == [["omniglot", "background"], ["omniglot", "evaluation"]]
    assert all(f.name.endswith(".npz") for f in files)
    with np.load(files[0], allow_pickle=False) as cached:  # plain arrays, no pickle
        assert cached["images"].shape == (3 * DRAWINGS, 28, 28) and cached["images"].dtype == np.uint8
    again = load_data(folder, "all", split_file=split_file)  # from the cache
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    # A damaged cache file is decoded again, and rewritten.
    files[0].write_bytes(b"not an npz")
    assert torch.equal(load_data(folder, "all", split_file=split_file).x, first.x)
    assert np.load(files[0], allow_pickle=False)["images"].shape == (3 * DRAWINGS, 28, 28)
    # A changed zip (another size and mtime) is not served from the old cache.
    zip_path = folder / "images_evaluation.zip"
    with zipfile.ZipFile(zip_path, "a") as z:
        z.writestr("images_evaluation/Delta/character01/9999_99.png", png(np.ones((105, 105), dtype=bool)))
    assert len(load_data(folder, "train", split_file=split_file)) == (2 * DRAWINGS + DRAWINGS + 1) * 4
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_fake_cache_folder_not_writable(tmp_path, fake, monkeypatch):
    folder, split_file, _ = fake
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SELFMETA_CACHE", str(tmp_path / "a-file" / "cache"))  # cannot be made
    assert len(load_data(folder, "val", split_file=split_file)) == DRAWINGS * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "omniglot", "split.txt"]


def test_fake_missing_character(fake):
    folder, split_file, _ = fake
    split_file.write_text(FAKE_SPLIT + "test\tevaluation\tGamma/character09\n")
    with pytest.raises(SelfmetaError, match="images_evaluation has no folder Gamma/character09"):
        load_data(folder, "test", split_file=split_file)
    load_data(folder, "val", split_file=split_file)  # the other splits do not need it


def test_fake_corrupt_zip(fake):
    folder, split_file, _ = fake
    path = folder / "images_background.zip"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SelfmetaError, match="images_background.zip: corrupt or truncated zip"):
        load_data(folder, "train", split_file=split_file)
    load_data(folder, "test", split_file=split_file)  # only the evaluation zip
    # A zip whose bytes are intact but whose PNG is not an image.
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images_background/Alpha/character01/0001_01.png", b"not a png")
    with pytest.raises(SelfmetaError, match="0001_01.png: corrupt or unreadable image"):
        load_data(folder, "train", split_file=split_file)


def test_fake_missing_zip(fake):
    folder, split_file, _ = fake
    (folder / "images_evaluation.zip").unlink()
    assert detect_format(folder) == "imagefolder"
    with pytest.raises(SelfmetaError, match="no images_evaluation.zip"):
        load_data(folder, "test", format="omniglot", split_file=split_file)


@pytest.mark.parametrize(
    "line, message",
    [
        ("dev\tbackground\tAlpha/character01", "line 2: expected train|val|test"),
        ("train\tbackground\tAlpha", "line 2: expected"),
        ("train background Alpha/character01", "line 2: expected"),
        ("val\tbackground\tAlpha/character01", "line 2: Alpha/character01 is listed twice"),
    ],
)
def test_bad_split_file(fake, line, message):
    folder, split_file, _ = fake
    split_file.write_text(f"train\tbackground\tAlpha/character01\n{line}\n")
    with pytest.raises(SelfmetaError, match=re.escape(message)):
        load_data(folder, "train", split_file=split_file)


def test_empty_split_and_missing_split_file(fake, tmp_path):
    folder, split_file, _ = fake
    split_file.write_text("train\tbackground\tAlpha/character01\n")
    with pytest.raises(SelfmetaError, match="no characters in the val split"):
        load_data(folder, "val", split_file=split_file)
    with pytest.raises(SelfmetaError, match="cannot read the omniglot split file"):
        load_data(folder, "val", split_file=tmp_path / "absent.txt")


# ------------------------------------------------------------------------------- "val" elsewhere


def test_val_split_refused_by_sources_without_one(tmp_path):
    with pytest.raises(SelfmetaError, match="the digits format has no 'val' split; valid: train, test, all"):
        load_data("digits", "val")
    (tmp_path / "t.csv").write_text("a,label\n1,x\n2,y\n")
    with pytest.raises(SelfmetaError, match="t.csv: no 'val' split here; valid: train, test, all"):
        load_data(tmp_path / "t.csv", "val")   # tables have one only as interaction logs (leave-one-out)
    digits = load_data("digits", "all")
    with pytest.raises(SelfmetaError, match="no 'val' split here"):
        fixed_split(digits, "val")


# ---------------------------------------------------------------------------------------- download


def test_omniglot_download_list():
    assert "omniglot" in download.DOWNLOADERS
    assert [r.url.rsplit("/", 1)[-1] for r in download.OMNIGLOT] == ["images_background.zip", "images_evaluation.zip"]
    official = "https://github.com/brendenlake/omniglot/raw/master/python/"
    assert all(r.url.startswith(official) for r in download.OMNIGLOT)
    assert all(re.fullmatch(r"[0-9a-f]{32}", r.md5) for r in download.OMNIGLOT)


def test_omniglot_download_verifies(tmp_path, fake, monkeypatch):
    """The downloader, pointed at file:// copies of the fake zips: verified, then loadable as omniglot."""
    folder, split_file, _ = fake
    zips = [folder / f"images_{part}.zip" for part in ("background", "evaluation")]
    remotes = [download.RemoteFile(z.as_uri(), hashlib.md5(z.read_bytes()).hexdigest()) for z in zips]
    monkeypatch.setattr(download, "OMNIGLOT", remotes)
    target = download.download_omniglot(tmp_path / "dl")
    assert target == tmp_path / "dl" / "omniglot"
    assert sorted(p.name for p in target.iterdir()) == ["images_background.zip", "images_evaluation.zip"]
    assert detect_format(target) == "omniglot"
    assert len(load_data(target, "test", split_file=split_file)) == 2 * 4 * DRAWINGS
    # A wrong checksum discards the download and leaves nothing behind.
    monkeypatch.setattr(download, "OMNIGLOT", [download.RemoteFile(remotes[0].url, "0" * 32)])
    with pytest.raises(SelfmetaError, match="checksum mismatch"):
        download.download_omniglot(tmp_path / "bad")
    assert list((tmp_path / "bad" / "omniglot").iterdir()) == []


# ---------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real():
    folder = shared("omniglot")
    return {split: load_data(folder, split) for split in ("train", "val", "test")}


@pytest.mark.shared_data
@pytest.mark.parametrize("split, characters", [("train", 1028), ("val", 172), ("test", 423)])
def test_real_split(real, split, characters):
    ds = real[split]
    assert ds.name == "omniglot" and ds.num_classes == 4 * characters
    assert ds.x.shape == (4 * characters * 20, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert torch.bincount(ds.y, minlength=ds.num_classes).tolist() == [20] * ds.num_classes
    assert float(ds.x.float().mean()) < 64  # dark background
    assert int(ds.x.max()) == 255 and int(ds.x.min()) == 0
    assert_rotations(by_class(ds, 20))
    listed = [c.name for c in read_split_file(SPLIT_FILE) if c.split == split]
    assert ds.classes == [f"{c}/{r}" for c in listed for r in ROTATIONS]


@pytest.mark.shared_data
def test_real_splits_never_mix_characters(real):
    characters = {split: {c.rsplit("/", 1)[0] for c in ds.classes} for split, ds in real.items()}
    assert characters["train"].isdisjoint(characters["val"])
    assert characters["train"].isdisjoint(characters["test"])
    assert characters["val"].isdisjoint(characters["test"])
    # Nor alphabets.
    alphabets = {split: {c.split("/")[0] for c in names} for split, names in characters.items()}
    assert sum(len(a) for a in alphabets.values()) == len(set().union(*alphabets.values())) == 50


@pytest.mark.shared_data
def test_real_all_is_train_val_test(real):
    full = load_data(shared("omniglot"), "all")
    assert full.classes == real["train"].classes + real["val"].classes + real["test"].classes
    assert torch.equal(full.x, torch.cat([real[s].x for s in ("train", "val", "test")]))
