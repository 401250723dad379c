"""A node-local cache of streamed shards: later epochs, and other windows, workers and ranks of the node that
need a shard again, read it from local disk instead of downloading it again.

One file per shard, named by a hash of (endpoint, URL) and the shard's name. Safe when every rank and loader
worker of a node shares the folder:
- a copy is written to a private temporary file and renamed into place, so a reader sees a whole file or none;
- one process fetches a given shard at a time (an flock on that shard's lock file in `.locks/`); the others
  wait for it and then read its copy, so a shard is downloaded once however many streams want it at once
  (a waiter whose own retry budget runs out first downloads the shard itself);
- a copy is used only when it checks out against the manifest (size, SHA-256; `valid`), else it is fetched
  again: a truncated or damaged file is never trained on;
- the folder is bounded: after each write, the least recently used copies (modification time, touched on each
  hit) are deleted until the copies fit in `max_bytes`. Eviction tolerates another process evicting too.
A cache that cannot write (disk full, read-only) serves the download as it is, with a warning, and the run
goes on. Lock files (empty, one per shard) stay.
"""

import fcntl
import hashlib
import os
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

LOCKS = ".locks"
TMP_SUFFIX = ".tmp"
LOCK_POLL_S = 0.05  # how often a process waiting for another's download of a shard checks the lock


def _touch(path: Path) -> None:
    """Record a use, for the LRU order: the clock's nanoseconds (the kernel's own file times are coarse, so
    uses within a few milliseconds would tie)."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


class ShardCache:
    """Copies of shards in `root` ($VARS and ~ expanded), at most `max_bytes` in all; `endpoint_url` is part of
    each copy's name (the same URL on two endpoints is two objects)."""

    def __init__(self, root: str | Path, max_bytes: int, endpoint_url: str | None = None):
        self.root = Path(os.path.expandvars(str(root))).expanduser()
        self.max_bytes, self.endpoint_url = max_bytes, endpoint_url

    def path(self, url: str) -> Path:
        digest = hashlib.sha256(f"{self.endpoint_url or ''}|{url}".encode()).hexdigest()[:16]
        return self.root / f"{digest}-{url.rsplit('/', 1)[-1]}"

    def get(self, url: str, download: Callable[[], bytes], valid: Callable[[bytes], bool],
            deadline: float | None = None) -> bytes:
        """The shard's bytes: a valid local copy, else `download()` (stored when valid and small enough).

        Waiting for another process's download of the shard ends at `deadline` (time.monotonic; the caller's
        retry budget): then this one downloads it too (the rename keeps either copy whole)."""
        path = self.path(url)
        data = self._hit(path, valid)
        if data is not None:
            return data
        with self._lock(path, deadline):
            data = self._hit(path, valid)  # fetched by another process while this one waited
            if data is not None:
                return data
            data = download()
            if valid(data) and len(data) <= self.max_bytes:
                self._store(path, data)
        return data

    def _hit(self, path: Path, valid: Callable[[bytes], bool]) -> bytes | None:
        try:
            data = path.read_bytes()
        except OSError:  # not there (or not readable: a miss all the same)
            return None
        if not valid(data):
            return None
        try:
            _touch(path)
        except FileNotFoundError:  # evicted by another process after the read: the bytes are still good
            pass
        return data

    @contextmanager
    def _lock(self, path: Path, deadline: float | None):
        try:
            (self.root / LOCKS).mkdir(parents=True, exist_ok=True)
            f = open(self.root / LOCKS / path.name, "a")
        except OSError as e:  # the folder is unusable: fetch without it (storing fails too, and warns)
            warnings.warn(f"shard cache {self.root}: cannot lock {path.name} ({e})", RuntimeWarning, stacklevel=3)
            yield
            return
        with f:  # the flock is released on close, and by the kernel if this process dies
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        break  # the holder is slower than this reader's budget: fetch without waiting longer
                    time.sleep(LOCK_POLL_S)
            yield

    def _store(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
            _touch(path)
            self._evict(keep=path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            warnings.warn(f"shard cache {self.root}: cannot store {path.name} ({e}); reading from S3 instead",
                          RuntimeWarning, stacklevel=2)

    def _evict(self, keep: Path) -> None:
        """Delete least recently used copies until the cache holds at most max_bytes."""
        entries = []
        with os.scandir(self.root) as it:
            for e in it:
                if e.is_file() and not e.name.startswith("."):
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue
                    entries.append((st.st_mtime_ns, st.st_size, e.path))
        held = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if held <= self.max_bytes:
                break
            if path == str(keep):
                continue
            try:
                os.remove(path)
            except FileNotFoundError:  # another process evicted it
                pass
            held -= size
