"""One entry point for every input kind: iter_frames(path) -> 2D RGB frames."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from usfmae.io.config import ReaderConfig
from usfmae.io.detect import kind_of
from usfmae.io.dicom import iter_dicom_frames
from usfmae.io.files import check_input, unopenable
from usfmae.io.frame import Frame, ReadError, printable
from usfmae.io.images import iter_image_frames
from usfmae.io.kinds import KIND_NAMES, KINDS, read_head
from usfmae.io.video import iter_video_frames
from usfmae.io.volumes import iter_volume_frames

log = logging.getLogger(__name__)

# reader(path, cfg, root) -> frames; `root` is the input folder that files named inside the input must stay in.
READERS: dict[str, Callable[[Path, ReaderConfig, Path | None], Iterator[Frame]]] = {
    "image": iter_image_frames,
    "video": iter_video_frames,
    "dicom": iter_dicom_frames,
    "volume": iter_volume_frames,
}
if not set(READERS) == set(KINDS) == set(KIND_NAMES):
    raise RuntimeError("io/dispatch.READERS and io/kinds.KIND_NAMES must cover exactly io/kinds.KINDS")


def iter_frames(path: str | Path, cfg: ReaderConfig | None = None, root: str | Path | None = None) -> Iterator[Frame]:
    """All frames of one input, lazily: still -> 1, video/cine -> sampled frames, volume -> slices.

    Raises ReadError (naming the file, with a readable reason) for every input that cannot be read:
    missing, not a regular file (FIFOs, sockets and devices are never opened), outside `root` after
    following links, unsupported, empty, corrupt, truncated, too large, or failing in a reader in a way
    nobody foresaw (any exception becomes a ReadError; the original is logged). A video or cine found
    truncated midway raises after its readable frames, so callers should treat any ReadError as
    rejecting the whole file.
    """
    path = Path(path)
    cfg = cfg or ReaderConfig()
    root = Path(root) if root is not None else None
    check_input(path, root)
    try:
        head = read_head(path)
    except OSError as err:
        raise ReadError(path, unopenable(err)) from None
    kind = kind_of(path, head)
    if kind is None:
        raise ReadError(path, "not a supported input (unknown extension and content)")
    try:
        yield from READERS[kind](path, cfg, root)
    except ReadError:
        raise
    except MemoryError:
        raise ReadError(path, f"ran out of memory decoding {KIND_NAMES[kind]}: lower reader.max_pixels or "
                              "reader.max_decoded_mb, or give the task more memory") from None
    except Exception as err:  # a reader bug or a malformation no check foresaw: reject this input, keep going
        log.warning("%s: unexpected %s while reading", printable(str(path)), type(err).__name__, exc_info=True)
        raise ReadError(path, f"could not be read as {KIND_NAMES[kind]}: the file is malformed in a way the "
                              f"reader does not handle ({type(err).__name__})") from err
