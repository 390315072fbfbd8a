"""What a JPEG's or PNG's header says, read from its bytes without decoding a pixel.

`plain_header` recognises the files that OpenCV decodes to the same grey pixels as Pillow's checked
path (`prepro.image_io`): complete baseline or progressive JPEGs with one (grey) or three (YCbCr)
components and no EXIF or Adobe colour-transform segment, and complete non-transparent 8-bit grey
PNGs without EXIF. Everything else (truncated files, CMYK, EXIF orientation, alpha, 16 bits,
palettes, other formats) returns None and is left to Pillow, whose checks give the reasons.
"""

from __future__ import annotations

import struct

_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD9)))  # TEM, RSTn, SOI: no length field
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_PNG_GREY, _PNG_DEPTH_8 = 0, 8


def plain_header(data: bytes) -> tuple[str, int, int] | None:
    """("JPEG" or "PNG", width, height) when ``data`` is a plain file as above, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_header(data)
    if data[:8] == _PNG_SIGNATURE:
        return _png_header(data)
    return None


def _jpeg_header(data: bytes) -> tuple[str, int, int] | None:
    if not data.endswith(b"\xff\xd9"):  # no end-of-image marker: maybe cut, let Pillow decide
        return None
    pos, n, size = 2, len(data), None
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xDA:  # start of scan: the header is over
            return ("JPEG", *size) if size else None
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if length < 2 or pos + 2 + length > n:
            return None
        body = data[pos + 4:pos + 2 + length]
        if (marker == 0xE1 and body.startswith(b"Exif\x00")) or (marker == 0xEE and body.startswith(b"Adobe")):
            return None  # orientation or a colour transform: Pillow's path handles them
        if marker in _JPEG_SOF:
            if size is not None or len(body) < 6 or body[5] not in (1, 3):
                return None
            height, width = struct.unpack_from(">HH", body, 1)
            size = (width, height)
        pos += 2 + length
    return None


def _png_header(data: bytes) -> tuple[str, int, int] | None:
    if not data.endswith(_PNG_END) or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    if depth != _PNG_DEPTH_8 or colour != _PNG_GREY:
        return None
    pos = 8
    while pos + 8 <= len(data):  # the chunks before the image data
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IDAT":
            return "PNG", width, height
        if kind in (b"tRNS", b"eXIf"):
            return None
        pos += 12 + length
    return None
