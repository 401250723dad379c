"""Cleaning QA before a big build: every frame of every input, cleaned at its original resolution.

For an input `a/b.dcm` and each frame the readers yield (DICOM/video frames at 3 fps, volume slices):
    {output}/a/b.dcm/00010.clean.png   the cleaned frame, original size
    {output}/a/b.dcm/00010.mask.png    255 where pixels were replaced
    {output}/a/b.dcm/00010.json        kind, index, original_size and the cleaning stats (with timings)
and {output}/report.json: inputs seen, frames written, rejected inputs with their reason; with
sheets, {output}/sheets/a/b.dcm.png: original | mask | cleaned, a row per frame (at most six,
spread over the input; `usfmae.cleaning.sheet`).
Output holds relative input paths: it is a local QA folder, not something to share like shards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TextIO

import cv2

from usfmae.cleaning import clean_image, to_rgb_uint8
from usfmae.cleaning.sheet import SheetBuilder
from usfmae.io import ReadError, iter_frames, list_inputs

from .config import QAConfig


def write_png(path: Path, image) -> None:
    """RGB [H, W, 3] or mask [H, W] uint8 -> PNG; OSError naming the file when it cannot be written."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"{path}: PNG could not be written")


def clean_input(path: Path, out_dir: Path, cfg: QAConfig, sheet: SheetBuilder | None = None) -> int:
    """Clean and write every frame of one input; returns the frame count. Raises ReadError for bad inputs.

    With a `sheet`, every frame is also offered to it (original | mask | cleaned rows)."""
    written = 0
    for frame in iter_frames(path, cfg.reader):
        try:
            result = clean_image(frame.image, cfg.cleaning, source=f"{path} frame {frame.index}")
        except (ValueError, cv2.error) as err:
            raise ReadError(path, f"cleaning failed on frame {frame.index} ({type(err).__name__}: {err})") from err
        if sheet is not None:
            sheet.add(to_rgb_uint8(frame.image), result, f"frame {frame.index}")
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"{frame.index:05d}"
        write_png(stem.with_suffix(".clean.png"), result.image)
        write_png(stem.with_suffix(".mask.png"), result.mask)
        stats = {"kind": frame.kind, "index": frame.index, "original_size": list(frame.original_size),
                 "stats": result.stats}
        stem.with_suffix(".json").write_text(json.dumps(stats, indent=1))
        written += 1
    return written


def clean_folder(input_dir: str | Path, output_dir: str | Path, cfg: QAConfig | None = None,
                 log: TextIO | None = None, sheets: bool = False) -> dict:
    """Clean every input under `input_dir` into `output_dir`; returns (and writes) the report.

    sheets: also write a contact sheet per input, {output}/sheets/<input path>.png."""
    cfg = cfg or QAConfig()
    root, out = Path(input_dir), Path(output_dir)
    inputs = list_inputs(root)
    out.mkdir(parents=True, exist_ok=True)
    frames, rejected, start = 0, [], time.perf_counter()
    for i, path in enumerate(inputs, 1):
        rel = path.relative_to(root).as_posix()
        sheet = SheetBuilder() if sheets else None
        try:
            n = clean_input(path, out / rel, cfg, sheet)
        except ReadError as err:
            rejected.append({"input": rel, "reason": err.reason})
            message = f"rejected: {err.reason}"
        else:
            frames += n
            message = f"{n} frame(s)"
            if sheet is not None and sheet.rows:
                (out / "sheets" / rel).parent.mkdir(parents=True, exist_ok=True)
                write_png(out / "sheets" / f"{rel}.png", sheet.render())
        if log is not None:
            print(f"[clean] {i}/{len(inputs)} {rel}: {message}", file=log, flush=True)
    seconds = time.perf_counter() - start
    report = {"inputs_seen": len(inputs), "frames": frames, "rejected": rejected, "seconds": round(seconds, 3),
              "seconds_per_frame": round(seconds / frames, 4) if frames else None}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report
