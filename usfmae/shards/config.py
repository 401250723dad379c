"""What a shard build reads, how it cleans and deduplicates frames, and where it writes.

    cfg = load_build_config("configs/build_example.yaml", ["shard_size=500"])

One YAML per build (see configs/build_example.yaml). Paths are never checked here: the planner
names any missing folder when the build starts.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import yaml
from pydantic import Field, field_validator

from usfmae.cleaning import CleaningConfig
from usfmae.config import Section, config_path, load_config
from usfmae.constants import DEFAULT_IMAGE_SIZE
from usfmae.io import ReaderConfig
from usfmae.io.kinds import KINDS

SALT_ENV = "USFMAE_SOURCE_SALT"


class DatasetSource(Section):
    """One folder of inputs and the dataset it belongs to."""

    name: str = Field(..., min_length=1, description="Dataset name (matched against the registry, e.g. "
                      "'EchoNet-Dynamic'; downstream datasets are refused unless force_downstream).")
    path: str = Field(..., min_length=1, description="Local folder holding the dataset's files (searched "
                      "recursively; only regular files inside it are read; hidden files, links to folders and "
                      "MetaImage data files are skipped and listed in the report).")
    anatomy: str | None = Field(None, description="Anatomy recorded in each sample's metadata; null takes "
                                "the registry's value, or 'unspecified' for datasets not in the registry.")


class DedupConfig(Section):
    """Dropping repeated frames before they are cleaned (saves the cleaning time too).

    Exact repeats (same stored pixels, so the same key) are always dropped build-wide, wherever they land,
    and each is named in the report: WebDataset groups tar members by key, so a repeated key would corrupt
    the sample, and a repeat in another shard would weigh one picture twice (usfmae/shards/dedup.py).
    """

    near_duplicates: bool = Field(True, description="Drop frames of one input whose perceptual hash (64-bit "
                                  "dHash) is within max_distance bits of a frame already kept from that input.")
    max_distance: int = Field(4, ge=0, le=64, description="Largest Hamming distance between dHashes still "
                              "counted as a near duplicate (0: identical hashes only).")
    kinds: list[str] = Field(["video", "dicom"], description="Input kinds whose frames are compared (cine "
                             "loops); volume slices and stills are kept as they are.")

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown input kinds {unknown}; use {', '.join(KINDS)}")
        return kinds


class TaskConfig(Section):
    """Resources of the Ray task that writes one shard."""

    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per shard task (cleaning is single-threaded).")
    memory_mb: int = Field(2048, ge=0, description="Memory reserved per shard task, MiB, so Ray never packs "
                           "more tasks on a node than fit (one frame, one input's encoded samples and the "
                           "reader's buffers are held at a time). 0: no reservation.")
    max_retries: int = Field(3, ge=0, description="Times a shard task is re-run when its worker dies "
                             "(node lost, out-of-memory kill); a rerun overwrites the same shard.")


class S3Config(Section):
    """Upload settings for s3:// outputs (credentials come from boto3's standard chain, never from here)."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph, moto); null "
                                     "uses $USFMAE_S3_ENDPOINT_URL, else AWS.")
    multipart_chunk_mb: int = Field(64, ge=5, description="Multipart threshold and part size, MiB "
                                    "(S3 parts are at least 5 MiB).")
    max_concurrency: int = Field(4, ge=1, description="Parallel part uploads per shard.")
    attempts: int = Field(5, ge=1, description="Tries per upload/put before the shard task fails "
                          "(exponential backoff from 0.5 s).")


