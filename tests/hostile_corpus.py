"""A hostile input folder: good scans mixed with every broken, malicious and odd input a hospital export holds.

    cases = write_hostile_corpus(tmp / "in")   # files under tmp/in, plus tmp/in_outside (must never be read)
    for case in cases:
        case.rel, case.group, case.expect ('read' | 'reject' | 'skip'), case.reason (regex), case.frames

Groups, one defect class each (issue 16, the video containers of issue 13, and our own): good, video,
empty, truncated, random, wrong_content, dicom_header, bomb, nonfinite, names, long_path, links, special,
permissions, hidden, metaimage, duplicates. The bombs declare gigabytes in kilobytes (multi-member gzip
and full-flush zlib of zeros are built by repetition), so the whole corpus is written in seconds.

Expectations that depend on the machine: as root, permission bits do not stop reads (those cases expect
'read'); character devices are made only where mknod is allowed; videos only in containers this OpenCV
build can write. `SECRET` marks everything outside the folder: no shard or QA output may contain it.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom import config as dicom_config
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from usfmae.io.files import PATH_MAX
from usfmae.testing.synthetic import generate_ultrasound

SIDE = 96  # good scans are small (the end-to-end builds clean every frame) but big enough for the sector finder
SECRET = b"SECRET-OUTSIDE-THE-INPUT-FOLDER:"  # repeated in every file outside the input folder
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# Containers this OpenCV can write (name, fourcc); the reader decodes them by content, not extension.
VIDEO_CONTAINERS = [(".mpeg", "PIM1"), (".mpg", "MPG2"), (".m4v", "mp4v"), (".wmv", "WMV2"), (".asf", "WMV1"),
                    (".mkv", "MJPG"), (".webm", "VP80"), (".flv", "FLV1"), (".ts", "MPG2"), (".m2ts", "MPG2"),
                    (".mov", "mp4v"), (".3gp", "mp4v"), (".mxf", "MPG2"), (".avi", "MJPG"), (".mp4", "mp4v")]
MIB = 1 << 20


@dataclass
class Case:
    rel: str  # path under the corpus root (may hold undecodable bytes as surrogates)
    group: str
    expect: str  # 'read', 'reject' or 'skip'
    reason: str = ""  # regex the rejection/skip reason must match
    frames: int | None = None  # frames a 'read' input yields (None: at least one)


def scan_image(seed: int, side: int = SIDE) -> np.ndarray:
    """[side, side, 3] uint8 RGB synthetic B-mode scan, distinct per seed."""
    return generate_ultrasound(10_000 + seed, side, overlays=False).image


def png_bytes(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    assert ok, ext
    return buf.tobytes()


def gzip_zeros(prefix: bytes, n_zero_bytes: int) -> bytes:
    """A gzip file inflating to `prefix` + `n_zero_bytes` zeros, made of repeated 1 MiB members (cheap)."""
    member = gzip.compress(bytes(MIB), compresslevel=9, mtime=0)
    count, rest = divmod(n_zero_bytes, MIB)
    return gzip.compress(prefix + bytes(rest), mtime=0) + member * count


def zlib_zeros(n_mib: int) -> bytes:
    """A zlib stream inflating to n_mib MiB of zeros: a full-flushed block repeated, then the trailer."""
    c = zlib.compressobj(9)
    first = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)  # identical for every further MiB
    adler = (n_mib * MIB % 65521) << 16 | 1  # Adler-32 of zeros: a = 1, b = n mod 65521
    return first + again * (n_mib - 1) + b"\x03\x00" + struct.pack(">I", adler)


def mhd_text(dims, element_type: str, data_file: str, **extra) -> bytes:
    lines = ["ObjectType = Image", f"NDims = {len(dims)}", "DimSize = " + " ".join(map(str, dims)),
             f"ElementType = {element_type}"]
    lines += [f"{k} = {v}" for k, v in extra.items()] + [f"ElementDataFile = {data_file}"]
    return ("\n".join(lines) + "\n").encode()


def nifti_header(shape, dtype=np.uint8) -> bytes:
    """A single-file NIfTI-1 header declaring `shape`, data at byte 352 (after 4 extension bytes)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_data_offset(352)
    return header.binaryblock + bytes(4)


def nifti_bytes(data: np.ndarray, gz: bool = False) -> bytes:
    raw = nifti_header(data.shape, data.dtype) + data.tobytes(order="F")  # NIfTI stores x fastest
    return gzip.compress(raw, mtime=0) if gz else raw


def tiff_bytes(pages: list[np.ndarray]) -> bytes:
    ok, buf = cv2.imencodemulti(".tif", pages)
    assert ok
    return buf.tobytes()


