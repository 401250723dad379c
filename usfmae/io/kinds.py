"""The four input kinds, and what a file's name and first bytes say about its kind.

One owner of the lists (STYLE 11): readers, the folder walk and detect_kind import them from here, and
this module imports nothing of ours, so every reader may use it.

Each signature is (kind, name, test, strong). A strong signature (8+ bytes, or 4 bytes at a fixed offset
with a zero byte or a GUID) practically never occurs by chance at the start of raw pixel data; a weak one
(BMP's "BM", JPEG's FF D8 FF, MPEG start codes) can. Readers use all of them; the MetaImage data-file rule
uses only strong ones (a .raw whose first pixels spell "BM" is still raw data).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple, get_args

# The input kinds: the one list. Readers (io/dispatch.READERS), frames (Frame.kind) and config fields
# (shards/config.DedupConfig.kinds) use these names; config types are this Literal.
InputKind = Literal["image", "video", "dicom", "volume"]
KINDS: tuple[str, ...] = get_args(InputKind)
KIND_NAMES = {"image": "an image", "video": "a video", "dicom": "a DICOM file", "volume": "a volume"}  # messages

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".m4v", ".3gp", ".mpeg", ".mpg", ".mpe", ".m1v", ".m2v", ".ts",
                    ".mts", ".m2ts", ".mkv", ".webm", ".wmv", ".asf", ".ogv", ".flv", ".mxf")
DICOM_EXTENSIONS = (".dcm", ".dicom")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
METAIMAGE_EXTENSIONS = (".mhd", ".mha")
VOLUME_EXTENSIONS = NIFTI_EXTENSIONS + METAIMAGE_EXTENSIONS
EXTENSIONS = {"volume": VOLUME_EXTENSIONS, "image": IMAGE_EXTENSIONS, "video": VIDEO_EXTENSIONS,
              "dicom": DICOM_EXTENSIONS}

SNIFF_BYTES = 564  # DICOM preamble (132), NIfTI-1 magic at 344, three MPEG-TS packets (3 x 188)
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
QUICKTIME_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


class Signature(NamedTuple):
    kind: InputKind
    name: str  # what the signature is, for messages
    test: Callable[[bytes], bool]
    strong: bool


def _mpeg_ts(head: bytes) -> bool:
    """MPEG transport stream: a 0x47 sync byte every 188 bytes (or 192 with a 4-byte M2TS prefix)."""
    return any(len(head) >= start + 2 * size + 1 and all(head[start + i * size] == 0x47 for i in range(3))
               for start, size in ((0, 188), (4, 192)))


SIGNATURES = (
    Signature("dicom", "DICOM", lambda h: h[128:132] == b"DICM", True),
    Signature("image", "PNG image", lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"), True),
    Signature("image", "TIFF image", lambda h: h[:4] in TIFF_MAGICS, True),
    Signature("image", "JPEG image", lambda h: h.startswith(b"\xff\xd8\xff"), False),
    Signature("image", "BMP image", lambda h: h.startswith(b"BM"), False),
    Signature("video", "AVI video", lambda h: h.startswith(b"RIFF") and h[8:12] == b"AVI ", True),
    Signature("video", "MP4/QuickTime video", lambda h: h[4:8] in QUICKTIME_ATOMS, True),
    Signature("video", "Matroska/WebM video", lambda h: h.startswith(b"\x1a\x45\xdf\xa3"), True),
    Signature("video", "ASF/WMV video", lambda h: h.startswith(ASF_GUID), True),
    Signature("video", "Ogg video", lambda h: h.startswith(b"OggS\x00"), True),
    Signature("video", "FLV video", lambda h: h.startswith(b"FLV\x01"), True),
    Signature("video", "MXF video", lambda h: h.startswith(b"\x06\x0e\x2b\x34\x02\x05\x01\x01"), True),
    Signature("video", "MPEG program stream", lambda h: h.startswith(b"\x00\x00\x01\xba"), False),
    Signature("video", "MPEG video stream", lambda h: h.startswith(b"\x00\x00\x01\xb3"), False),
    Signature("video", "MPEG transport stream", _mpeg_ts, False),
    Signature("volume", "NIfTI volume", lambda h: h[344:348] in (b"n+1\x00", b"ni1\x00") or h[4:8] == b"n+2\x00",
              True),
    Signature("volume", "MetaImage header", lambda h: h.startswith((b"ObjectType", b"NDims")), True),
)


def signature_of(head: bytes, strong_only: bool = False) -> Signature | None:
    """The first signature matching `head` (a file's first SNIFF_BYTES bytes), or None."""
    for signature in SIGNATURES:
        if (signature.strong or not strong_only) and signature.test(head):
            return signature
    return None


def kind_from_content(head: bytes) -> str | None:
    """The input kind that the first bytes of a file prove, or None if they prove nothing."""
    signature = signature_of(head)
    return signature.kind if signature else None


def kind_from_extension(path: Path) -> str | None:
    """The input kind implied by the file name alone."""
    name = path.name.lower()
    return next((kind for kind, extensions in EXTENSIONS.items() if name.endswith(extensions)), None)


def read_head(path: Path) -> bytes:
    """The first SNIFF_BYTES bytes of a regular file (callers check it is one: opening a FIFO blocks)."""
    with open(path, "rb") as f:
        return f.read(SNIFF_BYTES)


def standalone_kind(path: Path, head: bytes) -> str | None:
    """The kind of input `path` is on its own, by its name or a strong signature (`head`: its first
    bytes); None for files that are only data, such as a MetaImage .raw."""
    signature = signature_of(head, strong_only=True)
    return signature.kind if signature else kind_from_extension(path)
