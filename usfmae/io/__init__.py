"""Input readers: every supported file kind -> 2D RGB uint8 frames.

    from usfmae.io import iter_frames, scan_inputs, ReaderConfig
    scan = scan_inputs(root)                  # inputs, and skipped paths (hidden, unlistable...) with the reason
    for path in scan.inputs:
        for frame in iter_frames(path, ReaderConfig(), root=root):  # raises ReadError naming the file
            ...

Kinds (usfmae/io/kinds.py): images (png/jpg/jpeg/bmp/tif/tiff), video (every container FFmpeg demuxes,
recognised by content: avi/mp4/mov/m4v/mpeg/mpg/ts/mkv/webm/wmv/asf/ogv/flv/mxf..., sampled at 3 fps),
DICOM (single and cine, sampled at 3 fps), volumes (NIfTI .nii/.nii.gz, MetaImage .mhd/.mha, sliced).

Hostile input is expected: only regular files inside the input folder are opened (usfmae/io/files.py),
decode sizes are checked from headers before allocation (ReaderConfig.max_pixels, max_decoded_mb), and
every failure is a ReadError with a readable reason naming the file.
"""

from usfmae.io.config import ReaderConfig
from usfmae.io.detect import detect_kind
from usfmae.io.dispatch import iter_frames
from usfmae.io.frame import Frame, ReadError, printable
from usfmae.io.metadata import content_key, hamming, perceptual_hash, source_hash
from usfmae.io.walk import InputScan, Skipped, list_inputs, scan_inputs

__all__ = [
    "Frame", "InputScan", "ReadError", "ReaderConfig", "Skipped", "content_key", "detect_kind", "hamming",
    "iter_frames", "list_inputs", "perceptual_hash", "printable", "scan_inputs", "source_hash",
]