def tiny_dicom(rows: int, cols: int, frames: int | str, pixel_bytes: bytes, **extra) -> bytes:
    """A minimal native MONOCHROME2 DICOM (explicit VR little endian) with whatever header it is told."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["hostile", str(rows), str(frames)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "US", rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixel_bytes
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def edit_dicom(name: str, edit, retag: tuple[bytes, bytes] | None = None) -> bytes:
    """A pydicom example with `edit(ds)` applied; `retag` (old, new) patches the written bytes, to give
    an element a VR its value does not fit (what broken exporters write)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    with dicom_config.disable_value_validation():
        edit(ds)
        buf = io.BytesIO()
        ds.save_as(buf)
    data = buf.getvalue()
    if retag:
        assert retag[0] in data, retag
        data = data.replace(retag[0], retag[1], 1)
    return data


def write_video(path: Path, fourcc: str, seed: int, n: int = 12) -> bool:
    """n distinct frames at 30 fps (3 fps keeps frames 0 and 10); False if this OpenCV cannot write it."""
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), 30.0, (SIDE, SIDE))
    if not writer.isOpened():
        return False
    for i in range(n):
        writer.write(cv2.cvtColor(scan_image(seed * 100 + i), cv2.COLOR_RGB2BGR))
    writer.release()
    ok = path.is_file() and path.stat().st_size > 0
    if not ok:
        path.unlink(missing_ok=True)
    return ok


class Corpus:
    """Writes files and records what the tools must do with each."""

    def __init__(self, root: Path):
        self.root, self.outside = root, root.parent / f"{root.name}_outside"
        self.cases: list[Case] = []
        self.seed = 0

    def next_seed(self) -> int:
        self.seed += 1
        return self.seed

    def file(self, rel: str, data: bytes, group: str, expect: str, reason: str = "", frames: int | None = None) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.cases.append(Case(rel, group, expect, reason, frames))
        return path

    def good_png(self, rel: str, group: str = "good") -> Path:
        return self.file(rel, png_bytes(scan_image(self.next_seed())), group, "read", frames=1)

    def case(self, rel: str, group: str, expect: str, reason: str = "", frames: int | None = None) -> None:
        self.cases.append(Case(rel, group, expect, reason, frames))

    def link(self, rel: str, target: str | Path, group: str, expect: str, reason: str = "", frames=None) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
        self.case(rel, group, expect, reason, frames)


def write_good(c: Corpus) -> dict[str, bytes]:
    """Good scans of every kind; returns some of their bytes to truncate and corrupt."""
    for i in range(6):
        c.good_png(f"good/scan_{i}.png")
    c.file("good/scan.jpg", png_bytes(scan_image(c.next_seed()), ".jpg"), "good", "read", frames=1)
    c.file("good/scan.bmp", png_bytes(scan_image(c.next_seed()), ".bmp"), "good", "read", frames=1)
    tiff = tiff_bytes([cv2.cvtColor(scan_image(c.next_seed()), cv2.COLOR_RGB2BGR) for _ in range(3)])
    c.file("good/pages.tif", tiff, "good", "read", frames=3)
    gray16 = (scan_image(c.next_seed())[..., 0].astype(np.uint16) * 257)
    c.file("good/gray16.png", png_bytes(gray16), "good", "read", frames=1)
    volume = np.stack([scan_image(c.next_seed())[..., 0] for _ in range(3)], axis=-1)  # [x, y, z]
    c.file("good/stack.nii.gz", nifti_bytes(volume, gz=True), "good", "read", frames=3)
    c.file("good/stack.nii", nifti_bytes(np.stack([scan_image(c.next_seed())[..., 0]] * 1, -1)), "good", "read", frames=1)
    raw = np.stack([scan_image(c.next_seed())[..., 0] for _ in range(2)], axis=-1)
    c.file("good/vol.raw", raw.tobytes(order="F"), "good", "skip", r"data file of good/vol\.mhd")
    c.file("good/vol.mhd", mhd_text(raw.shape, "MET_UCHAR", "vol.raw"), "good", "read", frames=2)
    packed = np.stack([scan_image(c.next_seed())[..., 0] for _ in range(2)], axis=-1)
    payload = zlib.compress(packed.tobytes(order="F"))
    c.file("good/packed.mha", mhd_text(packed.shape, "MET_UCHAR", "LOCAL", CompressedData="True",
                                       CompressedDataSize=len(payload)) + payload, "good", "read", frames=2)
    for name in ("examples_palette.dcm", "examples_rgb_color.dcm", "examples_jpeg2k.dcm", "examples_ybr_color.dcm"):
        c.file(f"good/{name}", Path(get_testdata_file(name)).read_bytes(), "good", "read",
               frames=3 if "ybr" in name else 1)
    c.file("good/dicom_named.png", Path(get_testdata_file("examples_rgb_color.dcm")).read_bytes(), "good", "read",
           frames=1)  # content wins over the name (and it is an exact duplicate of the .dcm: one is dropped)
    avi = c.root / "good/cine.avi"
    write_video(avi, "MJPG", c.next_seed(), n=24)
    c.case("good/cine.avi", "good", "read", frames=3)
    return {".png": (c.root / "good/scan_0.png").read_bytes(), ".jpg": (c.root / "good/scan.jpg").read_bytes(),
            ".bmp": (c.root / "good/scan.bmp").read_bytes(), ".tif": tiff, ".avi": avi.read_bytes(),
            ".nii": (c.root / "good/stack.nii").read_bytes(), ".nii.gz": (c.root / "good/stack.nii.gz").read_bytes(),
            ".mha": (c.root / "good/packed.mha").read_bytes(),
            ".dcm": Path(get_testdata_file("examples_palette.dcm")).read_bytes(),
            "_cine.dcm": Path(get_testdata_file("examples_ybr_color.dcm")).read_bytes()}


