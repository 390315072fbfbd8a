"""The `labels` format: label files of image paths, labels, splits, subjects and face boxes.

Fake RAF-DB and AffectNet trees (tiny generated images, invented rows) check counts, labels,
splits, boxes and every failure reason; hostile rows never make the listing read outside SOURCE.
"""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from prepro.errors import InputError
from prepro.readers import RawItem, count_mismatches, detect_format, list_source
from prepro.specs import load_spec

RAF_LIST = "basic/EmoLabel/list_patition_label.txt"
AFFECT_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                 "expression,valence,arousal")


def _jpg(path: Path, seed: int = 0, size: tuple[int, int] = (12, 16)) -> Path:
    """A tiny random colour JPEG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), arr)
    return path


def _by_id(listing) -> dict[str, RawItem]:
    return {it.source_id: it for it in listing.items}


def _fails(listing) -> dict[str, str]:
    return {f.source: f.reason for f in listing.failures}


def _spec(tmp_path: Path, text: str, name: str = "mine"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_spec(str(path))


# ---------------------------------------------------------------------------------------------
# RAF-DB


@pytest.fixture
def rafdb(tmp_path):
    """A fake RAF-DB basic tree: original and aligned images and a label list with bad rows."""
    root = tmp_path / "RAF-DB"
    good = {"train_00001.jpg": "5", "train_00002.jpg": "4", "train_00003.jpg": "1",
            "test_0001.jpg": "7", "test_0002.jpg": "6"}
    for i, name in enumerate(list(good) + ["train_00004.jpg", "val_0001.jpg", "train_00006.jpg"]):
        _jpg(root / "basic/Image/original" / name, i)
        _jpg(root / "basic/Image/aligned" / name.replace(".jpg", "_aligned.jpg"), i, (100, 100))
    _jpg(tmp_path / "outside.jpg")
    lines = [f"{n} {c}" for n, c in good.items()] + [
        "train_00004.jpg 9",             # unknown code
        "val_0001.jpg 2",                # no split prefix
        "train_00005.jpg 3",             # no such image
        "train_00006.jpg",               # too few columns
        "../../outside.jpg 1",           # leaves the image folder
        "/etc/passwd.jpg 1",             # absolute
        "train_00001.jpg 4",             # listed twice
        "",                              # blank: no row
    ]
    data = ("\r\n".join(lines) + "\r\n").encode() + b"train_\xff\xfe.jpg 1\n"  # a non-UTF-8 row
    (root / RAF_LIST).parent.mkdir(parents=True)
    (root / RAF_LIST).write_bytes(data)
    return root


def test_rafdb_listing(rafdb):
    spec = load_spec("rafdb")
    listing = list_source(str(rafdb), spec=spec)
    assert listing.format == "labels" and listing.spec is spec
    items = _by_id(listing)
    assert {k: (v.label, v.split) for k, v in items.items()} == {
        "train_00001.jpg": ("sad", "train"), "train_00002.jpg": ("happy", "train"),
        "train_00003.jpg": ("surprise", "train"), "test_0001.jpg": ("neutral", "test"),
        "test_0002.jpg": ("angry", "test")}
    assert items["train_00001.jpg"].path == str(rafdb.resolve() / "basic/Image/original/train_00001.jpg")
    assert all(it.box is None and it.subject is None and it.offset == -1 for it in listing.items)
    assert [it.source_id for it in listing.items] == [
        "train_00001.jpg", "train_00002.jpg", "train_00003.jpg", "test_0001.jpg", "test_0002.jpg"]
    fails = _fails(listing)
    where = f"({RAF_LIST} line "
    assert fails["train_00004.jpg"].startswith("unknown label '9'")
    assert fails["train_00004.jpg"].endswith(where + "6)")
    assert fails["val_0001.jpg"].startswith("file name has no split prefix (expected one of train_, test_)")
    assert fails["train_00005.jpg"].startswith("image file not found: basic/Image/original/train_00005.jpg")
    assert fails[f"{RAF_LIST}:line=9"] == f"too few columns: 1, expected at least 2 {where}9)"
    assert fails[f"{RAF_LIST}:line=10"].startswith("path outside the image folder: '../../outside.jpg'")
    assert fails[f"{RAF_LIST}:line=11"].startswith(
        "path outside the image folder: '/etc/passwd.jpg' is absolute")
    assert fails[f"{RAF_LIST}:line=14"] == f"not UTF-8 text {where}14)"
    # the second listing fails; the first keeps its label
    assert len([f for f in listing.failures if f.source == "train_00001.jpg"]) == 1
    assert fails["train_00001.jpg"] == f"listed twice: first at {RAF_LIST} line 1 {where}12)"
    assert len(listing.failures) == 8
    assert list_source(str(rafdb), spec=spec) == listing  # deterministic
    assert count_mismatches(listing.items, spec) == ["rafdb: 3 train items, expected 12271",
                                                     "rafdb: 2 test items, expected 3068"]


def test_rafdb_aligned(rafdb):
    spec = load_spec("rafdb-aligned")
    assert spec.pre_cropped and spec.image_size == (100, 100) and spec.image_name_suffix == "_aligned"
    listing = list_source(str(rafdb), spec=spec)
    items = _by_id(listing)
    assert sorted(items) == ["test_0001_aligned.jpg", "test_0002_aligned.jpg", "train_00001_aligned.jpg",
                             "train_00002_aligned.jpg", "train_00003_aligned.jpg"]
    it = items["train_00003_aligned.jpg"]
    assert it.path.endswith("basic/Image/aligned/train_00003_aligned.jpg") and it.label == "surprise"
    assert "image file not found: basic/Image/aligned/train_00005_aligned.jpg" in _fails(listing)[
        "train_00005_aligned.jpg"]
    assert not load_spec("rafdb").pre_cropped


def test_rafdb_wrong_source(rafdb):
    with pytest.raises(InputError, match="give that folder as SOURCE"):
        list_source(str(rafdb / RAF_LIST), spec=load_spec("rafdb"))
    with pytest.raises(InputError, match=r"label file basic/EmoLabel/list_patition_label.txt not found"):
        list_source(str(rafdb / "basic"), spec=load_spec("rafdb"))
    (rafdb / "basic/Image/aligned").rename(rafdb / "basic/Image/gone")
    with pytest.raises(InputError, match="image folder basic/Image/aligned not found.*image_root"):
        list_source(str(rafdb), spec=load_spec("rafdb-aligned"))


# ---------------------------------------------------------------------------------------------
# AffectNet


def _affect_row(path: str, box: str, expression: str) -> str:
    landmarks = ";".join(f"{v:.2f}" for v in np.linspace(10, 90, 136))
    return f"{path},{box},{landmarks},{expression},0.5,-0.25"


@pytest.fixture
def affectnet(tmp_path):
    """A fake AffectNet tree: two CSV lists and images in numbered sub-folders."""
    root = tmp_path / "AffectNet"
    images = root / "Manually_Annotated_Images"
    for i, name in enumerate(["1/a.jpg", "1/b.JPG", "2/c.png", "2/d.jpg", "3/e.jpg", "3/f.jpg", "3/g.jpg",
                              "3/h.jpg", "3/i.jpg", "3/j.jpg", "4/v1.jpg", "4/v2.jpg", "4/v3.jpg", "4/v4.jpg"]):
        _jpg(images / name, i, (40, 30))
    train = [AFFECT_HEADER,
             _affect_row("1/a.jpg", "10,20,100,120", "0"),
             _affect_row("1/b.JPG", "0,0,30.5,40", "1"),
             _affect_row("2/c.png", "5,5,10,10", "7"),
             _affect_row("2/d.jpg", "1,1,5,5", "8"),          # none
             _affect_row("3/e.jpg", "1,1,5,5", "9"),          # uncertain
             _affect_row("3/f.jpg", "1,1,5,5", "10"),         # non-face
             _affect_row("3/g.jpg", "1,1,-5,5", "2"),         # negative width
             _affect_row("3/h.jpg", "1,nan,5,5", "2"),        # not a number
             _affect_row("3/i.jpg", "1,1e999,5,5", "2"),      # infinite
             _affect_row("3/j.jpg", "1,,5,5", "2"),           # empty box value
             _affect_row("9/missing.jpg", "1,1,5,5", "3"),    # no such image
             _affect_row("", "1,1,5,5", "3"),                 # no path
             _affect_row("1/a.jpg", "1,1,5,5", "3"),          # listed twice
             "3/k.jpg,1,1",                                   # too few columns
             _affect_row("4/v1.jpg", "1,1,5,5", "12")]        # unknown code
    val = [AFFECT_HEADER,
           _affect_row("4/v1.jpg", "2,3,4,5", "6"),
           _affect_row("4/v2.jpg", "2,3,4,5", "5"),
           _affect_row("4\\v3.jpg", "2,3,4,5", "4"),         # Windows separator
           _affect_row("2/c.png", "2,3,4,5", "4"),           # already in training.csv
           _affect_row("4/v4.jpg", ",,,", "1")]              # no box: its face is found
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    (lists / "training.csv").write_text("\n".join(train) + "\n")
    (lists / "validation.csv").write_text("\n".join(val) + "\n")
    return root


def test_affectnet_listing(affectnet):
    spec = load_spec("affectnet")
    listing = list_source(str(affectnet), spec=spec)
    items = _by_id(listing)
    assert {k: (v.label, v.split, v.box) for k, v in items.items()} == {
        "1/a.jpg": ("neutral", "train", (10.0, 20.0, 110.0, 140.0)),
        "1/b.JPG": ("happy", "train", (0.0, 0.0, 30.5, 40.0)),
        "2/c.png": ("contempt", "train", (5.0, 5.0, 15.0, 15.0)),
        "4/v2.jpg": ("disgust", "val", (2.0, 3.0, 6.0, 8.0)),
        "4/v3.jpg": ("fear", "val", (2.0, 3.0, 6.0, 8.0)),
        "4/v4.jpg": ("happy", "val", None),
    }
    assert Counter(it.split for it in listing.items) == {"train": 3, "val": 3}
    assert items["4/v3.jpg"].path == str(affectnet.resolve() / "Manually_Annotated_Images/4/v3.jpg")
    fails = _fails(listing)
    train_csv = "Manually_Annotated_file_lists/training.csv"
    assert fails["2/d.jpg"] == f"not an expression: label '8' means 'none' ({train_csv} line 5)"
    assert fails["3/e.jpg"].startswith("not an expression: label '9' means 'uncertain'")
    assert fails["3/f.jpg"].startswith("not an expression: label '10' means 'non-face'")
    assert fails["3/g.jpg"].startswith("bad face box: width -5 and height 5 must be positive")
    assert fails["3/h.jpg"].startswith("bad face box: 'nan' is not a number")
    assert fails["3/i.jpg"].startswith("bad face box: a value is too large")
    assert fails["3/j.jpg"].startswith("incomplete face box")
    assert fails["9/missing.jpg"].startswith("image file not found: Manually_Annotated_Images/9/missing.jpg")
    assert fails[f"{train_csv}:line=13"].startswith("missing image path")
    assert fails["1/a.jpg"] == f"listed twice: first at {train_csv} line 2 ({train_csv} line 14)"
    assert fails[f"{train_csv}:line=15"].startswith("too few columns: 3, expected at least 9")
    # a path listed again is a failure even when its first listing failed (here: an unknown code)
    v1 = sorted(f.reason for f in listing.failures if f.source == "4/v1.jpg")
    assert v1[0].startswith("listed twice") and "validation.csv line 2" in v1[0]
    assert v1[1].startswith("unknown label '12'")
    assert _fails(listing)["2/c.png"].startswith(f"listed twice: first at {train_csv} line 4")


def test_affectnet_every_row_accounted(affectnet):
    listing = list_source(str(affectnet), spec=load_spec("affectnet"))
    rows = sum(len(p.read_text().splitlines()) - 1
               for p in (affectnet / "Manually_Annotated_file_lists").glob("*.csv"))
    assert len(listing.items) + len(listing.failures) == rows


def test_affectnet_split_from_file_name_is_checked(affectnet, tmp_path):
    lists = affectnet / "Manually_Annotated_file_lists"
    spec = _spec(tmp_path, '''format = "labels"
label_files = ["Manually_Annotated_file_lists/training.csv", "Manually_Annotated_file_lists/test.csv"]
image_root = "Manually_Annotated_Images"
split_from_label_file = true
[split_names]
training = "train"
''')
    (lists / "test.csv").write_text(AFFECT_HEADER + "\n")
    with pytest.raises(InputError, match="label file .*test.csv: its name 'test' is not in split_names"):
        list_source(str(affectnet), spec=spec)


def test_affectnet_header_mismatch(affectnet):
    (affectnet / "Manually_Annotated_file_lists/validation.csv").write_text(
        "path,x,y,w,h,expr\n4/v1.jpg,1,1,5,5,6\n")
    with pytest.raises(InputError, match="validation.csv: no column 'subDirectory_filePath' in the header"):
        list_source(str(affectnet), spec=load_spec("affectnet"))


# ---------------------------------------------------------------------------------------------
# a label file as SOURCE, without a description


def test_csv_label_file_with_header(tmp_path):
    root = tmp_path / "expw"
    for i, name in enumerate(["img/a.jpg", "img/b.jpg", "img/c.jpg", "img/d.jpg"]):
        _jpg(root / name, i)
    (root / "labels.csv").write_text(
        "\ufeffImage,Emotion,Usage,Left,Top,Right,Bottom\n"
        "img/a.jpg,happy,Training,1,2,11,12\n"
        '"img/b.jpg","Sur-prised","PublicTest",0,0,5,5\n'
        "img/c.jpg,Joy,holdout,0,0,5,5\n"
        "img/d.jpg,anger,test,5,5,5,9\n"
        "./img//a.jpg,sad,test,0,0,5,5\n", encoding="utf-8")
    assert detect_format(root / "labels.csv") == "labels"
    listing = list_source(str(root / "labels.csv"))
    assert listing.format == "labels" and listing.spec is None
    assert listing.root == str((root / "labels.csv").resolve())
    items = _by_id(listing)
    assert {k: (v.label, v.split, v.box) for k, v in items.items()} == {
        "img/a.jpg": ("happy", "train", (1.0, 2.0, 11.0, 12.0)),
        "img/b.jpg": ("surprise", "val", (0.0, 0.0, 5.0, 5.0))}
    fails = _fails(listing)
    assert fails["img/c.jpg"].startswith("unknown split 'holdout'; allowed: ")
    assert fails["img/d.jpg"].startswith("bad face box: right 5 and bottom 9 must exceed left 5 and top 5")
    assert fails["img/a.jpg"].startswith("listed twice: first at labels.csv line 2")


def test_tsv_and_whitespace_label_files(tmp_path):
    root = tmp_path / "tsv"
    _jpg(root / "a b.png")
    _jpg(root / "c.png", 1)
    (root / "list.tsv").write_text("file\tclass\tidentity\na b.png\tfear\tP01\nc.png\tneutral\t\n")
    assert detect_format(root / "list.tsv") == "labels"
    items = _by_id(list_source(str(root / "list.tsv")))
    assert (items["a b.png"].label, items["a b.png"].subject) == ("fear", "P01")
    assert (items["c.png"].label, items["c.png"].subject, items["c.png"].split) == ("neutral", None, None)
    (root / "plain.txt").write_text("c.png   happy\n\n  a b.png sad\n")
    assert detect_format(root / "plain.txt") == "labels"
    listing = list_source(str(root / "plain.txt"))
    assert _by_id(listing)["c.png"].label == "happy"
    # whitespace splits "a b.png sad" into three fields: the path is "a", no image file
    assert _fails(listing) == {"a": "not an image file: no extension (plain.txt line 3)"}


def test_gzipped_label_file(tmp_path):
    _jpg(tmp_path / "x.jpg")
    with gzip.open(tmp_path / "labels.csv.gz", "wt") as fh:
        fh.write("path,label\nx.jpg,happy\n")
    assert detect_format(tmp_path / "labels.csv.gz") == "labels"
    assert [it.label for it in list_source(str(tmp_path / "labels.csv.gz")).items] == ["happy"]
    rows = "".join(f"x{i * 7919 % 10007}.jpg,{['happy', 'sad'][i % 2]}\n" for i in range(3000))
    (tmp_path / "broken.csv.gz").write_bytes(gzip.compress(f"path,label\n{rows}".encode())[:2000])
    with pytest.raises(InputError, match=r"broken.csv.gz: .*(truncated|gzip|compressed)"):
        list_source(str(tmp_path / "broken.csv.gz"), "labels")


def test_detect_format_of_files(tmp_path):
    (tmp_path / "fer.csv").write_text('"emotion", "pixels", "Usage"\n0,1 2,Training\n')
    assert detect_format(tmp_path / "fer.csv") == "fer2013-csv"
    (tmp_path / "notes.txt").write_text("some notes about the data\n")
    with pytest.raises(InputError, match="cannot tell whether this is a label file"):
        detect_format(tmp_path / "notes.txt")
    (tmp_path / "names.txt").write_text("a.jpg\nb.jpg\n")  # no label: not unambiguous
    with pytest.raises(InputError, match="cannot tell"):
        detect_format(tmp_path / "names.txt")
    (tmp_path / "header.txt").write_text("image label\na.jpg happy\n")
    assert detect_format(tmp_path / "header.txt") == "labels"
    (tmp_path / "nopath.tsv").write_text("emotion\tusage\n")
    with pytest.raises(InputError):
        detect_format(tmp_path / "nopath.tsv")
    (tmp_path / "bad.csv.gz").write_bytes(b"emotion,pixels,Usage\n")  # not gzip at all
    with pytest.raises(InputError, match="bad.csv.gz: not a valid gzip file"):
        detect_format(tmp_path / "bad.csv.gz")


def test_header_problems(tmp_path):
    _jpg(tmp_path / "a.jpg")
    cases = {
        "nolabel.csv": ("image,valence\na.jpg,0.5\n", "no label column in the header"),
        "nopath.csv": ("emotion,usage\nhappy,Training\n",
                       "no path column.*a FER2013 CSV needs emotion,pixels"),
        "two.csv": ("image,file,label\na.jpg,a.jpg,happy\n",
                    "columns 'image', 'file' could each be the path"),
        "halfbox.csv": ("image,label,x,y\na.jpg,happy,1,2\n", "names part of a face box"),
        "badheader.csv": (b"image,lab\xffel\na.jpg,happy\n", "badheader.csv: the header line is not UTF-8"),
        "badfirst.csv": (b"a\xff.jpg,happy\na.jpg,happy\n", None),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        if message is None:
            # an undecodable first line that is no header is a row like any other
            listing = list_source(str(path), "labels")
            assert _fails(listing) == {"badfirst.csv:line=1": "not UTF-8 text (badfirst.csv line 1)"}
            assert [it.source_id for it in listing.items] == ["a.jpg"]
        else:
            with pytest.raises(InputError, match=message):
                list_source(str(path), "labels")


def test_empty_and_header_only_files(tmp_path):
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(InputError, match="no usable items.*empty label file"):
        list_source(str(tmp_path / "empty.csv"), "labels")
    (tmp_path / "head.csv").write_text("image,label\n")
    with pytest.raises(InputError, match="no usable items"):
        list_source(str(tmp_path / "head.csv"), "labels")


def test_labels_needs_a_file_or_a_description(tmp_path):
    _jpg(tmp_path / "a.jpg")
    with pytest.raises(InputError, match="format labels needs a label file as SOURCE"):
        list_source(str(tmp_path), "labels")


# ---------------------------------------------------------------------------------------------
# hostile rows: nothing outside SOURCE is read, every row is accounted for


def test_hostile_rows(tmp_path):
    outside = tmp_path / "secret"
    _jpg(outside / "s.jpg")
    root = tmp_path / "src"
    _jpg(root / "ok.jpg")
    (root / "folder.jpg").mkdir()
    (root / "notes.txt").write_text("x")
    (root / "link.jpg").symlink_to(outside / "s.jpg")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "inner.jpg").symlink_to(root / "ok.jpg")
    (root / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    rows = ["ok.jpg,happy", "folder.jpg,happy", "notes.txt,happy", "link.jpg,happy",
            "linkdir/s.jpg,happy", "inner.jpg,sad", "dangling.jpg,sad", "C:\\data\\x.jpg,happy",
            "..\\secret\\s.jpg,happy", "a/../../secret/s.jpg,happy", ".,happy", ",happy",
            "ok2.jpg,", 'bad"quote.jpg,happy', "ok3.jpg,confused"]
    data = ("path,label\n" + "\n".join(rows) + "\n").encode() + b"nul\x00.jpg,happy\n"
    (root / "list.csv").write_bytes(data)
    listing = list_source(str(root / "list.csv"))
    assert sorted(_by_id(listing)) == ["inner.jpg", "ok.jpg"]
    assert all(it.path.startswith(str(root.resolve())) for it in listing.items)
    fails = _fails(listing)
    assert fails["folder.jpg"].startswith("not a regular file")
    assert fails["notes.txt"].startswith("not an image file: extension .txt")
    assert fails["link.jpg"].startswith("symbolic link to a place outside the source folder")
    assert fails["linkdir/s.jpg"].startswith("symbolic link to a place outside the source folder")
    assert fails["dangling.jpg"].startswith("image file not found")
    assert fails["list.csv:line=9"].startswith(
        "path outside the image folder: 'C:\\\\data\\\\x.jpg' is absolute")
    assert fails["list.csv:line=10"].startswith("path outside the image folder")
    assert fails["list.csv:line=11"].startswith("path outside the image folder")
    assert fails["list.csv:line=12"].startswith("bad image path: '.' names no file")
    assert fails["list.csv:line=13"].startswith("missing image path")
    assert fails["ok2.jpg"].startswith("missing label")
    assert fails['bad"quote.jpg'].startswith("image file not found")
    assert fails["ok3.jpg"].startswith("unknown label 'confused'")
    assert fails["list.csv:line=17"].startswith("bad image path: it holds a NUL character")
    assert len(listing.items) + len(listing.failures) == len(rows) + 1


def test_image_root_link_outside_is_refused(tmp_path):
    _jpg(tmp_path / "elsewhere" / "a.jpg")
    root = tmp_path / "src"
    (root / "lists").mkdir(parents=True)
    (root / "lists" / "l.csv").write_text("image,label\na.jpg,happy\n")
    (root / "images").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    spec = _spec(tmp_path, 'format = "labels"\nlabel_files = ["lists/l.csv"]\nimage_root = "images"\n')
    with pytest.raises(InputError, match="image folder images .* outside the source"):
        list_source(str(root), spec=spec)
    (root / "images").unlink()
    (root / "images").mkdir()
    (root / "lists" / "l.csv").unlink()
    (root / "lists" / "l.csv").symlink_to(tmp_path / "elsewhere" / "a.jpg")
    with pytest.raises(InputError, match="label file lists/l.csv .* outside the source"):
        list_source(str(root), spec=spec)


# ---------------------------------------------------------------------------------------------
# descriptions: columns by name or index, delimiters, subjects, unlabelled lists


def test_description_with_indexes_and_subject_pattern(tmp_path):
    root = tmp_path / "d"
    for name in ("P01_a.jpg", "P02_b.jpg", "odd.jpg"):
        _jpg(root / "faces" / name)
    (root / "meta").mkdir()
    (root / "meta" / "all.txt").write_text("x|P01_a.jpg|1|10|10|20|20\nx|P02_b.jpg|2|0|0|1|1\n"
                                           "x|odd.jpg|1|0|0|1|1\n")
    spec = _spec(tmp_path, '''format = "labels"
label_files = ["meta/all.txt"]
image_root = "faces"
delimiter = "|"
header = false
subject_pattern = '^(P\\d+)_'
box_columns = [3, 4, 5, 6]
box_format = "ltrb"
[columns]
path = 1
label = 2
[labels]
"1" = "happy"
"2" = "sad"
''')
    listing = list_source(str(root), spec=spec)
    items = _by_id(listing)
    assert (items["P01_a.jpg"].subject, items["P01_a.jpg"].label, items["P01_a.jpg"].box) == (
        "P01", "happy", (10.0, 10.0, 20.0, 20.0))
    assert items["P02_b.jpg"].split is None
    assert "subject pattern" in _fails(listing)["odd.jpg"]


def test_unlabelled_list_needs_a_description(tmp_path):
    _jpg(tmp_path / "a.jpg")
    (tmp_path / "l.csv").write_text("image,x,y,width,height\na.jpg,1,2,3,4\n")
    with pytest.raises(InputError, match="no label column"):
        list_source(str(tmp_path / "l.csv"))
    spec = _spec(tmp_path, 'format = "labels"\nbox_columns = ["x", "y", "width", "height"]\n'
                           'box_format = "xywh"\n[columns]\npath = "IMAGE"\n')
    listing = list_source(str(tmp_path / "l.csv"), spec=spec)
    assert [(it.label, it.box) for it in listing.items] == [(None, (1.0, 2.0, 4.0, 6.0))]


def test_split_column_with_description_names(tmp_path):
    _jpg(tmp_path / "a.jpg")
    _jpg(tmp_path / "b.jpg")
    (tmp_path / "l.csv").write_text("image;label;fold\na.jpg;happy;dev\nb.jpg;sad;eval\n")
    spec = _spec(tmp_path, 'format = "labels"\n[columns]\npath = "image"\nlabel = "label"\nsplit = "fold"\n'
                           '[split_names]\ndev = "val"\neval = "test"\n')
    assert [(it.source_id, it.split) for it in list_source(str(tmp_path / "l.csv"), spec=spec).items] == [
        ("a.jpg", "val"), ("b.jpg", "test")]


# ---------------------------------------------------------------------------------------------
# description keys: each bad value is a one-line error that names the key


@pytest.mark.parametrize("text, message", [
    ('format = "folder"\nlabel_files = ["a.csv"]\n', "'label_files' applies only to format 'labels'"),
    ('format = "labels"\nlabel_files = "a.csv"\n', "'label_files' must be a non-empty list"),
    ('format = "labels"\nlabel_files = ["../a.csv"]\n',
     "'label_files' is '../a.csv'; it must be a path inside SOURCE"),
    ('format = "labels"\nlabel_files = ["/etc/a.csv"]\n', "'label_files' is '/etc/a.csv'"),
    ('format = "labels"\nlabel_files = ["a.csv", "./a.csv"]\n', "'label_files' names a file twice"),
    ('format = "labels"\nimage_root = "x/../../y"\n', "'image_root' is 'x/../../y'"),
    ('format = "labels"\nimage_root = 3\n', "'image_root' must be a string"),
    ('format = "labels"\nimage_name_suffix = "a/b"\n', "'image_name_suffix' must be a string without"),
    ('format = "labels"\ndelimiter = "::"\n', "'delimiter' is '::'; allowed: 'auto', ','"),
    ('format = "labels"\nheader = "yes"\n', "'header' must be true or false"),
    ('format = "labels"\n[columns]\nlabel = 1\n', "'columns' must be a table with at least 'path'"),
    ('format = "labels"\n[columns]\npath = 0\nmood = 1\n', "columns.mood: unknown role"),
    ('format = "labels"\n[columns]\npath = -1\n', "columns.path must be a header name .* or a 0-based"),
    ('format = "labels"\n[columns]\npath = true\n', "columns.path must be a header name"),
    ('format = "labels"\n[columns]\npath = 0\nlabel = 0\n', "use a column twice"),
    ('format = "labels"\nheader = false\n[columns]\npath = "image"\n', "'header' is false, so 'columns'"),
    ('format = "labels"\nbox_columns = [1, 2, 3]\nbox_format = "xywh"\n',
     "'box_columns' must list 4 columns"),
    ('format = "labels"\nbox_columns = [1, 2, 3, 4]\n', "'box_columns' and 'box_format' go together"),
    ('format = "labels"\nbox_format = "cxcywh"\n', "'box_format' is 'cxcywh'; allowed: xywh, ltrb"),
    ('format = "labels"\n[labels]\n"8" = "happy"\n[non_expression_labels]\n"8" = "none"\n',
     "non_expression_labels.8 is also in 'labels'"),
    ('format = "labels"\n[non_expression_labels]\n"8" = 8\n',
     "'non_expression_labels' must be a table of strings"),
    ('format = "labels"\nsplit_from_label_file = true\n', "'split_from_label_file' needs a 'split_names'"),
    ('format = "labels"\nsplit_from_label_file = true\nsplit_from_filename_prefix = true\n'
     '[split_names]\na = "train"\n',
     "the split can come from one place only"),
    ('format = "labels"\nsubject_pattern = "(x)"\n[columns]\npath = 0\nsubject = 2\n',
     "the subject can come from one place only"),
])
def test_description_errors(tmp_path, text, message):
    with pytest.raises(InputError, match=message) as e:
        _spec(tmp_path, text)
    assert "\n" not in str(e.value) and "mine.toml" in str(e.value)


def test_new_descriptions_load():
    raf, aligned, affect = load_spec("rafdb"), load_spec("rafdb-aligned"), load_spec("affectnet")
    assert raf.format == aligned.format == affect.format == "labels"
    assert raf.labels == aligned.labels and raf.labels["1"] == "surprise" and raf.labels["6"] == "angry"
    assert raf.split_from_filename_prefix and raf.split_names == {"train": "train", "test": "test"}
    assert affect.box_format == "xywh" and affect.split_from_label_file
    assert [affect.labels[str(i)] for i in range(8)] == ["neutral", "happy", "sad", "surprise", "fear",
                                                         "disgust", "angry", "contempt"]
    assert affect.non_expression_labels == {"8": "none", "9": "uncertain", "10": "non-face"}
    for spec in (raf, aligned, affect):
        assert spec.source_url and spec.license


def test_item_box_default():
    assert RawItem("a.jpg", "/a.jpg", None, None, None).box is None


def test_label_file_source_with_description(tmp_path):
    """SOURCE is the file; the description's image_root is relative to the file's folder."""
    _jpg(tmp_path / "pics" / "a.jpg")
    _jpg(tmp_path / "pics" / "b.jpg")
    with gzip.open(tmp_path / "train.tsv.gz", "wt") as fh:
        fh.write("Picture\tMood\tWho\na.jpg\tglad\tann\nb.jpg\tgrumpy\tbob\n")
    spec = _spec(tmp_path, '''format = "labels"
image_root = "pics"
delimiter = "\\t"
header = true
split_from_label_file = true
[columns]
path = "picture"
label = "mood"
subject = "who"
[labels]
glad = "happy"
grumpy = "angry"
[split_names]
train = "train"
''')
    listing = list_source(str(tmp_path / "train.tsv.gz"), spec=spec)
    assert [(it.source_id, it.label, it.split, it.subject) for it in listing.items] == [
        ("a.jpg", "happy", "train", "ann"), ("b.jpg", "angry", "train", "bob")]
    assert listing.items[0].path == str((tmp_path / "pics" / "a.jpg").resolve())
