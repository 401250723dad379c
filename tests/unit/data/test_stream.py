"""The pretraining stream: a world-size-independent epoch order, per-stream ranges, exact resume, mixing, S3."""

import os
from collections import Counter

import numpy as np
import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from usfmae.data import s3
from usfmae.data.epoch import EpochOrder, Segment, apportion, total
from usfmae.data.fetch import ShardFetch
from usfmae.data.sources import resolve
from usfmae.data.stream import PretrainStream, StreamPlan
from usfmae.data.windows import SourceSequence, shuffle_windows
from usfmae.data.transforms import normalize_batch, pretrain_transform

from shardutil import make_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("stream") / "a", [12, 5, 9, 2, 7, 11], size=64)


def plan(sources, counts=None, seed=0, buffer=0):
    return StreamPlan(sources, counts or [sum(s.samples for s in src) for src in sources], seed, buffer)


def segment(n, world=1, workers=1, batch=4, accum=1, epoch=0):
    return Segment.start(epoch, ((0, n),), world, workers, batch, accum)


def batches(stream_plan, seg, rank=0, workers=0, start=0, augment="none", endpoint=None):
    stream = PretrainStream(stream_plan, seg, pretrain_transform(32, augment), rank, start, ShardFetch(endpoint))
    return list(DataLoader(stream, batch_size=None, num_workers=workers))


def epoch_keys(stream_plan, n, world, workers, batch=4, accum=1, epoch=0):
    """Keys of every micro-batch of every rank of one epoch."""
    seg = segment(n, world, workers, batch, accum, epoch)
    return [k for r in range(world) for _, info in batches(stream_plan, seg, r, workers if workers > 1 else 0)
            for k in info["keys"]]


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 1), (3, 2)])
def test_an_epoch_gives_each_sample_once_at_any_world_size(shards, world, workers):
    src = resolve(str(shards))  # 46 samples in 6 shards of 2..12
    keys = epoch_keys(plan([src]), 46, world, workers, batch=2)
    g = 2 * world
    assert len(keys) == 46 // g * g and len(set(keys)) == len(keys)  # the tail (< one global batch) waits
    seg = segment(46, world, workers, batch=2)
    assert seg.micro_batches == 46 // g  # every rank draws the same number of micro-batches


def test_more_streams_than_shards_never_read_a_sample_twice(tmp_path):
    src = resolve(str(make_shards(tmp_path / "few", [20, 20, 8], size=64)))  # 3 shards, 48 samples
    world, workers = 4, 2  # 8 streams
    keys = epoch_keys(plan([src], buffer=0), 48, world, workers, batch=2)
    assert len(keys) == 48 and Counter(keys).most_common(1)[0][1] == 1


def test_epoch_order_is_independent_of_the_world_size_and_reshuffled_per_epoch(shards):
    src = resolve(str(shards))
    one = epoch_keys(plan([src]), 46, 1, 1, batch=2)  # positions 0..45 in order
    two = epoch_keys(plan([src]), 46, 2, 1, batch=2)  # 11 steps of 4: rank 0 gets 0..21, rank 1 22..43
    assert two == one[:44]  # position p is the same sample whatever splits the positions among ranks
    other_epoch = epoch_keys(plan([src]), 46, 1, 1, batch=2, epoch=1)
    assert sorted(other_epoch) == sorted(one) and other_epoch != one  # reshuffled per epoch


@pytest.mark.parametrize("augment,buffer", [("fused", 0), ("torchvision", 0), ("fused", 20)])
def test_resume_mid_segment_continues_with_the_same_samples_and_pixels(shards, augment, buffer):
    src = resolve(str(shards))
    seg = segment(46, 1, 2, batch=4, epoch=3)
    full = batches(plan([src], buffer=buffer), seg, workers=2, augment=augment)
    tail = batches(plan([src], buffer=buffer), seg, workers=2, start=5, augment=augment)
    assert len(full) == 11 and len(tail) == 6 and [i["micro"] for _, i in tail] == list(range(5, 11))
    for (a, ia), (b, ib) in zip(full[5:], tail):
        assert ia["keys"] == ib["keys"]
        assert torch.equal(a, b)  # augmentations are seeded per position


def test_a_new_layout_takes_exactly_the_positions_left(shards):
    """Resumed on another world size: the remaining positions, each once, nothing consumed again."""
    src = resolve(str(shards))
    first = segment(46, world=2, workers=2, batch=2, accum=1)
    done = 5  # micro-batches per rank
    seen = [k for r in range(2) for _, i in batches(plan([src]), first, r, workers=2)[:done] for k in i["keys"]]
    left = first.remaining_after(done)
    assert total(left) == 46 - len(seen)
    second = Segment.start(0, left, 3, 1, 2, 1)
    rest = [k for r in range(3) for _, i in batches(plan([src]), second, r) for k in i["keys"]]
    assert not set(seen) & set(rest) and len(set(rest)) == len(rest)
    assert len(seen) + len(rest) == 46 - total(second.remaining_after(second.micro_batches))


