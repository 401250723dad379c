"""Helpers shared by the pretraining benchmarks: machine description, memory probes, benchmark shards.

Benchmark shards use the format of preprocessing/build_shards.py (one tar member pair per sample:
`KEY.png` with a 224x224 image, 1-channel when gray as the builder stores it, and `KEY.json` with its
metadata, plus `manifest.json`), written here with webdataset's TarWriter so a benchmark does not need
a Ray cluster. Every image is also kept as an RGB PNG file, so a loader that reads a folder sees the
same pixels.
"""

import hashlib
import json
import os
import platform
import resource
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
import webdataset as wds
from PIL import Image

from usfmae.constants import DEFAULT_IMAGE_SIZE
from usfmae.shards.manifest import ShardManifest
from usfmae.shards.samples import encode_png
from usfmae.testing.synthetic import write_corpus


# ---------------------------------------------------------------- machine and memory


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """What a reader needs to compare numbers across machines."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": torch.cuda.get_device_name() if
            torch.cuda.is_available() else None, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "opencv": cv2.__version__, "pillow": Image.__version__,
            "load_average_at_start": list(os.getloadavg())}


def rss_mb() -> float:
    """Current resident set size of this process in MiB (from /proc; falls back to the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process: throughput per core, whatever else loads the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def single_core() -> None:
    """Pin torch and OpenCV to one thread, as in a DataLoader worker (torch sets 1 thread there)."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


# ---------------------------------------------------------------- shards


def stored_png(data: bytes, name: str, storage: str) -> bytes:
    """The PNG bytes a shard holds for the image file `data`.

    storage='builder': re-encoded as preprocessing/build_shards.py writes samples (usfmae.shards.samples.
    encode_png: a 1-channel PNG when R == G == B, else RGB; the same pixels once replicated);
    storage='rgb': the file's own RGB PNG bytes (3-channel shards, which the stream reads too)."""
    if storage == "rgb":
        return data
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{name}: not a decodable PNG")
    return encode_png(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def pack_shards(pngs: list[Path], out_dir: Path, shard_size: int, storage: str = "builder") -> Path:
    """Write PNG files as shards `shard-NNNNNN.tar` + manifest.json; keys are content hashes. Returns out_dir.
    `storage`: see stored_png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for start in range(0, len(pngs), shard_size):
        name = f"shard-{start // shard_size:06d}.tar"
        path = out_dir / name
        with wds.TarWriter(str(path)) as sink:
            for png in pngs[start:start + shard_size]:
                data = png.read_bytes()
                key = hashlib.sha256(data).hexdigest()[:32]
                size = Image.open(png).size
                meta = {"dataset": "synthetic", "source_kind": "image", "index": 0, "original_size": list(size)}
                sink.write({"__key__": key, "png": stored_png(data, str(png), storage),
                            "json": json.dumps(meta).encode()})
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entries.append({"name": name, "samples": len(pngs[start:start + shard_size]),
                        "bytes": path.stat().st_size, "sha256": digest})
    manifest = ShardManifest.build(entries, image_size=DEFAULT_IMAGE_SIZE, storage=storage)
    (out_dir / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=1))
    return out_dir


def synthetic_shards(work: Path, n: int, shard_size: int, seed: int = 0, storage: str = "builder") -> tuple[Path, Path]:
    """n synthetic 224x224 scans as (shard directory, ImageFolder root holding the same images as RGB PNG files
    in one class folder); reused when already there. Without overlays: shards hold cleaned scans (gray content,
    stored as `storage` says: see stored_png)."""
    root, shards_dir = work / "imagefolder", work / f"shards_{storage}"
    manifest = shards_dir / "manifest.json"
    pngs = sorted((root / "ultrasound").glob("*.png"))
    if manifest.is_file() and len(pngs) == n:
        old = json.loads(manifest.read_text())
        if old["total_samples"] == n and len(old["shards"]) == -(-n // shard_size):
            return shards_dir, root
    if len(pngs) != n:
        shutil.rmtree(root, ignore_errors=True)
        pngs = write_corpus(root / "ultrasound", n, seed=seed, size=DEFAULT_IMAGE_SIZE, overlays=False)
    shutil.rmtree(shards_dir, ignore_errors=True)
    return pack_shards(pngs, shards_dir, shard_size, storage), root


def unpack_shards(shards_dir: Path, root: Path) -> Path:
    """Every `png` member of a shard build written out as `root/ultrasound/KEY.png` (one ImageFolder class):
    byte-identical for RGB members, re-encoded as RGB for 1-channel (gray) ones, so the folder holds the
    3-channel images a folder-based loader would read. Returns root."""
    out_dir = root / "ultrasound"
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((shards_dir / "manifest.json").read_text())
    for shard in manifest["shards"]:
        for sample in wds.WebDataset(str(shards_dir / shard["name"]), shardshuffle=False):
            if "png" not in sample:
                raise ValueError(f"sample {sample['__key__']} of {shard['name']} has no png member")
            data = sample["png"]
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if img is not None and img.ndim == 2:
                data = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))[1].tobytes()
            (out_dir / f"{sample['__key__']}.png").write_bytes(data)
    return root
