"""Build WebDataset shards on a Ray cluster: read every input kind, clean, deduplicate, resize, tar.

    # a configured build (datasets, cleaning, output...) submitted to a running cluster
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python preprocessing/build_shards.py --config configs/build_example.yaml
    # the simple case: one folder, one dataset (starts a local Ray when no cluster is given)
    python preprocessing/build_shards.py --input data/echo --dataset EchoNet-Dynamic \
        --output s3://bucket/shards/echo --shard-size 1000

The driver plans (inputs -> shards, see usfmae/shards/plan.py), skips shards a previous run
finished, runs one Ray task per remaining shard, then writes report.json and manifest.json.
Exit codes: 0 done, 1 shard tasks failed (rerun to resume), 2 bad arguments or config,
3 done but images of a --check-leaks folder are in the build.
"""

import argparse
import os
import sys
import time

import ray

from usfmae.config import ConfigError, flag_overrides
from usfmae.data.s3 import S3Error
from usfmae.io import ReadError
from usfmae.registry import DownstreamDatasetError
from usfmae.shards.build import BuildPlan, finish_build, prepare_build
from usfmae.shards.config import BuildConfig, load_build_config
from usfmae.shards.progress import Progress
from usfmae.shards.writer import ShardResult, named_inputs, write_shard


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="build YAML: a path or a packaged name (see configs/build_example.yaml)")
    src.add_argument("--input", help="one input folder (every supported kind, searched recursively)")
    ap.add_argument("--dataset", default="unnamed", help="dataset name of --input (checked against the registry)")
    ap.add_argument("--anatomy", default=None, help="anatomy of --input (default: the registry's)")
    ap.add_argument("--output", help="local folder or s3://bucket/prefix (required with --input)")
    ap.add_argument("--shard-size", type=int, help="target frames per shard (default 1000)")
    ap.add_argument("--image-size", type=int, help="stored image side (default 224)")
    ap.add_argument("--prefix", help="shard names {prefix}-000000.tar (default 'shard')")
    ap.add_argument("--seed", type=int, help="seed of the input-to-shard shuffle (default 0)")
    ap.add_argument("--no-clean", action="store_true", help="store frames without annotation removal")
    ap.add_argument("--no-dedup", action="store_true", help="keep near-duplicate cine frames")
    ap.add_argument("--force-downstream", action="store_true",
                    help="allow downstream evaluation datasets (BUS-BRA, MMOTU-2D, GIST514-DB) in the build")
    ap.add_argument("--check-leaks", action="append", default=[], metavar="EVAL_DIR",
                    help="after the build, report images of EVAL_DIR present in it (content hash); repeatable")
    ap.add_argument("--endpoint-url", help="S3-compatible endpoint (default $USFMAE_S3_ENDPOINT_URL, else AWS)")
    ap.add_argument("--ray-address", help="Ray cluster to join (default $RAY_ADDRESS, else start a local one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted config override, e.g. --set cleaning.mode=reference; repeatable")
    return ap.parse_args(argv)


def build_config(args: argparse.Namespace) -> BuildConfig:
    """The config file (or the --input shorthand), then --set overrides, then the explicit options."""
    base: dict = {}
    if args.input:
        if not args.output:
            raise ConfigError("--output is required with --input")
        base["datasets"] = [{"name": args.dataset, "path": args.input, "anatomy": args.anatomy}]
    # the explicit options win over --set; --output among them lets a config file leave `output` to the command line
    sets = flag_overrides(args.set, {
        "output": args.output, "shard_size": args.shard_size, "image_size": args.image_size, "prefix": args.prefix,
        "seed": args.seed, "s3.endpoint_url": args.endpoint_url,
        "force_downstream": True if args.force_downstream else None,
        "cleaning.enabled": False if args.no_clean else None,
        "dedup.near_duplicates": False if args.no_dedup else None})
    data = load_build_config(args.config, sets, base=base).model_dump()
    data["check_leaks"] = data["check_leaks"] + list(args.check_leaks)
    try:
        return BuildConfig.model_validate(data)
    except ValueError as err:
        raise ConfigError(f"invalid build options: {err}") from None


