"""What a cleaning pipeline returns, and the per-step bookkeeping both pipelines share."""

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np


@dataclass
class CleanResult:
    """image: HxWx3 uint8 RGB at the input resolution; mask: HxW uint8, 255 where pixels were replaced;
    scan: HxW bool scan area the fast pipeline found (None when it looked for none: reference mode,
    sector step off, or no sector found)."""

    image: np.ndarray
    mask: np.ndarray
    stats: dict[str, Any]
    scan: np.ndarray | None = None


@dataclass
class StepLog:
    """Records which steps ran, how long each took and how many OCR words/calls they made."""

    timings: dict[str, float] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    ocr_words: int = 0
    ocr_calls: int = 0

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
            self.steps.append(name)

    def stats(self, mode: str, mask: np.ndarray) -> dict[str, Any]:
        """The `CleanResult.stats` dict: mask_fraction, ocr_words, ocr_calls, timings (s), steps, mode."""
        return {
            "mode": mode,
            "mask_fraction": float(np.count_nonzero(mask)) / mask.size,
            "ocr_words": self.ocr_words,
            "ocr_calls": self.ocr_calls,
            "timings": {name: round(seconds, 6) for name, seconds in self.timings.items()},
            "total_seconds": round(sum(self.timings.values()), 6),
            "steps": list(self.steps),
        }