def test_weighted_mixing_of_two_sources_has_exact_counts(tmp_path, shards):
    other = make_shards(tmp_path / "b", [10, 10], size=64, prefix="inst")
    sources = [resolve(str(other)), resolve(str(shards))]
    counts = apportion(200, [0.7, 0.3])
    assert counts == [140, 60]
    keys = epoch_keys(plan(sources, counts), 200, 1, 1, batch=4)
    assert sum(k.startswith("inst") for k in keys) == 140  # 7 passes over the 20 institutional images
    order = EpochOrder(counts, 0, 0)
    assert [int(c) for c in order.block_counts.sum(0)] == counts
    firsts = [k for _, k, _ in order.walk(0, 50)]
    assert 0.5 < np.mean(np.array(firsts) == 0) < 0.9  # mixed from the start, not one source then the other


def test_shuffle_buffer_mixes_shards_in_windows_and_keeps_each_sample_once(shards):
    src = resolve(str(shards))  # sizes 12, 5, 9, 2, 7, 11
    assert shuffle_windows(src, 0) == [[0], [1], [2], [3], [4], [5]]
    assert shuffle_windows(src, 10) == [[0], [1, 2], [3, 4, 5]]
    assert shuffle_windows(src, 1000) == [[0, 1, 2, 3, 4, 5]]

    def first_cycle(buffer, start=0):
        seq = SourceSequence(src, seed=0, epoch=0, source=0, shuffle_buffer=buffer)
        return [seq[i]["__key__"] for i in range(start, 46)]

    within, across = first_cycle(0), first_cycle(1000)
    assert sorted(within) == sorted(across) and len(set(across)) == 46  # a permutation of every sample
    shard_of = [k.split("_")[0] for k in within]
    assert shard_of == sorted(shard_of, key=shard_of.index)  # buffer 0: one shard after another
    assert len({k.split("_")[0] for k in across[:12]}) >= 4  # one window: shards interleave
    assert across == first_cycle(1000)  # seeded
    assert first_cycle(10, 14) == first_cycle(10)[14:]  # random access = the same sequence


def test_gray_shards_give_one_channel_batches_and_mixed_batches_three(tmp_path, shards):
    gray = resolve(str(make_shards(tmp_path / "g", [6, 6], size=64, gray=True, prefix="g")))
    got = batches(plan([gray]), segment(12, batch=4), augment="fused")
    assert all(x.shape == (4, 1, 32, 32) and x.dtype == torch.uint8 for x, _ in got)
    assert normalize_batch(got[0][0]).shape == (4, 3, 32, 32)
    # the same images stored gray or RGB (3-channel PNGs) give the same pixels
    rgb = resolve(str(make_shards(tmp_path / "c", [6, 6], size=64, prefix="g")))
    same = batches(plan([rgb]), segment(12, batch=4), augment="fused")
    for (g, gi), (c, ci) in zip(got, same):
        assert gi["keys"] == ci["keys"] and torch.equal(g.expand(-1, 3, -1, -1), c)
    mixed = batches(plan([gray, resolve(str(shards))]), segment(58, batch=4))
    both = [x for x, info in mixed if len({k[0] for k in info["keys"]}) == 2]
    assert both and all(x.shape[1] == 3 for x in both)  # gray replicated next to colour


def test_corrupt_shard_names_the_file(tmp_path):
    bad = make_shards(tmp_path / "bad", [3], size=64)
    (bad / "shard-000000.tar").write_bytes(b"not a tar at all" * 10)
    with pytest.raises(RuntimeError, match="shard-000000.tar"):
        batches(plan([resolve(str(bad))]), segment(3, batch=1))


