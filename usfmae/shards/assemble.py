"""Stream a shard's inputs into samples, cleaning frames in batches that may span inputs.

    for ref, outcome in assemble(spec.inputs, settings):   # in input order
        ... outcome.samples, or outcome.reject with the reason

Per input: read frames lazily, drop near-duplicate cine frames (dHash vs frames kept from the same
input), queue the rest. Whenever `settings.cleaning_batch` frames are queued they are cleaned in one
`clean_images` call (the fast pipeline then makes one Tesseract call for the whole batch, spreading
its start-up over many stills). An input is handed back once it is fully read and all its frames are
cleaned. A read error at any frame (a truncated cine raises after its readable frames) rejects the
whole input: its queued frames are dropped and none of its samples are kept.

Any exception while an input is read, deduplicated, cleaned or encoded rejects that input alone with a
readable reason (the original is logged): one malformed file never fails its shard.

Batches depend only on the shard's inputs and their order, so a rebuilt shard is byte-identical.
Memory: at most `cleaning_batch` decoded frames plus the encoded samples of inputs not yet handed back.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from usfmae.cleaning import clean_image, clean_images
from usfmae.io import Frame, ReadError, iter_frames, source_hash
from usfmae.io.frame import detail

from .plan import InputRef
from .samples import FrameSettings, InputOutcome, NearDuplicates, Sample, make_sample

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PendingInput:
    ref: InputRef
    source: str  # salted hash of the relative path
    outcome: InputOutcome = field(default_factory=InputOutcome)
    samples: dict[int, Sample] = field(default_factory=dict)  # queue position -> sample
    queued: int = 0  # frames still waiting to be cleaned
    read_done: bool = False


@dataclass(eq=False)
class QueuedFrame:
    owner: PendingInput
    position: int  # order of this frame among the owner's kept frames
    frame: Frame


def reject(item: PendingInput, reason: str, batch: list[QueuedFrame]) -> None:
    """Drop everything of `item`: its samples and its frames still in the batch."""
    item.outcome = InputOutcome(frames_read=item.outcome.frames_read, reject=reason)
    item.samples.clear()
    batch[:] = [q for q in batch if q.owner is not item]
    item.queued = 0


def clean_batch(batch: list[QueuedFrame], settings: FrameSettings) -> None:
    """Clean the queued frames in one call and store their samples with their inputs; empties `batch`.

    If the batch call fails on bad pixels, frames are cleaned one by one so that only the input
    holding the offending frame is rejected.
    """
    sources = [f"{q.owner.ref.name} frame {q.frame.index}" for q in batch]
    start = time.perf_counter()
    try:
        results = clean_images([q.frame.image for q in batch], settings.cleaning, sources)
    except Exception:  # bad pixels somewhere in the batch: find the input by cleaning frame by frame
        results = None
    for i, q in enumerate(list(batch)):
        if q.owner.outcome.reject is not None:
            continue
        try:
            cleaned = results[i] if results is not None else clean_image(q.frame.image, settings.cleaning, sources[i])
            sample = make_sample(q.owner.ref, q.frame, q.owner.source, cleaned, settings.image_size)
        except Exception as err:
            log.warning("%s: cleaning failed", sources[i], exc_info=True)
            reject(q.owner, f"cleaning failed on frame {q.frame.index} ({detail(err)})", batch)
            continue
        q.owner.samples[q.position] = sample
        q.owner.queued -= 1
    seconds = time.perf_counter() - start
    for q in batch:
        q.owner.outcome.cleaning_seconds += seconds / len(batch)
    batch.clear()


def read_input(item: PendingInput, batch: list[QueuedFrame], settings: FrameSettings) -> None:
    """Queue the kept frames of one input, cleaning the batch whenever it is full."""
    repeats = NearDuplicates(settings.dedup.max_distance)
    compare = settings.dedup.near_duplicates
    try:
        for frame in iter_frames(item.ref.path, settings.reader, root=item.ref.root):
            item.outcome.frames_read += 1
            if compare and frame.kind in settings.dedup.kinds and repeats.seen(frame.image):
                item.outcome.near_duplicates += 1
                continue
            batch.append(QueuedFrame(item, item.queued + len(item.samples), frame))
            item.queued += 1
            if len(batch) >= settings.cleaning_batch:
                clean_batch(batch, settings)
                if item.outcome.reject is not None:
                    return
    except ReadError as err:
        reject(item, err.reason, batch)
    except Exception as err:  # outside the reader (dedup hash, a cleaning batch): still this input only
        log.warning("%s: unexpected %s", item.ref.name, type(err).__name__, exc_info=True)
        reject(item, f"failed while being processed ({type(err).__name__}); see the shard task's log", batch)
    finally:
        item.read_done = True


def finished(pending: deque[PendingInput]) -> Iterator[tuple[InputRef, InputOutcome]]:
    """Hand back the leading inputs that are fully read and cleaned, in input order."""
    while pending and pending[0].read_done and pending[0].queued == 0:
        item = pending.popleft()
        if item.outcome.reject is None:
            item.outcome.samples = [item.samples[k] for k in sorted(item.samples)]
        yield item.ref, item.outcome


def assemble(inputs: Iterable[InputRef], settings: FrameSettings) -> Iterator[tuple[InputRef, InputOutcome]]:
    """(input, outcome) for every input, in order (module docstring)."""
    pending: deque[PendingInput] = deque()
    batch: list[QueuedFrame] = []
    for ref in inputs:
        item = PendingInput(ref, source_hash(ref.relpath, settings.salt))
        pending.append(item)
        read_input(item, batch, settings)
        yield from finished(pending)
    if batch:
        clean_batch(batch, settings)
    yield from finished(pending)
