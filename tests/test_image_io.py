"""prepro.image_io: safe decoding to 8-bit grayscale."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prepro.image_io import ImageDecodeError, gray_from_array, read_gray


def _gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 3 + y * 5) % 256).astype(np.uint8)


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A tiny PNG whose IHDR claims w x h 8-bit grey pixels, with one empty IDAT and IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))


def test_plain_gray_jpeg(tmp_path: Path) -> None:
    p = tmp_path / "a.jpg"
    Image.fromarray(_gradient(48, 48)).save(p, quality=95)
    g, s = read_gray(p)
    assert g.dtype == np.uint8 and g.shape == (48, 48) and g.flags.c_contiguous and s == 1.0
    assert np.abs(g.astype(int) - _gradient(48, 48)).mean() < 20


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"empty file \(0 bytes\)"):
        read_gray(p)


def test_missing_file_is_oserror_not_decode_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_gray(tmp_path / "nope.jpg")


def test_text_named_jpg(tmp_path: Path) -> None:
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n")
    with pytest.raises(ImageDecodeError, match="not an image"):
        read_gray(p)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (120, 160), dtype=np.uint8)).save(buf, format=fmt)
    data = buf.getvalue()
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated image data"):
        read_gray(p)


def test_rgba_composited_on_black(tmp_path: Path) -> None:
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., :3] = 200  # light grey everywhere
    a[:2, :, 3] = 255  # top half opaque
    a[2:, :, 3] = 0  # bottom half transparent
    p = tmp_path / "rgba.png"
    Image.fromarray(a, "RGBA").save(p)
    g, _ = read_gray(p)
    assert (g[:2] == 200).all() and (g[2:] == 0).all()


def test_16bit_png_scaled_not_clipped(tmp_path: Path) -> None:
    a = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")
    g, _ = read_gray(p)
    assert g.tolist() == [[0, 1, 128, 255]]


def test_float_tiff_scaled_by_max(tmp_path: Path) -> None:
    p = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0]], np.float32), mode="F").save(p)
    g, _ = read_gray(p)
    assert g.tolist() == [[0, 64, 128, 255]]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 8), (0, 0, 0, 0)).save(p, quality=95)  # no ink = white
    assert Image.open(p).mode == "CMYK"
    g, _ = read_gray(p)
    assert g.shape == (8, 16) and g.min() > 240


def test_palette_la_and_1bit(tmp_path: Path) -> None:
    pal = Image.fromarray(_gradient(8, 8)).convert("P")
    pal.save(tmp_path / "p.png")
    Image.new("LA", (5, 3), (100, 255)).save(tmp_path / "la.png")
    Image.new("1", (5, 3), 1).save(tmp_path / "one.png")
    assert read_gray(tmp_path / "p.png")[0].shape == (8, 8)
    assert (read_gray(tmp_path / "la.png")[0] == 100).all()
    assert (read_gray(tmp_path / "one.png")[0] == 255).all()


def test_header_over_limit_refused_undecoded(tmp_path: Path) -> None:
    p = tmp_path / "claims48mp.png"
    _png_header_only(p, 8000, 6000)  # 48 MP claimed by a ~60-byte file
    assert p.stat().st_size < 100
    with pytest.raises(ImageDecodeError,
                       match=r"image too large: 8000x6000 = 48.0 MP exceeds the 40 MP limit"):
        read_gray(p)


def test_pillow_bomb_limit_becomes_decode_error(tmp_path: Path) -> None:
    p = tmp_path / "bomb.png"
    _png_header_only(p, 20000, 20000)  # beyond Pillow's own decompression-bomb error limit
    with pytest.raises(ImageDecodeError, match="image too large: 400.0 MP exceeds the 40 MP limit"):
        read_gray(p)


def test_non_ascii_name(tmp_path: Path) -> None:
    p = tmp_path / "gesicht_ü_表情.png"
    Image.fromarray(_gradient(10, 12)).save(p)
    g, _ = read_gray(p)
    assert np.array_equal(g, _gradient(10, 12))


def test_large_jpeg_reduced_decode(tmp_path: Path) -> None:
    p = tmp_path / "big.jpg"
    Image.fromarray(_gradient(3000, 4400)).save(p, quality=80)
    g, s = read_gray(p, work_max_side=1024)
    assert s == 0.25 and g.shape == (750, 1100)  # 1/4 keeps the longest side >= 1024
    g2, s2 = read_gray(p, work_max_side=2000)
    assert s2 == 0.5 and max(g2.shape) >= 2000
    g3, s3 = read_gray(p)
    assert s3 == 1.0 and g3.shape == (3000, 4400)


def test_large_png_area_downscaled(tmp_path: Path) -> None:
    p = tmp_path / "big.png"
    Image.fromarray(_gradient(900, 1300)).save(p, compress_level=1)
    g, s = read_gray(p, work_max_side=400)
    assert max(g.shape) == 400 and s == pytest.approx(400 / 1300)
    assert read_gray(p, work_max_side=700)[1] == 1.0  # not more than 2x too large: kept


def test_exif_rotation_applied(tmp_path: Path) -> None:
    a = np.full((40, 60), 230, np.uint8)
    a[:, :30] = 20  # left half dark
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    p = tmp_path / "phone.jpg"
    im.save(p, exif=exif, quality=95)
    g, _ = read_gray(p)
    assert g.shape == (60, 40)
    assert g[:25].mean() < 60 and g[35:].mean() > 200  # the dark left half is now on top


def test_gray_from_array() -> None:
    a = np.zeros((48, 48), np.uint8)
    assert gray_from_array(a) is a
    assert gray_from_array(a[:, ::2]).flags.c_contiguous
    with pytest.raises(ImageDecodeError, match="uint8"):
        gray_from_array(a.astype(np.float32))
    with pytest.raises(ImageDecodeError, match="HxW grey"):
        gray_from_array(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageDecodeError, match="numpy"):
        gray_from_array([[1, 2]])


def test_decode_gray_reports_the_exact_original_size(tmp_path):
    from PIL import Image

    from prepro.image_io import decode_gray

    p = tmp_path / "odd.jpg"
    Image.fromarray(np.full((3001, 4403), 128, np.uint8)).save(p, quality=80)
    d = decode_gray(p, work_max_side=500)
    assert d.scale < 1 and d.size == (3001, 4403)
    assert max(d.gray.shape) >= 500
