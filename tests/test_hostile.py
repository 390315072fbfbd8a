"""Hostile inputs: every command over a generated corpus of broken and malicious inputs.

Each case runs one command through click's CliRunner and asserts the two guarantees of the
README's bad-input section: no Python traceback (a clear message and a non-zero exit, or a listed
failure where the run can go on), and no lost file (a file of the user's in every folder a
command writes to is still there, unchanged, and nothing appears outside the test folder).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main

SENTINEL = "mine.txt"  # the user's own file, put into every folder a command may write to


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def no_traceback(result) -> None:
    """The command ended with a message (or success), never an uncaught exception."""
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"uncaught {type(exc).__name__}: {exc}\n{result.output}"
    assert "Traceback" not in result.output, result.output


def plant(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SENTINEL).write_text("the user's own notes\n")
    return hashlib.sha256(b"the user's own notes\n").hexdigest()


def still_there(folder: Path, digest: str) -> None:
    p = folder / SENTINEL
    assert p.is_file(), f"{p} was removed"
    assert hashlib.sha256(p.read_bytes()).hexdigest() == digest, f"{p} was changed"


# ---------------------------------------------------------------------------------------------
# The corpus


def _png(arr: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _jpeg(arr: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", arr)
    assert ok
    return buf.tobytes()


def bad_images(folder: Path) -> dict[str, bytes]:
    """Files named like images that are anything but a usable face."""
    rng = np.random.default_rng(0)
    face = rng.integers(0, 255, (48, 48), dtype=np.uint8)
    jpeg = _jpeg(face)
    huge_header = bytearray(_png(np.zeros((1, 1), np.uint8)))
    huge_header[16:24] = struct.pack(">II", 60000, 60000)  # IHDR claims 3.6 gigapixels
    files = {
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "not_an_image.png": b"hello, I am text\n" * 20,
        "one_pixel.png": _png(np.zeros((1, 1), np.uint8)),
        "two_by_two.png": _png(np.full((2, 2), 200, np.uint8)),
        "sliver.png": _png(np.full((1, 3000), 128, np.uint8)),
        "tall_sliver.png": _png(np.full((3000, 2), 128, np.uint8)),
        "huge_header.png": bytes(huge_header),
        "noise.png": _png(rng.integers(0, 255, (64, 64), dtype=np.uint8)),
        "blank.png": _png(np.full((48, 48), 255, np.uint8)),
        "sixteen_bit.png": _png(rng.integers(0, 65535, (48, 48), dtype=np.uint16)),
        "zip_named.jpg": _zip_bytes(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "not an image")
    return buf.getvalue()


def hostile_names(folder: Path) -> None:
    """Class folders and files with names that try to escape or confuse."""
    img = _png(np.full((48, 48), 90, np.uint8))
    for label in ("happy", "sad"):
        d = folder / label
        d.mkdir(parents=True, exist_ok=True)
        for name in ("..%2f..%2fescape.png", "new\nline.png", "spa ce.png", "ünïcödé.png", "-dash.png",
                     "x" * 200 + ".png"):
            (d / name).write_bytes(img)
    (folder / "happy" / "link_out.png").symlink_to("/etc/hostname")


def bad_csvs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good_row = "3," + " ".join(["128"] * 2304) + ",Training\n"
    raw = ("emotion,pixels,Usage\n" + good_row * 3).encode()
    out = {
        "not_gzip.csv.gz": raw,  # plain text with a .gz name
        "truncated.csv.gz": gzip.compress(raw)[:-20],
        "corrupt.csv.gz": gzip.compress(raw)[:30] + b"\x00garbage" * 10,
        "binary.csv": np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes(),
        # a quote and a bare carriage return on the first line: the csv module refuses the line
        "quote_cr_first_line.csv": b'path\r,"label"\nimg.jpg,happy\n',
        "quote_cr_row.csv": b'path,label\nimg.jpg\r,"happy"\n',
        "wrong_header.csv": b"a,b,c\n1,2,3\n",
        "latin1.csv": ("emotion,pixels,Usage\n3," + " ".join(["128"] * 2304) + ",Tr\xe4ining\n").encode("latin-1"),
        "bad_rows.csv": ("emotion,pixels,Usage\n" + good_row + "9,1 2 3,Training\nx," + " ".join(["999"] * 2304)
                         + ",Training\n3," + " ".join(["nan"] * 2304) + ",PublicTest\n").encode(),
    }
    paths = []
    for name, data in out.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


# ---------------------------------------------------------------------------------------------
# preprocess


@pytest.fixture(scope="module")
def good_shards(tmp_path_factory) -> Path:
    """A small real shard folder (the synthetic sample) to damage copies of."""
    from prepro.synthetic import make_sample

    root = tmp_path_factory.mktemp("good")
    make_sample(root / "sample", per_class=4)
    r = run("preprocess", root / "sample", root / "shards", "-j", "1", "-q", "--shard-size", "8")
    assert r.exit_code == 0, r.output
    return root / "shards"


def test_bad_images_are_listed_never_fatal(tmp_path: Path) -> None:
    bad_images(tmp_path / "src" / "happy")
    digest = plant(tmp_path / "out")
    r = run("preprocess", tmp_path / "src", tmp_path / "out", "-j", "1", "-q", "--face", "auto", "--overwrite")
    no_traceback(r)
    still_there(tmp_path / "out", digest)
    summary = json.loads(run("inspect", tmp_path / "out", "--json").output)
    listed = {f["source"] for f in summary["failures"]}
    assert summary["samples"] + summary["failed"] == len(list((tmp_path / "src" / "happy").iterdir()))
    for name in ("empty.jpg", "truncated.jpg", "not_an_image.png", "one_pixel.png", "huge_header.png"):
        assert f"happy/{name}" in listed


def test_hostile_names_never_escape(tmp_path: Path) -> None:
    hostile_names(tmp_path / "src")
    before = set(os.listdir(tmp_path))
    r = run("preprocess", tmp_path / "src", tmp_path / "out", "-j", "1", "-q")
    no_traceback(r)
    r = run("export", tmp_path / "out", tmp_path / "exp", "-q")
    no_traceback(r)
    assert set(os.listdir(tmp_path)) - before == {"out", "exp"}
    for p in (tmp_path / "exp").rglob("*"):
        assert Path(os.path.realpath(p)).is_relative_to(os.path.realpath(tmp_path / "exp"))


@pytest.mark.parametrize("name", ["not_gzip.csv.gz", "truncated.csv.gz", "corrupt.csv.gz", "binary.csv",
                                  "quote_cr_first_line.csv", "quote_cr_row.csv", "wrong_header.csv", "latin1.csv",
                                  "bad_rows.csv"])
def test_bad_csvs(tmp_path: Path, name: str) -> None:
    paths = {p.name: p for p in bad_csvs(tmp_path / "csv")}
    r = run("preprocess", paths[name], tmp_path / "out", "-j", "1", "-q")
    no_traceback(r)
    assert "Aborted" not in r.output


def test_predict_and_preview_give_every_image_its_own_result(tmp_path: Path) -> None:
    from tests.shardfakes import make_fake_shards

    bad_images(tmp_path / "imgs")
    shards = make_fake_shards(tmp_path / "fake")
    r = run("train", shards, tmp_path / "run", "--epochs", "1", "--batch-size", "8", "-q", "--model-kwargs",
            '{"widths": [4, 8], "feat_dim": 8}', "--val-split", "val")
    assert r.exit_code == 0, r.output
    n = len(list((tmp_path / "imgs").iterdir()))
    r = run("predict", tmp_path / "run", tmp_path / "imgs", "--json", "-q", "--face", "aligned")
    no_traceback(r)
    lines = [json.loads(x) for x in r.output.splitlines() if x.startswith("{")]
    assert len(lines) == n  # every image: its faces or its reason
    r = run("preview", tmp_path / "imgs", "--out", tmp_path / "sheet.png")
    no_traceback(r)
    assert r.exit_code == 0 and (tmp_path / "sheet.png").is_file()


# ---------------------------------------------------------------------------------------------
# Damaged shard folders


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", ["truncate_shard", "flip_bytes", "manifest_extra_key", "manifest_missing_key",
                                    "manifest_not_json", "manifest_escape_path", "manifest_wrong_types",
                                    "shard_is_folder"])
def test_damaged_folders(tmp_path: Path, good_shards: Path, damage: str) -> None:
    out = _copy(good_shards, tmp_path / "shards")
    m = json.loads((out / "manifest.json").read_text())
    shard = out / m["shards"][0]["file"]
    if damage == "truncate_shard":
        shard.write_bytes(shard.read_bytes()[:500])
    elif damage == "flip_bytes":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "manifest_extra_key":
        m["surprise"] = 1
    elif damage == "manifest_missing_key":
        del m["shards"]
    elif damage == "manifest_escape_path":
        m["shards"][0]["file"] = "../../../etc/passwd"
    elif damage == "manifest_wrong_types":
        m["shards"][0]["n_samples"] = "many"
    elif damage == "shard_is_folder":
        shard.unlink()
        shard.mkdir()
    if damage.startswith("manifest"):
        text = json.dumps(m) if damage != "manifest_not_json" else "{not json"
        (out / "manifest.json").write_text(text)
    for args in (["inspect", out], ["inspect", out, "--json"], ["verify", out], ["preview", out, "--out",
                 tmp_path / "p.png"], ["export", out, tmp_path / "exp", "-q", "--overwrite"],
                 ["train", out, tmp_path / "run", "--epochs", "1", "-q"]):
        r = run(*args)
        no_traceback(r)
        assert r.exit_code != 0, f"{args[0]} said nothing about {damage}: {r.output}"


def test_export_inside_shard_folder_refused(tmp_path: Path, good_shards: Path) -> None:
    out = _copy(good_shards, tmp_path / "shards")
    r = run("export", out, out / "shards" / "exp", "-q")
    no_traceback(r)
    assert r.exit_code != 0 and "inside" in r.output


def test_overwrite_keeps_users_files(tmp_path: Path, good_shards: Path) -> None:
    from prepro.synthetic import make_sample

    make_sample(tmp_path / "sample", per_class=4)
    out = tmp_path / "m"
    digests = {d: plant(d) for d in (out, out / "shards")}
    (out / "shards" / "my_model.h5").write_bytes(b"not yours")
    r = run("preprocess", tmp_path / "sample", out, "-j", "1", "-q", "--overwrite")
    no_traceback(r)
    assert r.exit_code == 0, r.output
    r = run("preprocess", tmp_path / "sample", out, "-j", "1", "-q", "--overwrite", "--eyes-size", "24x72")
    no_traceback(r)
    for d, digest in digests.items():
        still_there(d, digest)
    assert (out / "shards" / "my_model.h5").read_bytes() == b"not yours"


def test_forged_export_record_deletes_nothing(tmp_path: Path, good_shards: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "keep.png").write_bytes(b"mine")
    (exp / "export.json").write_text(json.dumps({"files": {"../victim.txt": "0" * 64, "keep.png": "0" * 64,
                                                           "eyes/train/happy/x.png": "0" * 64}}))
    r = run("export", good_shards, exp, "-q", "--overwrite")
    no_traceback(r)
    assert victim.read_text() == "precious" and (exp / "keep.png").read_bytes() == b"mine"


# ---------------------------------------------------------------------------------------------
# Checkpoints and configs


def _tiny_run(tmp_path: Path) -> tuple[Path, Path]:
    from tests.shardfakes import make_fake_shards

    shards = make_fake_shards(tmp_path / "fake")
    r = run("train", shards, tmp_path / "run", "--epochs", "1", "--batch-size", "8", "-q", "--model-kwargs",
            '{"widths": [4, 8], "feat_dim": 8}', "--val-split", "val")
    assert r.exit_code == 0, r.output
    return shards, tmp_path / "run"


@pytest.mark.parametrize("craft", ["pickle_payload", "wrong_shapes", "nan_weights", "wrong_types", "not_zip",
                                   "empty"])
def test_crafted_checkpoints(tmp_path: Path, craft: str) -> None:
    import torch

    shards, run_dir = _tiny_run(tmp_path)
    last = run_dir / "last.pt"
    ck = torch.load(last, weights_only=True)
    if craft == "pickle_payload":
        torch.save({"format": "faceblocks-checkpoint", "evil": os.system}, last)
    elif craft == "wrong_shapes":
        ck["model"] = {k: torch.zeros(3, 3) for k in ck["model"]}
    elif craft == "nan_weights":
        ck["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                       for k, v in ck["model"].items()}
    elif craft == "wrong_types":
        ck["epoch"], ck["class_names"] = "three", "happy"
    elif craft == "not_zip":
        last.write_bytes(b"\x80\x04not a zip")
    elif craft == "empty":
        last.write_bytes(b"")
    if craft in ("wrong_shapes", "nan_weights", "wrong_types"):
        torch.save(ck, last)
    for args in (["train", shards, run_dir, "--resume", "-q"], ["predict", last, shards, "-q"],
                 ["evaluate", last, shards], ["export-model", last, tmp_path / "m.onnx"]):
        r = run(*args)
        no_traceback(r)
        assert r.exit_code != 0


@pytest.mark.parametrize("option", [("--lr", "inf"), ("--lr", "nan"), ("--weight-decay", "inf"), ("--epochs", "-1"),
                                    ("--batch-size", "0"), ("--holdout-frac", "2")])
def test_non_finite_and_bad_hyper_parameters_refused(tmp_path: Path, option: tuple[str, str]) -> None:
    from tests.shardfakes import make_fake_shards

    shards = make_fake_shards(tmp_path / "fake")
    r = run("train", shards, tmp_path / "run", *option, "-q")
    no_traceback(r)
    assert r.exit_code != 0
    assert not (tmp_path / "run" / "best.pt").exists()


@pytest.mark.parametrize("line", ["max_megapixels = inf", "max_megapixels = nan", "eyes_margin = -1",
                                  "face = 'sideways'", "jobs = 'many'", "shard_size = 0", "limit = 1e999"])
def test_bad_config_values_refused_before_any_stage(tmp_path: Path, line: str) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"[run]\nout = 'out'\n[data]\nsource = 'nowhere'\n{line}\n[preview]\ncount = -1\n")
    r = run("run", cfg)
    no_traceback(r)
    assert r.exit_code != 0 and not (tmp_path / "out").exists()


def test_garbage_landmark_model_is_one_clear_error(tmp_path: Path) -> None:
    from prepro.synthetic import make_sample

    make_sample(tmp_path / "sample", per_class=4)
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(os.urandom(4096))
    r = run("preprocess", tmp_path / "sample", tmp_path / "out", "-q", "--landmark-model", garbage)
    no_traceback(r)
    assert r.exit_code != 0 and "landmark model" in r.output
    assert not (tmp_path / "out" / "manifest.json").exists()


# ---------------------------------------------------------------------------------------------
# The second round (issue 20): each case failed before its fix


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    return victim


def test_planted_lock_symlink_writes_nothing_through_it(tmp_path: Path, good_shards: Path) -> None:
    from prepro.outputs import LOCK_NAME
    from tests.shardfakes import make_fake_shards

    victim = _victim(tmp_path)
    shards = _copy(good_shards, tmp_path / "shards")
    exp = tmp_path / "exp"
    exp.mkdir()
    fake = make_fake_shards(tmp_path / "fake")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for folder in (shards, exp, run_dir):
        os.symlink(victim, folder / LOCK_NAME)
    from prepro.synthetic import make_sample

    make_sample(tmp_path / "sample", per_class=4)
    for args in (["preprocess", tmp_path / "sample", shards, "-j", "1", "-q", "--shard-size", "8"],
                 ["export", shards, exp, "-q"], ["train", fake, run_dir, "--epochs", "1", "-q"]):
        r = run(*args)
        no_traceback(r)
        assert r.exit_code != 0 and "symbolic link" in r.output, r.output
        assert victim.read_text() == "precious"


def test_lock_file_is_removed_when_a_run_ends(tmp_path: Path, good_shards: Path) -> None:
    from prepro.outputs import LOCK_NAME

    r = run("export", good_shards, tmp_path / "exp", "-q")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "exp" / LOCK_NAME).exists()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.shardfakes import make_fake_shards

    root = tmp_path_factory.mktemp("tiny")
    shards = make_fake_shards(root / "fake")
    r = run("train", shards, root / "run", "--epochs", "1", "--batch-size", "8", "-q", "--model-kwargs",
            '{"widths": [4, 8], "feat_dim": 8}', "--val-split", "val")
    assert r.exit_code == 0, r.output
    return root / "run"


def _face_jpg(path: Path) -> Path:
    """A real face (the public-domain astronaut's, cropped to her head) written to ``path``."""
    import cv2
    from skimage import data

    face = cv2.cvtColor(data.astronaut()[20:240, 130:330], cv2.COLOR_RGB2GRAY)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.resize(face, (100, 110)))
    return path


