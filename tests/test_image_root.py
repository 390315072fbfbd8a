"""A label file kept apart from its images: --image-root names the folder its paths are relative to;
absolute paths are allowed inside it, and a path that leaves it is still refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from prepro.config import PreprocessRun
from prepro.errors import InputError
from prepro.readers import list_source


@pytest.fixture
def apart(tmp_path):
    """images/ with three faces; lists/labels.csv naming them absolutely, relatively and outside."""
    images, lists = tmp_path / "images", tmp_path / "lists"
    (images / "sub").mkdir(parents=True)
    lists.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "sub/b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(images / name)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "elsewhere.png")
    rows = ["path,label", f"{images / 'a.png'},happy", f"{images}/./sub//b.png,sad", "c.png,neutral",
            f"{tmp_path / 'elsewhere.png'},fear", "../elsewhere.png,angry", f"{images}/../elsewhere.png,angry"]
    (lists / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path, images, lists / "labels.csv"


def test_without_an_image_root_absolute_paths_are_refused_with_the_way_out(apart):
    _, _, labels = apart
    with pytest.raises(InputError, match=r"is absolute; paths must be relative to it \(or name the folder that "
                                         r"holds them with --image-root DIR\)"):
        list_source(str(labels))  # nothing usable: c.png is not beside the label file either


def test_image_root_takes_absolute_paths_inside_it_and_refuses_the_rest(apart):
    tmp_path, images, labels = apart
    listing = list_source(str(labels), image_root=str(images))
    assert sorted(it.source_id for it in listing.items) == ["a.png", "c.png", "sub/b.png"]
    assert {it.label for it in listing.items} == {"happy", "sad", "neutral"}
    reasons = {f.reason for f in listing.failures}
    assert len(listing.failures) == 3 and all("outside the image folder" in r for r in reasons), reasons
    # A link inside the root leading out of it is refused as before.
    (images / "link.png").symlink_to(tmp_path / "elsewhere.png")
    (labels.parent / "link.csv").write_text(f"path,label\n{images / 'link.png'},happy\nc.png,sad\n")
    listing = list_source(str(labels.parent / "link.csv"), image_root=str(images))
    assert [f.reason for f in listing.failures][0].startswith("symbolic link to a place outside")


def test_image_root_is_for_label_files_only_and_must_be_a_folder(apart, tmp_path):
    _, images, labels = apart
    with pytest.raises(InputError, match="only applies to label files"):
        list_source(str(images), image_root=str(images))
    with pytest.raises(InputError, match="not a folder"):
        list_source(str(labels), image_root=str(tmp_path / "nowhere"))


def test_cli_and_run_config_take_the_image_root(apart, tmp_path):
    from training.chain import load_config

    _, images, labels = apart
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["preprocess", str(labels), str(out), "--image-root", str(images), "--face",
                                  "aligned", "-j", "1", "-q", "--val-frac", "0", "--test-frac", "0"])
    assert r.exit_code == 0, r.output
    assert "3 samples" in r.output and "3 of 6 inputs could not be used" in r.output
    assert PreprocessRun(image_root=str(images)).image_root == str(images)
    config = tmp_path / "lists" / "run.toml"
    config.write_text('[data]\nsource = "labels.csv"\nimage_root = "../images"\n', encoding="utf-8")
    assert load_config(config)["data"]["image_root"] == str(images.resolve())
