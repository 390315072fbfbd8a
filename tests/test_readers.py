"""Source listing: every format, auto-detection, failures with reasons, CSV offsets, splits."""

from __future__ import annotations

import gzip
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prepro import readers
from prepro.readers import walker
from prepro.errors import InputError, SampleError
from prepro.readers import (BadPixelsError, RawItem, SourceNotFoundError, assign_splits, count_mismatches,
                            detect_format, find_classes, list_source, parse_pixels, read_csv_pixels)
from prepro.specs import load_spec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _img(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _pixels(seed: int, n: int = 48 * 48) -> str:
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, n)))


def _by_id(listing) -> dict[str, RawItem]:
    return {it.source_id: it for it in listing.items}


def _fail_ids(listing) -> dict[str, str]:
    return {f.source: f.reason for f in listing.failures}


# ---------------------------------------------------------------------------------------------
# folder


@pytest.fixture
def class_tree(tmp_path):
    root = tmp_path / "faces"
    for lab in ("anger", "happy", "Sad"):
        for i in range(3):
            _img(root / lab / f"{lab}_{i}.png", i)
    _img(root / "happy" / "sub" / "nested.jpg")
    _img(root / "happy" / "ünïcødé_表情.PNG")
    (root / "happy" / "notes.txt").write_text("not an image")
    (root / "happy" / ".DS_Store").write_bytes(b"\0")
    _img(root / "confused" / "c1.png")
    _img(root / "confused" / "c2.png")
    return root


def test_folder_listing(class_tree):
    listing = list_source(str(class_tree))
    assert listing.format == "folder" and listing.root == str(class_tree.resolve())
    items = _by_id(listing)
    assert len(items) == 11
    assert items["anger/anger_0.png"].label == "angry"
    assert items["Sad/Sad_2.png"].label == "sad"
    assert items["happy/sub/nested.jpg"].label == "happy"
    uni = items["happy/ünïcødé_表情.PNG"]
    assert uni.label == "happy" and os.path.isfile(uni.path) and os.path.isabs(uni.path)
    assert all(it.split is None and it.subject is None and it.offset == -1 for it in listing.items)
    fails = _fail_ids(listing)
    assert fails["happy/notes.txt"] == "not an image file (extension .txt)"
    assert "happy/.DS_Store" not in fails
    for f in ("confused/c1.png", "confused/c2.png"):
        assert "'confused'" in fails[f] and "angry" in fails[f] and "surprise" in fails[f]
    assert len(fails) == 3
    # deterministic, sorted order
    assert [it.source_id for it in listing.items] == sorted(items)
    assert list_source(str(class_tree), "folder").items == listing.items


def test_find_classes(class_tree):
    classes, class_to_idx = find_classes(class_tree)
    assert classes == ["Sad", "anger", "confused", "happy"]
    assert class_to_idx == {"Sad": 4, "anger": 0, "happy": 3}


def test_unreadable_subfolder(class_tree, monkeypatch):
    real = os.scandir
    blocked = str(class_tree.resolve() / "anger")

    def fake(path="."):
        if os.fspath(path) == blocked:
            raise PermissionError(13, "Permission denied", blocked)
        return real(path)

    monkeypatch.setattr(walker.os, "scandir", fake)
    listing = list_source(str(class_tree), "folder")
    fails = _fail_ids(listing)
    assert fails["anger/"] == "unreadable folder (Permission denied)"
    assert not any(it.label == "angry" for it in listing.items)
    assert len(listing.items) == 8  # the rest is still listed


def test_symlink_outside_root_not_followed(tmp_path):
    root = tmp_path / "src"
    _img(root / "happy" / "a.png")
    outside = _img(tmp_path / "elsewhere" / "b.png")
    (root / "happy" / "b.png").symlink_to(outside)
    (root / "sad").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "happy" / "inside.png").symlink_to(root / "happy" / "a.png")
    listing = list_source(str(root))
    assert sorted(_by_id(listing)) == ["happy/a.png"]  # inside.png names the same file: listed, not sampled
    fails = _fail_ids(listing)
    assert "outside the source" in fails["happy/b.png"] and "outside the source" in fails["sad"]
    assert fails["happy/inside.png"].startswith("a second name of a listed image") and \
        fails["happy/inside.png"].endswith(": happy/a.png")


