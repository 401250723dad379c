"""An epoch as one global order of sample positions, independent of the world size, and its split into streams.

Invariant: position p in [0, N) of epoch e names one sample, as a function of (seed, epoch, shard manifests)
only. N = the epoch's samples; `counts[k]` of them come from source k (exactly its size by default, so each
sample of the corpus has exactly one position). Which source a position draws from is fixed per block of
BLOCK positions (exact per-source counts, seeded arrangement); within a source, its positions take its
sample sequence in order (stream.SourceSequence).

Training consumes positions in *segments*: a segment starts from the set of positions not yet consumed in
the epoch (sorted intervals), cuts it into one contiguous range per stream (rank x loader worker) of exactly
the samples that stream will yield, and the rest (< one global batch) is the epoch's dropped tail. After
`micro_done` micro-batches per rank, what every stream consumed is a known prefix of its range, so the
remaining set is known too: a checkpoint stores the segment and `micro_done`, and a run resumed with another
world size (or loader workers) starts a new segment from the remaining positions. Every position of the
epoch is trained on at most once, and exactly once unless it falls in the dropped tail.
"""

from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

import numpy as np

BLOCK = 1024  # positions per block of the source arrangement

Intervals = tuple[tuple[int, int], ...]  # sorted, disjoint [a, b) position intervals


class RngTag(IntEnum):
    """The use of a draw, one of `rng`'s parts, so no two uses share draws. The values are part of every seed:
    changing one changes the samples, orders and masks of every run (and a resume's replay)."""
    SHARD_ORDER = 1  # shard order of a cycle (windows.py)
    WINDOW_ORDER = 2  # sample order of a shuffle window (windows.py)
    INTERLEAVE = 3  # source interleaving (here)
    AUGMENT = 4  # per-sample augmentation (stream.py)
    MASKING = 5  # per-micro-step masking (train/engine.py)
    STAND_IN = 6  # stand-ins for lost samples (windows.py)


def rng(*parts: int) -> np.random.Generator:
    """The one seeded generator of the data pipeline and the trainer: a function of its integer parts only,
    one of which is the RngTag of the use."""
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


def seed_of(*parts: int) -> int:
    """A seed for a torch generator (62 bits) drawn from `rng(*parts)`: the one way a per-sample or per-step
    seed is derived from (seed, epoch or step, position, rank..., RngTag)."""
    return int(rng(*parts).integers(2**62))


