"""Declared size of every page of a TIFF (classic or BigTIFF), from its IFDs, before any page is decoded.

A TIFF is a chain of image file directories (IFDs), one per page. Walking the chain reads a few bytes per
page, so a file whose second page declares 30000x30000 is refused before its first page is decoded.
PIL cannot identify float RGB or float64 TIFFs that OpenCV decodes, hence this small parser.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

MAX_PAGES = 100_000  # a longer IFD chain is corrupt (or an attack), not a cine
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}
WIDTH, HEIGHT, BITS, PHOTOMETRIC, SAMPLES = 256, 257, 258, 262, 277
PALETTE = 3


class TiffPage(NamedTuple):
    height: int
    width: int
    bytes_per_pixel: int  # of the array OpenCV decodes (IMREAD_UNCHANGED; palettes expand to 3 channels)


class TiffError(ValueError):
    """The IFD chain is not a readable TIFF structure."""


def _sample_bytes(bits: int) -> int:
    """OpenCV stores 1..8-bit samples in 1 byte, 9..16 in 2, 17..32 in 4, more in 8."""
    return next(size for limit, size in ((8, 1), (16, 2), (32, 4)) if bits <= limit) if bits <= 32 else 8


def tiff_pages(data: bytes) -> list[TiffPage]:
    """Every page's declared geometry, in file order. TiffError for a broken or looping chain."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None:
        raise TiffError("no TIFF byte-order mark")
    (magic,) = struct.unpack_from(order + "H", data, 2)
    if magic == 42:
        offset_fmt, count_fmt, entry_size, first = "I", "H", 12, struct.unpack_from(order + "I", data, 4)[0]
    elif magic == 43:
        offset_fmt, count_fmt, entry_size, first = "Q", "Q", 20, struct.unpack_from(order + "Q", data, 8)[0]
    else:
        raise TiffError(f"TIFF version {magic} is neither classic (42) nor BigTIFF (43)")
    inline = struct.calcsize(offset_fmt)  # values up to this many bytes are stored in the entry itself

    def values(entry: int) -> tuple[int, ...]:
        _, kind, count = struct.unpack_from(order + "HH" + offset_fmt, data, entry)
        size = TYPE_SIZES.get(kind)
        if size is None or kind not in (1, 3, 4, 16) or count > 64:
            raise TiffError(f"unexpected TIFF field type {kind} or count {count}")
        at = entry + 4 + inline
        if size * count > inline:
            (at,) = struct.unpack_from(order + offset_fmt, data, at)
        code = {1: "B", 3: "H", 4: "I", 16: "Q"}[kind]
        return struct.unpack_from(order + code * count, data, at)

    pages, seen, offset = [], set(), first
    try:
        while offset:
            if offset in seen or len(pages) >= MAX_PAGES:
                raise TiffError("the TIFF page chain loops or is implausibly long")
            seen.add(offset)
            (count,) = struct.unpack_from(order + count_fmt, data, offset)
            start = offset + struct.calcsize(count_fmt)
            fields: dict[int, tuple[int, ...]] = {}
            for i in range(count):
                entry = start + i * entry_size
                (tag,) = struct.unpack_from(order + "H", data, entry)
                if tag in (WIDTH, HEIGHT, BITS, PHOTOMETRIC, SAMPLES):
                    fields[tag] = values(entry)
            if WIDTH not in fields or HEIGHT not in fields:
                raise TiffError(f"TIFF page {len(pages)} has no width or height")
            samples = fields.get(SAMPLES, (1,))[0]
            bits = max(fields.get(BITS, (1,)))
            per_pixel = max(samples, 3 if fields.get(PHOTOMETRIC, (0,))[0] == PALETTE else 1) * _sample_bytes(bits)
            pages.append(TiffPage(fields[HEIGHT][0], fields[WIDTH][0], per_pixel))
            (offset,) = struct.unpack_from(order + offset_fmt, data, start + count * entry_size)
    except struct.error as err:
        raise TiffError("the TIFF structure points beyond the end of the file") from err
    if not pages:
        raise TiffError("the TIFF holds no page")
    return pages