def test_folder_with_spec_aliases(tmp_path):
    root = tmp_path / "ck"
    _img(root / "contempt" / "S010_004_00000017.png")
    _img(root / "sadness" / "S011_002_00000005.png")
    _img(root / "sadness" / "oddname.png")
    listing = list_source(str(root), spec=load_spec("ckplus"))
    items = _by_id(listing)
    assert items["contempt/S010_004_00000017.png"].label == "contempt"
    assert items["contempt/S010_004_00000017.png"].subject == "S010"
    assert items["sadness/S011_002_00000005.png"].subject == "S011"
    assert "subject pattern" in _fail_ids(listing)["sadness/oddname.png"]
    assert listing.spec.name == "ckplus"


def test_split_folders(tmp_path):
    root = tmp_path / "s"
    _img(root / "Training" / "happy" / "a.png")
    _img(root / "valid" / "happy" / "b.png")
    _img(root / "TEST" / "fear" / "c.png")
    _img(root / "extras" / "happy" / "d.png")
    _img(root / "Training" / "stray.png")
    listing = list_source(str(root))
    assert [(it.source_id, it.split) for it in listing.items] == [
        ("Training/happy/a.png", "train"), ("valid/happy/b.png", "val"), ("TEST/fear/c.png", "test")]
    fails = _fail_ids(listing)
    assert "not a split folder" in fails["extras/happy/d.png"]
    assert "not inside a class folder" in fails["Training/stray.png"]


@pytest.fixture
def kaggle_fer(tmp_path):
    root = tmp_path / "fer2013"
    for lab in ("angry", "happy"):
        for i in range(3):
            _img(root / "train" / lab / f"Training_{i}{lab}.jpg", i)
        _img(root / "test" / lab / f"PublicTest_1{lab}.jpg")
        _img(root / "test" / lab / f"PrivateTest_2{lab}.jpg")
    return root


def test_fer2013_prefix_layout_auto(kaggle_fer):
    listing = list_source(str(kaggle_fer))
    assert listing.format == "folder"
    splits = {it.source_id: it.split for it in listing.items}
    assert splits["test/angry/PublicTest_1angry.jpg"] == "val"
    assert splits["test/happy/PrivateTest_2happy.jpg"] == "test"
    assert Counter(splits.values()) == {"train": 6, "val": 2, "test": 2}
    # listing order: train, val, test
    assert [it.split for it in listing.items] == ["train"] * 6 + ["val"] * 2 + ["test"] * 2


def test_fer2013_prefix_layout_with_spec(kaggle_fer):
    _img(kaggle_fer / "test" / "angry" / "mine.jpg")
    spec = load_spec("fer2013")
    listing = list_source(str(kaggle_fer), spec=spec)
    assert Counter(it.split for it in listing.items) == {"train": 6, "val": 2, "test": 2}
    assert "no split prefix" in _fail_ids(listing)["test/angry/mine.jpg"]
    assert count_mismatches(listing.items, spec) == [
        "fer2013: 6 train items, expected 28709", "fer2013: 2 val items, expected 3589",
        "fer2013: 2 test items, expected 3589"]
    # without the spec a file without prefix in test/ means test/ is an ordinary split folder
    plain = list_source(str(kaggle_fer))
    assert Counter(it.split for it in plain.items) == {"train": 6, "test": 5}


# ---------------------------------------------------------------------------------------------
# ferg, jaffe, flat


def test_ferg(tmp_path):
    root = tmp_path / "FERG_DB_256"
    for ch in ("aia", "ray"):
        for emo in ("anger", "joy", "sadness"):
            _img(root / ch / f"{ch}_{emo}" / f"{ch}_{emo}_1.png")
    _img(root / "ray" / "ray_bored" / "ray_bored_1.png")
    assert detect_format(root) == "ferg"
    listing = list_source(str(root))
    assert listing.format == "ferg" and len(listing.items) == 6
    it = _by_id(listing)["aia/aia_joy/aia_joy_1.png"]
    assert (it.label, it.subject, it.split) == ("happy", "aia", None)
    assert "'bored'" in _fail_ids(listing)["ray/ray_bored/ray_bored_1.png"]
    assert list_source(str(root), spec=load_spec("ferg")).items == listing.items


