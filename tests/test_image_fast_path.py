"""The OpenCV fast path of `prepro.image_io` gives Pillow's pixels, and only plain files take it."""

from __future__ import annotations

import io
import resource
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prepro import image_io
from prepro.image_headers import plain_header
from prepro.image_io import ImageDecodeError, decode_gray, decode_plain


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 7 + y * 3) % 256, (x * 2 + y * 5) % 256, (x + y) % 256], axis=-1)
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def _encode_image(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    return _encode_image(Image.fromarray(arr), fmt, **kw)


def _pillow(data: bytes, work_max_side=None) -> image_io.Decoded:
    return image_io._pillow_decode(io.BytesIO(data), image_io.DEFAULT_MAX_PIXELS, work_max_side)


PLAIN = {
    "grey jpeg": lambda: _encode(_photo(48, 48)[..., 0], "JPEG", quality=90),
    "colour jpeg": lambda: _encode(_photo(120, 90), "JPEG", quality=85),
    "progressive jpeg": lambda: _encode(_photo(64, 80), "JPEG", progressive=True),
    "grey png": lambda: _encode(_photo(30, 50)[..., 1], "PNG"),
}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_files_take_the_fast_path_with_pillows_pixels(name: str) -> None:
    data = PLAIN[name]()
    fast, slow = decode_plain(data), _pillow(data)
    assert fast is not None, "a plain file should take the fast path"
    assert fast.gray.shape == slow.gray.shape and fast.size == slow.size and fast.scale == slow.scale
    np.testing.assert_array_equal(fast.gray, slow.gray)


@pytest.mark.parametrize("work_max_side", [64, 100, 150])
def test_reduced_jpeg_decode_matches_pillows_draft(work_max_side: int) -> None:
    data = _encode(_photo(700, 1000, seed=1), "JPEG", quality=90)
    fast, slow = decode_plain(data, work_max_side=work_max_side), _pillow(data, work_max_side)
    assert fast is not None and fast.scale == slow.scale < 1 and fast.size == slow.size == (700, 1000)
    np.testing.assert_array_equal(fast.gray, slow.gray)


def _with_exif_orientation(data: bytes) -> bytes:
    im = Image.open(io.BytesIO(data))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


ODD = {
    "truncated jpeg": lambda: PLAIN["colour jpeg"]()[:-200],
    "jpeg with trailing bytes": lambda: PLAIN["grey jpeg"]() + b"junk",
    "jpeg with exif orientation": lambda: _with_exif_orientation(PLAIN["colour jpeg"]()),
    "cmyk jpeg": lambda: _encode_image(Image.fromarray(_photo(40, 40)).convert("CMYK"), "JPEG"),
    "rgb png": lambda: _encode(_photo(20, 20), "PNG"),
    "grey png with transparency": lambda: _encode(_photo(20, 20)[..., 0], "PNG", transparency=5),
    "truncated png": lambda: PLAIN["grey png"]()[:-30],
    "bmp": lambda: _encode(_photo(20, 20), "BMP"),
    "text": lambda: b"not an image at all",
}


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_files_are_left_to_pillow(name: str) -> None:
    data = ODD[name]()
    assert plain_header(data) is None and decode_plain(data) is None


@pytest.mark.parametrize("name", sorted(ODD))
def test_decode_gray_gives_pillows_result_for_odd_files(tmp_path: Path, name: str) -> None:
    data = ODD[name]()
    p = tmp_path / "x.img"
    p.write_bytes(data)
    try:
        expected = _pillow(data)
    except ImageDecodeError as e:
        with pytest.raises(ImageDecodeError, match=str(e)[:20].replace("(", r"\(")):
            decode_gray(p)
        return
    got = decode_gray(p)
    np.testing.assert_array_equal(got.gray, expected.gray)
    assert got.size == expected.size


def test_only_listed_formats_are_decoded(tmp_path: Path) -> None:
    """A PostScript file named .jpg is never handed to Pillow's EPS plugin (which runs
    Ghostscript); nor are other formats faceblocks does not list (GIF, ICO)."""
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    for p, data in ((eps, None), (tmp_path / "a.jpg", _encode(_photo(8, 8), "GIF")),
                    (tmp_path / "b.png", _encode(_photo(16, 16), "ICO"))):
        if data is not None:
            p.write_bytes(data)
        with pytest.raises(ImageDecodeError, match="not an image"):
            decode_gray(p)


def test_a_huge_sparse_file_is_never_read_whole(tmp_path: Path) -> None:
    """3 GB of (sparse) zeros named .png: refused from its first bytes, memory unchanged."""
    p = tmp_path / "huge.png"
    with open(p, "wb") as f:
        f.truncate(3 * 2**30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_gray(p)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: far below 3 GB
