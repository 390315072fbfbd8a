"""A contact sheet of a shard folder: aligned faces with their landmarks and block boxes, beside the blocks.

Each tile shows the stored aligned face (scaled up) with the 68 landmarks (mapped into face-block
pixels with ``face_affine``) and the outlines of the eyes and mouth blocks (each block's corners
taken back to original-image pixels with the inverse of its affine, then into the face block with
``face_affine``), the eyes and mouth blocks themselves, and the label, landmark quality and how the
face box was found. Plain numpy + OpenCV compositing; the sheet is a few hundred kB for 24 samples.
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from prepro.errors import InputError, OutputError
from prepro.inputs import image_inputs, printable
from prepro.outputs import atomic_write
from prepro.shards import ShardReader

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.+-]+")

COLUMNS = 5
FACE_PX = 128  # the aligned face is drawn this tall
BLOCK_W = 144  # width of the column holding the two blocks and the text
GAP = 6
MARGIN = 8  # around the face, for block outlines that reach past it
TEXT_H = 30
HEADER_H = 22

# BGR colours
_EYES = (255, 160, 0)  # blue-ish
_MOUTH = (40, 40, 230)  # red
_POINTS = (40, 220, 40)  # green
_TEXT = (20, 20, 20)
_BG = (245, 245, 245)
_SHORT_METHOD = {"estimated": "crop", "estimated_fallback": "crop*"}


def _ascii(text: str, max_len: int = 60) -> str:
    """cv2.putText draws ASCII only."""
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))
    return text if len(text) <= max_len else text[:max_len - 3] + "..."


def _inverse_affine(a: np.ndarray) -> np.ndarray | None:
    m = np.vstack([np.asarray(a, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-9:
        return None
    return np.linalg.inv(m)[:2]


def _apply(a: np.ndarray, pts: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(2, 3)
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return pts @ a[:, :2].T + a[:, 2]


def block_outline(block_affine: np.ndarray, block_hw: tuple[int, int],
                  face_affine: np.ndarray) -> np.ndarray | None:
    """The four corners of a block (H x W pixels) in face-block pixel coordinates, or None.

    Block pixel corners -> original-image pixels (inverse of the block's affine) -> face-block
    pixels (``face_affine``).
    """
    inv = _inverse_affine(block_affine)
    if inv is None:
        return None
    h, w = block_hw
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    return _apply(face_affine, _apply(inv, corners))


def _fit(img: np.ndarray, max_w: int, max_h: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = min(max_w / w, max_h / h)
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    interp = cv2.INTER_NEAREST if s >= 2 else cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


def _tile(sample: dict, label: str, method: str) -> np.ndarray:
    import cv2

    face = np.asarray(sample["face"], np.uint8)
    fh, fw = face.shape
    scale = FACE_PX / fh
    face_w = max(1, int(round(fw * scale)))
    # The face sits on a margin of MARGIN pixels so that box edges just outside it stay visible.
    canvas_w, canvas_h = face_w + 2 * MARGIN, FACE_PX + 2 * MARGIN
    tile = np.full((canvas_h, canvas_w + GAP + BLOCK_W, 3), _BG, np.uint8)
    big = tile[:canvas_h, :canvas_w]  # a view: drawing on it draws on the tile
    big[MARGIN:MARGIN + FACE_PX, MARGIN:MARGIN + face_w] = cv2.cvtColor(
        cv2.resize(face, (face_w, FACE_PX), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
    shift = 4  # sub-pixel drawing
    one = 1 << shift
    to_canvas = lambda pts: np.round((pts * scale + MARGIN) * one)  # noqa: E731
    fa = sample["face_affine"]
    for name, colour in (("eyes", _EYES), ("mouth", _MOUTH)):
        quad = block_outline(sample[f"{name}_affine"], sample[name].shape[:2], fa)
        if quad is not None and np.all(np.isfinite(quad)) and np.abs(quad).max() < 1e5:
            cv2.polylines(big, [to_canvas(quad).astype(np.int32)], True, colour, 1, cv2.LINE_AA, shift)
    lm = np.asarray(sample["landmarks"], np.float64)
    if np.all(np.isfinite(lm)) and np.abs(lm).max() < 1e5:
        for x, y in to_canvas(_apply(fa, lm)).astype(np.int64):
            if 0 <= x < canvas_w * one and 0 <= y < canvas_h * one:
                cv2.circle(big, (int(x), int(y)), one, _POINTS, -1, cv2.LINE_AA, shift)
    x0 = canvas_w + GAP
    y = MARGIN
    room = (FACE_PX - TEXT_H - GAP) // 2
    for name in ("eyes", "mouth"):
        blk = cv2.cvtColor(_fit(np.asarray(sample[name], np.uint8), BLOCK_W, room), cv2.COLOR_GRAY2BGR)
        bh, bw = blk.shape[:2]
        tile[y:y + bh, x0:x0 + bw] = blk
        y += bh + GAP // 2
    q = float(sample["quality"])
    lines = [_ascii(label, 18), f"q {q:.2f}  {_SHORT_METHOD.get(method, _ascii(method, 10))}"]
    ty = MARGIN + FACE_PX - TEXT_H + 11
    for text in lines:
        cv2.putText(tile, text, (x0, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.4, _TEXT, 1, cv2.LINE_AA)
        ty += 14
    return tile


def pick(reader: ShardReader, count: int, seed: int = 0, worst: bool = False) -> np.ndarray:
    """Indices of ``reader`` to show: ``count`` at random (seeded, in folder order), or the lowest quality."""
    n = len(reader)
    count = min(count, n)
    if not worst:
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(n, size=count, replace=False))
    import h5py

    quality = np.empty(n, np.float64)
    for k, path in enumerate(reader.files):
        sel = np.flatnonzero(reader.index_shard == k)
        if not len(sel):
            continue
        with h5py.File(path, "r") as f:
            q = f["quality"][()].astype(np.float64)
        quality[sel] = q[reader.index_row[sel]]
    quality = np.where(np.isnan(quality), -np.inf, quality)  # an unknown quality is the most doubtful
    return np.argsort(quality, kind="stable")[:count]


def contact_sheet(shards_dir: str | os.PathLike, out_png: str | os.PathLike | None = None,
                  split: str | None = None, labels: Iterable[str] | None = None, count: int = 24,
                  seed: int = 0, worst: bool = False) -> Path:
    """Write a contact sheet PNG of ``count`` samples of ``shards_dir`` and return its path.

    ``split`` and ``labels`` restrict the samples (as in ``ShardReader``); ``worst`` shows the
    ``count`` samples with the lowest landmark quality (lowest first) instead of a seeded random
    choice. ``out_png`` defaults to `default_sheet_path` in ``shards_dir``.
    """
    if count < 1:
        raise InputError("count must be at least 1")
    labels = None if labels is None else [labels] if isinstance(labels, str) else list(labels)
    reader = ShardReader(shards_dir, split=split, labels=labels)
    try:
        if len(reader) == 0:
            raise InputError(f"{shards_dir} has no samples" + (f" in split {split}" if split else "")
                             + (f" with labels {', '.join(labels)}" if labels else ""))
        idx = pick(reader, count, seed=seed, worst=worst)
        methods = reader.manifest.box_methods
        fields = ("eyes", "mouth", "face", "landmarks", "eyes_affine", "mouth_affine", "face_affine",
                  "label", "quality", "box_method")
        tiles = []
        for i in idx:
            s = reader.get(int(i), fields)
            lab = int(s["label"])
            label = reader.label_names[lab] if 0 <= lab < len(reader.label_names) else "unlabelled"
            mi = int(s["box_method"])
            tiles.append(_tile(s, label, methods[mi] if 0 <= mi < len(methods) else str(mi)))
    finally:
        reader.close()
    what = f"{len(tiles)} lowest-quality" if worst else f"{len(tiles)} random (seed {seed})"
    scope = (f" {split}" if split else "") + (f" [{', '.join(labels)}]" if labels else "")
    title = (f"{Path(shards_dir).name or shards_dir}: {what} of {len(reader)}{scope} samples   "
             "green: landmarks, blue: eyes block, red: mouth block")
    out = Path(out_png) if out_png is not None else default_sheet_path(shards_dir, split, labels, worst)
    return _write_sheet(tiles, title, out, default=out_png is None)


SHEET_FORMATS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_SOFTWARE = "faceblocks preview"  # written into every PNG sheet, so a default name is only reused for ours


def default_sheet_path(folder: str | os.PathLike, split: str | None = None, labels: Iterable[str] | None = None,
                       worst: bool = False) -> Path:
    """``FOLDER/preview[-split][-labels][-worst].png``: different requests, different files."""
    parts = ["preview"] + ([split] if split else []) + (["+".join(labels)] if labels else []) + (
        ["worst"] if worst else [])
    name = "-".join(_UNSAFE_NAME.sub("_", p) for p in parts)[:120] + ".png"
    return Path(folder) / name


def is_own_sheet(path: Path) -> bool:
    """True when ``path`` is a PNG contact sheet faceblocks wrote (it carries our Software tag)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get("Software") == _SOFTWARE
    except Exception:  # noqa: BLE001 - anything unreadable is simply not ours
        return False


def _sheet_bytes(sheet: np.ndarray, suffix: str) -> bytes:
    """The sheet encoded as its file name says (PNG sheets carry faceblocks' Software tag)."""
    import io

    from PIL import Image, PngImagePlugin

    if suffix not in SHEET_FORMATS:
        raise InputError(f"a contact sheet is written as {', '.join(SHEET_FORMATS)}; not {suffix or 'no extension'}")
    img, buf = Image.fromarray(np.ascontiguousarray(sheet[:, :, ::-1])), io.BytesIO()
    if suffix == ".png":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", _SOFTWARE)
        img.save(buf, format="PNG", pnginfo=info, optimize=True)
    else:
        img.save(buf, format={".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix, suffix[1:].upper()), quality=92)
    return buf.getvalue()


def _write_sheet(tiles: list[np.ndarray], title: str, out: Path, default: bool = False) -> Path:
    """Lay ``tiles`` out COLUMNS to a row under ``title`` and write the image atomically. A
    ``default`` path (not named by the user) never replaces a file faceblocks did not write."""
    import cv2

    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    cols = min(COLUMNS, len(tiles))
    rows = -(-len(tiles) // cols)
    sheet = np.full((HEADER_H + rows * (th + GAP) + GAP, cols * (tw + GAP) + GAP, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = HEADER_H + GAP + r * (th + GAP), GAP + c * (tw + GAP)
        sheet[y:y + t.shape[0], x:x + t.shape[1]] = t
    cv2.putText(sheet, _ascii(title, 200), (GAP, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _TEXT, 1, cv2.LINE_AA)
    data = _sheet_bytes(sheet, out.suffix.lower())
    if default and os.path.lexists(out) and not is_own_sheet(out):
        raise OutputError(f"{out} exists and is not a contact sheet faceblocks wrote: it is left alone; "
                          "name the sheet with --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write {out} ({e.strerror or e})") from None
    atomic_write(out, lambda f: f.write(data))
    return out


# ---------------------------------------------------------------------------------------------
# Raw images: what `preprocess` would cut, before anything is written


@dataclass
class ImageSheet:
    """A contact sheet of raw images and what could not be shown."""

    path: Path  # the PNG written
    images: int  # images found among the inputs
    shown: int  # tiles on the sheet (failures included, drawn as such)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (image, reason) of the shown ones

    def report(self) -> list[str]:
        """Each image shown without blocks and why, then where the sheet went."""
        return [f"{path}: {reason}" for path, reason in self.failures] + [
            f"{self.path} ({self.shown} of {self.images} images, {len(self.failures)} without blocks)"]


def _failure_tile(gray: np.ndarray | None, name: str, reason: str) -> np.ndarray:
    """A tile of the same size as `_tile`'s: the image (if it decoded) and why no face was cut."""
    import cv2

    tile = np.full((FACE_PX + 2 * MARGIN, FACE_PX + 2 * MARGIN + GAP + BLOCK_W, 3), _BG, np.uint8)
    if gray is not None:
        img = cv2.cvtColor(_fit(gray, FACE_PX, FACE_PX), cv2.COLOR_GRAY2BGR)
        h, w = img.shape[:2]
        tile[MARGIN:MARGIN + h, MARGIN:MARGIN + w] = img
    cv2.rectangle(tile, (MARGIN - 2, MARGIN - 2), (MARGIN + FACE_PX + 1, MARGIN + FACE_PX + 1), _MOUTH, 1)
    x0 = FACE_PX + 2 * MARGIN + GAP
    lines = [_ascii(name, 18), "NO BLOCKS:"] + [_ascii(w, 22) for w in textwrap.wrap(reason, 22)[:5]]
    y = MARGIN + 12
    for text in lines:
        cv2.putText(tile, text, (x0, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, _TEXT, 1, cv2.LINE_AA)
        y += 15
    return tile


def contact_sheet_images(inputs: Iterable[str], out_png: str | os.PathLike | None, cutter, count: int = 24,
                         seed: int = 0, worst: bool = False) -> ImageSheet:
    """A contact sheet of raw images (files, folders, globs) cut by ``cutter`` (a
    `prepro.faces.FaceCutter`: exactly what `preprocess` would cut).

    ``count`` images are chosen at random (seeded, shown in path order) when there are more;
    ``worst`` processes every image and shows the failures first, then the lowest landmark
    quality. An image that cannot be read or holds no face gets a tile that says why; an input
    that is no readable file (missing, a FIFO, a link out of its folder) is listed in
    ``failures`` and never opened. ``out_png`` None writes `default_sheet_path` in the current
    folder (never over a file faceblocks did not write).
    """
    if count < 1:
        raise InputError("count must be at least 1")
    listed = image_inputs(inputs)
    paths = [p for p, reason in listed if reason is None]
    unusable = [(printable(p), reason) for p, reason in listed if reason is not None]
    if not paths:
        raise InputError("no readable image files among the inputs"
                         + "".join(f"\n  {p}: {r}" for p, r in unusable[:10]))
    if worst or len(paths) <= count:
        chosen = paths
    else:
        rng = np.random.default_rng(seed)
        chosen = [paths[i] for i in np.sort(rng.choice(len(paths), size=count, replace=False))]
    done = [(p, cutter.cut(p, keep_image=True)) for p in chosen]
    if worst:  # failures first, then the lowest quality
        done.sort(key=lambda d: -1.0 if d[1].failure else d[1].faces[0].face.quality)
        done = done[:count]
    tiles, failures = [], list(unusable)
    for path, cut in done:
        name = printable(Path(path).name)
        if cut.failure:
            failures.append((printable(path), cut.failure))
            tiles.append(_failure_tile(cut.gray, name, cut.failure))
            continue
        f, b = cut.faces[0].face, cut.faces[0].blocks
        sample = {"eyes": b.eyes, "mouth": b.mouth, "face": b.face, "landmarks": f.landmarks,
                  "eyes_affine": b.eyes_affine, "mouth_affine": b.mouth_affine, "face_affine": b.face_affine,
                  "quality": f.quality}
        tiles.append(_tile(sample, name, f.method))
    what = f"{len(tiles)} lowest-quality" if worst else (
        f"{len(tiles)}" + (f" random (seed {seed})" if len(paths) > count else ""))
    title = (f"{what} of {len(paths)} images, face mode {cutter.settings.face_mode}   "
             "green: landmarks, blue: eyes block, red: mouth block")
    out = Path(out_png) if out_png is not None else default_sheet_path(".", worst=worst)
    out = _write_sheet(tiles, title, out, default=out_png is None)
    return ImageSheet(path=out, images=len(paths), shown=len(tiles), failures=failures)
