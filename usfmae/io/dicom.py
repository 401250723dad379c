"""DICOM (single frame and multi-frame cine), pixel data only.

Nothing read from the header leaves this module except what is needed to decode pixels; the
returned frames carry pixels and an index, never a tag value.

Headers are not trusted: every value that sizes a decode (Rows, Columns, NumberOfFrames, SamplesPerPixel,
BitsAllocated, the transfer syntax) is parsed here with a readable reason when it is not a sane number,
the pixel data actually present must hold every declared frame, and one frame's decoded size is checked
against the limits before pydicom decodes it. Frame-rate tags that hold junk only lose the rate (the
fallback applies, with a warning), not the scan.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, get_decoder, iter_pixels
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from usfmae.io.config import ReaderConfig
from usfmae.io.frame import Frame, ReadError, detail, make_frame, printable
from usfmae.io.intensity import to_rgb, to_uint8
from usfmae.io.limits import MIB, check_frame
from usfmae.io.sampling import indices_for_count, usable_fps

log = logging.getLogger(__name__)

# With raw=False pydicom 3 already returns these as RGB: it converts YBR_FULL(_422) itself and the
# JPEG 2000 decoder undoes the RCT/ICT component transform. Converting again would corrupt colours.
DECODED_AS_RGB = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"}
MONOCHROME = {"MONOCHROME1", "MONOCHROME2"}
SUPPORTED_PHOTOMETRIC = DECODED_AS_RGB | MONOCHROME | {"PALETTE COLOR"}
DEFER_BYTES = 64 * 1024  # values larger than this (native pixel data) stay on disk until decoded
UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class Geometry:
    """The validated values that size the pixel data."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits: int  # BitsAllocated
    photometric: str
    syntax: UID

    @property
    def frame_bytes(self) -> float:
        """Stored bytes of one native frame (YBR_FULL_422 stores 2 samples per pixel; 1-bit data is packed)."""
        samples = 2 if self.photometric == "YBR_FULL_422" and self.samples == 3 else self.samples
        return self.rows * self.columns * samples * self.bits / 8

    @property
    def decoded_bytes_per_pixel(self) -> int:
        """Bytes per pixel of one decoded frame, palettes expanded to 16-bit RGB."""
        per_sample = max(1, (self.bits + 7) // 8)
        return max(self.samples, 3) * max(per_sample, 2) if self.photometric == "PALETTE COLOR" \
            else self.samples * per_sample


def header_int(path: Path, ds: Dataset, keyword: str, low: int, high: int, default: int | None = None) -> int:
    """An integer header value in [low, high], or ReadError naming the tag and what it holds."""
    try:
        value = ds.get(keyword)
    except Exception:  # pydicom converts raw values on access and raises for malformed ones
        raise ReadError(path, f"DICOM {keyword} cannot be parsed") from None
    if value is None or value == "":
        if default is not None:
            return default
        raise ReadError(path, f"DICOM {keyword} is empty")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ReadError(path, f"DICOM {keyword} is not a whole number ({printable(repr(value), 40)})") from None
    if not low <= number <= high:
        raise ReadError(path, f"DICOM {keyword} = {number} is outside the valid range {low}..{high}")
    return number


def transfer_syntax(path: Path, ds: Dataset) -> UID:
    """The file's transfer syntax, inferred from how the dataset was encoded when the file meta lacks it."""
    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    if not value:
        implicit, little = getattr(ds, "original_encoding", (None, None))
        if implicit is None:
            raise ReadError(path, "DICOM file meta has no transfer syntax and the encoding cannot be inferred")
        value = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        log.warning("%s: DICOM file meta has no transfer syntax; assuming %s (as the header is encoded)",
                    printable(str(path)), value.name)
    syntax = UID(str(value))
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        kind = "unsupported" if syntax.is_transfer_syntax else "unknown"
        raise ReadError(path, f"{kind} DICOM transfer syntax {printable(str(syntax), 64)!r}: "
                              "no pixel decoder for it") from None
    if not decoder.is_available:
        raise ReadError(path, f"no installed pixel decoder handles the DICOM transfer syntax {syntax.name!r}")
    return syntax


def geometry(path: Path, ds: Dataset) -> Geometry:
    """Validate the image pixel module (ReadError naming the tag otherwise)."""
    if "Rows" not in ds or "Columns" not in ds or "PhotometricInterpretation" not in ds:
        raise ReadError(path, "DICOM has no image pixel module (not an image)")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise ReadError(path, f"unsupported photometric interpretation {printable(photometric, 40)!r}")
    if photometric == "PALETTE COLOR":
        check_palette(path, ds)
    return Geometry(rows=header_int(path, ds, "Rows", 1, 65535), columns=header_int(path, ds, "Columns", 1, 65535),
                    frames=max(1, header_int(path, ds, "NumberOfFrames", 0, 2**31 - 1, default=1)),
                    samples=header_int(path, ds, "SamplesPerPixel", 1, 4, default=1),
                    bits=header_int(path, ds, "BitsAllocated", 1, 64, default=8),
                    photometric=photometric, syntax=transfer_syntax(path, ds))


def check_palette(path: Path, ds: Dataset) -> None:
    """ReadError unless the three colour lookup tables have a readable descriptor and data of its width."""
    for colour in ("Red", "Green", "Blue"):
        try:
            entries, _, bits = (int(v) for v in ds.get(f"{colour}PaletteColorLookupTableDescriptor"))
            data = ds.get(f"{colour}PaletteColorLookupTableData") or ds.get(f"Segmented{colour}PaletteColorLookupTableData")
        except Exception:  # absent (None is not iterable), wrong count, text, unparsable raw value
            raise ReadError(path, f"DICOM {colour.lower()} palette lookup table descriptor is missing or malformed") \
                from None
        width = 2 if bits > 8 else 1  # scanners write shorter tables than 'entries' says: only the shape is checked
        if bits not in (8, 16) or not data or len(data) % width:
            raise ReadError(path, f"DICOM {colour.lower()} palette lookup table is malformed (descriptor: "
                                  f"{entries} entries of {bits} bits, data: {len(data or b'')} bytes)")


def read_dataset(path: Path, cfg: ReaderConfig) -> tuple[Dataset, Geometry]:
    """The dataset (native pixel data deferred: left on disk; encapsulated pixel data loaded, since its
    fragments must be walked to count frames) and its validated geometry. ReadError if the file is not
    DICOM, has no image, declares what it does not hold, or would load more than the limits allow."""
    size = path.stat().st_size
    if size == 0:
        raise ReadError(path, "empty file (0 bytes)")
    header, read_warnings = dcmread_quiet(path, stop_before_pixels=True)
    geo = geometry(path, header) if ("Rows" in header or not read_warnings) else None
    if geo is None:  # pydicom gives up on a cut header with a warning and an empty dataset
        raise ReadError(path, f"DICOM truncated or malformed ({printable(read_warnings[0], 120)})")
    check_frame(path, geo.rows, geo.columns, geo.decoded_bytes_per_pixel, cfg, "DICOM frame")
    if geo.syntax.is_encapsulated and size > cfg.max_decoded_mb * MIB:  # compressed data is loaded whole
        raise ReadError(path, f"compressed DICOM of {size / MIB:,.0f} MiB is larger than "
                              f"max_decoded_mb={cfg.max_decoded_mb}: not read")
    ds, read_warnings = dcmread_quiet(path, defer_size=DEFER_BYTES)
    check_pixel_data_complete(path, ds, geo, read_warnings)
    return ds, geo


def dcmread_quiet(path: Path, **kwargs) -> tuple[Dataset, list[str]]:
    """pydicom.dcmread with its warnings collected (without the file paths pydicom puts in them);
    ReadError when it cannot parse the file at all."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, **kwargs)
        except InvalidDicomError:
            raise ReadError(path, "not a DICOM file (no 'DICM' marker after a 128-byte preamble)") from None
        except Exception as err:  # pydicom raises many types for malformed files
            raise ReadError(path, f"not readable as DICOM ({detail(err, path)})") from err
    return ds, [re.sub(r"\s+(found )?in file .*$", "", str(w.message)) for w in caught]


def check_pixel_data_complete(path: Path, ds: Dataset, geo: Geometry, read_warnings: list[str]) -> None:
    """ReadError unless every declared frame's bytes are in the file (sampling alone would not notice a
    cut tail, and a header claiming 10^7 frames must not size anything)."""
    if "PixelData" not in ds:
        # pydicom drops an encapsulated PixelData whose end it cannot find.
        if read_warnings:
            raise ReadError(path, f"DICOM truncated: its pixel data is cut short ({printable(read_warnings[0], 120)})")
        raise ReadError(path, "DICOM has no pixel data")
    if geo.syntax.is_encapsulated:
        try:
            value = ds.PixelData
            found = sum(1 for _ in generate_frames(value, number_of_frames=geo.frames))
        except Exception as err:
            raise ReadError(path, f"DICOM compressed pixel data is malformed ({detail(err, path)})") from err
        if found < geo.frames:
            raise ReadError(path, f"truncated DICOM: {found} of {geo.frames} compressed frames present")
        return
    element = ds.get_item("PixelData", keep_deferred=True)  # deferred: offset and length only
    length = element.length
    if length == UNDEFINED_LENGTH:
        raise ReadError(path, f"DICOM pixel data is encapsulated but the transfer syntax {geo.syntax.name!r} "
                              "is uncompressed")
    needed = int(np.ceil(geo.frame_bytes * geo.frames))
    if length < needed:
        raise ReadError(path, f"truncated DICOM: pixel data holds {length} bytes, the header declares "
                              f"{geo.frames} frame(s) of {geo.rows}x{geo.columns} needing {needed}")
    end = getattr(element, "value_tell", None)
    if end is not None and end + length > path.stat().st_size:
        raise ReadError(path, f"truncated DICOM: file ends before its {length}-byte pixel data does")


def stated_fps(ds: Dataset) -> float | None:
    """Cine frame rate from FrameTime (ms), FrameTimeVector, CineRate or RecommendedDisplayFrameRate;
    None when none of them holds a usable number."""
    def number(keyword: str) -> float | None:
        try:
            value = float(ds.get(keyword))
        except Exception:  # absent (None), text, multi-valued or unparsable
            return None
        return value if np.isfinite(value) and value > 0 else None

    if (frame_time := number("FrameTime")) is not None:
        return 1000.0 / frame_time
    try:
        # Entry 0 is the time of frame 0 (usually 0); the others are intervals in ms.
        intervals = [float(v) for v in list(ds.get("FrameTimeVector") or [])[1:]]
        intervals = [v for v in intervals if np.isfinite(v) and v > 0]
    except Exception:
        intervals = []
    if intervals:
        return 1000.0 / float(np.mean(intervals))
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        if (rate := number(keyword)) is not None:
            return rate
    return None


def frame_to_rgb(arr: np.ndarray, ds: Dataset, photometric: str, mode: str) -> np.ndarray:
    """One decoded frame -> [H, W, 3] uint8 RGB according to its photometric interpretation."""
    if photometric == "PALETTE COLOR":
        # LUT entries are 8 or 16 bits; apply_color_lut returns them as stored.
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        rgb = apply_color_lut(arr, ds)
        return (rgb >> (bits - 8)).astype(np.uint8) if bits > 8 else rgb.astype(np.uint8)
    if photometric in MONOCHROME:
        gray = to_uint8(arr, mode)
        if photometric == "MONOCHROME1":  # minimum value is white
            gray = 255 - gray
        return to_rgb(gray)
    return to_rgb(arr, mode=mode)


def iter_dicom_frames(path: Path, cfg: ReaderConfig, root: Path | None = None) -> Iterator[Frame]:
    """Single frame -> one Frame; cine -> frames sampled at dicom_fps, index = source frame number."""
    ds, geo = read_dataset(path, cfg)
    if geo.frames > 1:
        fps = usable_fps(stated_fps(ds), cfg.fallback_source_fps, path, "DICOM cine")
        indices = indices_for_count(geo.frames, fps, cfg.dicom_fps)
    else:
        indices = [0]
    # Decode with the validated values, not whatever the file says; native data is read frame by frame.
    overrides = {"rows": geo.rows, "columns": geo.columns, "number_of_frames": geo.frames,
                 "samples_per_pixel": geo.samples, "bits_allocated": geo.bits, "transfer_syntax_uid": geo.syntax}
    if geo.syntax.is_encapsulated:
        ds.file_meta.TransferSyntaxUID = geo.syntax
        source = ds
    else:
        source = path
    produced = 0
    frames = iter_pixels(source, indices=indices, **overrides)
    for index in indices:
        try:
            arr = next(frames, None)
        except Exception as err:  # decoder plugins raise RuntimeError/ValueError/... for bad data
            raise ReadError(path, f"DICOM pixel data cannot be decoded ({detail(err, path)})") from err
        if arr is None:
            break
        try:
            rgb = frame_to_rgb(arr, ds, geo.photometric, cfg.high_bit_depth)
        except Exception as err:
            raise ReadError(path, f"DICOM frame {index} cannot be converted to RGB ({detail(err, path)})") from err
        yield make_frame(rgb, index, "dicom")
        produced += 1
    if produced < len(indices):
        raise ReadError(path, f"truncated DICOM: decoded {produced} of {len(indices)} requested frames")