def write_videos(c: Corpus) -> dict[str, bytes]:
    """One small video per container (issue 13), and one without extension; returns their bytes."""
    written = {}
    for ext, fourcc in VIDEO_CONTAINERS:
        path = c.root / f"video/clip_{fourcc}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if write_video(path, fourcc, c.next_seed()):
            c.case(path.relative_to(c.root).as_posix(), "video", "read", frames=2)
            written[ext] = path.read_bytes()
    bare = c.root / "video/matroska_without_extension.mkv"
    if write_video(bare, "MJPG", c.next_seed()):
        bare.rename(bare.with_suffix(""))
        c.case("video/matroska_without_extension", "video", "read", frames=2)
    return written


def write_broken(c: Corpus, good: dict[str, bytes]) -> None:
    """Zero-byte, truncated, random and wrong-content files with supported names."""
    rng = np.random.default_rng(16)
    for ext in (".png", ".jpg", ".bmp", ".tif", ".dcm", ".avi", ".mp4", ".mpeg", ".mkv", ".nii", ".nii.gz",
                ".mhd", ".mha"):
        c.file(f"empty/zero{ext}", b"", "empty", "reject", r"empty|no ElementDataFile|not readable")
    c.file("empty/zero_no_extension", b"", "empty", "reject", "not a supported input")
    for ext, data in good.items():
        c.file(f"truncated/half{ext}", data[: len(data) // 2], "truncated", "reject",
               r"truncated|cut short|not a decodable|not readable|ends")
    for ext in (".png", ".jpg", ".bmp", ".tif", ".dcm", ".avi", ".mp4", ".mpeg", ".mkv", ".webm", ".wmv", ".nii",
                ".nii.gz", ".mhd", ".mha", ""):
        c.file(f"random/noise{ext or '_no_extension'}", rng.bytes(3000), "random", "reject",
               r"not a decodable|not readable|not a supported input|not 'Key = Value'|no ElementDataFile|"
               r"not a DICOM|DICOM has no")
    wrong = {
        "notes.png": (b"this is not an image\n" * 50, "not a decodable image"),
        "page.jpg": (b"<html><body>not a jpeg</body></html>", "not a decodable image"),
        "playlist.avi": (b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n/etc/passwd\n#EXT-X-ENDLIST\n",
                         "not a decodable video"),  # FFmpeg would follow it: must never reach FFmpeg
        "concat.mp4": (b"ffconcat version 1.0\nfile '/etc/passwd'\n", "not a decodable video"),
        "archive.tif": (b"PK\x03\x04" + bytes(200), "not a decodable image"),
        "gif_named.png": (gif_bytes(), "GIF images are not a supported input"),
        "labels.csv": (b"case,label\n1,benign\n", "not a supported input"),
    }
    for name, (data, reason) in wrong.items():
        c.file(f"wrong_content/{name}", data, "wrong_content", "reject", reason)
    c.file("wrong_content/png_named.dcm", png_bytes(scan_image(c.next_seed())), "wrong_content", "read", frames=1)


def write_dicom_headers(c: Corpus) -> None:
    """Malformed DICOM headers (issue 16 item 2): rejected with the tag named, or read when only the
    frame rate is junk."""
    def text_frame_time(ds):
        ds.add_new(0x00181063, "LO", "abc")  # FrameTime holding text (DS patched below)
    cases = [
        ("frame_time_text.dcm", "examples_ybr_color.dcm", text_frame_time,
         (b"\x18\x00\x63\x10LO", b"\x18\x00\x63\x10DS"), "read", "", 3),
        ("cine_rate_text.dcm", "examples_ybr_color.dcm", lambda ds: (ds.__delitem__(0x00181063),
                                                                      ds.add_new(0x00180040, "LO", "fast")),
         (b"\x18\x00\x40\x00LO", b"\x18\x00\x40\x00IS"), "read", "", 3),
        ("frame_time_vector_text.dcm", "examples_ybr_color.dcm", lambda ds: (ds.__delitem__(0x00181063),
                                                                              ds.add_new(0x00181065, "LO", "a\\b\\c")),
         (b"\x18\x00\x65\x10LO", b"\x18\x00\x65\x10DS"), "read", "", 3),
        ("rows_text.dcm", "examples_palette.dcm", lambda ds: ds.__setitem__(0x00280010, pydicom.DataElement(
            0x00280010, "LO", "abc")), None, "reject", "DICOM Rows is not a whole number", None),
        ("rows_text_as_us.dcm", "examples_palette.dcm", lambda ds: ds.__setitem__(0x00280010, pydicom.DataElement(
            0x00280010, "LO", "ab\x01\xff")), (b"\x28\x00\x10\x00LO", b"\x28\x00\x10\x00US"), "reject",
         "DICOM Rows", None),
        ("rows_empty.dcm", "examples_palette.dcm", lambda ds: ds.__setitem__(0x00280010, pydicom.DataElement(
            0x00280010, "US", None)), None, "reject", "DICOM Rows is empty", None),
        ("columns_text.dcm", "examples_palette.dcm", lambda ds: ds.__setitem__(0x00280011, pydicom.DataElement(
            0x00280011, "LO", "wide")), None, "reject", "DICOM Columns is not a whole number", None),
        ("frames_text.dcm", "examples_ybr_color.dcm", lambda ds: ds.__setitem__(0x00280008, pydicom.DataElement(
            0x00280008, "LO", "thirty")), None, "reject", "DICOM NumberOfFrames is not a whole number", None),
        ("frames_zero.dcm", "examples_palette.dcm", lambda ds: setattr(ds, "NumberOfFrames", 0), None, "read", "", 1),
        ("unknown_syntax.dcm", "examples_palette.dcm",
         lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.3.4.5.6.7"), None, "reject",
         "unknown DICOM transfer syntax", None),
        ("meta_without_syntax.dcm", "examples_rgb_color.dcm", lambda ds: ds.file_meta.__delitem__(0x00020010),
         None, "read", "", 1),
        ("meta_without_syntax_compressed.dcm", "examples_jpeg2k.dcm",
         lambda ds: ds.file_meta.__delitem__(0x00020010), None, "reject", "DICOM", None),
        ("photometric_unknown.dcm", "examples_palette.dcm", lambda ds: setattr(ds, "PhotometricInterpretation",
                                                                              "HSV"), None, "reject",
         "unsupported photometric interpretation", None),
        ("photometric_missing.dcm", "examples_palette.dcm", lambda ds: ds.__delitem__(0x00280004), None, "reject",
         "no image pixel module", None),
        ("bits_zero.dcm", "examples_palette.dcm", lambda ds: setattr(ds, "BitsAllocated", 0), None, "reject",
         "BitsAllocated = 0 is outside", None),
        ("samples_five.dcm", "examples_palette.dcm", lambda ds: setattr(ds, "SamplesPerPixel", 5), None, "reject",
         "SamplesPerPixel = 5 is outside", None),
        ("no_pixels.dcm", "examples_palette.dcm", lambda ds: ds.__delitem__(0x7FE00010), None, "reject",
         "no pixel data", None),
        ("broken_palette.dcm", "examples_palette.dcm",
         lambda ds: setattr(ds, "RedPaletteColorLookupTableData", b"\x01"), None, "reject", "", None),
    ]
    for name, base, edit, retag, expect, reason, frames in cases:
        c.file(f"dicom_header/{name}", edit_dicom(base, edit, retag), "dicom_header", expect, reason, frames)
    c.file("dicom_header/dicm_then_garbage.dcm", bytes(128) + b"DICM" + np.random.default_rng(3).bytes(600),
           "dicom_header", "reject", "DICOM")
    cut = Path(get_testdata_file("examples_palette.dcm")).read_bytes()
    c.file("dicom_header/header_cut.dcm", cut[:300], "dicom_header", "reject", "DICOM")


def write_bombs(c: Corpus) -> None:
    """Inputs declaring (or inflating to) gigabytes in kilobytes (issue 16 item 6); refused from headers."""
    # PNG declaring 100000 x 100000 (a header and an empty IDAT)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    c.file("bomb/huge.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b""))
           + png_chunk(b"IEND", b""), "bomb", "reject", "exceeds max_pixels|decompression-bomb")
    bmp = bytearray(png_bytes(scan_image(c.next_seed()), ".bmp"))
    bmp[18:26] = struct.pack("<ii", 60_000, 60_000)
    c.file("bomb/huge.bmp", bytes(bmp), "bomb", "reject", "exceeds max_pixels|decompression-bomb")
    # TIFF whose second page is 30000 x 30000 (deflate strips of zeros)
    c.file("bomb/second_page.tif", tiff_with_huge_page(scan_image(c.next_seed())[..., 0], 30_000), "bomb",
           "reject", r"page 1 of 30000x30000 pixels exceeds max_pixels")
    # NIfTI .nii.gz declaring 20000 x 20000 x 2 (800 MB of zeros in ~0.8 MB)
    c.file("bomb/huge.nii.gz", gzip_zeros(nifti_header((20_000, 20_000, 2)), 20_000 * 20_000 * 2), "bomb", "reject",
           r"20000x20000 pixels exceeds max_pixels")
    # compressed MetaImage: 1.5 GiB of zeros in ~1.5 MB, slices of 40000 x 40000 declared
    c.file("bomb/packed.mha", mhd_text((40_000, 40_000, 1), "MET_UCHAR", "LOCAL", CompressedData="True")
           + zlib_zeros(1526), "bomb", "reject", r"40000x40000 pixels exceeds max_pixels")
    # compressed MetaImage that inflates far beyond its declared 64 x 64 x 1: read stops at 4 KiB
    small = np.random.default_rng(5).integers(0, 255, 64 * 64, dtype=np.uint8).tobytes()
    z = zlib.compressobj(9)
    body = z.compress(small) + z.compress(bytes(256 * MIB)) + z.flush()
    c.file("bomb/overlong.mha", mhd_text((64, 64), "MET_UCHAR", "LOCAL", CompressedData="True") + body, "bomb",
           "read", frames=1)
    # DICOM of 778 bytes claiming 2 x 10^7 frames of 16 x 16, and one claiming 65535 x 65535
    c.file("bomb/frames_claim.dcm", tiny_dicom(16, 16, 20_000_000, bytes(256)), "bomb", "reject",
           "truncated DICOM: pixel data holds 256 bytes")
    c.file("bomb/rows_claim.dcm", tiny_dicom(65535, 65535, 1, bytes(256)), "bomb", "reject", "exceeds max_pixels")
    # uncompressed volumes declaring gigabytes with a few bytes of data
    c.file("bomb/claims.nii", nifti_header((5000, 5000, 5000)) + bytes(1000), "bomb", "reject", "truncated NIfTI")
    c.file("bomb/claims.mhd", mhd_text((50_000, 50_000, 50_000), "MET_FLOAT", "claims.zraw"), "bomb", "reject",
           "exceeds max_pixels|truncated MetaImage data: 64 of")
    c.file("bomb/claims.zraw", bytes(64), "bomb", "skip", r"data file of bomb/claims\.mhd")


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(buf, format="GIF")
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def tiff_with_huge_page(first: np.ndarray, side: int) -> bytes:
    """Page 0: `first` (uint8 gray); page 1: side x side uint8, one deflate strip of zeros (~side^2/1000 bytes)."""
    page0 = first.tobytes()
    strip = zlib.compress(bytes(side * side), 1) if side <= 8192 else zlib_zeros(side * side // MIB + 1)
    entries = lambda w, h, compression, offset, count: [
        (256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, compression), (262, 3, 1, 1),
        (273, 4, 1, offset), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, count)]
    ifd_size = 2 + 9 * 12 + 4
    ifd0_at = 8
    data0_at = ifd0_at + ifd_size
    ifd1_at = data0_at + len(page0)
    data1_at = ifd1_at + ifd_size

    def ifd(fields, next_at):
        return struct.pack("<H", len(fields)) + b"".join(struct.pack("<HHII", t, k, n, v) for t, k, n, v in fields) \
            + struct.pack("<I", next_at)

    h, w = first.shape
    return (b"II*\x00" + struct.pack("<I", ifd0_at) + ifd(entries(w, h, 1, data0_at, len(page0)), ifd1_at) + page0
            + ifd(entries(side, side, 8, data1_at, len(strip)), 0) + strip)


