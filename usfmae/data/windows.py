"""A source's sample sequence in shuffle windows, and reading those windows ahead of the stream.

Per epoch and cycle through a source, its shards in a seeded order are grouped into shuffle windows of
consecutive shards holding at least `shuffle_buffer` samples (manifest counts); each window's samples come
in a seeded permutation (SourceSequence). A stream needs its windows whole, one after another: a
WindowReader, told in advance which windows each source will need (across epochs too), reads the next one
in a background thread while the current one is consumed, so neither a new window nor a new epoch waits
for a shard download.

A window has one slot per sample the manifest lists, whatever its shards turn out to hold: a damaged shard
(fetch.salvage) leaves its missing samples' slots empty (None), so the window's length, its permutation and
every later position stay what they were planned to be; the stream fills an empty slot with a re-draw from
the same window (SourceSequence.redraws). S3 reads of a window share one retry budget (ShardFetch.budget_s),
so however many shards a window holds, a rank waits for it at most that budget plus one request's time-out.
"""

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from . import s3
from .epoch import RngTag, rng
from .fetch import ShardFetch, fetch_bytes, salvage
from .sources import Shard

WindowKey = tuple[int, int, int, int]  # (epoch, source, cycle, window)


@dataclass
class Window:
    samples: list[dict | None]  # one slot per manifest sample, in shard order; None: lost to a damaged shard
    faults: list[dict] = field(default_factory=list)  # fetch.salvage's records of the damaged shards


def read_window(shards: list[Shard], how: ShardFetch) -> Window:
    """A window's samples, its S3 reads retrying within one budget for the whole window (how.budget_s)."""
    deadline = None if how.budget_s is None else time.monotonic() + how.budget_s
    window = Window([])
    for i, shard in enumerate(shards):
        try:
            data = fetch_bytes(shard, how, deadline)
        except s3.S3Error as e:
            rest = ", ".join(s.url for s in shards[i + 1:]) or "none"
            raise RuntimeError(f"cannot read shard {shard.url} ({how.describe()}; shards of the window not read "
                               f"yet: {rest}): {e}") from e
        except OSError as e:
            raise RuntimeError(f"cannot read shard {shard.url}: {e}") from e
        samples, fault = salvage(shard, data)
        window.samples += samples + [None] * (shard.samples - len(samples))
        if fault is not None:
            window.faults.append(fault)
    return window


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

    def result(self) -> Window:
        self.join()
        if self.error is not None:
            raise self.error
        return self.value


class WindowReader:
    """Reads the shuffle windows of one stream; with `read_ahead`, the next planned window of each source is
    read in the background (at most one per source besides the one being consumed)."""

    def __init__(self, fetch: ShardFetch | None = None, read_ahead: bool = False):
        self.fetch, self.read_ahead = fetch or ShardFetch(), read_ahead
        self.planned: dict[int, deque] = {}  # source -> [(key, shards)] in the order the stream takes them
        self.pending: dict[WindowKey, _Read] = {}

    def read(self, shards: list[Shard]) -> Window:
        return read_window(shards, self.fetch)

    def plan(self, source: int, windows: list[tuple[WindowKey, list[Shard]]]) -> None:
        """Append windows `source` will be taken in, in order (called an epoch ahead of their use)."""
        if self.read_ahead and any(s.url.startswith("s3://") for _, w in windows for s in w):
            s3.s3_client(self.fetch.endpoint_url, self.fetch.timeout_s)  # here, once: creation is not thread-safe
        self.planned.setdefault(source, deque()).extend(windows)
        self._ahead(source)

    def take(self, key: WindowKey, shards: list[Shard]) -> Window:
        queue = self.planned.get(key[1])
        if queue and queue[0][0] == key:
            queue.popleft()
        read = self.pending.pop(key, None)  # None: not planned (or no read-ahead): read it here
        window = read.result() if read is not None else self.read(shards)
        self._ahead(key[1])
        return window

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
        self.faults: list[dict] = []  # of the damaged shards among those opened

    def _windows(self, cycle: int) -> tuple[list[list[Shard]], list[int]]:
        """The cycle's windows (lists of shards) and the index at which each starts."""
        if self._cycle is None or self._cycle[0] != cycle:
            order = rng(self.seed, self.epoch, self.source, cycle, RngTag.SHARD_ORDER).permutation(len(self.shards))
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

    def _load(self, i: int) -> tuple[list, np.ndarray, int]:
        """(the slots of i's window, their permutation, i's place in it); sequential access reads each window
        once."""
        cycle, w, offset = self._locate(i)
        windows, starts = self._windows(cycle)
        if self._loaded is None or self._loaded[0] != (cycle, w):
            self._loaded = None  # free the previous window before taking the next
            window = self.reader.take((self.epoch, self.source, cycle, w), windows[w])
            self.shards_opened += [shard.url for shard in windows[w]]
            self.faults += window.faults
            # the tag, then the window: (..., cycle, w) alone would give window 1 the shard order's draws
            perm = rng(self.seed, self.epoch, self.source, cycle, RngTag.WINDOW_ORDER, w).permutation(len(window.samples))
            self._loaded = ((cycle, w), window.samples, perm)
        _, samples, perm = self._loaded
        return samples, perm, offset - starts[w]

    def __getitem__(self, i: int) -> dict | None:
        """Sample i of the sequence; None when a damaged shard lost it."""
        samples, perm, place = self._load(i)
        return samples[perm[place]]

    def window_shards(self, i: int) -> list[str]:
        cycle, w, _ = self._locate(i)
        return [shard.url for shard in self._windows(cycle)[0][w]]

    def redraws(self, i: int) -> Iterator[dict]:
        """Stand-ins for sample i when it is lost or unreadable: the other samples of its window present, in an
        order seeded by i's place in the window (RngTag.STAND_IN), so the same position always gets the same stand-in."""
        samples, perm, place = self._load(i)
        cycle, w, _ = self._locate(i)
        for j in rng(self.seed, self.epoch, self.source, cycle, RngTag.STAND_IN, w, place).permutation(len(samples)):
            if j != perm[place] and samples[j] is not None:
                yield samples[j]
