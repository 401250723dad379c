"""Where a build's files go: a local folder or s3://bucket/prefix, with the same small interface.

    sink = open_sink("s3://bucket/builds/v1", endpoint_url="http://127.0.0.1:9000")
    sink.put_file(local_tar, "shard-000000.tar")   # whole object or nothing
    sink.put_bytes(b"{...}", "_parts/shard-000000.tar.json")

Nothing is ever visible half-written: locally files are written to a hidden temp name and renamed;
on S3 an object (single PUT or multipart upload) exists only once its upload has completed.
Sinks hold only their URL and settings, so they pickle into Ray tasks; S3 clients are made per
process from boto3's standard credential chain (never logged, never passed around).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from usfmae.data.s3 import ENDPOINT_ENV, list_objects, s3_client, split_s3_url, with_retries

from .config import S3Config

MIB = 1024 * 1024
TEMP_MARK = ".tmp"  # temp files are ".{name}.tmp{pid}": hidden, never matched by *.tar or *.json


def temp_name(name: str) -> str:
    """Hidden per-process temp name beside `name` (e.g. '_parts/.a.json.tmp123')."""
    folder, _, base = name.rpartition("/")
    return f"{folder + '/' if folder else ''}.{base}{TEMP_MARK}{os.getpid()}"


@dataclass(frozen=True)
class LocalSink:
    """A local (or mounted shared) folder."""

    root: str

    @property
    def url(self) -> str:
        return self.root

    def prepare(self) -> None:
        """Create the folder and remove temp files left by killed writers (only our hidden temp pattern)."""
        Path(self.root).mkdir(parents=True, exist_ok=True)
        for folder in (Path(self.root), Path(self.root) / "_parts"):
            for stale in folder.glob(f".*{TEMP_MARK}*"):
                stale.unlink(missing_ok=True)

    def staging_dir(self) -> Path:
        """Where writers build files before put_file: the folder itself, so put_file is a rename."""
        return Path(self.root)

    def put_file(self, local: Path, name: str) -> None:
        """Move `local` to `name` atomically (copy to a temp name first if it lives on another filesystem)."""
        target = Path(self.root) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).parent.resolve() != target.parent.resolve():
            staged = target.parent / Path(temp_name(name)).name
            shutil.copyfile(local, staged)
            Path(local).unlink()
            local = staged
        os.replace(local, target)

    def put_bytes(self, data: bytes, name: str) -> None:
        target = Path(self.root) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.parent / Path(temp_name(name)).name
        staged.write_bytes(data)
        os.replace(staged, target)

    def delete(self, name: str) -> None:
        (Path(self.root) / name).unlink(missing_ok=True)

    def get_bytes(self, name: str) -> bytes | None:
        path = Path(self.root) / name
        return path.read_bytes() if path.is_file() else None

    def size(self, name: str) -> int | None:
        """Bytes of `name`, or None when it does not exist."""
        path = Path(self.root) / name
        return path.stat().st_size if path.is_file() else None

    def list(self, folder: str = "") -> list[str]:
        """Names (relative to the sink) of the visible files directly in `folder` ('' = the top), sorted."""
        base = Path(self.root) / folder
        if not base.is_dir():
            return []
        prefix = f"{folder}/" if folder else ""
        return sorted(f"{prefix}{p.name}" for p in base.iterdir() if p.is_file() and not p.name.startswith("."))

    def open_read(self, name: str) -> BinaryIO:
        """A binary stream of `name` (read to the end, then closed by the caller)."""
        return (Path(self.root) / name).open("rb")

    def get_file(self, name: str, local: Path) -> bool:
        """Copy `name` to `local` (whole or not at all); False when `name` does not exist."""
        source = Path(self.root) / name
        if not source.is_file():
            return False
        _replace_from(local, lambda tmp: shutil.copyfile(source, tmp))
        return True

    def list_tree(self, folder: str) -> list[str]:
        """Names of every visible file under `folder`, at any depth, sorted."""
        base = Path(self.root) / folder
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith(".")) if base.is_dir() else []


@dataclass(frozen=True)
class S3Sink:
    """An s3://bucket/prefix on AWS or any S3-compatible endpoint."""

    prefix_url: str
    settings: S3Config = field(default_factory=S3Config)

    @property
    def url(self) -> str:
        return self.prefix_url.rstrip("/")

    def _key(self, name: str) -> tuple[str, str]:
        bucket, prefix = split_s3_url(self.url)
        return bucket, f"{prefix}/{name}" if prefix else name

    def _client(self):
        return s3_client(self.settings.endpoint_url)

    def prepare(self) -> None:
        """Fail early (before any work) when the bucket is missing or the credentials cannot list it."""
        bucket, prefix = split_s3_url(self.url)
        with_retries(f"checking access to {self.url}",
                     lambda: self._client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1),
                     self.settings.attempts)

    def staging_dir(self) -> Path:
        return Path(tempfile.gettempdir())

    def put_file(self, local: Path, name: str) -> None:
        """Upload with boto3's transfer manager (multipart above the chunk size), then delete `local`."""
        from boto3.s3.transfer import TransferConfig

        chunk = self.settings.multipart_chunk_mb * MIB
        transfer = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk,
                                  max_concurrency=self.settings.max_concurrency)
        bucket, key = self._key(name)
        with_retries(f"uploading {self.url}/{name}",
                     lambda: self._client().upload_file(str(local), bucket, key, Config=transfer),
                     self.settings.attempts)
        Path(local).unlink(missing_ok=True)

    def put_bytes(self, data: bytes, name: str) -> None:
        bucket, key = self._key(name)
        with_retries(f"writing {self.url}/{name}",
                     lambda: self._client().put_object(Bucket=bucket, Key=key, Body=data), self.settings.attempts)

    def delete(self, name: str) -> None:
        bucket, key = self._key(name)
        with_retries(f"deleting {self.url}/{name}", lambda: self._client().delete_object(Bucket=bucket, Key=key),
                     self.settings.attempts)

    def get_bytes(self, name: str) -> bytes | None:
        bucket, key = self._key(name)
        client = self._client()

        def fetch() -> bytes | None:
            try:
                return client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except client.exceptions.NoSuchKey:
                return None

        return with_retries(f"reading {self.url}/{name}", fetch, self.settings.attempts)

    def size(self, name: str) -> int | None:
        bucket, key = self._key(name)
        client = self._client()

        def head() -> int | None:
            try:
                return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
            except client.exceptions.ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

        return with_retries(f"checking {self.url}/{name}", head, self.settings.attempts)

    def list(self, folder: str = "") -> list[str]:
        base = f"{self.url}/{folder}/" if folder else f"{self.url}/"
        urls = list_objects(base, self.settings.endpoint_url)
        return sorted(u[len(self.url) + 1:] for u in urls if "/" not in u[len(base):])

    def open_read(self, name: str) -> BinaryIO:
        bucket, key = self._key(name)
        client = self._client()
        return with_retries(f"reading {self.url}/{name}", lambda: client.get_object(Bucket=bucket, Key=key)["Body"],
                            self.settings.attempts)

    def get_file(self, name: str, local: Path) -> bool:
        """Download `name` to `local` with the transfer manager (whole or not at all); False when it does not exist."""
        if self.size(name) is None:
            return False
        bucket, key = self._key(name)
        with_retries(f"downloading {self.url}/{name}",
                     lambda: _replace_from(local, lambda tmp: self._client().download_file(bucket, key, str(tmp))),
                     self.settings.attempts)
        return True

    def list_tree(self, folder: str) -> list[str]:
        urls = list_objects(f"{self.url}/{folder}/", self.settings.endpoint_url)
        return sorted(u[len(self.url) + 1:] for u in urls)


def _replace_from(local: Path, write) -> None:
    """Call write(temp path beside `local`), then rename it to `local`: readers never see a partial file."""
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(Path(temp_name(local.name)).name)
    try:
        write(tmp)
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)


def open_sink(output: str, s3: S3Config | None = None) -> LocalSink | S3Sink:
    """A sink for a local folder or an s3:// URL.

    An endpoint given only as $USFMAE_S3_ENDPOINT_URL is fixed into the sink here, on the driver,
    so Ray workers whose environment lacks the variable still upload to the same place.
    """
    if output.startswith("s3://"):
        split_s3_url(output)  # ValueError for malformed URLs, before any work
        settings = s3 or S3Config()
        if settings.endpoint_url is None and os.environ.get(ENDPOINT_ENV):
            settings = settings.model_copy(update={"endpoint_url": os.environ[ENDPOINT_ENV]})
        return S3Sink(output, settings)
    return LocalSink(str(Path(output)))
