"""Loader benchmark: decode + augment images/s per core, our shard stream against the authors' loader.

    python benchmarks/loader.py                              # 1024 synthetic 224x224 scans, shards of 128
    python benchmarks/loader.py --shards shards/my_build     # a build of preprocessing/build_shards.py
    python benchmarks/loader.py --profile                    # + cProfile of our library path

All loaders read the same images in this one process, one thread (torch and OpenCV pinned to 1 thread, as in
a DataLoader worker), with the paper's augmentations, batches of 64:
  authors            torchvision ImageFolder over RGB PNG files, PIL, their Compose (RandomRotation(0, 90), flips,
                     RandomResizedCrop(224, scale=(0.5, 2.0)), ToTensor, Normalize), DataLoader: normalised float
                     [64, 3, 224, 224]
  library            usfmae.data.stream.PretrainStream + usfmae.data.transforms.pretrain_transform (data.augment
                     = fused, the default) over shards as build_shards.py writes them (gray scans as 1-channel PNGs):
                     cv2 decode, one affine warp per image, uint8 batches [64, 1, 224, 224], what the DataLoader
                     workers hand to the Trainer, which normalises them once per batch on the training device
  library+normalise  the same, then transforms.normalize_batch here on the CPU: normalised float [64, 3, 224, 224]
                     like the authors' (the cost when the training device is the CPU)
  library_rgb_shards the library on RGB shards (every image a 3-channel PNG, which the stream reads as well as
                     the builder's 1-channel ones)
  library_torchvision  data.augment=torchvision: the v2 composition on the uint8 tensor instead of the fused warp
  library_seeding_all_backends  the library, its per-image seed set with torch.manual_seed as before: that also
                     seeds CUDA, XPU and MTIA, each lazily with a stack trace when unused (the stream seeds
                     only the CPU generator it draws from)
  previous_library   the library path before the fused loader, rebuilt here: PIL decode to RGB, v2 rotation,
                     flips, resized crop, ToDtype and Normalize per image, a float stack (RGB shards)
Throughput is images per CPU-second of this process (user + system): other jobs on the machine slow the wall
clock far more than this figure, though contention for cores and caches still moves it, so compare loaders
within one run; rounds are interleaved and the median is reported. RSS is sampled after every batch, and the
library stream runs alone for --memory-epochs consecutive epochs at the end to show its RSS stays flat.

Epoch-boundary stall (`stall`; --stall-only runs just this): how long the training loop waits for its next
batch, at the first batch of each epoch and in between, with DataLoader workers (--stall-workers) reading the
shards through a simulated object store (each shard read sleeps its size / --read-mbps: one S3 GET stream) and
a consumer that spends --compute-ms per batch as a training step would:
  before   a new DataLoader per epoch (workers started again) over a stream that reads a window when it needs
           it (the baseline)
  after    one DataLoader for the run over the Trainer's stream (epoch after epoch), each source's next window
           (of this epoch or the next) read in the background: the engine's loader
Variants alternate epoch runs; the waits are wall-clock seconds.
Prints one JSON document.
"""

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable, Iterable
from unittest import mock

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (cpu_seconds, machine_info, pack_shards, rss_mb, single_core,  # noqa: E402
                    synthetic_shards, unpack_shards)

from usfmae.constants import DEFAULT_IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from usfmae.data import stream, windows  # noqa: E402
from usfmae.data.epoch import Segment  # noqa: E402
from usfmae.data.sources import resolve  # noqa: E402
from usfmae.data.stream import PretrainStream, StreamPlan, decode_image, stack_images, worker_init  # noqa: E402
from usfmae.data.fetch import fetch_bytes, read_shard  # noqa: E402
from usfmae.data.transforms import (CROP_SCALE, ROTATION, FusedAugment, draw_params, normalize, fused_warp,  # noqa: E402
                                    normalize_batch, pretrain_transform, to_chw)

