"""Safe decoding of image files to 8-bit grayscale.

Every file either becomes a uint8 HxW C-contiguous array or raises `ImageDecodeError` whose
message is a short human reason (the pipeline lists it as the failure reason). The pixel count in
the header is checked before any pixel is decoded; truncated data is an error, never a half-grey
image (Pillow's ``LOAD_TRUNCATED_IMAGES`` is left False and is checked). Only the formats of
`DECODED_FORMATS` are ever given to a decoder, and a large file is never read whole before its
header is checked.

Two paths, the same pixels: plain files (complete JPEGs and 8-bit grey PNGs, see
`prepro.image_headers`) are decoded by OpenCV, about 5x faster on dataset-sized images; every
other file goes through Pillow's checked path, which gives the reasons.

Conversions to grayscale: colour -> ITU-R 601 luminance (for JPEG straight from the Y channel);
alpha (LA, RGBA, palette with transparency) -> composited on black, i.e. the grey is multiplied by
alpha, so transparent pixels are black whatever colour they store; 16-bit -> rounded value / 257
(65535 -> 255, 32768 -> 128); 32-bit float -> scaled so the image maximum is 255; 1-bit -> 0/255.
EXIF orientation is applied, so phone photos come out upright.

Large images can be decoded reduced (``work_max_side``): JPEGs by libjpeg's DCT-domain scaling
(1/2, 1/4, 1/8, nearly free), other formats by an area resize after the full decode. The returned
scale is decoded size / original size; original pixel ``x`` is at ``(x + 0.5) * scale - 0.5``.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from typing import Any, NamedTuple

import numpy as np

from prepro.image_headers import plain_header

DEFAULT_MAX_PIXELS = 40_000_000
# The formats faceblocks decodes (Pillow's names; its JPEG opener also opens camera MPO files). No
# other decoder is ever given a file: some (EPS) would run another program on it.
DECODED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM")
FAST_PATH_MAX_BYTES = 32 * 2**20  # files up to this size are read whole and tried with OpenCV


class ImageDecodeError(ValueError):
    """A file that cannot be turned into a grayscale image; the message is the reason."""


class Decoded(NamedTuple):
    gray: np.ndarray  # uint8 (H, W), C-contiguous, upright
    scale: float  # decoded size / original size (1.0 unless decoded reduced)
    size: tuple[int, int]  # the original (upright) height and width, exactly


def read_gray(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS,
              work_max_side: int | None = None) -> tuple[np.ndarray, float]:
    """Decode ``path`` to (uint8 HxW C-contiguous grayscale, scale); see `decode_gray`."""
    d = decode_gray(path, max_pixels=max_pixels, work_max_side=work_max_side)
    return d.gray, d.scale


def decode_gray(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS,
                work_max_side: int | None = None) -> Decoded:
    """Decode ``path`` to grayscale, with the decode scale and the exact original size.

    ``scale`` is decoded size / original size: 1.0 unless ``work_max_side`` allowed a reduced
    decode, which never brings the longest side below ``work_max_side``. Images whose header
    claims more than ``max_pixels`` pixels are refused before decoding. Only the formats of
    `DECODED_FORMATS` are decoded; a file of any other content is "not an image".
    """
    if work_max_side is not None and work_max_side < 1:
        raise ValueError(f"work_max_side must be >= 1 or None, got {work_max_side}")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        # Small files (nearly every dataset image) are read whole and tried on the fast path; a
        # large one is handed to Pillow as a file, which reads its header before any pixel data.
        data = f.read() if size <= FAST_PATH_MAX_BYTES else None
        if data is not None:
            fast = decode_plain(data, max_pixels, work_max_side)
            if fast is not None:
                return fast
            return _pillow_decode(io.BytesIO(data), max_pixels, work_max_side)
        return _pillow_decode(f, max_pixels, work_max_side)


def decode_plain(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                 work_max_side: int | None = None) -> Decoded | None:
    """OpenCV's decode of a plain file: a complete JPEG (grey or YCbCr, no EXIF, no Adobe
    colour transform) or a complete 8-bit grey PNG without transparency or EXIF; None for anything
    else (Pillow's checked path decides those). Same pixels as the Pillow path, about 5x faster."""
    import cv2

    header = plain_header(data)
    if header is None:
        return None
    fmt, w, h = header
    if w < 1 or h < 1 or w * h > max_pixels:
        return None  # Pillow's path gives the reason
    factor = _jpeg_reduction(w, h, work_max_side) if fmt == "JPEG" else 1
    flags = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
             8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    expected = (-(-h // factor), -(-w // factor))
    if gray is None or gray.dtype != np.uint8 or gray.shape != expected:
        return None
    scale = 1.0 / factor
    if fmt == "PNG":
        gray, scale = _area_reduce(gray, work_max_side)
    return Decoded(np.ascontiguousarray(gray), scale, (h, w))


def _pillow_decode(f: Any, max_pixels: int, work_max_side: int | None) -> Decoded:
    """Pillow's checked decode of an open file: header first, then the pixels."""
    from PIL import ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone in this process switched it on; with it, cut files decode as half-grey images.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images would "
                           "decode silently; set it back to False")
    im = _open_checked(f, max_pixels)
    w, h = im.size
    scale = _jpeg_draft(im, work_max_side) if im.format == "JPEG" else 1.0
    _load_checked(im)
    before = im.size
    im = _upright(im)
    if im.size != before:  # EXIF rotated by 90 degrees: the original's sides swap too
        w, h = h, w
    gray = _to_gray(im)
    if scale == 1.0:
        gray, scale = _area_reduce(gray, work_max_side)
    return Decoded(gray, scale, (h, w))


def _open_checked(f: Any, max_pixels: int) -> Any:
    """The opened image (header read, no pixels yet) of an allowed format within ``max_pixels``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below is the limit; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(f, formats=DECODED_FORMATS)
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (cannot identify format)") from None
    except Image.DecompressionBombError as e:
        # Pillow refuses > 2 * MAX_IMAGE_PIXELS while opening, before our check; same reason text.
        # Its message has the pixel count but not the dimensions.
        m = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(m.group(1)) if m else None
        if pixels is not None and pixels > max_pixels:
            raise ImageDecodeError(f"image too large: {pixels / 1e6:.1f} MP exceeds the "
                                   f"{max_pixels / 1e6:g} MP limit") from None
        raise ImageDecodeError(f"image too large: exceeds Pillow's decompression-bomb limit of "
                               f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.1f} MP") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if "truncated" in str(e).lower():
            raise ImageDecodeError("truncated image data (cut inside the header)") from None
        raise ImageDecodeError(f"corrupt image header ({_short(e)})") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageDecodeError(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageDecodeError(f"image too large: {w}x{h} = {w * h / 1e6:.1f} MP exceeds the "
                               f"{max_pixels / 1e6:g} MP limit")
    return im


def _load_checked(im: Any) -> None:
    try:
        im.load()
    except OSError as e:
        if "truncated" in str(e):
            raise ImageDecodeError("truncated image data") from None
        raise ImageDecodeError(f"corrupt image data ({_short(e)})") from None
    except (SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageDecodeError(f"corrupt image data ({_short(e)})") from None


def _area_reduce(gray: np.ndarray, work_max_side: int | None) -> tuple[np.ndarray, float]:
    """An image decoded at full size, area-reduced when more than twice ``work_max_side``."""
    if (work_max_side is None or max(gray.shape) <= 2 * work_max_side
            or min(gray.shape) * work_max_side / max(gray.shape) < 1):  # a sliver is left as it is
        return gray, 1.0
    import cv2

    s = work_max_side / max(gray.shape)
    # fx/fy given (no dsize): OpenCV maps with exactly this factor, so `s` is the true scale.
    return cv2.resize(gray, (0, 0), fx=s, fy=s, interpolation=cv2.INTER_AREA), s


def gray_from_array(arr: Any) -> np.ndarray:
    """An already decoded image (a CSV row of pixels, an OpenCV frame) as uint8 HxW grey.

    Accepted: uint8 HxW grey (returned as it is, made contiguous), HxWx1, HxWx3 in OpenCV's BGR
    channel order and HxWx4 BGRA; colour becomes grey as in `decode_gray` (ITU-R 601 luminance,
    alpha composited on black)."""
    if not isinstance(arr, np.ndarray):
        raise ImageDecodeError(f"expected a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.uint8:
        raise ImageDecodeError(f"expected uint8 pixels, got {arr.dtype}")
    if arr.ndim not in (2, 3) or arr.shape[0] < 1 or arr.shape[1] < 1 or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ImageDecodeError(f"expected an HxW grey, HxWx3 BGR or HxWx4 BGRA array, got shape {arr.shape}")
    if arr.ndim == 2:
        return np.ascontiguousarray(arr)
    if arr.shape[2] == 1:
        return np.ascontiguousarray(arr[..., 0])
    return _bgr_to_gray(arr)


def _bgr_to_gray(arr: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L luminance (fixed point, rounded) of a BGR or BGRA array; alpha multiplies
    the grey (composited on black), as for decoded files."""
    b, g, r = (arr[..., c].astype(np.uint32) for c in range(3))
    gray = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    if arr.shape[2] == 4:
        gray = (gray * arr[..., 3] + 127) // 255
    return np.ascontiguousarray(gray.astype(np.uint8))


def _jpeg_reduction(w: int, h: int, work_max_side: int | None) -> int:
    """The DCT-domain reduction (1, 2, 4 or 8) Pillow's draft mode picks for a JPEG of w x h:
    the largest that keeps the size at least ``work_max_side`` on the longer side."""
    if work_max_side is None or max(w, h) < 2 * work_max_side:
        return 1
    k = work_max_side / max(w, h)
    factor = min(w // max(1, math.ceil(w * k)), h // max(1, math.ceil(h * k)))
    return next(f for f in (8, 4, 2, 1) if factor >= f)


def _jpeg_draft(im: Any, work_max_side: int | None) -> float:
    """Ask libjpeg for grayscale straight from Y and, if allowed, a 1/2..1/8 DCT-scaled decode."""
    w, h = im.size
    size = None
    if work_max_side is not None and max(w, h) >= 2 * work_max_side:
        k = work_max_side / max(w, h)
        # Pillow picks the largest 1/s with size // s >= this size, so the result stays >= it.
        size = (max(1, math.ceil(w * k)), max(1, math.ceil(h * k)))
    if size is None and im.mode != "RGB":
        return 1.0  # nothing to gain: no reduction, no colour conversion to skip
    res = im.draft("L" if im.mode == "RGB" else im.mode, size)
    if res is None or size is None:
        return 1.0
    # draft returns the original extent in decoded pixels (original / s): the scale is exactly 1/s.
    return res[1][2] / w


def _upright(im: Any) -> Any:
    if im.format in ("JPEG", "PNG", "WEBP") and "exif" not in im.info:
        return im  # these keep EXIF only in info["exif"] (after load); skip parsing nothing
    orientation = im.getexif().get(0x0112, 1)
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        from PIL import ImageOps

        im = ImageOps.exif_transpose(im)
    return im


def _to_gray(im: Any) -> np.ndarray:
    mode = im.mode
    if mode == "L":
        return np.array(im)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "L")
        mode = im.mode
        if mode == "L":
            return np.array(im)
    if mode in ("LA", "La", "RGBA", "RGBa", "PA"):
        la = np.array(im.convert("LA"), dtype=np.uint16)
        # Composite on black: grey * alpha / 255, rounded.
        return np.ascontiguousarray(((la[..., 0] * la[..., 1] + 127) // 255).astype(np.uint8))
    if mode.startswith("I;16") or mode == "I":
        a = np.array(im)
        if mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
            raise ImageDecodeError("32-bit integer pixels outside 0..65535 are not supported")
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if mode == "F":
        a = np.array(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ImageDecodeError("float image holds NaN or infinite pixels")
        top = a.max()
        if top <= 0:
            return np.zeros(a.shape, np.uint8)
        return np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
    if mode == "1":
        return np.array(im.convert("L"))
    try:
        return np.array(im.convert("L"))
    except (ValueError, OSError) as e:
        raise ImageDecodeError(f"unsupported pixel mode {mode} ({_short(e)})") from None


def _short(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    return msg if len(msg) <= 80 else msg[:77] + "..."
