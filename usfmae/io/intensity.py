"""Bring any decoded pixel array to [H, W, 3] uint8 RGB.

Float data may hold NaN or infinity (masked voxels of a resampled volume, failed reconstructions). They
never set the intensity range: the range is that of the finite values, NaN and -inf become 0 and +inf
becomes 255. An array with no finite value at all raises NoFiniteValues (readers reject the input).
"""

from __future__ import annotations

import numpy as np


class NoFiniteValues(ValueError):
    """Every value of a float array is NaN or infinite: there is no picture to stretch."""


def finite_range(arr: np.ndarray) -> tuple[float, float, np.ndarray | None]:
    """(lo, hi, mask of finite values or None when all are finite) of a float array."""
    finite = np.isfinite(arr)
    if finite.all():
        return float(arr.min()), float(arr.max()), None
    if not finite.any():
        raise NoFiniteValues(f"holds only NaN or infinite values ({arr.size} values)")
    values = arr[finite]
    return float(values.min()), float(values.max()), finite


def minmax_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Stretch the array's own [min, max] to [0, 255]; a constant array becomes zeros (module docstring
    for NaN and infinity)."""
    arr = np.asarray(arr)
    finite = None
    if arr.dtype.kind == "f":
        lo, hi, finite = finite_range(arr)
    else:
        lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        out = np.zeros(arr.shape, np.uint8)
    else:
        scale = 127.5 / (hi / 2 - lo / 2)  # == 255 / (hi - lo), without overflow for float extremes
        work = np.float64 if arr.dtype.itemsize >= 8 else np.float32
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = (arr.astype(work) - lo) * scale
        out = np.clip(np.nan_to_num(np.rint(scaled), nan=0.0), 0, 255).astype(np.uint8)
    if finite is not None:
        out[~finite & (arr > 0)] = 255  # +inf; NaN and -inf are 0 already
        out[~finite & ~(arr > 0)] = 0
    return out


def to_uint8(arr: np.ndarray, mode: str = "minmax") -> np.ndarray:
    """uint8 passes through; bool becomes 0/255; other types follow `mode` ('minmax' or 'shift').

    'shift' keeps the top 8 bits of unsigned integers (uint16 >> 8); signed and float data have no
    fixed range, so they always use min-max.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if mode == "shift" and arr.dtype.kind == "u":
        return (arr >> (8 * arr.dtype.itemsize - 8)).astype(np.uint8)
    return minmax_to_uint8(arr)


def to_rgb(arr: np.ndarray, *, bgr: bool = False, mode: str = "minmax") -> np.ndarray:
    """[H, W] gray, [H, W, 1|2|3|4] (gray, gray+alpha, colour, colour+alpha) -> [H, W, 3] uint8 RGB.

    Alpha is dropped, not composited: ultrasound has no meaningful transparency. `bgr` says the
    colour channels come in OpenCV's BGR order.
    """
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported pixel array shape {arr.shape}")
    channels = arr.shape[2]
    if channels in (1, 2):
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    else:
        arr = arr[:, :, :3]
        if bgr:
            arr = arr[:, :, ::-1]
    return np.ascontiguousarray(to_uint8(arr, mode))
