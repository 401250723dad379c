"""Cleaning benchmark: our fast pipeline against the paper's reference pipeline, in one run.

    python benchmarks/cleaning.py            # every section below
    python benchmarks/cleaning.py --quick    # fewer synthetic scans
    python benchmarks/cleaning.py --sections real_us annotated

Prints one JSON document, a key per section:
  synthetic  usfmae.testing.synthetic.generate_ultrasound scans with pixel-exact overlay masks:
             pixel recall/precision of the mask against the drawn overlays, PSNR of the cleaned
             image against the overlay-free scan inside the overlays and more than 3 px away
             from them (damage to the scan)
  real       pydicom's 4 ultrasound images: words an independent OCR pass reads before and
             after cleaning (rule in usfmae.cleaning.evaluate: 2x upscale, --psm 11, >= 3
             letters/digits, confidence >= 60)
  speed      seconds per image of those, wall clock and CPU (this process plus its Tesseract
             children), the two pipelines interleaved image by image so machine load hits both
             alike; fast_batchN is the fast pipeline through clean_images (one Tesseract call per
             N images, as a Ray map_batches worker runs it); fast_cli is the fast pipeline with
             the tesseract binary started per call instead of the in-process engine
             (text.engine); reference_tesseract_default_threads is the reference with
             Tesseract's OpenMP threads left on, as the paper's notebook ran it
  annotated  usfmae.testing.annotated scans (annotations inside the scan area, bright tissue that
             looks like annotation): recall per kind inside and outside the scan area, precision
             inside it (strict, and with a 2 px / visibly-changed tolerance), share of bright
             interfaces and reflectors masked, and the typed surnames OCR reads before and after;
             on the development seeds the cleaner was built on, and on held-out seeds with other
             sizes, JPEG compression and grey-only annotations
  real_us    every file of ../shared/real_us (or $USFMAE_REAL_US; skipped with a message when
             absent), read through usfmae.io.iter_frames (a file the readers reject is reported
             with the reason), every sampled frame (3 per second of cine or video, as the shard
             builder samples them) cleaned by the reference, by ours as shipped (`fast`) and by
             ours without the text-detection network (`fast_no_detector`), interleaved frame by
             frame: words two OCR engines read before and after (Tesseract's independent pass, and
             after, those read again in a crop around them; RapidOCR's PP-OCRv6, which the cleaner
             does not use), dates and DICOM-header names among them, share of the scan area masked,
             seconds per frame
  busbra     the same on a fixed sample of BUS-BRA breast scans (../shared/real_sets/busbra/Images:
             burned-in "LEFT BREAST", calipers; every Nth file in name order)
real_us and busbra need the second OCR engine: pip install -e '.[bench]'.
"""

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, convert_color_space, pixel_array

from usfmae.cleaning import CleaningConfig, clean_image, clean_images
from usfmae.cleaning.evaluate import (
    AnnotationTally,
    date_words,
    dicom_identifiers,
    identifying_words,
    mask_recall_precision,
    mean_squared_error,
    psnr_from_mse,
    readable_words,
    real_us_folder,
    second_engine_words,
)
from usfmae.cleaning.image import to_rgb_uint8
from usfmae.cleaning.ocr import resolve_engine
from usfmae.io import ReadError, iter_frames, list_inputs
from usfmae.testing.annotated import NAMES, generate_annotated
from usfmae.testing.synthetic import generate_ultrasound

REAL_IMAGES = ("examples_palette.dcm", "examples_rgb_color.dcm", "examples_jpeg2k.dcm", "examples_ybr_color.dcm")
SYNTHETIC_SIZE = (480, 640)  # a common scanner frame
REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("classic", "annotated", "real_us", "busbra")  # classic = the synthetic, real and speed keys
# usfmae.testing.annotated sets: (name, first seed, count, size, jpeg quality, coloured annotations).
# The cleaner was developed on seeds 0-29; the held-out sets use seeds never looked at.
ANNOTATED_SETS = (
    ("development", 0, 30, (480, 640), None, True),
    ("held_out", 1000, 12, (480, 640), None, True),
    ("held_out_600x800_jpeg75", 2000, 12, (600, 800), 75, True),
    ("held_out_360x480_grey", 3000, 12, (360, 480), None, False),
)


# ---------------------------------------------------------------- images


