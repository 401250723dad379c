"""Shard builder throughput: Ray with 1 and 2 worker CPUs vs a plain single-process loop, same inputs.

    python benchmarks/build.py [--images 256] [--size 256] [--shard-size 16] [--repeats 3] [--no-clean]

Every variant runs the same work per image (read, clean, resize to 224, PNG, tar, sha256, done-marker)
on a fresh output folder. Ray variants start a private local cluster with `num_cpus` workers,
warm it up on a tiny build (worker start-up and imports are paid once per cluster, not per shard),
then time the build from planning to manifest (fastest of --repeats, into fresh folders). Prints JSON.
"""

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import ray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "preprocessing"))

import build_shards  # noqa: E402
from usfmae.shards.build import finish_build, prepare_build, run_local  # noqa: E402
from usfmae.shards.config import BuildConfig  # noqa: E402
from usfmae.testing.corpus import write_images  # noqa: E402


def config(inputs: Path, output: Path, args: argparse.Namespace) -> BuildConfig:
    return BuildConfig.model_validate({
        "datasets": [{"name": "bench", "path": str(inputs)}], "output": str(output), "salt": "bench",
        "shard_size": args.shard_size, "cleaning": {"enabled": not args.no_clean}})


def ray_build(cfg: BuildConfig) -> dict:
    """Plan, one task per shard, report + manifest: what build_shards.py does once connected."""
    start = time.perf_counter()
    plan = prepare_build(cfg, build_shards.ray_map)
    with redirect_stdout(io.StringIO()):  # progress lines
        results, failures = build_shards.run_shard_tasks(plan)
    if failures:
        raise RuntimeError(failures)
    return finish_build(plan, results, time.perf_counter() - start)


def measure(reports: list[dict]) -> dict:
    """The fastest of the repeats (least disturbed by other load on the machine), plus all timings."""
    best = min(reports, key=lambda r: r["seconds"])
    return {"seconds": best["seconds"], "images": best["samples"],
            "images_per_s": round(best["samples"] / best["seconds"], 2),
            "cleaning_seconds": best["cleaning_seconds"], "all_seconds": [r["seconds"] for r in reports]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256, help="synthetic scans in the corpus")
    ap.add_argument("--size", type=int, default=256, help="their side, pixels")
    ap.add_argument("--shard-size", type=int, default=16, help="images per shard (one Ray task each)")
    ap.add_argument("--no-clean", action="store_true", help="measure without annotation removal")
    ap.add_argument("--repeats", type=int, default=3, help="timed builds per variant (the fastest is reported)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_images(tmp / "in", args.images, args.size, seed=1)
        write_images(tmp / "warm", 4, 64, seed=2)
        result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                              "platform": platform.platform(),
                              "load_average_1min_at_start": round(os.getloadavg()[0], 2)},
                  "inputs": {"images": args.images, "size": args.size, "shard_size": args.shard_size,
                             "cleaning": not args.no_clean, "repeats": args.repeats}}
        run_local(config(tmp / "warm", tmp / "warm_plain", args))  # imports and OCR start-up, like a warm worker
        result["plain_loop"] = measure([run_local(config(tmp / "in", tmp / f"plain{i}", args))
                                        for i in range(args.repeats)])
        for cpus in (1, 2):
            ray.init(address="local", num_cpus=cpus, _node_ip_address="127.0.0.1", include_dashboard=False,
                     log_to_driver=False)
            try:
                # Warm-up: one shard per worker, so every worker has started and imported before timing.
                warm = config(tmp / "warm", tmp / f"warm_ray{cpus}", args).model_copy(update={"shard_size": 2})
                ray_build(warm)
                result[f"ray_{cpus}_cpu"] = measure([ray_build(config(tmp / "in", tmp / f"ray{cpus}_{i}", args))
                                                     for i in range(args.repeats)])
            finally:
                ray.shutdown()
        one, two = result["ray_1_cpu"]["images_per_s"], result["ray_2_cpu"]["images_per_s"]
        result["scaling_2_vs_1"] = round(two / one, 2)
        result["ray_2_vs_plain"] = round(two / result["plain_loop"]["images_per_s"], 2)
        result["machine"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