def test_s3_retries_stop_at_the_budget(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(s3.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(s3.time, "sleep", lambda d: clock.__setitem__("t", clock["t"] + d))
    calls = []

    def failing():
        calls.append(clock["t"])
        clock["t"] += 5.0  # each attempt takes 5 s
        raise ConnectionError("unreachable")

    with pytest.raises(s3.S3Error, match=r"reading s3://b/k: failed after \d+ attempt\(s\) .*retry budget 60 s"):
        s3.with_retries("reading s3://b/k", failing, attempts=1000, budget_s=60)
    assert clock["t"] < 60 and len(calls) > 3  # retried, and gave up before the budget ran out


def test_streaming_from_s3_http_endpoint(moto_s3, shards):
    client = s3.s3_client(moto_s3)
    client.create_bucket(Bucket="corpus")
    for f in sorted(shards.iterdir()):
        client.upload_file(str(f), "corpus", f"openus/{f.name}")
    src = resolve("s3://corpus/openus", moto_s3)
    assert [s.samples for s in src] == [s.samples for s in resolve(str(shards))]
    from_s3 = [i["keys"] for _, i in batches(plan([src]), segment(46, batch=4), endpoint=moto_s3)]
    local = [i["keys"] for _, i in batches(plan([resolve(str(shards))]), segment(46, batch=4))]
    assert from_s3 == local
    # stock webdataset reads s3:// through our boto3 opener (no `pipe:aws`)
    s3.register_webdataset_s3()
    os.environ[s3.ENDPOINT_ENV] = moto_s3
    try:
        n = sum(1 for _ in wds.WebDataset("s3://corpus/openus/shard-000001.tar", shardshuffle=False))
    finally:
        del os.environ[s3.ENDPOINT_ENV]
    assert n == 5
    with pytest.raises(s3.S3Error, match=r"reading s3://corpus/openus/missing.tar: NoSuchKey"):
        s3.read_bytes("s3://corpus/openus/missing.tar", moto_s3, attempts=5)  # a permanent answer: not retried


# ---------------------------------------------------------------------------- one loader for the whole run
def run_batches(stream_plan, seg, accum, n, rank=0, workers=0, start=0, fetch=None):
    """The first n micro-batches of one perpetual stream (the Trainer's: epoch after epoch)."""
    stream = PretrainStream(stream_plan, seg, pretrain_transform(32, "fused"), rank, start, fetch, accum=accum)
    out = []
    for item in DataLoader(stream, batch_size=None, num_workers=workers):
        out.append(item)
        if len(out) == n:
            return out


@pytest.mark.parametrize("world,rank,workers,start,first", [(1, 0, 2, 5, None), (2, 1, 3, 1, None),
                                                            (1, 0, 3, 0, ((30, 46),))])
def test_one_loader_goes_through_the_epochs_as_a_loader_per_epoch_would(shards, world, rank, workers, start, first):
    """Epochs of 11 or 5 micro-batches per rank over 2 or 3 workers (the round-robin shifts at each epoch),
    from mid-segment, and from a resumed segment of 4 micro-batches over 3 workers."""
    src, accum = resolve(str(shards)), 1
    stream_plan = plan([src], buffer=10)
    seg0 = Segment.start(3, first or ((0, 46),), world, workers, 4, accum)
    one = run_batches(stream_plan, seg0, accum, 30, rank, workers, start)
    per_epoch, seg, s = [], seg0, start
    while len(per_epoch) < 30:
        per_epoch += batches(stream_plan, seg, rank, workers, s, augment="fused")
        seg, s = Segment.start(seg.epoch + 1, ((0, 46),), world, workers, 4, accum), 0
    assert [(i["epoch"], i["micro"], i["keys"]) for _, i in one] == \
           [(i["epoch"], i["micro"], i["keys"]) for _, i in per_epoch[:30]]
    assert len({i["epoch"] for _, i in one}) >= 3
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(one, per_epoch))


@pytest.mark.parametrize("world,rank,start,counts", [(1, 0, 0, None), (2, 1, 3, [140, 60])])
def test_every_window_is_read_ahead_and_the_next_epoch_before_this_one_ends(tmp_path, shards, monkeypatch, world,
                                                                          rank, start, counts):
    """In-process (one stream): each window a source takes was requested in advance, the first windows of the
    next epoch before the last batch of this one, and nothing is read twice. Two sources, one of them cycled
    seven times per epoch, from mid-epoch on rank 1 of 2, in the second case."""
    from usfmae.data.windows import WindowReader

    sources = [resolve(str(shards))] if counts is None else [resolve(str(make_shards(tmp_path / "i", [10, 10],
                                                                                     prefix="inst"))), resolve(str(shards))]
    counts = counts or [46]
    events, take, ahead = [], WindowReader.take, WindowReader._ahead

    def recorded_take(self, key, shards_):
        events.append(("take", key, key in self.pending))
        return take(self, key, shards_)

    def recorded_ahead(self, source):
        before = set(self.pending)
        ahead(self, source)
        events.extend(("request", k) for k in set(self.pending) - before)

    monkeypatch.setattr(WindowReader, "take", recorded_take)
    monkeypatch.setattr(WindowReader, "_ahead", recorded_ahead)
    seg = Segment.start(0, ((0, sum(counts)),), world, 1, 4, 2)
    stream = PretrainStream(plan(sources, counts, buffer=10), seg, pretrain_transform(32, "none"), rank, start, accum=2)
    got = []
    for _, info in stream:
        events.append(("batch", info["epoch"], info["micro"]))
        got.append(info["epoch"])
        if info["epoch"] == 2:
            break
    takes = [e for e in events if e[0] == "take"]
    assert takes and all(hit for _, _, hit in takes)  # never waited for a read it had not asked for in advance
    requests = [e[1] for e in events if e[0] == "request"]
    assert len(requests) == len(set(requests))  # nothing read twice
    last_of_0 = max(i for i, e in enumerate(events) if e[:2] == ("batch", 0))
    for source in range(len(sources)):
        first_of_1 = min(i for i, e in enumerate(events) if e[0] == "request" and e[1][:2] == (1, source))
        assert first_of_1 < last_of_0
