"""Deterministic, resumable, world-size-independent shard streaming for pretraining.

The epoch is a global order of sample positions (data.epoch: which source each position draws from, and
how the positions not yet consumed are cut into one contiguous range per stream, rank x loader worker).
Within a source, positions take its *sample sequence* in order: per cycle through the source, its shards in
a seeded order, grouped into shuffle windows of consecutive shards holding at least `shuffle_buffer`
samples (manifest counts), each window's samples in a seeded permutation. A stream reads one window at a
time, opens only the windows its range touches and skips the others unread, so resuming at any position
costs no reading of what came before.

Every choice is a function of (seed, epoch, position): the sample, and its augmentation draws (seeded per
position). A stream range that starts or ends inside a window reads that window whole and yields only its
own samples, so when streams outnumber shards, streams share a shard's download but never a sample.

Batches are uint8 [B, C, S, S]: C = 1 when every image of the batch is stored gray, else 3 (gray
images replicated). Normalisation is the consumer's job (transforms.normalize_batch, on the device).
"""

import bisect
import io
import tarfile
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_iterator

from . import s3
from .epoch import Segment, epoch_order, rng, take, total
from .sources import Shard


@dataclass(frozen=True)
class StreamPlan:
    """What the epochs are made of: the sources, how many samples each gives per epoch, the seeds."""
    sources: Sequence[Sequence[Shard]]
    counts: Sequence[int]  # samples drawn from each source per epoch (data.epoch.apportion)
    seed: int
    shuffle_buffer: int = 0  # samples: shards are shuffled together in windows holding at least this many


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


class SourceSequence:
    """The sample sequence of one source in one epoch, read window by window.

    Index i is in cycle i // size (a fresh shard order per cycle, for epochs that draw more samples than the
    source holds); within a cycle, windows of the cycle's shard order, each in a seeded permutation.
    """

    def __init__(self, shards: Sequence[Shard], seed: int, epoch: int, source: int, shuffle_buffer: int,
                 endpoint_url: str | None = None, s3_budget_s: float | None = None):
        self.shards, self.seed, self.epoch, self.source = list(shards), seed, epoch, source
        self.buffer, self.endpoint_url, self.s3_budget_s = shuffle_buffer, endpoint_url, s3_budget_s
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

    def __getitem__(self, i: int) -> dict:
        """Sample i of the sequence; sequential access reads each window once."""
        cycle, offset = divmod(i, self.size)
        windows, starts = self._windows(cycle)
        w = bisect.bisect_right(starts, offset) - 1
        if self._loaded is None or self._loaded[0] != (cycle, w):
            self._loaded = None  # free the previous window before reading the next
            samples = []
            for shard in windows[w]:
                samples += read_shard(shard.url, self.endpoint_url, self.s3_budget_s)
                self.shards_opened.append(shard.url)
            expected = sum(s.samples for s in windows[w])
            if len(samples) != expected:
                raise RuntimeError(f"shards {', '.join(s.url for s in windows[w])} hold {len(samples)} samples, "
                                   f"their manifest says {expected}: rebuild the manifest")
            perm = rng(self.seed, self.epoch, self.source, cycle, w).permutation(len(samples))
            self._loaded = ((cycle, w), samples, perm)
        _, samples, perm = self._loaded
        return samples[perm[offset - starts[w]]]


def decode_image(sample: dict) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 [H, W] (stored gray) or [H, W, 3] RGB, with OpenCV."""
    for ext in ("png", "jpg", "jpeg"):
        if ext in sample:
            buf = np.frombuffer(sample[ext], np.uint8)
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # gray stays 1 channel
            if img is not None and (img.dtype != np.uint8 or img.ndim == 3 and img.shape[2] != 3):
                img = cv2.imdecode(buf, cv2.IMREAD_ANYCOLOR)  # 16-bit or alpha: 8-bit gray or BGR
            if img is None:
                raise RuntimeError(f"sample {sample.get('__key__')} in {sample.get('__url__')}: "
                                   f"undecodable {ext}")
            return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raise RuntimeError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no image")


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """uint8 [C, S, S] images -> [B, C, S, S]; gray ones are replicated when the batch also holds colour."""
    if len({x.shape[0] for x in images}) > 1:
        images = [x.expand(3, -1, -1) for x in images]
    return torch.stack(images)


def worker_init(worker_id: int) -> None:
    """DataLoader worker_init_fn: one OpenCV thread per worker (the workers are the parallelism)."""
    cv2.setNumThreads(1)


def position_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of one sample's augmentation draws: the same at any world size or resume point."""
    return int(rng(seed, epoch, position, 4).integers(2**62))


class PretrainStream(IterableDataset):
    """Yields (uint8 images [B, C, S, S], info) micro-batches of one rank in one segment, from `start_micro` on.

    `transform` maps a decoded uint8 array to a uint8 [C, S, S] tensor (transforms.pretrain_transform).
    info: keys (sample keys), micro (the micro-batch's index in the segment), worker, new_shards.
    """

    def __init__(self, plan: StreamPlan, segment: Segment, transform: Callable, rank: int = 0,
                 start_micro: int = 0, endpoint_url: str | None = None, s3_budget_s: float | None = None):
        self.plan, self.segment, self.transform, self.rank = plan, segment, transform, rank
        self.start_micro, self.endpoint_url, self.s3_budget_s = start_micro, endpoint_url, s3_budget_s

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict]]:
        info = get_worker_info()
        loader_worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        seg, p = self.segment, self.plan
        if num_workers != seg.workers:
            raise ValueError(f"the segment was laid out for {seg.workers} loader workers, the DataLoader has "
                             f"{num_workers}")
        # DataLoader deals batches round-robin starting at loader worker 0, and micro-batch m belongs to
        # stream m % workers: after `start_micro`, loader worker 0 plays the stream that makes it.
        worker = (loader_worker + self.start_micro) % num_workers
        done = seg.stream_batches(worker, self.start_micro)
        order = epoch_order(tuple(p.counts), p.seed, seg.epoch)
        sequences = [SourceSequence(s, p.seed, seg.epoch, k, p.shuffle_buffer, self.endpoint_url, self.s3_budget_s)
                     for k, s in enumerate(p.sources)]
        b = seg.micro_batch
        mine = seg.stream_range(self.rank, worker)
        batch_no, images, keys, opened = done, [], [], [0] * len(sequences)
        for a, z in take(mine, done * b, total(mine) - done * b):  # what this stream has not yet made
            for pos, k, i in order.walk(a, z):
                sample = sequences[k][i]
                torch.manual_seed(position_seed(p.seed, seg.epoch, pos))
                images.append(self.transform(decode_image(sample)))
                keys.append(sample["__key__"])
                if len(images) == b:
                    new = [u for sq, n in zip(sequences, opened) for u in sq.shards_opened[n:]]
                    opened = [len(sq.shards_opened) for sq in sequences]
                    yield stack_images(images), {"keys": keys, "micro": worker + batch_no * num_workers,
                                                 "worker": worker, "new_shards": new}
                    batch_no, images, keys = batch_no + 1, [], []
