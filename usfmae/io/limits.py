"""Decode costs checked from declared sizes before anything is allocated (ReaderConfig.max_pixels and
max_decoded_mb). Every reader calls these with what the file's header claims, never with decoded arrays."""

from __future__ import annotations

from pathlib import Path

from usfmae.io.config import ReaderConfig
from usfmae.io.frame import ReadError

MIB = 1 << 20


def check_bytes(path: Path, n_bytes: int, cfg: ReaderConfig, what: str) -> None:
    """ReadError if `what` would decode to more than max_decoded_mb."""
    if n_bytes > cfg.max_decoded_mb * MIB:
        raise ReadError(path, f"{what} would decode to {n_bytes / MIB:,.0f} MiB, more than "
                              f"max_decoded_mb={cfg.max_decoded_mb}: refused before decoding")


def check_frame(path: Path, height: int, width: int, bytes_per_pixel: int, cfg: ReaderConfig,
                what: str = "image") -> None:
    """ReadError unless a declared height x width frame of `bytes_per_pixel` fits both limits."""
    if height < 1 or width < 1:
        raise ReadError(path, f"{what} declares an empty size of {height}x{width} pixels")
    if height * width > cfg.max_pixels:
        raise ReadError(path, f"{what} of {height}x{width} pixels exceeds max_pixels={cfg.max_pixels}: "
                              "refused before decoding")
    check_bytes(path, height * width * bytes_per_pixel, cfg, f"{what} of {height}x{width} pixels")
