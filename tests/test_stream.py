"""The pretraining stream: split by node then worker, exact batch counts, exact resume, mixing, S3."""

import os

import numpy as np
import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from usfmae.data import s3
from usfmae.data.sources import resolve
from usfmae.data.stream import PretrainStream, SourceStream, StreamPlan, shuffle_windows, worker_shards
from usfmae.data.transforms import normalize_batch, pretrain_transform

from shardutil import make_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("stream") / "a", [12, 5, 9, 2, 7, 11], size=64)


def plan(sources, rank=0, world=1, batches=6, batch=4, weights=None, seed=0, buffer=0):
    return StreamPlan(sources, weights or [1.0] * len(sources), batch, batches, rank, world, seed, buffer)


def keys_of(stream, workers=0):
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    return [info["keys"] for _, info in loader]


def test_shards_split_by_node_then_worker_and_reshuffled_per_epoch(shards):
    src = resolve(str(shards))
    for epoch in (0, 1):
        parts = [worker_shards(src, 0, epoch, 0, r, 2, w, 3) for r in range(2) for w in range(3)]
        flat = [s.url for p in parts for s in p]
        assert sorted(flat) == sorted(s.url for s in src) and len(flat) == len(set(flat))
    e0 = [s.url for s in worker_shards(src, 0, 0, 0, 0, 1, 0, 1)]
    e1 = [s.url for s in worker_shards(src, 0, 1, 0, 0, 1, 0, 1)]
    assert sorted(e0) == sorted(e1) and e0 != e1
    assert e0 == [s.url for s in worker_shards(src, 0, 0, 0, 0, 1, 0, 1)]  # same seed and epoch, same order


@pytest.mark.parametrize("workers", [0, 2])
def test_every_rank_yields_the_same_number_of_batches(shards, workers):
    src = resolve(str(shards))
    t = pretrain_transform(32)
    for rank in range(2):
        got = list(DataLoader(PretrainStream(plan([src], rank, 2, batches=7), t), batch_size=None,
                              num_workers=workers))
        assert len(got) == 7
        # uint8 out of the loader (normalised on the device); these RGB shards are the first shard format
        assert all(imgs.shape == (4, 3, 32, 32) and imgs.dtype == torch.uint8 for imgs, _ in got)


@pytest.mark.parametrize("augment,buffer", [("fused", 0), ("torchvision", 0), ("fused", 20)])
def test_resume_mid_epoch_continues_with_the_same_samples_and_pixels(shards, augment, buffer):
    src = resolve(str(shards))
    t = pretrain_transform(32, augment)
    full = list(DataLoader(PretrainStream(plan([src], batches=9, buffer=buffer), t, epoch=3), batch_size=None,
                           num_workers=2))
    tail = list(DataLoader(PretrainStream(plan([src], batches=9, buffer=buffer), t, epoch=3, start_batch=5),
                           batch_size=None, num_workers=2))
    assert len(tail) == 4
    for (a, ia), (b, ib) in zip(full[5:], tail):
        assert ia["keys"] == ib["keys"]
        assert torch.equal(a, b)  # augmentations are seeded per batch


def test_weighted_mixing_of_two_sources(tmp_path, shards):
    other = make_shards(tmp_path / "b", [10, 10], size=64, prefix="inst")
    sources = [resolve(str(other)), resolve(str(shards))]
    keys = [k for batch in keys_of(PretrainStream(plan(sources, batches=50, weights=[0.7, 0.3]),
                                                  pretrain_transform(32, "none"))) for k in batch]
    frac = np.mean([k.startswith("inst") for k in keys])
    assert 0.62 < frac < 0.78  # 200 draws at p=0.7