def _video(path: Path, frames: int = 6) -> Path:
    import cv2

    img = cv2.imread(str(_face_jpg(path.parent / "frame.png")), cv2.IMREAD_GRAYSCALE)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, img.shape[::-1], False)
    for _ in range(frames):
        writer.write(img)
    writer.release()
    return path


def test_predict_never_writes_over_an_input(tmp_path: Path, tiny_model: Path) -> None:
    face = _face_jpg(tmp_path / "face.png")
    before = face.read_bytes()
    r = run("predict", tiny_model, face, "--csv", face, "-q")
    no_traceback(r)
    assert r.exit_code != 0 and "one of the inputs" in r.output and face.read_bytes() == before
    clip = _video(tmp_path / "clip.avi")
    before = clip.read_bytes()
    r = run("predict", tiny_model, clip, "--annotate", clip, "-q")
    no_traceback(r)
    assert r.exit_code != 0 and clip.read_bytes() == before
    r = run("predict", tiny_model, tmp_path, "--annotate", tmp_path / "annotated", "-q")
    no_traceback(r)
    assert r.exit_code != 0 and "inside an input folder" in r.output


def test_annotated_video_keeps_the_source_timing(tmp_path: Path, tiny_model: Path) -> None:
    import cv2

    clip = _video(tmp_path / "clip.avi", frames=10)
    out = tmp_path / "labelled.avi"
    r = run("predict", tiny_model, clip, "--every", "5", "--annotate", out, "-q", "--face", "aligned")
    assert r.exit_code == 0, r.output
    cap = cv2.VideoCapture(str(out))
    frames, fps = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    # Every source frame (the last sample's labels held between samples): 1 s of source, 1 s of video.
    assert frames == 10 and abs(frames / fps - 1.0) < 0.05


