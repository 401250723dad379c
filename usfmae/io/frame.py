"""What every reader returns: one decoded 2D frame, and the one error readers raise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usfmae.io.kinds import KINDS, InputKind


@dataclass(frozen=True, eq=False)
class Frame:
    """One 2D frame of an input, ready for cleaning.

    image: [H, W, 3] uint8 RGB. Readers never resize, so `original_size` equals `image.shape[:2]`
    here; it is carried along so later stages (which do resize) can still report it.
    """

    image: np.ndarray
    index: int  # frame index (video, DICOM cine), slice index (volume), page (TIFF); 0 for stills
    kind: InputKind
    original_size: tuple[int, int]  # (H, W)


def printable(text: str, limit: int | None = 300) -> str:
    """`text` as readable one-line text: undecodable bytes (of file names) as \\xNN, control characters
    escaped, cut at `limit` characters (None: never, for paths). Reasons and names in reports and logs
    go through it."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def detail(err: BaseException, path: str | Path | None = None, limit: int = 120) -> str:
    """What a library said about a failure, made safe for a reason: its first line, printable, short, with
    `path` (which libraries like to repeat in full) shortened to its name; the type name when it said
    nothing. Always placed after a sentence of ours, in parentheses."""
    message = err.strerror if isinstance(err, OSError) and err.strerror else str(err)  # no "[Errno 28]"
    lines = message.strip().splitlines()
    if not lines:
        return type(err).__name__
    text = lines[0] if path is None else lines[0].replace(str(path), Path(path).name)
    return printable(text, limit)


class ReadError(Exception):
    """An input that cannot be turned into frames: corrupt, truncated, empty, wrong type, too large,
    not a regular file, outside the input folder.

    `reason` is a readable sentence (printable, one line); the message starts with the file name so a
    rejected-file report needs nothing else. `path` is the path as given (for callers, not for display).
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = printable(reason)
        super().__init__(f"{printable(self.path, None)}: {self.reason}")


def make_frame(image: np.ndarray, index: int, kind: str) -> Frame:
    """Wrap an [H, W, 3] uint8 RGB array, checking the contract every reader promises."""
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, image.shape
    assert kind in KINDS, kind
    return Frame(image=np.ascontiguousarray(image), index=index, kind=kind,
                 original_size=(int(image.shape[0]), int(image.shape[1])))
