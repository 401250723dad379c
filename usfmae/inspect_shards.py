"""What a shard build holds: samples per dataset and per shard, checked against the manifest, and a contact
sheet of random samples (`usfmae inspect`, usfmae/commands/inspect_shards.py)."""

import io
import json
import math
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from .data import s3, sources
from .shards.manifest import ShardManifest

NO_METADATA = "(no .json)"


@dataclass
class Pick:
    """One sample chosen for the contact sheet."""

    key: str
    dataset: str
    shard: str
    png: bytes


@dataclass
class ShardCount:
    name: str
    samples: int  # counted in the tar
    listed: int  # what the manifest (or tar headers, without a manifest) says
    datasets: dict[str, int] = field(default_factory=dict)


@dataclass
class Inspection:
    source: str
    shards: list[ShardCount]
    datasets: dict[str, int]  # counted over all shards, sorted by name
    manifest: ShardManifest | None
    problems: list[str]
    picks: list[Pick]

    @property
    def total(self) -> int:
        return sum(s.samples for s in self.shards)


def open_shard(url: str, endpoint_url: str | None) -> io.BufferedIOBase:
    if url.startswith("s3://"):
        return s3.open_url(url, endpoint_url=endpoint_url)
    return open(url, "rb")


def split_key(member: str) -> tuple[str, str]:
    """'dir/abc.seg.png' -> ('dir/abc', 'seg.png'): WebDataset's key is the path up to the first dot."""
    directory, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), ext


def iter_samples(stream, name: str):
    """(key, {extension: bytes}) per sample of a WebDataset tar, members grouped by key in tar order."""
    key, parts = None, {}
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tf:
            for info in tf:
                if not info.isreg() or "." not in PurePosixPath(info.name).name:
                    continue
                member_key, ext = split_key(info.name)
                if member_key != key and key is not None:
                    yield key, parts
                    parts = {}
                key = member_key
                parts[ext] = tf.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"{name}: unreadable shard ({type(err).__name__}: {err})") from None
    if key is not None:
        yield key, parts


def sample_dataset(parts: dict[str, bytes], key: str, name: str) -> str:
    """The `dataset` field of a sample's .json metadata."""
    if "json" not in parts:
        return NO_METADATA
    try:
        meta = json.loads(parts["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{name}: sample {key!r} has corrupt .json metadata ({err})") from None
    return str(meta.get("dataset", NO_METADATA)) if isinstance(meta, dict) else NO_METADATA


def image_bytes(parts: dict[str, bytes]) -> bytes | None:
    for ext in ("png", "jpg", "jpeg", "webp"):
        if ext in parts:
            return parts[ext]
    return None


def inspect_shards(spec: str, n_picks: int = 16, seed: int = 0, endpoint_url: str | None = None) -> Inspection:
    """Count every shard of `spec` (dir, manifest, glob or s3:// prefix) and reservoir-sample `n_picks`."""
    listed = sources.resolve(spec, endpoint_url, require_manifest=False)  # inspecting an unfinished build is fine
    manifest = read_manifest_if_any(spec, endpoint_url)
    rng = random.Random(seed)
    picks: list[Pick] = []
    seen, counts, problems = 0, [], []
    for shard in listed:
        name = shard.url.rsplit("/", 1)[-1]
        count = ShardCount(name, 0, shard.samples)
        try:
            stream = open_shard(shard.url, endpoint_url)
        except (OSError, s3.S3Error) as err:
            raise ValueError(f"{shard.url}: cannot open shard ({err})") from None
        with stream:
            for key, parts in iter_samples(stream, shard.url):
                dataset = sample_dataset(parts, key, shard.url)
                count.samples += 1
                count.datasets[dataset] = count.datasets.get(dataset, 0) + 1
                png = image_bytes(parts)
                if png is None:
                    problems.append(f"{name}: sample {key!r} has no image")
                    continue
                # Reservoir sampling: every image is picked with probability n_picks / images seen.
                seen += 1
                if len(picks) < n_picks:
                    picks.append(Pick(key, dataset, name, png))
                elif (slot := rng.randrange(seen)) < n_picks:
                    picks[slot] = Pick(key, dataset, name, png)
        if count.samples != count.listed:
            problems.append(f"{name}: {count.samples} samples in the tar, {count.listed} in the manifest")
        counts.append(count)
    datasets: dict[str, int] = {}
    for count in counts:
        for name, n in count.datasets.items():
            datasets[name] = datasets.get(name, 0) + n
    datasets = dict(sorted(datasets.items()))
    if manifest and manifest.datasets is not None and manifest.datasets != datasets:
        problems.append(f"manifest datasets {manifest.datasets} != counted {datasets}")
    return Inspection(spec, counts, datasets, manifest, problems, picks)


def read_manifest_if_any(spec: str, endpoint_url: str | None) -> ShardManifest | None:
    if spec.startswith("s3://"):
        url = spec if spec.endswith(".json") else f"{spec.rstrip('/')}/{sources.MANIFEST}"
        return sources.read_manifest(url, endpoint_url)
    path = Path(spec)
    path = path / sources.MANIFEST if path.is_dir() else path
    return sources.read_manifest(str(path)) if path.suffix == ".json" and path.is_file() else None


def decode_tile(png: bytes, side: int) -> np.ndarray:
    """[side, side, 3] BGR: the image scaled to fit, centred on black."""
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    tile = np.zeros((side, side, 3), np.uint8)
    if img is None:
        cv2.putText(tile, "undecodable", (4, side // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255), 1)
        return tile
    scale = side / max(img.shape[:2])
    h, w = max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale))
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    y, x = (side - h) // 2, (side - w) // 2
    tile[y:y + h, x:x + w] = img
    return tile


def contact_sheet(picks: list[Pick], path: str | Path, side: int = 160, caption: int = 16) -> Path:
    """A grid of the picked samples, each captioned with its dataset; written as PNG."""
    if not picks:
        raise ValueError("no samples to put on a contact sheet")
    cols = math.ceil(math.sqrt(len(picks)))
    rows = math.ceil(len(picks) / cols)
    sheet = np.full((rows * (side + caption), cols * side, 3), 32, np.uint8)
    for i, pick in enumerate(picks):
        y, x = (i // cols) * (side + caption), (i % cols) * side
        sheet[y:y + side, x:x + side] = decode_tile(pick.png, side)
        cv2.putText(sheet, pick.dataset[:22], (x + 3, y + side + caption - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (235, 235, 235), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"could not write the contact sheet {path}")
    return path


def format_report(ins: Inspection) -> str:
    total = ins.total or 1
    lines = [f"{ins.source}: {ins.total} samples in {len(ins.shards)} shards"
             + (f" (manifest: {ins.manifest.total_samples})" if ins.manifest else " (no manifest)"), "",
             f"{'dataset':<32} {'samples':>9} {'share':>7} {'shards':>7}"]
    for name, n in ins.datasets.items():
        in_shards = sum(1 for s in ins.shards if name in s.datasets)
        lines.append(f"{name:<32} {n:>9} {100 * n / total:>6.1f}% {in_shards:>7}")
    lines += ["", f"{'shard':<28} {'samples':>9} {'listed':>7}  datasets"]
    for s in ins.shards:
        mix = ", ".join(f"{k}:{v}" for k, v in sorted(s.datasets.items()))
        lines.append(f"{s.name:<28} {s.samples:>9} {s.listed:>7}  {mix}")
    for problem in ins.problems:
        lines.append(f"PROBLEM: {problem}")
    return "\n".join(lines)

