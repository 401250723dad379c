"""One OCR call returns word boxes: the Tesseract binary through pytesseract, or libtesseract in-process.

Engines:
- `cli`: runs the `tesseract` binary once per call (pytesseract). Starting it costs about 0.07 s of CPU
  whatever the image, which is most of the fast pipeline's time on a single image.
- `api`: libtesseract in this process through tesserocr (its wheel bundles the library; the language
  data comes from the system install the binary uses). One handle per thread, language and page
  segmentation mode, reused across calls: no start-up cost.
- `auto`: `api` when tesserocr is importable and the language data is found, `cli` otherwise, and
  always `cli` when a timeout is set (only a subprocess can be killed).
A missing binary or engine gives a clear error that says how to install it.
"""

import contextlib
import functools
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pytesseract

INSTALL_HINT = (
    "Tesseract OCR is needed to find burned-in text but {cmd!r} was not found. Install it "
    "(Debian/Ubuntu: `apt-get install tesseract-ocr`; macOS: `brew install tesseract`), or point "
    "`cleaning.text.tesseract_cmd` at the binary, or disable the text step with `cleaning.text.enabled=false`."
)


ENGINES = ("auto", "api", "cli")
API_HINT = (
    "cleaning.text.engine is 'api' but {problem}. Install the in-process engine with `pip install tesserocr` "
    "and the language data with the Tesseract binary (`apt-get install tesseract-ocr`), or set TESSDATA_PREFIX "
    "to the folder holding {language}.traineddata; or use engine 'cli' or 'auto'."
)


class TesseractNotInstalledError(RuntimeError):
    """Tesseract (the binary, or the in-process engine asked for) is missing; the message says how to install it."""


@dataclass(frozen=True)
class Word:
    """One word Tesseract read; box in the pixel coordinates of the image it was given."""

    text: str
    confidence: float
    left: int
    top: int
    width: int
    height: int


@functools.lru_cache(maxsize=8)
def _resolve(cmd: str) -> str:
    path = shutil.which(cmd)
    if path is None:
        raise TesseractNotInstalledError(INSTALL_HINT.format(cmd=cmd))
    return path


def ensure_tesseract(cmd: str = "tesseract") -> str:
    """Return the resolved path of the Tesseract binary or raise TesseractNotInstalledError."""
    return _resolve(cmd)


@contextlib.contextmanager
def _omp_threads(single_thread: bool) -> Iterator[None]:
    """Run Tesseract with one OpenMP thread unless the user already chose a limit.

    pytesseract passes os.environ to the subprocess, so the variable is set for the call only.
    """
    if not single_thread or "OMP_THREAD_LIMIT" in os.environ:
        yield
        return
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        yield
    finally:
        os.environ.pop("OMP_THREAD_LIMIT", None)


@functools.lru_cache(maxsize=8)
def tessdata_dir(cmd: str = "tesseract") -> Path | None:
    """The folder of Tesseract's language data: $TESSDATA_PREFIX, else the one the binary reports."""
    if os.environ.get("TESSDATA_PREFIX"):
        return Path(os.environ["TESSDATA_PREFIX"])
    exe = shutil.which(cmd)
    if exe is None:
        return None
    try:
        listing = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'languages in "([^"]+)"', listing.stdout + listing.stderr)
    return Path(match.group(1)) if match else None


@functools.lru_cache(maxsize=8)
def _api_problem(cmd: str, language: str) -> str | None:
    """Why the in-process engine cannot run `language` here, or None when it can."""
    try:
        import tesserocr  # noqa: F401
    except ImportError:
        return "tesserocr is not installed"
    folder = tessdata_dir(cmd)
    if folder is None or not (folder / f"{language}.traineddata").is_file():
        return f"no {language}.traineddata was found (looked in {folder or 'TESSDATA_PREFIX and the binary'})"
    return None


def resolve_engine(engine: str, cmd: str = "tesseract", language: str = "eng", timeout_s: float = 0.0) -> str:
    """'api' or 'cli' for a configured engine; 'api' without tesserocr or language data is an error."""
    if engine not in ENGINES:
        raise ValueError(f"OCR engine must be one of {ENGINES}, got {engine!r}")
    if engine == "cli" or (engine == "auto" and timeout_s > 0):
        return "cli"
    problem = _api_problem(cmd, language)
    if problem is None:
        return "api"
    if engine == "api":
        raise TesseractNotInstalledError(API_HINT.format(problem=problem, language=language))
    return "cli"


_handles = threading.local()


def _api_handle(cmd: str, language: str, psm: int | None):
    """This thread's libtesseract handle for (language, psm), created once."""
    import tesserocr

    cache = _handles.__dict__.setdefault("by_key", {})
    key = (cmd, language, psm)
    if key not in cache:
        kwargs = {} if psm is None else {"psm": psm}
        cache[key] = tesserocr.PyTessBaseAPI(path=str(tessdata_dir(cmd)) + os.sep, lang=language, **kwargs)
    return cache[key]


def _api_words(image: np.ndarray, cmd: str, language: str, psm: int | None) -> list[Word]:
    import tesserocr

    api = _api_handle(cmd, language, psm)
    pixels = np.ascontiguousarray(image)
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    api.SetImageBytes(pixels.tobytes(), width, height, channels, width * channels)
    api.Recognize()
    level = tesserocr.RIL.WORD
    words = []
    iterator = api.GetIterator()
    for item in tesserocr.iterate_level(iterator, level) if iterator is not None else ():
        try:
            text = (item.GetUTF8Text(level) or "").strip()
        except RuntimeError:  # "No text returned": a page with no words
            continue
        box = item.BoundingBox(level)
        if text and box is not None:
            left, top, right, bottom = box
            words.append(Word(text, float(item.Confidence(level)), left, top, right - left, bottom - top))
    api.Clear()
    return words


def read_words(
    image: np.ndarray,
    *,
    cmd: str = "tesseract",
    language: str = "eng",
    psm: int | None = None,
    timeout_s: float = 0.0,
    single_thread: bool = True,
    engine: str = "cli",
) -> list[Word]:
    """Run Tesseract once on `image` (HxW or HxWx3 uint8) and return the non-empty words.

    psm None keeps Tesseract's default page segmentation (3, what the paper's notebook used).
    single_thread: Tesseract's OpenMP threads spin-wait and cost 2-5x the CPU time on images this
    small; parallelism comes from one cleaning worker per core instead (the in-process engine's
    bundled library is built without OpenMP). engine: 'cli', 'api' or 'auto' (module docstring).
    """
    if resolve_engine(engine, cmd, language, timeout_s) == "api":
        return _api_words(image, cmd, language, psm)
    pytesseract.pytesseract.tesseract_cmd = ensure_tesseract(cmd)
    options = "" if psm is None else f"--psm {psm}"
    try:
        with _omp_threads(single_thread):
            data = pytesseract.image_to_data(
                image, lang=language, config=options, timeout=timeout_s, output_type=pytesseract.Output.DICT
            )
    except pytesseract.TesseractNotFoundError as error:
        raise TesseractNotInstalledError(INSTALL_HINT.format(cmd=cmd)) from error
    return [
        Word(text.strip(), float(conf), int(left), int(top), int(width), int(height))
        for text, conf, left, top, width, height in zip(
            data["text"], data["conf"], data["left"], data["top"], data["width"], data["height"]
        )
        if text.strip()
    ]
