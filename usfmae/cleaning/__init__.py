"""Burned-in text and annotation removal (README "1. Build shards", Cleaning). Pure numpy/OpenCV, no Ray."""

from usfmae.cleaning.config import CleaningConfig
from usfmae.cleaning.image import resize_square, to_rgb_uint8
from usfmae.cleaning.ocr import TesseractNotInstalledError
from usfmae.cleaning.pipeline import clean_image, clean_images
from usfmae.cleaning.result import CleanResult

__all__ = [
    "CleanResult",
    "CleaningConfig",
    "TesseractNotInstalledError",
    "clean_image",
    "clean_images",
    "resize_square",
    "to_rgb_uint8",
]
