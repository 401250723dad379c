"""Deterministic, resumable, world-size-independent shard streaming for pretraining.

The epoch is a global order of sample positions (data.epoch: which source each position draws from, and
how the positions not yet consumed are cut into one contiguous range per stream, rank x loader worker).
Within a source, positions take its *sample sequence* in order (data.windows.SourceSequence: per cycle
through the source, its shards in a seeded order, grouped into shuffle windows, each window's samples in a
seeded permutation). A stream reads one window at a time, opens only the windows its range touches and skips
the others unread, so resuming at any position costs no reading of what came before; the next window (of
this epoch or the next) is read in the background while the current one is consumed (WindowReader).

Every choice is a function of (seed, epoch, position): the sample, and its augmentation draws (seeded per
position). A stream range that starts or ends inside a window reads that window whole and yields only its
own samples, so when streams outnumber shards, streams share a shard's download but never a sample.

Damaged data never changes how many samples a stream yields, so every rank still makes the same number of
micro-batches and the ranks' collectives stay in step: a position whose sample a damaged shard lost, or
whose image does not decode, takes the first decodable stand-in from the same window (SourceSequence.redraws:
seeded per position, so a resumed stream makes the same choice; the stand-in thus appears twice in the
epoch). The batch's info names what happened (data_errors: the shard, the sample key, the error; skipped:
the positions filled so) and the Trainer warns and counts them. A window with no decodable sample stops the
stream with an error naming its shards.

The Trainer's stream does not end with its epoch: it goes on with the next epochs (each laid out afresh
with the same ranks, workers and batch), so one DataLoader and its worker processes serve the whole run.

Batches are uint8 [B, C, S, S]: C = 1 when every image of the batch is stored gray, else 3 (gray
images replicated). Normalisation is the consumer's job (transforms.normalize_batch, on the device).
"""

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..io.intensity import to_rgb
from .epoch import RngTag, Segment, epoch_order, seed_of, take, total
from .fetch import ShardFetch
from .sources import Shard
from .windows import SourceSequence, WindowReader


@dataclass(frozen=True)
class StreamPlan:
    """What the epochs are made of: the sources, how many samples each gives per epoch, the seeds."""
    sources: Sequence[Sequence[Shard]]
    counts: Sequence[int]  # samples drawn from each source per epoch (data.epoch.apportion)
    seed: int
    shuffle_buffer: int = 0  # samples: shards are shuffled together in windows holding at least this many


class UnreadableSample(RuntimeError):
    """A sample without a decodable image; the message names it and its shard, `reason` says what is wrong."""

    def __init__(self, sample: dict, reason: str):
        super().__init__(f"sample {sample.get('__key__')} in {sample.get('__url__')}: {reason}")
        self.reason = reason