def connect_ray(address: str | None) -> bool:
    """Join a cluster (argument, else RAY_ADDRESS as set by `ray job submit`) or start a private local
    one bound to loopback. Returns True when this call started Ray (and so should shut it down)."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=True)
    return True


def ray_map(fn, chunks):
    """Header estimates in parallel on the cluster (only worth it for more than one chunk)."""
    if len(chunks) <= 1:
        return map(fn, chunks)
    call = ray.remote(num_cpus=1)(lambda f, chunk: f(chunk))
    return ray.get([call.remote(fn, chunk) for chunk in chunks])


def write_shard_on_node(spec, settings, sink) -> ShardResult:
    """write_shard in a Ray task, recording the address of the node it runs on (report.json 'nodes')."""
    return write_shard(spec, settings, sink, node=ray.util.get_node_ip_address())


def run_shard_tasks(plan: BuildPlan) -> tuple[list[ShardResult], list[str]]:
    """One task per pending shard; prints a progress line per finished shard. Returns (results, failures)."""
    task_cfg = plan.cfg.task
    task = ray.remote(write_shard_on_node).options(num_cpus=task_cfg.num_cpus, max_retries=task_cfg.max_retries,
                                           memory=task_cfg.memory_mb * 1024 * 1024 or None)
    refs = {task.remote(spec, plan.settings, plan.sink): spec for spec in plan.pending}
    progress = Progress(len(plan.specs), list(plan.finished.values()))
    print(progress.line(), flush=True)
    results, failures, waiting = [], [], list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        try:
            results.append(ray.get(done[0]))
            progress.update(results[-1])
        except ray.exceptions.RayError as err:  # the task raised (a ShardError), or its worker died
            spec = refs[done[0]]
            last = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            failures.append(f"{spec.name}: {last} [inputs: {named_inputs(spec)}]")
            print(f"[build] shard {spec.name} failed: {last}\n  its {len(spec.inputs)} input(s): "
                  f"{named_inputs(spec)}", file=sys.stderr, flush=True)
    return results, failures


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    started_ray = connect_ray(args.ray_address)
    try:
        start = time.perf_counter()
        try:
            plan = prepare_build(cfg, ray_map)
        except (DownstreamDatasetError, FileNotFoundError, NotADirectoryError, ValueError, S3Error) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"[build] {len(plan.inputs)} inputs -> {len(plan.specs)} shards of ~{cfg.shard_size} frames "
              f"-> {plan.sink.url} ({len(plan.finished)} already done; {len(plan.skipped)} path(s) skipped, "
              "listed in report.json)", flush=True)
        results, failures = run_shard_tasks(plan)
        if failures:
            print(f"error: {len(failures)} shard task(s) failed; rerun the same command to resume:\n  "
                  + "\n  ".join(failures), file=sys.stderr)
            return 1
        try:
            report = finish_build(plan, results, time.perf_counter() - start)
        except ReadError as err:  # an unreadable file in a --check-leaks folder; the shards are all done
            print(f"error: leak check failed: {err}", file=sys.stderr)
            return 2
        print(f"[build] done: {report['samples']} samples in {len(plan.specs)} shards from "
              f"{len(report['read'])} inputs read, {len(report['rejected'])} rejected, {len(report['skipped'])} "
              f"paths skipped, {report['near_duplicates']} near-duplicate frames and {report['duplicates']} "
              f"exact duplicates dropped -> {plan.sink.url}/manifest.json", flush=True)
        if report.get("leaks"):
            print(f"error: {len(report['leaks'])} image(s) of {cfg.check_leaks} are in the build "
                  "(see report.json 'leaks')", file=sys.stderr)
            return 3
        return 0
    finally:
        if started_ray:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
