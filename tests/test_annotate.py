"""Annotated pictures: drawn in colour for a colour photo, and each face's label placed where it
covers neither another face's label nor any block (a synthetic two-face picture, no model needed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PIL import Image

from inference.annotate import Annotator
from inference.drawing import block_rects, draw, label_places
from inference.predictions import FacePrediction, ImagePrediction


def _face(left: float, top: float, size: float):
    """A face box with landmarks spread over it and blocks where eyes and mouth would be."""
    marks = np.stack(np.meshgrid(np.linspace(left + 0.2 * size, left + 0.8 * size, 17),
                                 np.linspace(top + 0.3 * size, top + 0.9 * size, 4)), -1).reshape(-1, 2)[:68]
    marks = np.vstack([marks, marks[:68 - len(marks)]]).astype(np.float32)

    def block(x: float, y: float, h: int, w: int, s: float):
        # pixels of the image -> block pixels: scale s about (x, y)
        return SimpleNamespace(affine=np.array([[s, 0, -s * x], [0, s, -s * y]], np.float32), shape=(h, w))

    eyes = block(left + 0.1 * size, top + 0.2 * size, 16, 48, 48 / (0.8 * size))
    mouth = block(left + 0.3 * size, top + 0.65 * size, 16, 32, 32 / (0.4 * size))
    blocks = SimpleNamespace(eyes=np.zeros(eyes.shape, np.uint8), eyes_affine=eyes.affine,
                             mouth=np.zeros(mouth.shape, np.uint8), mouth_affine=mouth.affine)
    face = SimpleNamespace(box=(left, top, left + size, top + size), landmarks=marks)
    return SimpleNamespace(face=face, blocks=blocks)


def _picture():
    """A colour photo (blue background) with two faces: the second just below the first, so a label
    above it would lie on the first face's mouth."""
    image = np.zeros((400, 300, 3), np.uint8)
    image[:] = (200, 60, 10)  # BGR: blue
    cut = SimpleNamespace(faces=[_face(80, 40, 120), _face(90, 150, 110)], size=(400, 300), scale=1.0)
    pred = ImagePrediction(path="two.png", faces=[
        FacePrediction(box=list(fc.face.box), box_method="hog", quality=0.9, label=label,
                       probabilities={label: p}, region_weights={"eyes": 0.5, "mouth": 0.5})
        for fc, label, p in zip(cut.faces, ("happy", "neutral"), (0.89, 0.61))])
    return image, cut, pred


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_labels_cover_no_block_and_no_other_label():
    image, cut, pred = _picture()
    blocks = [r for fc in cut.faces for r in block_rects(fc, 1.0)]
    labels = label_places(image.shape, 1.0, pred, cut)
    assert len(labels) == 2 and not _overlap(labels[0], labels[1])
    for rect in labels:
        assert not any(_overlap(rect, b) for b in blocks), (rect, blocks)
        assert 0 <= rect[0] < rect[2] <= image.shape[1] and 0 <= rect[1] < rect[3] <= image.shape[0]


def test_a_colour_photo_is_drawn_in_colour():
    image, cut, pred = _picture()
    drawn = draw(image, 1.0, pred, cut)
    assert drawn.shape == image.shape and tuple(drawn[395, 5]) == (200, 60, 10)  # untouched: still blue
    grey = draw(image[..., 1].copy(), 1.0, pred, cut)
    assert grey.ndim == 3 and tuple(grey[395, 5]) == (60, 60, 60)


def test_the_annotator_reads_the_photo_in_colour(tmp_path):
    image, cut, pred = _picture()
    path = tmp_path / "two.png"
    Image.fromarray(image[..., ::-1]).save(path)  # saved as RGB
    cut.gray = image.mean(2).astype(np.uint8)
    pred.path = str(path)
    with Annotator(str(tmp_path / "ann")) as annotator:
        written = annotator.add(pred, cut)
    out = np.asarray(Image.open(written).convert("RGB"))
    assert tuple(out[395, 5]) == (10, 60, 200)  # RGB of the blue background


def test_a_label_covers_no_other_face():
    """Face 2's place above its box would lie on face 1's box (clear of its blocks): it goes below."""
    image = np.zeros((400, 400, 3), np.uint8)
    cut = SimpleNamespace(faces=[_face(40, 40, 120), _face(150, 130, 120)], size=(400, 400), scale=1.0)
    pred = ImagePrediction(path="two.png", faces=[
        FacePrediction(box=list(fc.face.box), box_method="hog", quality=0.9, label="happy",
                       probabilities={"happy": 0.9}, region_weights={}) for fc in cut.faces])
    first, second = label_places(image.shape, 1.0, pred, cut)
    assert not _overlap(second, cut.faces[0].face.box) and not _overlap(first, cut.faces[1].face.box)
    assert second[1] > cut.faces[1].face.box[3]  # below its face


def test_each_track_has_its_colour():
    from inference.drawing import track_colour

    image, cut, pred = _picture()
    pred.faces[0].track, pred.faces[1].track = 1, 2
    drawn = draw(image, 1.0, pred, cut)
    for fc, fp in zip(cut.faces, pred.faces):
        left, top = (int(v) for v in fc.face.box[:2])
        assert tuple(drawn[top + 30, left]) == track_colour(fp.track)  # the left edge of its box
    assert track_colour(1) != track_colour(2)