def test_jaffe(tmp_path):
    root = tmp_path / "jaffe"
    for name in ("KA.AN1.39.tiff", "KA.HA2.30.tiff", "YM.NE1.49.tiff", "NM.SU1.115.tiff", "KL.FE3.178.tiff"):
        _img(root / name)
    assert detect_format(root) == "jaffe"
    _img(root / "README.png")
    (root / "README").write_text("x")
    listing = list_source(str(root), spec=load_spec("jaffe"))
    items = _by_id(listing)
    assert listing.format == "jaffe" and len(items) == 5
    assert (items["KA.AN1.39.tiff"].label, items["KA.AN1.39.tiff"].subject) == ("angry", "KA")
    assert items["KL.FE3.178.tiff"].label == "fear" and items["YM.NE1.49.tiff"].label == "neutral"
    fails = _fail_ids(listing)
    assert "JAFFE pattern" in fails["README.png"] and fails["README"] == "not an image file (no extension)"
    assert list_source(str(root), "jaffe").items == listing.items  # no spec: the same


def test_jaffe_in_class_folders_as_found_online(tmp_path):
    """Class folders and names like KA-AN1.jpeg: detected, labelled and split by subject."""
    root = tmp_path / "jaffe"
    codes = {"AN": "angry", "HA": "happy", "SA": "sad"}
    for subject in ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM"):
        for code, label in codes.items():
            _img(root / label / f"{subject}-{code}1.jpeg")
    assert detect_format(root) == "jaffe"
    for spec in (None, load_spec("jaffe")):
        listing = list_source(str(root), spec=spec)
        items = _by_id(listing)
        assert len(items) == 30 and not listing.failures
        assert (items["angry/KA-AN1.jpeg"].label, items["angry/KA-AN1.jpeg"].subject) == ("angry", "KA")
        split = readers.assign_splits(listing.items, val_frac=0.1, test_frac=0.2, seed=0, by_subject=True)
        by_subject = {}
        for it in split:
            by_subject.setdefault(it.subject, set()).add(it.split)
        assert all(len(s) == 1 for s in by_subject.values())


def test_flat(tmp_path):
    root = tmp_path / "photos"
    _img(root / "b.jpg")
    _img(root / "a.png")
    _img(root / "more" / "c.webp")
    assert detect_format(root) == "flat"
    listing = list_source(str(root))
    assert [(it.source_id, it.label, it.split) for it in listing.items] == [
        ("a.png", None, None), ("b.jpg", None, None), ("more/c.webp", None, None)]