def test_preview_and_demo_leave_the_users_pictures_alone(tmp_path: Path) -> None:
    face = _face_jpg(tmp_path / "faces" / "a.png")
    mine = tmp_path / "work"
    mine.mkdir()
    (mine / "preview.png").write_bytes(face.read_bytes())
    (mine / "photo.png").write_bytes(b"my holiday")
    old = os.getcwd()
    os.chdir(mine)
    try:
        r = run("preview", face.parent, "--face", "aligned")
    finally:
        os.chdir(old)
    no_traceback(r)
    assert r.exit_code != 0 and "--out" in r.output
    assert (mine / "preview.png").read_bytes() == face.read_bytes()
    r = run("demo", mine, "-q", "--per-class", "4")
    no_traceback(r)
    assert r.exit_code != 0 and (mine / "photo.png").read_bytes() == b"my holiday"
    r = run("preview", face.parent, "--face", "aligned", "--out", tmp_path / "sheet.jpg")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "sheet.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG, as its name says


def test_train_overwrite_keeps_the_users_files(tmp_path: Path) -> None:
    from tests.shardfakes import make_fake_shards

    shards = make_fake_shards(tmp_path / "fake")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(b"my own model")
    (run_dir / "log.csv").write_text("my,own,log\n")
    r = run("train", shards, run_dir, "--epochs", "1", "-q", "--overwrite")
    no_traceback(r)
    assert r.exit_code != 0 and "not written by faceblocks" in r.output
    assert (run_dir / "best.pt").read_bytes() == b"my own model" and (run_dir / "log.csv").read_text() == "my,own,log\n"


