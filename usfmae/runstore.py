"""A run directory: a local folder on a filesystem every node mounts, or s3://bucket/prefix.

    store = RunStore(cfg.output_dir, scratch=node_local_dir, s3=S3Config(endpoint_url=...))
    path = store.local("metrics.jsonl")        # where this process writes the file
    store.publish("config.yaml")               # S3: upload it; a local run directory: nothing to do
    upload = store.snapshot(["metrics.jsonl"]) # a copy of a file still being appended to, uploaded by upload()

Locally `local(name)` is the file in the run directory itself, written atomically by its writer. S3 cannot
append or rename, so on S3 every file is written under node-local scratch and uploaded whole (boto3's
transfer manager: an object exists only once its upload completed); appended logs (metrics.jsonl) are
uploaded at checkpoints and at the end.

Checkpoints (usfmae.checkpoint's training format) are staged in `checkpoint_staging(tag)` and published by
`publish_checkpoint`: locally a rename of the staged directory, on S3 an upload of its files with state.json
last; then `checkpoints/latest` names the tag. A reader that follows `latest` never sees a half checkpoint,
and a killed writer leaves at most an unnamed leftover, which the next prune removes.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .checkpoint import LATEST, RUN_OPTIMIZER, RUN_STATE, RUN_WEIGHTS
from .shards.config import S3Config
from .shards.sink import S3Sink, open_sink, temp_name

CHECKPOINTS = "checkpoints"
_SNAPSHOTS = itertools.count()  # one name per snapshot: a snapshot's upload may still run when the next is taken
RUN_FILES = (RUN_WEIGHTS, RUN_OPTIMIZER, RUN_STATE)  # upload order: state.json last marks a complete tag


def is_s3(url: str | Path) -> bool:
    return str(url).startswith("s3://")


def default_scratch(url: str) -> Path:
    """Node-local scratch of the run at `url`: $TMPDIR/usfmae-scratch/<hash of the url>."""
    return Path(tempfile.gettempdir()) / "usfmae-scratch" / hashlib.sha1(url.encode()).hexdigest()[:12]


class RunStore:
    """One run directory, local or on S3, seen through node-local `scratch` (used on S3 only)."""

    def __init__(self, url: str | Path, scratch: str | Path | None = None, s3: S3Config | None = None):
        self.sink = open_sink(str(url), s3)
        self.remote = isinstance(self.sink, S3Sink)
        self.url = self.sink.url
        self.scratch = Path(scratch) if scratch is not None else default_scratch(self.url)
        self.root = self.scratch if self.remote else Path(self.url)

    def where(self, name: str = "") -> str:
        """The run directory's own address of `name`, for messages."""
        return f"{self.url}/{name}" if name else self.url

    def local(self, name: str) -> Path:
        """Where this process writes (and reads back) `name` (its folder is created)."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ plain files
    def _files(self, name: str) -> list[tuple[Path, str]]:
        """(local file, name) of local(name): the file, or every file of the folder."""
        path = self.local(name)
        if path.is_dir():
            return [(f, f"{name}/{f.relative_to(path)}") for f in sorted(path.rglob("*"))
                    if f.is_file() and not f.name.startswith(".")]
        return [(path, name)] if path.is_file() else []

    def publish(self, name: str) -> None:
        """S3: upload local(name), a file or every file of a folder, then delete it locally."""
        if self.remote:
            for f, rel in self._files(name):
                self.sink.put_file(f, rel)

    def snapshot(self, names: list[str]) -> Callable[[], None]:
        """Copy files that are still being appended to (logs) now; the returned job uploads the copies (S3)."""
        if not self.remote:
            return lambda: None
        copies = []
        for name in names:
            for f, rel in self._files(name):
                snap = f.with_name(f"{Path(temp_name(f.name)).name}.{next(_SNAPSHOTS)}")
                shutil.copyfile(f, snap)
                copies.append((snap, rel))
        return lambda: [self.sink.put_file(snap, rel) for snap, rel in copies] and None

    def restore(self, name: str) -> None:
        """S3: download file `name` to local(name), to go on appending to it (a stale local copy is removed)."""
        if self.remote and not self.sink.get_file(name, self.local(name)):
            self.local(name).unlink(missing_ok=True)

    def read_text(self, name: str) -> str | None:
        data = self.sink.get_bytes(name)
        return None if data is None else data.decode()

    def write_text(self, name: str, text: str) -> None:
        """Atomically, locally and on S3 alike."""
        self.sink.put_bytes(text.encode(), name)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_staging(self, tag: str) -> Path:
        """Where a checkpoint is written before publish_checkpoint (beside its final place when local)."""
        return self.local(f"{CHECKPOINTS}/{tag}.tmp")

    def publish_checkpoint(self, tag: str) -> str:
        """Make the staged checkpoint `tag` visible, then point `latest` at it; returns its address."""
        staged, name = self.checkpoint_staging(tag), f"{CHECKPOINTS}/{tag}"
        if self.remote:
            self.sink.delete(f"{name}/{RUN_STATE}")  # a tag saved again: incomplete until its state.json is back
            for f in RUN_FILES:
                self.sink.put_file(staged / f, f"{name}/{f}")
            shutil.rmtree(staged, ignore_errors=True)
        else:
            final = self.local(name)
            shutil.rmtree(final, ignore_errors=True)  # a rerun saving the same step again
            os.replace(staged, final)
        self.write_text(f"{CHECKPOINTS}/{LATEST}", tag)
        return self.where(name)

    def latest_checkpoint(self) -> tuple[str | None, list[str]]:
        """(the tag `latest` names, or None; the files of a complete checkpoint that tag lacks)."""
        tag = self.read_text(f"{CHECKPOINTS}/{LATEST}")
        if tag is None:
            return None, []
        tag = tag.strip()
        return tag, [f for f in RUN_FILES if self.sink.size(f"{CHECKPOINTS}/{tag}/{f}") is None]

    def fetch_checkpoint(self, tag: str) -> Path:
        """A local directory holding checkpoint `tag` (S3: downloaded into scratch; drop it with drop_fetched)."""
        path = self.local(f"{CHECKPOINTS}/{tag}")
        if self.remote:
            for f in RUN_FILES:
                self.sink.get_file(f"{CHECKPOINTS}/{tag}/{f}", path / f)
        return path

    def drop_fetched(self, path: Path) -> None:
        if self.remote:
            shutil.rmtree(path, ignore_errors=True)

    def prune_checkpoints(self, keep_last: int) -> None:
        """Delete all but the newest `keep_last` complete checkpoints, and leftovers of interrupted saves."""
        ckpts = self.local(CHECKPOINTS)
        if ckpts.is_dir():  # staged directories (S3: in scratch) of saves that never finished
            for d in ckpts.iterdir():
                if d.is_dir() and d.name.startswith("step") and d.name.endswith(".tmp"):
                    shutil.rmtree(d, ignore_errors=True)
        if not self.remote:
            done = sorted(d for d in ckpts.iterdir() if d.is_dir() and d.name.startswith("step")
                          and not d.name.endswith(".tmp")) if ckpts.is_dir() else []
            for old in done[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
            return
        files: dict[str, list[str]] = {}
        for name in self.sink.list_tree(CHECKPOINTS):
            parts = name.split("/")
            if len(parts) == 3 and parts[1].startswith("step"):
                files.setdefault(parts[1], []).append(name)
        complete = sorted(t for t, names in files.items() if f"{CHECKPOINTS}/{t}/{RUN_STATE}" in names)
        for tag, names in files.items():
            if tag not in complete[-keep_last:]:
                for name in names:
                    self.sink.delete(name)
