"""What a shard sample is and how a cleaned frame becomes one (the streaming itself is in assemble.py).

Every sample is a lossless PNG plus JSON metadata with nothing identifying in it:
    png       the cleaned frame at the training size: 1-channel when R == G == B everywhere (most scans:
              the same pixels once replicated, ~2.4x smaller and twice as fast to decode), else RGB
    key       content hash of the [S, S, 3] pixels (so a sample's name says nothing about its origin)
    json      dataset, anatomy, source_kind, index (frame/slice), original_size [H, W],
              source (salted hash of the relative path: groups frames of one file, reveals nothing),
              cleaning (mode, mask_fraction, ocr_words, ocr_calls, steps)
DICOM headers are never read here: the readers hand over pixels only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import cv2
import numpy as np

from usfmae.cleaning import CleaningConfig, CleanResult, resize_square
from usfmae.io import Frame, ReaderConfig, content_key, hamming, perceptual_hash

from .config import DedupConfig
from .plan import InputRef

# Bump when the bytes written for the same input change, or what done-markers hold (2: gray PNGs;
# 3: markers account for every input and list the samples written, for the build-wide duplicate pass).
SAMPLES_FORMAT = "usfmae-samples/3"


@dataclass(frozen=True)
class FrameSettings:
    """How every frame of a build is processed (the same in every shard task)."""

    image_size: int
    cleaning: CleaningConfig
    reader: ReaderConfig
    dedup: DedupConfig
    salt: str
    cleaning_batch: int = 8  # frames per cleaning call (one Tesseract call per batch in fast mode)

    def digest(self) -> str:
        """sha256 of everything that changes the samples' bytes, except the salt (a per-run random salt
        must not invalidate finished shards; see BuildConfig.salt)."""
        payload = {"format": SAMPLES_FORMAT, "image_size": self.image_size, "cleaning_batch": self.cleaning_batch,
                   "cleaning": self.cleaning.model_dump(mode="json"), "reader": self.reader.model_dump(mode="json"),
                   "dedup": self.dedup.model_dump(mode="json")}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Sample:
    key: str  # content_key of the [S, S, 3] pixels (also when stored as 1-channel gray)
    png: bytes
    meta: bytes  # JSON, sorted keys
    source_key: str  # content_key of the frame as read (before cleaning), for leak checks; not stored in shards
    index: int  # frame / slice index in its input (reports name duplicates by input and index)


@dataclass
class InputOutcome:
    """What one input contributed: its samples, or the reason it was rejected (then no samples at all)."""

    samples: list[Sample] = field(default_factory=list)
    frames_read: int = 0
    near_duplicates: int = 0
    reject: str | None = None
    cleaning_seconds: float = 0.0


class NearDuplicates:
    """Remembers the dHashes of frames kept from one input; a frame within `max_distance` bits is a repeat."""

    def __init__(self, max_distance: int):
        self.max_distance = max_distance
        self.kept: list[int] = []

    def seen(self, image: np.ndarray) -> bool:
        h = perceptual_hash(image)
        if any(hamming(h, k) <= self.max_distance for k in self.kept):
            return True
        self.kept.append(h)
        return False


def is_gray(rgb: np.ndarray) -> bool:
    """True when the three channels of a [H, W, 3] image are identical."""
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))


def encode_png(rgb: np.ndarray) -> bytes:
    """[H, W, 3] uint8 RGB -> PNG bytes (lossless, deterministic): 1-channel when the image is gray."""
    ok, buf = cv2.imencode(".png", rgb[..., 0] if is_gray(rgb) else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def sample_metadata(ref: InputRef, kind: str, index: int, original_size: tuple[int, int], source: str,
                    stats: dict) -> bytes:
    """The sample's JSON: only deterministic cleaning stats (timings vary run to run and go to the report)."""
    cleaning = {"mode": stats["mode"], "mask_fraction": round(float(stats["mask_fraction"]), 6),
                "ocr_words": stats["ocr_words"], "ocr_calls": stats["ocr_calls"], "steps": stats["steps"]}
    meta = {"dataset": ref.dataset, "anatomy": ref.anatomy, "source_kind": kind, "index": index,
            "original_size": list(original_size), "source": source, "cleaning": cleaning}
    return json.dumps(meta, sort_keys=True).encode()


def make_sample(ref: InputRef, frame: Frame, source: str, cleaned: CleanResult, image_size: int) -> Sample:
    """A cleaned frame -> its stored sample: resized [S, S, 3], PNG, metadata, keys."""
    small = resize_square(cleaned.image, image_size)  # [S, S, 3] uint8
    meta = sample_metadata(ref, frame.kind, frame.index, frame.original_size, source, cleaned.stats)
    return Sample(content_key(small), encode_png(small), meta, content_key(frame.image), frame.index)
