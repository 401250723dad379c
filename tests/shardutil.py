"""Small shard sets in the builder's format, written directly (no Ray) for loader and trainer tests."""

import hashlib
import json
from pathlib import Path

import cv2
import webdataset as wds

from usfmae.data.fetch import parse_samples
from usfmae.shards.manifest import MANIFEST_NAME, ShardManifest
from usfmae.testing.synthetic import generate_ultrasound


def make_shards(out: Path, sizes: list[int], size: int = 64, seed: int = 0, prefix: str = "shard",
                gray: bool = False) -> Path:
    """Shards holding `sizes[i]` synthetic images each, plus manifest.json; returns `out`.

    RGB PNGs by default (3-channel shards, which the stream reads too); gray=True stores 1-channel PNGs, as the
    builder writes them."""
    out.mkdir(parents=True, exist_ok=True)
    entries, n = [], 0
    for i, count in enumerate(sizes):
        name = f"{prefix}-{i:06d}.tar"
        with wds.TarWriter(str(out / name)) as sink:
            for _ in range(count):
                img = generate_ultrasound(seed * 100_000 + n, size, overlays=False).image
                ok, png = cv2.imencode(".png", img[..., 0] if gray else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                sink.write({"__key__": f"{prefix}{i:03d}_{n:06d}", "png": png.tobytes(),
                            "json": json.dumps({"dataset": "test"}).encode()})
                n += 1
        data = (out / name).read_bytes()
        entries.append({"name": name, "samples": count, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    (out / MANIFEST_NAME).write_text(json.dumps(ShardManifest.build(entries).to_dict()))
    return out


def damage(folder, truncate: str, bad_png: tuple[str, str]) -> tuple[set, int]:
    """Cut shard `truncate` (12 samples) in half, the manifest unchanged, and replace one PNG of `bad_png[0]` with
    junk, the manifest updated (a builder that wrote a bad image). Returns the keys of the whole samples left in
    the cut shard and how many samples the cut took (the sample it cut through is kept, without its image)."""
    path = folder / truncate
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    kept, _, _ = parse_samples(str(path), data[:len(data) // 2])
    name, key = bad_png
    samples, _, _ = parse_samples(name, (folder / name).read_bytes())
    with wds.TarWriter(str(folder / name)) as sink:
        for s in samples:
            sink.write({k: (b"junk" if k == "png" and s["__key__"] == key else v) for k, v in s.items()
                        if k != "__url__"})
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    entry = next(e for e in manifest["shards"] if e["name"] == name)
    new = (folder / name).read_bytes()
    entry.update(bytes=len(new), sha256=hashlib.sha256(new).hexdigest())
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return {s["__key__"] for s in kept if "png" in s}, 12 - len(kept)
