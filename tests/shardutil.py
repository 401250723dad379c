"""Small shard sets in the builder's format, written directly (no Ray) for loader and trainer tests."""

import hashlib
import json
from pathlib import Path

import cv2
import webdataset as wds

from usfmae.shards.manifest import MANIFEST_NAME, ShardManifest
from usfmae.testing.synthetic import generate_ultrasound


def make_shards(out: Path, sizes: list[int], size: int = 64, seed: int = 0, prefix: str = "shard",
                gray: bool = False) -> Path:
    """Shards holding `sizes[i]` synthetic images each, plus manifest.json; returns `out`.

    RGB PNGs (the first shard format); gray=True stores them as 1-channel PNGs, as the builder now does."""
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
