"""Exact duplicates build-wide: one copy of each stored picture, wherever its copies landed.

    drop_duplicates_across_shards(results, sink)   # in finish_build, after every shard is done

A shard task keeps the first copy of a key within its shard (a repeated key would merge two WebDataset
samples) and names the others. Copies in different shards are only visible once every shard is done, so
this pass walks the shards in name order and drops from a later shard every key an earlier shard wrote:
that tar is rewritten without those members (tar.py makes the rewrite byte-identical to a tar that never
held them), then its done-marker. Each dropped sample is named in `duplicates` with the copy that stays.

Idempotent and resumable: decisions come from `written` (the task's original list), never from the tar
as it is now; a shard whose marker already records the same `dropped` keys is left alone; a kill between
the rewritten tar and its new marker leaves a marker whose size no longer matches, so the rerun rebuilds
that shard and this pass drops the same keys again. Result: byte-identical to an uninterrupted build.
"""

from __future__ import annotations

import tarfile
from contextlib import closing
from pathlib import Path

from .sink import LocalSink, S3Sink, temp_name
from .tar import SampleTar
from .writer import ShardResult, file_sha256, occurrence, write_marker

Drop = tuple[list, dict]  # (row of `written`, the occurrence kept)


def plan_drops(results: list[ShardResult]) -> dict[str, list[Drop]]:
    """shard name -> the written rows whose key a shard earlier in name order wrote, with that copy."""
    kept: dict[str, dict] = {}
    drops: dict[str, list[Drop]] = {}
    for result in sorted(results, key=lambda r: r.name):
        for row in result.written:
            key, position, index = row
            read = result.reads[position]
            if key in kept:
                drops.setdefault(result.name, []).append((row, kept[key]))
            else:
                kept[key] = occurrence(read["dataset"], read["input"], index)
    return drops


def rewrite_without(sink: LocalSink | S3Sink, name: str, keys: set[str]) -> tuple[int, str]:
    """Replace tar `name` on the sink by a copy without the samples `keys`; returns (bytes, sha256)."""
    tmp = sink.staging_dir() / Path(temp_name(f"dedup-{name}")).name
    try:
        with closing(sink.open_read(name)) as source, tmp.open("wb") as f, SampleTar(f) as out:
            current, files = None, {}
            with tarfile.open(fileobj=source, mode="r|") as tar:
                for member in tar:
                    key, _, ext = member.name.partition(".")
                    if key != current and current is not None and current not in keys:
                        out.write(current, files)
                    if key != current:
                        current, files = key, {}
                    files[ext] = tar.extractfile(member).read()
            if current is not None and current not in keys:
                out.write(current, files)
        size, digest = tmp.stat().st_size, file_sha256(tmp)
        sink.put_file(tmp, name)
    finally:
        tmp.unlink(missing_ok=True)
    return size, digest


def apply_drops(result: ShardResult, drops: list[Drop], sink: LocalSink | S3Sink) -> None:
    """Remove `drops` from shard `result` (tar, counts, marker) unless its marker says it is done already."""
    keys = [row[0] for row, _ in drops]
    if result.dropped == keys:
        return
    if result.dropped:
        raise RuntimeError(f"{result.name}: its marker records other dropped duplicates than this build decides; "
                           f"delete {result.name} and _parts/{result.name}.json and rerun to rebuild it")
    result.bytes, result.sha256 = rewrite_without(sink, result.name, set(keys))
    for (key, position, index), kept in drops:
        read = result.reads[position]
        read["samples"] -= 1
        counts = result.datasets[read["dataset"]]
        counts.samples -= 1
        counts.duplicates += 1
        result.samples -= 1
        result.duplicates.append({**occurrence(read["dataset"], read["input"], index), "duplicate_of": kept})
    result.dropped = keys
    write_marker(sink, result)


def drop_duplicates_across_shards(results: list[ShardResult], sink: LocalSink | S3Sink) -> int:
    """The whole pass (module docstring); returns the number of samples dropped by this call."""
    by_name = {r.name: r for r in results}
    dropped = 0
    for name, drops in sorted(plan_drops(results).items()):
        before = by_name[name].samples
        apply_drops(by_name[name], drops, sink)
        dropped += before - by_name[name].samples
    return dropped