TARGET_RATIO = 3.0
# loaders whose batches are not normalised
UINT8_OUT = ("library", "library_rgb_shards", "library_torchvision", "library_seeding_all_backends")


# ---------------------------------------------------------------- the authors' loader


def authors_transform(size: int) -> T.Compose:
    """The authors' PIL pipeline (torchvision v1 transforms)."""
    return T.Compose([T.RandomRotation(ROTATION), T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
                      T.RandomResizedCrop(size, scale=CROP_SCALE), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def authors_batches(root: Path, size: int, batch: int, epoch: int) -> Iterable[torch.Tensor]:
    folder = datasets.ImageFolder(str(root), transform=authors_transform(size))
    loader = DataLoader(folder, batch_size=batch, shuffle=True, num_workers=0, drop_last=True,
                        generator=torch.Generator().manual_seed(epoch))
    return (images for images, _ in loader)


# ---------------------------------------------------------------- our stream, and the path it replaced


def previous_decode(sample: dict) -> torch.Tensor:
    """The previous library decoder: PIL, converted to RGB, as a uint8 [3, H, W] tensor."""
    rgb = np.asarray(Image.open(io.BytesIO(sample["png"])).convert("RGB")).copy()
    return torch.from_numpy(rgb).permute(2, 0, 1)


def previous_transform(size: int) -> v2.Compose:
    """The previous library transform: v2 augmentations, then float conversion and normalisation per image."""
    return v2.Compose([v2.RandomRotation(degrees=ROTATION), v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.5),
                       v2.RandomResizedCrop(size, scale=CROP_SCALE, antialias=True),
                       v2.ToDtype(torch.float32, scale=True), normalize()])


class SeedAllBackends:
    """`torch` for the stream module, but `default_generator.manual_seed` is torch.manual_seed (every backend)."""
    default_generator = types.SimpleNamespace(manual_seed=torch.manual_seed)

    def __getattr__(self, name: str):
        return getattr(torch, name)


def stream_batches(shards: list, batch: int, epoch: int, transform: Callable,
                   decode: Callable | None = None, seed_all: bool = False) -> Iterable[torch.Tensor]:
    """One epoch of PretrainStream in this process; `decode` replaces the stream's decoder if given."""
    n = sum(s.samples for s in shards)
    plan = StreamPlan([shards], [n], seed=0)
    segment = Segment.start(epoch, ((0, n),), world=1, workers=1, micro_batch=batch, accum=1)
    with mock.patch.object(stream, "decode_image", decode) if decode else contextlib.nullcontext(), \
            mock.patch.object(stream, "torch", SeedAllBackends()) if seed_all else contextlib.nullcontext():
        for images, _ in PretrainStream(plan, segment, transform):
            yield images


def make_loaders(shards: list, rgb_shards: list, root: Path, size: int,
                 batch: int) -> dict[str, Callable[[int], Iterable]]:
    """name -> epoch -> iterable of batches (uint8 for the names in UINT8_OUT, normalised float otherwise)."""
    fused, tv = pretrain_transform(size, "fused"), pretrain_transform(size, "torchvision")
    previous = previous_transform(size)
    return {
        "authors": lambda e: authors_batches(root, size, batch, e),
        "library": lambda e: stream_batches(shards, batch, e, fused),
        "library+normalise": lambda e: (normalize_batch(x) for x in stream_batches(shards, batch, e, fused)),
        "library_rgb_shards": lambda e: stream_batches(rgb_shards, batch, e, fused),
        "library_torchvision": lambda e: stream_batches(shards, batch, e, tv),
        "library_seeding_all_backends": lambda e: stream_batches(shards, batch, e, fused, seed_all=True),
        "previous_library": lambda e: stream_batches(rgb_shards, batch, e, previous, previous_decode),
    }


def check_fused_geometry(shards: list, size: int, draws: int = 16) -> dict:
    """Mean |fused - torchvision| in gray levels for the same parameters (torchvision's rotate, flips and
    antialiased resized_crop, bilinear), on blurred images so only the geometry counts; on raw speckle
    the two differ by resampling once vs twice (also reported)."""
    samples = read_shard(shards[0])[:draws]
    blurred, raw = [], []
    for i, sample in enumerate(samples):
        image = decode_image(sample)
        p = draw_params(random.Random(i), *image.shape[:2])
        for img, out in ((cv2.GaussianBlur(image, (0, 0), 3), blurred), (image, raw)):
            ref = F.rotate(to_chw(img).float(), p.angle, InterpolationMode.BILINEAR)
            ref = F.horizontal_flip(ref) if p.hflip else ref
            ref = F.vertical_flip(ref) if p.vflip else ref
            ref = F.resized_crop(ref, *p.crop, [size, size], antialias=True)
            out.append((to_chw(fused_warp(img, p, size)).float() - ref).abs().mean().item())
    return {"draws": len(samples), "blurred_mean_abs_diff_max": round(max(blurred), 3),
            "raw_speckle_mean_abs_diff_mean": round(statistics.mean(raw), 3)}


# ---------------------------------------------------------------- measuring


def run_epoch(batches: Iterable[torch.Tensor]) -> dict:
    """Consume one epoch: images, CPU and wall seconds, RSS (MiB) after every batch."""
    rss, images = [rss_mb()], 0
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for x in batches:
        images += x.shape[0]
        rss.append(rss_mb())
    return {"images": images, "cpu_s": cpu_seconds() - cpu0, "wall_s": time.perf_counter() - wall0, "rss": rss}


def summarise(runs: list[dict]) -> dict:
    per_cpu = [r["images"] / r["cpu_s"] for r in runs]
    per_wall = [r["images"] / r["wall_s"] for r in runs]
    last = runs[-1]["rss"]
    return {"images_per_cpu_s": round(statistics.median(per_cpu), 1),
            "images_per_wall_s": round(statistics.median(per_wall), 1),
            "ms_per_image_cpu": round(1000 / statistics.median(per_cpu), 3),
            "images_per_epoch": runs[-1]["images"], "rounds": len(runs),
            "rss_mb_last_epoch": {"start": round(last[0], 1), "middle": round(last[len(last) // 2], 1),
                                  "end": round(last[-1], 1), "max": round(max(last), 1)},
            "rss_mb_end_of_each_epoch": [round(r["rss"][-1], 1) for r in runs]}


def timed(fn: Callable, items: list) -> tuple[float, list]:
    """(CPU ms per item, results) of fn over items."""
    t0 = cpu_seconds()
    out = [fn(x) for x in items]
    return 1000 * (cpu_seconds() - t0) / len(items), out


def timed_once(fn: Callable, per: int) -> float:
    """CPU ms per item of one call covering `per` items (best of 3)."""
    best = math.inf
    for _ in range(3):
        t0 = cpu_seconds()
        fn()
        best = min(best, cpu_seconds() - t0)
    return 1000 * best / per


def library_stages(samples: list[dict], size: int) -> dict:
    """The library's steps (fused warp), and the device-side normalisation, each timed alone."""
    steps, fused = {}, FusedAugment(size)
    steps["decode_cv2"], images = timed(decode_image, samples)
    steps["fused.params"], params = timed(lambda a: fused.params(*a.shape[:2]), images)
    steps["fused.warpAffine"], warped = timed(lambda ap: to_chw(fused_warp(ap[0], ap[1], size)),
                                              list(zip(images, params)))
    steps["stack_uint8"] = timed_once(lambda: stack_images(warped), len(warped))
    batch = stack_images(warped)
    steps["normalize_batch (on the device)"] = timed_once(lambda: normalize_batch(batch), len(warped))
    return steps


def authors_stages(root: Path, size: int, n: int) -> dict:
    steps = {}
    paths = [str(p) for p in sorted((root / "ultrasound").glob("*.png"))[:n]]
    steps["pil_loader"], images = timed(datasets.folder.pil_loader, paths)
    for op in authors_transform(size).transforms:
        steps[f"T.{type(op).__name__}"], images = timed(op, images)
    steps["collate_stack"] = timed_once(lambda: torch.stack(images), len(images))
    return steps


def memory_check(make: Callable[[int], Iterable], epochs: int) -> dict:
    """RSS (MiB) at 0, 25, 50, 75 and 100% of consecutive epochs of one loader, alone in the process."""
    points, peaks = {}, []
    for e in range(epochs):
        rss = run_epoch(make(100 + e))["rss"]
        points[f"epoch{e}"] = [round(rss[round(q * (len(rss) - 1))], 1) for q in (0, 0.25, 0.5, 0.75, 1)]
        peaks.append(round(max(rss), 1))
    return {"rss_mb_at_0_25_50_75_100pct": points, "peak_rss_mb_per_epoch": peaks,
            "peak_growth_mb_last_vs_first_epoch": round(peaks[-1] - peaks[0], 1)}


def stage_breakdown(shards: list, rgb_shards: list, root: Path, size: int, n: int = 256) -> dict:
    """CPU ms per image of each step of each path, timed separately on the same n images."""
    t0 = cpu_seconds()
    samples = [s for shard in shards for s in read_shard(shard)][:n]
    out = {"images": len(samples), "read_shard_tar": 1000 * (cpu_seconds() - t0) / len(samples),
           "library": library_stages(samples, size)}
    rgb = [s for shard in rgb_shards for s in read_shard(shard)][:n]
    out["library_rgb_shards"] = library_stages(rgb, size)
    out["authors"] = authors_stages(root, size, n)
    for k, v in out.items():
        out[k] = {step: round(ms, 3) for step, ms in v.items()} if isinstance(v, dict) else round(v, 3)
    return out


def profile_library(make: Callable[[int], Iterable], top: int = 15) -> list[dict]:
    """cProfile of one library epoch: the functions with the most own time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in make(99):
        pass
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [{"function": f"{Path(file).name}:{line}({name})", "own_s": round(st[2], 3),
             "own_share": round(st[2] / total, 3), "cumulative_s": round(st[3], 3)}
            for (file, line, name), st in rows]


# ---------------------------------------------------------------- epoch-boundary stall


def simulated_store(mbps: float) -> Callable:
    """fetch_bytes as from an object store streaming `mbps` MB/s per GET (the sleep holds no CPU)."""
    def fetch(shard, *args, **kwargs) -> bytes:
        time.sleep(os.path.getsize(shard.url) / (mbps * 1e6))
        return fetch_bytes(shard, *args, **kwargs)
    return fetch


def waits(batches: Iterable, count: int, compute_s: float) -> list[float]:
    """Seconds the consumer waited for each of `count` batches, spending compute_s on each."""
    out, it = [], iter(batches)
    for _ in range(count):
        t0 = time.perf_counter()
        next(it)
        out.append(time.perf_counter() - t0)
        time.sleep(compute_s)
    return out


def stall_runs(shards: list, args) -> tuple[dict[str, list[float]], int]:
    """Per variant, the wait for every batch of its runs (--stall-epochs epochs each); batches per epoch."""
    n, size, workers = sum(s.samples for s in shards), DEFAULT_IMAGE_SIZE, args.stall_workers
    stream_plan = StreamPlan([shards], [n], seed=0, shuffle_buffer=args.stall_buffer)
    segment = lambda e: Segment.start(e, ((0, n),), 1, workers, args.batch, 1)  # noqa: E731
    per_epoch = segment(0).micro_batches

    def loader(stream_: PretrainStream) -> DataLoader:
        return DataLoader(stream_, batch_size=None, num_workers=workers, worker_init_fn=worker_init, prefetch_factor=2)

    def before() -> list[float]:  # a loader per epoch, no read-ahead
        return [w for e in range(args.stall_epochs) for w in waits(loader(PretrainStream(
            stream_plan, segment(e), pretrain_transform(size), read_ahead=False)), per_epoch, args.compute_ms / 1000)]

    def after() -> list[float]:  # one loader, epoch after epoch, windows read ahead
        return waits(loader(PretrainStream(stream_plan, segment(0), pretrain_transform(size), accum=1)),
                     per_epoch * args.stall_epochs, args.compute_ms / 1000)

    runs: dict[str, list[float]] = {"before": [], "after": []}
    with mock.patch.object(windows, "fetch_bytes", simulated_store(args.read_mbps)):
        for r in range(args.stall_rounds):
            for name, run in (("before", before), ("after", after))[::1 if r % 2 == 0 else -1]:
                runs[name] += run()
                print(f"[loader] stall round {r} {name} done", file=sys.stderr, flush=True)
    return runs, per_epoch


def stall_report(shards: list, shards_dir: Path, args) -> dict:
    runs, per_epoch = stall_runs(shards, args)
    window_bytes = args.stall_buffer * shard_bytes_per_image(shards_dir)

    def summary(w: list[float]) -> dict:
        epochs = [w[i:i + per_epoch] for i in range(0, len(w), per_epoch)]
        first_of_run = [e[0] for i, e in enumerate(epochs) if i % args.stall_epochs == 0]
        boundary = [e[0] for i, e in enumerate(epochs) if i % args.stall_epochs]
        inside = [x for e in epochs for x in e[1:]]
        return {"first_batch_of_a_run_s": [round(x, 3) for x in first_of_run],
                "epoch_boundary_wait_s": {"median": round(statistics.median(boundary), 3),
                                          "max": round(max(boundary), 3), "each": [round(x, 3) for x in boundary]},
                "wait_inside_epochs_ms": {"median": round(1000 * statistics.median(inside), 1),
                                          "p90": round(1000 * sorted(inside)[int(0.9 * len(inside))], 1),
                                          "max": round(1000 * max(inside), 1)},
                "total_wait_s": round(sum(w), 2)}

    return {"settings": {"workers": args.stall_workers, "batch": args.batch, "batches_per_epoch": per_epoch,
                         "epochs_per_run": args.stall_epochs, "rounds": args.stall_rounds,
                         "shuffle_buffer": args.stall_buffer, "window_mb": round(window_bytes / 1e6, 1),
                         "simulated_read_mb_per_s": args.read_mbps,
                         "window_read_s": round(window_bytes / (args.read_mbps * 1e6), 2),
                         "consumer_compute_ms_per_batch": args.compute_ms},
            **{name: summary(w) for name, w in runs.items()}}


# ---------------------------------------------------------------- main


def prepare_data(args, work: Path) -> tuple[Path, Path, Path]:
    """(shard build, ImageFolder root with the same images as RGB PNGs, RGB-PNG shards of the same images)."""
    if args.shards:
        shards_dir = Path(args.shards)
        root = unpack_shards(shards_dir, work / "imagefolder")
    else:
        shards_dir, root = synthetic_shards(work, args.images, args.shard_size)
    pngs = sorted((root / "ultrasound").glob("*.png"))
    return shards_dir, root, pack_shards(pngs, work / "shards_rgb_repacked", args.shard_size, storage="rgb")


def shard_bytes_per_image(shards_dir: Path) -> float:
    manifest = json.loads((shards_dir / "manifest.json").read_text())
    return sum(s["bytes"] for s in manifest["shards"]) / manifest["total_samples"]


def measure(loaders: dict[str, Callable[[int], Iterable]], rounds: int) -> dict[str, dict]:
    """Interleaved epochs of every loader, summarised per loader."""
    runs: dict[str, list[dict]] = {name: [] for name in loaders}
    for r in range(rounds):
        for name, make in loaders.items():
            run = run_epoch(make(r))
            runs[name].append(run)
            print(f"[loader] round {r} {name}: {run['images'] / run['cpu_s']:.1f} img/CPU-s",
                  file=sys.stderr, flush=True)
    return {name: summarise(rs) for name, rs in runs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", help="a shard build (directory with manifest.json); default: synthetic scans")
    ap.add_argument("--images", type=int, default=1024, help="synthetic images (default 1024)")
    ap.add_argument("--shard-size", type=int, default=128, help="images per synthetic/RGB shard (default 128)")
    ap.add_argument("--batch", type=int, default=64, help="batch size (default 64, the paper's)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved epochs per loader (default 3)")
    ap.add_argument("--work", help="where to keep the data (default: a temporary directory)")
    ap.add_argument("--memory-epochs", type=int, default=3, help="library epochs of the RSS check (default 3)")
    ap.add_argument("--profile", action="store_true", help="add a cProfile of one library epoch")
    ap.add_argument("--stall-only", action="store_true", help="only the epoch-boundary stall")
    ap.add_argument("--stall-epochs", type=int, default=3, help="epochs per stall run (default 3)")
    ap.add_argument("--stall-rounds", type=int, default=2, help="stall runs per variant, alternating (default 2)")
    ap.add_argument("--stall-workers", type=int, default=2, help="DataLoader workers in the stall runs (default 2)")
    ap.add_argument("--stall-buffer", type=int, default=256, help="shuffle_buffer of the stall runs (default 256)")
    ap.add_argument("--read-mbps", type=float, default=20.0, help="simulated object-store MB/s per read (default 20)")
    ap.add_argument("--compute-ms", type=float, default=150.0, help="consumer ms per batch (default 150)")
    args = ap.parse_args(argv)
    single_core()
    size = DEFAULT_IMAGE_SIZE
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        shards_dir, root, rgb_dir = prepare_data(args, work)
        shards, rgb_shards = resolve(str(shards_dir)), resolve(str(rgb_dir))
        if args.stall_only:
            report = {"benchmark": "loader: epoch-boundary stall", "machine": machine_info(),
                      "stall": stall_report(shards, shards_dir, args),
                      "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
            print(json.dumps(report, indent=1))
            return 0
        print(f"[loader] {sum(s.samples for s in shards)} images in {len(shards)} shards; {args.rounds} "
              "interleaved rounds", file=sys.stderr, flush=True)
        machine = machine_info()
        results = measure(make_loaders(shards, rgb_shards, root, size, args.batch), args.rounds)
        base = results["authors"]["images_per_cpu_s"]
        ratio = {name: round(res["images_per_cpu_s"] / base, 2) for name, res in results.items() if name != "authors"}
        report = {
            "benchmark": "loader: decode + augment, images per CPU-second, 1 thread",
            "machine": {**machine, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
            "data": {"shards": str(shards_dir) if args.shards else "synthetic (usfmae.testing.synthetic, no overlays)",
                     "images": sum(s.samples for s in shards), "shard_files": len(shards), "image_size": size,
                     "shard_bytes_per_image": round(shard_bytes_per_image(shards_dir)),
                     "rgb_shard_bytes_per_image": round(shard_bytes_per_image(rgb_dir))},
            "batch_size": args.batch,
            "uint8_output": list(UINT8_OUT),
            "loaders": results,
            "ratio_vs_authors": ratio,
            "target_ratio": TARGET_RATIO,
            "library_meets_target": ratio["library"] >= TARGET_RATIO,
            "library_normalised_on_cpu_meets_target": ratio["library+normalise"] >= TARGET_RATIO,
            "fused_geometry_check": check_fused_geometry(shards, size),
            "stages_cpu_ms_per_image": stage_breakdown(shards, rgb_shards, root, size),
        }
        library = lambda e: stream_batches(shards, args.batch, e, pretrain_transform(size))  # noqa: E731
        if args.memory_epochs:
            report["library_memory"] = memory_check(library, args.memory_epochs)
        if args.profile:
            report["library_profile"] = profile_library(library)
        report["stall"] = stall_report(shards, shards_dir, args)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
