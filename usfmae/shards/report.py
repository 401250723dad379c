"""The two files a finished build leaves beside its shards.

manifest.json (what loaders read, via usfmae.data.sources.resolve; deterministic for a given plan): see
    usfmae.shards.manifest.ShardManifest.
report.json (for people; holds relative input paths, so keep it with the build, not the model):
    inputs_seen        every file entry found under the dataset folders; inputs_seen = len(read) + len(rejected)
    read               [{"dataset", "input", "samples", "frames", "near_duplicates"}]: samples stored from it
    rejected           [{"dataset", "input", "reason"}]: not read at all, with a readable reason
    skipped            [{"dataset", "path", "reason"}]: not inputs (hidden, unlistable folders, links to
                       folders, over-long paths, MetaImage data files read through their header)
    duplicate_samples  [{"dataset", "input", "index", "duplicate_of": {"dataset", "input", "index"}}]: exact
                       repeats of a stored picture, dropped build-wide (the copy kept is named)
    samples, per_dataset counts, frames_read, near_duplicates (cine frames), duplicates (count),
    shards built/resumed, stale_shards (removed tars of an earlier plan, other .tar files left), leaks
    (if checked), timings.
    nodes              {node address: [shard names]}: where each shard was written (resumed ones by the run that
                       wrote them; "" for single-process builds)
"""

from __future__ import annotations

import json
from dataclasses import asdict

from usfmae.io import ReadError, ReaderConfig
from usfmae.registry import find_leaks

from .manifest import ShardManifest
from .writer import DatasetCounts, ShardResult


def dataset_totals(results: list[ShardResult]) -> dict[str, DatasetCounts]:
    """Per-dataset counts summed over shards, datasets sorted by name."""
    totals: dict[str, DatasetCounts] = {}
    for result in results:
        for name, counts in result.datasets.items():
            total = totals.setdefault(name, DatasetCounts())
            for key, value in asdict(counts).items():
                setattr(total, key, getattr(total, key) + value)
    return dict(sorted(totals.items()))


def shards_by_node(results: list[ShardResult]) -> dict[str, list[str]]:
    nodes: dict[str, list[str]] = {}
    for result in sorted(results, key=lambda r: r.name):
        nodes.setdefault(result.node, []).append(result.name)
    return dict(sorted(nodes.items()))


def make_manifest(results: list[ShardResult], image_size: int) -> dict:
    ordered = sorted(results, key=lambda r: r.name)
    return ShardManifest.build([r.manifest_entry() for r in ordered], image_size=image_size,
                               datasets={name: c.samples for name, c in dataset_totals(ordered).items()}).to_dict()


def by_input(entry: dict) -> tuple:
    return entry["dataset"], entry.get("input", entry.get("path")), entry.get("index", 0)


def make_report(results: list[ShardResult], inputs_seen: int, resumed: set[str], seconds: float,
                salt_ephemeral: bool, leaks: list[dict] | None = None, skipped: list[dict] | None = None,
                stale: dict | None = None) -> dict:
    """`resumed`: names of shards finished by an earlier run (their timings are not this run's)."""
    totals = dataset_totals(results)
    built = [r for r in results if r.name not in resumed]
    report = {
        "inputs_seen": inputs_seen,
        "samples": sum(r.samples for r in results),
        "read": sorted((rd for r in results for rd in r.reads), key=by_input),
        "rejected": sorted((rj for r in results for rj in r.rejects), key=by_input),
        "skipped": sorted(skipped or [], key=by_input),
        "duplicate_samples": sorted((d for r in results for d in r.duplicates), key=by_input),
        "per_dataset": {name: asdict(c) for name, c in totals.items()},
        "frames_read": sum(c.frames_read for c in totals.values()),
        "near_duplicates": sum(c.near_duplicates for c in totals.values()),
        "duplicates": sum(c.duplicates for c in totals.values()),
        "shards": {"total": len(results), "built": len(built), "resumed": len(results) - len(built)},
        "nodes": shards_by_node(results),
        "stale_shards": stale or {"removed": [], "left": []},
        "seconds": round(seconds, 3),
        "shard_task_seconds": round(sum(r.seconds for r in built), 3),
        "cleaning_seconds": round(sum(r.cleaning_seconds for r in built), 3),
        "source_salt": "ephemeral (random per run)" if salt_ephemeral else "configured",
    }
    if leaks is not None:
        report["leaks"] = leaks
    return report


def check_accounting(report: dict) -> None:
    """Every input seen is read or rejected (each shard reports each of its inputs once); stored samples add
    up. RuntimeError otherwise (a bug: the report would hide an input)."""
    if len(report["read"]) + len(report["rejected"]) != report["inputs_seen"]:
        raise RuntimeError(f"report accounting broken: {report['inputs_seen']} inputs seen, {len(report['read'])} "
                           f"read + {len(report['rejected'])} rejected")
    if sum(e["samples"] for e in report["read"]) != report["samples"]:
        raise RuntimeError("report accounting broken: samples per input do not add up to the samples stored")


def check_leaks(eval_dirs: list[str], results: list[ShardResult], reader: ReaderConfig) -> list[dict]:
    """Frames of each evaluation folder whose pixels (content key) are among the build's source frames."""
    keys = {k for r in results for k in r.source_keys}
    leaks = []
    for eval_dir in eval_dirs:
        try:
            found = find_leaks(eval_dir, keys, reader)
        except ReadError as err:
            raise ReadError(err.path, f"{err.reason} (while checking {eval_dir} for leaks)") from err
        leaks.extend({"eval_dir": str(eval_dir), "input": leak.relative_path, "index": leak.index, "key": leak.key}
                     for leak in found)
    return leaks


def to_json(data: dict) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode()
