"""Deterministic, resumable shard streaming for pretraining.

Each epoch the shards of every source are permuted from (seed, epoch), dealt to ranks, then to
DataLoader workers. A worker groups its shards, in order, into shuffle windows of consecutive shards
holding at least `shuffle_buffer` samples (one shard per window when shards are at least that large),
reads one window at a time, shuffles its samples from a seeded permutation, and cycles through its
shards again (new permutations) if the epoch needs more samples than it holds, so every rank yields
exactly the same number of batches whatever the shard sizes.

Because every choice is a function of (seed, epoch, rank, worker, position) and windows are cut from
the manifest counts, the stream position is fully described by the number of batches consumed: a
resumed run skips whole windows without opening their shards and continues with exactly the samples
an uninterrupted run would have seen.

Batches are uint8 [B, C, S, S]: C = 1 when every image of the batch is stored gray, else 3 (gray
images replicated). Normalisation is the consumer's job (transforms.normalize_batch, on the device).
"""

import io
import math
import tarfile
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_iterator

from . import s3
from .sources import Shard


@dataclass(frozen=True)
class StreamPlan:
    """What one rank's loader must produce in one epoch."""
    sources: Sequence[Sequence[Shard]]
    weights: Sequence[float]
    batch_size: int
    batches_per_epoch: int  # per rank
    rank: int
    world_size: int
    seed: int
    shuffle_buffer: int = 0  # samples: shards are shuffled together in windows holding at least this many


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


def worker_shards(shards: Sequence[Shard], seed: int, epoch: int, source: int, rank: int, world: int,
                  worker: int, num_workers: int) -> list[Shard]:
    """This worker's shards for the epoch: permuted per epoch, split by node (rank) then by worker."""
    order = _rng(seed, epoch, source, 1).permutation(len(shards))
    streams = world * num_workers
    slot = rank * num_workers + worker
    mine = [shards[i] for i in order[slot::streams]]
    if not mine:  # fewer shards than streams: share them, offset so streams start on different shards
        mine = [shards[order[slot % len(shards)]]]
    return mine


def read_shard(url: str, endpoint_url: str | None = None) -> list[dict]:
    """All samples of a tar shard as dicts of raw bytes (keys: __key__, png, json, ...)."""
    try:
        data = s3.read_bytes(url, endpoint_url) if url.startswith("s3://") else open(url, "rb").read()
        files = ({**f, "__url__": url} for f in tar_file_iterator(io.BytesIO(data)))
        return list(group_by_keys(files))
    except (OSError, tarfile.TarError, ValueError) as e:
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


class SourceStream:
    """Infinite sample stream of one source for one (rank, worker), positioned by samples consumed.

    The samples of one shuffle window (shuffle_windows) are held in memory and yielded in a permutation
    drawn from (seed, epoch, source, cycle, window).
    """

    def __init__(self, shards: list[Shard], seed: int, epoch: int, source: int, endpoint_url: str | None,
                 shuffle_buffer: int = 0):
        self.shards, self.seed, self.epoch, self.source = shards, seed, epoch, source
        self.endpoint_url = endpoint_url
        self.windows = shuffle_windows(shards, shuffle_buffer)
        self.shards_opened: list[str] = []

    def samples(self, skip: int = 0) -> Iterator[dict]:
        total = sum(s.samples for s in self.shards)
        if total == 0:
            raise RuntimeError(f"shards of source {self.source} hold no samples: "
                               + ", ".join(s.url for s in self.shards[:3]))
        for cycle in range(1_000_000):
            for w, window in enumerate(self.windows):
                size = sum(self.shards[i].samples for i in window)
                if skip >= size:  # resume: skip whole windows from manifest counts, unopened
                    skip -= size
                    continue
                samples = []
                for i in window:
                    samples += read_shard(self.shards[i].url, self.endpoint_url)
                    self.shards_opened.append(self.shards[i].url)
                perm = _rng(self.seed, self.epoch, self.source, cycle, w).permutation(len(samples))
                for j in perm[skip:]:
                    yield samples[j]
                skip = 0
                del samples  # free the window before the next one is read


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


class PretrainStream(IterableDataset):
    """Yields (uint8 images [B, C, S, S], info dict) batches; exactly plan.batches_per_epoch per rank and epoch.

    `transform` maps a decoded uint8 array to a uint8 [C, S, S] tensor (transforms.pretrain_transform).
    """

    def __init__(self, plan: StreamPlan, transform: Callable, epoch: int = 0, start_batch: int = 0,
                 endpoint_url: str | None = None):
        self.plan, self.transform, self.epoch = plan, transform, epoch
        self.start_batch, self.endpoint_url = start_batch, endpoint_url

    def worker_batches(self, worker: int, num_workers: int) -> int:
        """Batches of this epoch produced by stream `worker` (batches worker, worker + W, ...)."""
        return len(range(worker, self.plan.batches_per_epoch, num_workers))

    def _source_choices(self, worker: int, n: int) -> np.ndarray:
        p = self.plan
        w = np.asarray(p.weights, dtype=np.float64)
        return _rng(p.seed, self.epoch, p.rank, worker, 2).choice(len(p.sources), size=n, p=w / w.sum())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict]]:
        info = get_worker_info()
        loader_worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        # DataLoader deals batches round-robin starting at loader worker 0. Stream `s` makes the epoch's
        # batches s, s + W, ...; after a resume at `start_batch`, loader worker 0 must play the stream
        # that makes batch `start_batch`, so the global order is the same as without the restart.
        worker = (loader_worker + self.start_batch) % num_workers
        p = self.plan
        mine = self.worker_batches(worker, num_workers)
        done = len(range(worker, self.start_batch, num_workers))  # batches this worker made before resume
        choices = self._source_choices(worker, mine * p.batch_size)
        skips = np.bincount(choices[:done * p.batch_size], minlength=len(p.sources))
        streams = [SourceStream(worker_shards(s, p.seed, self.epoch, k, p.rank, p.world_size, worker,
                                              num_workers), p.seed, self.epoch, k, self.endpoint_url,
                                p.shuffle_buffer)
                   for k, s in enumerate(p.sources)]
        iters = [st.samples(skip=int(skips[k])) for k, st in enumerate(streams)]
        for b in range(done, mine):
            batch_choices = choices[b * p.batch_size:(b + 1) * p.batch_size]
            # Seed the augmentations per batch so a resumed run augments exactly like an uninterrupted one.
            torch.manual_seed(int(_rng(p.seed, self.epoch, p.rank, worker, b).integers(2**62)))
            images, keys = [], []
            opened_before = [len(st.shards_opened) for st in streams]
            for k in batch_choices:
                sample = next(iters[k])
                images.append(self.transform(decode_image(sample)))
                keys.append(sample["__key__"])
            new_shards = [u for st, n in zip(streams, opened_before) for u in st.shards_opened[n:]]
            yield stack_images(images), {"keys": keys, "worker": worker, "batch": b, "new_shards": new_shards}


def batches_per_epoch(epoch_samples: int, batch_size: int, world_size: int) -> int:
    """Micro-batches every rank draws per epoch (at least one)."""
    return max(1, math.floor(epoch_samples / (batch_size * world_size)))