def apportion(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights`, by largest remainder: integers that sum to `total`."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    out = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - out), kind="stable")[:total - int(out.sum())]:
        out[i] += 1
    return [int(x) for x in out]


class EpochOrder:
    """Which source each position of an epoch draws from, and its index in that source's sequence."""

    def __init__(self, counts: list[int], seed: int, epoch: int):
        self.counts, self.seed, self.epoch = list(counts), seed, epoch
        self.total = sum(self.counts)
        n_blocks = -(-self.total // BLOCK)
        # Per-block counts by carried largest remainder (integer debts in units of 1/total), so every
        # prefix of blocks is as close to the epoch's mix as integers allow and the totals are exact.
        k = len(self.counts)
        self.block_counts = np.zeros((n_blocks, k), dtype=np.int64)
        debt = np.zeros(k, dtype=np.int64)
        for j in range(n_blocks):
            size = min(BLOCK, self.total - j * BLOCK)
            debt += size * np.asarray(self.counts, dtype=np.int64)
            take = debt // self.total
            rest = size - int(take.sum())
            take[np.argsort(-(debt - take * self.total), kind="stable")[:rest]] += 1
            debt -= take * self.total
            self.block_counts[j] = take
        self.before = np.vstack([np.zeros((1, k), np.int64), np.cumsum(self.block_counts, axis=0)])  # [blocks+1, K]

    def block(self, j: int) -> np.ndarray:
        """Source of each position of block j: a seeded arrangement of its exact counts."""
        ids = np.repeat(np.arange(len(self.counts)), self.block_counts[j])
        return ids if len(self.counts) == 1 else ids[rng(self.seed, self.epoch, j, RngTag.INTERLEAVE).permutation(len(ids))]

    def seen(self, p: int) -> np.ndarray:
        """[K] positions before p drawing from each source: where p's own source's sequence has got to."""
        j, off = divmod(p, BLOCK)
        if off == 0:
            return self.before[j].copy()
        return self.before[j] + np.bincount(self.block(j)[:off], minlength=len(self.counts))

    def walk(self, a: int, b: int):
        """(position, source, index in the source's sequence) for positions a..b-1, in order."""
        if not 0 <= a <= b <= self.total:
            raise ValueError(f"positions {a}..{b} outside the epoch's 0..{self.total}")
        p = a
        while p < b:
            j, off = divmod(p, BLOCK)
            ids, seen = self.block(j), self.seen(p)
            for k in ids[off:min(BLOCK, b - j * BLOCK)]:
                yield p, int(k), int(seen[k])
                seen[k] += 1
                p += 1


@lru_cache(maxsize=4)
def epoch_order(counts: tuple[int, ...], seed: int, epoch: int) -> EpochOrder:
    return EpochOrder(list(counts), seed, epoch)


# ---------------------------------------------------------------------------- intervals
def total(intervals: Intervals) -> int:
    return sum(b - a for a, b in intervals)


def take(intervals: Intervals, start: int, length: int) -> Intervals:
    """The positions numbered start..start+length-1 when `intervals` are laid end to end."""
    out, skip = [], start
    for a, b in intervals:
        if length <= 0:
            break
        if skip >= b - a:
            skip -= b - a
            continue
        lo = a + skip
        hi = min(b, lo + length)
        out.append((lo, hi))
        length -= hi - lo
        skip = 0
    return tuple(out)


def merge(intervals) -> Intervals:
    out: list[list[int]] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


# ---------------------------------------------------------------------------- segments
@dataclass(frozen=True)
class Segment:
    """One layout of the remaining positions of an epoch over world x workers streams.

    Stream (rank r, worker w) makes the rank's micro-batches w, w + workers, ... (DataLoader deals them
    round-robin); its range is cut from `remaining` in stream order r * workers + w, B samples per micro-batch.
    """
    epoch: int
    remaining: Intervals  # positions not yet consumed when the segment started
    world: int
    workers: int
    micro_batch: int
    micro_batches: int  # per rank in this segment

    @classmethod
    def start(cls, epoch: int, remaining: Intervals, world: int, workers: int, micro_batch: int,
              accum: int) -> "Segment":
        steps = total(remaining) // (micro_batch * accum * world)  # the rest is the epoch's dropped tail
        return cls(epoch, tuple(map(tuple, remaining)), world, max(1, workers), micro_batch, steps * accum)

    def stream_batches(self, worker: int, upto: int | None = None) -> int:
        """Micro-batches stream `worker` (of any rank) makes among the first `upto` (default all)."""
        return len(range(worker, self.micro_batches if upto is None else upto, self.workers))

    def stream_range(self, rank: int, worker: int) -> Intervals:
        offset = sum(self.stream_batches(w) for w in range(self.workers)) * rank
        offset += sum(self.stream_batches(w) for w in range(worker))
        return take(self.remaining, offset * self.micro_batch, self.stream_batches(worker) * self.micro_batch)

    def remaining_after(self, micro_done: int) -> Intervals:
        """Positions not consumed once every rank has taken its first `micro_done` micro-batches."""
        left = []
        for r in range(self.world):
            for w in range(self.workers):
                done = self.stream_batches(w, micro_done) * self.micro_batch
                rng_ = self.stream_range(r, w)
                left += take(rng_, done, total(rng_) - done)
        used = sum(self.stream_batches(w) for w in range(self.workers)) * self.world * self.micro_batch
        left += take(self.remaining, used, total(self.remaining) - used)  # the tail no stream was given
        return merge(left)
