"""Resolve shard specifications into shard lists with sample counts.

A spec is a directory or s3:// prefix holding a `manifest.json` (what preprocessing/build_shards.py
writes), a manifest file itself, or a local glob / brace pattern of .tar files (counted by reading
their tar headers).

A build folder is read only through its manifest, and only the shards the manifest lists: the builder
writes manifest.json last, so a folder without one is an unfinished or failed build, and its tars
(possibly next to stale ones of an earlier plan) are refused unless the caller says otherwise
(`require_manifest=False`, or an explicit glob such as 'dir/*.tar'). A manifest must be complete:
every entry a plain file name in the folder with a sample count, and (locally) every listed tar present.
"""

import glob
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import braceexpand

from ..shards.manifest import MANIFEST_NAME as MANIFEST
from ..shards.manifest import ShardManifest
from . import s3


@dataclass(frozen=True)
class Shard:
    url: str  # local path or s3:// URL
    samples: int
    bytes: int | None = None  # size and checksum from the manifest, when it lists them (fetch.integrity_problem)
    sha256: str | None = None


def _is_s3(spec: str) -> bool:
    return spec.startswith("s3://")


def read_manifest(url: str, endpoint_url: str | None = None) -> ShardManifest:
    """Load and validate a manifest.json from a local path or s3:// URL."""
    try:
        raw = s3.read_bytes(url, endpoint_url) if _is_s3(url) else Path(url).read_bytes()
        manifest = json.loads(raw)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, s3.S3Error) as e:
        raise ValueError(f"cannot read shard manifest {url}: {e}") from None
    return ShardManifest.parse(manifest, url)


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if _is_s3(base) else str(Path(base) / name)


def _from_manifest(url: str, endpoint_url: str | None) -> list[Shard]:
    base = url.rsplit("/", 1)[0] if _is_s3(url) else str(Path(url).parent)
    shards = [Shard(_join(base, s.name), s.samples, s.bytes, s.sha256)
              for s in read_manifest(url, endpoint_url).shards]
    missing = [s.url for s in shards if not _is_s3(s.url) and not Path(s.url).is_file()]
    if missing:
        raise ValueError(f"{url} lists {len(missing)} shard(s) that are not there, e.g. {missing[:3]}: "
                         "the folder is incomplete (rerun the build that wrote it)")
    return shards


def count_tar_samples(path: str) -> int:
    """Distinct sample keys in a local tar (reads headers only)."""
    keys = set()
    with tarfile.open(path, "r|*") as tf:
        for info in tf:
            if info.isreg() and "." in Path(info.name).name:
                keys.add(info.name.split(".", 1)[0])
    return len(keys)


def resolve(spec: str, endpoint_url: str | None = None, require_manifest: bool = True) -> list[Shard]:
    """One spec -> its shards, in a stable order (module docstring for the manifest rules)."""
    if _is_s3(spec):
        url = spec if spec.endswith(".json") else _join(spec, MANIFEST)
        return _from_manifest(url, endpoint_url)
    p = Path(spec)
    if p.is_dir():
        if not (p / MANIFEST).is_file():
            tars = sorted(str(t) for t in p.glob("*.tar"))
            if require_manifest:
                raise ValueError(f"shard directory {p} has no {MANIFEST}: the build that wrote it did not finish "
                                 f"(or it is not a build folder; {len(tars)} .tar file(s) there). Rerun the build, "
                                 f"or name the tars explicitly (e.g. '{p}/*.tar') to read them anyway")
            if not tars:
                raise ValueError(f"shard directory {p} has no {MANIFEST} and no .tar files")
            return [Shard(t, count_tar_samples(t)) for t in tars]
        return _from_manifest(str(p / MANIFEST), endpoint_url)
    if p.suffix == ".json":
        return _from_manifest(str(p), endpoint_url)
    paths = sorted({f for pattern in braceexpand.braceexpand(spec) for f in glob.glob(pattern)})
    if not paths:
        raise ValueError(f"no shards match {spec!r}")
    return [Shard(t, count_tar_samples(t)) for t in paths]
