"""Cheap frame-count estimates from file headers, used only to size shards before any pixel is read.

An estimate is never trusted for correctness: a shard holds every frame its inputs really yield.
Files whose header cannot be parsed count as 1 (the shard task will reject them with the reason).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import nibabel as nib
import pydicom

from usfmae.io import ReaderConfig, ReadError, detect_kind
from usfmae.io.files import check_input
from usfmae.io.video import open_capture

HEADER_BYTES = 8192  # a MetaImage text header fits easily


def kept_count(n_frames: int, source_fps: float | None, target_fps: float) -> int:
    """Frames kept from a sequence of `n_frames` when sampling at `target_fps` (>= 1 for non-empty input)."""
    if n_frames <= 1 or not source_fps or source_fps <= target_fps:
        return max(n_frames, 1)
    return max(1, math.ceil(n_frames * target_fps / source_fps))


def video_estimate(path: Path, cfg: ReaderConfig) -> int:
    with open_capture(path) as cap:
        n, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    return kept_count(n, fps if 0 < fps <= 1000 else cfg.fallback_source_fps, cfg.video_fps)


def dicom_estimate(path: Path, cfg: ReaderConfig) -> int:
    tags = ["NumberOfFrames", "FrameTime", "CineRate", "RecommendedDisplayFrameRate"]
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
    n = int(ds.get("NumberOfFrames") or 1)
    fps = (1000.0 / float(ds.FrameTime) if ds.get("FrameTime")
           else float(ds.get("CineRate") or ds.get("RecommendedDisplayFrameRate") or cfg.fallback_source_fps))
    return kept_count(n, fps, cfg.dicom_fps)


def volume_estimate(path: Path, cfg: ReaderConfig) -> int:
    if path.name.lower().endswith((".mhd", ".mha")):
        with path.open("rb") as f:
            head = f.read(HEADER_BYTES).decode("latin-1")
        match = re.search(r"^\s*DimSize\s*=\s*([\d\s]+)$", head, re.MULTILINE)
        shape = [int(v) for v in match.group(1).split()] if match else [1]
    else:
        shape = list(nib.load(path).shape)  # header only, even for .nii.gz
    if len(shape) < 3:
        return 1
    return math.ceil(shape[cfg.volume_axis] / cfg.volume_stride)


ESTIMATORS = {"video": video_estimate, "dicom": dicom_estimate, "volume": volume_estimate}


def estimate_frames(path: str | Path, cfg: ReaderConfig, root: str | Path | None = None) -> int:
    """Frames the readers will probably yield for `path` (images 1, cines and volumes from their header).

    Files the readers would refuse to open (not regular, outside `root`) count 1 without being opened.
    """
    path = Path(path)
    try:
        check_input(path, root)
    except ReadError:
        return 1
    kind = detect_kind(path)
    if kind not in ESTIMATORS:
        return 1
    try:
        return ESTIMATORS[kind](path, cfg)
    except Exception:  # any unparsable header: the reader reports the real problem later
        return 1
