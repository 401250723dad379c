"""3D volumes (NIfTI, MetaImage) -> 2D slices along `volume_axis`, each normalised to uint8.

Axes are in file order (x=0, y=1, z=2 for both formats; no reorientation to RAS). A slice is shown
with the higher remaining axis as rows, so a z-slice is [y, x] like the file's 2D image order.
2D files give one slice. Intensities: uint8 slices pass through; anything else is min-max
stretched per slice over its finite values (float CT-like ranges and 12/16-bit data have no fixed
display range; a slice holding only NaN/inf rejects the input).

Costs are bounded from the header before any data is read: one slice must fit max_pixels and
max_decoded_mb; uncompressed data is read slice by slice from disk, compressed data (.nii.gz,
compressed MetaImage) is inflated slice by slice along z, or whole within max_decoded_mb along x or y.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import nibabel as nib
import numpy as np

from usfmae.io.config import ReaderConfig
from usfmae.io.frame import Frame, ReadError, detail, make_frame
from usfmae.io.intensity import NoFiniteValues, to_rgb
from usfmae.io.kinds import METAIMAGE_EXTENSIONS
from usfmae.io.limits import check_bytes, check_frame
from usfmae.io.metaimage import open_metaimage
from usfmae.io.planes import Volume, lazy_planes, skip, streamed_planes, whole_array


class _Squeezed:
    """A proxy view that hides trailing singleton axes without loading the data."""

    def __init__(self, proxy: Any, shape: tuple[int, ...]):
        self.proxy, self.shape = proxy, shape

    def __getitem__(self, index: tuple) -> np.ndarray:
        return np.asarray(self.proxy[index + (0,) * (len(self.proxy.shape) - len(self.shape))])


def nifti_header(path: Path) -> tuple[Any, tuple[int, ...], np.dtype]:
    """(nibabel image, shape without trailing singleton axes, stored dtype), from the header only."""
    if path.stat().st_size == 0:
        raise ReadError(path, "empty file (0 bytes)")
    try:
        image = nib.load(path)
        shape = tuple(int(d) for d in image.shape)
        dtype = np.dtype(image.header.get_data_dtype())
    except Exception as err:  # nibabel raises ImageFileError, HeaderDataError, OSError, ...
        raise ReadError(path, f"not readable as NIfTI ({detail(err, path)})") from err
    while len(shape) > 3 and shape[-1] == 1:  # e.g. [x, y, z, 1] from tools that always write 4D
        shape = shape[:-1]
    if len(shape) > 3:
        raise ReadError(path, f"NIfTI with {len(shape)} non-singleton dimensions {shape} is not supported")
    if len(shape) < 2 or min(shape) < 1:
        raise ReadError(path, f"NIfTI declares no 2D image (dimensions {shape})")
    if dtype.fields is not None or dtype.kind not in "buif":
        raise ReadError(path, f"NIfTI data type {dtype} is not supported (numbers only)")
    return image, shape, dtype


def open_nifti(path: Path, cfg: ReaderConfig, axis: int) -> Volume:
    """Uncompressed .nii: nibabel's lazy proxy (slices read on demand, after a file-size check);
    .nii.gz: streamed slice by slice along z, or inflated whole within max_decoded_mb along x or y."""
    image, shape, dtype = nifti_header(path)
    spatial, offset = len(shape), int(image.dataobj.offset)
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not path.name.lower().endswith(".gz"):
        if path.stat().st_size < offset + n_bytes:
            raise ReadError(path, f"truncated NIfTI: {path.stat().st_size} bytes, header implies {offset + n_bytes}")
        proxy = image.dataobj
        array = proxy if shape == tuple(proxy.shape) else _Squeezed(proxy, shape)
        return Volume(shape, 1, dtype.itemsize, lazy_planes(array, spatial))
    slope, inter = image.dataobj.slope, image.dataobj.inter  # nibabel's scaling, applied by its proxy otherwise

    def scale(plane: np.ndarray) -> np.ndarray:
        return plane if (slope, inter) == (1.0, 0.0) else plane.astype(np.float32) * slope + inter

    @contextlib.contextmanager
    def stream() -> Iterator[BinaryIO]:
        with gzip.open(path, "rb") as f:
            if skip(f, offset) < offset:
                raise ReadError(path, "truncated NIfTI: the compressed stream ends inside the header")
            yield f

    if spatial == 2 or axis == 2:
        return Volume(shape, 1, dtype.itemsize, streamed_planes(stream, shape, 1, dtype, path, scale))
    check_bytes(path, n_bytes, cfg, "the whole .nii.gz volume (sliced along x or y)")
    array = whole_array(stream, n_bytes, path).view(dtype).reshape(shape, order="F")  # NIfTI: x fastest
    return Volume(shape, 1, dtype.itemsize, lazy_planes(array, spatial, scale))


def open_volume(path: Path, cfg: ReaderConfig, root: Path | None = None) -> Volume:
    """The volume of a NIfTI or MetaImage file, sized from its header (nothing decoded yet)."""
    if path.name.lower().endswith(METAIMAGE_EXTENSIONS):
        return open_metaimage(path, cfg, cfg.volume_axis, root)
    return open_nifti(path, cfg, cfg.volume_axis)


def iter_volume_frames(path: Path, cfg: ReaderConfig, root: Path | None = None) -> Iterator[Frame]:
    """Every volume_stride-th slice along volume_axis; Frame.index is the slice number."""
    volume = open_volume(path, cfg, root)
    axis = cfg.volume_axis if len(volume.dims) == 3 else 2
    rows, cols = volume.image_size(axis)
    check_frame(path, rows, cols, volume.channels * volume.itemsize, cfg, "volume slice")
    slice_numbers = range(0, volume.dims[axis], cfg.volume_stride) if len(volume.dims) == 3 else [0]
    for k, plane in zip(slice_numbers, volume.planes(axis, slice_numbers)):
        try:
            rgb = to_rgb(np.swapaxes(plane, 0, 1), mode="minmax")  # [rows, cols(, C)] -> [H, W, 3]
        except NoFiniteValues:
            raise ReadError(path, f"slice {k} holds only NaN or infinite values: no picture") from None
        except ValueError as err:
            raise ReadError(path, f"slice {k} has an unsupported pixel layout ({detail(err, path)})") from err
        yield make_frame(rgb, k, "volume")
