"""A small corpus of every input kind for builder tests and benchmarks (generated locally, no downloads).

    write_mixed_corpus("corpus", n_images=12, size=96)   # -> {"images": [...], "video": ..., ...}

Contents: synthetic B-mode PNGs (some with overlays), a 16-bit grey PNG, an AVI cine at 30 fps
whose frames repeat (near duplicates at 3 fps), a NIfTI volume, pydicom's bundled real ultrasound
DICOMs (palette, RGB, JPEG 2000, 30-frame YBR cine; they carry patient/institution tags and
burned-in text), and optionally broken files (truncated PNG, empty DICOM, cut DICOM, text file).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
from pydicom.data import get_testdata_file

from usfmae.testing.synthetic import generate_ultrasound

PYDICOM_ULTRASOUND = ("examples_palette.dcm", "examples_rgb_color.dcm", "examples_jpeg2k.dcm",
                      "examples_ybr_color.dcm")


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"{path}: could not write PNG")
    return path


def write_cine_avi(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> Path:
    """Uncompressed-enough MJPG AVI of RGB frames (all the same size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write MJPG AVI")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_images(out: Path, n: int, size: int, seed: int) -> list[Path]:
    """n synthetic scans, every other one with burned-in overlays."""
    return [write_png(out / f"scan_{i:04d}.png", generate_ultrasound(seed * 1000 + i, size, overlays=i % 2 == 0).image)
            for i in range(n)]


def write_mixed_corpus(out: str | Path, n_images: int = 8, size: int = 96, seed: int = 0,
                       broken: bool = True, dicom: bool = True) -> dict[str, list[Path]]:
    """Write the corpus under `out`; returns its files by group (images, video, volume, dicom, broken)."""
    out = Path(out)
    files: dict[str, list[Path]] = {"images": write_images(out / "images", n_images, size, seed)}
    gray16 = (generate_ultrasound(seed + 777, size, overlays=False).image[..., 0].astype(np.uint16) * 257)
    files["images"].append(write_png(out / "images" / "gray16.png", gray16))

    # 30 frames at 30 fps = 1 s: 3 fps keeps frames 0, 10, 20; frames 0-19 are one still, 20-29 another,
    # so frame 10 repeats frame 0 (a near duplicate) and frame 20 is new.
    still_a = generate_ultrasound(seed + 901, size, overlays=False).image
    still_b = generate_ultrasound(seed + 902, size, overlays=False).image
    files["video"] = [write_cine_avi(out / "video" / "loop.avi", [still_a] * 20 + [still_b] * 10)]

    volume = np.stack([generate_ultrasound(seed + 950 + z, size, overlays=False).image[..., 0] for z in range(4)],
                      axis=-1)  # [x, y, z]: 4 slices along axis 2
    (out / "volume").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(out / "volume" / "stack.nii.gz"))
    files["volume"] = [out / "volume" / "stack.nii.gz"]

    if dicom:
        (out / "dicom").mkdir(parents=True, exist_ok=True)
        files["dicom"] = [Path(shutil.copyfile(get_testdata_file(name), out / "dicom" / name))
                          for name in PYDICOM_ULTRASOUND]
    if broken:
        bad = out / "broken"
        bad.mkdir(parents=True, exist_ok=True)
        png = files["images"][0].read_bytes()
        (bad / "truncated.png").write_bytes(png[: len(png) // 3])
        (bad / "empty.dcm").write_bytes(b"")
        (bad / "notes.txt").write_text("not an image\n")
        (bad / "random.jpg").write_bytes(np.random.default_rng(seed).bytes(2048))
        files["broken"] = sorted(bad.iterdir())
        if dicom:
            cut = Path(get_testdata_file("examples_palette.dcm")).read_bytes()
            (bad / "cut.dcm").write_bytes(cut[: len(cut) // 2])
            files["broken"] = sorted(bad.iterdir())
    return files
