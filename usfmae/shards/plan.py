"""Plan a build before reading any pixels: inputs -> a stable, seeded assignment of input files to shards.

Why files and not frames: a video, DICOM cine or volume yields an unknown number of frames until it
is decoded. So a shard owns whole input files and holds all their frames; its size is approximate,
targeting `shard_size` frames from header estimates (`estimate.py`: images 1, cines by frame count
and rate, volumes by slice count). A 2,000-frame video simply makes one larger shard.

Stable: the same folders, seed and shard size always give the same shards with the same inputs in
the same order, on any machine (inputs are sorted by dataset order and POSIX relative path first).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usfmae.io import printable, scan_inputs

from .config import DatasetSource


@dataclass(frozen=True)
class InputRef:
    """One input file. `relpath` (POSIX, relative to `root`) is what sources hash; reports show `name`."""

    dataset: str
    anatomy: str
    root: str
    relpath: str  # exact (file names need not be UTF-8: undecodable bytes are kept as surrogates)

    @property
    def path(self) -> Path:
        return Path(self.root) / self.relpath

    @property
    def name(self) -> str:
        """The relative path as printable text, for reports and logs."""
        return printable(self.relpath, None)


@dataclass(frozen=True)
class ShardSpec:
    """One shard to write: its name, its inputs in write order, and the fingerprint its marker must carry."""

    index: int
    name: str
    inputs: tuple[InputRef, ...]
    fingerprint: str


def gather_inputs(datasets: list[DatasetSource], anatomies: dict[str, str]) -> tuple[list[InputRef], list[dict]]:
    """(every input file of every dataset folder, in dataset order then relative path order; the paths
    left out with the reason: [{"dataset", "path", "reason"}]).

    Unsupported files, links and special files are kept: shard tasks reject them with a reason, so
    nothing vanishes silently (usfmae/io/walk.py says what is left out and why).
    """
    inputs, skipped = [], []
    for source in datasets:
        root = Path(source.path)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset {source.name!r}: input folder not found: {root}")
        scan = scan_inputs(root)
        for path in scan.inputs:
            inputs.append(InputRef(source.name, anatomies[source.name], str(root), path.relative_to(root).as_posix()))
        skipped += [{"dataset": source.name, "path": s.path, "reason": s.reason} for s in scan.skipped]
    return inputs, skipped


def shard_fingerprint(name: str, inputs: tuple[InputRef, ...], settings_digest: str) -> str:
    """sha256 over what determines a shard's bytes, except the folder roots (a moved mount is the same data)."""
    listing = [[ref.dataset, ref.anatomy, ref.relpath] for ref in inputs]
    payload = json.dumps({"name": name, "inputs": listing, "settings": settings_digest}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def plan_shards(inputs: list[InputRef], estimates: list[int], shard_size: int, prefix: str = "shard",
                seed: int = 0, settings_digest: str = "") -> list[ShardSpec]:
    """Shuffle inputs with `seed` (so every shard mixes datasets), then fill shards in that order,
    closing one as soon as its estimated frame count reaches `shard_size`."""
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    if len(estimates) != len(inputs):
        raise ValueError(f"{len(estimates)} frame estimates for {len(inputs)} inputs")
    order = np.random.default_rng(seed).permutation(len(inputs))
    groups: list[list[InputRef]] = [[]]
    frames = 0
    for i in order:
        groups[-1].append(inputs[i])
        frames += max(int(estimates[i]), 1)
        if frames >= shard_size:
            groups.append([])
            frames = 0
    groups = [g for g in groups if g]
    specs = []
    for index, group in enumerate(groups):
        name = f"{prefix}-{index:06d}.tar"
        specs.append(ShardSpec(index, name, tuple(group), shard_fingerprint(name, tuple(group), settings_digest)))
    return specs
