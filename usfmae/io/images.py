"""Still images: PNG, JPEG, BMP, TIFF (8/16-bit, float, gray, RGB, RGBA, palette; multi-page TIFF).

Sizes come first: the header of every page is read (PIL for PNG/JPEG/BMP, the IFD chain for TIFF) and
checked against max_pixels and max_decoded_mb before OpenCV decodes anything; a file whose header cannot
be read is not handed to a decoder at all. TIFF pages are then decoded one at a time.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from usfmae.io.config import ReaderConfig
from usfmae.io.frame import Frame, ReadError, make_frame
from usfmae.io.intensity import NoFiniteValues, to_rgb
from usfmae.io.limits import MIB, check_frame
from usfmae.io.kinds import TIFF_MAGICS
from usfmae.io.tiff import TiffError, TiffPage, tiff_pages

NOT_DECODABLE = "not a decodable image (corrupt, truncated or not an image)"
# Upper bounds of what OpenCV decodes per pixel with IMREAD_UNCHANGED: PNG up to 16-bit RGBA, the others
# 8-bit up to 4 channels (palettes expand to colour).
BYTES_PER_PIXEL = {"PNG": 8, "JPEG": 4, "MPO": 4, "BMP": 4}  # MPO: PIL's name for multi-picture JPEGs


def read_nonempty_bytes(path: Path, cfg: ReaderConfig) -> bytes:
    """The whole file, or ReadError if it is unreadable, empty or larger than max_decoded_mb."""
    try:
        size = path.stat().st_size
        if size > cfg.max_decoded_mb * MIB:
            raise ReadError(path, f"image file of {size / MIB:,.0f} MiB is larger than "
                                  f"max_decoded_mb={cfg.max_decoded_mb}: not read")
        data = path.read_bytes()
    except OSError as err:
        raise ReadError(path, f"cannot read file ({(err.strerror or type(err).__name__).lower()})") from err
    if not data:
        raise ReadError(path, "empty file (0 bytes)")
    return data


def declared_pages(path: Path, data: bytes) -> list[TiffPage]:
    """(height, width, bytes per decoded pixel) of every page, from headers only; ReadError if unreadable."""
    if data[:4] in TIFF_MAGICS:
        try:
            return tiff_pages(data)
        except TiffError as err:
            raise ReadError(path, f"{NOT_DECODABLE}: {err}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's decompression-bomb warning: the limits below decide
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                width, height, fmt = img.width, img.height, img.format
    except Image.DecompressionBombError:
        raise ReadError(path, "image declares more pixels than PIL's decompression-bomb limit: "
                              "refused before decoding") from None
    except Exception:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, struct.error... for junk
        raise ReadError(path, NOT_DECODABLE) from None
    if fmt not in BYTES_PER_PIXEL:
        raise ReadError(path, f"{fmt} images are not a supported input (PNG, JPEG, BMP, TIFF)")
    return [TiffPage(height, width, BYTES_PER_PIXEL[fmt])]


def decode_page(path: Path, buf: np.ndarray, index: int, multipage: bool) -> np.ndarray:
    """OpenCV decode of one page with IMREAD_UNCHANGED: keeps 16 bits, floats and alpha, expands palettes."""
    if multipage:
        ok, pages = cv2.imdecodemulti(buf, cv2.IMREAD_UNCHANGED, range=(index, index + 1))
        page = pages[0] if ok and pages else None
    else:
        page = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if page is None:
        where = f" (page {index})" if multipage else ""
        raise ReadError(path, f"{NOT_DECODABLE}{where}")
    return page


def iter_image_frames(path: Path, cfg: ReaderConfig, root: Path | None = None) -> Iterator[Frame]:
    """One frame per image (one per page for multi-page TIFF), as [H, W, 3] uint8 RGB."""
    data = read_nonempty_bytes(path, cfg)
    pages = declared_pages(path, data)
    for i, page in enumerate(pages):
        what = f"page {i}" if len(pages) > 1 else "image"
        check_frame(path, page.height, page.width, page.bytes_per_pixel, cfg, what)
    buf = np.frombuffer(data, np.uint8)
    for i in range(len(pages)):
        pixels = decode_page(path, buf, i, multipage=data[:4] in TIFF_MAGICS)
        try:
            rgb = to_rgb(pixels, bgr=True, mode=cfg.high_bit_depth)
        except NoFiniteValues:
            raise ReadError(path, f"page {i} holds only NaN or infinite values: no picture") from None
        except ValueError as err:
            raise ReadError(path, f"unsupported pixel layout ({err})") from err
        yield make_frame(rgb, i, "image")
