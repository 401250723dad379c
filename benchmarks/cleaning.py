"""Cleaning benchmark: our fast pipeline against the paper's reference pipeline, in one run.

    python benchmarks/cleaning.py            # 24 synthetic 480x640 scans + pydicom's 4 real ultrasound images
    python benchmarks/cleaning.py --quick    # 8 synthetic scans + the real images

Prints one JSON document:
  synthetic  usfmae.data.synthetic.generate_ultrasound scans with pixel-exact overlay masks:
             pixel recall/precision of the mask against the drawn overlays, PSNR of the cleaned
             image against the overlay-free scan inside the overlays and more than 3 px away
             from them (damage to the scan)
  real       words an independent OCR pass reads before and after cleaning (rule in
             usfmae.cleaning.evaluate: 2x upscale, --psm 11, >= 3 letters/digits, confidence >= 60)
  speed      seconds per image, wall clock and CPU (this process plus its Tesseract children),
             the two pipelines interleaved image by image so machine load hits both alike;
             fast_batchN is the fast pipeline through clean_images (one Tesseract call per N
             images, as a Ray map_batches worker runs it); fast_cli is the fast pipeline with the
             tesseract binary started per call instead of the in-process engine (text.engine);
             reference_tesseract_default_threads is the reference with Tesseract's OpenMP threads
             left on, as the paper's notebook ran it
"""

import argparse
import json
import os
import platform
import resource
import time

import cv2
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, convert_color_space, pixel_array

from usfmae.cleaning import CleaningConfig, clean_image, clean_images
from usfmae.cleaning.ocr import resolve_engine
from usfmae.cleaning.evaluate import mask_recall_precision, mean_squared_error, psnr_from_mse, readable_words
from usfmae.cleaning.image import to_rgb_uint8
from usfmae.data.synthetic import generate_ultrasound

REAL_IMAGES = ("examples_palette.dcm", "examples_rgb_color.dcm", "examples_jpeg2k.dcm", "examples_ybr_color.dcm")
SYNTHETIC_SIZE = (480, 640)  # a common scanner frame


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


def run(quick: bool, batch_size: int) -> dict:
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
    base = seconds["reference"]
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "opencv": cv2.__version__,
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "ocr_engine_fast": resolve_engine(fast.text.engine, fast.text.tesseract_cmd, fast.text.language),
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
        "speedup_vs_reference": {
            name: {kind: round(base[kind] / max(s[kind], 1e-9), 2) for kind in ("wall", "cpu")}
            for name, s in seconds.items()
            if name != "reference"
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 synthetic scans instead of 24")
    parser.add_argument("--batch-size", type=int, default=8, help="images per clean_images call (one OCR call)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.quick, args.batch_size), indent=2))


if __name__ == "__main__":
    main()
