"""Write one shard (the body of one Ray task): samples -> deterministic tar -> sink -> done-marker.

    result = write_shard(spec, settings, sink)

Order of effects, so a kill at any moment is harmless:
  1. the tar is written to a hidden temp file (`.shard-000000.tar.tmp<pid>`), never visible as a shard;
  2. it is moved into place (rename) or uploaded (an S3 object appears only when complete);
  3. only then `_parts/shard-000000.tar.json` (the done-marker, holding this result) is written.
A rerun skips shards whose marker carries the same fingerprint and rewrites any other shard; the
tar bytes are deterministic (tar.py: fixed mtime, owner and mode; fixed sample order), so a rewritten
shard is byte-identical to the one an uninterrupted build makes.

Accounting: every input of the shard ends in `reads` (with its sample count) or `rejects` (with the
reason); every sample written is listed in `written` (key, input, frame) so the build can drop exact
duplicates across shards afterwards (dedup.py). If the shard itself fails (the sink, not an input), the
error names the inputs the shard held.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from usfmae.io.frame import detail

from .assemble import assemble
from .plan import ShardSpec
from .samples import FrameSettings
from .sink import LocalSink, S3Sink, temp_name
from .tar import SampleTar

PARTS = "_parts"
MAX_NAMED_INPUTS = 20  # a failed shard's message names this many of its inputs


@dataclass
class DatasetCounts:
    """Per-dataset tallies of one shard (summed over shards in the report)."""

    inputs: int = 0
    samples: int = 0
    frames_read: int = 0
    near_duplicates: int = 0
    duplicates: int = 0
    rejected: int = 0


@dataclass
class ShardResult:
    """What a shard task reports back; also the content of its done-marker.

    samples, bytes and sha256 describe the tar as it is now on the sink (after the build-wide duplicate
    pass removed `dropped` keys from it); `written` stays as the task wrote it, so that pass can be
    repeated and always reaches the same decision.
    """

    name: str
    samples: int
    bytes: int
    sha256: str
    fingerprint: str = ""
    rejects: list[dict] = field(default_factory=list)  # {"dataset", "input" (relative path), "reason"}
    reads: list[dict] = field(default_factory=list)  # {"dataset", "input", "samples", "frames", "near_duplicates"}
    written: list[list] = field(default_factory=list)  # [key, position in `reads`, frame index] per sample, tar order
    duplicates: list[dict] = field(default_factory=list)  # {"dataset", "input", "index", "duplicate_of": {...}}
    dropped: list[str] = field(default_factory=list)  # keys removed by the build-wide duplicate pass
    datasets: dict[str, DatasetCounts] = field(default_factory=dict)
    source_keys: list[str] = field(default_factory=list)  # content keys of source frames (leak checks)
    seconds: float = 0.0
    cleaning_seconds: float = 0.0
    node: str = ""  # the address of the node that wrote it (given by the driver's task wrapper; "" without one)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ShardResult:
        datasets = {k: DatasetCounts(**v) for k, v in data.get("datasets", {}).items()}
        return cls(**{**data, "datasets": datasets})

    def manifest_entry(self) -> dict:
        return {"name": self.name, "samples": self.samples, "bytes": self.bytes, "sha256": self.sha256}


def marker_name(shard_name: str) -> str:
    return f"{PARTS}/{shard_name}.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def occurrence(dataset: str, name: str, index: int) -> dict:
    """How reports name one frame of one input."""
    return {"dataset": dataset, "input": name, "index": index}


def write_samples(spec: ShardSpec, settings: FrameSettings, tmp: Path, result: ShardResult) -> None:
    """Stream every input's samples into the tar at `tmp`, filling the counts of `result`."""
    seen: dict[str, dict] = {}  # key -> the occurrence written
    with tmp.open("wb") as f, SampleTar(f) as tar:
        for ref, outcome in assemble(spec.inputs, settings):
            counts = result.datasets.setdefault(ref.dataset, DatasetCounts())
            counts.inputs += 1
            counts.frames_read += outcome.frames_read
            counts.near_duplicates += outcome.near_duplicates
            result.cleaning_seconds += outcome.cleaning_seconds
            if outcome.reject is not None:
                counts.rejected += 1
                result.rejects.append({"dataset": ref.dataset, "input": ref.name, "reason": outcome.reject})
                continue
            read = {"dataset": ref.dataset, "input": ref.name, "samples": 0, "frames": outcome.frames_read,
                    "near_duplicates": outcome.near_duplicates}
            result.reads.append(read)
            for sample in outcome.samples:
                here = occurrence(ref.dataset, ref.name, sample.index)
                if sample.key in seen:  # same stored pixels: a repeated key would merge two samples
                    counts.duplicates += 1
                    result.duplicates.append({**here, "duplicate_of": seen[sample.key]})
                    continue
                seen[sample.key] = here
                tar.write(sample.key, {"png": sample.png, "json": sample.meta})
                result.written.append([sample.key, len(result.reads) - 1, sample.index])
                result.source_keys.append(sample.source_key)
                counts.samples += 1
                read["samples"] += 1
                result.samples += 1