def write_nonfinite(c: Corpus) -> None:
    """Float data with NaN and infinity (issue 16 item 5): the finite values set the range."""
    gray = scan_image(c.next_seed())[..., 0].astype(np.float32)
    border = gray.copy()
    border[:8] = np.nan
    c.file("nonfinite/nan_border.tif", tiff_bytes([border]), "nonfinite", "read", frames=1)
    spikes = scan_image(c.next_seed())[..., 0].astype(np.float32)
    spikes[5, 5], spikes[6, 6] = np.inf, -np.inf
    c.file("nonfinite/inf_spikes.tif", tiff_bytes([spikes]), "nonfinite", "read", frames=1)
    c.file("nonfinite/all_nan.tif", tiff_bytes([np.full((SIDE, SIDE), np.nan, np.float32)]), "nonfinite", "reject",
           "only NaN or infinite")
    volume = np.stack([scan_image(c.next_seed())[..., 0] for _ in range(2)], -1).astype(np.float32)
    volume[:10] = np.nan
    c.file("nonfinite/nan_edge.nii.gz", nifti_bytes(volume, gz=True), "nonfinite", "read", frames=2)
    c.file("nonfinite/all_nan.nii", nifti_bytes(np.full((SIDE, SIDE, 2), np.nan, np.float32)), "nonfinite",
           "reject", "slice 0 holds only NaN or infinite")
    plane = scan_image(c.next_seed())[..., 0].astype(np.float32)
    plane[0, :] = np.inf
    c.file("nonfinite/inf_row.mha", mhd_text(plane.T.shape, "MET_FLOAT", "LOCAL") + plane.tobytes(), "nonfinite",
           "read", frames=1)


