"""Reader settings: frame sampling, volume slicing and safety limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from usfmae.config import Section


class ReaderConfig(Section):
    """How inputs become 2D frames (paper §2.1: video sampled at 3 frames per second, volumes sliced)."""

    video_fps: float = Field(3.0, gt=0, description="Frames kept per second of video (paper: 3).")
    dicom_fps: float = Field(3.0, gt=0, description="Frames kept per second of a DICOM cine (paper: 3).")
    fallback_source_fps: float = Field(
        30.0, gt=0,
        description="Frame rate assumed when a video or DICOM cine states none (or a nonsensical one); "
                    "a warning is logged. 30 is the usual ultrasound display rate.")
    video_min_decoded_fraction: float = Field(
        0.95, gt=0, le=1,
        description="A video that decodes fewer than this fraction of the frames its container declares "
                    "is treated as truncated (ReadError after its readable frames).")
    volume_axis: int = Field(
        2, ge=0, le=2, description="Axis (x=0, y=1, z=2 in file order) that 3D volumes are sliced along.")
    volume_stride: int = Field(1, ge=1, description="Keep every n-th slice of a volume.")
    max_pixels: int = Field(100_000_000, gt=0, description="Refuse any frame with more pixels than this (H*W), "
                            "from the declared size in the file's header, before decoding.")
    max_decoded_mb: int = Field(
        1024, gt=0,
        description="Largest block of decoded pixel data held in memory at once, MiB: one frame, page or volume "
                    "slice (rows x columns x channels x bytes per sample), or a whole volume when it must be "
                    "decompressed in one piece (.nii.gz or compressed MetaImage sliced along x or y). Checked "
                    "from the header before decoding; decompression stops at the declared size. Image files "
                    "larger than this are refused too (they are read whole). Keep it well under "
                    "task.memory_mb of a build.")
    high_bit_depth: Literal["minmax", "shift"] = Field(
        "minmax",
        description="How >8-bit images and DICOM become uint8: 'minmax' stretches each frame's own range "
                    "(robust to 12-bit data stored in 16 bits); 'shift' keeps the top 8 bits of unsigned data. "
                    "Fine-tuning datasets always use 'minmax' (usfmae.io.intensity.to_rgb), so keep the default "
                    "for shards whose encoder will be fine-tuned on >8-bit images.")
