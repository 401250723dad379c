"""Video files through OpenCV's FFmpeg backend, streamed and sampled at `video_fps`.

Every container FFmpeg demuxes is accepted when its content proves it (usfmae/io/magic.py: AVI, MP4/MOV/
M4V/3GP, Matroska/WebM, ASF/WMV, MPEG program and transport streams, Ogg, FLV, MXF); the extension alone
is not enough. That matters for safety: FFmpeg follows references inside some formats (HLS playlists,
concat scripts), so a text file named `.avi` must never reach it. The file is handed to FFmpeg as the
descriptor this process opened (/proc/self/fd/N on Linux), so names with '%', undecodable bytes or
leading dashes cannot be misread as patterns or options, and the file checked is the file decoded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2

from usfmae.io.config import ReaderConfig
from usfmae.io.frame import Frame, ReadError, make_frame
from usfmae.io.intensity import to_rgb
from usfmae.io.limits import check_frame
from usfmae.io.kinds import read_head, signature_of
from usfmae.io.sampling import sampled_indices, usable_fps

PROC_FD = Path("/proc/self/fd")


@contextmanager
def ffmpeg_source(path: Path) -> Iterator[str]:
    """A name FFmpeg opens as exactly this file: /proc/self/fd/N of a descriptor held open meanwhile."""
    if not PROC_FD.is_dir():
        yield str(path)
        return
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO swapped in after the check cannot hang
    try:
        yield str(PROC_FD / str(fd))
    finally:
        os.close(fd)


def check_container(path: Path) -> None:
    """ReadError unless the first bytes prove a video container (see the module docstring)."""
    try:
        head = read_head(path)
    except OSError as err:
        raise ReadError(path, f"cannot read file ({(err.strerror or type(err).__name__).lower()})") from err
    if not head:
        raise ReadError(path, "empty file (0 bytes)")
    signature = signature_of(head)
    if signature is None or signature.kind != "video":
        raise ReadError(path, "not a decodable video (its content is not a known video container)")


@contextmanager
def open_capture(path: Path) -> Iterator[cv2.VideoCapture]:
    """An opened FFmpeg capture of a checked container, released on exit; ReadError if FFmpeg fails."""
    check_container(path)
    with ffmpeg_source(path) as source:
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)  # FFmpeg only: no image-sequence or camera backends
        try:
            if not cap.isOpened():
                raise ReadError(path, "not a decodable video (corrupt or unsupported container/codec)")
            yield cap
        finally:
            cap.release()


def iter_video_frames(path: Path, cfg: ReaderConfig, root: Path | None = None) -> Iterator[Frame]:
    """Frames nearest to every 1/video_fps seconds; Frame.index is the source frame number.

    Lazy: frames are decoded one at a time and only sampled ones are converted. A video that
    decodes nothing raises ReadError; one that decodes far fewer frames than its container declares
    raises ReadError after its readable frames (callers should reject the whole file).
    """
    with open_capture(path) as cap:
        height, width = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        if height or width:  # 0 x 0: the container does not say; decoded frames are still checked below
            check_frame(path, height, width, 3, cfg, "video frame")
        source_fps = usable_fps(cap.get(cv2.CAP_PROP_FPS), cfg.fallback_source_fps, path, "video container")
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = sampled_indices(source_fps, cfg.video_fps)
        next_wanted = next(wanted)
        decoded = 0
        # grab() advances without colour conversion; retrieve() only for frames we keep.
        while cap.grab():
            if decoded == next_wanted:
                ok, bgr = cap.retrieve()
                if not ok:
                    raise ReadError(path, f"frame {decoded} could not be decoded")
                check_frame(path, bgr.shape[0], bgr.shape[1], 3, cfg, f"video frame {decoded}")
                yield make_frame(to_rgb(bgr, bgr=True), decoded, "video")
                next_wanted = next(wanted)
            decoded += 1
    if decoded == 0:
        raise ReadError(path, "video contains no decodable frames")
    if declared > 0 and decoded < cfg.video_min_decoded_fraction * declared:
        raise ReadError(path, f"truncated video: decoded {decoded} of {declared} declared frames")