NAMES = ["scan with spaces.png", "ünïcödé_超声.png", "-rf --help.png", "new\nline.png", "tab\tname.png",
         "n" * 240 + ".png", "%s%n%x.png", "[glob]*?.png", "back\\slash.png", "quote'\"&;|$(x).png", "UPPER.PNG",
         os.fsdecode(b"latin1_\xe9\xff.png")]


def write_names(c: Corpus) -> None:
    """Good scans under names that break naive code (all must be read)."""
    for name in NAMES:
        c.good_png(f"names/{name}", "names")
    c.good_png("report.json", "names")  # an image named like the QA report, at the top (issue 16 item 11)
    path = c.root / "names/img%03d.avi"
    if write_video(c.root / "names/pattern.avi", "MJPG", c.next_seed()):
        (c.root / "names/pattern.avi").rename(path)
        c.case("names/img%03d.avi", "names", "read", frames=2)


def write_long_path(c: Corpus) -> None:
    """Folders nested beyond PATH_MAX (issue 16 item 7): a file whose path is too long is rejected, a
    folder whose path is too long is skipped; both with the reason."""
    base = c.root / "long_path"
    base.mkdir()
    fd = os.open(base, os.O_RDONLY)
    length, rel, target = len(os.fsencode(base)), "long_path", PATH_MAX - 230  # folder path just under the limit
    try:
        while length < target:  # descend in folders of up to 200 bytes until the path is ~PATH_MAX - 230
            name = "d" * min(200, target - length)
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, length, rel = child, length + 1 + len(name), f"{rel}/{name}"
        name = "d" * 250
        file_name = "f" * 246 + ".png"  # this file's path crosses PATH_MAX
        with os.fdopen(os.open(file_name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd), "wb") as f:
            f.write(png_bytes(scan_image(c.next_seed())))
        c.case(f"{rel}/{file_name}", "long_path", "reject", "path longer than the system allows")
        os.mkdir(name, dir_fd=fd)  # this folder's own path is beyond PATH_MAX
        c.case(f"{rel}/{name}", "long_path", "skip", "folder path longer than the system allows")
        deeper = os.open(name, os.O_RDONLY, dir_fd=fd)
        with os.fdopen(os.open("unreachable.png", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=deeper), "wb") as f:
            f.write(png_bytes(scan_image(c.next_seed())))
        os.close(deeper)
    finally:
        os.close(fd)


