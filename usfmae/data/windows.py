"""A source's sample sequence in shuffle windows, and reading those windows ahead of the stream.

Per epoch and cycle through a source, its shards in a seeded order are grouped into shuffle windows of
consecutive shards holding at least `shuffle_buffer` samples (manifest counts); each window's samples come
in a seeded permutation (SourceSequence). A stream needs its windows whole, one after another: a
WindowReader, told in advance which windows each source will need (across epochs too), reads the next one
in a background thread while the current one is consumed, so neither a new window nor a new epoch waits
for a shard download.
"""

import bisect
import io
import tarfile
import threading
from collections import deque
from typing import Sequence

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_iterator

from . import s3
from .epoch import rng
from .sources import Shard

WindowKey = tuple[int, int, int, int]  # (epoch, source, cycle, window)


def read_shard(url: str, endpoint_url: str | None = None, s3_budget_s: float | None = None) -> list[dict]:
    """All samples of a tar shard as dicts of raw bytes (keys: __key__, png, json, ...).

    S3 reads retry until `s3_budget_s` is spent (then the error names the shard), never past it."""
    try:
        if url.startswith("s3://"):
            data = s3.read_bytes(url, endpoint_url, attempts=1000 if s3_budget_s else 5, budget_s=s3_budget_s)
        else:
            with open(url, "rb") as f:
                data = f.read()
        files = ({**f, "__url__": url} for f in tar_file_iterator(io.BytesIO(data)))
        return list(group_by_keys(files))
    except (OSError, tarfile.TarError, ValueError, s3.S3Error) as e:
        raise RuntimeError(f"cannot read shard {url}: {e}") from e


def shuffle_windows(shards: Sequence[Shard], buffer: int) -> list[list[int]]:
    """Indices of consecutive shards grouped into windows of at least `buffer` samples (manifest counts).

    Every window but the last reaches `buffer`; each holds at least one shard. Cut from the counts only,
    so a resumed stream finds the same windows without opening a shard.
    """
    windows, current, held = [], [], 0
    for i, shard in enumerate(shards):
        current.append(i)
        held += shard.samples
        if held >= buffer:
            windows.append(current)
            current, held = [], 0
    if current:
        windows.append(current)
    return windows


class _Read(threading.Thread):
    """One window read in a daemon thread (a stuck download never holds the process at exit)."""

    def __init__(self, read, shards: list[Shard]):
        super().__init__(daemon=True, name="window-read")
        self.read, self.shards, self.value, self.error = read, shards, None, None
        self.start()

    def run(self) -> None:
        try:
            self.value = self.read(self.shards)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer by result()
            self.error = e

    def result(self) -> list[dict]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.value


class WindowReader:
    """Reads the shuffle windows of one stream; with `read_ahead`, the next planned window of each source is
    read in the background (at most one per source besides the one being consumed)."""

    def __init__(self, endpoint_url: str | None = None, s3_budget_s: float | None = None, read_ahead: bool = False):
        self.endpoint_url, self.s3_budget_s, self.read_ahead = endpoint_url, s3_budget_s, read_ahead
        self.planned: dict[int, deque] = {}  # source -> [(key, shards)] in the order the stream takes them
        self.pending: dict[WindowKey, _Read] = {}

    def read(self, shards: list[Shard]) -> list[dict]:
        samples = []
        for shard in shards:
            samples += read_shard(shard.url, self.endpoint_url, self.s3_budget_s)
        expected = sum(s.samples for s in shards)
        if len(samples) != expected:
            raise RuntimeError(f"shards {', '.join(s.url for s in shards)} hold {len(samples)} samples, their "
                               f"manifest says {expected}: rebuild the manifest")
        return samples

    def plan(self, source: int, windows: list[tuple[WindowKey, list[Shard]]]) -> None:
        """Append windows `source` will be taken in, in order (called an epoch ahead of their use)."""
        if self.read_ahead and any(s.url.startswith("s3://") for _, w in windows for s in w):
            s3.s3_client(self.endpoint_url)  # created here, once: boto3's client creation is not thread-safe
        self.planned.setdefault(source, deque()).extend(windows)
        self._ahead(source)

    def take(self, key: WindowKey, shards: list[Shard]) -> list[dict]:
        queue = self.planned.get(key[1])
        if queue and queue[0][0] == key:
            queue.popleft()
        read = self.pending.pop(key, None)  # None: not planned (or no read-ahead): read it here
        samples = read.result() if read is not None else self.read(shards)
        self._ahead(key[1])
        return samples

    def _ahead(self, source: int) -> None:
        queue = self.planned.get(source)
        if self.read_ahead and queue and queue[0][0] not in self.pending:
            key, shards = queue[0]
            self.pending[key] = _Read(self.read, shards)