def test_detection_errors(tmp_path):
    (tmp_path / "x" / "stuff" / "things").mkdir(parents=True)
    with pytest.raises(InputError, match="folder, fer2013-csv, ferg, jaffe, flat, labels"):
        list_source(str(tmp_path / "x"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="cannot tell whether this is a label file"):
        detect_format(tmp_path / "notes.txt")
    (tmp_path / "notes.doc").write_text("x")
    with pytest.raises(InputError, match="not a .csv, .csv.gz, .tsv or .txt"):
        detect_format(tmp_path / "notes.doc")
    with pytest.raises(InputError, match="allowed: auto, folder"):
        list_source(str(tmp_path), "videos")
    with pytest.raises(InputError, match="contradicts dataset 'jaffe'"):
        list_source(str(tmp_path), "flat", spec=load_spec("jaffe"))


def test_missing_and_empty_root(tmp_path):
    with pytest.raises(SourceNotFoundError, match="does not exist") as e:
        list_source(str(tmp_path / "nope"))
    assert "\n" not in str(e.value)
    assert isinstance(e.value, InputError) and isinstance(e.value, FileNotFoundError)
    (tmp_path / "empty" / "happy").mkdir(parents=True)
    with pytest.raises(InputError, match="looked for images in ROOT/<label>/"):
        list_source(str(tmp_path / "empty"))
    with pytest.raises(InputError):
        list_source(str(tmp_path / "empty" / "happy"), "flat")


# ---------------------------------------------------------------------------------------------
# fer2013-csv


def _write_csv(path: Path, header: str = "emotion,pixels,Usage") -> list[str]:
    rows = [
        f"0,{_pixels(0)},Training",
        f"3,{_pixels(1)},PublicTest",
        f"6,{_pixels(2)},PrivateTest",
        f"9,{_pixels(3)},Training",            # unknown emotion code
        f"4,{_pixels(4)},Holdout",             # unknown Usage
        f"2,{_pixels(5)}",                     # missing field
        f"5,{_pixels(6, 2303)},Training",      # wrong pixel count: found at decode time, not here
        f"1,{_pixels(7)},Training",
        "4,,Training",                         # empty pixels
        f"5,{_pixels(8)},Training",
    ]
    text = header + "\n" + "\n".join(rows) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", newline="") as fh:
            fh.write(text)
    else:
        path.write_text(text, newline="")
    return rows


@pytest.mark.parametrize("name", ["fer.csv", "fer.csv.gz"])
def test_csv_listing(tmp_path, name):
    path = tmp_path / name
    rows = _write_csv(path)
    assert detect_format(path) == "fer2013-csv"
    listing = list_source(str(path))
    assert listing.format == "fer2013-csv" and listing.spec.name == "fer2013-csv"
    items = _by_id(listing)
    assert sorted(items) == [f"{name}:row={n}" for n in (0, 1, 2, 6, 7, 9)]
    assert [it.source_id for it in listing.items] == [f"{name}:row={n}" for n in (0, 6, 7, 9, 1, 2)]
    assert [(items[f"{name}:row={n}"].label, items[f"{name}:row={n}"].split) for n in (0, 1, 2)] == [
        ("angry", "train"), ("happy", "val"), ("neutral", "test")]
    fails = _fail_ids(listing)
    assert set(fails) == {f"{name}:row={n}" for n in (3, 4, 5, 8)}
    assert "unknown emotion '9'" in fails[f"{name}:row=3"] and "6=neutral" in fails[f"{name}:row=3"]
    assert "unknown Usage 'Holdout'" in fails[f"{name}:row=4"] and "PrivateTest" in fails[f"{name}:row=4"]
    assert "2 fields, expected 3" in fails[f"{name}:row=5"]
    assert "missing field pixels" in fails[f"{name}:row=8"]
    for n in (0, 2, 9):
        it = items[f"{name}:row={n}"]
        assert it.path == str(path.resolve())
        assert read_csv_pixels(it.path, it.offset) == rows[n].split(",")[1]
    img = parse_pixels(read_csv_pixels(str(path), items[f"{name}:row=0"].offset))
    assert img.shape == (48, 48) and img.dtype == np.uint8
    assert img.ravel().tolist() == [int(v) for v in rows[0].split(",")[1].split()]
    bad = items[f"{name}:row=6"]
    with pytest.raises(BadPixelsError, match="expected 2304 values .*got 2303"):
        parse_pixels(read_csv_pixels(bad.path, bad.offset))


def test_csv_header_variants(tmp_path):
    path = tmp_path / "spaced.csv"
    path.write_text("emotion, pixels\r\n" f"1, {_pixels(0)}\r\n" f"2, {_pixels(1)}\r\n")
    listing = list_source(str(path))
    assert [(it.label, it.split) for it in listing.items] == [("disgust", None), ("fear", None)]
    assert parse_pixels(read_csv_pixels(str(path), listing.items[1].offset)).shape == (48, 48)
    # without a pixels column a .csv is a label file; as a FER2013 CSV its header is refused
    (tmp_path / "other.csv").write_text("label,image\n1,2\n")
    assert detect_format(tmp_path / "other.csv") == "labels"
    with pytest.raises(InputError, match="lacks column.*emotion, pixels"):
        list_source(str(tmp_path / "other.csv"), "fer2013-csv")


def _gz_csv(path: Path, n_rows: int = 200) -> bytes:
    """A gzipped FER2013 CSV of ``n_rows`` random rows; returns the compressed bytes."""
    pixels = [_pixels(i) for i in range(8)]
    text = "emotion,pixels,Usage\n" + "".join(f"{i % 7},{pixels[i % 8]},Training\n" for i in range(n_rows))
    data = gzip.compress(text.encode(), compresslevel=1)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("damage, problem", [
    ("not-gzip", "not a valid gzip file"),
    ("truncated", "ends early"),
    ("corrupt", "gzip|compressed|CRC"),
])
def test_damaged_gzip_csv_is_one_clear_error(tmp_path, damage, problem):
    path = tmp_path / "fer.csv.gz"
    data = _gz_csv(path)
    if damage == "not-gzip":
        path.write_text("emotion,pixels,Usage\n0,1 2 3,Training\n")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 64]) + data[mid + 64:])
    with pytest.raises(InputError, match=problem) as e:
        list_source(str(path))
    assert str(path.resolve()) in str(e.value) or str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_row_reader_turns_read_errors_into_bad_pixels(tmp_path):
    path = tmp_path / "fer.csv.gz"
    data = _gz_csv(path)
    listing = list_source(str(path))
    late = listing.items[-1]
    early = listing.items[0]
    path.write_bytes(data[: len(data) // 2])  # cut short after listing
    reader = readers.CsvRowReader()
    assert len(reader.pixels(early.path, early.offset).split()) == 48 * 48  # before the cut: fine
    with pytest.raises(BadPixelsError, match="cannot read the row at byte offset .*ends early") as e:
        reader.pixels(late.path, late.offset)
    assert isinstance(e.value, SampleError) and not isinstance(e.value, EOFError)
    with pytest.raises(BadPixelsError, match="ends early"):  # remembered: no second decompression
        reader.pixels(late.path, late.offset + 1)
    assert len(reader.pixels(early.path, early.offset).split()) == 48 * 48
    path.write_text("emotion,pixels\n0,1 2\n")  # not gzip any more
    with pytest.raises(BadPixelsError, match="not a valid gzip file"):
        readers.read_csv_pixels(str(path), 20)
    path.unlink()
    with pytest.raises(BadPixelsError, match="cannot be read"):
        readers.read_csv_pixels(str(path), 20)
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"label,image\n1,2\n")
    with pytest.raises(BadPixelsError, match="lacks column"):
        readers.read_csv_pixels(str(plain), 12)
    reader.close()


def test_broken_plain_csv(tmp_path):
    path = tmp_path / "fer.csv"
    path.write_bytes(b"emo\xfftion,pixels\n0,1 2\n")
    with pytest.raises(InputError, match="header line is not UTF-8"):
        list_source(str(path), "fer2013-csv")
    good = f"0,{_pixels(0)},Training\n".encode()
    path.write_bytes(b"emotion,pixels,Usage\n" + good + b"\x00\xff\xfe,\x81\n")
    listing = list_source(str(path))
    assert len(listing.items) == 1
    assert _fail_ids(listing) == {"fer.csv:row=1": "line 3: not UTF-8 text"}
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        list_source(str(tmp_path / "empty.csv"), "fer2013-csv")


def test_parse_pixels_errors():
    assert parse_pixels("0 1 2 255", size=2).tolist() == [[0, 1], [2, 255]]
    with pytest.raises(BadPixelsError, match="expected 2304 values \\(48x48\\), got 2303"):
        parse_pixels(_pixels(0, 2303))
    with pytest.raises(BadPixelsError, match="value 2 is 'x7', not a whole number"):
        parse_pixels("1 2 x7 4", size=2)
    with pytest.raises(BadPixelsError, match="value 1 is 256, outside 0..255"):
        parse_pixels("1 256 3 4", size=2)
    with pytest.raises(BadPixelsError, match="outside"):
        parse_pixels("1 -1 3 4", size=2)
    with pytest.raises(BadPixelsError, match="not a whole number"):
        parse_pixels("1 2.5 3 4", size=2)


# ---------------------------------------------------------------------------------------------
# splits


def _items(n_per_label: dict[str, int], subjects: int | None = None) -> list[RawItem]:
    out = []
    k = 0
    for lab, n in n_per_label.items():
        for i in range(n):
            subj = f"s{k % subjects:02d}" if subjects else None
            out.append(RawItem(f"{lab}/{i:04d}.png", f"/x/{lab}/{i:04d}.png", lab, None, subj))
            k += 1
    return out


def test_stratified_split_is_seeded_and_stratified():
    items = _items({"happy": 200, "sad": 100, "fear": 50, "angry": 1})
    a = assign_splits(items, 0.1, 0.2, seed=3)
    assert a == assign_splits(list(reversed(items)), 0.1, 0.2, seed=3)  # input order does not matter
    assert a != assign_splits(items, 0.1, 0.2, seed=4)
    assert a == sorted(a, key=readers.order_key)
    c = Counter((it.label, it.split) for it in a)
    assert (c["happy", "val"], c["happy", "test"], c["happy", "train"]) == (20, 40, 140)
    assert (c["sad", "val"], c["sad", "test"]) == (10, 20)
    assert (c["fear", "val"], c["fear", "test"]) == (5, 10)
    assert c["angry", "train"] == 1  # a one-image class is kept, in train
    assert {it.source_id for it in a} == {it.source_id for it in items}


def test_split_keeps_given_and_handles_unlabelled():
    given = [RawItem("x/keep.png", "/x/keep.png", "happy", "test", None)]
    flat = [RawItem(f"{i:03d}.png", f"/f/{i:03d}.png", None, None, None) for i in range(100)]
    out = assign_splits(given + flat, 0.25, 0.25, seed=0)
    assert [it for it in out if it.source_id == "x/keep.png"] == given
    assert Counter(it.split for it in out if it.label is None) == {"train": 50, "val": 25, "test": 25}


def test_subject_split_is_disjoint():
    items = _items({"happy": 60, "sad": 60, "angry": 40}, subjects=20)
    out = assign_splits(items, 0.1, 0.1, seed=0, by_subject=True)
    assert out == assign_splits(items, 0.1, 0.1, seed=0, by_subject=True)
    where: dict[str, set] = {}
    for it in out:
        where.setdefault(it.subject, set()).add(it.split)
    assert all(len(s) == 1 for s in where.values())
    per_split = Counter(next(iter(s)) for s in where.values())
    assert per_split["test"] == 2 and per_split["val"] == 2 and per_split["train"] == 16
    with pytest.raises(InputError, match="no subject"):
        assign_splits(_items({"happy": 5}), by_subject=True)


def test_subject_split_few_subjects_warns():
    items = _items({"happy": 30, "sad": 30}, subjects=6)  # FERG: six characters
    with pytest.warns(UserWarning, match=r"only \d subjects left"):
        out = assign_splits(items, 0.1, 0.1, seed=1, by_subject=True)
    split_of = {x.subject: x.split for x in out}
    assert all(split_of[x.subject] == x.split for x in out)
    per_split = Counter(split_of.values())
    assert per_split == {"train": 4, "val": 1, "test": 1}


def test_split_fractions_validated():
    items = _items({"happy": 10})
    for v, t in ((-0.1, 0.1), (1.0, 0.0), (0.5, 0.5)):
        with pytest.raises(InputError, match=r"\[0, 1\)|below 1"):
            assign_splits(items, v, t)


# ---------------------------------------------------------------------------------------------
# real data (../shared/data), skipped when absent


@pytest.mark.skipif(not (DATA / "fer2013" / "train").is_dir(), reason="needs ../shared/data/fer2013")
def test_real_fer2013_folder():
    listing = list_source(str(DATA / "fer2013"), spec=load_spec("fer2013"))
    assert Counter(it.split for it in listing.items) == {"train": 28709, "val": 3589}
    train = Counter(it.label for it in listing.items if it.split == "train")
    assert train == {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965,
                     "sad": 4830, "surprise": 3171}
    assert listing.failures == []


@pytest.mark.skipif(not (DATA / "fer2013-csv" / "fer2013_head.csv").is_file(),
                    reason="needs ../shared/data/fer2013-csv")
def test_real_fer2013_csv():
    listing = list_source(str(DATA / "fer2013-csv" / "fer2013_head.csv"))
    assert len(listing.items) == 1167 and listing.failures == []
    first = listing.items[0]
    assert first.source_id == "fer2013_head.csv:row=0" and first.split == "train"
    assert parse_pixels(read_csv_pixels(first.path, first.offset)).shape == (48, 48)


def test_a_second_name_of_the_same_image_is_listed_not_sampled(tmp_path):
    """A symbolic or hard link to an image already listed (here in another class folder) is a
    failure naming the first name, never a second sample of the same pixels under another label."""
    import os

    from PIL import Image

    from prepro.readers import list_source

    for cls in ("happy", "sad", "angry"):
        (tmp_path / "src" / cls).mkdir(parents=True)
    Image.new("L", (48, 48), 90).save(tmp_path / "src" / "happy" / "a.png")
    Image.new("L", (48, 48), 30).save(tmp_path / "src" / "happy" / "b.png")
    os.symlink("../happy/a.png", tmp_path / "src" / "sad" / "a-link.png")
    os.link(tmp_path / "src" / "happy" / "b.png", tmp_path / "src" / "sad" / "b-hard.png")
    # A hard link has no original: the first name in walk order (sorted folders, then files) wins.
    os.link(tmp_path / "src" / "happy" / "a.png", tmp_path / "src" / "angry" / "a-hard.png")
    listing = list_source(str(tmp_path / "src"), "folder")
    assert sorted(it.source_id for it in listing.items) == ["angry/a-hard.png", "happy/b.png"]
    reasons = {f.source: f.reason for f in listing.failures}
    assert reasons["happy/a.png"].endswith("): angry/a-hard.png")
    assert reasons["sad/a-link.png"].endswith("): angry/a-hard.png")
    assert reasons["sad/b-hard.png"].endswith("): happy/b.png")
    from prepro.pipeline import failure_category

    assert {failure_category(r) for r in reasons.values()} == {"a second name of a listed image"}
