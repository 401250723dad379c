"""Faults while streaming: damaged shards mid-epoch, S3 errors and stalls (moto's HTTP server behind a
fault-injecting proxy), the per-window retry budget, and the node-local shard cache."""

import fcntl
import json
import threading
import time
from collections import Counter

import pytest
from torch.utils.data import DataLoader

from usfmae.data import s3
from usfmae.data.cache import ShardCache
from usfmae.data.epoch import Segment
from usfmae.data.fetch import ShardFetch, salvage
from usfmae.data.sources import resolve
from usfmae.data.stream import PretrainStream, StreamPlan
from usfmae.data.transforms import pretrain_transform
from usfmae.data.windows import read_window
from usfmae.shards.manifest import MANIFEST_NAME
from usfmae.testing.s3proxy import FaultProxy

from shardutil import damage, make_shards
from test_stream import batches, run_batches


@pytest.fixture
def damaged(tmp_path):
    folder = make_shards(tmp_path / "d", [12, 12, 12, 12], size=64)
    whole, lost = damage(folder, "shard-000001.tar", ("shard-000002.tar", "shard002_000030"))
    assert 0 < lost < 12 and len(whole) + lost == 11  # the sample cut through has no image left
    return folder, whole, lost


def test_a_damaged_shard_mid_epoch_is_skipped_and_every_rank_keeps_its_micro_batches(damaged):
    """A truncated shard and an undecodable image, shuffled in windows with good shards, on 2 ranks: each rank
    makes its planned micro-batches, every whole sample is trained on, each lost position takes a stand-in from
    its window, the faults name the shard and the sample, and a resumed stream makes the same choices."""
    folder, whole, lost = damaged
    src = resolve(str(folder))
    stream_plan = StreamPlan([src], [48], 0, 20)
    seg = Segment.start(0, ((0, 48),), 2, 1, 4, 1)
    ranks = [batches(stream_plan, seg, rank) for rank in range(2)]
    assert [len(r) for r in ranks] == [seg.micro_batches] * 2 == [6, 6]
    keys = [k for r in ranks for _, i in r for k in i["keys"]]
    assert len(keys) == 48
    good = {f"shard{n // 12:03d}_{n:06d}" for n in range(48)} - {f"shard001_{n:06d}" for n in range(12, 24)}
    good = (good | whole) - {"shard002_000030"}
    assert good <= set(keys) and "shard002_000030" not in keys  # no whole sample dropped, the junk one replaced
    skipped = sum(i["skipped"] for r in ranks for _, i in r)
    assert skipped == lost + 2 == sum(c - 1 for c in Counter(keys).values())  # each stand-in repeats a sample
    errors = [e for r in ranks for _, i in r for e in i["data_errors"]]
    truncated = [e for e in errors if e["shard"].endswith("shard-000001.tar")]
    assert truncated and truncated[0]["lost"] == lost and truncated[0]["key"].startswith("shard001_")
    assert "tar breaks off" in truncated[0]["error"] and "bytes, the manifest says" in truncated[0]["error"]
    cut_through = f"shard001_{12 + len(whole):06d}"
    assert {(e["shard"].rsplit("/", 1)[1], e["key"], e["error"]) for e in errors if "lost" not in e} \
        == {("shard-000002.tar", "shard002_000030", "undecodable png"), ("shard-000001.tar", cut_through, "no image")}
    assert truncated[0]["key"] == cut_through  # the sample being read when the tar broke off
    resumed = batches(stream_plan, seg, 1, start=2)
    assert [i["keys"] for _, i in resumed] == [i["keys"] for _, i in ranks[1][2:]]


def test_an_intact_shard_that_disagrees_with_its_manifest_is_an_error(tmp_path):
    folder = make_shards(tmp_path / "m", [5, 5], size=64)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["shards"][0]["samples"] = 6
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    shard = resolve(str(folder))[0]
    with pytest.raises(RuntimeError, match="shard-000000.tar holds 5 samples, its manifest says 6: rebuild"):
        salvage(shard, (folder / "shard-000000.tar").read_bytes())


# ---------------------------------------------------------------------------- S3 faults
@pytest.fixture(scope="module")
def corpus(moto_s3, tmp_path_factory):
    """Four shards in s3://faults/c (12, 12, 12, 10 samples) and their local copy."""
    local = make_shards(tmp_path_factory.mktemp("faults") / "c", [12, 12, 12, 10], size=64)
    client = s3.s3_client(moto_s3)
    client.create_bucket(Bucket="faults")
    for f in sorted(local.iterdir()):
        client.upload_file(str(f), "faults", f"c/{f.name}")
    return local, resolve("s3://faults/c", moto_s3)


@pytest.fixture
def proxy(moto_s3):
    p = FaultProxy(moto_s3).start()
    yield p
    p.stop()


@pytest.mark.parametrize("fault", ["503x2", "500_for_1s", "stall_1s"])
def test_s3_errors_and_stalls_for_a_while_are_retried_within_the_budget(corpus, proxy, fault):
    local, remote = corpus
    if fault == "503x2":
        proxy.fail(503, count=2)
    elif fault == "500_for_1s":
        proxy.fail(500, seconds=1.0)
    else:
        proxy.stall(1.0)  # no answer: each request times out after 0.4 s, then is retried
    how = ShardFetch(proxy.url, budget_s=30, timeout_s=0.4)
    window = read_window(remote[:2], how)
    intact = read_window(resolve(str(local))[:2], ShardFetch())
    assert [s["__key__"] for s in window.samples] == [s["__key__"] for s in intact.samples] and not window.faults
    first = remote[0].url.removeprefix("s3://")
    assert proxy.gets(first) >= 2 and proxy.gets(remote[1].url.removeprefix("s3://")) == 1


