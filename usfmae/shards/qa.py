"""Cleaning QA before a big build: every frame of every input, cleaned at its original resolution.

For an input `a/b.dcm` and each frame the readers yield (DICOM/video frames at 3 fps, volume slices):
    {output}/a/b.dcm/00010.clean.png   the cleaned frame, original size
    {output}/a/b.dcm/00010.mask.png    255 where pixels were replaced
    {output}/a/b.dcm/00010.json        kind, index, original_size and the cleaning stats (with timings)
and {output}/report.json: inputs seen, inputs read (with their frame count) and rejected (with the reason;
inputs_seen = read + rejected), paths skipped by the folder walk (with the reason); with sheets,
{output}/sheets/a/b.dcm.png: original | mask | cleaned, a row per frame (at most six, spread over the
input; `usfmae.cleaning.sheet`).
Output holds relative input paths: it is a local QA folder, not something to share like shards.

An input's output folder is its relative path, except that a top-level name equal to the report's
(`report.json`) or the sheets folder's (`sheets`), or ending in '~', gets one more '~'
(`report.json~/00000.clean.png`): no input can then collide with the report or a sheet, and distinct
inputs keep distinct folders. Any failure of one input (reading,
cleaning, writing its outputs) rejects that input with the reason; the others go on.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path, PurePosixPath
from typing import TextIO

import cv2

from usfmae.cleaning import clean_image, to_rgb_uint8
from usfmae.cleaning.sheet import SheetBuilder
from usfmae.io import ReadError, iter_frames, printable, scan_inputs
from usfmae.io.frame import detail

from .config import QAConfig

logger = logging.getLogger(__name__)
REPORT = "report.json"
SHEETS = "sheets"
ESCAPE = "~"


def output_folder(out: Path, rel: str) -> Path:
    """Where the frames of input `rel` go (module docstring: the report's and the sheets' names are never taken)."""
    top, *rest = PurePosixPath(rel).parts
    if top in (REPORT, SHEETS) or top.endswith(ESCAPE):
        top += ESCAPE
    return out.joinpath(top, *rest)


def write_png(path: Path, image) -> None:
    """RGB [H, W, 3] or mask [H, W] uint8 -> PNG (any file name); OSError naming the file when it fails."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"{printable(str(path), None)}: PNG could not be encoded")
    path.write_bytes(buf.tobytes())  # Python's open takes names OpenCV's imwrite cannot (undecodable bytes)


def clean_input(path: Path, out_dir: Path, cfg: QAConfig, root: Path | None = None,
                sheet: SheetBuilder | None = None) -> int:
    """Clean and write every frame of one input; returns the frame count. Raises ReadError for bad inputs
    (reading or cleaning), OSError when the outputs cannot be written. With a `sheet`, every frame is also
    offered to it (original | mask | cleaned rows)."""
    written = 0
    for frame in iter_frames(path, cfg.reader, root=root):
        try:
            result = clean_image(frame.image, cfg.cleaning, source=f"{printable(str(path))} frame {frame.index}")
        except Exception as err:
            raise ReadError(path, f"cleaning failed on frame {frame.index} ({detail(err)})") from err
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
    scan = scan_inputs(root)
    out.mkdir(parents=True, exist_ok=True)
    frames, read, rejected, start = 0, [], [], time.perf_counter()
    for i, path in enumerate(scan.inputs, 1):
        rel = path.relative_to(root).as_posix()
        name = printable(rel, None)
        sheet = SheetBuilder() if sheets else None
        try:
            n = clean_input(path, output_folder(out, rel), cfg, root, sheet)
            if sheet is not None and sheet.rows:
                sheet_path = out / SHEETS / f"{rel}.png"
                sheet_path.parent.mkdir(parents=True, exist_ok=True)
                write_png(sheet_path, sheet.render())
        except ReadError as err:
            rejected.append({"input": name, "reason": err.reason})
            message = f"rejected: {err.reason}"
        except Exception as err:  # its outputs could not be written (odd name, full disk...): this input only
            logger.warning("%s: QA outputs failed", name, exc_info=True)
            reason = f"its QA outputs could not be written ({type(err).__name__}: {detail(err)})"
            rejected.append({"input": name, "reason": reason})
            message = f"rejected: {reason}"
        else:
            frames += n
            read.append({"input": name, "frames": n})
            message = f"{n} frame(s)"
        if log is not None:
            print(f"[clean] {i}/{len(scan.inputs)} {name}: {message}", file=log, flush=True)
    seconds = time.perf_counter() - start
    report = {"inputs_seen": len(scan.inputs), "frames": frames, "read": read, "rejected": rejected,
              "skipped": [{"path": s.path, "reason": s.reason} for s in scan.skipped],
              "seconds": round(seconds, 3), "seconds_per_frame": round(seconds / frames, 4) if frames else None}
    (out / REPORT).write_text(json.dumps(report, indent=1))
    return report
