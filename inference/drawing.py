"""Drawing a prediction on its picture: each face's box, landmarks, block outlines and a label
placed where it covers no block and no other label.
"""

from __future__ import annotations

import os

import numpy as np

from inference.predictions import FacePrediction, ImagePrediction
from prepro.image_io import DECODED_FORMATS


def draw(picture: np.ndarray, scale: float, pred: ImagePrediction, cut) -> np.ndarray:
    """A BGR copy of ``picture`` (the decoded image: BGR colour, or grey) with each face's box,
    landmarks, block outlines and label; labels are placed by `label_places`."""
    import cv2

    img = cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR) if picture.ndim == 2 else picture.copy()
    thick = _line_width(img.shape)
    for fc, fp in zip(cut.faces, pred.faces):
        l, t, r, b = (v * scale for v in fc.face.box)
        cv2.rectangle(img, (int(l), int(t)), (int(r), int(b)), track_colour(fp.track), thick)
        for x, y in (fc.face.landmarks + 0.5) * scale - 0.5:
            cv2.circle(img, (int(round(x)), int(round(y))), thick, (0, 255, 0), -1)
        for name, colour in (("eyes", (255, 128, 0)), ("mouth", (0, 0, 255))):
            cv2.polylines(img, [np.round(_block_corners(fc, name, scale)).astype(np.int32)], True, colour, thick)
    for fp, (x0, y0, x1, y1) in zip(pred.faces, label_places(img.shape, scale, pred, cut)):
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 0), -1)  # dark ground: readable on any photo
        cv2.putText(img, _label_text(fp), (x0 + _PAD, y1 - _PAD - _baseline(thick)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, track_colour(fp.track), thick, cv2.LINE_AA)
    return img


# BGR, bright on the dark label ground and apart from the green landmarks and the block outlines.
_TRACK_COLOURS = ((0, 255, 255), (255, 0, 255), (0, 165, 255), (255, 255, 0), (180, 105, 255), (255, 144, 30),
                  (0, 215, 160), (203, 192, 255))


def track_colour(track: int | None) -> tuple[int, int, int]:
    """The colour of a face's box and label: one per track (yellow for an untracked face)."""
    return _TRACK_COLOURS[0 if track is None else (track - 1) % len(_TRACK_COLOURS)]


_PAD = 2  # pixels between a label's text and its ground


def _line_width(shape: tuple[int, ...]) -> int:
    return max(1, round(max(shape[:2]) / 400))


def _label_text(fp: FacePrediction) -> str:
    return f"{fp.label} {fp.probabilities[fp.label]:.2f}"


def _baseline(thick: int) -> int:
    import cv2

    return cv2.getTextSize("g", cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, thick)[1]


def _block_corners(fc, name: str, scale: float) -> np.ndarray:
    """The four corners of a face's ``name`` block in drawn pixels."""
    m = np.vstack([getattr(fc.blocks, f"{name}_affine"), [0, 0, 1]])
    h, w = getattr(fc.blocks, name).shape
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=np.float64).T
    return ((np.linalg.inv(m) @ corners)[:2].T + 0.5) * scale - 0.5


def block_rects(fc, scale: float) -> list[tuple[int, int, int, int]]:
    """The bounding rectangles (x0, y0, x1, y1; x1, y1 exclusive) of a face's blocks, outline
    included, in drawn pixels."""
    rects = []
    for name in ("eyes", "mouth"):
        pts = _block_corners(fc, name, scale)
        x0, y0 = np.floor(pts.min(0)).astype(int) - 1
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
        rects.append((int(x0), int(y0), int(x1), int(y1)))
    return rects


def label_places(shape: tuple[int, ...], scale: float, pred: ImagePrediction, cut) -> list[tuple[int, int, int, int]]:
    """Where each face's label goes (x0, y0, x1, y1), largest face first: the first of above, below,
    right of, left of or inside the top of its box (then higher above it) that lies in the picture
    and covers no block of any face, no other face's box and no label placed before; failing all,
    the least covered."""
    import cv2

    thick = _line_width(shape)
    height, width = shape[:2]
    taken = [r for fc in cut.faces for r in block_rects(fc, scale)]
    boxes = [tuple(int(round(v * scale)) for v in fc.face.box) for fc in cut.faces]
    places = []
    for n, (fc, fp) in enumerate(zip(cut.faces, pred.faces)):
        avoid = taken + [q for m, q in enumerate(boxes) if m != n]
        (tw, th), base = cv2.getTextSize(_label_text(fp), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, thick)
        w, h = tw + 2 * _PAD, th + base + 2 * _PAD
        l, t, r, b = (int(round(v * scale)) for v in fc.face.box)
        corners = [(l, t - h - 1), (l, b + 1), (r + 1, t), (l - w - 1, t), (l + 1, t + 1)]
        corners += [(l, t - k * (h + 1)) for k in range(2, 6)]
        rects = [(x, y, x + w, y + h) for x, y in corners]
        inside = [q for q in rects if q[0] >= 0 and q[1] >= 0 and q[2] <= width and q[3] <= height]
        free = [q for q in inside if not any(_covers(q, o) for o in avoid)]
        best = free[0] if free else min(inside or rects, key=lambda q: sum(_covers(q, o) for o in avoid))
        best = _pulled_in(best, width, height)
        places.append(best)
        taken.append(best)
    return places


def _pulled_in(rect: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """``rect`` moved the least that brings it into a ``width`` x ``height`` picture."""
    dx = max(0, -rect[0]) or min(0, width - rect[2])
    dy = max(0, -rect[1]) or min(0, height - rect[3])
    return rect[0] + dx, rect[1] + dy, rect[2] + dx, rect[3] + dy


def _covers(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """The area two rectangles share (0 when apart)."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def colour_picture(pred: ImagePrediction, cut) -> np.ndarray:
    """What to draw on: an image file that holds colour, decoded again in colour (BGR, upright, at
    the size the faces were found on); otherwise the grey image that was classified (a grey
    photo, a video frame, or a file that no longer decodes as it did a moment ago)."""
    import cv2
    from PIL import Image, ImageOps

    if pred.frame is not None or not isinstance(pred.path, str) or not os.path.isfile(pred.path):
        return cut.gray
    try:
        with Image.open(pred.path, formats=DECODED_FORMATS) as im:
            if im.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "PA"):
                return cut.gray  # a grey picture: its grey is the whole of it
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError):
        return cut.gray
    if cut.size is not None and rgb.shape[:2] != tuple(cut.size):
        return cut.gray  # the file changed since its faces were found
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = cut.gray.shape[:2]
    return bgr if bgr.shape[:2] == (h, w) else cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