def test_s3_retry_budget_is_per_window_and_the_error_names_shard_endpoint_and_budget(corpus, proxy):
    """A window of two shards with S3 answering 503 throughout: the budget runs out on the first shard and the
    second is never tried (a budget per shard would spend it twice); through the stream the error reaches the
    consumer from a loader worker."""
    _, remote = corpus
    proxy.fail(503, seconds=120)
    how = ShardFetch(proxy.url, budget_s=1.2, timeout_s=5)
    with pytest.raises(RuntimeError) as err:
        read_window(remote[:2], how)
    message = str(err.value)
    assert remote[0].url in message and f"not read yet: {remote[1].url}" in message
    assert f"endpoint {proxy.url}" in message and "retry budget 1.2 s per window" in message and "SlowDown" in message
    assert proxy.gets(remote[1].url.removeprefix("s3://")) == 0
    stream_plan = StreamPlan([remote], [46], 0, 1000)  # one window of all four shards
    stream = PretrainStream(stream_plan, Segment.start(0, ((0, 46),), 1, 1, 4, 1), pretrain_transform(32, "none"), 0, 0,
                            how)
    with pytest.raises(RuntimeError, match=r"cannot read shard s3://faults/c/shard-0000\d\d.tar \(endpoint "):
        next(iter(DataLoader(stream, batch_size=None, num_workers=1)))


# ---------------------------------------------------------------------------- the node-local cache
def test_cache_downloads_each_shard_once_over_epochs_windows_and_workers(corpus, proxy, tmp_path):
    """Two epochs from one loader with 2 workers (adjacent streams share a boundary window) with a cache: one
    GET per shard; the same batches as without it, which downloads again every epoch."""
    local, remote = corpus
    stream_plan = StreamPlan([remote], [46], 0, 20)
    seg = Segment.start(0, ((0, 46),), 1, 2, 4, 1)
    n = 2 * seg.micro_batches  # two epochs

    def run(cache):
        how = ShardFetch(proxy.url, budget_s=30, timeout_s=5, cache=cache)
        return [(i["epoch"], i["keys"]) for _, i in run_batches(stream_plan, seg, 1, n, workers=2, fetch=how)]

    before = dict(proxy.requests)
    uncached = run(None)
    gets_uncached = sum(v - before.get(k, 0) for k, v in proxy.requests.items() if k[0] == "GET")
    before = dict(proxy.requests)
    cached = run(ShardCache(tmp_path / "cache", 10**9, proxy.url))
    assert cached == uncached and {e for e, _ in cached} == {0, 1}
    gets = {k[1]: v - before.get(k, 0) for k, v in proxy.requests.items() if k[0] == "GET"}
    assert {k: v for k, v in gets.items() if v} == {f"/faults/c/shard-{i:06d}.tar": 1 for i in range(4)}
    assert gets_uncached > 2 * 4  # every epoch downloads every shard, boundary windows once per stream


def test_cache_refetches_a_damaged_copy_and_evicts_the_least_recently_used(corpus, moto_s3, tmp_path):
    local, remote = corpus
    size = max(s.bytes for s in remote)
    cache = ShardCache(tmp_path / "c", 2 * size + 1, moto_s3)  # room for two shards
    fetched = Counter()

    def get(shard):
        def download():
            fetched[shard.url] += 1
            return s3.read_bytes(shard.url, moto_s3)
        return cache.get(shard.url, download, lambda d: d == (local / shard.url.rsplit("/", 1)[1]).read_bytes())

    a, b, c = remote[:3]
    get(a), get(b)
    path = cache.path(a.url)
    path.write_bytes(path.read_bytes()[:100])  # truncated copy
    assert get(a) == (local / "shard-000000.tar").read_bytes() and fetched[a.url] == 2  # checked, fetched again
    get(b)  # b used after a: a is the least recently used
    get(c)
    assert not cache.path(a.url).exists() and cache.path(b.url).exists() and cache.path(c.url).exists()
    assert fetched == {a.url: 2, b.url: 1, c.url: 1}


def test_cache_shared_by_concurrent_fetchers_downloads_once(tmp_path):
    """Four fetchers (threads here; ranks and workers are processes: the lock is an flock either way) want the
    same shard at once: one downloads, the others wait and read its copy."""
    cache = ShardCache(tmp_path / "c", 10**6)
    calls, start = [], threading.Barrier(4)

    def download():
        calls.append(1)
        threading.Event().wait(0.3)  # a slow GET, so the others arrive while it runs
        return b"x" * 1000

    def fetch(out):
        start.wait()
        out.append(cache.get("s3://b/shard.tar", download, lambda d: len(d) == 1000))

    outs = [[] for _ in range(4)]
    threads = [threading.Thread(target=fetch, args=(out,)) for out in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and all(o == [b"x" * 1000] for o in outs)
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.endswith(".tmp")]
    # a waiter whose budget runs out while another process holds the shard's lock downloads it itself
    with open(tmp_path / "c" / ".locks" / cache.path("s3://b/other.tar").name, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert cache.get("s3://b/other.tar", lambda: b"y" * 10, lambda d: True, time.monotonic() + 0.2) == b"y" * 10


def test_a_cache_that_cannot_store_warns_and_serves_the_download(tmp_path):
    cache = ShardCache(tmp_path / "c", 10**6)
    cache.path("s3://b/shard.tar").mkdir(parents=True)  # in the copy's way: every write there fails
    with pytest.warns(RuntimeWarning, match=r"shard cache .*: cannot store .*shard.tar .*reading from S3 instead"):
        assert cache.get("s3://b/shard.tar", lambda: b"data", lambda d: True) == b"data"
    assert [p.name for p in (tmp_path / "c").iterdir() if p.name.endswith(".tmp")] == []
