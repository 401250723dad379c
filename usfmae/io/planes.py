"""A volume as a sequence of 2D planes, read lazily or streamed one slice at a time (bounded memory).

    volume = Volume(dims=(x, y, z), channels=1, itemsize=2, planes=lazy_planes(proxy, 3))
    for plane in volume.planes(axis, [0, 2, 4]):   # [a, b(, C)]: the two other axes, in file order

Both NIfTI and MetaImage store x fastest and the last spatial axis slowest, so a slice along that axis
is one contiguous run of bytes: compressed volumes are decompressed slice by slice along it, and held
whole only when sliced along another axis (then max_decoded_mb caps the whole volume first).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from usfmae.io.frame import ReadError

CHUNK = 1 << 20  # bytes read at a time from compressed files
PlaneReader = Callable[[int, Sequence[int]], Iterator[np.ndarray]]  # (axis, slice numbers) -> planes
StreamOpener = Callable[[], AbstractContextManager[BinaryIO]]  # a stream positioned at the pixel data


@dataclass(frozen=True)
class Volume:
    """A volume's declared layout (from its header) and the reader of its planes."""

    dims: tuple[int, ...]  # spatial sizes in file order: (x, y) or (x, y, z)
    channels: int  # trailing channel axis length (1: none)
    itemsize: int  # bytes per stored value
    planes: PlaneReader

    def image_size(self, axis: int) -> tuple[int, int]:
        """(rows, cols) of a slice along `axis` shown as an image: rows = the higher remaining axis."""
        rest = [d for i, d in enumerate(self.dims) if len(self.dims) == 2 or i != axis]
        return rest[1], rest[0]


def lazy_planes(array: Any, spatial: int, transform: Callable | None = None) -> PlaneReader:
    """Planes of an array-like in file order ([x, y(, z)](, C)): a memmap, a nibabel proxy or an array."""
    def planes(axis: int, ks: Sequence[int]) -> Iterator[np.ndarray]:
        for k in ks:
            index = [slice(None)] * len(array.shape)
            if spatial == 3:
                index[axis] = k
            plane = np.asarray(array[tuple(index)])
            yield transform(plane) if transform else plane
    return planes


def read_into(stream: BinaryIO, out: memoryview) -> int:
    """Fill `out` from `stream`; returns the bytes read (fewer only at the end of the data)."""
    done = 0
    while done < len(out):
        n = stream.readinto(out[done:])
        if not n:
            break
        done += n
    return done


def skip(stream: BinaryIO, n: int) -> int:
    """Read and discard `n` bytes a chunk at a time (compressed streams cannot seek); returns bytes skipped."""
    done, scratch = 0, bytearray(min(n, CHUNK))
    while done < n:
        got = read_into(stream, memoryview(scratch)[: min(CHUNK, n - done)])
        if not got:
            break
        done += got
    return done


def read_array(stream: BinaryIO, n_bytes: int, path: Path, what: str) -> np.ndarray:
    """Exactly `n_bytes` from `stream` as a uint8 array (allocated once), or ReadError if the data ends."""
    out = np.empty(n_bytes, np.uint8)
    got = read_into(stream, memoryview(out))
    if got < n_bytes:
        raise ReadError(path, f"truncated data: {what} ends after {got} of {n_bytes} bytes")
    return out


def streamed_planes(open_stream: StreamOpener, volume_dims: tuple[int, ...], channels: int, dtype: np.dtype,
                    path: Path, transform: Callable | None = None) -> PlaneReader:
    """Planes along the slowest axis (z; 2D data is one plane), decoded from a stream one at a time."""
    x, y = volume_dims[0], volume_dims[1]
    plane_bytes = x * y * channels * dtype.itemsize
    disk_shape = (y, x) + ((channels,) if channels > 1 else ())  # x varies fastest on disk

    def planes(axis: int, ks: Sequence[int]) -> Iterator[np.ndarray]:
        with open_stream() as stream:
            position = 0
            for k in ks:
                try:
                    skipped = skip(stream, (k - position) * plane_bytes)
                    if skipped < (k - position) * plane_bytes:
                        raise ReadError(path, f"truncated data: it ends before slice {k}")
                    raw = read_array(stream, plane_bytes, path, f"slice {k}")
                except (zlib.error, EOFError, OSError) as err:
                    raise ReadError(path, f"compressed data is corrupt or cut short in slice {k} "
                                          f"({type(err).__name__})") from None
                position = k + 1
                plane = np.swapaxes(raw.view(dtype).reshape(disk_shape), 0, 1)  # file order [x, y(, C)]
                yield transform(plane) if transform else plane
    return planes


def whole_array(open_stream: StreamOpener, n_bytes: int, path: Path) -> np.ndarray:
    """The volume's `n_bytes` of data decompressed in one piece (callers check max_decoded_mb first)."""
    with open_stream() as stream:
        try:
            return read_array(stream, n_bytes, path, "the volume")
        except (zlib.error, EOFError, OSError) as err:
            raise ReadError(path, f"compressed data is corrupt or cut short ({type(err).__name__})") from None


class ZlibReader(io.RawIOBase):
    """A zlib stream as a readable file, inflated incrementally: never more output than asked for, so a
    tiny file inflating to gigabytes costs only what is read (readers read at most the declared size)."""

    def __init__(self, raw: BinaryIO, compressed_bytes: int | None = None):
        self.raw, self.left = raw, compressed_bytes
        self.inflate = zlib.decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = len(buffer)
        while True:
            if self.inflate.unconsumed_tail:
                data = self.inflate.decompress(self.inflate.unconsumed_tail, want)
            elif self.inflate.eof:
                return 0
            else:
                size = CHUNK if self.left is None else min(CHUNK, self.left)
                chunk = self.raw.read(size) if size > 0 else b""
                if not chunk:
                    return 0  # compressed data ends early: callers see a short read
                if self.left is not None:
                    self.left -= len(chunk)
                data = self.inflate.decompress(chunk, want)
            if data:
                buffer[: len(data)] = data
                return len(data)
