"""Which reader an input needs: content first, then extension (the lists live in usfmae/io/kinds.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from usfmae.io.kinds import kind_from_content, kind_from_extension, read_head


def detect_kind(path: str | Path) -> str | None:
    """'image' | 'video' | 'dicom' | 'volume', or None for files that are not supported inputs.

    Content wins over the name (an extension-less DICOM is 'dicom', a PNG named .jpg is 'image').
    A file with a supported extension but unrecognised content (empty, corrupt) keeps its
    extension's kind, so reading it raises a ReadError that says what is wrong. Only regular files
    are opened to look at their content (opening a FIFO would block): others go by their name.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return kind_from_extension(path)
        head = read_head(path)
    except OSError:
        return kind_from_extension(path)
    return kind_of(path, head)


def kind_of(path: Path, head: bytes) -> str | None:
    """The kind of `path` given its first bytes: content first, then extension."""
    return kind_from_content(head) or kind_from_extension(path)