class SourceSequence:
    """The sample sequence of one source in one epoch, read window by window through a WindowReader.

    Index i is in cycle i // size (a fresh shard order per cycle, for epochs that draw more samples than the
    source holds); within a cycle, windows of the cycle's shard order, each in a seeded permutation.
    """

    def __init__(self, shards: Sequence[Shard], seed: int, epoch: int, source: int, shuffle_buffer: int,
                 reader: WindowReader | None = None):
        self.shards, self.seed, self.epoch, self.source = list(shards), seed, epoch, source
        self.buffer, self.reader = shuffle_buffer, reader or WindowReader()
        self.size = sum(s.samples for s in self.shards)
        if self.size == 0:
            raise RuntimeError(f"shards of source {source} hold no samples: " + ", ".join(s.url for s in shards[:3]))
        self._cycle = self._loaded = None
        self.shards_opened: list[str] = []

    def _windows(self, cycle: int) -> tuple[list[list[Shard]], list[int]]:
        """The cycle's windows (lists of shards) and the index at which each starts."""
        if self._cycle is None or self._cycle[0] != cycle:
            order = rng(self.seed, self.epoch, self.source, cycle, 1).permutation(len(self.shards))
            ordered = [self.shards[i] for i in order]
            windows = [[ordered[i] for i in w] for w in shuffle_windows(ordered, self.buffer)]
            starts = np.cumsum([0] + [sum(s.samples for s in w) for w in windows[:-1]]).tolist()
            self._cycle = (cycle, windows, starts)
        return self._cycle[1], self._cycle[2]

    def _locate(self, i: int) -> tuple[int, int, int]:
        """(cycle, window, offset in the cycle) of index i."""
        cycle, offset = divmod(i, self.size)
        return cycle, bisect.bisect_right(self._windows(cycle)[1], offset) - 1, offset

    def windows_for(self, lo: int, hi: int) -> list[tuple[WindowKey, list[Shard]]]:
        """The windows holding indices lo..hi-1, in order, with their shards (for WindowReader.plan)."""
        out, i = [], lo
        while i < hi:
            cycle, w, offset = self._locate(i)
            windows, starts = self._windows(cycle)
            out.append(((self.epoch, self.source, cycle, w), windows[w]))
            i += (starts[w + 1] if w + 1 < len(starts) else self.size) - offset
        return out

    def __getitem__(self, i: int) -> dict:
        """Sample i of the sequence; sequential access reads each window once."""
        cycle, w, offset = self._locate(i)
        windows, starts = self._windows(cycle)
        if self._loaded is None or self._loaded[0] != (cycle, w):
            self._loaded = None  # free the previous window before taking the next
            samples = self.reader.take((self.epoch, self.source, cycle, w), windows[w])
            self.shards_opened += [shard.url for shard in windows[w]]
            # tag 2, then the window: (..., cycle, w) alone would give window 1 the shard order's draws (tag 1)
            perm = rng(self.seed, self.epoch, self.source, cycle, 2, w).permutation(len(samples))
            self._loaded = ((cycle, w), samples, perm)
        _, samples, perm = self._loaded
        return samples[perm[offset - starts[w]]]
