"""The OpenUS-46 dataset registry, and the guards that keep evaluation data out of pretraining.

    registry = load_registry()                        # configs/datasets/openus46.yaml
    check_pretrain_allowed(["EchoNet-Dynamic", "BUS-BRA"])   # -> DownstreamDatasetError
    leaks = find_leaks("data/bus_bra", build_keys)    # content-hash check of an evaluation folder
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from usfmae.config import packaged_configs
from usfmae.io import ReaderConfig, content_key, detect_kind, iter_frames, list_inputs

log = logging.getLogger(__name__)

# configs/datasets/openus46.yaml, shipped with the package (a checkout, an editable install and a wheel).
DEFAULT_REGISTRY_PATH = packaged_configs() / "datasets" / "openus46.yaml"


class DatasetEntry(BaseModel):
    """One row of the paper's Table 1."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Dataset name as printed in Table 1.")
    anatomy: str = Field(..., min_length=1, description="Target anatomy / application (Table 1).")
    images: int = Field(..., ge=0, description="Images used after 3 fps frame sampling (Table 1).")
    role: Literal["pretrain", "downstream"] = Field(
        ..., description="'downstream' sets are evaluation data and never go into pretraining shards.")
    references: list[int] = Field(..., min_length=1, description="Citation numbers in the paper's reference list.")
    source: str = Field(..., min_length=1, description="The cited reference as the paper gives it.")
    link: str | None = Field(None, description="DOI or URL printed with the reference, if any.")
    in_us43d: bool = Field(..., description="Bold in Table 1: also in UltraSam's US-43d collection.")


class Registry(BaseModel):
    """All datasets of a corpus; validated so the rows add up to the paper's stated total."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Corpus name.")
    paper_total_images: int = Field(..., ge=0, description="Total image count the paper states.")
    datasets: list[DatasetEntry] = Field(..., min_length=1, description="One entry per dataset.")

    @model_validator(mode="after")
    def _consistent(self) -> Registry:
        keys = [normalise_name(d.name) for d in self.datasets]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate dataset names (after normalisation): {duplicates}")
        if self.total_images != self.paper_total_images:
            raise ValueError(f"dataset rows sum to {self.total_images}, paper states {self.paper_total_images}")
        return self

    @property
    def total_images(self) -> int:
        return sum(d.images for d in self.datasets)

    def downstream_names(self) -> list[str]:
        return [d.name for d in self.datasets if d.role == "downstream"]

    def get(self, name: str) -> DatasetEntry | None:
        """The entry whose normalised name matches `name` ('bus_bra' finds 'BUS-BRA')."""
        key = normalise_name(name)
        return next((d for d in self.datasets if normalise_name(d.name) == key), None)


class DownstreamDatasetError(ValueError):
    """A downstream (evaluation) dataset was asked for in a pretraining build."""


def normalise_name(name: str) -> str:
    """Case and punctuation-insensitive key: 'BUS-BRA', 'bus_bra' and 'Bus Bra' are one dataset."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def load_registry(path: str | Path | None = None) -> Registry:
    """Parse and validate a registry YAML (default: the packaged configs/datasets/openus46.yaml)."""
    path = Path(path) if path is not None else DEFAULT_REGISTRY_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset registry not found (pass its path explicitly)")
    with path.open() as f:
        return Registry.model_validate(yaml.safe_load(f))


def check_pretrain_allowed(names: Iterable[str], force: bool = False, registry: Registry | None = None) -> None:
    """Refuse pretraining on downstream datasets (BUS-BRA, MMOTU-2D, GIST514-DB) unless forced.

    Names not in the registry (e.g. a hospital's own archive) are allowed. With force=True the
    refusal becomes a logged warning.
    """
    registry = registry or load_registry()
    blocked = []
    for name in names:
        entry = registry.get(name)
        if entry is not None and entry.role == "downstream":
            blocked.append(entry.name)
    if not blocked:
        return
    message = (f"downstream evaluation dataset(s) {blocked} must not be used for pretraining "
               f"(they would leak into evaluation); pass force=True only if you mean it")
    if not force:
        raise DownstreamDatasetError(message)
    log.warning("forced: %s", message)


@dataclass(frozen=True)
class Leak:
    """A frame of an evaluation folder whose pixels are already in the pretraining build."""

    relative_path: str  # relative to the evaluation folder (a local report, never written to shards)
    index: int  # frame / slice index within that file
    key: str  # the shared content_key


def find_leaks(eval_dir: str | Path, build_keys: Iterable[str] | set[str],
               cfg: ReaderConfig | None = None) -> list[Leak]:
    """Every frame under `eval_dir` whose content_key is in `build_keys`.

    `build_keys` are the content keys of the decoded source frames a build took in (before cleaning,
    as computed by usfmae.io.content_key on the readers' output). Only exact pixel duplicates are
    found. Files that are not inputs (labels, CSVs) are skipped; unreadable inputs raise ReadError.
    """
    eval_dir = Path(eval_dir)
    keys = build_keys if isinstance(build_keys, (set, frozenset)) else set(build_keys)
    leaks = []
    for path in list_inputs(eval_dir):
        if detect_kind(path) is None:
            continue
        for frame in iter_frames(path, cfg, root=eval_dir):  # links out of the folder are not followed
            key = content_key(frame.image)
            if key in keys:
                leaks.append(Leak(path.relative_to(eval_dir).as_posix(), frame.index, key))
    return leaks