def write_links(c: Corpus) -> None:
    """Links followed inside the folder, refused out of it (issue 16 items 1, 3, 7, 9)."""
    for target in (".target_rel.png", ".target_abs.png", ".target_chain.png", ".target_back.png"):
        c.file(f"links/{target}", png_bytes(scan_image(c.next_seed())), "links", "skip", "hidden file")
    c.link("links/inside_rel.png", ".target_rel.png", "links", "read", frames=1)
    c.link("links/inside_abs.png", c.root / "links/.target_abs.png", "links", "read", frames=1)
    c.link("links/chain_2.png", ".target_chain.png", "links", "read", frames=1)
    c.link("links/chain_1.png", "chain_2.png", "links", "read", frames=1)  # a duplicate of chain_2
    c.link("links/out_and_back.png", f"../../{c.root.name}/links/.target_back.png", "links", "read", frames=1)
    outside = "symbolic link to a file outside the input folder"
    c.link("links/out_rel.png", f"../../{c.outside.name}/secret.png", "links", "reject", outside)
    c.link("links/out_abs.png", c.outside / "secret.png", "links", "reject", outside)
    c.link("links/etc_passwd.png", "/etc/passwd", "links", "reject", outside)
    c.link("links/dev_zero.png", "/dev/zero", "links", "reject", outside)
    c.link("links/dev_urandom.dcm", "/dev/urandom", "links", "reject", outside)
    c.link("links/broken.png", "missing.png", "links", "reject", "symbolic link to a file that does not exist")
    c.link("links/loop_a.png", "loop_b.png", "links", "reject", "symbolic link loop")
    c.link("links/loop_b.png", "loop_a.png", "links", "reject", "symbolic link loop")
    c.link("links/self.png", "self.png", "links", "reject", "symbolic link loop")
    c.link("links/folder_inside", "../good", "links", "skip", "link to a folder inside the input folder")
    c.link("links/folder_outside", c.outside, "links", "skip", "link to a folder outside the input folder")
    c.link("links/to_fifo.png", "../special/pipe.png", "links", "reject", "named pipe")