def test_train_overwrite_replaces_its_own_run(tmp_path: Path, tiny_model: Path) -> None:
    from tests.shardfakes import make_fake_shards

    run_dir = _copy(tiny_model, tmp_path / "run")
    shards = make_fake_shards(tmp_path / "fake")
    r = run("train", shards, run_dir, "--epochs", "1", "--batch-size", "8", "-q", "--overwrite", "--model-kwargs",
            '{"widths": [4, 8], "feat_dim": 8}', "--val-split", "val")
    assert r.exit_code == 0, r.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_are_listed_never_read(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "imgs"
    _face_jpg(folder / "a.png")
    os.mkfifo(folder / "b.jpg")
    r = run("predict", tiny_model, folder, "--json", "-q", "--face", "aligned")
    no_traceback(r)
    rows = {Path(d["path"]).name: d for d in map(json.loads, (x for x in r.output.splitlines() if x.startswith("{")))}
    assert "not a regular file" in rows["b.jpg"]["error"] and rows["a.png"]["faces"]
    r = run("predict", tiny_model, folder / "b.jpg", "-q")
    assert r.exit_code != 0 and "not a regular file" in r.output
    r = run("preview", folder, "--out", tmp_path / "p.png", "--face", "aligned")
    no_traceback(r)
    assert r.exit_code == 0 and "not a regular file" in r.output


def test_a_full_disk_is_a_message(tmp_path: Path, monkeypatch) -> None:
    import prepro.shards as shards

    def full(*_a, **_k):
        raise RuntimeError("Disable slist on flush dest failure failed (errno = 28, 'No space left on device')")

    monkeypatch.setattr(shards, "_fill_shard", full)
    from prepro.synthetic import make_sample

    make_sample(tmp_path / "sample", per_class=4)
    r = run("preprocess", tmp_path / "sample", tmp_path / "out", "-j", "1", "-q")
    no_traceback(r)
    assert r.exit_code != 0 and "no space left on device" in r.output
    assert not [p for p in (tmp_path / "out" / "shards").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("kwargs", ['{"widths": [-4, 8]}', '{"num_classes": 3}', '{"widths": [100000, 100000]}',
                                    '{"widths": []}', '{"widths": [0, 8]}', '{"dropout": 5}'])
def test_bad_model_arguments_refused_before_any_work(tmp_path: Path, kwargs: str) -> None:
    from tests.shardfakes import make_fake_shards

    shards = make_fake_shards(tmp_path / "fake")
    r = run("train", shards, tmp_path / "run", "--epochs", "1", "-q", "--model-kwargs", kwargs)
    no_traceback(r)
    assert r.exit_code != 0 and "bad arguments" in r.output and not (tmp_path / "run" / "last.pt").exists()
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"[run]\nout = 'out'\n[data]\nsource = '{tmp_path / 'nowhere'}'\n[train]\nmodel_kwargs = {kwargs}\n"
                   .replace('{"', "{").replace('":', " =").replace(', "', ", "))
    r = run("run", cfg)
    no_traceback(r)
    assert r.exit_code != 0 and not (tmp_path / "out").exists()


def test_stored_bad_model_arguments_in_a_checkpoint(tmp_path: Path, tiny_model: Path) -> None:
    import torch

    from tests.shardfakes import make_fake_shards

    ck = torch.load(tiny_model / "best.pt", weights_only=True)
    ck["model_kwargs"] = {"widths": [-4, 8]}
    torch.save(ck, tmp_path / "bad.pt")
    shards = make_fake_shards(tmp_path / "fake")
    face = _face_jpg(tmp_path / "face.png")
    for args in (["predict", tmp_path / "bad.pt", face, "-q"], ["evaluate", tmp_path / "bad.pt", shards],
                 ["export-model", tmp_path / "bad.pt", tmp_path / "m.onnx"]):
        r = run(*args)
        no_traceback(r)
        assert r.exit_code != 0


def test_batch_size_one_is_refused(tmp_path: Path) -> None:
    from tests.shardfakes import make_fake_shards

    r = run("train", make_fake_shards(tmp_path / "fake"), tmp_path / "run", "--batch-size", "1", "-q")
    no_traceback(r)
    assert r.exit_code != 0 and "batch" in r.output.lower()


def test_a_shard_that_disagrees_with_its_manifest(tmp_path: Path) -> None:
    """A checksum-valid shard (the manifest's checksum updated too) cut at other block sizes."""
    from prepro.outputs import sha256_file
    from tests.shardfakes import make_fake_shards

    a = make_fake_shards(tmp_path / "a", eyes_size=(16, 48))
    b = make_fake_shards(tmp_path / "b", eyes_size=(24, 72))
    m = json.loads((a / "manifest.json").read_text())
    rec = m["shards"][0]
    other = json.loads((b / "manifest.json").read_text())["shards"][0]
    (a / rec["file"]).write_bytes((b / other["file"]).read_bytes())
    rec["sha256"], rec["n_samples"] = sha256_file(a / rec["file"]), other["n_samples"]
    (a / "manifest.json").write_text(json.dumps(m))
    r = run("verify", a)
    no_traceback(r)
    assert r.exit_code != 0 and "block_sizes" in r.output
    for args in (["train", a, tmp_path / "run", "--epochs", "1", "-q"], ["export", a, tmp_path / "exp", "-q"]):
        r = run(*args)
        no_traceback(r)
        assert r.exit_code != 0


def test_a_video_without_frames_is_accounted_for(tmp_path: Path, tiny_model: Path) -> None:
    empty = _video(tmp_path / "empty.avi", frames=0)
    face = _face_jpg(tmp_path / "face.png")
    r = run("predict", tiny_model, empty, face, "--json", "-q", "--face", "aligned", "--csv", tmp_path / "p.csv")
    no_traceback(r)
    rows = [json.loads(x) for x in r.output.splitlines() if x.startswith("{")]
    assert [Path(d["path"]).name for d in rows] == ["empty.avi", "face.png"] and rows[0]["error"]
    assert "empty.avi" in (tmp_path / "p.csv").read_text()


def test_output_folder_inside_the_source_refused(tmp_path: Path) -> None:
    from prepro.synthetic import make_sample

    make_sample(tmp_path / "sample", per_class=4)
    r = run("preprocess", tmp_path / "sample", tmp_path / "sample" / "happy" / "out", "-j", "1", "-q")
    no_traceback(r)
    assert r.exit_code != 0 and "inside" in r.output and not (tmp_path / "sample" / "happy" / "out").exists()


def test_diverging_training_stops_with_a_message(tmp_path: Path) -> None:
    from tests.shardfakes import make_fake_shards

    r = run("train", make_fake_shards(tmp_path / "fake"), tmp_path / "run", "--epochs", "2", "--lr", "10",
            "--grad-clip", "0", "--batch-size", "8", "--model-kwargs", '{"widths": [4, 8], "feat_dim": 8}', "-q",
            "--val-split", "val")
    no_traceback(r)
    assert r.exit_code != 0 and "diverged" in r.output


def test_predict_strict_and_all_failed(tmp_path: Path, tiny_model: Path) -> None:
    face = _face_jpg(tmp_path / "face.png")
    r = run("predict", tiny_model, tmp_path / "missing.jpg", "-q")
    no_traceback(r)
    assert r.exit_code != 0 and "no such file" in r.output
    r = run("predict", tiny_model, face, tmp_path / "missing.jpg", "-q", "--face", "aligned")
    assert r.exit_code == 0, r.output
    r = run("predict", tiny_model, face, tmp_path / "missing.jpg", "-q", "--face", "aligned", "--strict")
    assert r.exit_code != 0


def test_control_characters_in_names_reach_no_terminal(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "imgs"
    face = _face_jpg(folder / "a.png")
    face.rename(folder / "evil\x1b[31m\nname.png")
    r = run("predict", tiny_model, folder, "-q", "--face", "aligned")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "evil\\x1b[31m\\nname.png" in r.output


def test_predict_in_python_yields_a_reason_for_a_missing_path(tmp_path: Path, tiny_model: Path) -> None:
    from inference.predict import PredictOptions, predict

    out = list(predict(tiny_model, [str(tmp_path / "missing.jpg")], PredictOptions()))
    assert len(out) == 1 and "no such file" in out[0].error


def test_demo_at_its_smallest_sample(tmp_path: Path) -> None:
    r = run("demo", tmp_path / "demo", "-q", "--per-class", "4", "--epochs", "2", "-j", "1")
    no_traceback(r)
    assert r.exit_code == 0, r.output


def test_an_unfinished_preprocessing_run_is_said(tmp_path: Path, good_shards: Path) -> None:
    shards = _copy(good_shards, tmp_path / "shards")
    m = json.loads((shards / "manifest.json").read_text())
    m["complete"] = False
    (shards / "manifest.json").write_text(json.dumps(m))
    r = run("export", shards, tmp_path / "exp", "-q")
    no_traceback(r)
    assert "did not finish" in r.output


def test_a_file_moved_between_class_folders_is_said(tmp_path: Path) -> None:
    from prepro.synthetic import make_sample

    make_sample(tmp_path / "sample", per_class=4)
    r = run("preprocess", tmp_path / "sample", tmp_path / "out", "-j", "1", "-q")
    assert r.exit_code == 0, r.output
    moved = sorted((tmp_path / "sample" / "happy").iterdir())[0]
    moved.rename(tmp_path / "sample" / "sad" / moved.name)
    r = run("preprocess", tmp_path / "sample", tmp_path / "out", "-j", "1")
    no_traceback(r)
    assert "moved" in r.output and f"sad/{moved.name}" in r.output


def test_a_changed_source_file_is_said(tmp_path: Path) -> None:
    import time

    from prepro.synthetic import make_sample

    make_sample(tmp_path / "sample", per_class=4)
    r = run("preprocess", tmp_path / "sample", tmp_path / "out", "-j", "1", "-q")
    assert r.exit_code == 0, r.output
    changed = sorted((tmp_path / "sample" / "happy").iterdir())[0]
    later = time.time() + 5
    os.utime(changed, (later, later))  # as if the photo had been edited after the run
    r = run("preprocess", tmp_path / "sample", tmp_path / "out", "-j", "1")
    no_traceback(r)
    assert "modified" in r.output and f"happy/{changed.name}" in r.output
    r = run("preprocess", tmp_path / "sample", tmp_path / "out2", "-j", "1")
    assert "modified" not in r.output
