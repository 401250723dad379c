"""A build's steps around the shard tasks, without Ray (the Ray driver is preprocessing/build_shards.py).

    plan = prepare_build(cfg)               # registry guard, inputs, estimates, plan, finished shards
    results = [write_shard(s, plan.settings, plan.sink) for s in plan.pending]   # or Ray tasks
    report = finish_build(plan, results, seconds)   # duplicates across shards, stale tars, leak check,
                                                    # report.json, then manifest.json

`run_local(cfg)` is that loop in one process (benchmarks and tests use it as the no-Ray baseline).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from usfmae.registry import Registry, check_pretrain_allowed, load_registry

from .config import BuildConfig, resolve_salt
from .dedup import drop_duplicates_across_shards
from .estimate import estimate_frames
from .manifest import MANIFEST_NAME as MANIFEST
from .plan import InputRef, ShardSpec, gather_inputs, plan_shards
from .progress import Progress
from .report import check_accounting, check_leaks, make_manifest, make_report, to_json
from .samples import FrameSettings
from .sink import LocalSink, S3Sink, open_sink
from .writer import PARTS, ShardResult, marker_name, read_finished, write_shard

log = logging.getLogger(__name__)

UNSPECIFIED_ANATOMY = "unspecified"
ESTIMATE_CHUNK = 2000  # inputs per estimate job: header reads are cheap, chunks keep the task count low

# map_chunks(fn, chunks) -> [fn(chunk) for chunk in chunks], possibly in parallel (Ray in the driver);
# a chunk is a list of (path, input folder) pairs.
Chunk = list[tuple[str, str]]
ChunkMap = Callable[[Callable[[Chunk], list[int]], list[Chunk]], Iterable[list[int]]]


@dataclass
class BuildPlan:
    cfg: BuildConfig
    sink: LocalSink | S3Sink
    settings: FrameSettings
    inputs: list[InputRef]
    specs: list[ShardSpec]
    finished: dict[str, ShardResult]  # shard name -> result of an earlier run (skipped now)
    salt_ephemeral: bool
    skipped: list[dict] = field(default_factory=list)  # paths left out by the folder walk, with the reason

    @property
    def pending(self) -> list[ShardSpec]:
        return [s for s in self.specs if s.name not in self.finished]


def resolve_anatomies(cfg: BuildConfig, registry: Registry) -> dict[str, str]:
    """Anatomy per dataset: the build config's, else the registry's, else 'unspecified'."""
    anatomies = {}
    for source in cfg.datasets:
        entry = registry.get(source.name)
        anatomies[source.name] = source.anatomy or (entry.anatomy if entry else UNSPECIFIED_ANATOMY)
    return anatomies


class EstimateChunk:
    """Picklable `(path, root) pairs -> frame estimates` for one chunk (a Ray task or a plain call)."""

    def __init__(self, cfg: BuildConfig):
        self.reader = cfg.reader

    def __call__(self, items: Chunk) -> list[int]:
        return [estimate_frames(path, self.reader, root) for path, root in items]


def estimate_all(inputs: list[InputRef], cfg: BuildConfig, map_chunks: ChunkMap | None = None) -> list[int]:
    """Frame estimates for every input, in input order."""
    items = [(str(ref.path), ref.root) for ref in inputs]
    chunks = [items[i:i + ESTIMATE_CHUNK] for i in range(0, len(items), ESTIMATE_CHUNK)]
    mapper = map_chunks or (lambda fn, items: map(fn, items))
    return [n for part in mapper(EstimateChunk(cfg), chunks) for n in part]


def prepare_build(cfg: BuildConfig, map_chunks: ChunkMap | None = None) -> BuildPlan:
    """Everything before the shard tasks. Raises DownstreamDatasetError for evaluation datasets
    (unless force_downstream), FileNotFoundError for missing folders, ValueError for no inputs."""
    registry = load_registry(cfg.registry)
    check_pretrain_allowed([d.name for d in cfg.datasets], force=cfg.force_downstream, registry=registry)
    inputs, skipped = gather_inputs(cfg.datasets, resolve_anatomies(cfg, registry))
    if not inputs:
        detail = f" ({len(skipped)} path(s) skipped, e.g. {skipped[0]['path']}: {skipped[0]['reason']})" \
            if skipped else ""
        raise ValueError(f"no input files under {[d.path for d in cfg.datasets]}{detail}")
    salt, ephemeral = resolve_salt(cfg)
    if ephemeral:
        log.warning("no salt configured (salt / $USFMAE_SOURCE_SALT): using a random one for this run; "
                    "source hashes and so shard bytes will differ between runs")
    settings = FrameSettings(cfg.image_size, cfg.cleaning, cfg.reader, cfg.dedup, salt, cfg.cleaning_batch)
    specs = plan_shards(inputs, estimate_all(inputs, cfg, map_chunks), cfg.shard_size, cfg.prefix, cfg.seed,
                        settings.digest())
    sink = open_sink(cfg.output, cfg.s3)
    sink.prepare()
    plan = BuildPlan(cfg, sink, settings, inputs, specs, read_finished(sink, specs), ephemeral, skipped)
    if plan.pending:
        sink.delete(MANIFEST)  # a manifest is only present while it describes every shard in place
    return plan


def remove_stale_shards(plan: BuildPlan) -> tuple[list[str], list[str]]:
    """Tars of an earlier plan in the output (named like this build's shards but not in its plan) are
    removed with their done-markers, so no glob of the folder reads them. Other .tar files are left
    alone and reported. Returns (removed, left)."""
    ours = re.compile(rf"^{re.escape(plan.cfg.prefix)}-\d{{6}}\.tar$")
    wanted = {s.name for s in plan.specs}
    removed, left = [], []
    for name in plan.sink.list():
        if not name.endswith(".tar") or name in wanted:
            continue
        if ours.match(name):
            plan.sink.delete(name)
            removed.append(name)
        else:
            left.append(name)
    for marker in plan.sink.list(PARTS):
        name = marker[len(PARTS) + 1:].removesuffix(".json")
        if ours.match(name) and name not in wanted:
            plan.sink.delete(marker_name(name))
    return removed, left


def finish_build(plan: BuildPlan, new_results: list[ShardResult], seconds: float) -> dict:
    """Drop exact duplicates across shards, remove stale tars, check leaks, write report.json, then
    manifest.json (last: its presence means the build is complete)."""
    results = list(plan.finished.values()) + list(new_results)
    missing = {s.name for s in plan.specs} - {r.name for r in results}
    if missing:
        raise RuntimeError(f"build incomplete, shards without results: {sorted(missing)[:5]}")
    drop_duplicates_across_shards(results, plan.sink)
    stale, unlisted = remove_stale_shards(plan)
    if stale or unlisted:
        log.warning("output %s: removed %d stale shard(s) of an earlier plan; left %d other .tar file(s) (not in "
                    "the manifest)", plan.sink.url, len(stale), len(unlisted))
    leaks = check_leaks(plan.cfg.check_leaks, results, plan.cfg.reader) if plan.cfg.check_leaks else None
    report = make_report(results, len(plan.inputs), set(plan.finished), seconds, plan.salt_ephemeral, leaks,
                         skipped=plan.skipped, stale={"removed": stale, "left": unlisted})
    check_accounting(report)
    plan.sink.put_bytes(to_json(report), "report.json")
    plan.sink.put_bytes(to_json(make_manifest(results, plan.cfg.image_size)), MANIFEST)
    return report


def run_local(cfg: BuildConfig, progress: bool = False) -> dict:
    """The whole build in this process, shard after shard (no Ray)."""
    start = time.perf_counter()
    plan = prepare_build(cfg)
    bar = Progress(len(plan.specs), list(plan.finished.values())) if progress else None
    results = []
    for spec in plan.pending:
        results.append(write_shard(spec, plan.settings, plan.sink))
        if bar:
            bar.update(results[-1])
    return finish_build(plan, results, time.perf_counter() - start)