def write_special(c: Corpus) -> None:
    """FIFOs, sockets and devices (issue 16 item 3): rejected without being opened."""
    (c.root / "special").mkdir()
    for name in ("pipe.png", "pipe.mhd", "pipe.raw"):
        os.mkfifo(c.root / "special" / name)
        c.case(f"special/{name}", "special", "reject", r"a named pipe \(FIFO\), not a regular file")
    c.file("special/reads_pipe.mhd", mhd_text((8, 8), "MET_UCHAR", "pipe.raw"), "special", "reject",
           r"its data file 'pipe.raw': a named pipe")
    os.mknod(c.root / "special/socket.dcm", stat.S_IFSOCK | 0o600)
    c.case("special/socket.dcm", "special", "reject", "a socket, not a regular file")
    try:
        os.mknod(c.root / "special/zero_device.png", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except (PermissionError, OSError):
        return  # unprivileged: no device nodes (the link to /dev/zero covers devices)
    c.case("special/zero_device.png", "special", "reject", "a character device, not a regular file")


def write_permissions(c: Corpus) -> None:
    """Unreadable files and folders (issue 16 item 7). Root reads them anyway."""
    c.good_png("permissions/unreadable.png", "permissions").chmod(0)
    if not IS_ROOT:
        c.cases[-1] = Case("permissions/unreadable.png", "permissions", "reject", "permission denied")
    for folder, mode in (("locked", 0), ("list_denied", 0o311)):
        c.good_png(f"permissions/{folder}/scan.png", "permissions")
        (c.root / "permissions" / folder).chmod(mode)
        if not IS_ROOT:
            c.cases[-1] = Case(f"permissions/{folder}", "permissions", "skip", "folder cannot be listed: permission denied")
    raw = scan_image(c.next_seed())[..., 0]
    c.file("permissions/vol.raw", raw.tobytes(), "permissions", "skip", r"data file of permissions/vol\.mhd").chmod(0)
    c.file("permissions/vol.mhd", mhd_text(raw.T.shape, "MET_UCHAR", "vol.raw"), "permissions", "read", frames=1)
    if not IS_ROOT:
        c.cases[-2] = Case("permissions/vol.raw", "permissions", "reject", "permission denied")
        c.cases[-1] = Case("permissions/vol.mhd", "permissions", "reject",
                           r"its data file 'vol.raw' cannot be opened: permission denied")


def write_hidden(c: Corpus) -> None:
    """Dot-files and dot-folders: skipped, and reported (issue 16 item 7)."""
    c.file("hidden/.hidden.png", png_bytes(scan_image(c.next_seed())), "hidden", "skip", "hidden file")
    c.file("hidden/._scan.png", b"\x00\x05\x16\x07" + bytes(60), "hidden", "skip", "hidden file")
    c.file(".DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(100), "hidden", "skip", "hidden file")
    (c.root / "hidden/.git").mkdir(parents=True)
    (c.root / "hidden/.git/scan.png").write_bytes(png_bytes(scan_image(c.next_seed())))
    c.case("hidden/.git", "hidden", "skip", "hidden folder: not searched")


def write_metaimage(c: Corpus) -> None:
    """MetaImage headers naming data files (issue 16 items 1, 4): nothing outside is opened, no input vanishes."""
    m = "metaimage"
    outside = "lies outside the input folder"
    up = "../" * (len(c.root.parts) + 2)
    c.file(f"{m}/etc_passwd.mhd", mhd_text((8, 8), "MET_UCHAR", f"{up}etc/passwd"), m, "reject", outside)
    c.file(f"{m}/absolute.mhd", mhd_text((8, 8), "MET_UCHAR", "/etc/passwd"), m, "reject", outside)
    c.file(f"{m}/outside_rel.mhd", mhd_text((64, 64), "MET_UCHAR", f"../../{c.outside.name}/secret.raw"), m,
           "reject", outside)
    c.file(f"{m}/dev_zero.mhd", mhd_text((8, 8), "MET_UCHAR", "/dev/zero"), m, "reject", outside)
    c.link(f"{m}/link_out.raw", c.outside / "secret.raw", m, "reject", "symbolic link to a file outside")
    c.file(f"{m}/link_out.mhd", mhd_text((64, 64), "MET_UCHAR", "link_out.raw"), m, "reject", outside)
    c.good_png(f"{m}/picture.png", m)
    c.file(f"{m}/names_png.mhd", mhd_text((64, 64), "MET_UCHAR", "picture.png"), m, "reject",
           r"its data file 'picture.png' is an input of its own \(image\)")
    c.file(f"{m}/self.mhd", mhd_text((4, 4), "MET_UCHAR", "self.mhd"), m, "reject", "names itself")
    (c.root / m / "sub").mkdir()
    c.file(f"{m}/folder.mhd", mhd_text((4, 4), "MET_UCHAR", "sub"), m, "reject", r"its data file 'sub': a folder")
    c.file(f"{m}/missing.mhd", mhd_text((4, 4), "MET_UCHAR", "gone.raw"), m, "reject", "data file 'gone.raw' not found")
    c.file(f"{m}/dims_text.mhd", mhd_text(("a", "b"), "MET_UCHAR", "LOCAL") + bytes(4), m, "reject",
           "DimSize is not a list of whole numbers")
    c.file(f"{m}/garbage_header.mhd", b"ObjectType = Image\n\x00\xff\xfe=\x01\x02binary\nElementDataFile = LOCAL\n",
           m, "reject", r"line 2 is not 'Key = Value' text")
    c.file(f"{m}/channels_zero.mha", mhd_text((4, 4), "MET_UCHAR", "LOCAL", ElementNumberOfChannels=0) + bytes(16),
           m, "reject", "ElementNumberOfChannels=0")
    c.file(f"{m}/list.mhd", mhd_text((4, 4, 2), "MET_UCHAR", "LIST 2D"), m, "reject", "list/pattern")
    c.file(f"{m}/negative_header.mhd", mhd_text((4, 4), "MET_UCHAR", "LOCAL", HeaderSize=-5), m, "reject",
           "negative")
    two = np.stack([scan_image(c.next_seed())[..., 0], scan_image(c.next_seed())[..., 0]])  # [2, y, x]
    c.file(f"{m}/shared.raw", two.tobytes(), m, "skip", r"data file of metaimage/shared_a\.mhd")
    c.file(f"{m}/shared_a.mhd", mhd_text((SIDE, SIDE), "MET_UCHAR", "shared.raw"), m, "read", frames=1)
    c.file(f"{m}/shared_b.mhd", mhd_text((SIDE, SIDE), "MET_UCHAR", "shared.raw", HeaderSize=SIDE * SIDE), m,
           "read", frames=1)


def write_duplicates(c: Corpus) -> None:
    """The same picture twice, and as PNG and BMP (issue 16 item 8): one kept build-wide, the others named."""
    image = scan_image(c.next_seed())
    c.file("duplicates/a/same.png", png_bytes(image), "duplicates", "read", frames=1)
    c.file("duplicates/z/same.png", png_bytes(image), "duplicates", "read", frames=1)
    c.file("duplicates/same_pixels.bmp", png_bytes(image, ".bmp"), "duplicates", "read", frames=1)


def write_outside(c: Corpus) -> None:
    """Files beside the input folder that links and headers point at: never to be read."""
    c.outside.mkdir(parents=True, exist_ok=True)
    secret = scan_image(999)
    secret[:4] = 255  # a scan only reachable through the hostile links
    (c.outside / "secret.png").write_bytes(png_bytes(secret))
    (c.outside / "secret.raw").write_bytes((SECRET * (SIDE * SIDE // len(SECRET) + 1))[: SIDE * SIDE])


def write_hostile_corpus(root: str | Path) -> list[Case]:
    """Write every case under `root` (which must not exist yet) and beside it; returns the cases."""
    c = Corpus(Path(root))
    c.root.mkdir(parents=True)
    write_outside(c)
    good = write_good(c)
    write_videos(c)
    write_broken(c, good)
    write_dicom_headers(c)
    write_bombs(c)
    write_nonfinite(c)
    write_names(c)
    write_long_path(c)
    write_special(c)
    write_links(c)
    write_permissions(c)
    write_hidden(c)
    write_metaimage(c)
    write_duplicates(c)
    return c.cases


def restore_permissions(root: str | Path) -> None:
    """Make everything under `root` removable again (the permission cases lock some of it)."""
    for folder in ("permissions/locked", "permissions/list_denied"):
        path = Path(root) / folder
        if path.exists():
            path.chmod(0o755)

