"""MetaImage (.mhd + data file, or .mha with data inline): header parser and volume.

Only the keys needed for pixels are interpreted: ObjectType, NDims, DimSize, ElementType,
ElementNumberOfChannels, ElementDataFile, BinaryDataByteOrderMSB / ElementByteOrderMSB,
HeaderSize, CompressedData, CompressedDataSize. Orientation and spacing are ignored (slices are not
resampled).

The data file a header names is resolved like an input (usfmae/io/files.py): it must lie inside the
input folder after following links and be a regular file, it may not be the header itself, and a file
that is an input of its own (a PNG, a DICOM...) is never read as raw data. Compressed data is inflated
incrementally and never beyond the declared size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from usfmae.io.config import ReaderConfig
from usfmae.io.files import os_reason, resolve_named_file
from usfmae.io.frame import ReadError, printable
from usfmae.io.kinds import read_head, standalone_kind
from usfmae.io.limits import check_bytes
from usfmae.io.planes import Volume, ZlibReader, lazy_planes, streamed_planes, whole_array

# MetaIO element types (metaTypes.h); MET_LONG is 4 bytes in MetaIO, MET_LONG_LONG 8.
ELEMENT_TYPES = {
    "MET_CHAR": np.int8, "MET_UCHAR": np.uint8,
    "MET_SHORT": np.int16, "MET_USHORT": np.uint16,
    "MET_INT": np.int32, "MET_UINT": np.uint32,
    "MET_LONG": np.int32, "MET_ULONG": np.uint32,
    "MET_LONG_LONG": np.int64, "MET_ULONG_LONG": np.uint64,
    "MET_FLOAT": np.float32, "MET_DOUBLE": np.float64,
}
MAX_HEADER_BYTES = 64 * 1024  # a MetaImage text header is a few hundred bytes
MAX_CHANNELS = 4  # gray, gray+alpha, RGB, RGBA: what a frame can show


@dataclass(frozen=True)
class MetaHeader:
    """The parsed fields of a MetaImage header that describe its pixel data."""

    dims: tuple[int, ...]  # DimSize in file order (x, y[, z]): x varies fastest on disk
    dtype: np.dtype  # with byte order applied
    channels: int
    data_name: str  # ElementDataFile as written ("LOCAL" for data inline)
    data_offset: int  # bytes to skip in the data file; -1 = data is the last bytes of the file
    compressed: bool
    compressed_size: int | None

    @property
    def n_bytes(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64)) * self.channels * self.dtype.itemsize


def split_header(path: Path) -> tuple[dict[str, str], int]:
    """Key -> raw value pairs up to and including ElementDataFile, and the byte length of that text."""
    with path.open("rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    fields: dict[str, str] = {}
    offset = 0
    for number, raw_line in enumerate(head.splitlines(keepends=True), 1):
        offset += len(raw_line)
        line = raw_line.decode("latin-1").strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ReadError(path, f"MetaImage header line {number} is not 'Key = Value' text (not a MetaImage?)")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":  # always the last key; binary data may follow
            return fields, offset
    raise ReadError(path, "MetaImage header has no ElementDataFile (truncated or not a MetaImage)")


def header_ints(path: Path, fields: dict[str, str], key: str, default: str | None = None) -> list[int]:
    """The whole numbers of header field `key`, or ReadError naming it."""
    if key not in fields and default is None:
        raise ReadError(path, f"MetaImage header lacks {key}")
    raw = fields.get(key, default)
    try:
        return [int(v) for v in raw.split()]
    except ValueError:
        raise ReadError(path, f"MetaImage {key} is not a list of whole numbers ({printable(raw, 40)!r})") from None


def parse_header(path: Path) -> MetaHeader:
    """Parse and validate the header of `path` (.mhd or .mha)."""
    fields, header_end = split_header(path)
    if fields.get("ObjectType", "Image") != "Image":
        raise ReadError(path, f"MetaImage ObjectType {printable(fields['ObjectType'], 40)!r} is not an Image")
    ndims = header_ints(path, fields, "NDims")
    dims = tuple(header_ints(path, fields, "DimSize"))
    (channels,) = header_ints(path, fields, "ElementNumberOfChannels", "1")[:1] or [0]
    (header_size,) = header_ints(path, fields, "HeaderSize", "0")[:1] or [0]
    compressed_size = header_ints(path, fields, "CompressedDataSize")[0] if "CompressedDataSize" in fields else None
    if ndims not in ([2], [3]) or len(dims) != ndims[0] or min(dims) < 1:
        raise ReadError(path, f"unsupported MetaImage geometry NDims={' '.join(map(str, ndims))} "
                              f"DimSize={' '.join(map(str, dims))}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ReadError(path, f"MetaImage ElementNumberOfChannels={channels} is not 1 to {MAX_CHANNELS}")
    if header_size < -1 or (compressed_size is not None and compressed_size < 1):
        raise ReadError(path, "MetaImage HeaderSize or CompressedDataSize is negative")
    element_type = fields.get("ElementType")
    if element_type not in ELEMENT_TYPES:
        raise ReadError(path, f"unsupported MetaImage ElementType {printable(str(element_type), 40)!r}")
    big_endian = "True" in (fields.get("BinaryDataByteOrderMSB"), fields.get("ElementByteOrderMSB"))
    dtype = np.dtype(ELEMENT_TYPES[element_type]).newbyteorder(">" if big_endian else "<")
    data_name = fields["ElementDataFile"]
    if data_name.split()[:1] == ["LIST"] or "%" in data_name:
        raise ReadError(path, "MetaImage with a list/pattern of data files is not supported")
    return MetaHeader(dims=dims, dtype=dtype, channels=channels, data_name=data_name,
                      data_offset=header_end if data_name == "LOCAL" else header_size,
                      compressed=fields.get("CompressedData") == "True", compressed_size=compressed_size)


def data_file(path: Path, header: MetaHeader, root: Path | None) -> Path:
    """The checked file holding the pixel data (module docstring); ReadError with the reason otherwise."""
    if header.data_name == "LOCAL":
        return path
    target = resolve_named_file(path, header.data_name, root)
    if target == path.resolve():
        raise ReadError(path, "MetaImage names itself as its data file (inline data is written 'LOCAL')")
    try:
        head = read_head(target)
    except OSError as err:
        raise ReadError(path, f"its data file {printable(header.data_name, 80)!r} cannot be opened: "
                              f"{os_reason(err)}") from None
    kind = standalone_kind(target, head)
    if kind is not None:
        raise ReadError(path, f"its data file {printable(header.data_name, 80)!r} is an input of its own "
                              f"({kind}), not raw MetaImage data: not read as pixels")
    return target


def open_metaimage(path: Path, cfg: ReaderConfig, axis: int, root: Path | None = None) -> Volume:
    """The volume of `path`: uncompressed data memory-mapped, compressed data streamed slice by slice
    along z (or inflated whole, within max_decoded_mb, for slicing along x or y)."""
    header = parse_header(path)
    source = data_file(path, header, root)
    n_bytes, spatial = header.n_bytes, len(header.dims)
    file_size = source.stat().st_size
    if not header.compressed:
        offset = file_size - n_bytes if header.data_offset == -1 else header.data_offset
        if offset < 0 or file_size - offset < n_bytes:
            raise ReadError(path, f"truncated MetaImage data: {max(file_size - max(offset, 0), 0)} "
                                  f"of {n_bytes} bytes")
        # On disk x varies fastest, so C order reads [(z,) y, x(, c)]; reversing gives file axis order.
        disk_shape = tuple(reversed(header.dims)) + ((header.channels,) if header.channels > 1 else ())
        array = np.memmap(source, header.dtype, mode="r", offset=offset, shape=disk_shape)
        order = list(range(spatial))[::-1] + ([spatial] if header.channels > 1 else [])
        return Volume(header.dims, header.channels, header.dtype.itemsize, lazy_planes(array.transpose(order), spatial))
    start, size = compressed_span(path, header, file_size)

    @contextlib.contextmanager
    def stream() -> Iterator[BinaryIO]:
        with source.open("rb") as raw:
            raw.seek(start)
            yield ZlibReader(raw, size)

    if spatial == 2 or axis == 2:
        planes = streamed_planes(stream, header.dims, header.channels, header.dtype, path)
    else:
        check_bytes(path, n_bytes, cfg, "the whole compressed MetaImage (sliced along x or y)")
        disk_shape = tuple(reversed(header.dims)) + ((header.channels,) if header.channels > 1 else ())
        array = whole_array(stream, n_bytes, path).view(header.dtype).reshape(disk_shape)
        planes = lazy_planes(array.transpose([2, 1, 0] + ([3] if header.channels > 1 else [])), spatial)
    return Volume(header.dims, header.channels, header.dtype.itemsize, planes)


def compressed_span(path: Path, header: MetaHeader, file_size: int) -> tuple[int, int | None]:
    """(offset, length or None for 'to the end') of the zlib payload in the data file."""
    if header.data_offset != -1:
        return header.data_offset, header.compressed_size
    if header.compressed_size is None:  # payload is the last CompressedDataSize bytes
        raise ReadError(path, "MetaImage with HeaderSize = -1 and compression needs CompressedDataSize")
    if header.compressed_size > file_size:
        raise ReadError(path, f"truncated MetaImage data: {file_size} of {header.compressed_size} compressed bytes")
    return file_size - header.compressed_size, header.compressed_size