def decode_image(sample: dict) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 [H, W] (stored gray) or [H, W, 3] RGB, with OpenCV."""
    for ext in ("png", "jpg", "jpeg"):
        if ext in sample:
            buf = np.frombuffer(sample[ext], np.uint8)
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # gray stays 1 channel
            if img is None:
                raise UnreadableSample(sample, f"undecodable {ext}")
            if img.dtype != np.uint8 or img.ndim == 3 and img.shape[2] != 3:
                return to_rgb(img, bgr=True)  # 16-bit or alpha (not the builder's): the readers' rule
            return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raise UnreadableSample(sample, "no image")


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
    return seed_of(seed, epoch, position, RngTag.AUGMENT)


class _StreamEpoch:
    """What one stream makes of one segment from `start_micro` on: its positions, the sequences they draw
    from, and (told to the reader at once) the windows it will take from each source, in order."""

    def __init__(self, plan: StreamPlan, seg: Segment, rank: int, stream: int, start_micro: int,
                 reader: WindowReader):
        self.plan, self.seg, self.stream = plan, seg, stream
        self.done = seg.stream_batches(stream, start_micro)
        self.order = epoch_order(tuple(plan.counts), plan.seed, seg.epoch)
        self.sequences = [SourceSequence(s, plan.seed, seg.epoch, k, plan.shuffle_buffer, reader)
                          for k, s in enumerate(plan.sources)]
        mine, b = seg.stream_range(rank, stream), seg.micro_batch
        self.todo = take(mine, self.done * b, total(mine) - self.done * b)  # what this stream has not yet made
        windows = [[] for _ in self.sequences]
        for a, z in self.todo:
            lo, hi = self.order.seen(a), self.order.seen(z)
            for k, sq in enumerate(self.sequences):
                for w in sq.windows_for(int(lo[k]), int(hi[k])):
                    if not windows[k] or windows[k][-1][0] != w[0]:  # a window spanning two ranges: taken once
                        windows[k].append(w)
        for k, planned in enumerate(windows):
            reader.plan(k, planned)

    def decoded(self, k: int, i: int, errors: list[dict]) -> tuple[np.ndarray, str, bool]:
        """(image, key, whether a stand-in replaced it) of sample i of source k; unreadable samples are appended
        to `errors` as {shard, key, error}."""
        sq = self.sequences[k]
        sample, stand_ins = sq[i], None
        while True:
            if sample is not None:
                try:
                    return decode_image(sample), sample["__key__"], stand_ins is not None
                except UnreadableSample as e:
                    errors.append({"shard": sample["__url__"], "key": sample["__key__"], "error": e.reason})
            stand_ins = stand_ins or sq.redraws(i)
            sample = next(stand_ins, None)
            if sample is None:
                raise RuntimeError(f"no readable sample in the shuffle window of shards "
                                   f"{', '.join(sq.window_shards(i))}: every sample is lost to a damaged shard or "
                                   f"undecodable")

    def batches(self, transform: Callable, num_workers: int) -> Iterator[tuple[torch.Tensor, dict]]:
        seg, p, b = self.seg, self.plan, self.seg.micro_batch
        batch_no, images, keys, skipped, errors = self.done, [], [], 0, []
        opened, faulted = [0] * len(self.sequences), [0] * len(self.sequences)
        for a, z in self.todo:
            for pos, k, i in self.order.walk(a, z):
                image, key, stand_in = self.decoded(k, i, errors)
                # the CPU generator only: torch.manual_seed would also seed CUDA, XPU and MTIA lazily, recording a
                # stack trace for each on every call in a process that never uses them (~1 ms per image)
                torch.default_generator.manual_seed(position_seed(p.seed, seg.epoch, pos))
                images.append(transform(image))
                keys.append(key)
                skipped += stand_in
                if len(images) == b:
                    new = [u for sq, n in zip(self.sequences, opened) for u in sq.shards_opened[n:]]
                    errors = [f for sq, n in zip(self.sequences, faulted) for f in sq.faults[n:]] + errors
                    opened = [len(sq.shards_opened) for sq in self.sequences]
                    faulted = [len(sq.faults) for sq in self.sequences]
                    yield stack_images(images), {"keys": keys, "epoch": seg.epoch, "worker": self.stream,
                                                 "micro": self.stream + batch_no * num_workers, "new_shards": new,
                                                 "skipped": skipped, "data_errors": errors}
                    batch_no, images, keys, skipped, errors = batch_no + 1, [], [], 0, []


class PretrainStream(IterableDataset):
    """Yields (uint8 images [B, C, S, S], info) micro-batches of one rank, from micro-batch `start_micro` of
    `segment` on: that segment only, or, given `accum` (the run's accumulation steps, with which fresh epochs
    are laid out), the following epochs too, without end.

    `transform` maps a decoded uint8 array to a uint8 [C, S, S] tensor (transforms.pretrain_transform).
    info: keys (sample keys), epoch, micro (the micro-batch's index in its epoch's segment), worker (the
    stream that made it), new_shards, skipped (positions filled by a stand-in), data_errors (damaged shards and
    unreadable samples met since the last batch). `fetch`: S3 endpoint, retry budget per window, request
    time-out, node-local cache. `read_ahead`: read each source's next window in the background.
    """

    def __init__(self, plan: StreamPlan, segment: Segment, transform: Callable, rank: int = 0,
                 start_micro: int = 0, fetch: ShardFetch | None = None, accum: int | None = None,
                 read_ahead: bool = True):
        self.plan, self.segment, self.transform, self.rank = plan, segment, transform, rank
        self.start_micro, self.fetch, self.accum, self.read_ahead = start_micro, fetch, accum, read_ahead
        # This process starts the DataLoader workers, by fork. OpenCV's thread pool does not survive a fork (a
        # worker setting its OpenCV threads waits forever on the pool's dead threads), so give it up here: the
        # process that trains decodes nothing, its workers do, each with one OpenCV thread (worker_init).
        cv2.setNumThreads(1)

    def next_segment(self, seg: Segment) -> Segment:
        """The next epoch, laid out afresh as the Trainer lays it out."""
        return Segment.start(seg.epoch + 1, ((0, sum(self.plan.counts)),), seg.world, seg.workers, seg.micro_batch,
                             self.accum)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict]]:
        info = get_worker_info()
        loader_worker, workers = (info.id, info.num_workers) if info else (0, 1)
        seg, start = self.segment, self.start_micro
        if workers != seg.workers:
            raise ValueError(f"the segment was laid out for {seg.workers} loader workers, the DataLoader has {workers}")
        reader = WindowReader(self.fetch, self.read_ahead)
        # DataLoader deals batches round-robin from loader worker 0 on, and micro-batch m of a segment belongs to
        # stream m % workers: after `dealt` batches of earlier segments, starting this one at `start`, loader
        # worker w plays stream (w + start - dealt) % workers.
        current, dealt = _StreamEpoch(self.plan, seg, self.rank, (loader_worker + start) % workers, start, reader), 0
        while True:
            following = None
            if self.accum is not None:  # laid out now, so that its first windows are read before this epoch ends
                dealt += seg.micro_batches - start
                seg, start = self.next_segment(seg), 0
                following = _StreamEpoch(self.plan, seg, self.rank, (loader_worker - dealt) % workers, 0, reader)
            yield from current.batches(self.transform, workers)
            if following is None:
                return
            current = following
