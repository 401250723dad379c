"""manifest.json: the one description of a finished shard build (written last by the builder, read by loaders).

    {"format": "usfmae-shards/1", "image_size": 224, "total_samples": N, "datasets": {name: samples},
     "shards": [{"name": "shard-000000.tar", "samples": n, "bytes": b, "sha256": "..."}, ...]}

The builder (shards/report.py), the reader (data/sources.py), the test and benchmark shard writers all go
through `ShardManifest`. Every entry is a plain file name in the manifest's own folder with a sample count;
extra keys (a benchmark's "storage") are kept, so older and annotated manifests still load.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MANIFEST_NAME = "manifest.json"
FORMAT_FAMILY = "usfmae-shards/"
FORMAT = FORMAT_FAMILY + "1"


class ShardEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(..., description="Tar file name in the manifest's folder (no path separators).")
    samples: int = Field(..., ge=0, strict=True, description="Samples (distinct keys) in the tar.")
    bytes: int | None = Field(None, description="Tar size in bytes.")
    sha256: str | None = Field(None, description="SHA-256 of the tar, hex.")


class ShardManifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: str = Field(FORMAT_FAMILY, description=f"Format tag, '{FORMAT}'; any '{FORMAT_FAMILY}*' is read.")
    image_size: int | None = Field(None, description="Stored square image side, pixels.")
    total_samples: int | None = Field(None, description="Sum of the shards' sample counts.")
    datasets: dict[str, int] | None = Field(None, description="Samples per dataset, names sorted.")
    shards: list[ShardEntry] = Field(..., description="The build's shards in name order.")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if not value.startswith(FORMAT_FAMILY):
            raise ValueError(f"unknown manifest format {value!r}")
        return value

    @field_validator("shards", mode="before")
    @classmethod
    def _plain_entries(cls, entries):
        """Old messages, naming the entry: a manifest lists only shards in its own folder, with counts."""
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            name = entry.get("name") if isinstance(entry, dict) else None
            samples = entry.get("samples") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
                raise ValueError(f"shard entry {i} has no plain file name ({name!r}); a manifest lists "
                                 "only shards in its own folder")
            if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
                raise ValueError(f"shard {name} has no valid sample count ({samples!r})")
        return entries

    @classmethod
    def parse(cls, data: object, where: str) -> ShardManifest:
        """Validate decoded JSON; ValueError naming `where` and the first problem."""
        if not isinstance(data, dict) or not isinstance(data.get("shards"), list):
            raise ValueError(f"{where} is not a usfmae shard manifest (no 'shards' list)")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            message = str(first.get("ctx", {}).get("error") or first["msg"])
            raise ValueError(f"{where}: {message} (at {'.'.join(map(str, first['loc']))})") from None

    @classmethod
    def build(cls, entries: list[dict], **fields) -> ShardManifest:
        """A manifest of `entries` ({name, samples, bytes, sha256}) in the current format, total counted."""
        return cls(format=FORMAT, total_samples=sum(e["samples"] for e in entries), shards=entries, **fields)

    def to_dict(self) -> dict:
        """Plain data for json.dumps, unset optional fields left out."""
        return self.model_dump(exclude_none=True)