def test_shuffle_buffer_mixes_shards_in_windows_and_keeps_each_sample_once(shards):
    src = resolve(str(shards))  # sizes 12, 5, 9, 2, 7, 11
    assert shuffle_windows(src, 0) == [[0], [1], [2], [3], [4], [5]]
    assert shuffle_windows(src, 10) == [[0], [1, 2], [3, 4, 5]]
    assert shuffle_windows(src, 1000) == [[0, 1, 2, 3, 4, 5]]

    def first_cycle(buffer):
        it = SourceStream(src, seed=0, epoch=0, source=0, endpoint_url=None, shuffle_buffer=buffer).samples()
        return [next(it)["__key__"] for _ in range(46)]

    within, across = first_cycle(0), first_cycle(1000)
    assert sorted(within) == sorted(across) and len(set(across)) == 46  # a permutation of every sample
    shard_of = [k.split("_")[0] for k in within]
    assert shard_of == sorted(shard_of, key=shard_of.index)  # buffer 0: one shard after another
    assert len({k.split("_")[0] for k in across[:12]}) >= 4  # one window: shards interleave
    assert across == first_cycle(1000)  # seeded
    # resume inside a window: the rest of the same permutation, without the skipped samples
    it = SourceStream(src, 0, 0, 0, None, shuffle_buffer=10).samples(skip=14)
    assert [next(it)["__key__"] for _ in range(32)] == first_cycle(10)[14:]


def test_gray_shards_give_one_channel_batches_and_mixed_batches_three(tmp_path, shards):
    gray = resolve(str(make_shards(tmp_path / "g", [6, 6], size=64, gray=True, prefix="g")))
    t = pretrain_transform(32)
    batches = list(DataLoader(PretrainStream(plan([gray], batches=3), t), batch_size=None))
    assert all(x.shape == (4, 1, 32, 32) and x.dtype == torch.uint8 for x, _ in batches)
    assert normalize_batch(batches[0][0]).shape == (4, 3, 32, 32)
    # the same images stored gray or RGB (first shard format) give the same pixels
    rgb = resolve(str(make_shards(tmp_path / "c", [6, 6], size=64, prefix="g")))
    same = list(DataLoader(PretrainStream(plan([rgb], batches=3), t), batch_size=None))
    for (g, gi), (c, ci) in zip(batches, same):
        assert gi["keys"] == ci["keys"] and torch.equal(g.expand(-1, 3, -1, -1), c)
    mixed = list(DataLoader(PretrainStream(plan([gray, resolve(str(shards))], batches=4), t), batch_size=None))
    both = [x for x, info in mixed if len({k[0] for k in info["keys"]}) == 2]
    assert both and all(x.shape[1] == 3 for x in both)  # gray replicated next to colour


def test_corrupt_shard_names_the_file(tmp_path):
    bad = make_shards(tmp_path / "bad", [3], size=64)
    (bad / "shard-000000.tar").write_bytes(b"not a tar at all" * 10)
    with pytest.raises(RuntimeError, match="shard-000000.tar"):
        keys_of(PretrainStream(plan([resolve(str(bad))], batches=1), pretrain_transform(32)))


@pytest.fixture(scope="module")
def moto_s3():
    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_streaming_from_s3_http_endpoint(moto_s3, shards):
    client = s3.s3_client(moto_s3)
    client.create_bucket(Bucket="corpus")
    for f in sorted(shards.iterdir()):
        client.upload_file(str(f), "corpus", f"openus/{f.name}")
    src = resolve("s3://corpus/openus", moto_s3)
    assert [s.samples for s in src] == [s.samples for s in resolve(str(shards))]
    t = pretrain_transform(32, "none")
    from_s3 = keys_of(PretrainStream(plan([src], batches=5), t, endpoint_url=moto_s3))
    local = keys_of(PretrainStream(plan([resolve(str(shards))], batches=5), t))
    assert from_s3 == local
    # stock webdataset reads s3:// through our boto3 opener (no `pipe:aws`)
    s3.register_webdataset_s3()
    os.environ[s3.ENDPOINT_ENV] = moto_s3
    try:
        n = sum(1 for _ in wds.WebDataset("s3://corpus/openus/shard-000001.tar", shardshuffle=False))
    finally:
        del os.environ[s3.ENDPOINT_ENV]
    assert n == 5
    with pytest.raises(s3.S3Error, match=r"s3://corpus/openus/missing.tar.*2 attempts"):
        s3.read_bytes("s3://corpus/openus/missing.tar", moto_s3, attempts=2)