class ShardError(RuntimeError):
    """A shard could not be written (sink, disk, a bug); the message names the shard and its inputs."""


def named_inputs(spec: ShardSpec) -> str:
    """'a.png, b.dcm and 3 more': the inputs of a shard, for failure messages."""
    names = [ref.name for ref in spec.inputs]
    more = len(names) - MAX_NAMED_INPUTS
    return ", ".join(names[:MAX_NAMED_INPUTS]) + (f" and {more} more" if more > 0 else "")


def shard_failure(spec: ShardSpec, err: BaseException) -> str:
    return (f"shard {spec.name} failed ({type(err).__name__}: {detail(err)}); its {len(spec.inputs)} input(s): "
            f"{named_inputs(spec)}")


def write_shard(spec: ShardSpec, settings: FrameSettings, sink: LocalSink | S3Sink, node: str = "") -> ShardResult:
    """Build shard `spec` and publish it to `sink`, then its done-marker. Bad inputs are listed in
    `rejects` with their reason; the shard is still written (possibly empty). `node` names where this runs."""
    start = time.perf_counter()
    result = ShardResult(spec.name, 0, 0, "", spec.fingerprint, node=node)
    tmp = sink.staging_dir() / Path(temp_name(spec.name)).name
    try:
        write_samples(spec, settings, tmp, result)
        result.bytes, result.sha256 = tmp.stat().st_size, file_sha256(tmp)
        sink.put_file(tmp, spec.name)
        result.seconds = time.perf_counter() - start
        write_marker(sink, result)
    except Exception as err:
        raise ShardError(shard_failure(spec, err)) from err
    finally:
        tmp.unlink(missing_ok=True)
    return result


def write_marker(sink: LocalSink | S3Sink, result: ShardResult) -> None:
    """The done-marker of `result` (written last: its presence means the tar in place is this result's)."""
    sink.put_bytes(json.dumps(result.to_dict()).encode(), marker_name(result.name))


def read_finished(sink: LocalSink | S3Sink, specs: list[ShardSpec]) -> dict[str, ShardResult]:
    """Results of the shards already done: marker with the same fingerprint and the tar in place with its size.

    Markers of other plans (changed config or inputs) are ignored, so those shards are rewritten.
    """
    wanted = {marker_name(s.name): s for s in specs}
    done = {}
    for name in sink.list(PARTS):
        spec = wanted.get(name)
        if spec is None:
            continue
        try:
            result = ShardResult.from_dict(json.loads(sink.get_bytes(name) or b"{}"))
        except (TypeError, ValueError):
            continue  # unreadable marker: rebuild the shard
        if result.fingerprint == spec.fingerprint and sink.size(spec.name) == result.bytes:
            done[spec.name] = result
    return done