def synthetic_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(annotated RGB, clean RGB, HxW bool overlay truth) from the project's synthetic generator:
    a scan-converted speckle fan with header text, labels, calipers, boxes and a colour bar."""
    sample = generate_ultrasound(seed, size=SYNTHETIC_SIZE)
    return sample.image, sample.clean, sample.overlay_mask > 0


def load_dicom_rgb(name: str) -> np.ndarray:
    """First frame of a pydicom test file as HxWx3 uint8 RGB."""
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    frame = pixel_array(ds, index=0, raw=True)
    interpretation = ds.PhotometricInterpretation
    if interpretation == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
    elif interpretation.startswith("YBR_FULL"):
        frame = convert_color_space(frame, interpretation, "RGB")
    # YBR_RCT/ICT (JPEG 2000) come out of the decoder already in RGB.
    return to_rgb_uint8(frame, path)


# ---------------------------------------------------------------- measurement


def timed(function, *args) -> tuple[object, float, float]:
    """function(*args) plus (wall seconds, CPU seconds of this process and its Tesseract children)."""
    wall, own = time.perf_counter(), time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = function(*args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return result, time.perf_counter() - wall, time.process_time() - own + child_cpu


def mean(values: list[float]) -> float:
    return round(float(np.mean(values)), 4)


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Tally:
    """Per-pipeline lists of metrics and per-image seconds."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, list[float]]] = {}

    def add(self, name: str, **values: float) -> None:
        row = self.rows.setdefault(name, {})
        for key, value in values.items():
            row.setdefault(key, []).append(value)

    def means(self, keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
        return {name: {k: mean(row[k]) for k in keys if k in row} for name, row in self.rows.items()}


def score_synthetic(tally: Tally, name: str, result, clean: np.ndarray, truth: np.ndarray) -> None:
    recall, precision = mask_recall_precision(result.mask, truth)
    # "Elsewhere" leaves a 3 px margin around the overlays: that halo is meant to be repainted.
    far = cv2.dilate(truth.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0
    tally.add(
        name,
        recall=recall,
        precision=precision,
        mse_overlay=mean_squared_error(result.image, clean, truth),
        mse_elsewhere=mean_squared_error(result.image, clean, far),
    )


def run_classic(quick: bool, batch_size: int) -> dict:
    """The synthetic, real (pydicom) and speed sections."""
    reference, fast = CleaningConfig(mode="reference"), CleaningConfig(mode="fast")
    fast_cli = fast.model_copy(update={"text": fast.text.model_copy(update={"engine": "cli"})})
    paper_threads = reference.model_copy(update={"text": reference.text.model_copy(update={"single_thread": False})})
    quality, speed = Tally(), Tally()
    cases = [synthetic_case(seed) for seed in range(8 if quick else 24)]
    for annotated, clean, truth in cases:  # the pipelines interleaved, image by image
        for name, cfg in (("reference", reference), ("fast", fast), ("fast_cli", fast_cli)):
            result, wall, cpu = timed(clean_image, annotated, cfg)
            score_synthetic(quality, name, result, clean, truth)
            speed.add(name, wall=wall, cpu=cpu)
    for batch in batches(cases, batch_size):
        results, wall, cpu = timed(clean_images, [annotated for annotated, _, _ in batch], fast)
        for result, (_, clean, truth) in zip(results, batch):
            score_synthetic(quality, f"fast_batch{batch_size}", result, clean, truth)
            speed.add(f"fast_batch{batch_size}", wall=wall / len(batch), cpu=cpu / len(batch))

    real, images = {}, {name: load_dicom_rgb(name) for name in REAL_IMAGES}
    for file_name, image in images.items():
        entry = {"shape": list(image.shape), "words_before": readable_words(image)}
        for name, cfg in (("reference", reference), ("fast", fast), ("fast_cli", fast_cli)):
            result, wall, cpu = timed(clean_image, image, cfg)
            entry[f"words_after_{name}"] = readable_words(result.image)
            entry[f"mask_fraction_{name}"] = round(result.stats["mask_fraction"], 4)
            speed.add(name, wall=wall, cpu=cpu)
        _, wall, cpu = timed(clean_image, image, paper_threads)
        speed.add("reference_tesseract_default_threads", wall=wall, cpu=cpu)
        real[file_name] = entry
    results, wall, cpu = timed(clean_images, list(images.values()), fast)
    for file_name, result in zip(images, results):
        real[file_name][f"words_after_fast_batch{batch_size}"] = readable_words(result.image)
        speed.add(f"fast_batch{batch_size}", wall=wall / len(images), cpu=cpu / len(images))

    seconds = speed.means(("wall", "cpu"))
    return {
        "synthetic_images": len(cases),
        "synthetic": {
            name: {
                "recall": row["recall"],
                "precision": row["precision"],
                # PSNR of the pooled mean squared error (a per-image PSNR can be infinite)
                "psnr_overlay_db": round(psnr_from_mse(row["mse_overlay"]), 2),
                "psnr_elsewhere_db": round(psnr_from_mse(row["mse_elsewhere"]), 2),
            }
            for name, row in quality.means(("recall", "precision", "mse_overlay", "mse_elsewhere")).items()
        },
        "real": real,
        "real_words_left": {
            name: sum(len(e[f"words_after_{name}"]) for e in real.values())
            for name in ("reference", "fast", "fast_cli", f"fast_batch{batch_size}")
        },
        "seconds_per_image": seconds,
        "speedup_vs_reference": speedups(seconds),
    }


def speedups(seconds: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per pipeline, reference seconds over its seconds (wall and CPU)."""
    base = seconds["reference"]
    return {
        name: {kind: round(base[kind] / max(row[kind], 1e-9), 2) for kind in ("wall", "cpu")}
        for name, row in seconds.items()
        if name != "reference"
    }


# ---------------------------------------------------------------- annotated synthetic scans


def names_read(image: np.ndarray) -> list[str]:
    """Typed surnames (usfmae.testing.annotated.NAMES) among the words the independent OCR pass reads."""
    return identifying_words(readable_words(image), set(NAMES))


def run_annotated(quick: bool) -> dict:
    """Recall per kind inside and outside the scan, precision inside, tissue masked, names read; both pipelines."""
    pipelines = {"reference": CleaningConfig(mode="reference"), "fast": CleaningConfig(mode="fast")}
    out = {}
    for name, first, count, size, jpeg, colour in ANNOTATED_SETS:
        count = max(4, count // 3) if quick else count
        tallies = {pipeline: AnnotationTally() for pipeline in pipelines}
        names = {"before": 0, **{pipeline: 0 for pipeline in pipelines}}
        for seed in range(first, first + count):
            sample = generate_annotated(seed, size=size, color=colour, jpeg_quality=jpeg)
            names["before"] += len(names_read(sample.image))
            for pipeline, cfg in pipelines.items():
                result = clean_image(sample.image, cfg)
                tallies[pipeline].add(result.mask, sample)
                names[pipeline] += len(names_read(result.image))
        out[name] = {"images": count, "size": list(size), "jpeg_quality": jpeg, "coloured": colour,
                     "names_read": names, **{pipeline: tally.summary() for pipeline, tally in tallies.items()}}
    return out


# ---------------------------------------------------------------- real ultrasound files


def words_report(image: np.ndarray, identifiers: set[str], confirm: bool) -> dict:
    """Words both OCR engines read in one image, the dates and header names among them (and Tesseract's
    confirmed ones)."""
    words, second = readable_words(image), second_engine_words(image)
    report = {"words": words, "dates": date_words(words), "names": identifying_words(words, identifiers),
              "words_pp": second, "dates_pp": date_words(second), "names_pp": identifying_words(second, identifiers)}
    if confirm:
        report["confirmed"] = readable_words(image, confirm=True) if words else []
    return report


REAL_PIPELINES = ("reference", "fast", "fast_no_detector")
WORD_KEYS = ("words", "dates", "names", "words_pp", "dates_pp", "names_pp")


def real_pipelines() -> dict[str, CleaningConfig]:
    """The reference, ours as shipped, and ours without the text-detection network."""
    fast = CleaningConfig(mode="fast")
    return {"reference": CleaningConfig(mode="reference"), "fast": fast,
            "fast_no_detector": fast.model_copy(update={"detector": fast.detector.model_copy(update={"enabled": False})})}


def run_file(path: Path, pipelines: dict[str, CleaningConfig], speed: Tally) -> dict:
    """Every sampled frame of one real file through the pipelines; raises ReadError for rejected files."""
    identifiers = dicom_identifiers(path)
    frames = []
    for frame in iter_frames(path):
        image = to_rgb_uint8(frame.image)
        row = {"index": frame.index, "before": words_report(image, identifiers, confirm=False)}
        results = {}
        for name, cfg in pipelines.items():  # interleaved frame by frame: load hits both alike
            results[name], wall, cpu = timed(clean_image, image, cfg)
            speed.add(name, wall=wall, cpu=cpu)
        scan = results["fast"].scan if results["fast"].scan is not None else np.ones(image.shape[:2], bool)
        for name, result in results.items():
            row[name] = words_report(result.image, identifiers, confirm=True)
            # The same scan area for both: the one the fast pipeline found (the reference finds none).
            row[name]["scan_masked"] = round(np.count_nonzero((result.mask > 0) & scan) / np.count_nonzero(scan), 4)
        frames.append(row)
    return summarise_file(frames, bool(identifiers))


def summarise_file(frames: list[dict], dicom: bool) -> dict:
    """Per file: frame count, words/dates/names before and after per pipeline, scan-area masked."""
    summary = {"frames": len(frames), "header_identifiers": dicom}
    for stage in ("before", *REAL_PIPELINES):
        rows = [f[stage] for f in frames]
        entry = {key: sum(len(r[key]) for r in rows) for key in WORD_KEYS}
        entry["frames_with_words"] = sum(bool(r["words"]) for r in rows)
        entry["frames_with_words_pp"] = sum(bool(r["words_pp"]) for r in rows)
        entry["example_words"] = sorted({w for r in rows for w in r["words"]})[:12]
        entry["example_words_pp"] = sorted({w for r in rows for w in r["words_pp"]})[:12]
        if stage != "before":
            entry["confirmed_words"] = sum(len(r["confirmed"]) for r in rows)
            entry["scan_masked_mean"] = round(float(np.mean([r["scan_masked"] for r in rows])), 4)
            entry["scan_masked_max"] = round(float(np.max([r["scan_masked"] for r in rows])), 4)
        summary[stage] = entry
    return summary


def run_real_us(folder: Path, paths: list[Path] | None = None, label: str = "real_us") -> dict:
    """The pipelines on every readable frame of every file in `folder` (or of `paths` in it), with totals
    and speed-up."""
    pipelines = real_pipelines()
    second_engine_words(np.zeros((64, 64, 3), np.uint8))  # load the second OCR engine once
    clean_image(np.zeros((64, 64, 3), np.uint8), pipelines["fast"])  # load the in-process OCR engine once
    speed, files, rejected = Tally(), {}, {}
    for path in paths if paths is not None else list_inputs(folder):
        name = path.relative_to(folder).as_posix()
        try:
            files[name] = run_file(path, pipelines, speed)
        except ReadError as err:
            rejected[name] = err.reason
        print(f"[{label}] {name}: {files[name]['frames'] if name in files else 'rejected'}", file=sys.stderr,
              flush=True)
    totals = {"files": len(files), "frames": sum(f["frames"] for f in files.values())}
    for stage in ("before", *REAL_PIPELINES):
        totals[stage] = {key: sum(f[stage][key] for f in files.values())
                         for key in (*WORD_KEYS, "frames_with_words", "frames_with_words_pp")}
        if stage != "before":
            totals[stage]["confirmed_words"] = sum(f[stage]["confirmed_words"] for f in files.values())
            totals[stage]["scan_masked_mean_of_files"] = round(
                float(np.mean([f[stage]["scan_masked_mean"] for f in files.values()])), 4)
    seconds = speed.means(("wall", "cpu"))
    return {"folder": str(folder), "files": files, "rejected": rejected, "totals": totals,
            "seconds_per_frame": seconds, "speedup_vs_reference": speedups(seconds)}


def run(sections: tuple[str, ...], quick: bool, batch_size: int, real_us: Path | None, busbra: Path | None = None,
        busbra_sample: int = 60) -> dict:
    fast = CleaningConfig(mode="fast")
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "opencv": cv2.__version__,
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "ocr_engine_fast": resolve_engine(fast.text.engine, fast.text.tesseract_cmd, fast.text.language),
    }
    if "classic" in sections:
        report.update(run_classic(quick, batch_size))
    if "annotated" in sections:
        report["annotated"] = run_annotated(quick)
    if "real_us" in sections:
        folder, reason = (real_us, f"real ultrasound files from {real_us}") if real_us else real_us_folder(REPO)
        if folder is None or not folder.is_dir():
            print(f"[real_us] skipped: {reason}", file=sys.stderr)
            report["real_us"] = {"skipped": reason}
        else:
            report["real_us"] = run_real_us(folder)
    if "busbra" in sections:
        folder = busbra or REPO.parent / "shared" / "real_sets" / "busbra" / "Images"
        if not folder.is_dir():
            print(f"[busbra] skipped: no BUS-BRA images at {folder}", file=sys.stderr)
            report["busbra"] = {"skipped": f"no BUS-BRA images at {folder}"}
        else:
            images = sorted(folder.glob("*.png"))
            step = max(1, len(images) // busbra_sample)
            report["busbra"] = {"images_in_folder": len(images), "every_nth": step,
                                **run_real_us(folder, images[::step][:busbra_sample], "busbra")}
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer synthetic scans (8 classic, a third annotated)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per clean_images call (one OCR call)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to run")
    parser.add_argument("--real-us", type=Path, help="folder of real files (default: $USFMAE_REAL_US, "
                        "else ../shared/real_us beside the repository)")
    parser.add_argument("--busbra", type=Path, help="folder of BUS-BRA images (default: "
                        "../shared/real_sets/busbra/Images beside the repository)")
    parser.add_argument("--busbra-sample", type=int, default=60, help="BUS-BRA images to clean (every Nth file)")
    args = parser.parse_args(argv)
    report = run(tuple(args.sections), args.quick, args.batch_size, args.real_us, args.busbra, args.busbra_sample)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