class BuildConfig(Section):
    """A whole shard build: inputs, frame processing, shard layout and output."""

    datasets: list[DatasetSource] = Field(..., min_length=1, description="Folders to include, with their dataset.")
    output: str = Field(..., min_length=1, description="Local folder or s3://bucket/prefix for shards, "
                        "manifest.json, report.json and the _parts/ done-markers.")
    prefix: str = Field("shard", pattern=r"^[A-Za-z0-9_.-]+$", description="Shard names: {prefix}-000000.tar.")
    shard_size: int = Field(1000, ge=1, description="Target frames per shard. Inputs (not frames) are assigned "
                            "to shards, so a shard holds all frames of its inputs and its size is approximate "
                            "(estimated from file headers before reading any pixels).")
    image_size: int = Field(DEFAULT_IMAGE_SIZE, ge=8, description="Stored square image side, pixels.")
    seed: int = Field(0, description="Seed of the input shuffle that mixes datasets across shards.")
    salt: str | None = Field(None, description="Secret keying the source hash of each sample's relative path. "
                             f"null: ${SALT_ENV}; if unset too, a random salt per run (warned: shards are then "
                             "not byte-reproducible). Never store it next to the shards.")
    force_downstream: bool = Field(False, description="Allow downstream evaluation datasets (BUS-BRA, MMOTU-2D, "
                                   "GIST514-DB) into a pretraining build. Leaves a warning in the log.")
    registry: str | None = Field(None, description="Dataset registry YAML; null: configs/datasets/openus46.yaml.")
    check_leaks: list[str] = Field(default_factory=list, description="Evaluation folders whose frames are looked "
                                   "up by content hash among the build's source frames after the build.")
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig, description="Annotation removal per frame "
                                     "(cleaning.enabled: false stores frames as read).")
    cleaning_batch: int = Field(8, ge=1, description="Frames cleaned per call, across inputs of a shard: the fast "
                                "pipeline makes one Tesseract call per batch instead of one per image.")
    reader: ReaderConfig = Field(default_factory=ReaderConfig, description="Frame sampling and volume slicing.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Near-duplicate and duplicate removal.")
    task: TaskConfig = Field(default_factory=TaskConfig, description="Ray resources per shard task.")
    s3: S3Config = Field(default_factory=S3Config, description="S3 upload settings (s3:// outputs only).")

    @field_validator("datasets")
    @classmethod
    def _distinct_folders(cls, datasets: list[DatasetSource]) -> list[DatasetSource]:
        paths = [str(Path(d.path)) for d in datasets]
        repeated = sorted({p for p in paths if paths.count(p) > 1})
        if repeated:
            raise ValueError(f"folders listed more than once: {repeated}")
        return datasets


def load_build_config(path: str | Path | None = None, overrides: list[str] | None = None,
                      base: dict | None = None) -> BuildConfig:
    """Validate a build YAML (optional) on top of `base`, then `--set` style dotted overrides."""
    return load_config(BuildConfig, path, overrides, base=base)


def resolve_salt(cfg: BuildConfig) -> tuple[str, bool]:
    """(salt, is_ephemeral): the configured salt, else $USFMAE_SOURCE_SALT, else a fresh random one."""
    salt = cfg.salt or os.environ.get(SALT_ENV)
    if salt:
        return salt, False
    return secrets.token_hex(16), True


class QAConfig(Section):
    """What preprocessing/clean_images.py reads from --config: the cleaning and reader sections."""

    cleaning: CleaningConfig = Field(default_factory=CleaningConfig, description="Annotation removal per frame.")
    reader: ReaderConfig = Field(default_factory=ReaderConfig, description="Frame sampling and volume slicing.")


def load_qa_config(path: str | Path | None = None, overrides: list[str] | None = None) -> QAConfig:
    """The cleaning and reader sections of a build config, or of a file holding only those two."""
    if path is None:
        return load_config(QAConfig, None, overrides)
    path = config_path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        data = None  # load_config below names the problem
    if isinstance(data, dict) and ("datasets" in data or "output" in data):
        build = load_config(BuildConfig, path, overrides, base={"output": "unused"})
        return QAConfig(cleaning=build.cleaning, reader=build.reader)
    return load_config(QAConfig, path, overrides)
